"""Value objects for what training measures."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    step: int
    train_loss: float  # mean per target token
    valid_loss: float
    learning_rate: float
    seconds: float  # wall time of the training part of the epoch
    train_tokens: int  # target tokens seen
    train_tokens_per_s: float
    fraction: float = 1.0  # share of the epoch's batches trained (< 1 when a time budget or max_steps ran out)
    skipped_batches: int = 0  # batches with a non-finite loss or gradient, skipped (train.on_nonfinite=skip)
    # The L2 norm of all gradients before clipping, over the epoch's optimizer steps: mean, largest,
    # and the share of steps that clipping shortened (NaN when no step was taken).
    grad_norm_mean: float = math.nan
    grad_norm_max: float = math.nan
    clipped_fraction: float = math.nan

    @property
    def valid_perplexity(self) -> float:
        return math.exp(min(self.valid_loss, 50.0))

    def to_json(self) -> dict[str, float | int]:
        return {**asdict(self), "valid_perplexity": self.valid_perplexity, "kind": "epoch"}
