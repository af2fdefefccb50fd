"""The training loop: batches in, loss out; owns checkpointing, LR schedule and early stopping.

Recipe (the seed specification): Adam, cross-entropy ignoring padding, teacher forcing with
probability ``teacher_forcing`` (0.5 by default, or a scheduled-sampling schedule over the optimizer
steps; see ``RecurrentDecoder.forward`` for how it is drawn), the coverage loss with weight
``coverage_weight`` (1.0 for a coverage model, else 0), gradient clipping at max norm ``clip_norm`` (1.0), ReduceLROnPlateau on validation loss
(or ``lr_schedule: inverse_sqrt``, Vaswani et al.'s warm-up per optimizer step), early stopping after
``early_stopping_patience`` epochs without improvement.

Crash safety: after each epoch the trainer appends the epoch's metrics record, then writes
``best.safetensors`` (when improved), then ``last.safetensors``, each atomically. A kill at any
moment leaves ``last`` at a completed epoch; :meth:`Trainer.resume` drops whatever was written
for later epochs and repeats them, bit for bit, because the data order, the RNG state and the
optimizer state all come back with ``last``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from seq2seq.config import TrainConfig, short_repr
from seq2seq.data.batching import Batch, EncodedPair, collate, pair_lengths
from seq2seq.data.vocab import Vocab
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.run_files import RunDirError, remove_temporaries, save_weights
from seq2seq.training.averaging import epoch_checkpoints, epoch_weights_path
from seq2seq.training.checkpointing import load_checkpoint, save_checkpoint
from seq2seq.training.epoch_progress import EpochProgress, norm_summary
from seq2seq.training.distributed import SINGLE, Ranks, check_update_fits, data_parallel, shard_update, update_chunks
from seq2seq.training.loss import coverage_loss, sequence_cross_entropy
from seq2seq.training.metrics_log import MetricsLog
from seq2seq.training.schedules import build_scheduler, steps_per_batch
from seq2seq.training.stats import EpochStats
from seq2seq.training.validation import reference_loss_sums
from seq2seq.training.word_dropout import word_dropout

logger = logging.getLogger(__name__)

BatchCallback = Callable[[int, int, float], None]  # (step, batches done in epoch, loss)


class NonFiniteLossError(ValueError):
    """A training batch gave a NaN or infinite loss or gradient norm and ``train.on_nonfinite`` is ``stop``.

    A ValueError, like the other errors whose remedy is in the input (here: a lower learning
    rate, a smaller ``clip_norm``, other data, or ``on_nonfinite: skip``), so the command line
    reports it in one line. ``indices`` are the batch's positions in the training pairs.
    """

    def __init__(self, message: str, *, indices: Sequence[int]) -> None:
        super().__init__(message)
        self.indices = list(indices)


def _adam(parameters, *, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam with its fused kernel where this torch build has one for the device (about 5x faster
    steps on a CPU than the per-tensor loop), else the default implementation; same update rule."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without the fused kernel
        return torch.optim.Adam(parameters, lr=lr, betas=betas)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse bf16 where it cannot run: a CPU without oneDNN bfloat16 kernels (they need AVX-512,
    fast with AVX512-BF16 or AMX; oneDNN's LSTM fails without them) or a GPU without bfloat16."""
    if precision != "bf16":
        return
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise ValueError("train.precision=bf16: this CPU has no bfloat16 kernels (oneDNN needs AVX-512; "
                         "AVX512-BF16 or AMX make it fast); use train.precision=fp32")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"train.precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp32")


