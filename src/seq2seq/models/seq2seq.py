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

    @property
    def copies(self) -> bool:
        """Whether the decoder has the copy mechanism: then it needs ``src_copy`` and predicts over
        the target vocabulary extended by the source's unknown words."""
        return self.decoder.copies

    def encode(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        src_mask: torch.Tensor,
        *,
        src_copy: torch.Tensor | None = None,
    ) -> tuple[Memory, DecoderState]:
        """src [B, S] -> the memory the decoder attends to and its initial state.

        ``src_copy`` [B, S]: the source tokens as extended target ids (``Batch.src_copy``); required
        by a copy model, which keeps them in the memory, and refused by any other.
        """
        states, final = self.encoder(src, src_lengths)  # [B, S, He], [L*D, B, H]
        return self.decoder.prepare_memory(states, src_mask, src_copy), self.bridge(final)

    def forward(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        src_mask: torch.Tensor,
        tgt_input: torch.Tensor,
        *,
        teacher_forcing: float = 1.0,
        src_copy: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T, V] for every target position (a copy model: log-probabilities [B, T, V_ext]),
        and attention [B, T, S] (or None)."""
        memory, state = self.encode(src, src_lengths, src_mask, src_copy=src_copy)
        return self.decoder(tgt_input, state, memory, teacher_forcing=teacher_forcing)
