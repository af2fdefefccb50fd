"""The recipes under configs/: each one validates, and the CoNaLa recipe runs end to end on a slice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seq2seq.config import build_config, load_config_file

ROOT = Path(__file__).resolve().parents[1]
# Training recipes; configs/compare/ holds inputs of `seq2seq compare` (tests/test_compare_params.py).
RECIPES = sorted(path for path in (ROOT / "configs").rglob("*.yaml") if path.parent.name != "compare")
DATA = ROOT.parent / "shared" / "data"


def test_there_is_a_recipe_per_real_task() -> None:
    assert {path.parent.name for path in RECIPES} >= {"conala", "multi30k", "sst2", "django"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_is_a_valid_config_that_says_how_to_run_and_what_to_expect(path: Path) -> None:
    config = build_config(base=load_config_file(path), source=str(path))
    text = path.read_text(encoding="utf-8")
    assert f"seq2seq train configs/{path.parent.name}/{path.name}" in text  # the command that trains it
    assert "seq2seq evaluate" in text and "Expected" in text
    assert config.data.path is not None and config.data.path.startswith("../shared/data/")


@pytest.mark.skipif(not (DATA / "conala").is_dir(), reason="../shared/data/conala is absent (real CoNaLa data)")
def test_conala_recipe_runs_end_to_end_on_a_few_hundred_examples(tmp_path, capsys) -> None:
    from seq2seq.cli import main

    subset = tmp_path / "conala"
    subset.mkdir()
    for name, count in (("train.json", 300), ("test.json", 40)):
        records = json.loads((DATA / "conala" / name).read_text(encoding="utf-8"))[:count]
        (subset / name).write_text(json.dumps(records), encoding="utf-8")
    out = tmp_path / "run"
    recipe = ROOT / "configs" / "conala" / "bilstm-attention-copy-slots.yaml"
    args = ["train", str(recipe), "--set", f"data.path={subset}", "--set", "data.valid_size=50",
            "--set", "train.epochs=2", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "official CoNaLa BLEU" in printed
    summary = json.loads((out / "eval_test.json").read_text())
    assert summary["count"] == 40 and 0.0 <= summary["task"]["conala_bleu"] <= 100.0
