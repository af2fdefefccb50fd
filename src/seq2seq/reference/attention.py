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
