"""Which texts are Python, for the syntax-aware parts: whole outputs and prefixes of outputs.

Two questions, both answered by CPython's own parser (``compile`` with ``PyCF_ONLY_AST``: the
text is parsed into a tree, never compiled to byte code nor executed):

- :func:`parses`: is ``code`` a complete output? The parse rate and ``--constrain grammar``'s
  ``<eos>`` rule use it.
- :func:`viable_prefix`: can ``code`` still be completed into one? ``--constrain grammar`` keeps a
  hypothesis only while this holds. The parser is run with the flag that ``codeop`` (the
  interactive console) uses, ``PyCF_ALLOW_INCOMPLETE_INPUT``: input that ends inside a bracket, a
  string or a block is then reported as "incomplete input" rather than as an error. Input that
  ends in the middle of an expression (``x =``) is reported as an error *at the end of the text*,
  which means the same thing: the parser needed more, not something else. An error before the
  end means no continuation can mend the text (``x = )``, ``print x``). When the parser gives up
  on an open bracket ("'(' was never closed") it does not say where the real error is, so the
  bracket is closed and the text asked again.

A *unit* says what one output is. ``program`` (CoNaLa, the built-in task): a module that parses
on its own. ``line`` (Django, where every target is one line of a file): a line that parses in a
plausible context, as tranX scores Django: a block header (``def f(x):``, ``try:``) whose body
follows on later lines, ``else:`` / ``elif`` / ``except`` / ``finally`` after their ``if`` or
``try``, and a decorator before its function.
"""

from __future__ import annotations

import ast
import codeop
import functools
import io
import re
import tokenize
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

from seq2seq.data.tokenizers import INDENT, NEWLINE

Unit = Literal["program", "line"]
UNITS: tuple[str, ...] = ("program", "line")

# codeop's flag (CPython >= 3.9 defines it, under this private name): incomplete input is its own error
_INCOMPLETE = getattr(codeop, "PyCF_ALLOW_INCOMPLETE_INPUT", 0x4000)
_CLOSER = {"(": ")", "[": "]", "{": "}"}
# A line that continues a compound statement begun on an earlier line, and what that line was.
_CONTINUED = (
    (re.compile(r"(elif|else)\b"), "if True:\n pass\n"),
    (re.compile(r"(except|finally)\b"), "try:\n pass\n"),
)
_CACHE_SIZE = 1 << 16
# Errors that the parser reports at the start of a construct that is merely unfinished, with a
# continuation that finishes it: the text is asked again with that continuation after it.
# (The condition itself may be unfinished too: "a if b is", hence the second, with an operand.)
# "def f() ->" is reported at the arrow ("expected ':'"), as the annotation is still to come.
_FINISHERS = {"expected 'else' after 'if' expression": (" else None", " x else None"), "expected ':'": (" x",)}


def parses(code: str, *, unit: Unit = "program") -> bool:
    """True when ``code`` is a non-empty, complete output that Python's parser accepts (never
    executed). An empty text does not count: a model that stopped at once would otherwise score."""
    if not code.strip():
        return False
    if _accepts(code):
        return True
    return unit == "line" and _accepts(_line_in_context(code.strip()))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def viable_prefix(code: str, *, unit: Unit = "program") -> bool:
    """True when some continuation of ``code`` parses (see the module docstring for how this is
    decided). Cached: a beam asks about the same prefixes many times."""
    if not code.strip():
        return True
    if unit == "line":
        context = _context_of(code.lstrip())
        if context:
            return _completable(context + code.lstrip(), end=len(context) + len(code.lstrip()))
    return _completable(code, end=len(code))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _accepts(code: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for an invalid escape sequence
            ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def _line_in_context(line: str) -> str:
    """``line`` inside the smallest program that gives it a meaning (tranX's Django convention)."""
    program = _context_of(line) + line
    if line.startswith("@"):
        return program + "\ndef decorated():\n pass"
    if line.startswith("try") and line.endswith(":"):
        return program + "\n pass\nfinally:\n pass"
    if line.endswith(":"):
        return program + "\n pass"
    return program


def _context_of(line: str) -> str:
    for pattern, context in _CONTINUED:
        if pattern.match(line):
            return context
    return ""


def _completable(text: str, *, end: int) -> bool:
    """Whether the parser's verdict on ``text`` leaves room for a continuation after offset ``end``."""
    error = _syntax_error(text)
    if error is None or error.msg == "incomplete input":
        return True
    if error.msg.endswith("was never closed"):  # the parser gave up on a bracket: close it and ask again
        closers = _open_brackets(text)
        if closers is None:
            return False
        error = _syntax_error(text + closers)
        if error is None or error.msg == "incomplete input":
            return True
    for finisher in _FINISHERS.get(error.msg, ()):
        finished = _syntax_error(text + finisher)
        if finished is None or finished.msg == "incomplete input" or _offset(text, finished) >= end:
            return True
    return _offset(text, error) >= end


def _syntax_error(text: str) -> SyntaxError | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(text, "<output>", "exec", ast.PyCF_ONLY_AST | _INCOMPLETE, dont_inherit=True)
    except SyntaxError as error:
        return error
    except (ValueError, MemoryError, RecursionError):  # null bytes, absurd nesting: nothing mends those
        return SyntaxError("not parseable")
    return None


def _offset(text: str, error: SyntaxError) -> int:
    """The character offset in ``text`` where the parser stopped (-1 when it does not say)."""
    if error.lineno is None or error.offset is None:
        return -1
    lines = text.split("\n")
    if error.lineno > len(lines):
        return len(text)
    start = sum(len(line) + 1 for line in lines[: error.lineno - 1])
    line = lines[error.lineno - 1]
    column = min(error.offset - 1, len(line))
    # trailing spaces do not count: "x = " ends where "x =" does
    return start + column if column < len(line.rstrip()) else start + len(line)


def _open_brackets(text: str) -> str | None:
    """The closers of the brackets still open at the end of ``text``, innermost first (None when
    the brackets are already mismatched)."""
    stack: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type != tokenize.OP:
                continue
            if token.string in _CLOSER:
                stack.append(_CLOSER[token.string])
            elif token.string in _CLOSER.values():
                if not stack or stack.pop() != token.string:
                    return None
    except (tokenize.TokenError, SyntaxError):
        pass  # the end of input inside the brackets: the stack so far is the answer
    return "".join(reversed(stack))


def completed(tokens: Sequence[str], detokenize: Callable[[Sequence[str]], str], *, unit: Unit = "program") -> list[str]:
    """``tokens`` if they parse, else the nearest output that does: the longest prefix of them
    that parses as it is, with its open brackets closed, or as a block header (``with open(f)``,
    brackets closed) given ``: pass``; possibly empty.

    For the outputs a constrained search could not finish within its length limit (a model that
    repeats ``.items()`` until it runs out of length): every prefix it kept was viable, so cutting
    the last incomplete piece and closing the brackets suffices."""
    tokens = list(tokens)
    for end in range(len(tokens), 0, -1):
        prefix = tokens[:end]
        closers = list(_open_brackets(detokenize(prefix)) or "")
        # as it is; its brackets closed; or a block header given the empty body ("with open(f)" -> ": pass")
        for ending in ([], closers, [*closers, ":", NEWLINE, INDENT, "pass"]):
            if parses(detokenize([*prefix, *ending]), unit=unit):
                return [*prefix, *ending]
    return []


__all__ = ["UNITS", "Unit", "completed", "parses", "viable_prefix"]
