"""Built-in tasks: the generated nl2code data set and the reversal sanity task."""

from __future__ import annotations

import ast
import re

import pytest

from seq2seq.data import tasks
from seq2seq.data.example import Example
from seq2seq.data.tasks import BUILTIN_TASKS, NAMES, generate_nl2code, generate_reverse
from seq2seq.data.tokenizers import PythonTokenizer, WordTokenizer


@pytest.fixture(scope="module")
def splits() -> dict[str, list[Example]]:
    return generate_nl2code()


def test_sizes_and_origins(splits: dict[str, list[Example]]) -> None:
    assert {name: len(examples) for name, examples in splits.items()} == {
        "train": 20000, "valid": 1000, "test": 1000}
    assert splits["train"][17].origin == "builtin:nl2code:train:17"
    assert splits["test"][0].origin == "builtin:nl2code:test:0"


def test_same_seed_same_data_other_seed_other_data() -> None:
    first = generate_nl2code(seed=7, n_train=300, n_valid=50, n_test=50)
    assert first == generate_nl2code(seed=7, n_train=300, n_valid=50, n_test=50)
    assert first["train"] != generate_nl2code(seed=8, n_train=300, n_valid=50, n_test=50)["train"]


def test_test_split_does_not_depend_on_train_size() -> None:
    small = generate_nl2code(seed=3, n_train=10, n_valid=10, n_test=100)
    large = generate_nl2code(seed=3, n_train=500, n_valid=10, n_test=100)
    assert small["test"] == large["test"]


def test_sources_are_unique_across_and_within_splits(splits: dict[str, list[Example]]) -> None:
    sources = [example.src for examples in splits.values() for example in examples]
    assert len(set(sources)) == len(sources)


def test_every_target_is_one_line_of_valid_python(splits: dict[str, list[Example]]) -> None:
    for examples in splits.values():
        for example in examples:
            assert "\n" not in example.tgt
            ast.parse(example.tgt)  # raises SyntaxError with the offending line


def test_sources_are_lower_case_words(splits: dict[str, list[Example]]) -> None:
    for example in splits["valid"]:
        assert example.src == example.src.lower(), example.src
        assert example.src == example.src.strip() and "  " not in example.src


def test_names_in_code_appear_in_description(splits: dict[str, list[Example]]) -> None:
    pool = set(NAMES)
    for example in splits["valid"]:
        used = {node.id for node in ast.walk(ast.parse(example.tgt)) if isinstance(node, ast.Name)}
        words = set(WordTokenizer().tokenize(example.src))
        assert (used & pool) <= words, (example.src, example.tgt)


def test_list_literals_are_copied_verbatim() -> None:
    for example in generate_nl2code(seed=5, n_train=2000, n_valid=1, n_test=1)["train"]:
        for literal in re.findall(r"= \[([^\[\]]+)\];", example.tgt):
            items = literal.split(", ")
            assert " , ".join(items[:-1]) + " and " + items[-1] in example.src


def test_length_buckets(splits: dict[str, list[Example]]) -> None:
    word = WordTokenizer()
    lengths = [len(word.tokenize(example.src)) for example in splits["train"]]
    n = len(lengths)
    short = sum(length < 12 for length in lengths) / n
    long = sum(length > 25 for length in lengths) / n
    assert long >= 0.25 and short >= 0.25 and 1 - short - long >= 0.2
    assert max(lengths) >= 50


def test_targets_stay_short_enough(splits: dict[str, list[Example]]) -> None:
    python = PythonTokenizer()
    assert max(len(python.tokenize(example.tgt)) for example in splits["valid"]) <= 45


def test_at_least_25_template_families() -> None:
    assert sum(len(bucket) for bucket in tasks._FAMILIES) >= 25


def test_builtin_tasks_registry() -> None:
    assert BUILTIN_TASKS["nl2code"] is generate_nl2code


def test_reverse_task() -> None:
    examples = generate_reverse(seed=1, n=50, vocab_size=5, min_len=2, max_len=6)
    assert len(examples) == 50 and examples == generate_reverse(
        seed=1, n=50, vocab_size=5, min_len=2, max_len=6)
    for example in examples:
        src = example.src.split()
        assert example.tgt.split() == src[::-1]
        assert 2 <= len(src) <= 6 and set(src) <= set("abcde")
    assert examples[3].origin == "builtin:reverse:3"


def test_reverse_task_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError, match="min_len"):
        generate_reverse(min_len=5, max_len=2)
