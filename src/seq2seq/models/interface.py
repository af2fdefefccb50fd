"""What the search, training, evaluation and export code rely on from a model: two small Protocols.

A model kind (the recurrent encoder-decoder, an ensemble of them, the ONNX runtime's stand-in, a
Transformer) keeps its own state and memory values; the rest of the package never reads their
fields, only reorders them with ``select`` (beam search, finished rows leaving the batch). The
attention's own interface is :class:`seq2seq.models.attention.Attention`. docs/EXTENDING.md says
how to add a kind.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import torch

logger = logging.getLogger(__name__)


@runtime_checkable
class Selectable(Protocol):
    """A decoder state or an encoder memory: a value whose batch rows can be kept or reordered."""

    def select(self, index: torch.Tensor) -> Selectable:
        """``index`` [B'] -> the same value with batch size B' (row i is old row ``index[i]``)."""
        ...


@runtime_checkable
class StepDecoder(Protocol):
    """One decoder step: what greedy, sampling and beam search drive (``model.decoder``)."""

    def step(
        self, prev_tokens: torch.Tensor, state: Selectable, memory: Selectable
    ) -> tuple[torch.Tensor, Selectable, torch.Tensor | None]:
        """prev_tokens [B] -> logits [B, V] (or log-probabilities), the new state, attention [B, S] or None."""
        ...


@runtime_checkable
class EncoderDecoder(Protocol):
    """A model that the toolkit can train, decode, evaluate and serve."""

    decoder: StepDecoder

    @property
    def copies(self) -> bool:
        """Whether the model copies source words (then it takes ``src_copy`` and predicts extended ids)."""
        ...

    def encode(
        self, src: torch.Tensor, src_lengths: torch.Tensor, src_mask: torch.Tensor, *, src_copy: torch.Tensor | None = None
    ) -> tuple[Selectable, Selectable]:
        """src [B, S] -> (memory, initial decoder state)."""
        ...

    def __call__(
        self, src: torch.Tensor, src_lengths: torch.Tensor, src_mask: torch.Tensor, tgt_input: torch.Tensor, *,
        teacher_forcing: float = 1.0, src_copy: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T, V] for every target position and the attention [B, T, S] (or None)."""
        ...


def max_positions(model: object) -> int | None:
    """The most positions ``model`` can encode: the longest source, and the most decoding steps
    (positions 0 .. max_len - 1 are fed back). A Transformer with learned positions has such a
    limit (``model.transformer.max_positions``); recurrent models and sinusoids have none (None)."""
    return getattr(model, "max_positions", None)


def supported_max_len(model: object, max_len: int) -> int:
    """``max_len`` clamped to the decoding steps ``model`` supports: a Transformer with learned
    positions cannot feed back a token beyond its last position, so decoding stops there (the
    output is then unfinished) instead of failing mid-search."""
    limit = max_positions(model)
    if limit is None or max_len <= limit:
        return max_len
    logger.warning("max_len %d is beyond the model's %d learned positions: decoding at most %d tokens",
                   max_len, limit, limit)
    return limit
