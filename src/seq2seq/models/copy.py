"""The pointer-generator output distribution (See, Liu and Manning 2017, "Get To The Point:
Summarization with Pointer-Generator Networks", section 2.2).

At every step the decoder either generates a word from the target vocabulary or copies a source
word through its attention weights a_i, mixed by the generation probability p_gen (eq. 8):

    P(w) = p_gen P_vocab(w) + (1 - p_gen) sum_{i: x_i = w} a_i          (eq. 9)

w ranges over the *extended* vocabulary: the V target words plus the example's source words that
are not among them (ids V + j), which can only be copied. That is what lets a model write an
identifier or a literal it never saw in training, as long as the input holds it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Floor of the copy probability before its log: a word absent from the source has copy probability
# 0 and log 0 has no gradient. It only matters below 1e-20, far under any probability a search keeps.
COPY_EPSILON = 1e-20


def extended_size(vocab_size: int, copy_ids: torch.Tensor) -> int:
    """V_ext, the output width of a batch whose sources are ``copy_ids`` [B, S] (extended ids): V plus
    the most unknown source words of any of its examples (ids V + j)."""
    return max(vocab_size, int(copy_ids.max()) + 1)


def copy_mixture(
    logits: torch.Tensor, gate: torch.Tensor, attention: torch.Tensor, copy_ids: torch.Tensor, extended_size: int
) -> torch.Tensor:
    """log P(w) of eq. 9 over the extended vocabulary, for one step ([B, ...]) or many ([B, T, ...]).

    Args:
        logits: [B, (T,) V] output-layer scores; P_vocab = softmax(logits).
        gate: [B, (T,) 1] the score whose sigmoid is p_gen (eq. 8).
        attention: [B, (T,) S] attention weights, 0 at padding.
        copy_ids: [B, S] the extended id of every source token.
        extended_size: V_ext >= V, larger than every id in ``copy_ids``.

    Returns:
        log-probabilities [B, (T,) V_ext]; they sum to 1 (up to ``COPY_EPSILON`` per word), so a
        log_softmax leaves them unchanged and cross-entropy on them is the negative log-likelihood.
    """
    if copy_ids.dim() != 2 or attention.shape[0] != copy_ids.shape[0] or attention.shape[-1] != copy_ids.shape[1]:
        raise ValueError(f"attention [B, (T,) S] and copy_ids [B, S] disagree: {tuple(attention.shape)} vs {tuple(copy_ids.shape)}")
    # Both terms in log space: log p_gen + log P_vocab stays exact where the product would underflow.
    generate = F.logsigmoid(gate) + torch.log_softmax(logits, dim=-1)  # [B, (T,) V]
    generate = F.pad(generate, (0, extended_size - logits.size(-1)), value=-math.inf)  # [B, (T,) V_ext]: OOVs are only copied
    index = copy_ids.view(copy_ids.size(0), *[1] * (attention.dim() - 2), -1).expand_as(attention)  # [B, (T,) S]
    # scatter_add: a word that occurs several times in the source collects the weight of every occurrence
    copied = attention.new_zeros(*attention.shape[:-1], extended_size).scatter_add_(-1, index, attention)  # [B, (T,) V_ext]
    copy = F.logsigmoid(-gate) + copied.clamp_min(COPY_EPSILON).log()  # log(1 - p_gen) = logsigmoid(-gate)
    return torch.logaddexp(generate, copy)  # [B, (T,) V_ext]
