"""Bad input, property-based: every reader, the config loader, the tokenizers, the command line and
the run-directory loader, fed malformed encodings, empty lines, mismatched line counts, huge lines,
wrong types and unknown keys.

The property everywhere: no traceback escapes. Input is either accepted (and then the result is
well-formed) or refused with the project's own exception (DataError, ConfigError, RunDirError)
whose message names the file (and line) or the key and says what was expected.

Each property is a plain function over generated values; ``FUZZ_TARGETS`` pairs it with its
strategies. ``test_fuzz`` runs every target with a few dozen cases in the default suite and
``test_fuzz_thorough`` (``pytest -m slow``) the same functions with at least 1,000 cases each.
No example database is written (``database=None``), so the repository stays clean. The default
suite's cases are derandomized (the same every run, so CI cannot go red on a new draw); the slow
runs draw new ones each time.
"""

from __future__ import annotations

import ast
import codecs
import contextlib
import io
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seq2seq.pipeline
from helpers import tiny_config
from seq2seq.checkpoint import RunDirError, load_run
from seq2seq.cli import main
from seq2seq.config import ConfigError, RunConfig, build_config, config_to_yaml, load_config_file
from seq2seq.data.dataset import DJANGO_LINES, DJANGO_VALID_END, read_conala, read_django, read_json, read_parallel, read_tsv
from seq2seq.data.example import DataError, Example
from seq2seq.data.tokenizers import TOKENIZERS, build_tokenizer
from seq2seq.pipeline import train
from seq2seq.run_files import read_safetensors
from seq2seq.training.checkpointing import load_checkpoint

FAST = settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
THOROUGH = settings(FAST, max_examples=1000, derandomize=False)

MAX_MESSAGE = 2000  # characters of a DataError message beyond the paths it names


# ================================================================ shared pieces


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder per generated case (pytest's tmp_path is one folder per test, not per case)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as name:
        yield Path(name)


# Characters that trip line splitting, stripping and JSON: Unicode line separators, the BOM,
# NUL, control characters, quotes, brackets, multi-byte and astral characters.
AWKWARD = [
    "", " ", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028", "\u2029", "\ufeff", "\x00", "\x7f",
    "é", "日本", "🙂", "\\", '"', "'", "{", "}", "[", "]", ",", ":", "#", "word", "x = 1", "0", "null",
]
# Byte sequences that are not UTF-8: a lone continuation byte, a truncated sequence, an encoded
# surrogate, an overlong encoding, bytes never valid anywhere.
BAD_BYTES = [b"\xff", b"\xc3(", b"\x80", b"\xed\xa0\x80", b"\xc0\xaf", b"\xfe\xfe", b"\xf0\x9f("]
# What a JSON string escape can carry but UTF-8 only partly: lone high and low surrogates, a reversed
# pair, a proper pair (json.loads joins it into one character), noncharacters, every C0 and C1
# control (NUL included), DEL, the BOM and U+2028/2029. json.dumps writes each as a \uXXXX escape.
JSON_ESCAPE_CHARS = [
    "\ud800", "\udbff", "\udc00", "\udfff", "\ude42\ud83d", "\ud83d\ude42", "\ud800\ud800", "\udcff",
    "\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0001fffe", "\U0010ffff", "\u2028", "\u2029", "\ufeff", "\x7f",
    *map(chr, range(0x00, 0x20)), *map(chr, range(0x80, 0xA0)),
]
escaped_text = st.lists(st.sampled_from([*JSON_ESCAPE_CHARS, "word", " ", "x = 1"]), max_size=6).map("".join)

no_newline_text = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=30)
line_text = st.one_of(
    no_newline_text,
    st.lists(st.sampled_from(AWKWARD), max_size=6).map("".join),
    # a huge line: tens of thousands of characters in one line
    st.builds(lambda piece, n: piece * n, st.sampled_from(["a", " ", "é", "ab\t", "🙂"]), st.integers(5_000, 60_000)),
)
content_line = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9 _.,()=']{0,30}", fullmatch=True), line_text
)


@dataclass(frozen=True)
class TextFile:
    """A generated text file: its lines as written, plus the choices that shape its bytes."""

    rows: tuple[str, ...]
    newline: str
    final_newline: bool
    bom: bool
    junk: tuple[tuple[int, bytes], ...]  # (position, undecodable bytes) inserted into the encoding

    def data(self) -> bytes:
        text = self.newline.join(self.rows) + (self.newline if self.final_newline else "")
        data = (codecs.BOM_UTF8 if self.bom else b"") + text.encode("utf-8")
        for position, bad in self.junk:
            at = min(position, len(data))
            data = data[:at] + bad + data[at:]
        return data

    def lines(self) -> list[str] | None:
        """The lines a reader must see (None when junk bytes make the file undecodable).

        A final newline adds no line, and without one a last empty row is no line either.
        A leading BOM, written or already the first character, is dropped once.
        """
        if self.junk:
            return None
        rows = list(self.rows)
        if self.final_newline and not rows:
            rows = [""]  # the file is one newline: one empty line
        elif rows and not self.final_newline and rows[-1] == "":
            rows.pop()
        if rows and not self.bom and rows[0].startswith("\ufeff"):
            rows[0] = rows[0][1:]
        return rows


