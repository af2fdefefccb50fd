"""An ensemble of trained models that decodes as one: the mean of their output distributions.

At every step each member reads the same previous token from its own state and the ensemble
predicts ``log( (1/N) sum_i p_i(y | y_<t, x) )``, the average of the members' probabilities (the
usual ensemble of neural MT, e.g. Sutskever et al. 2014, section 3.6, Bahdanau et al. 2015's
systems, and what OpenNMT-py and fairseq do with several model files). The members may differ in
architecture (cell, size, attention) but must share the vocabularies, so that id ``k`` is the same
token for all of them; :func:`seq2seq.checkpoint.load_ensemble` checks that.

:class:`Ensemble` offers the interface the search code drives (``encode`` -> memory and state
with ``select``, ``decoder.step``, ``forward`` for the reference loss, ``copies``), so greedy,
beam search, sampling and perplexity work on it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.models.state import DecoderState, Memory


@dataclass(frozen=True)
class EnsembleState:
    """The members' decoder states, in member order."""

    parts: tuple[DecoderState, ...]

    def select(self, index: torch.Tensor) -> EnsembleState:
        return EnsembleState(tuple(part.select(index) for part in self.parts))


@dataclass(frozen=True)
class EnsembleMemory:
    """The members' encoder memories, in member order."""

    parts: tuple[Memory, ...]

    def select(self, index: torch.Tensor) -> EnsembleMemory:
        return EnsembleMemory(tuple(part.select(index) for part in self.parts))

    @property
    def mask(self) -> torch.Tensor:  # [B, S], the same source for every member
        return self.parts[0].mask


def mean_log_probs(scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``log(mean_i softmax(scores_i))`` over members, for logits or log-probabilities [..., V]
    (``log_softmax`` leaves log-probabilities as they are). Computed in log space, so a token that
    one member rules out still gets the others' probability."""
    widths = {tuple(score.shape) for score in scores}
    if len(widths) != 1:
        raise ValueError(f"ensemble members predict over different shapes {sorted(widths)}: their vocabularies differ")
    stacked = torch.stack([torch.log_softmax(score.float(), dim=-1) for score in scores])  # [N, ..., V]
    return torch.logsumexp(stacked, dim=0) - math.log(len(scores))  # [..., V]


def _mean_attention(weights: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    if any(w is None for w in weights):
        return None
    return torch.stack(list(weights)).mean(dim=0)  # type: ignore[arg-type]


class _EnsembleDecoder:
    """``step`` over every member; what the search code calls ``model.decoder``."""

    def __init__(self, members: Sequence[Seq2Seq]) -> None:
        self.members = members

    def step(
        self, prev_tokens: torch.Tensor, state: EnsembleState, memory: EnsembleMemory
    ) -> tuple[torch.Tensor, EnsembleState, torch.Tensor | None]:
        """log-probabilities [B, V] of the mean distribution, the new states, the mean attention [B, S]."""
        scores, states, weights = [], [], []
        for member, part_state, part_memory in zip(self.members, state.parts, memory.parts):
            score, new_state, attention = member.decoder.step(prev_tokens, part_state, part_memory)
            scores.append(score)
            states.append(new_state)
            weights.append(attention)
        return mean_log_probs(scores), EnsembleState(tuple(states)), _mean_attention(weights)


class Ensemble(nn.Module):
    """Several models that decode as one (see the module docstring)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one model")
        copies = {bool(member.copies) for member in members}
        if len(copies) != 1:
            raise ValueError("an ensemble cannot mix copy models with models without copy: their output ids differ")
        self.members = nn.ModuleList(members)
        self.decoder = _EnsembleDecoder(list(self.members))

    @property
    def copies(self) -> bool:
        return bool(self.members[0].copies)

    @property
    def max_positions(self) -> int | None:
        """The smallest member's position limit (see :func:`seq2seq.models.interface.max_positions`)."""
        limits = [limit for member in self.members if (limit := getattr(member, "max_positions", None)) is not None]
        return min(limits, default=None)

    def encode(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        src_mask: torch.Tensor,
        *,
        src_copy: torch.Tensor | None = None,
    ) -> tuple[EnsembleMemory, EnsembleState]:
        encoded = [member.encode(src, src_lengths, src_mask, src_copy=src_copy) for member in self.members]
        return EnsembleMemory(tuple(m for m, _ in encoded)), EnsembleState(tuple(s for _, s in encoded))

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
        """log-probabilities [B, T, V] of the mean distribution (gold previous tokens only: with
        ``teacher_forcing`` < 1 each member would feed back its own predictions)."""
        if teacher_forcing < 1.0:
            raise ValueError("an ensemble scores references with teacher forcing 1.0 only; it is not trained")
        outputs = [
            member(src, src_lengths, src_mask, tgt_input, teacher_forcing=1.0, src_copy=src_copy)
            for member in self.members
        ]
        return mean_log_probs([scores for scores, _ in outputs]), _mean_attention([a for _, a in outputs])
