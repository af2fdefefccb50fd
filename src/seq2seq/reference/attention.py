"""Additive attention in NumPy, written literally from the seed formula (the test oracle).

Bahdanau, Cho and Bengio 2015, "Neural Machine Translation by Jointly Learning to Align and
Translate", section 3.1 and appendix A.1.2:

    e_ts     = v^T tanh(W [h_t; h_s])            (score of source position s)
    a_ts     = exp(e_ts) / sum_s' exp(e_ts')     (softmax over real positions only)
    c_t      = sum_s a_ts h_s                    (context)

Unlike :class:`seq2seq.models.attention.BahdanauAttention`, which splits ``W`` into
``[W_q | W_k]`` to project the keys once per batch, this computes ``W`` times the
*concatenation*, so agreement between the two checks that the split is exact.
"""

from __future__ import annotations

import numpy as np


def masked_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of ``scores`` [B, S] with weight exactly 0 where ``mask`` is False.

    Every row must have at least one True entry.
    """
    if not mask.any(axis=-1).all():
        raise ValueError("every row of mask needs at least one real position")
    shifted = np.where(mask, scores - np.max(np.where(mask, scores, -np.inf), axis=-1, keepdims=True), 0.0)
    exps = np.where(mask, np.exp(shifted), 0.0)  # [B, S]; padding contributes nothing
    return exps / exps.sum(axis=-1, keepdims=True)


def bahdanau_attention(
    query: np.ndarray, states: np.ndarray, mask: np.ndarray, *, w: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``v^T tanh(W [h_t; h_s])`` for every source position, then the masked softmax and context.

    Args:
        query: [B, Hq] decoder state h_t.
        states: [B, S, He] encoder states h_s.
        mask: [B, S] bool, True at real tokens.
        w: [A, Hq + He] the unsplit ``W`` (query columns first). v: [A].

    Returns:
        context [B, He] and weights [B, S] (sum to 1, exactly 0 where ``mask`` is False).
    """
    if query.ndim != 2 or states.ndim != 3 or mask.shape != states.shape[:2]:
        raise ValueError(
            f"expected query [B, Hq], states [B, S, He], mask [B, S]; got {query.shape}, {states.shape}, {mask.shape}"
        )
    batch, length, _ = states.shape
    tiled = np.broadcast_to(query[:, None, :], (batch, length, query.shape[1]))  # [B, S, Hq]
    pairs = np.concatenate([tiled, states], axis=-1)  # [B, S, Hq + He] = [h_t; h_s]
    scores = np.tanh(pairs @ w.T) @ v  # [B, S]
    weights = masked_softmax(scores, mask.astype(bool))  # [B, S]
    context = np.einsum("bs,bsh->bh", weights, states)  # [B, He]
    return context, weights


def _context(weights: np.ndarray, states: np.ndarray) -> np.ndarray:
    return np.einsum("bs,bsh->bh", weights, states)  # [B, He]