def text_files(rows: st.SearchStrategy[list[str]]) -> st.SearchStrategy[TextFile]:
    return st.builds(
        TextFile,
        rows=rows.map(tuple),
        newline=st.sampled_from(["\n", "\r\n"]),
        final_newline=st.booleans(),
        bom=st.booleans(),
        junk=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(BAD_BYTES)), max_size=2).map(tuple),
    )


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


_WHERE = re.compile(r"^(?P<path>.+?)(?::(?P<line>\d+))?: ")


def check_data_error(error: DataError, files: dict[Path, int]) -> None:
    """A DataError names one of ``files`` (and a line within it, at most one past its end),
    fits on one line, stays short whatever the input, and says what was expected."""
    message = str(error)
    assert "\n" not in message, message
    message.encode("utf-8")  # printable: a refused surrogate is quoted as its escape
    named = next((path for path in files if message.startswith(f"{path}:")), None)
    assert named is not None, f"{message!r} names none of {list(files)}"
    line = re.match(rf"{re.escape(str(named))}:(\d+):", message)
    if line:
        assert 1 <= int(line.group(1)) <= files[named] + 1, message
    assert len(message) < MAX_MESSAGE + sum(len(str(p)) for p in files), len(message)
    assert re.search(r"expected|not found|missing", message), message


def line_count(data: bytes) -> int:
    return data.count(b"\n") + 1


def check_examples(examples: Sequence[Example], path: Path, data: bytes) -> None:
    """Accepted examples are stripped, non-empty, valid Unicode, and point at a line of ``path``."""
    for example in examples:
        for text in (example.src, example.tgt):
            assert text and text == text.strip()
            text.encode("utf-8")  # no lone surrogates
        where, _, line = example.origin.rpartition(":")
        assert where == str(path) and 1 <= int(line) <= line_count(data), example.origin


# ================================================================ read_parallel


@st.composite
def parallel_pair(draw: st.DrawFn) -> tuple[TextFile, TextFile]:
    """Two files, most often with equal line counts so that valid pairs come up as well."""
    n = draw(st.integers(0, 8))
    src_rows = draw(st.lists(content_line, min_size=n, max_size=n))
    tgt_rows = draw(st.lists(content_line, min_size=n, max_size=n + draw(st.sampled_from([0, 0, 0, 1]))))
    return draw(text_files(st.just(src_rows))), draw(text_files(st.just(tgt_rows)))


def check_read_parallel(pair: tuple[TextFile, TextFile]) -> None:
    """Exactly the stripped line pairs when both files are valid; otherwise a DataError at file:line."""
    src_file, tgt_file = pair
    with scratch() as root:
        src = write(root / "a.src", src_file.data())
        tgt = write(root / "a.tgt", tgt_file.data())
        src_lines, tgt_lines = src_file.lines(), tgt_file.lines()
        valid = (
            src_lines is not None
            and tgt_lines is not None
            and len(src_lines) == len(tgt_lines)
            and all(line.strip() for line in src_lines + tgt_lines)
        )
        try:
            examples = read_parallel(src, tgt)
        except DataError as error:
            assert not valid, f"valid input refused: {error}"
            check_data_error(error, {src: line_count(src_file.data()), tgt: line_count(tgt_file.data())})
            return
        assert valid, "invalid input accepted"
        assert [(e.src, e.tgt, e.origin) for e in examples] == [
            (s.strip(), t.strip(), f"{src}:{i}") for i, (s, t) in enumerate(zip(src_lines, tgt_lines), start=1)
        ]


# ================================================================ read_tsv

COLUMNS = ["sentence", "label", "content", "id", "", " sentence ", "Sentence"]
field_text = st.one_of(
    st.sampled_from(["0", "1", "2", " 1 ", "", "good film", "bad"]),
    st.text(st.characters(codec="utf-8", exclude_characters="\t\n"), max_size=12),
)


@st.composite
def tsv_case(draw: st.DrawFn) -> tuple[TextFile, dict[str, str] | None]:
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=4))
    width = len(header)
    row = st.lists(field_text, min_size=max(width - 1, 0), max_size=width + 1).map("\t".join)
    rows = draw(st.lists(st.one_of(row, line_text), max_size=8))
    label_map = draw(st.one_of(st.none(), st.just({"0": "negative", "1": "positive"})))
    return draw(text_files(st.just(["\t".join(header), *rows]))), label_map


def check_read_tsv(case: tuple[TextFile, dict[str, str] | None]) -> None:
    """Examples come from data lines (line 2 on) with mapped labels, or a DataError at file:line."""
    tsv, label_map = case
    with scratch() as root:
        path = write(root / "t.tsv", tsv.data())
        try:
            examples = read_tsv(path, src_column="sentence", tgt_column="label", label_map=label_map)
        except DataError as error:
            check_data_error(error, {path: line_count(tsv.data())})
            return
        check_examples(examples, path, tsv.data())
        assert all(int(e.origin.rpartition(":")[2]) >= 2 for e in examples)  # never the header
        if label_map is not None:
            assert {e.tgt for e in examples} <= set(label_map.values())


