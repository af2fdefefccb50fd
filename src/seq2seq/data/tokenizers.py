"""Text <-> token list for natural language and for Python code.

Three tokenizers, one per kind of text, chosen by name through :func:`build_tokenizer`:

- ``"space"``  (:class:`WhitespaceTokenizer`): ``str.split``; for pre-tokenized corpora.
- ``"word"``   (:class:`WordTokenizer`): English at word level; punctuation split off.
- ``"moses"``  (:class:`MosesTokenizer`): the Moses tokenizer and detokenizer (``sacremoses``), in
  the text's language; the standard preprocessing of WMT-style translation data such as Multi30k.
- ``"python"`` (:class:`PythonTokenizer`): Python source via the standard library
  ``tokenize`` module, with a regex fallback so that broken or Python-2-era lines
  (the Django corpus) never raise.

The contract that matters for code generation: ``detokenize(tokenize(code))`` parses
to the same AST as ``code`` whenever ``code`` parses (see ``tests/test_tokenizers.py``).
"""

from __future__ import annotations

import io
import keyword
import logging
import re
import textwrap
import tokenize as pytokenize
from collections.abc import Sequence
from typing import Protocol

from seq2seq.config import ConfigError, short_repr

logger = logging.getLogger(__name__)

__all__ = [
    "DEDENT",
    "INDENT",
    "NEWLINE",
    "MosesTokenizer",
    "TOKENIZERS",
    "PythonTokenizer",
    "Tokenizer",
    "WhitespaceTokenizer",
    "WordTokenizer",
    "build_tokenizer",
]


class Tokenizer(Protocol):
    """What every tokenizer offers: a name (stored in run directories) and both directions."""

    name: str

    def tokenize(self, text: str) -> list[str]: ...

    def detokenize(self, tokens: Sequence[str]) -> str: ...


class WhitespaceTokenizer:
    """Split on whitespace, join with one space. For corpora that are already tokenized."""

    name = "space"

    def __init__(self, *, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        return (text.lower() if self.lowercase else text).split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        return " ".join(tokens)


# A word keeps inner apostrophes ("don't", "user's"); decimals stay whole ("3.14");
# every other non-space character (quotes, backquotes, brackets, dots) is its own token.
_WORD_RE = re.compile(r"\d+\.\d+|\w+(?:'\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = frozenset(".,;:!?)]}%")
_NO_SPACE_AFTER = frozenset("([{$#")
_QUOTES = frozenset("`'\"")


