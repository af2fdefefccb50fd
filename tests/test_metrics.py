"""Metrics: exact match, BLEU over code tokens, parse rate, length buckets."""

from __future__ import annotations

import math

import pytest

from seq2seq.evaluation.evaluate import scores_by_length
from seq2seq.evaluation.metrics import exact_match, parse_rate, parses, perplexity, token_bleu


def test_exact_match_compares_token_lists():
    assert exact_match([["a", "b"], ["c"]], [["a", "b"], ["d"]]) == 0.5
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        exact_match([["a"], ["b"]], [["a"]])


def test_token_bleu_perfect_and_partial():
    refs = [["x", "=", "foo", "(", "1", ",", "2", ")"]]
    assert token_bleu(refs, refs) == pytest.approx(100.0)
    partial = token_bleu([["x", "=", "foo", "(", "1", ",", "3", ")"]], refs)
    assert 0.0 < partial < 100.0
    # Hand-computed: 7/8 unigrams, 5/7 bigrams, 4/6 trigrams, 3/5 4-grams, same length (BP = 1).
    expected = 100 * math.exp((math.log(7 / 8) + math.log(5 / 7) + math.log(4 / 6) + math.log(3 / 5)) / 4)
    assert partial == pytest.approx(expected, abs=1e-6)


def test_parse_rate_never_executes():
    marker = "import os; os.makedirs('SHOULD_NOT_EXIST_seq2seq')"
    assert parses(marker)
    assert not parses("x = (")
    assert not parses("") and not parses("  \n")  # an empty output is not code
    assert parse_rate(["x = 1", "def (", "print('a')", "for"]) == 0.5
    import os

    assert not os.path.exists("SHOULD_NOT_EXIST_seq2seq")


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(10)) == pytest.approx(10.0)


def test_scores_by_length_buckets():
    scores = scores_by_length([3, 15, 40, 41], [["a"], ["b"], ["c"], ["x"]], [["a"], ["x"], ["c"], ["d"]], edges=(10, 20))
    assert [(b.label, b.count, b.exact_match) for b in scores] == [("1-10", 1, 1.0), ("11-20", 1, 0.0), ("21+", 2, 0.5)]


def test_default_buckets_are_tertiles():
    from seq2seq.evaluation.evaluate import tertile_edges

    lengths = [3, 4, 5, 12, 14, 15, 30, 31, 40]
    assert tertile_edges(lengths) == (5, 15)
    scores = scores_by_length(lengths, [["a"]] * 9, [["a"]] * 9)
    assert [(b.label, b.count) for b in scores] == [("1-5", 3), ("6-15", 3), ("16+", 3)]
    assert tertile_edges([7, 7, 7]) == ()


def test_bleu_keeps_string_literals_with_spaces_as_one_unit():
    ref = [["print", "(", "'a b c d e f'", ")"]]
    hyp = [["print", "(", "'a b c d e g'", ")"]]
    # Four units, one wrong: 3/4 unigrams, 1/3 bigrams, 0/2 trigrams, 0/1 4-grams; sacreBLEU's
    # default "exp" smoothing turns the zero counts into 1/4 (trigrams) and 1/4 (4-grams).
    # Split on the spaces inside the literal, the same pair would score about 75.
    expected = 100 * (3 / 4 * 1 / 3 * 1 / 4 * 1 / 4) ** 0.25
    assert token_bleu(hyp, ref) == pytest.approx(expected)