# ================================================================ read_json (arrays and JSON Lines)

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True), no_newline_text,
    st.sampled_from(["", "  ", "x = 1", "\u2028", "print(a)\nprint(b)"]), escaped_text,
)
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(no_newline_text, inner, max_size=3), max_leaves=8)
FIELDS = ["s", "alt", "t", "other"]
record = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=4),
    st.fixed_dictionaries({"s": json_value, "t": json_value}),
    json_value,
)
# Raw text spliced into the JSON: deep nesting, a 5000-digit number, lone-surrogate escapes,
# non-standard literals, stray brackets and quotes.
JSON_SPLICES = [
    "[" * 5000, "{\"s\": " * 3000, "1" * 5000, '"\\ud800"', '"\\udfff\\ud800"', "NaN", "Infinity", "]", "}", ",", '"', "\\",
    '{"s": "\\ud83d", "t": "x"}', "\n", "\n\n", "\ufeff",
]


@st.composite
def json_case(draw: st.DrawFn) -> tuple[str, bytes]:
    records = draw(st.lists(record, max_size=6))
    as_array = draw(st.booleans())
    if as_array:
        text = json.dumps(records, indent=draw(st.sampled_from([None, 1, 2])), ensure_ascii=draw(st.booleans()))
    else:
        text = "\n".join(json.dumps(r, ensure_ascii=draw(st.booleans())) for r in records) + "\n"
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(JSON_SPLICES)) + text[at:]
    suffix = draw(st.sampled_from([".json", ".jsonl"]))
    data = text.encode("utf-8", "surrogatepass")  # with ensure_ascii=False a surrogate arrives as 3 bad bytes
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(BAD_BYTES)) + data[at:]
    return suffix, data


def check_read_json(case: tuple[str, bytes]) -> None:
    """Examples with a non-empty source from the field chain, or a DataError at file:line."""
    suffix, data = case
    with scratch() as root:
        path = write(root / f"d{suffix}", data)
        try:
            examples = read_json(path, src_fields=["s", "alt"], tgt_field="t")
        except DataError as error:
            check_data_error(error, {path: line_count(data)})
            return
        check_examples(examples, path, data)


# ================================================================ read_django and read_conala

DJANGO_SIZES = [0, 3, DJANGO_VALID_END, DJANGO_VALID_END + 1, DJANGO_LINES, DJANGO_LINES + 2]


@st.composite
def django_case(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """Files of the sizes around the split boundaries, with a few lines replaced by bad ones."""
    sizes = [draw(st.sampled_from(DJANGO_SIZES)) for _ in range(2)]
    if draw(st.booleans()):
        sizes[1] = sizes[0]

    def build(n: int, word: str) -> bytes:
        lines = [f"{word} {i}" for i in range(n)]
        for _ in range(draw(st.integers(0, 2)) if n else 0):
            lines[draw(st.integers(0, n - 1))] = draw(st.sampled_from(["", "   ", "\u2028", "x\x00y"]))
        data = ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")
        if n and draw(st.integers(0, 5)) == 0:
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.sampled_from(BAD_BYTES)) + data[at:]
        return data

    return build(sizes[0], "say"), build(sizes[1], "print")


def check_read_django(case: tuple[bytes, bytes]) -> None:
    """The standard 16000 / 1000 / rest split, or a DataError naming all.anno or all.code."""
    anno_data, code_data = case
    with scratch() as root:
        anno, code = write(root / "all.anno", anno_data), write(root / "all.code", code_data)
        try:
            splits = read_django(root)
        except DataError as error:
            check_data_error(error, {anno: line_count(anno_data), code: line_count(code_data)})
            return
        sizes = {name: len(items) for name, items in splits.items()}
        total = sum(sizes.values())
        assert sizes == {"train": 16_000, "valid": 1_000, "test": total - 17_000} and total > DJANGO_VALID_END
        for items in splits.values():
            check_examples(items[:50], anno, anno_data)


@st.composite
def conala_case(draw: st.DrawFn) -> tuple[bytes | None, bytes | None, int]:
    conala_record = st.one_of(
        st.fixed_dictionaries(
            {"intent": json_value, "rewritten_intent": json_value, "snippet": json_value},
            optional={"question_id": st.integers()},
        ),
        st.fixed_dictionaries({"intent": escaped_text, "rewritten_intent": st.none() | escaped_text, "snippet": escaped_text}),
        record,
    )

    def file() -> bytes | None:
        if draw(st.integers(0, 9)) == 0:
            return None  # the file is missing
        text = json.dumps(draw(st.lists(conala_record, max_size=8)), indent=1)
        if draw(st.integers(0, 4)) == 0:
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.sampled_from(JSON_SPLICES)) + text[at:]
        return text.encode("utf-8")

    return file(), file(), draw(st.integers(0, 6))


