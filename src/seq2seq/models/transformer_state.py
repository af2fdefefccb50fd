"""Values that flow through a Transformer decoder: its key/value cache and the encoder memory.

Like :mod:`seq2seq.models.state` for the recurrent decoder, both are frozen values with
``select(index)`` (beam search reorders and tiles them); no module keeps them between calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TransformerMemory:
    """What the encoder leaves for the decoder (Vaswani et al. 2017, section 3.2.3, "encoder-decoder
    attention"): ``states`` [B, S, D], the top encoder layer's output; ``mask`` [B, S], True at real
    tokens; and per decoder layer the cross-attention's keys and values [B, h, S, d_k], projected
    once per batch instead of once per decoder step."""

    states: torch.Tensor
    mask: torch.Tensor
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    # a copy decoder's: the source tokens as extended target ids [B, S], and the extended vocabulary's size
    copy_ids: torch.Tensor | None = None
    extended_size: int = 0

    def select(self, index: torch.Tensor) -> TransformerMemory:
        """``index`` [B'] -> the memory of those rows (row i is old row ``index[i]``)."""
        return TransformerMemory(
            self.states.index_select(0, index),
            self.mask.index_select(0, index),
            tuple(k.index_select(0, index) for k in self.keys),
            tuple(v.index_select(0, index) for v in self.values),
            None if self.copy_ids is None else self.copy_ids.index_select(0, index),
            self.extended_size,
        )


@dataclass(frozen=True)
class TransformerState:
    """The decoder's self-attention cache: per layer the keys and values [B, h, t, d_k] of the
    ``position`` = t target positions decoded so far, so that a step computes one position and
    attends to the cached rest (the causal mask holds by construction: the cache has only the past)."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    position: int = 0

    def select(self, index: torch.Tensor) -> TransformerState:
        """``index`` [B'] -> the cache of those rows; the position is shared by every row."""
        return TransformerState(
            tuple(k.index_select(0, index) for k in self.keys),
            tuple(v.index_select(0, index) for v in self.values),
            self.position,
        )
