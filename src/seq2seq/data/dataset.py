"""Readers of raw text pairs: parallel files, TSV, JSON / JSON Lines, and the shipped data sets.

Every reader returns ``list[Example]`` (or a dict of splits) with ``origin = "path:line"`` and raises
:class:`DataError` whose message starts with ``path:line:`` and says what was expected. Nothing here
tokenizes: sources and targets are only stripped at both ends (interior whitespace, e.g. the
newlines inside a CoNaLa snippet, is kept).

Files are read as UTF-8 (a leading byte-order mark is dropped) and split on ``"\\n"`` only, with a
trailing ``"\\r"`` removed, so Windows line endings work. ``str.splitlines`` is deliberately not used:
it also breaks on ``\\x0b``, ``\\x1c``, ``\\u2028`` and friends, which may occur inside a sentence and
would silently misalign parallel files.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from seq2seq.config import short_repr
from seq2seq.data.example import DataError, Example
from seq2seq.data.valid_text import check_text

log = logging.getLogger(__name__)

#: Multi30k task 1 file prefixes per split (``test2016`` is test_2016_flickr).
MULTI30K_SPLITS: Mapping[str, str] = MappingProxyType({"train": "train", "valid": "valid", "test": "test2016"})
#: The Django split used by every published result (Ling et al. 2016): 1-based, inclusive line ranges.
DJANGO_TRAIN_END, DJANGO_VALID_END, DJANGO_LINES = 16_000, 17_000, 18_805
#: CoNaLa: ``rewritten_intent`` is null for some records; the baseline then falls back to ``intent``.
CONALA_SRC_FIELDS: tuple[str, ...] = ("rewritten_intent", "intent")


# ---------------------------------------------------------------- files and lines


def _read_text(path: Path) -> str:
    """Read ``path`` as UTF-8 (BOM dropped); errors name the file and, for bad bytes, the line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: expected a file, found a directory") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path}:{line}: invalid UTF-8 (byte 0x{data[err.start]:02x} at byte {column} of the line): "
            "expected UTF-8 text"
        ) from None


def _read_lines(path: Path) -> list[str]:
    """The lines of ``path`` without their ``\\n`` / ``\\r\\n``; a final newline adds no empty line."""
    lines = _read_text(path).split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _example(src: str, tgt: str, *, src_where: str, tgt_where: str) -> Example:
    """Strip both ends and refuse an empty side; ``*_where`` are the ``path:line`` of each side."""
    src, tgt = src.strip(), tgt.strip()
    for text, side, where in ((src, "source", src_where), (tgt, "target", tgt_where)):
        if not text:
            raise DataError(f"{where}: expected a non-empty {side}")
        if not text.isascii():
            _refuse_lone_surrogates(text, side=side, where=where)
    return Example(src=src, tgt=tgt, origin=src_where)


def _refuse_lone_surrogates(text: str, *, side: str, where: str) -> None:
    """A JSON escape such as ``"\\ud800"`` decodes to half a UTF-16 pair, which no UTF-8 file can hold:
    without this check the pair would be accepted here and crash much later, when the vocabulary is saved."""
    check_text(text, what=f"{where}: the {side}", error=DataError)


# ---------------------------------------------------------------- plain text and TSV


def read_parallel(src_path: Path, tgt_path: Path) -> list[Example]:
    """Read two line-aligned files: line ``i`` of ``src_path`` translates to line ``i`` of ``tgt_path``.

    Blank lines are errors, not skipped: dropping one side of a pair would misalign the rest.
    """
    src_lines, tgt_lines = _read_lines(src_path), _read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        longer = src_path if len(src_lines) > len(tgt_lines) else tgt_path
        shorter_count = min(len(src_lines), len(tgt_lines))
        raise DataError(
            f"{longer}:{shorter_count + 1}: line has no partner ({src_path} has {len(src_lines)} lines, "
            f"{tgt_path} has {len(tgt_lines)}): expected the same number of lines in both files"
        )
    examples = [
        _example(src, tgt, src_where=f"{src_path}:{i}", tgt_where=f"{tgt_path}:{i}")
        for i, (src, tgt) in enumerate(zip(src_lines, tgt_lines, strict=True), start=1)
    ]
    log.info("read %d pairs from %s / %s", len(examples), src_path, tgt_path)
    return examples


def _tsv_header(path: Path, lines: Sequence[str]) -> list[str]:
    if not lines:
        raise DataError(f"{path}:1: expected a header line with column names, found an empty file")
    return [name.strip() for name in lines[0].split("\t")]


def read_tsv_header(path: Path) -> list[str]:
    """The column names of a TSV file (its first line), so a caller can pick the source column."""
    return _tsv_header(path, _read_lines(path))


