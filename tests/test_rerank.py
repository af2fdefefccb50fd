"""n-best reranking: the features, the choice, the tuning, and ``seq2seq rerank`` end to end."""

from __future__ import annotations

import json

import pytest

from seq2seq.cli import main
from seq2seq.rerank import Candidate, choose, overlap, tune


def test_overlap_counts_the_code_like_words_of_the_source() -> None:
    source = "append the number 4 to list `my_list` using 'x.y'".split()
    assert overlap(source, "my_list.append(4)") == pytest.approx(2 / 3)  # `my_list`, 4 found; 'x.y' not
    assert overlap(source, "x.y = my_list + [4]") == 1.0
    assert overlap("sort the list".split(), "sorted(l)") == 1.0  # nothing code-like to look for


def _candidates(*rows: tuple[str, float, float]) -> list[Candidate]:
    return [Candidate(text, {"model": model, "reconstruction": recon}) for text, model, recon in rows]


def test_choose_takes_the_best_weighted_sum_and_keeps_the_beam_order_on_ties() -> None:
    nbest = [_candidates(("a", -1.0, -5.0), ("b", -2.0, -1.0)), _candidates(("c", -1.0, 0.0), ("d", -1.0, 0.0))]
    assert choose(nbest, {"model": 1.0}) == ["a", "c"]
    assert choose(nbest, {"model": 1.0, "reconstruction": 1.0}) == ["b", "c"]


def test_tuning_finds_the_weight_that_the_metric_rewards_and_never_does_worse() -> None:
    # the right answer ("good") is second by model score in every list but first by reconstruction
    nbest = [_candidates(("bad", -1.0, -3.0), ("good", -1.5, -1.0)) for _ in range(4)]
    accuracy = lambda texts: sum(t == "good" for t in texts) / len(texts)  # noqa: E731
    weights, best = tune(nbest, accuracy, features=("model", "reconstruction"))
    assert best == 1.0 and weights["model"] == 1.0 and weights["reconstruction"] > 0.25
    assert choose(nbest, weights) == ["good"] * 4
    # a feature that cannot help keeps weight 0 and the beam's own order
    useless = [_candidates(("good", -1.0, 0.0), ("bad", -2.0, 0.0))]
    weights, best = tune(useless, accuracy, features=("model", "reconstruction"))
    assert weights["reconstruction"] == 0.0 and best == 1.0


def test_rerank_command_end_to_end(tmp_path, capsys) -> None:
    forward, reverse = tmp_path / "forward", tmp_path / "reverse"
    assert main(["train", "--quick", "--no-progress", "--preset", "lstm-attention", "--out", str(forward)]) == 0
    assert main(["train", "--quick", "--no-progress", "--preset", "lstm-attention", "--out", str(reverse),
                 "--set", "data.reverse=true", "--set", "data.src_tokenizer=python", "--set", "data.tgt_tokenizer=word"]) == 0
    capsys.readouterr()
    out = tmp_path / "reranked.txt"
    assert main(["rerank", str(forward), "--reverse", str(reverse), "--beam", "3", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reconstruction" in printed and "exact match" in printed
    (report,) = forward.glob("rerank_test_beam3_reverse-*.json")
    summary = json.loads(report.read_text())
    rows = {" + ".join(row["features"]): row for row in summary["rows"]}
    assert set(rows) == {"beam's first", "model", "model + reconstruction", "model + length", "model + parses",
                         "model + overlap", "model + finished", "model + reconstruction + length + parses + overlap + finished"}
    for row in summary["rows"][1:]:  # tuning starts from the model score alone and only keeps improvements
        assert row["tune"] >= rows["model"]["tune"] - 1e-9
    assert len(out.read_text().splitlines()) == json.loads((forward / "eval_test.json").read_text())["count"]
    # an ensemble of a model with itself and two copies of one reverse model change no number:
    # the ensemble's mean distribution and the mean reconstruction score are the single model's
    assert main(["rerank", str(forward), "--ensemble", str(forward), "--reverse", str(reverse), "--reverse", str(reverse),
                 "--beam", "3", "--output", str(tmp_path / "twice.txt")]) == 0
    (written,) = forward.glob("rerank_test_beam3_ensemble2-*_reverse-*.json")  # beside the single model's report
    twice = json.loads(written.read_text())
    assert twice["ensemble"] == [str(forward)] and twice["reverse"] == [str(reverse)] * 2
    for alone, doubled in zip(summary["rows"], twice["rows"]):
        assert doubled["test"] == pytest.approx(alone["test"]) and doubled["tune"] == pytest.approx(alone["tune"])
    assert (tmp_path / "twice.txt").read_text() == out.read_text()


def test_rerank_refuses_a_forward_model_as_the_reverse_one(tmp_path, capsys) -> None:
    forward = tmp_path / "forward"
    assert main(["train", "--quick", "--no-progress", "--preset", "lstm", "--out", str(forward)]) == 0
    assert main(["rerank", str(forward), "--reverse", str(forward)]) != 0
    assert "not a reverse model" in capsys.readouterr().err
    reverse = tmp_path / "reverse"
    assert main(["train", "--quick", "--no-progress", "--preset", "lstm", "--out", str(reverse),
                 "--set", "data.reverse=true", "--set", "data.src_tokenizer=python", "--set", "data.tgt_tokenizer=word"]) == 0
    capsys.readouterr()
    assert main(["rerank", str(forward), "--reverse", str(reverse), "--split", "valid"]) != 0
    assert "tuned on" in capsys.readouterr().err  # reporting the tuning split would hide its optimism


def test_reverse_data_swaps_the_sides_and_refuses_slots(tmp_path, capsys) -> None:
    from seq2seq.config import DataConfig
    from seq2seq.data.corpus import load_examples

    forward = load_examples(DataConfig(builtin_train_size=20))
    backward = load_examples(DataConfig(builtin_train_size=20, reverse=True))
    assert [(e.tgt, e.src) for e in forward["valid"]] == [(e.src, e.tgt) for e in backward["valid"]]
    out = tmp_path / "r"
    assert main(["train", "--quick", "--no-progress", "--set", "data.reverse=true", "--set", "data.slots=true",
                 "--out", str(out)]) != 0
    assert "reverse" in capsys.readouterr().err and not out.exists()
