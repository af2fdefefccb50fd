"""The seeds of the random draws: a run's at its start, and the ones that let a run resumed in the
middle of an epoch draw what the uninterrupted run drew."""

from __future__ import annotations

import hashlib
import random

import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def reseed(seed: int, *, epoch: int, updates: int, rank: int) -> None:
    """Dropout and teacher-forcing draws from (seed, epoch, updates done, rank) alone, so that a run
    resumed from a mid-epoch checkpoint draws what the uninterrupted run drew from there on, on
    every rank (only rank 0's generator state is in the checkpoint)."""
    key = f"{seed}:{epoch}:{updates}:{rank}".encode()
    derived = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1  # 63 bits: any train.seed fits
    torch.manual_seed(derived)
    random.seed(derived)
