"""The run directory's checkpoints: what the trainer writes there after each epoch (and, with
``train.save_every_steps``, within one), and how a killed run resumes from them.

Crash safety: after each epoch the trainer appends the epoch's metrics record, then writes
``best.safetensors`` (when improved), then ``last.safetensors``, each atomically. A kill at any
moment leaves ``last`` at a completed epoch (or, with ``train.save_every_steps``, at a mid-epoch
checkpoint); :meth:`Trainer.resume` drops whatever was written after it and repeats that work,
bit for bit, because the data order, the RNG state and the optimizer state all come back with
``last``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seq2seq.config import short_repr
from seq2seq.run_files import RunDirError, remove_temporaries, save_weights
from seq2seq.training.averaging import epoch_checkpoints, epoch_weights_path
from seq2seq.training.checkpointing import load_checkpoint, save_checkpoint
from seq2seq.training.distributed import Ranks
from seq2seq.training.epoch_progress import EpochProgress
from seq2seq.training.metrics_log import MetricsLog

logger = logging.getLogger(__name__)


@dataclass
class Counters:
    """Where training stands: what a checkpoint keeps besides the weights, optimizer, scheduler and RNG."""

    epoch: int  # epochs completed
    step: int
    best_valid_loss: float
    bad_epochs: int
    partial: EpochProgress | None = None  # a mid-epoch checkpoint's place in epoch epoch + 1


class RunCheckpoints:
    """One trainer's checkpoints in ``run_dir``: ``best.safetensors``, ``last.safetensors`` (with the
    resumable trainer state) and the weights of the last ``keep_epochs`` epochs (0: none); a resume
    cuts ``metrics`` back to ``last``."""

    def __init__(
        self,
        run_dir: Path | None,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,  # ReduceLROnPlateau or LambdaLR (training.schedules)
        metrics: MetricsLog,
        ranks: Ranks,
        keep_epochs: int,  # train.keep_epoch_checkpoints, read once when the trainer is built
    ) -> None:
        self.run_dir = run_dir
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.metrics = metrics
        self.ranks = ranks
        self.keep_epochs = keep_epochs

    @property
    def writes(self) -> bool:
        """Whether this process writes to ``run_dir``: only rank 0 of a data-parallel run does."""
        return self.run_dir is not None and self.ranks.is_main

    def resume(self) -> Counters | None:
        """The counters of ``run_dir``'s last checkpoint, its weights, optimizer, scheduler and RNG restored.

        A run killed before its first ``last.safetensors`` was in place (in epoch 1, or between
        epoch 1's metrics record, ``best`` and ``last``) starts again from epoch 1 (``None``): that
        gives the same weights, because the model was built from the same seed. A missing ``last``
        after later epochs were recorded is an error: it was lost, not yet to be written.
        """
        assert self.run_dir is not None
        removed = remove_temporaries(self.run_dir) if self.writes else []
        if removed:
            logger.info("removed %d temporary file(s) left by an interrupted write", len(removed))
        last = self.run_dir / "last.safetensors"
        if not last.exists() and self.metrics.last_epoch() <= 1:
            logger.info("no epoch of %s was checkpointed: starting from epoch 1", self.run_dir)
            self.metrics.truncate(epoch=0)
            return None
        saved = load_checkpoint(last, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        try:
            counters = Counters(
                epoch=int(saved["epoch"]),
                step=int(saved["step"]),
                best_valid_loss=float(saved["best_valid_loss"]),
                bad_epochs=int(saved["bad_epochs"]),
                partial=EpochProgress.from_partial(saved.get("partial")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise RunDirError(f"{last}: malformed counters {short_repr(saved)} in the trainer state ({error})") from None
        self.metrics.truncate(epoch=counters.epoch, step=None if counters.partial is None else counters.step)
        if counters.partial is None:
            logger.info("resumed %s after epoch %d (step %d)", self.run_dir, counters.epoch, counters.step)
        else:
            logger.info("resumed %s in epoch %d after %d of its updates (step %d)", self.run_dir, counters.epoch + 1,
                        counters.partial.updates, counters.step)
        saved_world = saved.get("world_size", 1)
        if counters.partial is not None and saved_world != self.ranks.world_size:
            raise RunDirError(f"{last}: written in the middle of epoch {counters.epoch + 1} by {saved_world} process(es); "
                              f"resume it with {saved_world} (the epoch's updates depend on the count), not "
                              f"{self.ranks.world_size}")
        if saved_world != self.ranks.world_size and self.ranks.is_main:
            logger.warning("resuming a run of %s process(es) with %d: each update now reads batch_size x accumulate x %d "
                           "pairs, so the run continues, but not as the uninterrupted run would have",
                           saved_world, self.ranks.world_size, self.ranks.world_size)
        return counters

    def _record(self, counters: Counters, partial: dict | None = None) -> dict:
        """``counters`` as the JSON record that ``last.safetensors`` keeps beside the weights."""
        return {
            "epoch": counters.epoch,
            "step": counters.step,
            "best_valid_loss": counters.best_valid_loss,
            "bad_epochs": counters.bad_epochs,
            "world_size": self.ranks.world_size,  # resuming with another count changes the updates
            "partial": partial,
        }

    def save_partial(self, counters: Counters, *, seconds: float) -> None:
        """``last.safetensors`` in the middle of epoch ``counters.epoch + 1`` (``train.save_every_steps``):
        the weights, optimizer and counters after ``counters.partial.updates`` of its updates, with the
        epoch's sums so far; ``best`` and the epoch records wait for the epoch's end."""
        if self.writes:
            assert self.run_dir is not None and counters.partial is not None
            save_checkpoint(self.run_dir / "last.safetensors", model=self.model, optimizer=self.optimizer,
                            scheduler=self.scheduler,
                            counters=self._record(counters, counters.partial.to_partial(seconds=seconds)))

    def save(self, counters: Counters, *, improved: bool) -> None:
        """``best`` before ``last``: a kill between the two repeats this epoch on resume and rewrites
        the same ``best``; the other order would resume past an improvement whose weights were lost."""
        if not self.writes:
            return
        assert self.run_dir is not None
        epoch = counters.epoch
        if improved:
            save_weights(self.model, self.run_dir / "best.safetensors", metadata={"epoch": str(epoch)})
        keep = self.keep_epochs
        if keep:
            save_weights(self.model, epoch_weights_path(self.run_dir, epoch), metadata={"epoch": str(epoch)})
        save_checkpoint(
            self.run_dir / "last.safetensors",
            model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, counters=self._record(counters),
        )
        if keep:  # only once `last` is in place: a resume repeats this epoch and rewrites its file
            for kept, path in epoch_checkpoints(self.run_dir).items():
                if kept <= epoch - keep or kept > epoch:
                    path.unlink(missing_ok=True)
