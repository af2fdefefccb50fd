"""Token-level cross-entropy that ignores padding: a pure function of logits and targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, *, pad_index: int, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the non-padding target positions.

    Args:
        logits: [B, T, V] unnormalised scores (or a copy model's log-probabilities, which the
            softmax leaves unchanged). targets: [B, T] gold ids, ``pad_index`` at padding.
        label_smoothing: mass spread uniformly over the vocabulary (Szegedy et al. 2016, section 7).

    Returns:
        (sum of token losses, number of non-padding tokens). Divide the first by the second for
        the mean; summing first lets callers average correctly over batches of unequal size.
    """
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits [B, T, V] and targets [B, T] disagree: {tuple(logits.shape)} vs {tuple(targets.shape)}")
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),  # [B*T, V]
        targets.reshape(-1),  # [B*T]
        ignore_index=pad_index,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return loss, int((targets != pad_index).sum())


def coverage_loss(attention: torch.Tensor, tgt_mask: torch.Tensor) -> torch.Tensor:
    """The coverage loss of See et al. 2017 (eq. 12-13), summed over the real target positions:
    sum_t sum_i min(a_i^t, c_i^t), where c^t = sum_{t' < t} a^{t'} is the coverage before step t.
    It is large where a step attends again to what earlier steps already covered.

    Args:
        attention: [B, T, S] attention weights of every decoder step (0 at source padding).
        tgt_mask: [B, T] True at real target positions (their steps count; padding steps do not).

    Returns:
        the summed loss (a scalar); divide by the number of target tokens like the cross-entropy.
    """
    if attention.dim() != 3 or attention.shape[:2] != tgt_mask.shape:
        raise ValueError(f"attention [B, T, S] and tgt_mask [B, T] disagree: {tuple(attention.shape)} vs {tuple(tgt_mask.shape)}")
    # [B, T, S]: the weights of the steps before t, as a constant (as the decoder's coverage vector is):
    # the loss pushes step t away from what is covered, not the earlier steps away from step t
    coverage = (attention.cumsum(dim=1) - attention).detach()
    per_step = torch.minimum(attention, coverage).sum(dim=-1)  # [B, T]
    return (per_step * tgt_mask).sum()
