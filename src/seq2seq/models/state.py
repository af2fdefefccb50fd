"""Values that flow through a decoder: its recurrent state and the encoder memory it attends to.

Both are plain values with ``select(index)`` so that beam search can reorder or tile them;
no module keeps state between calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DecoderState:
    """Recurrent state of a decoder: ``hidden`` [L, B, H], for an LSTM ``cell`` [L, B, H], for
    an input-feeding decoder ``feed`` [B, R], the previous step's attentional vector, and for a
    coverage decoder ``coverage`` [B, S], the sum of the attention weights of the steps so far
    (None before the first step: read as zeros)."""

    hidden: torch.Tensor
    cell: torch.Tensor | None = None
    feed: torch.Tensor | None = None
    coverage: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> DecoderState:
        """Keep/reorder batch rows: ``index`` [B'] -> a state with batch size B'."""
        cell = None if self.cell is None else self.cell.index_select(1, index)
        feed = None if self.feed is None else self.feed.index_select(0, index)
        coverage = None if self.coverage is None else self.coverage.index_select(0, index)
        return DecoderState(self.hidden.index_select(1, index), cell, feed, coverage)

    def as_rnn_input(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.hidden if self.cell is None else (self.hidden, self.cell)

    @classmethod
    def from_rnn_output(
        cls,
        state: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        feed: torch.Tensor | None = None,
        coverage: torch.Tensor | None = None,
    ) -> DecoderState:
        if isinstance(state, tuple):
            return cls(state[0], state[1], feed, coverage)
        return cls(state, None, feed, coverage)

    @property
    def top(self) -> torch.Tensor:
        """Hidden state of the top layer, [B, H]: the attention query."""
        return self.hidden[-1]


@dataclass(frozen=True)
class Memory:
    """What the encoder leaves for the decoder.

    ``states`` [B, S, He] are all encoder states, ``mask`` [B, S] is True at real tokens, and
    ``keys`` [B, S, A] are the states already projected by the attention (computed once per
    batch, not once per decoder step), or None for decoders without attention.

    For a copy decoder, ``copy_ids`` [B, S] are the source tokens as ids of the target vocabulary
    extended by each example's unknown source words (V + j), and ``extended_size`` is V plus the
    most unknown words of any example: the width of the output. Selecting rows keeps that width,
    so beam search sees one vocabulary size from the first step to the last.
    """

    states: torch.Tensor
    mask: torch.Tensor
    keys: torch.Tensor | None = None
    copy_ids: torch.Tensor | None = None
    extended_size: int = 0

    def select(self, index: torch.Tensor) -> Memory:
        keys = None if self.keys is None else self.keys.index_select(0, index)
        copy_ids = None if self.copy_ids is None else self.copy_ids.index_select(0, index)
        return Memory(
            self.states.index_select(0, index), self.mask.index_select(0, index), keys, copy_ids, self.extended_size
        )
