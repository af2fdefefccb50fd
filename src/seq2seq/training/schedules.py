"""Learning-rate schedules: ReduceLROnPlateau per epoch (the seed's), or the Transformer's inverse
square root per optimizer step (Vaswani et al. 2017, section 5.3, eq. 3)."""

from __future__ import annotations

import torch

from seq2seq.config import TrainConfig

Scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau | torch.optim.lr_scheduler.LambdaLR


def inverse_sqrt_factor(step: int, warmup_steps: int) -> float:
    """Eq. 3 divided by its peak: min(step^-0.5, step * warmup^-1.5) * warmup^0.5, for optimizer
    step ``step`` >= 1. It rises linearly to 1 at ``step == warmup_steps`` and then falls as
    sqrt(warmup / step), so ``train.learning_rate`` is the peak (the paper's d_model^-0.5 * warmup^-0.5)."""
    if step < 1:
        raise ValueError(f"optimizer steps count from 1, got {step}")
    return min(step**-0.5, step * warmup_steps**-1.5) * warmup_steps**0.5


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Scheduler:
    """The scheduler ``train.lr_schedule`` names. A ``LambdaLR``'s epoch counter counts optimizer
    steps here: after k calls of ``step()`` the next update (step k + 1) uses factor(k + 1)."""
    if config.lr_schedule == "inverse_sqrt":
        warmup = config.warmup_steps
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: inverse_sqrt_factor(done + 1, warmup))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_learning_rate
    )


def steps_per_batch(config: TrainConfig) -> bool:
    """Whether the scheduler steps after every optimizer step (else once per epoch, on the validation loss)."""
    return config.lr_schedule == "inverse_sqrt"
