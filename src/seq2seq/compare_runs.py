"""One run of a comparison: where it lives, its config, training (or continuing) it, and the
figures the comparison's table takes from it (:class:`ModelResult`).

``seq2seq compare`` puts a preset's run in ``OUT/<preset>`` (one seed) or ``OUT/<preset>/seed<k>``
(``--seeds N``); :func:`comparison_run_dirs` lays them out and refuses, before anything trains, a
folder that already holds a run (unless the comparison resumes or overwrites) or one of the other
layout.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seq2seq.checkpoint import RUN_MARKER, RunDirError
from seq2seq.config import RunConfig, build_config
from seq2seq.data.corpus import Corpus
from seq2seq.evaluation.evaluate import EvalReport
from seq2seq.pipeline import TrainOutcome, evaluate_split, train
from seq2seq.run_files import atomic_write_text
from seq2seq.training.metrics_log import MetricsLog
from seq2seq.training.trainer import BatchCallback
from seq2seq.training.stats import EpochStats

logger = logging.getLogger(__name__)


@dataclass
class ModelResult:
    """A run's row of the comparison: its size, speed, best validation perplexity and test report."""

    preset: str
    parameters: int
    epochs: float  # may end in a fraction when the time budget or max_steps ran out mid-epoch
    train_tokens_per_s: float
    seconds_per_epoch: float
    valid_perplexity: float
    test: EvalReport
    run_dir: Path
    grad_norm_mean: float = float("nan")  # gradient norm before clipping, mean over the logged steps
    grad_norm_max: float = float("nan")  # its largest value in any step
    clipped_fraction: float = float("nan")  # share of steps that clipping shortened


def comparison_run_dirs(out_dir: Path, presets: list[str], *, seeds: int, first_seed: int, resume: bool,
                        overwrite: bool) -> dict[tuple[str, int], Path]:
    """The run folder of each (preset, seed), checked as the module docstring says."""
    run_dirs = {(preset, seed): out_dir / preset if seeds == 1 else out_dir / preset / f"seed{seed}"
                for preset in presets for seed in range(first_seed, first_seed + seeds)}
    for preset in presets:  # a folder of the other layout (one run, or a folder per seed) is never mixed with this one
        other = sorted((out_dir / preset).glob(f"seed*/{RUN_MARKER}")) if seeds == 1 else [out_dir / preset / RUN_MARKER]
        if any(marker.exists() for marker in other):
            layout = "one run per seed (--seeds N)" if seeds == 1 else "a single run (--seeds 1)"
            raise RunDirError(f"{out_dir / preset} holds {layout}, not what --seeds {seeds} writes; choose another --out")
    existing = [run_dir for run_dir in run_dirs.values() if (run_dir / RUN_MARKER).exists()]
    if existing and not (resume or overwrite):  # said now, not after the first presets have trained
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise RunDirError(f"{existing[0]}{more} already holds a run; pass --resume to continue the comparison, "
                          "--overwrite to replace the runs, or choose another --out")
    return run_dirs


def _grad_norms(history: list[EpochStats]) -> dict[str, float]:
    """Gradient-norm behaviour over a whole run, from its epochs (each weighted by its steps)."""
    epochs = [e for e in history if math.isfinite(e.grad_norm_mean)]
    if not epochs:
        return {}
    steps, previous = [], 0
    for e in history:  # EpochStats.step is the optimizer step count at the epoch's end
        if math.isfinite(e.grad_norm_mean):
            steps.append(max(e.step - previous, 1))
        previous = e.step
    total = sum(steps)
    return {
        "grad_norm_mean": sum(w * e.grad_norm_mean for w, e in zip(steps, epochs)) / total,
        "grad_norm_max": max(e.grad_norm_max for e in epochs),
        "clipped_fraction": sum(w * e.clipped_fraction for w, e in zip(steps, epochs)) / total,
    }


def run_config(base: dict[str, Any], overrides: list[str], preset: str, seed: int | None) -> tuple[RunConfig, str]:
    """One run's config, and its name in the log."""
    overrides = overrides + ([f"train.seed={seed}"] if seed is not None else [])
    config = build_config(base=base, preset=preset, overrides=overrides, source=f"compare/{preset}")
    return config, preset if seed is None else f"{preset} seed {seed}"


def train_or_continue(config: RunConfig, run_dir: Path, corpus: Corpus, *, resume: bool, overwrite: bool,
                      on_batch: BatchCallback | None = None) -> TrainOutcome:
    """A comparison's run: trained afresh, or with ``resume`` continued where it stopped if it was
    begun (a finished one is only loaded: ``keep_finished``), in this process or a ``--jobs`` worker."""
    resume = resume and (run_dir / RUN_MARKER).is_file()  # a run not begun yet starts afresh
    return train(config, run_dir, resume=resume, keep_finished=True, overwrite=overwrite, on_batch=on_batch, corpus=corpus)


def train_one(base: dict[str, Any], overrides: list[str], preset: str, run_dir: Path, corpus: Corpus,
              *, overwrite: bool, resume: bool, show_progress: bool, split: str, seed: int | None = None) -> ModelResult:
    """Train (or, with ``resume``, continue or just load) one run, evaluate it on ``split`` and
    return its row; the figures over the whole run come from its log."""
    from seq2seq.progress import TqdmProgress

    config, label = run_config(base, overrides, preset, seed)
    resumed = resume and (run_dir / RUN_MARKER).is_file()
    with TqdmProgress(desc=label, disable=not show_progress) as progress:
        outcome = train_or_continue(config, run_dir, corpus, resume=resume, overwrite=overwrite, on_batch=progress.update)
    # a resumed run's TrainResult holds only the epochs trained now; its log holds them all
    history = MetricsLog(run_dir / "metrics.jsonl").history() if resumed else outcome.result.history
    report = evaluate_split(outcome.model, corpus, config, split, device=next(outcome.model.parameters()).device)
    atomic_write_text(run_dir / f"eval_{split}.json", json.dumps(report.summary(), indent=2))
    seconds = sum(s.seconds for s in history)
    tokens = sum(s.train_tokens for s in history)
    epochs = sum(s.fraction for s in history)
    best = min(history, key=lambda s: s.valid_loss)
    norms = _grad_norms(history)
    result = ModelResult(
        preset=preset, parameters=outcome.parameters, epochs=epochs,
        train_tokens_per_s=tokens / max(seconds, 1e-9), seconds_per_epoch=seconds / max(epochs, 1e-9),
        valid_perplexity=best.valid_perplexity, test=report, run_dir=run_dir, **norms,
    )
    logger.info("%s: %s parameters, test exact match %.1f%%, BLEU %.2f", preset, f"{result.parameters:,}", 100 * report.exact_match, report.bleu)
    return result
