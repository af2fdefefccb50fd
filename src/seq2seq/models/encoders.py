"""Recurrent encoder (vanilla RNN, GRU or LSTM; stacked; optionally bidirectional) and the
bridge that turns its final state into the decoder's initial state."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.models.dropout import Dropout
from seq2seq.models.state import DecoderState

RNN_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def rnn_class(cell: str) -> type[nn.RNNBase]:
    if cell not in RNN_CELLS:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(RNN_CELLS)}")
    return RNN_CELLS[cell]


class RecurrentEncoder(nn.Module):
    """Embeds the source and runs a (packed) recurrent network over it.

    Padding never enters the recurrence: sequences are packed with their true lengths, so
    the final state of every sentence is the state after its own last token (and, for the
    backward direction, after its first token).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        cell: str = "lstm",
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pad_index: int = 0,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = hidden_size
        self.layers = layers
        self.directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_index)
        self.dropout = Dropout(dropout)
        self.rnn = rnn_class(cell)(
            embedding_size,
            hidden_size,
            num_layers=layers,
            bidirectional=bidirectional,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.directions

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, DecoderState]:
        """Encode a padded batch.

        Args:
            src: [B, S] token ids. src_lengths: [B] true lengths (>= 1), on any device.

        Returns:
            states [B, S, D*H] (zeros at padding) and the final state with hidden (and cell)
            of shape [L*D, B, H], layers-major as PyTorch's RNNs return it.
        """
        if src.dim() != 2 or src_lengths.shape != src.shape[:1]:
            raise ValueError(f"expected src [B, S] and lengths [B]; got {tuple(src.shape)}, {tuple(src_lengths.shape)}")
        embedded = self.dropout(self.embedding(src))  # [B, S, E]
        packed = pack_padded_sequence(embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_states, final = self.rnn(packed)
        states, _ = pad_packed_sequence(packed_states, batch_first=True, total_length=src.size(1))  # [B, S, D*H]
        return self.dropout(states), DecoderState.from_rnn_output(final)


class Bridge(nn.Module):
    """Maps the encoder's final state [L*D, B, He] to the decoder's initial state [Ld, B, Hd].

    Directions are concatenated per layer ([L, B, D*He]); a decoder with one layer takes the
    top encoder layer. When sizes already agree and the encoder is unidirectional the state
    passes unchanged (the seed ``rnn``/``lstm`` presets: the context *is* the final encoder
    state); otherwise a learned ``tanh(W h)`` maps it (and ``W c`` for an LSTM cell).
    A decoder LSTM fed by a GRU/RNN encoder starts with a zero cell.
    """

    def __init__(
        self, *, encoder_size: int, directions: int, decoder_size: int, decoder_layers: int, decoder_cell: str
    ) -> None:
        super().__init__()
        self.directions = directions
        self.decoder_layers = decoder_layers
        self.decoder_cell = decoder_cell
        needs_projection = directions > 1 or encoder_size != decoder_size
        in_size = encoder_size * directions
        self.hidden_proj = nn.Linear(in_size, decoder_size) if needs_projection else None
        self.cell_proj = nn.Linear(in_size, decoder_size) if needs_projection and decoder_cell == "lstm" else None

    def _merge(self, tensor: torch.Tensor) -> torch.Tensor:
        layers_times_dirs, batch, size = tensor.shape
        layers = layers_times_dirs // self.directions
        merged = tensor.view(layers, self.directions, batch, size)  # [L, D, B, He]
        merged = merged.permute(0, 2, 1, 3).reshape(layers, batch, self.directions * size)  # [L, B, D*He]
        return merged[-self.decoder_layers :] if self.decoder_layers < layers else merged

    def forward(self, final: DecoderState) -> DecoderState:
        hidden = self._merge(final.hidden)  # [Ld, B, D*He]
        if self.hidden_proj is not None:
            hidden = torch.tanh(self.hidden_proj(hidden))  # [Ld, B, Hd]
        if self.decoder_cell != "lstm":
            return DecoderState(hidden.contiguous())
        if final.cell is None:
            return DecoderState(hidden.contiguous(), torch.zeros_like(hidden))
        cell = self._merge(final.cell)
        if self.cell_proj is not None:
            cell = self.cell_proj(cell)
        return DecoderState(hidden.contiguous(), cell.contiguous())
