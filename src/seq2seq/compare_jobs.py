"""``seq2seq compare --jobs N``: train a comparison's runs N at a time, each in a process of its own.

A small recurrent model gains little from a second thread, so on a machine with few cores two
one-thread runs side by side finish a comparison sooner than the same runs one after another with
two threads each. Each run is the same as the one ``seq2seq compare`` would train with the same
``train.threads``: the same config, seed, data and vocabulary (the corpus is built once and sent to
the workers), so the table does not depend on ``--jobs``. The workers only train; the comparison
then loads each finished run and evaluates it, as ``--resume`` does.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from seq2seq.checkpoint import RUN_MARKER
from seq2seq.config import RunConfig
from seq2seq.data.corpus import Corpus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunTask:
    label: str  # "lstm-attention seed 43", for the log
    config: RunConfig
    run_dir: Path


def train_in_parallel(tasks: list[RunTask], corpus: Corpus, *, jobs: int, resume: bool, overwrite: bool) -> None:
    """Train ``tasks`` in ``jobs`` worker processes. The first failure stops the runs not yet begun
    (those under way finish) and is raised here, as it would be from the run alone."""
    # spawn, not fork: a forked child inherits torch's thread pools in whatever state they are in
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    logger.info("training %d runs, %d at a time", len(tasks), jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_train_task, task, corpus, resume=resume, overwrite=overwrite, log_level=level): task
                   for task in tasks}
        try:
            for done, future in enumerate(as_completed(futures), 1):
                logger.info("[%d/%d] %s: %s", done, len(tasks), futures[future].label, future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _train_task(task: RunTask, corpus: Corpus, *, resume: bool, overwrite: bool, log_level: int) -> str:
    """A worker's job: one run, begun or continued (``resume``: a finished run is left as it is)."""
    from seq2seq.cpu_memory import keep_freed_memory
    from seq2seq.pipeline import train

    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s [{task.label}] %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    keep_freed_memory()
    resume = resume and (task.run_dir / RUN_MARKER).is_file()
    outcome = train(task.config, task.run_dir, resume=resume, keep_finished=True, overwrite=overwrite, corpus=corpus)
    return outcome.result.stop_message
