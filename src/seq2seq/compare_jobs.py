"""``seq2seq compare --jobs N``: train a comparison's runs N at a time, each in a process of its own.

A small recurrent model gains little from a second thread, so on a machine with few cores two
one-thread runs side by side finish a comparison sooner than the same runs one after another with
two threads each. Each run is the same as the one ``seq2seq compare`` would train with the same
``train.threads``: the same config, seed, data and vocabulary (the corpus is built once and sent to
each process), so the table does not depend on ``--jobs``. The processes only train; the
comparison then loads each finished run and evaluates it, as ``--resume`` does.

One process per run, started with ``spawn`` (a forked child would inherit torch's thread pools in
whatever state they are in) and watched through its exit sentinel, so a process that dies without a
word (killed for memory) is noticed at once rather than waited for.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from seq2seq.config import RunConfig
from seq2seq.data.corpus import Corpus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunTask:
    label: str  # "lstm-attention seed 43", for the log
    config: RunConfig
    run_dir: Path


class WorkerDied(OSError):
    """A run's process ended without a result (killed, e.g. by the system for lack of memory).
    An OSError, so the command line reports it in one line: its remedy lies in the machine."""


@dataclass
class _Running:
    task: RunTask
    process: multiprocessing.process.BaseProcess
    results: Connection
    outcome: tuple[str, object, str] | None = None  # ("done", stop message, "") or ("error", exception, traceback)


def train_in_parallel(tasks: list[RunTask], corpus: Corpus, *, jobs: int, resume: bool, overwrite: bool) -> None:
    """Train ``tasks``, at most ``jobs`` at a time. The first failure is raised here, as it would be
    from the run alone, after the runs still under way are stopped (their completed epochs are
    saved: ``--resume`` continues them); runs not yet begun are not started."""
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    pending, running, finished = list(tasks), [], 0
    logger.info("training %d runs, %d at a time", len(tasks), jobs)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                task = pending.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_run_task, args=(task, corpus, resume, overwrite, level, sender), name=task.label)
                process.start()
                sender.close()  # the child holds the only writing end: its exit closes the pipe
                running.append(_Running(task, process, receiver))
            # a result and the exit may come in either order; reading the result first keeps a child
            # from blocking on a full pipe while we wait for it to exit
            wait([r.results for r in running if r.outcome is None] + [r.process.sentinel for r in running])
            for run in list(running):
                if run.outcome is None and run.results.poll():
                    try:
                        run.outcome = run.results.recv()
                    except EOFError:  # exited without a word
                        run.outcome = ("died", None, "")
                if run.process.exitcode is None:
                    continue
                running.remove(run)
                run.process.join()
                finished += 1
                _report(run, finished, len(tasks))
    finally:
        for run in running:  # after a failure or an interrupt
            run.process.terminate()
            run.process.join()
            logger.warning("%s: stopped; its completed epochs are saved (--resume continues it)", run.task.label)


def _report(run: _Running, finished: int, total: int) -> None:
    kind, value, details = run.outcome or ("died", None, "")
    if kind == "done":
        logger.info("[%d/%d] %s: %s", finished, total, run.task.label, value)
        return
    if kind == "error":
        logger.error("%s failed", run.task.label)
        logger.debug("%s", details)  # the process's traceback (seq2seq -v)
        raise value
    raise WorkerDied(f"{run.task.label}: its training process ended without a result (exit code {run.process.exitcode}; "
                     "killed by the system, e.g. for lack of memory?); fewer --jobs need less memory")


def _run_task(task: RunTask, corpus: Corpus, resume: bool, overwrite: bool, log_level: int, results: Connection) -> None:
    """A child process: one run, begun or continued (``resume``: a finished run is left as it is)."""
    from seq2seq.compare_runs import train_or_continue
    from seq2seq.cpu_memory import keep_freed_memory

    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s [{task.label}] %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    keep_freed_memory()
    try:
        outcome = train_or_continue(task.config, task.run_dir, corpus, resume=resume, overwrite=overwrite)
        results.send(("done", outcome.result.stop_message, ""))
    except KeyboardInterrupt:
        pass  # the parent was interrupted too, and says so
    except Exception as error:
        details = traceback.format_exc()
        try:
            results.send(("error", error, details))
        except Exception:  # an exception that does not pickle: its type and text
            results.send(("error", RuntimeError(f"{type(error).__name__}: {error}"), details))
    finally:
        results.close()
