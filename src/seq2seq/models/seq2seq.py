"""The encoder-decoder: encoder -> bridge -> decoder. Returns logits; the loss lives elsewhere."""

from __future__ import annotations

import torch
from torch import nn

from seq2seq.models.decoders import RecurrentDecoder
from seq2seq.models.encoders import Bridge, RecurrentEncoder
from seq2seq.models.state import DecoderState, Memory


class Seq2Seq(nn.Module):
    def __init__(self, *, encoder: RecurrentEncoder, bridge: Bridge, decoder: RecurrentDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.bridge = bridge
        self.decoder = decoder

    def encode(
        self, src: torch.Tensor, src_lengths: torch.Tensor, src_mask: torch.Tensor
    ) -> tuple[Memory, DecoderState]:
        """src [B, S] -> the memory the decoder attends to and its initial state."""
        states, final = self.encoder(src, src_lengths)  # [B, S, He], [L*D, B, H]
        return self.decoder.prepare_memory(states, src_mask), self.bridge(final)

    def forward(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        src_mask: torch.Tensor,
        tgt_input: torch.Tensor,
        *,
        teacher_forcing: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T, V] for every target position, and attention [B, T, S] (or None)."""
        memory, state = self.encode(src, src_lengths, src_mask)
        return self.decoder(tgt_input, state, memory, teacher_forcing=teacher_forcing)