def read_tsv(
    path: Path, *, src_column: str, tgt_column: str, label_map: Mapping[str, str] | None = None
) -> list[Example]:
    """Read a tab-separated file whose first line names the columns (GLUE format, no quoting).

    ``label_map`` maps raw target values to target texts (SST-2: ``{"0": "negative", "1": "positive"}``);
    a value outside it is an error. Blank lines carry no record and are skipped.
    """
    lines = _read_lines(path)
    header = _tsv_header(path, lines)
    for column in (src_column, tgt_column):
        if column not in header:
            raise DataError(
                f"{path}:1: missing column {short_repr(column)}: expected it in the header, which has {short_repr(header)}"
            )
    src_index, tgt_index = header.index(src_column), header.index(tgt_column)
    examples = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{path}:{line_no}"
        if len(fields) != len(header):
            raise DataError(
                f"{where}: expected {len(header)} tab-separated columns {short_repr(header)}, found {len(fields)}"
            )
        tgt = fields[tgt_index].strip()
        if label_map is not None:
            if tgt not in label_map:
                raise DataError(
                    f"{where}: value {short_repr(tgt)} in column {short_repr(tgt_column)} is not in label_map: "
                    f"expected one of {short_repr(sorted(label_map))}"
                )
            tgt = label_map[tgt]
        examples.append(_example(fields[src_index], tgt, src_where=where, tgt_where=where))
    log.info("read %d pairs from %s", len(examples), path)
    return examples


# ---------------------------------------------------------------- JSON and JSON Lines


