"""Tokenizers: AST round trip on real code, strings kept whole, never raising on broken code."""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import pytest

from seq2seq.data.tokenizers import (
    DEDENT,
    INDENT,
    NEWLINE,
    TOKENIZERS,
    MosesTokenizer,
    PythonTokenizer,
    WhitespaceTokenizer,
    WordTokenizer,
    build_tokenizer,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PY = PythonTokenizer()


def _ast(code: str) -> str | None:
    """``ast.dump`` of ``code``, or None when it does not parse (never executes anything)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old snippets
        try:
            return ast.dump(ast.parse(code))
        except (SyntaxError, ValueError):
            return None


def _round_trip(code: str) -> str:
    return PY.detokenize(PY.tokenize(code))


def _conala_snippets(split: str) -> list[str]:
    path = DATA / "conala" / f"{split}.json"
    if not path.exists():
        pytest.skip(f"../shared/data/conala not found: {path}")
    return [item["snippet"] for item in json.loads(path.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("split", ["test", "train"])
def test_conala_snippets_round_trip_to_the_same_ast(split: str) -> None:
    checked, failures = 0, []
    for code in _conala_snippets(split):
        expected = _ast(code)
        if expected is None:
            continue
        checked += 1
        if _ast(_round_trip(code)) != expected:
            failures.append((code, _round_trip(code)))
    assert checked > 400
    assert failures == []


def test_django_lines_never_raise_and_round_trip() -> None:
    path = DATA / "django" / "all.code"
    if not path.exists():
        pytest.skip(f"../shared/data/django not found: {path}")
    parsed = same = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        tokens = PY.tokenize(line)
        text = PY.detokenize(tokens)
        expected = _ast(line.strip())
        if expected is not None:
            parsed += 1
            same += _ast(text) == expected
    assert parsed > 10_000
    assert same / parsed >= 0.99


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x = foo(a,b)", "x = foo(a, b)"),
        ("d['k']=[i*2 for i in range(10)]", "d['k'] = [i * 2 for i in range(10)]"),
        ("not x", "not x"),
        ("lambda x:x+1", "lambda x: x + 1"),
        ("a if b else c", "a if b else c"),
        ("-1", "-1"),
        ("x = - 1", "x = -1"),
        ("x[1:3]", "x[1:3]"),
        ("x[::-1]", "x[::-1]"),
        ("print(f'{a}')", "print(f'{a}')"),
        ("f(a = 1, *args, **kw)", "f(a=1, *args, **kw)"),
        ("1 .real", "1 .real"),
        ("a . b . c ( 1 ) [ 2 ]", "a.b.c(1)[2]"),
        ("{'a' : 1, **b}", "{'a': 1, **b}"),
        ("from . import x", "from . import x"),
        ("x = not (a and b)", "x = not (a and b)"),
        ("@ property", "@property"),
        ("def f(x) -> int: return x ** -2", "def f(x) -> int: return x ** -2"),
    ],
)
def test_detokenize_is_readable_and_exact(code: str, expected: str) -> None:
    assert _round_trip(code) == expected
    assert _ast(expected) == _ast(code)


@pytest.mark.parametrize(
    "literal",
    ["'a b'", '"x y"', "f'{a} {b!r:>10}'", "rb'\\x00 \\d'", "u'caf\u00e9'", "'''one\ntwo'''",
     'R"raw \\n"', "Fr'{x}\\d'"],
)
def test_string_literals_stay_whole(literal: str) -> None:
    assert PY.tokenize(f"x = {literal} + y") == ["x", "=", literal, "+", "y"]


def test_comments_and_trailing_newline_are_dropped() -> None:
    assert PY.tokenize("x = 1  # set x\n") == ["x", "=", "1"]


def test_multi_line_code_round_trips_with_layout_tokens() -> None:
    code = (
        "def f(a, b=2):\n"
        "    '''Doc.'''\n"
        "    if a:\n"
        "        return [x for x in (a,\n"
        "                             b)]\n"
        "    else:\n"
        "        return -b\n"
        "print(f(1))\n"
    )
    tokens = PY.tokenize(code)
    assert tokens.count(INDENT) == 3 and tokens.count(DEDENT) == 3 and NEWLINE in tokens
    assert tokens[-1] == ")"
    assert "'''Doc.'''" in tokens
    assert _ast(PY.detokenize(tokens)) == _ast(code)
    assert PY.detokenize(tokens).splitlines()[2] == "    if a:"


NASTY = [
    "else:", "@decorator", "foo(a,", "print \"x\"", "x = `a`", "x = 'unterminated",
    "'''never closed", "  if x:\n y\nz", "$ ? !", ")", "", "   \n\t", "\\", "#only a comment",
    "print >>sys.stderr, 'x'", "exec 'code' in ns", "0777L + 10l", "a <> b", "\x00\x01",
    "lambda (a, b): a", "x = [1, 2,\n", "'a' 'b", "\"\"\"", "f'{", "é = 1",
]


@pytest.mark.parametrize("text", NASTY)
def test_never_raises_on_broken_code(text: str) -> None:
    tokens = PY.tokenize(text)
    assert isinstance(PY.detokenize(tokens), str)


def test_fallback_keeps_strings_whole_and_multi_char_operators() -> None:
    # The backtick makes `tokenize` report an error token, so this goes through the fallback.
    tokens = PY.tokenize("`x` ** y // z == w -> v **= 'a b' != r\"c\\d\" (")
    assert tokens == ["`", "x", "`", "**", "y", "//", "z", "==", "w", "->", "v", "**=", "'a b'",
                      "!=", 'r"c\\d"', "("]


def test_operators_do_not_merge_when_detokenized() -> None:
    assert _round_trip("x = -y") == "x = -y"
    assert PY.detokenize(["x", "=", "=", "y"]) == "x = = y"
    assert PY.detokenize(["f", "(", "a", "=", "=", "b", ")"]) == "f(a= =b)"
    assert PY.detokenize(["a", "*", "*", "b"]) != "a ** b"


def test_word_tokenizer_splits_punctuation_and_quotes() -> None:
    tokens = WordTokenizer().tokenize("Sort list `my_list` by 'key', don't stop (3.14)!")
    assert tokens == ["Sort", "list", "`", "my_list", "`", "by", "'", "key", "'", ",", "don't",
                      "stop", "(", "3.14", ")", "!"]
    assert WordTokenizer().detokenize(tokens) == "Sort list `my_list` by 'key', don't stop (3.14)!"


def test_word_tokenizer_lowercase() -> None:
    assert WordTokenizer(lowercase=True).tokenize("Hello World") == ["hello", "world"]
    assert WordTokenizer().tokenize("Hello World") == ["Hello", "World"]


def test_whitespace_tokenizer() -> None:
    assert WhitespaceTokenizer(lowercase=True).tokenize(" A  b\tC ") == ["a", "b", "c"]
    assert WhitespaceTokenizer().detokenize(["a", "b"]) == "a b"


def test_moses_tokenizer_splits_punctuation_and_clitics_and_detokenizes() -> None:
    tokenizer = MosesTokenizer(lowercase=True, lang="en")
    tokens = tokenizer.tokenize('A man isn\'t "standing" on a ladder, cleaning windows.')
    assert tokens == ["a", "man", "isn", "'t", '"', "standing", '"', "on", "a", "ladder", ",", "cleaning", "windows", "."]
    assert tokenizer.detokenize(tokens) == 'a man isn\'t "standing" on a ladder, cleaning windows.'
    assert MosesTokenizer().tokenize("Hello World") == ["Hello", "World"]  # keeps case by default


def test_moses_tokenizer_uses_the_language() -> None:
    german = build_tokenizer("moses", lang="de")
    assert isinstance(german, MosesTokenizer) and german.lang == "de"
    assert german.tokenize("Zwei junge Männer sind in der Nähe vieler Büsche.") == [
        "Zwei", "junge", "Männer", "sind", "in", "der", "Nähe", "vieler", "Büsche", ".",
    ]


def test_build_tokenizer_by_name() -> None:
    assert set(TOKENIZERS) == {"space", "word", "moses", "python"}
    for name, cls in TOKENIZERS.items():
        tokenizer = build_tokenizer(name, lowercase=False)
        assert isinstance(tokenizer, cls) and tokenizer.name == name


def test_build_tokenizer_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'bpe'.*moses, python, space, word"):
        build_tokenizer("bpe")
