"""Slot handling for NL -> code: quoted literals and backquoted names become placeholders.

CoNaLa intents name the variables and literals a snippet uses in quotes: ``"sort list `l` by
key 'name'"`` -> ``sorted(l, key=lambda x: x['name'])``. A word-level model sees ``l`` and
``name`` as rare words (or unknown ones) and has to learn to spell them out in code. The CoNaLa
baseline and tranX (Yin and Neubig 2018) instead replace each quoted span of the intent with a
placeholder and the same value in the code with the same placeholder, and put the values back
into the generated code afterwards. This module does that, at the level of code tokens:

- **Intent**: every span quoted with backquotes, single or double quotes becomes ``var_N``
  (a backquoted Python identifier) or ``str_N`` (anything else), numbered in order of appearance.
  A quote only opens at the start of a word and closes at its end, so ``don't`` is not a quote.
- **Code** (training targets): a token sequence equal to the value's own tokens becomes the bare
  placeholder (``l`` -> ``var_0``); a string literal whose text between the quotes equals the value
  becomes a string literal holding the placeholder (``'name'`` -> ``'str_0'``). Longer values are
  replaced first, so a value never clobbers part of a longer one.
- **Output**: :func:`restore_slots` maps both forms back: ``var_0`` -> ``l``, ``'str_0'`` ->
  ``'name'`` (keeping the output's quote character and string prefix).

Values are compared as written, so an intent's ``'\\n'`` matches the code literal ``'\\n'``.
Nothing is ever evaluated: a string token's text is read by slicing, not by ``eval``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from seq2seq.data.tokenizers import PythonTokenizer

__all__ = ["Slot", "extract_slots", "restore_slots", "slot_code_tokens"]

# A quote opens where no word character precedes it and closes where none follows it; the value
# is non-empty and stays on one line.
_QUOTED = re.compile(r"(?<!\w)(?P<quote>[`'\"])(?P<value>[^\n]+?)(?P=quote)(?!\w)")
# A Python string literal token: optional prefix (r, b, u, f and pairs), then the quoted body.
_STRING_TOKEN = re.compile(r"(?P<prefix>[rRbBuUfF]{0,2})(?P<quote>'''|\"\"\"|'|\")(?P<body>[\s\S]*)(?P=quote)\Z")
_CODE = PythonTokenizer()


@dataclass(frozen=True)
class Slot:
    """One placeholder: its ``name`` (``var_0``, ``str_1``), the quoted ``value`` and its quote."""

    name: str
    value: str
    quote: str


def extract_slots(intent: str) -> tuple[str, tuple[Slot, ...]]:
    """The intent with each quoted span replaced by its placeholder, and the slots in order.

    The same value quoted twice gets one placeholder.
    """
    slots: dict[str, Slot] = {}
    counts = {"var": 0, "str": 0}

    def replace(match: re.Match[str]) -> str:
        value, quote = match["value"], match["quote"]
        if value not in slots:
            kind = "var" if quote == "`" and value.strip().isidentifier() else "str"
            slots[value] = Slot(f"{kind}_{counts[kind]}", value, quote)
            counts[kind] += 1
        return f" {slots[value].name} "

    replaced = _QUOTED.sub(replace, intent)
    return " ".join(replaced.split()), tuple(slots.values())


def _string_body(token: str) -> tuple[str, str, str] | None:
    """``(prefix, quote, body)`` of a string literal token, or None for any other token."""
    match = _STRING_TOKEN.match(token)
    return (match["prefix"], match["quote"], match["body"]) if match else None


def slot_code_tokens(tokens: Sequence[str], slots: Sequence[Slot]) -> list[str]:
    """Code tokens with every occurrence of a slot's value replaced by its placeholder."""
    out = list(tokens)
    for slot in sorted(slots, key=lambda s: len(s.value), reverse=True):
        value = slot.value.strip()
        pattern = _CODE.tokenize(value) if value else []
        replaced: list[str] = []
        i = 0
        while i < len(out):
            body = _string_body(out[i])
            if body is not None and body[2] == slot.value:
                prefix, quote, _ = body
                replaced.append(f"{prefix}{quote}{slot.name}{quote}")
                i += 1
            elif pattern and out[i : i + len(pattern)] == pattern:
                replaced.append(slot.name)
                i += len(pattern)
            else:
                replaced.append(out[i])
                i += 1
        out = replaced
    return out


def restore_slots(tokens: Sequence[str], slots: Sequence[Slot]) -> list[str]:
    """Generated code tokens with placeholders replaced by their values (both forms, see above).

    A placeholder the intent did not define (``var_3`` for an intent with one slot) stays as it is.
    """
    by_name = {slot.name: slot for slot in slots}
    restored = []
    for token in tokens:
        if token in by_name:
            restored.append(by_name[token].value.strip())
            continue
        body = _string_body(token)
        if body is not None and body[2] in by_name:
            prefix, quote, name = body
            restored.append(f"{prefix}{quote}{by_name[name].value}{quote}")
            continue
        restored.append(token)
    return restored