class WordTokenizer:
    """Natural language at word level.

    ``"Sort list `my_list` by 'key'!"`` -> ``["Sort", "list", "`", "my_list", "`", "by",
    "'", "key", "'", "!"]``. :meth:`detokenize` is a best effort inverse: it re-attaches
    punctuation and pairs up quote characters.
    """

    name = "word"

    def __init__(self, *, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        return _WORD_RE.findall(text.lower() if self.lowercase else text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        out: list[str] = []
        open_quotes: set[str] = set()
        glue_next = True  # no space before the first token
        for token in tokens:
            if token in _QUOTES:
                closing = token in open_quotes
                open_quotes ^= {token}
                if not (glue_next or closing):
                    out.append(" ")
                out.append(token)
                glue_next = not closing
                continue
            if not (glue_next or token in _NO_SPACE_BEFORE or token.startswith("'")):
                out.append(" ")
            out.append(token)
            glue_next = token in _NO_SPACE_AFTER
        return "".join(out)


class MosesTokenizer:
    """The Moses tokenizer (``sacremoses``, a port of Moses' ``tokenizer.perl``) for language ``lang``.

    Tokens are left unescaped (``"`` stays ``"``, not ``&quot;``), so they read naturally in
    vocabularies and attention plots; :meth:`detokenize` is Moses' detokenizer, so scores such
    as sacreBLEU see ordinary text. ``"isn't"`` -> ``["isn", "'t"]`` in English.
    """

    name = "moses"

    def __init__(self, *, lowercase: bool = False, lang: str = "en") -> None:
        from sacremoses import MosesDetokenizer
        from sacremoses import MosesTokenizer as _Moses

        self.lowercase = lowercase
        self.lang = lang
        self._tokenizer = _Moses(lang=lang)
        self._detokenizer = MosesDetokenizer(lang=lang)

    def tokenize(self, text: str) -> list[str]:
        text = text.lower() if self.lowercase else text
        return self._tokenizer.tokenize(text, escape=False, aggressive_dash_splits=False)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return self._detokenizer.detokenize(list(tokens), unescape=False)


# ---------------------------------------------------------------------------------------------
# Python: layout tokens, the regex fallback tokenizer and the detokenizer
# ---------------------------------------------------------------------------------------------

NEWLINE, INDENT, DEDENT = "<newline>", "<indent>", "<dedent>"

# Longest first, so that the alternation matches "**=" before "**" before "*".
_MULTI_CHAR_OPS = sorted(
    "**= //= >>= <<= ... -> := == != <= >= <> ** // << >> += -= *= /= %= &= |= ^= @=".split(),
    key=len,
    reverse=True,
)
_OP_RE = re.compile("|".join(map(re.escape, _MULTI_CHAR_OPS)) + r"|[^\s\w]")
_STRING_BODY = (
    r"'''[\s\S]*?(?:'''|\Z)"
    r'|"""[\s\S]*?(?:"""|\Z)'
    r"|'(?:[^'\\\n]|\\[\s\S])*(?:'|(?=\n)|\Z)"  # an unterminated string ends with its line
    r'|"(?:[^"\\\n]|\\[\s\S])*(?:"|(?=\n)|\Z)'
)
_PY_TOKEN_RE = re.compile(
    r"(?P<space>(?:[ \t\f\v\r]|\\\r?\n)+)"
    r"|(?P<newline>\n)"
    r"|(?P<comment>#[^\r\n]*)"
    rf"|(?P<string>[rRbBuUfF]{{0,2}}(?:{_STRING_BODY}))"
    r"|(?P<number>0[xXoObB][0-9a-fA-F_]+[lL]?"
    r"|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?[jJlL]?)"
    r"|(?P<name>[^\W\d]\w*)"
    rf"|(?P<op>{_OP_RE.pattern})"
    r"|(?P<other>[\s\S])"
)
_OPENING, _CLOSING = "([{", ")]}"
_UNARY = frozenset({"-", "+", "~", "*", "**", "@"})
_VALUE_KEYWORDS = frozenset({"True", "False", "None"})


def _regex_tokenize_python(source: str) -> list[str]:
    """Best-effort tokens for text that ``tokenize`` rejects; same conventions, never raises."""
    tokens: list[str] = []
    depth, line_start, line_has_tokens = 0, 0, False
    indents = [0]
    for match in _PY_TOKEN_RE.finditer(source):
        kind, text = match.lastgroup, match.group()
        if kind in ("space", "comment"):
            continue
        if kind == "newline":
            if depth == 0 and line_has_tokens:
                tokens.append(NEWLINE)
                line_has_tokens = False
            line_start = match.end()
            continue
        if depth == 0 and not line_has_tokens:
            # First token of a logical line: compare its column with the indentation stack.
            column = match.start() - line_start
            if column > indents[-1]:
                indents.append(column)
                tokens.append(INDENT)
            while column < indents[-1]:
                indents.pop()
                tokens.append(DEDENT)
            line_has_tokens = True
        if text in _OPENING:
            depth += 1
        elif text in _CLOSING:
            depth = max(0, depth - 1)
        tokens.append(text)
    return tokens


def _is_word(token: str) -> bool:
    """Names, keywords, numbers and strings: two of them in a row need a space."""
    head = token[0]
    return head.isalnum() or head in "_'\"" or (len(token) > 1 and head == "." and token[1].isdigit())


def _is_operator_keyword(token: str) -> bool:
    """Keywords after which an operator is unary and a bracket is not a call (``not (x)``)."""
    return keyword.iskeyword(token) and token not in _VALUE_KEYWORDS


def _merges(left: str, right: str) -> bool:
    """Whether writing ``left + right`` would lex as a different first operator (``=`` ``=``)."""
    if _is_word(left) or _is_word(right):
        return False
    match = _OP_RE.match(left + right)
    return match is not None and len(match.group()) != len(left)


def _space_before(prev: str, token: str, *, glued: bool, bracket: str) -> bool:
    """Whether ``token`` needs a space after ``prev``; ``glued`` means prev binds rightward."""
    if _is_word(prev) and _is_word(token):
        return True  # names, numbers, strings and keywords must stay apart
    if token == "." and prev[0].isdigit():
        return True  # "1 .real": "1." would lex as a float
    if prev == "." and keyword.iskeyword(token):
        return True  # "from . import x"
    if glued or token in _CLOSING or token in (",", ";", ":") or (token == "=" and bracket == "("):
        return False
    if token == ".":
        return _is_operator_keyword(prev)
    if token in ("(", "["):
        return not (_is_word(prev) or prev in _CLOSING) or _is_operator_keyword(prev)
    return True


def _binds_rightward(prev: str | None, token: str, *, bracket: str) -> bool:
    """Whether nothing should separate ``token`` from the next one (``(``, ``.``, unary ``-``)."""
    if token in _OPENING or token == ".":
        return True
    if token == ":" and bracket == "[":
        return True  # slice: x[1:3]
    if token == "=" and bracket == "(":
        return True  # keyword argument: f(a=1)
    if token in _UNARY:
        operand_expected = prev is None or not (_is_word(prev) or prev in _CLOSING)
        return operand_expected or _is_operator_keyword(prev)
    return False


def _detokenize_python(tokens: Sequence[str]) -> str:
    """Readable source from Python tokens; parses to the AST the tokens came from."""
    lines: list[str] = []
    parts: list[str] = []
    level, prev, glued = 0, None, False
    brackets: list[str] = []
    for token in tokens:
        if not token:
            continue  # no tokenizer makes one, but a hand-edited vocabulary may hold ""
        if token == NEWLINE:
            lines.append("".join(parts))
            parts, prev = [], None
            continue
        if token in (INDENT, DEDENT):
            level = level + 1 if token == INDENT else max(0, level - 1)
            continue
        bracket = brackets[-1] if brackets else ""
        if prev is None:
            parts.append("    " * level)
        elif _space_before(prev, token, glued=glued, bracket=bracket) or _merges(prev, token):
            parts.append(" ")
        parts.append(token)
        glued = _binds_rightward(prev, token, bracket=bracket)
        if token in _OPENING:
            brackets.append(token)
        elif token in _CLOSING and brackets:
            brackets.pop()
        prev = token
    if parts:
        lines.append("".join(parts))
    return "\n".join(lines)

_LAYOUT = {
    pytokenize.NEWLINE: NEWLINE,
    pytokenize.INDENT: INDENT,
    pytokenize.DEDENT: DEDENT,
}
_DROPPED = frozenset(
    {pytokenize.COMMENT, pytokenize.NL, pytokenize.ENCODING, pytokenize.ENDMARKER}
)
# Python 3.12+ splits f-strings into pieces; we glue them back into one token.
_FSTRING_START = getattr(pytokenize, "FSTRING_START", -1)
_FSTRING_END = getattr(pytokenize, "FSTRING_END", -1)


class PythonTokenizer:
    """Python source code, one token per lexical token of the language.

    - String literals stay whole (prefixes and triple quotes included), comments are dropped.
    - Line structure of multi-line code is kept as the special tokens ``<newline>``,
      ``<indent>`` and ``<dedent>``; layout tokens at the very end are dropped, so a
      one-liner has none.
    - Never raises: text that ``tokenize`` rejects (unbalanced brackets, backticks,
      unterminated strings, bad indentation) goes through a regex tokenizer with the
      same conventions.
    """

    name = "python"

    def __init__(self, *, lowercase: bool = False) -> None:
        # Lowercasing code would change its meaning; accepted only for a uniform factory.
        if lowercase:
            logger.warning("PythonTokenizer ignores lowercase=True: code is case sensitive")

    def tokenize(self, text: str) -> list[str]:
        # Universal newlines, as compile() applies them: a lone "\r" ends a line for Python, but
        # neither for ``tokenize`` reading from a StringIO nor for the regex fallback.
        source = textwrap.dedent(text.replace("\r\n", "\n").replace("\r", "\n")).strip()
        if not source:
            return []
        try:
            tokens = _stdlib_tokens(source)
        except Exception as error:  # noqa: BLE001 - TokenError, IndentationError, ...: never raise
            logger.debug("tokenize failed (%s); regex fallback for %r", error, source[:80])
            tokens = None
        if tokens is None:
            tokens = _regex_tokenize_python(source)
        while tokens and tokens[-1] in (NEWLINE, DEDENT):
            tokens.pop()
        return tokens

    def detokenize(self, tokens: Sequence[str]) -> str:
        return _detokenize_python(tokens)


def _stdlib_tokens(source: str) -> list[str] | None:
    """Tokens from the ``tokenize`` module, or None when it reports an error token."""
    lines = source.splitlines(keepends=True)
    tokens: list[str] = []
    fstring_depth = 0
    fstring_begin: tuple[int, int] = (0, 0)
    for tok in pytokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == pytokenize.ERRORTOKEN:
            return None
        if tok.type == _FSTRING_START:
            if fstring_depth == 0:
                fstring_begin = tok.start
            fstring_depth += 1
        elif tok.type == _FSTRING_END:
            fstring_depth -= 1
            if fstring_depth == 0:
                tokens.append(_source_span(lines, fstring_begin, tok.end))
        elif fstring_depth > 0 or tok.type in _DROPPED:
            continue
        elif tok.type in _LAYOUT:
            tokens.append(_LAYOUT[tok.type])
        else:
            tokens.append(tok.string)
    return tokens


def _source_span(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    """The text between two ``(row, col)`` positions of ``tokenize`` (rows count from 1)."""
    (row0, col0), (row1, col1) = start, end
    if row0 == row1:
        return lines[row0 - 1][col0:col1]
    middle = "".join(lines[row0:row1 - 1])
    return lines[row0 - 1][col0:] + middle + lines[row1 - 1][:col1]


TOKENIZERS: dict[str, type] = {
    WhitespaceTokenizer.name: WhitespaceTokenizer,
    WordTokenizer.name: WordTokenizer,
    MosesTokenizer.name: MosesTokenizer,
    PythonTokenizer.name: PythonTokenizer,
}


def build_tokenizer(name: str, *, lowercase: bool = False, lang: str = "en") -> Tokenizer:
    """The tokenizer called ``name`` (one of :data:`TOKENIZERS`); a bad name is a :class:`ConfigError`
    because it comes from ``data.src_tokenizer`` / ``data.tgt_tokenizer``. ``lang`` is the text's
    language, which only the Moses tokenizer reads."""
    if not isinstance(name, str) or name not in TOKENIZERS:
        valid = ", ".join(sorted(TOKENIZERS))
        raise ConfigError(f"unknown tokenizer {short_repr(name)}; valid names: {valid}")
    if name == MosesTokenizer.name:
        return MosesTokenizer(lowercase=lowercase, lang=lang)
    return TOKENIZERS[name](lowercase=lowercase)

