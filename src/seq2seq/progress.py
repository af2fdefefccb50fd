"""Progress bars for the command line (the library itself only logs)."""

from __future__ import annotations

import math
import sys

from tqdm import tqdm


class TqdmProgress:
    """A context manager whose ``update(step, done, loss)`` matches the trainer's batch callback."""

    def __init__(self, *, desc: str, disable: bool = False) -> None:
        self.desc = desc
        # A bar redrawn with carriage returns only makes sense on a terminal; in a log file it
        # would leave fragments before the messages that matter.
        self.disable = disable or not sys.stderr.isatty()
        self.bar: tqdm | None = None

    def __enter__(self) -> TqdmProgress:
        self.bar = tqdm(desc=self.desc, unit="batch", disable=self.disable, dynamic_ncols=True, leave=False)
        return self

    def update(self, step: int, done: int, loss: float) -> None:
        assert self.bar is not None
        self.bar.update(1)
        if not math.isnan(loss) and step % 10 == 0:
            self.bar.set_postfix(step=step, loss=f"{loss:.3f}")

    def __exit__(self, *exc: object) -> None:
        assert self.bar is not None
        self.bar.close()
