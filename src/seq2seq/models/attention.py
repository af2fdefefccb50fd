"""What every attention mechanism of a recurrent decoder is: the :class:`Attention` interface and
the base class that turns a score into weights and a context.

An attention mechanism reads one decoder state (the query, [B, Hq]) and all encoder states (the
values, [B, S, He]), scores every source position, and returns

    a_t = softmax(score(h_t, h_s))      over real source positions (padding gets exactly 0)
    c_t = sum_s a_ts h_s                the context, [B, He]

The variants differ only in ``score`` (Bahdanau et al. 2015; Luong et al. 2015, eq. 8; Vaswani
et al. 2017's scaled dot product, per head) and in what they precompute from the encoder states
once per batch (:meth:`Attention.project_keys`: the keys, an opaque [B, S, ...] tensor that beam
search reorders with the rest of the memory). The decoder calls ``attention(query=..., keys=...,
values=..., mask=..., coverage=...)`` and does not know which variant it holds.

Adding a variant: docs/EXTENDING.md (one class, one entry in :mod:`seq2seq.models.registry`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class AttentionOptions:
    """The sizes and switches an attention is built from (``model.decoder`` in the config)."""

    attention_size: int = 256
    heads: int = 1
    window: int = 10
    coverage: bool = False


class Attention(Protocol):
    """The interface the recurrent decoder, ONNX export and the fast paths rely on."""

    def project_keys(self, states: torch.Tensor) -> torch.Tensor:
        """What is computed once per batch from the encoder states [B, S, He]: keys [B, S, ...]."""
        ...

    def __call__(
        self, *, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
        coverage: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """context [B, He] and weights [B, S] for one query [B, Hq]."""
        ...


class CoverageTerm(nn.Module):
    """Coverage (Tu et al. 2016) for a score with no hidden layer to feed it:

        score'(h_t, h_s) = score(h_t, h_s) + w_c c_ts           one learned w_c per head

    Tu et al. and See et al. (eq. 11) add ``w_c c_ts`` inside the additive score's tanh
    (:class:`~seq2seq.models.bahdanau.BahdanauAttention` does); a bilinear score (Luong's dot and
    general, a head of scaled dot products) has no such layer, so the term is added to the score
    itself. It starts at 0 (the plain score); a negative w_c learns to look away from source words
    already covered.
    """

    def __init__(self, heads: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(heads))  # w_c [k]

    def forward(self, scores: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
        """scores [B, S] (one head) or [B, k, S], coverage [B, S] -> scores of the same shape."""
        coverage = coverage.to(self.weight.dtype)  # the sum of past weights, not rounded under bf16 autocast
        if scores.dim() == 2:
            return scores + self.weight * coverage  # [B, S]
        return scores + self.weight[:, None] * coverage.unsqueeze(1)  # [B, k, S]


# A replacement for ``score`` on the tensors it was measured on, or None where it does not apply;
# set by seq2seq.models.fast_paths.install_fast_paths, the one place that chooses fast paths.
FastScore = Callable[["ScoredAttention", torch.Tensor, torch.Tensor, "torch.Tensor | None"], "torch.Tensor | None"]


class ScoredAttention(nn.Module, ABC):
    """Base class: a subclass defines :meth:`project_keys` and :meth:`score`; this class checks the
    shapes, masks padding, normalises and takes the weighted sum.

    ``supports_coverage``: whether :meth:`score` reads a coverage vector (Tu et al. 2016); the
    config refuses coverage for a score that does not. A score with no hidden layer for the
    coverage to enter (the dot products) sets ``coverage_term`` and passes its scores through
    :meth:`add_coverage`.
    """

    supports_coverage = False
    fast_score: FastScore | None = None

    def __init__(self) -> None:
        super().__init__()
        self.coverage_term: CoverageTerm | None = None  # a subclass with coverage sets its term

    def add_coverage(self, scores: torch.Tensor, coverage: torch.Tensor | None) -> torch.Tensor:
        """``scores`` [B, S] (or [B, k, S]) plus the coverage term of a model built with one."""
        if self.coverage_term is None:
            return scores
        if coverage is None:
            raise ValueError("a coverage attention needs the coverage vector [B, S]")
        return self.coverage_term(scores, coverage)

    def project_keys(self, states: torch.Tensor) -> torch.Tensor:
        return states  # [B, S, He]: scores that read the states themselves

    @abstractmethod
    def score(self, query: torch.Tensor, keys: torch.Tensor, coverage: torch.Tensor | None) -> torch.Tensor:
        """Scores [B, S] of query [B, Hq] against keys [B, S, ...] (padding is masked afterwards); every
        variant defines it (multi-head returns one row per head, [B, k, S], and normalises in ``attend``)."""

    def normalize(self, scores: torch.Tensor, mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Weights [B, S] from masked scores: the softmax (local-p reshapes it around its position)."""
        return torch.softmax(scores, dim=-1)

    def forward(
        self,
        *,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        coverage: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from one decoder state to all encoder states.

        Args:
            query: [B, Hq] decoder hidden state h_t.
            keys: [B, S, ...] from :meth:`project_keys`.
            values: [B, S, He] encoder states h_s.
            mask: [B, S] True at real source tokens; padding gets weight exactly 0.
            coverage: [B, S] the sum of the previous steps' weights (a coverage model only).

        Returns:
            context [B, He] (the weighted sum of ``values``) and weights [B, S].
        """
        if query.dim() != 2 or keys.dim() != 3 or keys.shape[:2] != mask.shape:
            raise ValueError(
                f"expected query [B, Hq], keys [B, S, A], mask [B, S]; got {tuple(query.shape)}, "
                f"{tuple(keys.shape)}, {tuple(mask.shape)}"
            )
        return self.attend(query, keys, values, mask, coverage)

    def attend(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
        coverage: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` after its shape checks: score, mask, normalise, take the weighted sum.
        A variant whose context is not the weighted sum of the states (multi-head) overrides this."""
        scores = None if self.fast_score is None else self.fast_score(self, query, keys, coverage)
        if scores is None:
            scores = self.score(query, keys, coverage)  # [B, S]
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: no mass on padding
        weights = self.normalize(scores, mask, query)  # [B, S]
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # [B, He]
        return context, weights
