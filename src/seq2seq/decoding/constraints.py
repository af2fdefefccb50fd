"""Syntax-aware decoding for Python (``--constrain python``), in two parts.

1. **Prefix pruning** (during the search): :class:`PythonBracketConstraint` bans the next tokens
   that make a prefix impossible to complete into valid Python, as ``tokenize`` would prove it:
   a closing bracket that does not match the innermost open one (``tokenize`` reports
   "closing parenthesis ')' does not match opening parenthesis '['" or "unmatched ')'"), and
   ending the output (``<eos>``) while a bracket is still open ("EOF in multi-line statement").
   Nothing that could still become valid code is ever banned.
2. **Choice among finished hypotheses** (after the search): :func:`prefer_accepted` moves the
   beam outputs that ``ast.parse`` accepts (never executed) ahead of those it rejects.

The search code only sees the small :class:`PrefixConstraint` interface, so it stays
independent of Python and of the tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import torch

T = TypeVar("T")
State = tuple  # an immutable per-hypothesis state, cheap to copy when beams are reordered


class PrefixConstraint(Protocol):
    """Per-hypothesis state machine over output token ids that bans impossible continuations."""

    def bind(self, examples: Sequence[int]) -> PrefixConstraint:
        """The constraint for one batch, whose row b holds input ``examples[b]`` of the decode call
        (a constraint that reads per-input data, such as a copy model's source words, picks them here)."""
        ...

    def start(self, row: int = 0) -> State:
        """The state of the empty prefix of the batch's row ``row``."""
        ...

    def advance(self, state: State, token: int) -> State:
        """The state after appending ``token`` (never a banned one)."""
        ...

    def banned(self, states: Sequence[State], scores: torch.Tensor, group: int = 1) -> torch.Tensor:
        """A [N, V] boolean mask on ``scores``' device: True where token v may not follow hypothesis n.
        ``scores`` [N, V] are the search's (-inf where already banned): a constraint that is costly
        per token may check only the best-scored ones. Rows come in runs of ``group`` hypotheses of
        one input whose scores compare (a beam passes its candidates' cumulative scores)."""
        ...


BRACKETS = {"(": ")", "[": "]", "{": "}"}


class PythonBracketConstraint:
    """Bracket structure of Python token prefixes; the state is the stack of open brackets.

    ``vocab_tokens[i]`` is the text of output token ``i``. A token is a bracket only when it is
    exactly ``(``, ``)``, ``[``, ... : the Python tokenizer keeps string literals whole, so a
    ``"("`` inside a string is never mistaken for one.
    """

    def __init__(self, vocab_tokens: Sequence[str], *, eos_index: int) -> None:
        index = {token: i for i, token in enumerate(vocab_tokens)}
        self.vocab_size = len(vocab_tokens)
        self.eos_index = eos_index
        self.opener_of = {index[close]: open_ for open_, close in BRACKETS.items() if close in index}
        self.closers = list(self.opener_of)  # token ids of ), ], }
        self.openers = {index[open_]: open_ for open_ in BRACKETS if open_ in index}
        self.closer_id = {open_: index[close] for open_, close in BRACKETS.items() if close in index}

    def bind(self, examples: Sequence[int]) -> PythonBracketConstraint:
        return self  # the same rules for every input

    def start(self, row: int = 0) -> State:
        return ()

    def advance(self, state: State, token: int) -> State:
        if token in self.openers:
            return (*state, self.openers[token])
        if token in self.opener_of and state and self.opener_of[token] == state[-1]:
            return state[:-1]
        return state

    def banned(self, states: Sequence[State], scores: torch.Tensor, group: int = 1) -> torch.Tensor:
        mask = torch.zeros(len(states), scores.size(-1), dtype=torch.bool)
        if self.closers:
            mask[:, self.closers] = True  # every closer is banned ...
        for row, stack in enumerate(states):
            if stack:
                mask[row, self.eos_index] = True  # cannot end inside brackets
                allowed = self.closer_id.get(stack[-1])
                if allowed is not None:
                    mask[row, allowed] = False  # ... except the one matching the innermost opener
        return mask.to(scores.device)


def python_constraint(vocab_tokens: Sequence[str], *, eos_index: int) -> PythonBracketConstraint:
    """The prefix constraint used by ``--constrain python``."""
    return PythonBracketConstraint(vocab_tokens, eos_index=eos_index)


def prefer_accepted(candidates: Sequence[T], accept: Callable[[T], bool]) -> list[T]:
    """Stable reorder: accepted candidates first (in their original, best-first order), then the
    rest. When no candidate is accepted the order is unchanged, so the search never returns
    less than it found."""
    verdicts = [accept(candidate) for candidate in candidates]
    return [c for c, ok in zip(candidates, verdicts) if ok] + [c for c, ok in zip(candidates, verdicts) if not ok]
