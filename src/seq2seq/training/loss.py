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
