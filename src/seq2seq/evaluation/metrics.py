"""Quality metrics for generated code (and any token sequences).

- exact match: the predicted token list equals the reference token list;
- BLEU over code tokens: sacreBLEU corpus BLEU-4 (its default "exp" smoothing) on space-joined
  tokens with ``tokenize="none"``, so the code tokenizer (not sacreBLEU's) defines the units;
  this is *not* the official CoNaLa BLEU (different tokenization, no smoothing there);
- parse rate: share of outputs that ``ast.parse`` accepts (the code is never executed);
- perplexity: exp of the mean per-token cross-entropy;
- what coverage exists for (Tu et al. 2016): the share of outputs that repeat an n-gram (n = 2..4)
  more often than the reference does, and the share of source tokens no output step attends to
  above 0.1.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import sacrebleu

from seq2seq.data.python_syntax import Unit, parses


def exact_match(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    _check(predictions, references)
    if not predictions:
        return 0.0
    return sum(list(p) == list(r) for p, r in zip(predictions, references)) / len(predictions)


def token_bleu(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0-100) over already-tokenized sequences."""
    _check(predictions, references)
    if not predictions:
        return 0.0
    hyps = [_join(p) for p in predictions]
    refs = [[_join(r) for r in references]]
    # force: the input is tokenized on purpose; sacreBLEU would otherwise warn that it looks tokenized.
    return float(sacrebleu.corpus_bleu(hyps, refs, tokenize="none", force=True).score)


def _join(tokens: Sequence[str]) -> str:
    # A token may hold spaces (a string literal such as 'a b'); it must stay one BLEU unit.
    return " ".join(re.sub(r"\s", "\u2581", token) for token in tokens)


def parse_rate(codes: Sequence[str], *, unit: Unit = "program") -> float:
    """Share of ``codes`` that :func:`seq2seq.data.python_syntax.parses` accepts as a ``unit``
    (only parsed, never executed; an empty output does not count)."""
    return sum(parses(code, unit=unit) for code in codes) / len(codes) if codes else 0.0


def perplexity(mean_token_loss: float) -> float:
    return math.exp(min(mean_token_loss, 50.0))


def repeats_ngram(prediction: Sequence[str], reference: Sequence[str], *, orders: Sequence[int] = (2, 3, 4)) -> bool:
    """Whether ``prediction`` holds an n-gram (n in ``orders``) more than once and more often than
    ``reference`` does: the over-translation that coverage is meant to prevent."""
    for n in orders:
        produced = Counter(tuple(prediction[i : i + n]) for i in range(len(prediction) - n + 1))
        wanted = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
        if any(count > max(1, wanted[gram]) for gram, count in produced.items()):
            return True
    return False


def repetition_rate(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Share of predictions that :func:`repeats_ngram` (n = 2..4) against their reference."""
    _check(predictions, references)
    return sum(repeats_ngram(p, r) for p, r in zip(predictions, references)) / len(predictions) if predictions else 0.0


def unattended_rate(attentions: Sequence[Sequence[Sequence[float]]], *, threshold: float = 0.1) -> float:
    """Share of all source tokens (over every example's [T, S] attention, real positions only) that
    no output step attends to with weight above ``threshold``: the under-translation that coverage
    is meant to prevent. An example without output steps has no rows to read its source length
    from, and is left out."""
    unattended = total = 0
    for weights in attentions:
        rows = [list(row) for row in weights]
        width = len(rows[0]) if rows else 0
        total += width
        unattended += sum(all(row[s] <= threshold for row in rows) for s in range(width))
    return unattended / total if total else 0.0


def _check(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