def check_read_conala(case: tuple[bytes | None, bytes | None, int]) -> None:
    """train / valid / test with ``valid_size`` valid records, or a DataError naming the file."""
    train_data, test_data, valid_size = case
    with scratch() as root:
        files = {}
        for name, data in (("train.json", train_data), ("test.json", test_data)):
            if data is not None:
                files[write(root / name, data)] = line_count(data)
            else:
                files[root / name] = 0
        try:
            splits = read_conala(root, valid_size=valid_size)
        except DataError as error:
            check_data_error(error, files)
            return
        assert len(splits["valid"]) == valid_size and splits["train"]
        for items, name in ((splits["train"] + splits["valid"], "train.json"), (splits["test"], "test.json")):
            check_examples(items, root / name, train_data if name == "train.json" else test_data)


# ================================================================ the config loader

SECTIONS = {
    "data": ["format", "path", "builtin_train_size", "src_fields", "label_map", "valid_size", "src_tokenizer", "max_src_len"],
    "vocab": ["min_freq", "max_size"],
    "model": ["preset", "encoder", "decoder"],
    "train": ["epochs", "batch_size", "learning_rate", "teacher_forcing", "device", "threads", "on_nonfinite", "time_budget_s"],
    "decode": ["max_len", "batch_size"],
}
DOTTED_KEYS = [f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys] + [
    "model.encoder.cell", "model.encoder.hidden_size", "model.decoder.attention", "model.decoder.layers",
    "train.epochz", "modle.preset", "train", "model.encoder.hidden_size.x", "data.label_map.0", "", ".", "a..b",
]
YAML_VALUES = [
    "5", "0", "-1", "1e-3", "1e999", ".nan", ".inf", "true", "null", "~", "''", "x", "lstm", "bahdanau", "cuda:7",
    "[1, 2]", "[", "]", "{a: 1}", "{", "@x", "`x`", "*alias", "&anchor x", "!!python/object:os.system {}",
    "1" * 5000, "[" * 3000, "'unterminated", "'a\\nb'", "\t", "a: b", "- x", "stop", "skip", "rnn", "\x00",
]
yaml_value = st.one_of(st.sampled_from(YAML_VALUES), no_newline_text)
override = st.builds(lambda key, value: f"{key}={value}", st.sampled_from(DOTTED_KEYS), yaml_value) | no_newline_text


@st.composite
def yaml_document(draw: st.DrawFn) -> bytes:
    """A config file: valid sections and keys, typos, wrong types, aliases, or random text and bytes."""
    lines = []
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "trian", "1", "- list"]), max_size=4)):
        lines.append(f"{section}:")
        for key in draw(st.lists(st.sampled_from(SECTIONS.get(section, ["x"]) + ["bogus", "epochz"]), max_size=4)):
            lines.append(f"  {key}: {draw(yaml_value)}")
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["a: &a {b: 1}", "c: *a", "?", "%YAML 9", "\t- x", "x"])))
    data = "\n".join(lines).encode("utf-8")
    choice = draw(st.integers(0, 9))
    if choice == 0:
        data = draw(st.binary(max_size=200))
    elif choice == 1:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(BAD_BYTES)) + data[at:]
    return data


def check_config(case: tuple[bytes, list[str]]) -> None:
    """A RunConfig that survives a config.yaml round trip, or a ConfigError naming the file or --set."""
    document, overrides = case
    with scratch() as root:
        path = write(root / "c.yaml", document)
        try:
            tree = load_config_file(path)
        except ConfigError as error:
            assert str(error).startswith(f"{path}"), str(error)
            assert "\n" not in str(error)
            return
        assert isinstance(tree, dict)
        try:
            config = build_config(base=tree, overrides=overrides, source=str(path))
        except ConfigError as error:
            message = str(error)
            assert message.startswith(f"{path}:") or message.startswith("--set "), message
            assert len(message.split("\n", 1)[0]) < MAX_MESSAGE
            return
        saved = write(root / "config.yaml", config_to_yaml(config))
        assert build_config(base=load_config_file(saved), source=str(saved)) == config


# ================================================================ the tokenizers

any_text = st.one_of(
    st.text(),
    st.text(st.characters(categories=["Cs", "Cc", "Zs", "Zl", "Lo", "So"]), max_size=50),  # lone surrogates too
    st.lists(st.sampled_from(AWKWARD + ["\n", "    ", "(", ")", "'''", "f'{", "`", "\\\n"]), max_size=20).map("".join),
    st.builds(lambda piece, n: piece * n, st.sampled_from(["(", "x ", "'", "\n ", "🙂"]), st.integers(1_000, 20_000)),
)
tokenizer_name = st.one_of(st.sampled_from(sorted(TOKENIZERS)), st.text(max_size=8), st.none(), st.integers())


def check_tokenizers(case: tuple[Any, bool, str, list[str]]) -> None:
    """build_tokenizer refuses bad names with ConfigError; tokenize and detokenize never raise."""
    name, lowercase, text, tokens = case
    try:
        tokenizer = build_tokenizer(name, lowercase=lowercase)
    except ConfigError as error:
        assert "valid names: moses, python, space, word" in str(error)
        return
    produced = tokenizer.tokenize(text)
    assert all(isinstance(t, str) and t for t in produced)
    if tokenizer.name != "python":  # Python string tokens keep their inner spaces
        assert not any(ch.isspace() for t in produced for ch in t)
    assert isinstance(tokenizer.detokenize(produced), str)
    assert isinstance(tokenizer.detokenize(tokens), str)


