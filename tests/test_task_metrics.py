"""Published metric definitions: CoNaLa BLEU, sacreBLEU for translation, label accuracy."""

from __future__ import annotations

import math

import pytest

from seq2seq.evaluation.task_metrics import (
    OTHER,
    conala_bleu,
    conala_exact_match,
    conala_tokenize,
    confusion_matrix,
    label_accuracy,
    sacre_bleu,
)


def test_conala_tokenizer_splits_symbols_camel_case_and_unifies_quotes() -> None:
    assert conala_tokenize("df.groupBy('a')") == ["df", ".", "group", "By", "(", "`", "a", "`", ")"]
    assert conala_tokenize('x = "hi there"') == ["x", "=", "`", "hi", "there", "`"]
    assert conala_tokenize("HTTPServer snake_case2") == ["HTTPServer", "snake_case2"]  # only lower->Upper splits


def test_conala_bleu_hand_computed_single_pair() -> None:
    # ref: x = foo ( a , b )  (8 tokens); hyp: x = foo ( a )  (6 tokens)
    # clipped precisions 6/6, 4/5, 3/4, 2/3; brevity penalty exp(1 - 8/6)
    expected = math.exp(sum(math.log(p) for p in (1, 4 / 5, 3 / 4, 2 / 3)) / 4) * math.exp(1 - 8 / 6)
    assert conala_bleu(["x = foo(a)"], ["x = foo(a, b)"]) == pytest.approx(100 * expected, abs=1e-6)


def test_conala_bleu_is_corpus_level_and_unsmoothed() -> None:
    # counts are summed over the corpus before dividing: 10/10, 7/8, 5/6, 3/4; c = 10, r = 12
    expected = math.exp(sum(math.log(p) for p in (1, 7 / 8, 5 / 6, 3 / 4)) / 4) * math.exp(1 - 12 / 10)
    score = conala_bleu(["a b c d", "x = foo(a)"], ["a b c d", "x = foo(a, b)"])
    assert score == pytest.approx(100 * expected, abs=1e-6)
    assert conala_bleu(["f(x)"], ["g(y)"]) == 0.0  # no 4-gram match and no smoothing: 0
    assert conala_bleu([""], ["x = 1"]) == 0.0


def test_conala_exact_match_ignores_spacing_and_quote_style() -> None:
    assert conala_exact_match(["x=f( 'a' )", "y"], ['x = f("a")', "z"]) == 0.5


def test_sacre_bleu_reports_the_signature() -> None:
    score = sacre_bleu(["a man is riding a horse ."], ["a man is riding a horse ."])
    assert score.score == pytest.approx(100.0)
    assert "tok:13a" in score.signature and "case:mixed" in score.signature
    assert "case:lc" in sacre_bleu(["A"], ["a"], lowercase=True).signature


def test_label_accuracy_and_confusion_matrix() -> None:
    predictions = ["positive", "negative", "positive", "", "very positive"]
    gold = ["positive", "positive", "negative", "negative", "positive"]
    assert label_accuracy(predictions, gold) == pytest.approx(1 / 5)
    assert confusion_matrix(predictions, gold) == {
        "negative": {"negative": 0, "positive": 1, OTHER: 1},
        "positive": {"negative": 1, "positive": 1, OTHER: 1},
    }
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        label_accuracy(["a", "b"], ["a"])


def test_each_data_format_gets_its_published_metric() -> None:
    from seq2seq.evaluation.evaluate import task_metric_for, task_scores

    assert task_metric_for("conala", has_label_map=False) == "conala"
    assert task_metric_for("parallel", has_label_map=False) == "sacrebleu"
    assert task_metric_for("tsv", has_label_map=True) == "accuracy"
    assert task_metric_for("django", has_label_map=False) is None
    assert task_metric_for("builtin", has_label_map=False) is None
    assert task_scores("conala", ["x = 1"], ["x = 1"])["conala_exact_match"] == 1.0
    with pytest.raises(ValueError, match="unknown task metric"):
        task_scores("rouge", [], [])


def test_translation_run_reports_sacrebleu(tmp_path, capsys) -> None:
    from seq2seq.cli import main

    words = ["ein", "mann", "eine", "frau", "hund", "läuft", "sitzt", "schläft"]
    english = dict(zip(words, ["a", "man", "a", "woman", "dog", "runs", "sits", "sleeps"]))
    lines = [" ".join(words[(i * k) % len(words)] for k in (1, 3, 5)) for i in range(60)]
    for split, rows in (("train", lines[:40]), ("valid", lines[40:50]), ("test2016", lines[50:])):
        (tmp_path / f"{split}.de").write_text("".join(row + "\n" for row in rows), encoding="utf-8")
        (tmp_path / f"{split}.en").write_text("".join(" ".join(english[w] for w in row.split()) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path), "--quick", "--no-progress", "--set", "data.tgt_tokenizer=word",
                 "--out", str(out)]) == 0
    assert "sacreBLEU" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--split", "test"]) == 0
    assert "tok:13a" in capsys.readouterr().out


def test_lowercased_moses_translation_scores_case_insensitively(tmp_path, capsys) -> None:
    from seq2seq.cli import main

    words = ["Ein", "Mann", "eine", "Frau", "Hund", "läuft", "sitzt", "schläft"]
    english = dict(zip(words, ["A", "man", "a", "woman", "dog", "runs", "sits", "sleeps"]))
    lines = [" ".join(words[(i * k) % len(words)] for k in (1, 3, 5)) + "." for i in range(60)]
    for split, rows in (("train", lines[:40]), ("valid", lines[40:50]), ("test2016", lines[50:])):
        (tmp_path / f"{split}.de").write_text("".join(row + "\n" for row in rows), encoding="utf-8")
        english_rows = [" ".join(english[w] for w in row[:-1].split()) + "." for row in rows]
        (tmp_path / f"{split}.en").write_text("".join(row + "\n" for row in english_rows), encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path), "--quick", "--no-progress", "--out", str(out), "--no-eval",
            "--set", "data.src_tokenizer=moses", "--set", "data.tgt_tokenizer=moses", "--set", "data.lowercase_tgt=true"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--split", "test"]) == 0
    assert "case:lc" in capsys.readouterr().out  # the cased references are compared lower-cased


def test_lowercase_targets_refused_for_code() -> None:
    from seq2seq.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="lowercase_tgt.*code is case sensitive"):
        build_config(overrides=["data.lowercase_tgt=true"])
