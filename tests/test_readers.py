"""Readers of raw text pairs: happy paths, every DataError (with file and line), and real-data slices."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from seq2seq.data.dataset import (
    read_conala,
    read_django,
    read_json,
    read_parallel,
    read_parallel_dir,
    read_tsv,
)
from seq2seq.data.example import DataError, Example

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SST2_LABELS = {"0": "negative", "1": "positive"}
CONALA_FIELDS = ("rewritten_intent", "intent")


def write(path: Path, content: str | bytes) -> Path:
    """Write text as UTF-8 (no newline translation) or raw bytes; return the path."""
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def raises_at(where: str):
    """``pytest.raises(DataError)`` whose message starts with ``where`` (e.g. ``".../a.txt:3:"``)."""
    return pytest.raises(DataError, match="^" + re.escape(where))


# ---------------------------------------------------------------- read_parallel


def test_parallel_happy_path_strips_ends_and_records_origin(tmp_path: Path) -> None:
    src = write(tmp_path / "a.de", "\ufeff ein Hund \r\nzwei  Katzen\n")
    tgt = write(tmp_path / "a.en", "a dog\r\ntwo  cats")  # no final newline
    assert read_parallel(src, tgt) == [
        Example(src="ein Hund", tgt="a dog", origin=f"{src}:1"),
        Example(src="zwei  Katzen", tgt="two  cats", origin=f"{src}:2"),
    ]


def test_parallel_does_not_split_on_unicode_line_separators(tmp_path: Path) -> None:
    src = write(tmp_path / "a.src", "one\u2028still one\x0cand\n")
    tgt = write(tmp_path / "a.tgt", "x\n")
    assert [ex.src for ex in read_parallel(src, tgt)] == ["one\u2028still one\x0cand"]


def test_parallel_missing_file(tmp_path: Path) -> None:
    tgt = write(tmp_path / "a.en", "x\n")
    with raises_at(f"{tmp_path / 'nope.de'}: file not found"):
        read_parallel(tmp_path / "nope.de", tgt)


def test_parallel_undecodable_byte_gives_line(tmp_path: Path) -> None:
    src = write(tmp_path / "a.de", b"gut\nauch gut\nkaputt \xff\n")
    tgt = write(tmp_path / "a.en", "1\n2\n3\n")
    with raises_at(f"{src}:3: invalid UTF-8") as info:
        read_parallel(src, tgt)
    assert "expected UTF-8" in str(info.value)


def test_parallel_line_count_mismatch_names_both_files(tmp_path: Path) -> None:
    src = write(tmp_path / "a.de", "1\n2\n3\n")
    tgt = write(tmp_path / "a.en", "1\n2\n")
    with raises_at(f"{src}:3:") as info:
        read_parallel(src, tgt)
    message = str(info.value)
    assert f"{src} has 3 lines" in message and f"{tgt} has 2" in message


@pytest.mark.parametrize(("src_text", "tgt_text", "bad_file", "side"), [
    ("a\n  \nc\n", "x\ny\nz\n", "a.src", "source"),
    ("a\nb\nc\n", "x\ny\n\t\n", "a.tgt", "target"),
])
def test_parallel_empty_side_gives_file_and_line(
    tmp_path: Path, src_text: str, tgt_text: str, bad_file: str, side: str
) -> None:
    src, tgt = write(tmp_path / "a.src", src_text), write(tmp_path / "a.tgt", tgt_text)
    line = 2 if side == "source" else 3
    with raises_at(f"{tmp_path / bad_file}:{line}: expected a non-empty {side}"):
        read_parallel(src, tgt)


# ---------------------------------------------------------------- read_tsv


def test_tsv_happy_path_with_label_map_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "\ufefflabel\tsentence\r\n0\tbad film \r\n\r\n1\tgood film\r\n")
    assert read_tsv(path, src_column="sentence", tgt_column="label", label_map=SST2_LABELS) == [
        Example(src="bad film", tgt="negative", origin=f"{path}:2"),
        Example(src="good film", tgt="positive", origin=f"{path}:4"),
    ]


def test_tsv_without_label_map_keeps_raw_target(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "sentence\tlabel\nok\t1\n")
    assert read_tsv(path, src_column="sentence", tgt_column="label")[0].tgt == "1"


def test_tsv_missing_column_lists_header(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "label\tcontent\n0\tx\n")
    with raises_at(f"{path}:1: missing column 'sentence'") as info:
        read_tsv(path, src_column="sentence", tgt_column="label")
    assert "['label', 'content']" in str(info.value)


def test_tsv_wrong_column_count(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "sentence\tlabel\nok\t1\nno label here\n")
    with raises_at(f"{path}:3: expected 2 tab-separated columns"):
        read_tsv(path, src_column="sentence", tgt_column="label")


def test_tsv_unmapped_label_lists_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "sentence\tlabel\nok\t1\nmeh\t2\n")
    with raises_at(f"{path}:3: value '2'") as info:
        read_tsv(path, src_column="sentence", tgt_column="label", label_map=SST2_LABELS)
    assert "['0', '1']" in str(info.value)


def test_tsv_empty_source_empty_file_missing_and_bad_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tsv", "sentence\tlabel\n \t1\n")
    with raises_at(f"{path}:2: expected a non-empty source"):
        read_tsv(path, src_column="sentence", tgt_column="label")
    empty = write(tmp_path / "e.tsv", "")
    with raises_at(f"{empty}:1: expected a header"):
        read_tsv(empty, src_column="sentence", tgt_column="label")
    with raises_at(f"{tmp_path / 'x.tsv'}: file not found"):
        read_tsv(tmp_path / "x.tsv", src_column="sentence", tgt_column="label")
    bad = write(tmp_path / "b.tsv", b"sentence\tlabel\nok\t1\n\xc3(\t0\n")
    with raises_at(f"{bad}:3: invalid UTF-8"):
        read_tsv(bad, src_column="sentence", tgt_column="label")


# ---------------------------------------------------------------- read_json


CONALA_ARRAY = """\ufeff[
  {
    "intent": "sum a list",
    "rewritten_intent": null,
    "snippet": "sum(x)"
  },
  {
    "intent": "two lines",
    "rewritten_intent": "print `a` then `b`",
    "snippet": "  print(a)\\n    print(b)  "
  }
]
"""


def test_json_array_fallback_chain_keeps_interior_newlines(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", CONALA_ARRAY.replace("\n", "\r\n"))
    assert read_json(path, src_fields=CONALA_FIELDS, tgt_field="snippet") == [
        Example(src="sum a list", tgt="sum(x)", origin=f"{path}:2"),
        Example(src="print `a` then `b`", tgt="print(a)\n    print(b)", origin=f"{path}:7"),
    ]


def test_json_lines_skips_blank_lines_and_accepts_int_label(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"text": "fine", "label": 1}\n\n{"text": "bad", "label": "0"}\n')
    assert read_json(path, src_fields=["text"], tgt_field="label") == [
        Example(src="fine", tgt="1", origin=f"{path}:1"),
        Example(src="bad", tgt="0", origin=f"{path}:3"),
    ]


def test_json_one_object_per_line_without_jsonl_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "d.json", '{"s": "a", "t": "b"}\n{"s": "c", "t": "d"}\n')
    assert [ex.tgt for ex in read_json(path, src_fields=["s"], tgt_field="t")] == ["b", "d"]


def test_jsonl_malformed_third_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"s": "a", "t": "b"}\n{"s": "c", "t": "d"}\n{"s": "e", "t": }\n')
    with raises_at(f"{path}:3: malformed JSON (") as info:
        read_json(path, src_fields=["s"], tgt_field="t")
    assert "column 17" in str(info.value) and "one JSON object per line" in str(info.value)


def test_json_array_second_record_missing_field_gives_its_start_line(tmp_path: Path) -> None:
    records = [{"intent": "a", "snippet": "x"}, {"intent": "b", "question_id": 7}]
    path = write(tmp_path / "c.json", json.dumps(records, indent=2))
    # line 1 "[", record 1 on lines 2-5, record 2 opens on line 6
    with raises_at(f"{path}:6: missing field 'snippet'") as info:
        read_json(path, src_fields=CONALA_FIELDS, tgt_field="snippet")
    assert "['intent', 'question_id']" in str(info.value)


def test_json_missing_source_fields_names_the_chain(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"snippet": "x"}\n')
    with raises_at(f"{path}:1: missing field 'rewritten_intent' or 'intent'"):
        read_json(path, src_fields=CONALA_FIELDS, tgt_field="snippet")


def test_json_array_malformed_gives_decoder_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", '[\n  {"s": "a", "t": "b"},\n  {"s": "c" "t": "d"}\n]\n')
    with raises_at(f"{path}:3: malformed JSON (Expecting ',' delimiter at column 13)"):
        read_json(path, src_fields=["s"], tgt_field="t")


@pytest.mark.parametrize(("text", "line", "message"), [
    ('[\n{"s": "a", "t": "b"}\n{"s": "c", "t": "d"}]', 3, "missing ',' or ']'"),
    ('[\n{"s": "a", "t": "b"},\n]', 3, "malformed JSON"),
    ('[\n{"s": "a", "t": "b"}\n', 3, "missing ',' or ']'"),
    ('[{"s": "a", "t": "b"}]\n\n{}', 3, "extra data"),
])
def test_json_array_structure_errors(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path / "c.json", text)
    with raises_at(f"{path}:{line}: ") as info:
        read_json(path, src_fields=["s"], tgt_field="t")
    assert message in str(info.value)


@pytest.mark.parametrize(("record", "message"), [
    ('["a", "b"]', "record is a JSON list: expected an object"),
    ('{"s": 3, "t": "b"}', "field 's' is int 3: expected a string"),
    ('{"s": "a", "t": 1.5}', "field 't' is float 1.5: expected a string or an integer"),
    ('{"s": "a", "t": true}', "field 't' is bool True"),
    ('{"s": null, "t": "b"}', "expected a non-empty source"),
    ('{"s": "a", "t": "  "}', "expected a non-empty target"),
    ('{"s": "a", "t": null}', "expected a non-empty target"),
])
def test_json_bad_records(tmp_path: Path, record: str, message: str) -> None:
    path = write(tmp_path / "d.jsonl", '{"s": "ok", "t": "ok"}\n' + record + "\n")
    with raises_at(f"{path}:2: ") as info:
        read_json(path, src_fields=["s"], tgt_field="t")
    assert message in str(info.value)


def test_json_missing_file_and_bad_bytes(tmp_path: Path) -> None:
    with raises_at(f"{tmp_path / 'x.json'}: file not found"):
        read_json(tmp_path / "x.json", src_fields=["s"], tgt_field="t")
    path = write(tmp_path / "b.json", b'[\n{"s": "a", "t": "b"},\n{"s": "\xe9", "t": "b"}]')
    with raises_at(f"{path}:3: invalid UTF-8"):
        read_json(path, src_fields=["s"], tgt_field="t")


# ---------------------------------------------------------------- the data-set readers on fixtures


def test_django_split_and_errors(tmp_path: Path) -> None:
    n = 18_805
    write(tmp_path / "all.anno", "".join(f"  say {i}\n" for i in range(1, n + 1)))
    write(tmp_path / "all.code", "".join(f" print ( {i} )\n" for i in range(1, n + 1)))
    splits = read_django(tmp_path)
    assert split_sizes(splits) == {"train": 16000, "valid": 1000, "test": 1805}
    first_valid = Example(src="say 16001", tgt="print ( 16001 )", origin=f"{tmp_path / 'all.anno'}:16001")
    assert splits["valid"][0] == first_valid
    write(tmp_path / "all.code", "print ( 1 )\n\n")
    with raises_at(f"{tmp_path / 'all.anno'}:3: line has no partner"):
        read_django(tmp_path)
    write(tmp_path / "all.anno", "a\nb\n")
    with raises_at(f"{tmp_path / 'all.code'}:2: expected a non-empty target"):
        read_django(tmp_path)


def test_conala_split_and_missing_test(tmp_path: Path) -> None:
    records = [{"intent": f"i{k}", "rewritten_intent": None, "snippet": f"s{k}"} for k in range(5)]
    write(tmp_path / "train.json", json.dumps(records, indent=1))
    with raises_at(f"{tmp_path / 'test.json'}: file not found"):
        read_conala(tmp_path, valid_size=2)
    write(tmp_path / "test.json", json.dumps(records[:1]))
    splits = read_conala(tmp_path, valid_size=2)
    assert [ex.src for ex in splits["valid"]] == ["i0", "i1"]
    assert [ex.tgt for ex in splits["train"]] == ["s2", "s3", "s4"]
    assert len(splits["test"]) == 1
    with raises_at(f"{tmp_path / 'train.json'}: has 5 records"):
        read_conala(tmp_path, valid_size=5)


def test_parallel_dir_reads_splits_and_lists_folder_on_missing_file(tmp_path: Path) -> None:
    for prefix in ("train", "valid"):
        write(tmp_path / f"{prefix}.de", "Hallo\n")
        write(tmp_path / f"{prefix}.en", "Hello\n")
    splits = read_parallel_dir(tmp_path, src_lang="de", tgt_lang="en", splits={"train": "train", "valid": "valid"})
    assert splits["train"] == [Example(src="Hallo", tgt="Hello", origin=f"{tmp_path / 'train.de'}:1")]
    with raises_at(f"{tmp_path / 'test2016.de'}: file not found") as info:
        read_parallel_dir(tmp_path, src_lang="de", tgt_lang="en")
    assert "'test'" in str(info.value) and "'train.de'" in str(info.value)
    with raises_at(f"{tmp_path / 'nowhere'}: folder not found"):
        read_parallel_dir(tmp_path / "nowhere", src_lang="de", tgt_lang="en")


# ---------------------------------------------------------------- real data (skipped when absent)


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not found: real data sets live in ../shared/data")
    return path


def split_sizes(splits: dict[str, list[Example]]) -> dict[str, int]:
    return {name: len(examples) for name, examples in splits.items()}


def test_real_conala() -> None:
    splits = read_conala(shared("conala"))
    # train.json holds 2,378 records (its README says 2,379), so train is 1,978 rather than 1,979
    assert split_sizes(splits) == {"train": 1978, "valid": 400, "test": 500}
    assert any("\n" in ex.tgt for ex in splits["train"])  # multi-line snippets survive


def test_real_django() -> None:
    splits = read_django(shared("django"))
    assert split_sizes(splits) == {"train": 16000, "valid": 1000, "test": 1805}
    assert splits["train"][0].tgt == "from threading import local"


def test_real_multi30k_de_en() -> None:
    splits = read_parallel_dir(shared("multi30k"), src_lang="de", tgt_lang="en")
    assert split_sizes(splits) == {"train": 29000, "valid": 1014, "test": 1000}


def test_real_sst2() -> None:
    root = shared("sst2")
    # train.tsv has CRLF endings and header `label<TAB>sentence`; dev.tsv names the text column `content`
    train = read_tsv(root / "train.tsv", src_column="sentence", tgt_column="label", label_map=SST2_LABELS)
    dev = read_tsv(root / "dev.tsv", src_column="content", tgt_column="label", label_map=SST2_LABELS)
    assert (len(train), len(dev)) == (67349, 872)
    assert {ex.tgt for ex in dev} == {"negative", "positive"}