# A small Python grammar: programs that parse, to check detokenize(tokenize(code)) keeps the AST.
NAMES = st.sampled_from(["x", "y", "total", "my_list", "self", "_", "print", "len", "os", "é"])
ATOMS = st.one_of(
    NAMES,
    st.sampled_from(["0", "1", "3.14", "1e-3", "0x1F", "1_000", "2j", ".5", "None", "True", "...", "-1"]),
    st.sampled_from(["'a'", '"b"', "r'\\d+'", "b'x'", "'''x\ny'''", "f'{x}!'", "f'{x!r:>{y}}'", "'\\u2028'", "''"]),
)


def _expression(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "@", "<<", "&", "|", "==", "<", ">=", "and", "or",
                              "in", "not in", "is", "is not"])
    return st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, binary, inner),
        st.builds(lambda op, a: f"{op}{a}", st.sampled_from(["-", "+", "~", "not "]), inner),
        st.builds(lambda f, args: f"{f}({', '.join(args)})", inner, st.lists(inner, max_size=3)),
        st.builds(lambda f, a, k: f"{f}(*{a}, key={k})", NAMES, inner, inner),
        st.builds(lambda a, i: f"{a}[{i}]", inner, st.one_of(inner, st.just(":"), st.just("1:"), st.just("::2"))),
        st.builds(lambda a, n: f"{a}.{n}", inner, NAMES.filter(lambda n: n != "é")),
        st.builds(lambda a: f"({a})", inner),
        st.builds(lambda items: f"[{', '.join(items)}]", st.lists(inner, max_size=3)),
        st.builds(lambda k, v: f"{{{k}: {v}}}", inner, inner),
        st.builds(lambda a, b, c: f"{a} if {b} else {c}", inner, inner, inner),
        st.builds(lambda a, n, s: f"[{a} for {n} in {s}]", inner, NAMES, inner),
        st.builds(lambda a: f"lambda *args, **kw: {a}", inner),
    )


EXPRESSIONS = st.recursive(ATOMS, _expression, max_leaves=6)
STATEMENTS = st.one_of(
    EXPRESSIONS,
    st.builds(lambda n, e: f"{n} = {e}", NAMES, EXPRESSIONS),
    st.builds(lambda n, op, e: f"{n} {op} {e}", NAMES, st.sampled_from(["+=", "-=", "**=", "//=", ":="]), EXPRESSIONS),
    st.builds(lambda m: f"import {m}", st.sampled_from(["os", "os.path", "re as r"])),
    st.builds(lambda m: f"from {m} import x", st.sampled_from(["os", ".", "..a"])),
    st.builds(lambda e, b: f"if {e}:\n    {b}\nelse:\n    pass", EXPRESSIONS, EXPRESSIONS),
    st.builds(lambda n, e, b: f"for {n} in {e}:\n    {b}", NAMES, EXPRESSIONS, EXPRESSIONS),
    st.builds(lambda e: f"def f(a, *b, c=1, **d):\n    return {e}", EXPRESSIONS),
    st.builds(lambda e: f"@dec\nclass C(B):\n    x: int = {e}", EXPRESSIONS),
    st.builds(lambda e: f"with open(x) as f:\n    del {e}", NAMES),
    st.builds(lambda e: f"try:\n    raise {e}\nexcept E as e:\n    pass", NAMES),
)
PROGRAMS = st.builds(
    lambda statements, newline: newline.join(statements), st.lists(STATEMENTS, min_size=1, max_size=3),
    st.sampled_from(["\n", "\r\n", "\r", "\n\n"]),
)


def _ast(code: str) -> str | None:
    try:
        return ast.dump(ast.parse(code))
    except (SyntaxError, ValueError):  # ValueError: source with a NUL byte
        return None


def check_python_round_trip(code: str) -> None:
    """For code that parses, detokenize(tokenize(code)) parses to the same AST."""
    expected = _ast(code)
    if expected is None:
        return
    tokenizer = build_tokenizer("python")
    restored = tokenizer.detokenize(tokenizer.tokenize(code))
    assert _ast(restored) == expected, (code, restored)


# ================================================================ the command line


class Accepted(Exception):
    """Raised in place of the expensive part of a command: reaching it means the input was accepted."""


def _stop_at_model(*args: object, **kwargs: object) -> None:
    raise Accepted


def _read_data_then_stop(data_config: Any, vocab_config: Any, **kwargs: Any) -> None:
    """The real readers for files the case made; the built-in task would only cost time."""
    if data_config.format != "builtin":
        seq2seq.data.corpus.build_corpus(data_config, vocab_config, **kwargs)
    raise Accepted


# A path argument is a placeholder until the case runs, as a file the case writes there.
PATH_KINDS = ["missing", "folder", "yaml", "bad-bytes", "data-jsonl", "data-tsv", "data-parallel", "data-odd", "run-copy"]


