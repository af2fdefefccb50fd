"""The training loop: batches in, loss out; owns checkpointing, LR schedule and early stopping.

Recipe (the seed specification): Adam, cross-entropy ignoring padding, teacher forcing with
probability ``teacher_forcing`` (0.5 by default, or a scheduled-sampling schedule over the optimizer
steps; see ``RecurrentDecoder.forward`` for how it is drawn), the coverage loss with weight
``coverage_weight`` (0.1 for a coverage model, else 0), gradient clipping at max norm ``clip_norm`` (1.0), ReduceLROnPlateau on validation loss
(or ``lr_schedule: inverse_sqrt``, Vaswani et al.'s warm-up per optimizer step), early stopping after
``early_stopping_patience`` epochs without improvement.

Elsewhere: one optimizer update (:mod:`seq2seq.training.update`); the run directory's checkpoints,
the crash-safe order they are written in, and resuming (:mod:`seq2seq.training.run_checkpoints`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from seq2seq.config import TrainConfig
from seq2seq.config.train import default_coverage_weight
from seq2seq.data.batching import Batch, EncodedPair, collate, pair_lengths
from seq2seq.data.vocab import Vocab
from seq2seq.devices import check_precision
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.training.epoch_progress import EpochProgress, EpochRun, norm_summary
from seq2seq.training.distributed import SINGLE, Ranks, check_update_fits, data_parallel, shard_update, update_chunks
from seq2seq.training.loss import coverage_loss, sequence_cross_entropy
from seq2seq.training.metrics_log import MetricsLog
from seq2seq.training.run_checkpoints import Counters, RunCheckpoints
from seq2seq.training.schedules import build_scheduler, steps_per_batch
from seq2seq.training.seeding import reseed, seed_everything
from seq2seq.training.stats import EpochStats, TrainResult
from seq2seq.training.update import NonFiniteLossError, adam, handle_non_finite, train_update
from seq2seq.training.validation import reference_loss_sums
from seq2seq.training.word_dropout import word_dropout

logger = logging.getLogger(__name__)

BatchCallback = Callable[[int, int, float], None]  # (step, batches done in epoch, loss)


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
        if self.coverage_weight is None:  # a TrainConfig outside a RunConfig (which resolves it)
            self.coverage_weight = default_coverage_weight(getattr(decoder, "coverage", False))
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
        self.optimizer = adam(model.parameters(), lr=config.learning_rate, betas=config.adam_betas)
        # train.lr_schedule: ReduceLROnPlateau per epoch, or inverse_sqrt per optimizer step
        self.scheduler = build_scheduler(self.optimizer, config)
        self.checkpoints = RunCheckpoints(run_dir, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                          metrics=self.metrics, ranks=ranks, keep_epochs=config.keep_epoch_checkpoints)
        self.epoch = 0  # epochs completed
        self.step = 0
        self.best_valid_loss = math.inf
        self.bad_epochs = 0
        self.partial: EpochProgress | None = None  # a mid-epoch checkpoint's place in epoch self.epoch + 1

    # ------------------------------------------------------------------ state
    def resume(self) -> None:
        """Continue from ``run_dir``'s last checkpoint, or from epoch 1 (:meth:`RunCheckpoints.resume`)."""
        counters = self.checkpoints.resume()
        if counters is not None:
            self.epoch, self.step = counters.epoch, counters.step
            self.best_valid_loss, self.bad_epochs, self.partial = counters.best_valid_loss, counters.bad_epochs, counters.partial

    def _counters(self, partial: EpochProgress | None = None) -> Counters:
        return Counters(self.epoch, self.step, self.best_valid_loss, self.bad_epochs, partial)

    def _reseed(self, updates: int) -> None:
        """The draws after ``updates`` of epoch ``self.epoch + 1``'s updates (:func:`reseed`)."""
        reseed(self.config.seed, epoch=self.epoch, updates=updates, rank=self.ranks.rank)

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
        """One optimizer step of :func:`train_update` with this trainer's loss, counted in ``step``, and
        the learning-rate schedule's step where it steps per optimizer step."""
        outcome = train_update(
            batches, tokens=tokens, stand_in=stand_in, loss=lambda batch: self._loss(batch, teacher_forcing=self.teacher_forcing),
            model=self.model, forward=self.forward, optimizer=self.optimizer, ranks=self.ranks, clip_norm=self.config.clip_norm,
            device=self.device,
        )
        if not isinstance(outcome, str):
            self.step += 1
            if steps_per_batch(self.config):
                self.scheduler.step()
        return outcome

    @property
    def teacher_forcing(self) -> float:
        """The teacher-forcing probability of the next optimizer step (``train.teacher_forcing``'s schedule)."""
        return self.config.teacher_forcing.probability(self.step)

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

    def _train_epoch(self, pairs: Sequence[EncodedPair], deadline: float | None) -> EpochRun:
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
        # A resumed part-epoch at or past max_steps (lowered on --resume) trains nothing: it is validated and saved.
        remaining = [] if self._out_of_steps() else chunks[progress.updates :]
        for done, chunk in enumerate(remaining, start=progress.updates + 1):
            progress.updates = done
            batches = [
                collate([pairs[i] for i in part], part, pad_index=self.pad_index, copy=self.model.copies).to(self.device)
                for part in shard_update(chunk, ranks=self.ranks, accumulate=self.config.accumulate) if part
            ]
            stand_in = None
            if not batches:  # this rank's share of a short last update is empty (see train_update)
                stand_in = collate([pairs[chunk[0]]], chunk[:1], pad_index=self.pad_index, copy=self.model.copies).to(self.device)
            # every rank knows the whole chunk, so the update's token count needs no message
            n_update = int(tgt_lengths[chunk].sum()) - len(chunk)  # predicted: <eos>, not <sos>
            outcome = self._train_update(batches, tokens=n_update, stand_in=stand_in)
            if isinstance(outcome, str):
                handle_non_finite(outcome, chunk, epoch=self.epoch + 1, step=self.step, number=done, of=len(chunks),
                                  on_nonfinite=self.config.on_nonfinite)
                progress.skipped += 1
                loss_sum, n = math.nan, 0
            else:
                loss_sum, n, grad_norm = outcome
                progress.add(loss_sum, n, grad_norm)
                if self.step % self.step_log_every == 0:
                    window_started = self._record_window(progress, since=window_started)
            last = done == len(chunks) or self._out_of_steps()  # the epoch's last update: its checkpoint follows
            if save_every and self.step % save_every == 0 and self.step != saved_at and not last:
                saved_at = self.step  # a skipped update leaves the step where it was: no second save
                self.checkpoints.save_partial(self._counters(progress), seconds=time.perf_counter() - started)
                self._reseed(progress.updates)  # from here on, draw what a run resumed from that checkpoint draws
            if self.on_batch is not None and self.ranks.is_main:
                self.on_batch(self.step, done, loss_sum / n if n else math.nan)
            if deadline is not None and self.ranks.any(time.perf_counter() > deadline, device=self.device):
                out_of_time = True
                break
            if self._out_of_steps():  # every rank counts the same steps: no message needed
                break
        return EpochRun(progress.loss_sum / max(progress.tokens, 1), progress.tokens, time.perf_counter() - started,
                        out_of_time, self._out_of_steps(), progress.updates / max(len(chunks), 1), progress.skipped,
                        progress.grad_norms)

    def _record_window(self, progress: EpochProgress, *, since: float) -> float:
        """Append a ``step`` record of the updates since the last one (started at ``since``); returns now."""
        now = time.perf_counter()
        window_loss, window_tokens, window_norms = progress.take_window()
        self.metrics.append({
            "kind": "step", "step": self.step, "epoch": self.epoch + 1, "train_loss": window_loss,
            "tgt_tokens": window_tokens, "tgt_tokens_per_s": window_tokens / max(now - since, 1e-9),
            "teacher_forcing": self.teacher_forcing, **norm_summary(window_norms, clip=self.config.clip_norm),
        })
        return now

    def _out_of_steps(self) -> bool:
        """Whether ``train.max_steps`` optimizer steps are done (``self.step`` counts the whole run's)."""
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def fit(self, train_pairs: Sequence[EncodedPair], valid_pairs: Sequence[EncodedPair]) -> TrainResult:
        """Train until ``epochs``, early stopping, the time budget or ``max_steps``, whichever comes first."""
        if not train_pairs:
            raise ValueError("no training examples (after length filtering)")
        if not valid_pairs:
            raise ValueError("no validation examples")
        check_update_fits(train_pairs, self.config, ranks=self.ranks)
        self.forward = data_parallel(self.model, ranks=self.ranks, device=self.device)
        history: list[EpochStats] = []
        deadline = time.perf_counter() + self.config.time_budget_s if self.config.time_budget_s else None
        stop = "epochs", f"train.epochs ({self.config.epochs}) done"
        while self.epoch < self.config.epochs:
            if self.bad_epochs >= self.config.early_stopping_patience:  # e.g. resuming a run that had stopped
                stop = "early_stopping", self._early_stopping_message()
                break
            if self._out_of_steps() and self.partial is None:  # e.g. resuming a run that had reached its max_steps
                stop = "max_steps", f"train.max_steps ({self.config.max_steps}) already reached at step {self.step}"
                logger.info("%s: nothing to train", stop[1])
                break
            run = self._train_epoch(train_pairs, deadline)
            self.epoch += 1
            history.append(self._end_epoch(run, valid_pairs))
            reason = self._reason_to_stop(run)
            if reason is not None:
                stop = reason
                logger.info("%s", stop[1])
                break
        # the log's last record says the run ended, and why (a killed run's log ends elsewhere)
        self.metrics.append({"kind": "end", "epoch": self.epoch, "step": self.step, "stopped_by": stop[0], "message": stop[1]})
        self.ranks.barrier()  # rank 0's last checkpoint is written before any rank reads the run directory
        return TrainResult(history=history, best_valid_loss=self.best_valid_loss, stopped_by=stop[0], stop_message=stop[1])

    def _end_epoch(self, run: EpochRun, valid_pairs: Sequence[EncodedPair]) -> EpochStats:
        """The epoch's end: 1. validate, 2. schedule the learning rate, 3. early-stopping bookkeeping,
        4. metrics record, then checkpoints (the order that keeps a kill harmless); returns the record."""
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
            epoch=self.epoch, step=self.step, train_loss=run.loss, valid_loss=valid_loss,
            learning_rate=self.optimizer.param_groups[0]["lr"], seconds=run.seconds, train_tokens=run.tokens,
            train_tokens_per_s=run.tokens / max(run.seconds, 1e-9), fraction=run.fraction, skipped_batches=run.skipped,
            **norm_summary(run.grad_norms, clip=self.config.clip_norm),
        )
        self.metrics.append(stats.to_json())
        self.checkpoints.save(self._counters(), improved=improved)
        logger.info(
            "epoch %d: train loss %.4f, valid loss %.4f (ppl %.2f), lr %.2e, %.1fs, %.0f tok/s%s%s",
            stats.epoch, stats.train_loss, stats.valid_loss, stats.valid_perplexity, stats.learning_rate,
            stats.seconds, stats.train_tokens_per_s, " *" if improved else "",
            f", {run.skipped} batch(es) skipped" if run.skipped else "",
        )
        return stats

    def _reason_to_stop(self, run: EpochRun) -> tuple[str, str] | None:
        """Why training ends after this epoch (a STOP_REASONS key and a sentence), or None to go on."""
        if run.out_of_time:
            return "time_budget", f"train.time_budget_s ({self.config.time_budget_s:g} s) reached"
        if run.out_of_steps:
            return "max_steps", f"train.max_steps ({self.config.max_steps}) reached"
        if self.bad_epochs >= self.config.early_stopping_patience:
            return "early_stopping", self._early_stopping_message()
        return None

    def _early_stopping_message(self) -> str:
        return (f"early stopping: no improvement for {self.bad_epochs} epochs "
                f"(train.early_stopping_patience {self.config.early_stopping_patience})")


__all__ = ["BatchCallback", "NonFiniteLossError", "TrainResult", "Trainer", "check_precision", "seed_everything"]
