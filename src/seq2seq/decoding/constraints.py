"""Syntax-aware choice among finished beam hypotheses (``--constrain python``).

Beam search keeps several complete hypotheses per input; for code we prefer the most
probable one that is *syntactically valid*. The check itself (``ast.parse``, never
execution) is passed in as a predicate, so this module stays independent of Python
specifics and of the tokenizer that turns ids back into text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def prefer_accepted(candidates: Sequence[T], accept: Callable[[T], bool]) -> list[T]:
    """Stable reorder: accepted candidates first (in their original, best-first order), then the
    rest. When no candidate is accepted the order is unchanged, so the search never returns
    less than it found."""
    verdicts = [accept(candidate) for candidate in candidates]
    return [c for c, ok in zip(candidates, verdicts) if ok] + [c for c, ok in zip(candidates, verdicts) if not ok]
