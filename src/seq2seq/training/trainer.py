"""The training loop: batches in, loss out; owns checkpointing, LR schedule and early stopping.

Recipe (the seed specification): Adam, cross-entropy ignoring padding, teacher forcing with
probability ``teacher_forcing`` (0.5 by default; see ``RecurrentDecoder.forward`` for how it is
drawn), gradient clipping at max norm ``clip_norm`` (1.0), ReduceLROnPlateau on validation loss,
early stopping after ``early_stopping_patience`` epochs without improvement.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from seq2seq.config import TrainConfig
from seq2seq.data.batching import Batch, EncodedPair, bucketed_batches
from seq2seq.training.checkpointing import atomic_write_text, load_checkpoint, save_checkpoint, save_weights
from seq2seq.training.loss import sequence_cross_entropy
from seq2seq.training.stats import EpochStats
from seq2seq.training.validation import mean_reference_loss

logger = logging.getLogger(__name__)

BatchCallback = Callable[[int, int, float], None]  # (step, batches done in epoch, loss)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable or unknown device is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available here; use 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    best_valid_loss: float = math.inf
    stopped_early: bool = False
    out_of_time: bool = False


class Trainer:
    """Trains one model. With a ``run_dir`` it writes ``best.safetensors``, ``last.safetensors``,
    the resumable trainer state and ``metrics.jsonl`` there after every epoch."""

    def __init__(
        self,
        *,
        model: nn.Module,
        config: TrainConfig,
        pad_index: int,
        device: torch.device,
        run_dir: Path | None = None,
        on_batch: BatchCallback | None = None,
        step_log_every: int = 50,
    ) -> None:
        self.model = model.to(device)
        self.config = config
        self.pad_index = pad_index
        self.device = device
        self.run_dir = run_dir
        self.on_batch = on_batch
        self.step_log_every = step_log_every
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="min",
            factor=config.lr_factor,
            patience=config.lr_patience,
            min_lr=config.min_learning_rate,
        )
        self.epoch = 0  # epochs completed
        self.step = 0
        self.best_valid_loss = math.inf
        self.bad_epochs = 0

    # ------------------------------------------------------------------ state
    def resume(self) -> None:
        """Continue from ``run_dir``'s last completed epoch (weights, optimizer, scheduler, RNG)."""
        assert self.run_dir is not None
        counters = load_checkpoint(
            self.run_dir / "last.safetensors", model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
        )
        self.epoch = int(counters["epoch"])
        self.step = int(counters["step"])
        self.best_valid_loss = float(counters["best_valid_loss"])
        self.bad_epochs = int(counters["bad_epochs"])
        self._truncate_metrics()
        logger.info("resumed %s after epoch %d (step %d)", self.run_dir, self.epoch, self.step)

    def _truncate_metrics(self) -> None:
        """Drop records written after the checkpoint (a crash mid-epoch) so they are not duplicated."""
        assert self.run_dir is not None
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if record.get("step", 0) <= self.step:
                kept.append(line)
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))

    def _save(self, improved: bool) -> None:
        if self.run_dir is None:
            return
        counters = {
            "epoch": self.epoch,
            "step": self.step,
            "best_valid_loss": self.best_valid_loss,
            "bad_epochs": self.bad_epochs,
        }
        save_checkpoint(
            self.run_dir / "last.safetensors",
            model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, counters=counters,
        )
        if improved:
            save_weights(self.model, self.run_dir / "best.safetensors", metadata={"epoch": str(self.epoch)})

    def _log_metric(self, record: dict) -> None:
        if self.run_dir is not None:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ loop
    def _loss(self, batch: Batch, *, teacher_forcing: float) -> tuple[torch.Tensor, int]:
        logits, _ = self.model(
            batch.src, batch.src_lengths, batch.src_mask, batch.tgt_input, teacher_forcing=teacher_forcing
        )
        return sequence_cross_entropy(
            logits, batch.tgt_output, pad_index=self.pad_index, label_smoothing=self.config.label_smoothing
        )

    def _train_batch(self, batch: Batch) -> tuple[float, int]:
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, n_tokens = self._loss(batch, teacher_forcing=self.config.teacher_forcing)
        loss = loss_sum / n_tokens
        if not torch.isfinite(loss):
            logger.warning("non-finite loss at step %d (batch of examples %s...): batch skipped", self.step, batch.indices[:5])
            return math.nan, 0
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm)
        self.optimizer.step()
        self.step += 1
        return float(loss_sum.detach()), n_tokens

    def evaluate_loss(self, pairs: Sequence[EncodedPair], *, batch_size: int | None = None) -> float:
        """Mean per-token cross-entropy with gold previous tokens (teacher forcing 1.0), no smoothing."""
        return mean_reference_loss(
            self.model, pairs, pad_index=self.pad_index, batch_size=batch_size or self.config.batch_size, device=self.device
        )

    def _train_epoch(self, pairs: Sequence[EncodedPair], deadline: float | None) -> tuple[float, int, float, bool, float]:
        self.model.train()
        # The data order depends only on (seed, epoch), so a resumed run sees the same batches.
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + self.epoch)
        total, tokens, started, out_of_time = 0.0, 0, time.perf_counter(), False
        window_loss, window_tokens = 0.0, 0  # mean loss since the last logged step
        batches = list(bucketed_batches(
            pairs, batch_size=self.config.batch_size, pad_index=self.pad_index, shuffle=True, generator=generator
        ))
        done = 0
        for done, batch in enumerate(batches, start=1):
            loss_sum, n = self._train_batch(batch.to(self.device))
            if n:
                total, tokens = total + loss_sum, tokens + n
                window_loss, window_tokens = window_loss + loss_sum, window_tokens + n
                if self.step % self.step_log_every == 0:
                    record = {"kind": "step", "step": self.step, "epoch": self.epoch + 1, "train_loss": window_loss / window_tokens}
                    self._log_metric(record)
                    window_loss, window_tokens = 0.0, 0
            if self.on_batch is not None:
                self.on_batch(self.step, done, loss_sum / n if n else math.nan)
            if deadline is not None and time.perf_counter() > deadline:
                out_of_time = True
                break
        fraction = done / max(len(batches), 1)
        return total / max(tokens, 1), tokens, time.perf_counter() - started, out_of_time, fraction

    def fit(self, train_pairs: Sequence[EncodedPair], valid_pairs: Sequence[EncodedPair]) -> TrainResult:
        """Train until ``epochs``, early stopping or the time budget, whichever comes first."""
        if not train_pairs:
            raise ValueError("no training examples (after length filtering)")
        if not valid_pairs:
            raise ValueError("no validation examples")
        result = TrainResult(best_valid_loss=self.best_valid_loss)
        budget = self.config.time_budget_s
        deadline = time.perf_counter() + budget if budget else None
        while self.epoch < self.config.epochs:
            if self.bad_epochs >= self.config.early_stopping_patience:  # e.g. resuming a run that had stopped
                result.stopped_early = True
                break
            train_loss, tokens, seconds, out_of_time, fraction = self._train_epoch(train_pairs, deadline)
            self.epoch += 1
            # 1. validate, 2. schedule the learning rate, 3. early-stopping bookkeeping, 4. save.
            valid_loss = self.evaluate_loss(valid_pairs)
            self.scheduler.step(valid_loss)
            improved = math.isfinite(valid_loss) and valid_loss < self.best_valid_loss
            if improved:
                self.best_valid_loss, self.bad_epochs = valid_loss, 0
            else:
                self.bad_epochs += 1
            stats = EpochStats(
                epoch=self.epoch,
                step=self.step,
                train_loss=train_loss,
                valid_loss=valid_loss,
                learning_rate=self.optimizer.param_groups[0]["lr"],
                seconds=seconds,
                train_tokens=tokens,
                train_tokens_per_s=tokens / max(seconds, 1e-9),
                fraction=fraction,
            )
            result.history.append(stats)
            self._save(improved)
            self._log_metric(stats.to_json())
            logger.info(
                "epoch %d: train loss %.4f, valid loss %.4f (ppl %.2f), lr %.2e, %.1fs, %.0f tok/s%s",
                stats.epoch, stats.train_loss, stats.valid_loss, stats.valid_perplexity, stats.learning_rate,
                stats.seconds, stats.train_tokens_per_s, " *" if improved else "",
            )
            if out_of_time:
                result.out_of_time = True
                logger.info("time budget of %.0fs reached", budget)
                break
            if self.bad_epochs >= self.config.early_stopping_patience:
                result.stopped_early = True
                logger.info("early stopping: no improvement for %d epochs", self.bad_epochs)
                break
        result.best_valid_loss = self.best_valid_loss
        return result
