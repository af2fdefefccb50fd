"""Batched ancestral sampling with temperature, top-k and nucleus (top-p) filtering.

Each step draws the next token from the model's distribution, optionally sharpened or flattened
by a temperature and truncated to the k most probable tokens (Fan et al. 2018, "Hierarchical
neural story generation") or to the smallest set whose probability reaches p (nucleus sampling,
Holtzman et al. 2020, "The curious case of neural text degeneration", section 3.1).
"""

from __future__ import annotations

import math

import torch

from seq2seq.decoding.constraints import PrefixConstraint
from seq2seq.decoding.greedy import Hypothesis, decode_single_path
from seq2seq.models.seq2seq import Seq2Seq


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top k (k = 0: no limit) and outside the nucleus.

    ``logits`` [N, V]. The nucleus is the smallest set of most probable tokens whose total
    probability is at least ``top_p``; the most probable token is always kept.
    """
    if top_k > 0 and top_k < logits.size(-1):
        kth_best = logits.topk(top_k, dim=-1).values[:, -1:]  # [N, 1]
        logits = logits.masked_fill(logits < kth_best, -math.inf)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # [N, V]
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # [N, V]
        # drop a token when the tokens before it already reach top_p
        outside = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p  # [N, V]
        outside[:, 0] = False
        logits = logits.masked_fill(outside.scatter(1, order, outside), -math.inf)
    return logits


def check_sampling_options(*, temperature: float, top_k: int, top_p: float) -> None:
    """Raise ValueError naming the first option out of range (shared by every caller of sampling)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = no limit), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _check_arguments(*, temperature: float, top_k: int, top_p: float, max_len: int) -> None:
    check_sampling_options(temperature=temperature, top_k=top_k, top_p=top_p)
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")


@torch.inference_mode()
def sample_decode(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    src_mask: torch.Tensor,
    *,
    sos_index: int,
    eos_index: int,
    max_len: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    constraint: PrefixConstraint | None = None,
    src_copy: torch.Tensor | None = None,
) -> list[Hypothesis]:
    """Sample one hypothesis per example of ``src`` [B, S], in batch order.

    The draws come from ``generator`` or else a private ``torch.Generator`` on ``src.device``
    seeded with ``seed`` (seeded: reproducible; torch's global RNG is left alone). ``token_log_probs`` are the model's own log-probabilities
    (no temperature, no filtering), so scores compare with greedy and beam search. ``src_copy``
    [B, S] is what a copy model needs (``Batch.src_copy``).
    """
    _check_arguments(temperature=temperature, top_k=top_k, top_p=top_p, max_len=max_len)
    model.eval()
    if generator is None:
        generator = torch.Generator(device=src.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)

    def choose(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filtered = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)  # [B, V]
        drawn = torch.multinomial(filtered.softmax(dim=-1), 1, generator=generator).squeeze(1)  # [B]
        return drawn, torch.log_softmax(logits, dim=-1).gather(1, drawn.unsqueeze(1)).squeeze(1)  # [B], [B]

    return decode_single_path(model, src, src_lengths, src_mask, sos_index=sos_index, eos_index=eos_index,
                              max_len=max_len, choose=choose, constraint=constraint, src_copy=src_copy)