def _skip_whitespace(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _json_error(path: Path, err: ValueError | RecursionError, expected: str, *, line: int) -> DataError:
    if isinstance(err, json.JSONDecodeError):
        return DataError(f"{path}:{line}: malformed JSON ({err.msg} at column {err.colno}): {expected}")
    # RecursionError: brackets nested past the interpreter's limit; ValueError: an int over 4300 digits.
    problem = "nested too deeply" if isinstance(err, RecursionError) else str(err)
    return DataError(f"{path}:{line}: malformed JSON ({problem}): {expected}")


def _iter_json_array(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """Yield ``(line where the record starts, record)`` for each element of a top-level JSON array.

    ``json.load`` would lose positions, so the records are decoded one by one with ``raw_decode``.
    """
    decoder = json.JSONDecoder()
    expected = "expected a JSON array of objects"

    def fail(pos: int, message: str) -> DataError:
        line_no = text.count("\n", 0, pos) + 1
        return DataError(f"{path}:{line_no}: {message}: {expected}")

    pos = _skip_whitespace(text, _skip_whitespace(text, 0) + 1)  # past the "[" the caller has seen
    line, counted_to = 1, 0  # newlines are counted incrementally to stay linear in the file size
    if not text.startswith("]", pos):
        while True:
            line, counted_to = line + text.count("\n", counted_to, pos), pos
            try:
                record, end = decoder.raw_decode(text, pos)
            except (ValueError, RecursionError) as err:
                # The decoder's line counts from the start of the file; other errors carry no position.
                at = err.lineno if isinstance(err, json.JSONDecodeError) else line
                raise _json_error(path, err, expected, line=at) from None
            yield line, record
            pos = _skip_whitespace(text, end)
            if text.startswith("]", pos):
                break
            if not text.startswith(",", pos):
                raise fail(pos, "missing ',' or ']' after a record")
            pos = _skip_whitespace(text, pos + 1)
    pos = _skip_whitespace(text, pos + 1)
    if pos < len(text):
        raise fail(pos, "extra data after the closing ']'")


def _iter_json_lines(path: Path, text: str) -> Iterator[tuple[int, object]]:
    """Yield ``(line, record)`` for each non-blank line of a JSON Lines text."""
    lines = text.split("\n")  # JSON strings may hold a raw \u2028 that str.splitlines would break on
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as err:
            raise _json_error(path, err, "expected one JSON object per line", line=line_no) from None
        yield line_no, record


def _field_text(record: Mapping[str, object], name: str, *, where: str, allow_int: bool) -> str | None:
    """The value of field ``name`` as text (None when null); ints are allowed only for labels."""
    value = record[name]
    if value is None or isinstance(value, str):
        return value
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    allowed = "a string or an integer" if allow_int else "a string"
    raise DataError(f"{where}: field {short_repr(name)} is {type(value).__name__} {short_repr(value)}: expected {allowed}")


def _record_example(record: object, *, src_fields: Sequence[str], tgt_field: str, where: str) -> Example:
    """Turn one decoded JSON record into an Example (first usable ``src_fields`` entry wins)."""
    if not isinstance(record, dict):
        raise DataError(
            f"{where}: record is a JSON {type(record).__name__}: expected an object with fields "
            f"{short_repr([*src_fields, tgt_field])}"
        )
    present = [name for name in src_fields if name in record]
    for missing, names in ((not present, src_fields), (tgt_field not in record, [tgt_field])):
        if missing:
            wanted = " or ".join(repr(name) for name in names)
            raise DataError(f"{where}: missing field {wanted}: the record has fields {short_repr(sorted(record))}")
    src = ""
    for name in present:
        src = (_field_text(record, name, where=where, allow_int=False) or "").strip()
        if src:
            break
    if not src:
        raise DataError(f"{where}: expected a non-empty source in one of the fields {list(src_fields)}")
    tgt = _field_text(record, tgt_field, where=where, allow_int=True)
    return _example(src, tgt or "", src_where=where, tgt_where=where)


def read_json(path: Path, *, src_fields: Sequence[str], tgt_field: str) -> list[Example]:
    """Read a JSON array of objects or a JSON Lines file (``.jsonl``, or one object per line).

    ``src_fields`` is a fallback chain: the first field that is present, non-null and non-empty gives
    the source (CoNaLa: ``("rewritten_intent", "intent")``). The target may be a string or an int
    (a class label). ``origin`` is the line where the record starts.
    """
    if not src_fields:
        raise ValueError("src_fields must name at least one field")
    text = _read_text(path)
    start = _skip_whitespace(text, 0)
    is_array = path.suffix != ".jsonl" and text[start : start + 1] == "["
    records = _iter_json_array(path, text) if is_array else _iter_json_lines(path, text)
    examples = [
        _record_example(record, src_fields=src_fields, tgt_field=tgt_field, where=f"{path}:{line}")
        for line, record in records
    ]
    log.info("read %d pairs from %s (%s)", len(examples), path, "JSON array" if is_array else "JSON Lines")
    return examples


# ---------------------------------------------------------------- the shipped data sets


def read_django(root: Path) -> dict[str, list[Example]]:
    """Django (Oda et al. 2015): ``all.anno`` (pseudo-code) -> ``all.code`` (one Python line).

    The standard split (Ling et al. 2016): lines 1-16,000 train, 16,001-17,000 valid, 17,001-end test.
    The shipped files have no blank lines; a blank line is reported as an error with its line.
    """
    anno, code = root / "all.anno", root / "all.code"
    examples = read_parallel(anno, code)
    if len(examples) <= DJANGO_VALID_END:
        raise DataError(
            f"{anno}: has {len(examples)} lines: expected {DJANGO_LINES} "
            f"(at least {DJANGO_VALID_END + 1} for a non-empty test split)"
        )
    if len(examples) != DJANGO_LINES:
        log.warning("%s has %d lines, the standard release has %d", anno, len(examples), DJANGO_LINES)
    return {
        "train": examples[:DJANGO_TRAIN_END],
        "valid": examples[DJANGO_TRAIN_END:DJANGO_VALID_END],
        "test": examples[DJANGO_VALID_END:],
    }


def read_conala(root: Path, *, valid_size: int = 400) -> dict[str, list[Example]]:
    """CoNaLa curated (Yin et al. 2018): ``train.json`` / ``test.json``, intent -> snippet.

    Source is ``rewritten_intent``, falling back to ``intent`` where it is null. There is no official
    dev set: as in the CoNaLa baseline, the first ``valid_size`` training records are the valid split.
    """
    if valid_size < 0:
        raise ValueError(f"valid_size must be >= 0, got {valid_size}")
    train_path = root / "train.json"
    train = read_json(train_path, src_fields=CONALA_SRC_FIELDS, tgt_field="snippet")
    if valid_size >= len(train):
        raise DataError(f"{train_path}: has {len(train)} records: expected more than valid_size={valid_size}")
    test = read_json(root / "test.json", src_fields=CONALA_SRC_FIELDS, tgt_field="snippet")
    return {"train": train[valid_size:], "valid": train[:valid_size], "test": test}


def read_parallel_dir(
    root: Path, *, src_lang: str, tgt_lang: str, splits: Mapping[str, str] = MULTI30K_SPLITS
) -> dict[str, list[Example]]:
    """Read ``{root}/{prefix}.{lang}`` file pairs (Multi30k layout), one entry per split.

    ``splits`` maps split names to file prefixes, by default Multi30k's train / valid / test2016.
    """
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    result = {}
    for split, prefix in splits.items():
        paths = [root / f"{prefix}.{lang}" for lang in (src_lang, tgt_lang)]
        for path in paths:
            if not path.is_file():
                present = sorted(p.name for p in root.iterdir())
                raise DataError(f"{path}: file not found: expected the {split!r} split here; {root} has {present}")
        result[split] = read_parallel(paths[0], paths[1])
    return result
