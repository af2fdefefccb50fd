"""Value objects for what training measures."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields


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

    @classmethod
    def from_json(cls, record: dict) -> EpochStats:
        """The inverse of :meth:`to_json` (``kind`` and the derived perplexity are dropped); a record
        that lacks a required field or holds a wrong type raises ``ValueError``."""
        names = {f.name for f in fields(cls)}
        try:
            stats = cls(**{key: value for key, value in record.items() if key in names})
        except TypeError as error:
            raise ValueError(f"an epoch record needs {', '.join(sorted(names))}: {error}") from None
        for f in fields(cls):
            value = getattr(stats, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (f.type == "int" and not isinstance(value, int)):
                raise ValueError(f"epoch record field {f.name!r}: expected {f.type}, got {value!r}")
        return stats


# Why a run's training ended, the first that applied (TrainResult.stopped_by).
STOP_REASONS = ("epochs", "early_stopping", "time_budget", "max_steps")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did: every epoch's record, the best validation loss, and why it stopped."""

    history: list[EpochStats] = field(default_factory=list)
    best_valid_loss: float = math.inf
    stopped_by: str = "epochs"  # one of STOP_REASONS
    stop_message: str = ""  # the same for a person, with the budget's value ("train.max_steps (2653) reached")

    def __post_init__(self) -> None:
        if self.stopped_by not in STOP_REASONS:
            raise ValueError(f"stopped_by: expected one of {', '.join(STOP_REASONS)}, got {self.stopped_by!r}")

    @property
    def stopped_early(self) -> bool:
        return self.stopped_by == "early_stopping"

    @property
    def out_of_time(self) -> bool:
        return self.stopped_by == "time_budget"

    @property
    def out_of_steps(self) -> bool:
        return self.stopped_by == "max_steps"
