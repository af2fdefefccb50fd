"""The inference worker of ``seq2seq serve``: one thread per model, fed by a queue.

torch is never entered concurrently for a model: every request's decoding runs on its
model's :class:`ModelWorker` thread, and the event loop only waits on a future. Requests
that queue up with equal options while a batch decodes are merged into the next one
(micro-batching), up to a number of texts; sampled requests are never merged, so that a
seeded draw does not depend on its neighbours.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from seq2seq.api import Model, Result
from seq2seq.translator import InputError

logger = logging.getLogger(__name__)

__all__ = ["Job", "ModelWorker", "Unavailable"]


class Unavailable(Exception):
    """The model takes no request now: too many are waiting, or the server is starting or stopping."""


@dataclass(eq=False)
class Job:
    texts: list[str]
    options: dict[str, object]  # keyword arguments of Model.generate
    future: Future[list[Result]] = field(default_factory=Future)

    @property
    def mergeable(self) -> bool:
        # A sampled output depends on the draws before it, so a seeded request stays
        # reproducible only when decoded alone; search results do not depend on batch neighbours.
        return not self.options.get("sample")


class ModelWorker:
    """The one thread that runs a model: requests queue here, and those waiting with equal
    options are merged into one decoding call (up to ``merge_inputs`` texts; 0 = never).

    Merging costs no waiting: a batch is whatever queued up while the previous one decoded.
    A job cancelled while queued (its request timed out) is dropped unrun.
    """

    def __init__(self, model: Model, *, max_queue: int, merge_inputs: int) -> None:
        self.model, self.max_queue, self.merge_inputs = model, max_queue, merge_inputs
        self._queue: deque[Job] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False

    def start(self) -> None:
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=f"seq2seq-{self.model.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the queued jobs, then end the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def submit(self, texts: list[str], options: dict[str, object]) -> Future[list[Result]]:
        job = Job(texts, options)
        with self._ready:
            if self._thread is None or self._closing:
                raise Unavailable(f"model {self.model.name!r} is not running (the server is starting or stopping)")
            if len(self._queue) >= self.max_queue:
                raise Unavailable(f"server busy: {len(self._queue)} requests are waiting for model {self.model.name!r}; retry shortly")
            self._queue.append(job)
            self._ready.notify()
        return job.future

    def _loop(self) -> None:
        while (jobs := self._take()) is not None:
            self._decode([job for job in jobs if job.future.set_running_or_notify_cancel()])

    def _take(self) -> list[Job] | None:
        """The oldest job plus the waiting jobs it can merge with; None once stopped and drained."""
        with self._ready:
            while not self._queue and not self._closing:
                self._ready.wait()
            if not self._queue:
                return None
            first = self._queue.popleft()
            jobs, size = [first], len(first.texts)
            for job in list(self._queue) if first.mergeable else []:
                if job.mergeable and job.options == first.options and size + len(job.texts) <= self.merge_inputs:
                    self._queue.remove(job)
                    jobs.append(job)
                    size += len(job.texts)
            return jobs

    def _decode(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            results = self.model.generate([text for job in jobs for text in job.texts], **jobs[0].options)
        except InputError as error:
            if len(jobs) == 1:
                jobs[0].future.set_exception(error)
                return
            for job in jobs:  # one at a time, so that a bad text fails only its own request
                self._decode([job])
            return
        except Exception as error:  # reaches each waiting request, which answers 500
            logger.exception("model %s failed on a batch of %d requests", self.model.name, len(jobs))
            for job in jobs:
                job.future.set_exception(error)
            return
        start = 0
        for job in jobs:
            job.future.set_result(results[start : start + len(job.texts)])
            start += len(job.texts)
