"""``train``: the optimisation (loss, optimizer, schedules, teacher forcing, budgets, processes)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from seq2seq.config.errors import StrictModel


# The coverage loss's weight for a coverage model when train.coverage_weight is null. See et al. 2017
# use 1.0; here 1.0 cost 18 points of exact match on the built-in task (3 seeds) and 10 BLEU on
# Multi30k, where 0.1 gained 2.4 points and lost nothing (2 seeds): docs/RESULTS.md, issue 27.
# A run's saved config holds the weight it trained with (RunConfig resolves null).
COVERAGE_WEIGHT = 0.1


def default_coverage_weight(coverage: bool) -> float:
    """What a null ``train.coverage_weight`` means: COVERAGE_WEIGHT for a coverage model, else 0."""
    return COVERAGE_WEIGHT if coverage else 0.0


class TeacherForcingConfig(StrictModel):
    """The probability that a training step reads the gold previous token (else the model's own
    prediction), per optimizer step i (Bengio et al. 2015, "Scheduled Sampling for Sequence
    Prediction with Recurrent Neural Networks", section 2.4):

    - constant:         p_i = start (the seed's 0.5)
    - linear:           p_i = max(end, start - (start - end) i / steps)
    - exponential:      p_i = end + (start - end) rate^i                       (rate < 1)
    - inverse_sigmoid:  p_i = end + (start - end) k / (k + exp(i / k))         (k >= 1)

    ``train.teacher_forcing: 0.5`` (a number) is the constant schedule.
    """

    schedule: Literal["constant", "linear", "exponential", "inverse_sigmoid"] = "constant"
    start: float | None = Field(default=None, ge=0.0, le=1.0, description="p at step 0; default 0.5 for constant, else 1.0")
    end: float = Field(default=0.0, ge=0.0, le=1.0, description="the floor the decaying schedules approach")
    steps: int = Field(default=10000, ge=1, description="linear: optimizer steps from start to end")
    rate: float = Field(default=0.9995, gt=0.0, lt=1.0, description="exponential: the factor per optimizer step")
    k: float = Field(default=1000.0, ge=1.0, description="inverse_sigmoid: larger k decays later")

    @model_validator(mode="after")
    def _resolve_start(self) -> TeacherForcingConfig:
        if self.start is None:
            self.start = 0.5 if self.schedule == "constant" else 1.0
        if self.schedule != "constant" and self.end > self.start:
            raise ValueError(f"end ({self.end}) must not exceed start ({self.start}): the schedule decays")
        return self

    def probability(self, step: int) -> float:
        """p_i for optimizer step ``step`` (counted from 0)."""
        start = float(self.start if self.start is not None else 0.5)
        if self.schedule == "constant":
            return start
        if self.schedule == "linear":
            return max(self.end, start - (start - self.end) * step / self.steps)
        if self.schedule == "exponential":
            return self.end + (start - self.end) * self.rate**step
        return self.end + (start - self.end) * self.k / (self.k + math.exp(min(step / self.k, 700.0)))

    def describe(self) -> str:
        if self.schedule == "constant":
            return f"{self.start}"
        return f"{self.schedule} from {self.start} to {self.end}"


class TrainConfig(StrictModel):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(
        default=64, ge=1,
        description="pairs per batch of one process; one update reads batch_size x accumulate x processes pairs",
    )
    batch_tokens: int | None = Field(
        default=None, ge=1,
        description="instead of batch_size: fill each batch from the length buckets up to this many padded tokens "
        "(pairs x the longer side of its longest pair), per process and accumulation step",
    )
    accumulate: int = Field(
        default=1, ge=1,
        description="batches per optimizer update (gradient accumulation); the loss is the mean over all their "
        "target tokens, so accumulate 2 equals one batch twice the size",
    )
    learning_rate: float = Field(default=1e-3, gt=0, allow_inf_nan=False)
    teacher_forcing: TeacherForcingConfig = Field(
        default_factory=TeacherForcingConfig,
        description="a probability (0.5: the seed's constant) or a schedule section (scheduled sampling)",
    )
    coverage_weight: float | None = Field(
        default=None, ge=0.0,
        description="weight of the coverage loss sum_i min(a_i^t, c_i^t) per target token (See et al. 2017, eq. 13); "
        "needs attention; null: 0.1 for a model with model.decoder.coverage (See et al. use 1.0, which cost "
        "quality here: docs/RESULTS.md), else 0",
    )
    clip_norm: float = Field(default=1.0, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    word_dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="share of source tokens replaced by <unk> in each training batch (Iyyer et al. 2015's word dropout)",
    )
    adam_betas: tuple[float, float] = Field(
        default=(0.9, 0.999), description="Adam's (beta1, beta2); Vaswani et al. 2017 train with [0.9, 0.98]"
    )
    lr_schedule: Literal["plateau", "inverse_sqrt"] = Field(
        default="plateau",
        description="plateau: multiply by lr_factor when the validation loss stalls (per epoch); inverse_sqrt: "
        "Vaswani et al. 2017 eq. 3 per optimizer step, a linear warm-up to learning_rate over warmup_steps, then "
        "learning_rate * sqrt(warmup_steps / step)",
    )
    warmup_steps: int = Field(default=4000, ge=1, description="inverse_sqrt: optimizer steps to the peak learning_rate")
    lr_factor: float = Field(default=0.5, gt=0, lt=1)
    lr_patience: int = Field(default=1, ge=0)
    min_learning_rate: float = Field(default=1e-5, ge=0)
    early_stopping_patience: int = Field(default=4, ge=1)
    time_budget_s: float | None = Field(default=None, gt=0, description="stop after this many seconds")
    max_steps: int | None = Field(
        default=None, ge=1,
        description="stop after this many optimizer steps (OpenNMT-py's train_steps, fairseq's --max-update): the "
        "epoch ends there and is validated and saved as any other; a budget that, unlike time_budget_s, gives the "
        "same model on a faster or a busier machine",
    )
    seed: int = 42
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto, cpu, cuda or cuda:N")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None = torch default)")
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="bf16: the training forward pass under torch.autocast in bfloat16 (fast on GPUs and on CPUs with "
        "AMX; emulated and slower elsewhere); weights, optimizer and loss stay float32",
    )
    keep_epoch_checkpoints: int = Field(
        default=0, ge=0,
        description="keep the weights of the last N epochs as epoch-<k>.safetensors, for `seq2seq average`",
    )
    save_every_steps: int | None = Field(
        default=None, ge=1,
        description="also write last.safetensors every N optimizer steps inside an epoch, so that --resume continues "
        "from there (as fairseq's --save-interval-updates); the dropout draws are re-seeded at each such step",
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        default="stop", description="a NaN/inf training loss: stop with an error, or skip the batch (counted per epoch)"
    )

    @field_validator("teacher_forcing", mode="before")
    @classmethod
    def _constant_teacher_forcing(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"schedule": "constant", "start": value}
        return value

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError(f"each beta must be in [0, 1), got {list(value)}")
        return value

