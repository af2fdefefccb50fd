"""The pure rules of beam search: the step, length penalties, the stopping bound, the n-gram ban.

The step follows fairseq's ``BeamSearch.step``: add each beam's running score to its next-token
log-probabilities and keep the best ``2K`` (beam, token) candidates, so that up to K of them may
end with ``<eos>`` (set aside as finished) while K still stay alive. As in fairseq, a candidate
ending in ``<eos>`` is finished only when it ranks among the first K; with K = 1 this makes beam
search exactly greedy decoding.

Scores are raw sums of log-probabilities; a length penalty only divides them when hypotheses of
different lengths are compared (finished ones against each other, and in the stopping test).
Everything here is a function of its arguments; :mod:`seq2seq.decoding.beam` keeps the state.
"""

from __future__ import annotations

import math

import torch

from seq2seq.decoding.greedy import Hypothesis

LENGTH_PENALTIES = ("none", "gnmt", "average")


def length_penalty(kind: str, length: int | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """The divisor of a raw score for a hypothesis of ``length`` scored tokens (``<eos>`` included).

    - ``none``: 1.
    - ``gnmt``: ((5 + length) / 6) ** alpha (Wu et al. 2016, "Google's NMT system", eq. 14).
    - ``average``: length ** alpha; alpha = 1 is the mean log-probability per token.

    Both penalties grow with the length for alpha >= 0, which the stopping bound relies on.
    """
    if kind == "none":
        return 1.0
    if kind == "gnmt":
        return ((5 + length) / 6) ** alpha
    if kind == "average":
        return length**alpha
    raise ValueError(f"unknown length_penalty {kind!r}; valid: {', '.join(LENGTH_PENALTIES)}")



def normalized_score(hypothesis: Hypothesis, kind: str = "none", alpha: float = 0.6) -> float:
    """``hypothesis.score`` divided by the length penalty of its scored tokens (``<eos>`` counts)."""
    return hypothesis.score / float(length_penalty(kind, max(1, len(hypothesis.token_log_probs)), alpha))


def beam_step(
    log_probs: torch.Tensor, scores: torch.Tensor, *, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expand K beams by one token and keep the best 2K candidates (fairseq ``BeamSearch.step``).

    Args:
        log_probs: [B, K, V] next-token log-probabilities of every beam (banned tokens at -inf).
        scores: [B, K] running sums of log-probabilities of the beams.
        step: 0 at the first token; there all beams hold the same ``<sos>`` prefix, so only
            beam 0 is expanded (otherwise each candidate would appear K times).

    Returns:
        new_scores [B, 2K] sorted best first, token_ids [B, 2K] and beam_ids [B, 2K] (the beam
        each candidate extends). When fewer than 2K candidates exist, the rest are -inf.
    """
    batch, beam, vocab = log_probs.shape
    if scores.shape != (batch, beam):
        raise ValueError(f"scores must be [B, K] = {(batch, beam)}, got {tuple(scores.shape)}")
    if step == 0:
        log_probs, scores = log_probs[:, :1, :], scores[:, :1]  # [B, 1, V], [B, 1]
    candidates = (scores.unsqueeze(-1) + log_probs).reshape(batch, -1)  # [B, K' * V]
    wanted = 2 * beam
    new_scores, flat = candidates.topk(min(wanted, candidates.size(1)), dim=-1)  # [B, <=2K]
    if new_scores.size(1) < wanted:  # tiny vocabulary: pad with impossible candidates
        missing = wanted - new_scores.size(1)
        new_scores = torch.cat([new_scores, new_scores.new_full((batch, missing), -math.inf)], dim=1)
        flat = torch.cat([flat, flat.new_zeros((batch, missing))], dim=1)  # [B, 2K]
    return new_scores, flat % vocab, torch.div(flat, vocab, rounding_mode="floor")


def repeated_ngram_mask(tokens: torch.Tensor, *, n: int, vocab_size: int) -> torch.Tensor:
    """True at tokens that would complete an n-gram already present in each row of ``tokens``.

    ``tokens`` [N, t] are the generated tokens so far; returns a mask [N, V] (all False when
    n = 0 or no full n-gram exists yet). Paulus et al. 2018 ("A deep reinforced model for
    abstractive summarization") introduced this trigram-avoidance rule.
    """
    rows, length = tokens.shape
    mask = torch.zeros(rows, vocab_size, dtype=torch.bool, device=tokens.device)
    if n <= 0 or length < n:
        return mask
    windows = tokens.unfold(1, n, 1)  # [N, W, n], every n-gram so far
    prefix = tokens[:, length - (n - 1) :]  # [N, n-1], the n-1 tokens the next one would follow
    matched = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(dim=-1)  # [N, W]
    counts = torch.zeros(rows, vocab_size, dtype=torch.long, device=tokens.device)
    counts.scatter_add_(1, windows[:, :, -1], matched.long())  # add, not scatter: indices repeat
    return counts > 0


def can_stop(*, finished_scores: list[float], best_alive: float, wanted: int, max_penalty: float) -> bool:
    """Whether no alive hypothesis can still enter the ``wanted`` best finished ones.

    ``finished_scores`` are the kept finished hypotheses' normalised scores, best first,
    ``best_alive`` the best alive raw score (<= 0), ``wanted`` how many hypotheses the search
    returns (``nbest``) and ``max_penalty`` the length penalty at the maximum length.
    Bound: an alive hypothesis with raw score s ends with raw score s' <= s <= 0 and length
    L' <= L_max, so for a penalty that grows with the length,
    s' / lp(L') <= s / lp(L') <= s / lp(L_max). With no penalty this is just s.

    Only the ``wanted`` best matter: waiting for a full beam of finished hypotheses (as fairseq
    does) cannot change them, it only costs steps. With ``nbest`` = 1 and no penalty the search
    stops as soon as its best candidate ends with ``<eos>``, as OpenNMT-py 3.5's does ("early stop
    when top beam is finished", ``onmt/translate/beam_search.py``).
    """
    if best_alive == -math.inf:
        return True  # nothing left alive (every continuation was banned)
    if len(finished_scores) < wanted:
        return False
    return best_alive / max_penalty <= finished_scores[wanted - 1]


def max_lengths(src_lengths: list[int], *, max_len: int, max_len_a: float, max_len_b: int) -> list[int]:
    """Decoding steps allowed per example: ``min(max_len, a * src_len + b)`` when a > 0 (fairseq)."""
    if max_len_a <= 0:
        return [max_len] * len(src_lengths)
    return [max(1, min(max_len, int(max_len_a * length + max_len_b))) for length in src_lengths]