def additive_coverage_attention(
    query: np.ndarray, states: np.ndarray, mask: np.ndarray, coverage: np.ndarray, *, w: np.ndarray, w_c: np.ndarray,
    v: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Bahdanau's score with coverage (Tu et al. 2016; See et al. 2017, eq. 11):
    ``v^T tanh(W [h_t; h_s] + w_c c_ts)``, with ``coverage`` [B, S] and ``w_c`` [A]."""
    batch, length, _ = states.shape
    tiled = np.broadcast_to(query[:, None, :], (batch, length, query.shape[1]))  # [B, S, Hq]
    pre = np.concatenate([tiled, states], axis=-1) @ w.T + coverage[:, :, None] * w_c  # [B, S, A]
    weights = masked_softmax(np.tanh(pre) @ v, mask.astype(bool))  # [B, S]
    return _context(weights, states), weights


def _covered(scores: np.ndarray, coverage: np.ndarray | None, w_c: np.ndarray | None) -> np.ndarray:
    """A bilinear score plus its coverage term w_c c_ts (nothing without ``w_c``)."""
    if w_c is None:
        return scores
    if coverage is None:
        raise ValueError("a coverage weight w_c needs the coverage [B, S]")
    return scores + w_c * coverage


def luong_attention(
    query: np.ndarray, states: np.ndarray, mask: np.ndarray, *, score: str, w_a: np.ndarray | None = None,
    v_a: np.ndarray | None = None, coverage: np.ndarray | None = None, w_c: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Luong et al. 2015, eq. 8, literally, for the query h_t [B, H] and states h_s [B, S, He]:

        dot      h_t^T h_s
        general  h_t^T W_a h_s                  w_a [H, He]
        concat   v_a^T tanh(W_a [h_t; h_s])     w_a [A, H + He], v_a [A]

    With coverage [B, S] and a scalar ``w_c``, dot and general add w_c c_ts to the score.
    """
    if score == "dot":
        scores = np.einsum("bh,bsh->bs", query, states)
    elif score == "general":
        scores = np.einsum("bh,hk,bsk->bs", query, w_a, states)
    elif score == "concat":
        if w_c is not None:
            raise ValueError("concat with coverage is additive_coverage_attention (w_c inside the tanh)")
        return bahdanau_attention(query, states, mask, w=w_a, v=v_a)
    else:
        raise ValueError(f"unknown Luong score {score!r}; valid: dot, general, concat")
    weights = masked_softmax(_covered(scores, coverage, w_c), mask.astype(bool))
    return _context(weights, states), weights


def local_p_attention(
    query: np.ndarray, states: np.ndarray, mask: np.ndarray, *, w_a: np.ndarray, w_p: np.ndarray, v_p: np.ndarray,
    window: int, coverage: np.ndarray | None = None, w_c: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Luong et al. 2015, section 3.2 (local-p, general score), one sentence at a time:
    p_t = S_x sigmoid(v_p^T tanh(W_p h_t)); the softmax of the general score (plus w_c c_ts with
    coverage) over the real positions s with |s - p_t| <= D, times exp(-(s - p_t)^2 / (2 (D/2)^2));
    0 elsewhere."""
    batch, length, _ = states.shape
    weights = np.zeros((batch, length))
    for b in range(batch):
        real = int(mask[b].sum())
        center = real / (1.0 + np.exp(-(v_p @ np.tanh(w_p @ query[b]))))
        for_window = [s for s in range(real) if abs(s - center) <= window]
        scores = np.array([query[b] @ w_a @ states[b, s] + (0.0 if w_c is None else w_c * coverage[b, s])
                           for s in for_window])
        align = np.exp(scores - scores.max())
        align /= align.sum()
        sigma = window / 2
        for s, a in zip(for_window, align):
            weights[b, s] = a * np.exp(-((s - center) ** 2) / (2 * sigma**2))
    return _context(weights, states), weights


def multi_head_attention(
    query: np.ndarray, states: np.ndarray, mask: np.ndarray, *, w_q: np.ndarray, w_k: np.ndarray, w_v: np.ndarray,
    w_o: np.ndarray, heads: int, coverage: np.ndarray | None = None, w_c: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vaswani et al. 2017, section 3.2.2, for one query per sentence: head i attends with
    softmax(q_i . k_i,s / sqrt(d)) (plus w_c[i] c_ts with coverage, ``w_c`` [k]) and the heads'
    contexts, concatenated, go through W^O.
    w_q, w_k, w_v [A, H or He], w_o [He, A]. Returns the context [B, He] and the heads' mean weights [B, S]."""
    size = w_q.shape[0] // heads
    q = (query @ w_q.T).reshape(query.shape[0], heads, size)  # [B, k, d]
    k = (states @ w_k.T).reshape(*states.shape[:2], heads, size)  # [B, S, k, d]
    v = (states @ w_v.T).reshape(*states.shape[:2], heads, size)  # [B, S, k, d]
    head_contexts, all_weights = [], []
    for head in range(heads):
        scores = np.einsum("bd,bsd->bs", q[:, head], k[:, :, head]) / np.sqrt(size)
        scores = _covered(scores, coverage, None if w_c is None else w_c[head])
        weights = masked_softmax(scores, mask.astype(bool))  # [B, S]
        head_contexts.append(np.einsum("bs,bsd->bd", weights, v[:, :, head]))
        all_weights.append(weights)
    context = np.concatenate(head_contexts, axis=-1) @ w_o.T  # [B, He]
    return context, np.mean(all_weights, axis=0)