@st.composite
def cli_argv(draw: st.DrawFn) -> tuple[list[Any], dict[str, bytes]]:
    """argv for one subcommand: its flags with good and bad values, unknown flags, paths of every kind."""
    command = draw(st.sampled_from(["train", "train", "generate", "evaluate", "compare", "bogus"]))
    path = st.builds(lambda kind, content: ("path", kind, content), st.sampled_from(PATH_KINDS), st.binary(max_size=80))
    flags: dict[str, list[st.SearchStrategy[Any]]] = {
        "train": [path, st.just("--preset"), st.sampled_from(["lstm", "rnn", "bogus", ""]), st.just("--data"), path,
                  st.just("--set"), override, st.just("--quick"), st.just("--resume"), path, st.just("--overwrite"),
                  st.just("--no-eval"), st.just("--out"), path, st.just("--no-progress")],
        "compare": [st.just("--presets"), st.sampled_from(["rnn,lstm", "", ",", "bogus"]), st.just("--set"), override,
                    st.just("--out"), path, st.just("--data"), path],
        "generate": [path, st.sampled_from(["add 3 to total", "", "\x00", "--", "\ud800", "add \udcff", "a\u2028b\x85", "\ufffe"]), st.just("--file"), path, st.just("--beam"),
                     st.sampled_from(["0", "-3", "x", "5", "1e9"]), st.just("--max-len"), st.just("--checkpoint"),
                     st.sampled_from(["best", "last", "worst"]), st.just("--device"), st.sampled_from(["cpu", "tpu", "cuda:9"])],
        "evaluate": [path, st.just("--split"), st.sampled_from(["test", "valid", "dev"]), st.just("--beam"),
                     st.sampled_from(["2", "0", "many"]), st.just("--output"), path, st.just("--device"),
                     st.sampled_from(["auto", "cpu", "cuda:9", "gpu"])],
        "bogus": [st.just("--help")],
    }
    pool = flags[command] + [st.sampled_from(["--bogus", "-x", "", "--set=", "--out"])]
    rest = draw(st.lists(st.one_of(*pool), max_size=7))
    if command in ("train", "compare") and draw(st.booleans()):
        rest += ["--quick"]
    return [command, *rest]


def _materialize(arg: Any, root: Path, index: int, good_run: Path) -> str:
    if not isinstance(arg, tuple):
        return arg
    _, kind, content = arg
    target = root / f"p{index}"
    if kind == "folder":
        target.mkdir()
    elif kind == "yaml":
        write(target.with_suffix(".yaml"), b"train:\n  epochs: 1\n" + content)
        return str(target.with_suffix(".yaml"))
    elif kind == "bad-bytes":
        write(target, content + b"\xff\xfe")
    elif kind.startswith("data-"):
        target.mkdir()
        names = {"data-jsonl": ["train.jsonl"], "data-tsv": ["train.tsv", "dev.tsv"],
                 "data-parallel": ["train.de", "train.en", "valid.de", "valid.en"], "data-odd": ["readme.txt"]}[kind]
        for name in names:
            write(target / name, content)
    elif kind == "run-copy":
        shutil.copytree(good_run, target)
        files = sorted(p for p in target.iterdir())
        victim = files[content[0] % len(files)] if content else files[0]
        write(victim, content)  # one file of a real run replaced by the case's bytes
    return str(target)


def _check_cli(argv_template: list[Any], good_run: Path) -> None:
    with scratch() as root:
        argv = [_materialize(arg, root, i, good_run) for i, arg in enumerate(argv_template)]
        command = argv[0]
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        except SystemExit as exit_:  # argparse: usage errors exit 2, --help exits 0
            assert exit_.code in (0, 2), (argv, exit_.code)
            return
        except Accepted:
            return
        message = err.getvalue()
        for written in (out.getvalue(), message):
            written.encode("utf-8")  # a real stdout or stderr would raise on a surrogate
        if code == 0:  # generate from a run whose damaged file is not one that loading reads
            assert command == "generate", (argv, message)
            return
        assert code == 2, (argv, code, message)
        # Without --no-progress, train's progress bar may have drawn (and erased, with \r) before the error.
        assert message.rpartition("\r")[2].startswith(f"seq2seq {command}: error: "), (argv, message)
        assert "Traceback" not in message


# ================================================================ the run-directory loader

RUN_FILES = ["run.json", "config.yaml", "src_vocab.json", "tgt_vocab.json", "best.safetensors", "last.safetensors"]


@st.composite
def run_damage(draw: st.DrawFn) -> list[tuple[str, str, int, bytes]]:
    """One to three edits, each (file, operation, position, bytes) on a copy of a real run."""
    edit = st.tuples(
        st.sampled_from(RUN_FILES),
        st.sampled_from(["flip", "flip", "flip", "truncate", "append", "delete", "empty", "replace"]),
        st.integers(0, 2**31),
        st.binary(min_size=1, max_size=16),
    )
    return draw(st.lists(edit, min_size=1, max_size=3))


