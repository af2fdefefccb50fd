"""Text that UTF-8 can carry: the one check applied wherever text comes in.

JSON allows the escape ``"\\ud800"``, half of a UTF-16 surrogate pair. It decodes to a Python string
that no UTF-8 file, HTTP response or log line can hold, so without a check it is accepted and
crashes later, far from its cause, when something writes it out. Every entry point that takes text
(the readers, the HTTP API and its page, ``seq2seq generate``, the Python API) refuses it where it
comes in, naming the field or ``file:line`` and the character's position. Every other code point is
valid text and passes through unchanged: NUL, C0/C1 controls, noncharacters (U+FFFE, U+FDD0) and
U+2028/2029 included. A command-line argument holds such a character when its bytes were not
UTF-8: Python turns each bad byte into one of U+DC80..U+DCFF (PEP 383).
"""

from __future__ import annotations

__all__ = ["check_text", "escape_surrogates", "surrogate_problem"]


def surrogate_problem(text: str) -> str | None:
    """What is wrong with ``text`` (``"holds an unpaired surrogate '\\ud800' at character 3: ..."``),
    or None when UTF-8 can encode all of it."""
    if text.isascii():  # the common case, without building the encoded copy
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (f"holds an unpaired surrogate {text[err.start]!r} at character {err.start + 1}: "
                "expected valid Unicode text")
    return None


def check_text(text: str, *, what: str, error: type[ValueError] = ValueError) -> str:
    """``text`` unchanged, or ``error(f"{what} holds an unpaired surrogate ... at character N: ...")``.

    ``what`` names the text for the reader of the message: ``"input 2: the text"``,
    ``"data/train.json:7: the source"``.
    """
    problem = surrogate_problem(text)
    if problem is not None:
        raise error(f"{what} {problem}")
    return text


def escape_surrogates(text: str) -> str:
    """``text`` with each surrogate written as its escape (``\\ud800``), so that a message or a log
    line that quotes refused text can itself be written as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