@dataclass
class _EpochRun:
    """What one pass over the training data measured (before validation)."""

    loss: float  # mean per target token over the trained batches
    tokens: int
    seconds: float
    out_of_time: bool
    fraction: float  # share of the updates done
    skipped: int  # updates skipped for a non-finite loss or gradient
    grad_norms: list[float]  # gradient norm before clipping of every optimizer step


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
        model: Seq2Seq,
        config: TrainConfig,
        pad_index: int,
        device: torch.device,
        run_dir: Path | None = None,
        on_batch: BatchCallback | None = None,
        step_log_every: int = 50,
        ranks: Ranks = SINGLE,
    ) -> None:
        check_precision(config.precision, device)
        decoder = getattr(model, "decoder", None)
        self.coverage_weight = config.coverage_weight
        if self.coverage_weight is None:  # See et al. 2017 train their coverage model with weight 1
            self.coverage_weight = 1.0 if getattr(decoder, "coverage", False) else 0.0
        if self.coverage_weight > 0 and getattr(decoder, "attention", None) is None:
            raise ValueError("train.coverage_weight > 0 needs a model with attention (the loss reads its weights); "
                             "set model.decoder.attention or train.coverage_weight=0")
        self.model = model.to(device)
        self.config = config
        self.pad_index = pad_index
        self.device = device
        self.run_dir = run_dir
        self.on_batch = on_batch
        self.step_log_every = step_log_every
        self.ranks = ranks  # under torchrun: this process's rank; rank 0 alone writes to run_dir
        self.metrics = MetricsLog(None if run_dir is None else run_dir / "metrics.jsonl", writes=ranks.is_main)
        self.forward = self.model  # what training calls: the model, or its DDP wrapper once fit starts
        self.optimizer = _adam(model.parameters(), lr=config.learning_rate, betas=config.adam_betas)
        # train.lr_schedule: ReduceLROnPlateau per epoch, or inverse_sqrt per optimizer step
        self.scheduler = build_scheduler(self.optimizer, config)
        self.epoch = 0  # epochs completed
        self.step = 0
        self.best_valid_loss = math.inf
        self.bad_epochs = 0
        self.partial: EpochProgress | None = None  # a mid-epoch checkpoint's place in epoch self.epoch + 1

    # ------------------------------------------------------------------ state
    def resume(self) -> None:
        """Continue from ``run_dir``'s last completed epoch (weights, optimizer, scheduler, RNG).

        A run killed before its first ``last.safetensors`` was in place (in epoch 1, or between
        epoch 1's metrics record, ``best`` and ``last``) starts again from epoch 1: that gives the
        same weights, because the model was built from the same seed. A missing ``last`` after
        later epochs were recorded is an error: it was lost, not yet to be written.
        """
        assert self.run_dir is not None
        removed = remove_temporaries(self.run_dir) if self._writes else []
        if removed:
            logger.info("removed %d temporary file(s) left by an interrupted write", len(removed))
        last = self.run_dir / "last.safetensors"
        if not last.exists() and self.metrics.last_epoch() <= 1:
            logger.info("no epoch of %s was checkpointed: starting from epoch 1", self.run_dir)
            self.metrics.truncate(epoch=0)
            return
        counters = load_checkpoint(last, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)
        try:
            self.epoch = int(counters["epoch"])
            self.step = int(counters["step"])
            self.best_valid_loss = float(counters["best_valid_loss"])
            self.bad_epochs = int(counters["bad_epochs"])
            self.partial = EpochProgress.from_partial(counters.get("partial"))
        except (KeyError, TypeError, ValueError) as error:
            raise RunDirError(f"{last}: malformed counters {short_repr(counters)} in the trainer state ({error})") from None
        self.metrics.truncate(epoch=self.epoch, step=None if self.partial is None else self.step)
        if self.partial is None:
            logger.info("resumed %s after epoch %d (step %d)", self.run_dir, self.epoch, self.step)
        else:
            logger.info("resumed %s in epoch %d after %d of its updates (step %d)", self.run_dir, self.epoch + 1,
                        self.partial.updates, self.step)
        saved_world = counters.get("world_size", 1)
        if self.partial is not None and saved_world != self.ranks.world_size:
            raise RunDirError(f"{last}: written in the middle of epoch {self.epoch + 1} by {saved_world} process(es); "
                              f"resume it with {saved_world} (the epoch's updates depend on the count), not "
                              f"{self.ranks.world_size}")
        if saved_world != self.ranks.world_size and self.ranks.is_main:
            logger.warning("resuming a run of %s process(es) with %d: each update now reads batch_size x accumulate x %d "
                           "pairs, so the run continues, but not as the uninterrupted run would have",
                           saved_world, self.ranks.world_size, self.ranks.world_size)

    @property
    def _writes(self) -> bool:
        """Whether this process writes to ``run_dir``: only rank 0 of a data-parallel run does."""
        return self.run_dir is not None and self.ranks.is_main

    def _counters(self, partial: dict | None = None) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best_valid_loss": self.best_valid_loss,
            "bad_epochs": self.bad_epochs,
            "world_size": self.ranks.world_size,  # resuming with another count changes the updates
            "partial": partial,
        }

    def _save_partial(self, progress: EpochProgress, *, seconds: float) -> None:
        """``last.safetensors`` in the middle of epoch ``self.epoch + 1`` (``train.save_every_steps``):
        the weights, optimizer and counters after ``progress.updates`` of its updates, with the
        epoch's sums so far; ``best`` and the epoch records wait for the epoch's end."""
        if self._writes:
            assert self.run_dir is not None
            save_checkpoint(self.run_dir / "last.safetensors", model=self.model, optimizer=self.optimizer,
                            scheduler=self.scheduler, counters=self._counters(progress.to_partial(seconds=seconds)))
        self._reseed(progress.updates)

    def _reseed(self, updates: int) -> None:
        """Dropout and teacher-forcing draws from (seed, epoch, updates done, rank) alone, so that a run
        resumed from a mid-epoch checkpoint draws what the uninterrupted run drew from there on, on
        every rank (only rank 0's generator state is in the checkpoint)."""
        key = f"{self.config.seed}:{self.epoch}:{updates}:{self.ranks.rank}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1  # 63 bits: any train.seed fits
        torch.manual_seed(seed)
        random.seed(seed)

    def _save(self, improved: bool) -> None:
        """``best`` before ``last``: a kill between the two repeats this epoch on resume and rewrites
        the same ``best``; the other order would resume past an improvement whose weights were lost."""
        if not self._writes:
            return
        assert self.run_dir is not None
        counters = self._counters()
        if improved:
            save_weights(self.model, self.run_dir / "best.safetensors", metadata={"epoch": str(self.epoch)})
        keep = self.config.keep_epoch_checkpoints
        if keep:
            save_weights(self.model, epoch_weights_path(self.run_dir, self.epoch), metadata={"epoch": str(self.epoch)})
        save_checkpoint(
            self.run_dir / "last.safetensors",
            model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, counters=counters,
        )
        if keep:  # only once `last` is in place: a resume repeats this epoch and rewrites its file
            for epoch, path in epoch_checkpoints(self.run_dir).items():
                if epoch <= self.epoch - keep or epoch > self.epoch:
                    path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ loop
    def _loss(self, batch: Batch, *, teacher_forcing: float) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(the objective's sum, the cross-entropy's sum, target tokens): the objective adds the coverage
        loss to the cross-entropy; the logs report the cross-entropy, comparable to the validation loss."""
        src = batch.src
        if self.config.word_dropout > 0:
            src = word_dropout(src, batch.src_mask, rate=self.config.word_dropout, unk_index=Vocab.unk_index)
        # bf16 autocast runs the matrix products (and the recurrent cells) in bfloat16; the weights,
        # their gradients and Adam's moments stay float32, so no loss scaling is needed.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            logits, attention = self.forward(
                src, batch.src_lengths, batch.src_mask, batch.tgt_input, teacher_forcing=teacher_forcing,
                src_copy=batch.src_copy,
            )
        loss, n_tokens = sequence_cross_entropy(
            logits.float(), batch.tgt_output, pad_index=self.pad_index, label_smoothing=self.config.label_smoothing
        )
        objective = loss
        if self.coverage_weight > 0:  # See et al. 2017, eq. 13; checked in __init__: the model attends
            objective = loss + self.coverage_weight * coverage_loss(attention.float(), batch.tgt_output != self.pad_index)
        return objective, loss, n_tokens

    def _train_update(self, batches: Sequence[Batch], *, tokens: int, stand_in: Batch | None = None) -> tuple[float, int, float] | str:
        """One optimizer step on this rank's ``batches`` of an update of ``tokens`` target tokens
        (all ranks, all accumulated batches): ``(loss sum, tokens, gradient norm before clipping)``
        over the whole update, or what was not finite (nothing is stepped).

        Each batch's backward pass adds d(objective sum / tokens): summed over the batches and the
        ranks (DDP's mean times the world size) that is the gradient of the mean over every token of
        the update, so accumulation and data parallelism give the update of one batch holding them all.
        A rank with no batch in this update (a short last one) runs ``stand_in`` with weight 0, so
        that it still joins DDP's gradient exchange."""
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(2, device=self.device)  # [objective sum, cross-entropy sum] of this rank
        work = [(batch, True) for batch in batches] or [(stand_in, False)]
        for number, (batch, counts) in enumerate(work, start=1):
            with self.ranks.no_sync(self.forward, sync=number == len(work)), self.ranks.watching("exchanging gradients"):
                objective_sum, loss_sum, _ = self._loss(batch, teacher_forcing=self.teacher_forcing)
                objective = objective_sum / tokens
                if self.ranks.distributed:  # DDP averages over the ranks; the update wants the sum
                    objective = objective * self.ranks.world_size
                if not counts:  # the stand-in: a zero gradient for every parameter (0 x its loss could be NaN)
                    objective = sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
                objective.backward()
            if counts:
                sums += torch.stack([objective_sum.detach(), loss_sum.detach()])
        objective_sum, loss_sum = self.ranks.sum(sums).tolist()
        if not math.isfinite(objective_sum):
            self.optimizer.zero_grad(set_to_none=True)
            return f"loss ({objective_sum / tokens})"
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm)
        if not torch.isfinite(grad_norm):  # clipping cannot rescue an inf norm: the step would write NaNs
            self.optimizer.zero_grad(set_to_none=True)
            return f"gradient norm ({float(grad_norm)})"
        self.optimizer.step()
        self.step += 1
        if steps_per_batch(self.config):
            self.scheduler.step()
        return loss_sum, tokens, float(grad_norm)

    @property
    def teacher_forcing(self) -> float:
        """The teacher-forcing probability of the next optimizer step (``train.teacher_forcing``'s schedule)."""
        return self.config.teacher_forcing.probability(self.step)

    def _non_finite(self, what: str, indices: Sequence[int], *, number: int, of: int) -> None:
        """Stop with an error, or log and go on, as ``train.on_nonfinite`` says (the same on every rank:
        what was not finite is the sum over the ranks)."""
        shown = ", ".join(map(str, indices[:8])) + (", ..." if len(indices) > 8 else "")
        where = (
            f"non-finite training {what} at epoch {self.epoch + 1}, step {self.step}, batch {number} of {of} "
            f"(training examples {shown})"
        )
        if self.config.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"{where}; nothing of this epoch was saved. Lower train.learning_rate or train.clip_norm, "
                "or set train.on_nonfinite=skip to skip such batches",
                indices=indices,
            )
        logger.warning("%s: batch skipped", where)

    def evaluate_loss(self, pairs: Sequence[EncodedPair], *, batch_size: int | None = None) -> float:
        """Mean per-token cross-entropy with gold previous tokens (teacher forcing 1.0), no smoothing;
        under torchrun each rank scores every world_size-th batch and the sums are added up, so every
        rank gets the same figure and makes the same plateau and early-stopping decisions."""
        total, tokens = reference_loss_sums(
            self.model, pairs, pad_index=self.pad_index, batch_size=batch_size or self.config.batch_size,
            device=self.device, shard=(self.ranks.rank, self.ranks.world_size),
        )
        if self.ranks.distributed:
            total, tokens = self.ranks.sum(torch.tensor([total, tokens], dtype=torch.float64, device=self.device)).tolist()
        return total / max(tokens, 1)

    def _train_epoch(self, pairs: Sequence[EncodedPair], deadline: float | None) -> _EpochRun:
        self.model.train()
        if self.ranks.distributed:  # each rank its own dropout draws, which (seed, epoch, rank) alone decide
            torch.manual_seed((self.config.seed * 1000 + self.epoch) * 1000 + self.ranks.rank)
        # The data order depends only on (seed, epoch), so a resumed run sees the same batches.
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + self.epoch)
        started = window_started = time.perf_counter()
        chunks = update_chunks(pairs, self.config, ranks=self.ranks, generator=generator)
        tgt_lengths = pair_lengths(pairs)[1]  # [N], <sos> ... <eos>
        progress, out_of_time = self.partial or EpochProgress(), False
        started -= progress.seconds
        if self.partial is not None:  # resumed from a mid-epoch checkpoint: go on after its updates
            self._reseed(progress.updates)
            self.partial = None
        save_every, saved_at = self.config.save_every_steps, self.step
        for done, chunk in enumerate(chunks[progress.updates :], start=progress.updates + 1):
            progress.updates = done
            batches = [
                collate([pairs[i] for i in part], part, pad_index=self.pad_index, copy=self.model.copies).to(self.device)
                for part in shard_update(chunk, ranks=self.ranks, accumulate=self.config.accumulate) if part
            ]
            stand_in = None
            if not batches:  # this rank's share of a short last update is empty (see _train_update)
                stand_in = collate([pairs[chunk[0]]], chunk[:1], pad_index=self.pad_index, copy=self.model.copies).to(self.device)
            # every rank knows the whole chunk, so the update's token count needs no message
            n_update = int(tgt_lengths[chunk].sum()) - len(chunk)  # predicted: <eos>, not <sos>
            outcome = self._train_update(batches, tokens=n_update, stand_in=stand_in)
            if isinstance(outcome, str):
                self._non_finite(outcome, chunk, number=done, of=len(chunks))
                progress.skipped += 1
                loss_sum, n = math.nan, 0
            else:
                loss_sum, n, grad_norm = outcome
                progress.add(loss_sum, n, grad_norm)
                if self.step % self.step_log_every == 0:
                    now = time.perf_counter()
                    window_loss, window_tokens, window_norms = progress.take_window()
                    self.metrics.append({
                        "kind": "step", "step": self.step, "epoch": self.epoch + 1, "train_loss": window_loss,
                        "tgt_tokens": window_tokens, "tgt_tokens_per_s": window_tokens / max(now - window_started, 1e-9),
                        "teacher_forcing": self.teacher_forcing,
                        **norm_summary(window_norms, clip=self.config.clip_norm),
                    })
                    window_started = now
            if save_every and self.step % save_every == 0 and self.step != saved_at and done < len(chunks):
                saved_at = self.step  # a skipped update leaves the step where it was: no second save
                self._save_partial(progress, seconds=time.perf_counter() - started)
            if self.on_batch is not None and self.ranks.is_main:
                self.on_batch(self.step, done, loss_sum / n if n else math.nan)
            if deadline is not None and self.ranks.any(time.perf_counter() > deadline, device=self.device):
                out_of_time = True
                break
        return _EpochRun(progress.loss_sum / max(progress.tokens, 1), progress.tokens, time.perf_counter() - started,
                         out_of_time, progress.updates / max(len(chunks), 1), progress.skipped, progress.grad_norms)

    def fit(self, train_pairs: Sequence[EncodedPair], valid_pairs: Sequence[EncodedPair]) -> TrainResult:
        """Train until ``epochs``, early stopping or the time budget, whichever comes first."""
        if not train_pairs:
            raise ValueError("no training examples (after length filtering)")
        if not valid_pairs:
            raise ValueError("no validation examples")
        check_update_fits(train_pairs, self.config, ranks=self.ranks)
        self.forward = data_parallel(self.model, ranks=self.ranks, device=self.device)
        result = TrainResult(best_valid_loss=self.best_valid_loss)
        budget = self.config.time_budget_s
        deadline = time.perf_counter() + budget if budget else None
        while self.epoch < self.config.epochs:
            if self.bad_epochs >= self.config.early_stopping_patience:  # e.g. resuming a run that had stopped
                result.stopped_early = True
                break
            run = self._train_epoch(train_pairs, deadline)
            self.epoch += 1
            # 1. validate, 2. schedule the learning rate, 3. early-stopping bookkeeping,
            # 4. metrics record, then checkpoints (the order that keeps a kill harmless).
            valid_loss = self.evaluate_loss(valid_pairs)
            if not math.isfinite(valid_loss):
                logger.warning("epoch %d: validation loss is %s: not saved as best", self.epoch, valid_loss)
            if not steps_per_batch(self.config):
                self.scheduler.step(valid_loss)
            improved = math.isfinite(valid_loss) and valid_loss < self.best_valid_loss
            if improved:
                self.best_valid_loss, self.bad_epochs = valid_loss, 0
            else:
                self.bad_epochs += 1
            stats = EpochStats(
                epoch=self.epoch,
                step=self.step,
                train_loss=run.loss,
                valid_loss=valid_loss,
                learning_rate=self.optimizer.param_groups[0]["lr"],
                seconds=run.seconds,
                train_tokens=run.tokens,
                train_tokens_per_s=run.tokens / max(run.seconds, 1e-9),
                fraction=run.fraction,
                skipped_batches=run.skipped,
                **norm_summary(run.grad_norms, clip=self.config.clip_norm),
            )
            result.history.append(stats)
            self.metrics.append(stats.to_json())
            self._save(improved)
            logger.info(
                "epoch %d: train loss %.4f, valid loss %.4f (ppl %.2f), lr %.2e, %.1fs, %.0f tok/s%s%s",
                stats.epoch, stats.train_loss, stats.valid_loss, stats.valid_perplexity, stats.learning_rate,
                stats.seconds, stats.train_tokens_per_s, " *" if improved else "",
                f", {run.skipped} batch(es) skipped" if run.skipped else "",
            )
            if run.out_of_time:
                result.out_of_time = True
                logger.info("time budget of %.0fs reached", budget)
                break
            if self.bad_epochs >= self.config.early_stopping_patience:
                result.stopped_early = True
                logger.info("early stopping: no improvement for %d epochs", self.bad_epochs)
                break
        result.best_valid_loss = self.best_valid_loss
        self.ranks.barrier()  # rank 0's last checkpoint is written before any rank reads the run directory
        return result