def _damage(run_dir: Path, edits: list[tuple[str, str, int, bytes]]) -> None:
    for name, operation, position, payload in edits:
        path = run_dir / name
        if not path.exists():
            continue
        data = path.read_bytes()
        at = position % max(len(data), 1)
        if operation == "delete":
            path.unlink()
            continue
        if operation == "flip" and data:
            data = data[:at] + bytes([data[at] ^ (payload[0] or 1)]) + data[at + 1 :]
        elif operation == "truncate":
            data = data[:at]
        elif operation == "append":
            data += payload
        elif operation == "empty":
            data = b""
        elif operation == "replace":
            data = payload
        path.write_bytes(data)


def _check_run_dir(edits: list[tuple[str, str, int, bytes]], good_run: Path) -> None:
    """A damaged run either loads the exact weights it saved, or is refused with a RunDirError
    naming a file of the run: damage never turns into other weights or a traceback."""
    with scratch() as root:
        run_dir = root / "run"
        shutil.copytree(good_run, run_dir)
        _damage(run_dir, edits)
        for which in ("best", "last"):
            expected, _ = read_safetensors(good_run / f"{which}.safetensors")
            try:
                run = load_run(run_dir, which=which)
            except RunDirError as error:
                assert str(run_dir) in str(error), str(error)
                continue
            loaded = run.model.state_dict()
            prefix = "model." if which == "last" else ""
            for name, tensor in loaded.items():
                assert torch.equal(tensor, expected[prefix + name]), (which, name)
        run = load_run(good_run, which="last")  # a model and optimizer to restore the damaged state into
        optimizer = torch.optim.Adam(run.model.parameters())
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
        try:
            counters = load_checkpoint(run_dir / "last.safetensors", model=run.model, optimizer=optimizer, scheduler=scheduler)
        except RunDirError as error:
            assert str(run_dir) in str(error), str(error)
            return
        _, metadata = read_safetensors(good_run / "last.safetensors")
        assert counters == json.loads(metadata["trainer_state"])["counters"]


# ================================================================ the targets and the tests


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run directory of a tiny model (one epoch), for the CLI and run-directory targets."""
    run_dir = tmp_path_factory.mktemp("fuzz-run") / "run"
    config = tiny_config("lstm", "data.builtin_train_size=60", "train.epochs=1", "train.batch_size=16")
    train(config, run_dir)
    return run_dir


@dataclass(frozen=True)
class Target:
    """A property and the strategies of its arguments; ``needs_run`` passes the ``good_run`` folder."""

    check: Callable[..., None]
    strategy: st.SearchStrategy[Any]
    needs_run: bool = False


FUZZ_TARGETS: dict[str, Target] = {
    "read_parallel": Target(check_read_parallel, parallel_pair()),
    "read_tsv": Target(check_read_tsv, tsv_case()),
    "read_json": Target(check_read_json, json_case()),
    "read_django": Target(check_read_django, django_case()),
    "read_conala": Target(check_read_conala, conala_case()),
    "config": Target(check_config, st.tuples(yaml_document(), st.lists(override, max_size=4))),
    "tokenizers": Target(check_tokenizers, st.tuples(tokenizer_name, st.booleans(), any_text, st.lists(any_text, max_size=8))),
    "python_round_trip": Target(check_python_round_trip, PROGRAMS),
    "cli": Target(_check_cli, cli_argv(), needs_run=True),
    "run_dir": Target(_check_run_dir, run_damage(), needs_run=True),
}


def run_target(name: str, profile: settings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run one target under ``profile``; return the number of cases tried."""
    target = FUZZ_TARGETS[name]
    extra: tuple[Path, ...] = ()
    if target.needs_run:
        extra = (request.getfixturevalue("good_run"),)
    if name == "cli":
        # Stop each command before it trains or evaluates (after the config, data and run directory are read),
        # keep torch's thread count whatever train.threads says, and keep the default --out out of the repo.
        monkeypatch.setattr(seq2seq.pipeline, "build_corpus", _read_data_then_stop)
        monkeypatch.setattr(seq2seq.pipeline, "build_model", _stop_at_model)
        monkeypatch.setattr("seq2seq.compare.run_comparison", _stop_at_model)
        monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))
    cases = 0

    @profile
    @given(target.strategy)
    def run(case: Any) -> None:
        nonlocal cases
        cases += 1
        target.check(case, *extra)

    run()
    print(f"fuzz {name}: {cases} cases")
    return cases


