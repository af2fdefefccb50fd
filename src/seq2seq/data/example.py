"""The unit of every data set: one source text and one target text, plus where it came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One raw (untokenized) source/target pair.

    ``origin`` is ``"file:line"`` when the pair was read from a file, so that later
    stages (tokenizing, length filtering) can still point the user at the input.
    """

    src: str
    tgt: str
    origin: str = ""


class DataError(ValueError):
    """Bad input data. The message starts with ``file:line:`` and says what was expected."""


class DataFolderNotFound(DataError):
    """A data folder (``--data``, ``--task``'s folder or ``data.path``) that does not exist."""
