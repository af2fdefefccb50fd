"""Slot handling for NL -> code: placeholders in, values back out, end to end on a small run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seq2seq.data.slots import Slot, extract_slots, restore_slots, slot_code_tokens
from seq2seq.data.tokenizers import PythonTokenizer

PY = PythonTokenizer()
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_intent_quotes_become_numbered_placeholders() -> None:
    text, slots = extract_slots("sort list `my_list` by key 'name' and \"other\", don't touch `my_list`")
    assert text == "sort list var_0 by key str_0 and str_1 , don't touch var_0"
    assert slots == (Slot("var_0", "my_list", "`"), Slot("str_0", "name", "'"), Slot("str_1", "other", '"'))


def test_apostrophes_inside_words_are_not_quotes() -> None:
    assert extract_slots("the user's list isn't sorted") == ("the user's list isn't sorted", ())


def test_backquoted_expression_is_a_str_slot_matched_as_tokens() -> None:
    text, slots = extract_slots("zip two lists `[1, 2]` and `[3, 4]`")
    assert text == "zip two lists str_0 and str_1"
    assert slot_code_tokens(PY.tokenize("zip([1, 2], [3, 4])"), slots) == ["zip", "(", "str_0", ",", "str_1", ")"]


def test_code_values_and_string_literals_map_to_the_same_placeholder() -> None:
    _, slots = extract_slots("split string `s` on ',' and `s` again")
    tokens = slot_code_tokens(PY.tokenize("s.split(',') + s.split(r\",\")"), slots)
    assert tokens == ["var_0", ".", "split", "(", "'str_0'", ")", "+", "var_0", ".", "split", "(", 'r"str_0"', ")"]
    restored = restore_slots(tokens, slots)
    assert PY.detokenize(restored) == "s.split(',') + s.split(r\",\")"


def test_longer_values_are_replaced_first() -> None:
    _, slots = extract_slots("use `a` and `a.b`")
    assert slot_code_tokens(PY.tokenize("f(a.b, a)"), slots) == ["f", "(", "str_0", ",", "var_0", ")"]


def test_restore_leaves_unknown_placeholders_and_other_tokens() -> None:
    slots = (Slot("var_0", "x", "`"),)
    assert restore_slots(["var_0", "+", "var_1", "'hello'"], slots) == ["x", "+", "var_1", "'hello'"]


def test_escapes_are_compared_as_written() -> None:
    _, slots = extract_slots(r"split `text` on '\n'")
    tokens = slot_code_tokens(PY.tokenize(r"text.split('\n')"), slots)
    assert tokens == ["var_0", ".", "split", "(", "'str_0'", ")"]
    assert PY.detokenize(restore_slots(tokens, slots)) == r"text.split('\n')"


@pytest.mark.skipif(not (DATA / "conala").is_dir(), reason="../shared/data/conala is absent (real CoNaLa data)")
def test_conala_train_round_trips_and_most_slots_are_used() -> None:
    records = json.loads((DATA / "conala" / "train.json").read_text())[:500]
    defined = used = 0
    for record in records:
        _, slots = extract_slots(record["rewritten_intent"] or record["intent"])
        tokens = PY.tokenize(record["snippet"])
        slotted = slot_code_tokens(tokens, slots)
        assert PY.tokenize(PY.detokenize(restore_slots(slotted, slots))) == tokens
        defined += len(slots)
        used += sum(any(slot.name == t or slot.name in t for t in slotted) for slot in slots)
    assert defined > 400 and used / defined > 0.85


def test_slots_run_end_to_end(tmp_path, capsys) -> None:
    from seq2seq.cli import main
    from seq2seq.translator import Translator

    names = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"]
    rows = []
    for i in range(120):
        a, b = names[i % 8] + str(i), names[(i * 3) % 8] + str(i * 7)
        rows.append({"intent": f"add `{a}` to `{b}`", "snippet": f"{b} += {a}"})
    data = tmp_path / "conala-like"
    data.mkdir()
    (data / "train.json").write_text(json.dumps(rows[:100]))
    (data / "test.json").write_text(json.dumps(rows[100:]))
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--quick", "--no-progress", "--out", str(out), "--set", "data.slots=true",
            "--set", "data.valid_size=20", "--set", "train.epochs=25"]
    assert main(args) == 0
    capsys.readouterr()
    translator = Translator.from_run_dir(out)
    generation = translator.generate(["add `never_seen_x` to `never_seen_y`"])[0]
    assert generation.source_tokens == ["add", "var_0", "to", "var_1"]
    assert generation.text == "never_seen_y += never_seen_x"  # placeholders restored to unseen names
