"""``metrics.jsonl``, a run's training log: one JSON record per line, appended as training goes
(``{"kind": "step", ...}`` every few optimizer steps, ``{"kind": "epoch", ...}`` per epoch), and
cut back to the last checkpoint when a killed run resumes, so that repeated steps and epochs are
not recorded twice."""

from __future__ import annotations

import json
from pathlib import Path

from seq2seq.run_files import RunDirError, atomic_write_text
from seq2seq.training.stats import STOP_REASONS, EpochStats, TrainResult


class MetricsLog:
    """The run directory's ``metrics.jsonl`` (``path`` None: no run directory). Every process reads
    it; only one that ``writes`` (rank 0 of a data-parallel run) changes it."""

    def __init__(self, path: Path | None, *, writes: bool = True) -> None:
        self.path = path
        self.writes = writes and path is not None

    def records(self) -> list[tuple[str, dict]]:
        """(line, record) for each complete line; a line cut short by a crash is left out."""
        if self.path is None or not self.path.is_file():
            return []
        found = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").split("\n"):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict):
                found.append((line, record))
        return found

    def last_epoch(self) -> int:
        """The highest epoch with an epoch record (0: none)."""
        epochs = [record.get("epoch") for _, record in self.records() if record.get("kind") == "epoch"]
        return max((epoch for epoch in epochs if isinstance(epoch, int)), default=0)

    def history(self) -> list[EpochStats]:
        """The run's epochs, in order, from their epoch records (what :class:`TrainResult`'s history
        holds, for the whole run even when it was resumed); a malformed record raises ``RunDirError``
        naming the file."""
        return self._history([record for _, record in self.records()])

    def _history(self, records: list[dict]) -> list[EpochStats]:
        history = []
        for record in records:
            if record.get("kind") != "epoch":
                continue
            try:
                history.append(EpochStats.from_json(record))
            except ValueError as error:
                raise RunDirError(f"{self.path}: {error}") from None
        return history

    def ended(self) -> TrainResult | None:
        """The finished run's result if the log ends with the trainer's ``end`` record (written when
        ``fit`` returns; a run killed or still training has none last), else None."""
        records = [record for _, record in self.records()]  # the file read once
        if not records or records[-1].get("kind") != "end":
            return None
        end = records[-1]
        history = self._history(records)
        if end.get("stopped_by") not in STOP_REASONS or not history:
            raise RunDirError(f"{self.path}: malformed end record {end!r}")
        return TrainResult(history=history, best_valid_loss=min(stats.valid_loss for stats in history),
                           stopped_by=end["stopped_by"], stop_message=str(end.get("message", "")))

    def truncate(self, *, epoch: int, step: int | None = None) -> None:
        """Keep the records of epochs up to ``epoch`` and, for a checkpoint in the middle of epoch
        ``epoch + 1`` (``step`` given), its step records up to ``step``; drop the rest (written
        after the checkpoint by a run that was then killed) and the end record of an earlier
        invocation (the run goes on; its new end will be recorded)."""
        if not self.writes or not self.path.is_file():
            return
        kept = [
            line for line, record in self.records()
            if record.get("kind") != "end" and isinstance(record.get("epoch"), int) and (
                record["epoch"] <= epoch
                or (step is not None and record.get("kind") == "step" and record["epoch"] == epoch + 1
                    and isinstance(record.get("step"), int) and record["step"] <= step)
            )
        ]
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def append(self, record: dict) -> None:
        if not self.writes:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:  # a full disk reports no file name of its own
            raise OSError(error.errno, f"cannot append to {self.path}: {error.strerror or error}") from error