@pytest.mark.parametrize("name", list(FUZZ_TARGETS))
def test_fuzz(name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_target(name, FAST, request, monkeypatch) >= FAST.max_examples


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FUZZ_TARGETS))
def test_fuzz_thorough(name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_target(name, THOROUGH, request, monkeypatch) >= THOROUGH.max_examples


# ================================================================ regressions for what the fuzzing found


@pytest.mark.parametrize(("line", "message"), [
    ("[" * 5000, "nested too deeply"),
    ('{"s": ' + "1" * 5000 + ', "t": "x"}', "Exceeds the limit"),
])
def test_json_lines_too_deep_or_too_long_a_number_is_a_data_error(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "d.jsonl", '{"s": "a", "t": "b"}\n' + line + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: malformed JSON (") + f".*{message}"):
        read_json(path, src_fields=["s"], tgt_field="t")


def test_json_array_too_deep_names_the_record_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", '[\n{"s": "a", "t": "b"},\n' + "[" * 5000 + "\n]")
    with pytest.raises(DataError, match=re.escape(f"{path}:3: malformed JSON (nested too deeply)")):
        read_json(path, src_fields=["s"], tgt_field="t")


def test_lone_surrogate_escape_is_refused_where_it_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"s": "ok \\ud800", "t": "b"}\n')
    with pytest.raises(DataError, match=re.escape(f"{path}:1: the source holds an unpaired surrogate")):
        read_json(path, src_fields=["s"], tgt_field="t")


def test_huge_values_are_shortened_in_messages(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "sentence\tlabel\nok\t" + "9" * 100_000 + "\n")
    with pytest.raises(DataError) as info:
        read_tsv(path, src_column="sentence", tgt_column="label", label_map={"0": "negative"})
    assert len(str(info.value)) < 300


def test_tsv_header_with_bad_bytes_is_a_data_error_through_the_corpus(tmp_path: Path) -> None:
    from seq2seq.data.corpus import load_examples

    write(tmp_path / "train.tsv", b"sen\xfftence\tlabel\nok\t1\n")
    config = build_config(overrides=[f"data.path={tmp_path}", "data.format=tsv", "data.src_fields=[sentence]", "data.tgt_field=label"])
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'train.tsv'}:1: invalid UTF-8")):
        load_examples(config.data)


@pytest.mark.parametrize(("override", "needle"), [
    ("train.epochs=[", "not valid YAML"),
    ("data.path=@home", "quote a string that starts with @"),
    ("train.epochs=" + "1" * 5000, "not valid YAML"),
    ("model.preset=[lstm]", "model.preset is ['lstm']: expected one of"),
    ("model.preset={a: 1}", "model.preset is {'a': 1}: expected one of"),
])
def test_bad_override_values_are_config_errors(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        build_config(overrides=[override])


@pytest.mark.parametrize(("content", "needle"), [
    (b"train:\n  epochs: 3\n  seed: \xff\n", ":3: invalid UTF-8 (byte 0xff)"),
    (b"[" * 3000, ": malformed YAML: nested too deeply"),
    (b"train:\n  seed: " + b"1" * 5000, ": malformed YAML: Exceeds the limit"),
])
def test_config_file_bad_bytes_depth_and_huge_numbers(tmp_path: Path, content: bytes, needle: str) -> None:
    path = write(tmp_path / "c.yaml", content)
    with pytest.raises(ConfigError, match=re.escape(f"{path}") + ".*" + re.escape(needle)):
        load_config_file(path)


def test_config_folder_is_named_as_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a YAML config file, found a folder"):
        load_config_file(tmp_path)


def test_yaml_alias_bomb_gives_a_short_error_quickly(tmp_path: Path) -> None:
    # Nine levels of nine aliases: 9**9 leaves if anything walked or printed it in full.
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = write(tmp_path / "c.yaml", "bomb:\n" + "\n".join(f"  {line}" for line in levels) + "\ntrain:\n  epochs: *l8\n")
    with pytest.raises(ConfigError) as info:
        build_config(base=load_config_file(path), source=str(path))
    assert "train.epochs" in str(info.value) and len(str(info.value)) < 2000


def test_python_tokenizer_treats_a_lone_carriage_return_as_a_newline() -> None:
    tokenizer = build_tokenizer("python")
    code = "x = 1\ry = f'{x}'"
    assert ast.dump(ast.parse(tokenizer.detokenize(tokenizer.tokenize(code)))) == ast.dump(ast.parse(code))


def test_python_detokenize_ignores_empty_tokens() -> None:
    assert build_tokenizer("python").detokenize(["x", "", "=", "1"]) == "x = 1"


def test_unknown_tokenizer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown tokenizer \['x'\]"):
        build_tokenizer(["x"])  # type: ignore[arg-type]


def test_vocabulary_with_bad_bytes_names_the_file(tmp_path: Path) -> None:
    from seq2seq.data.vocab import Vocab

    path = write(tmp_path / "v.json", b'{"tokens": ["\xff"]}')
    with pytest.raises(ValueError, match=re.escape(f"{path}: malformed vocabulary JSON")):
        Vocab.load(path)


def test_run_json_that_is_not_an_object_is_a_run_dir_error(good_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(good_run, run_dir)
    write(run_dir / "run.json", "[1]")
    with pytest.raises(RunDirError, match=re.escape(f"{run_dir / 'run.json'}: is a JSON list")):
        load_run(run_dir)


def test_strings_of_the_run_config_round_trip(tmp_path: Path) -> None:
    config = build_config(overrides=["data.src_fields=['yes', 'null', '1e3', '', ' x']", "data.tgt_field='~'"])
    path = write(tmp_path / "config.yaml", config_to_yaml(config))
    assert build_config(base=load_config_file(path)) == config
    assert isinstance(config, RunConfig)

