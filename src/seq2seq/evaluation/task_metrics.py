"""Each task's published metric, computed exactly as the papers we compare with define it.

- **CoNaLa BLEU** (Yin et al. 2018; the conala-baseline ``eval/conala_eval.py`` with its
  ``bleu_score.py``): both snippets are re-tokenised by :func:`conala_tokenize` (the tokenizer of
  Ling et al. 2016, "Latent Predictor Networks"), then corpus BLEU-4 with uniform weights, one
  reference and **no smoothing** (a corpus with no matching 4-gram scores 0). Exact match compares
  the same token lists.
- **Translation BLEU**: sacreBLEU on detokenized text with its default 13a tokenizer, reported
  with sacreBLEU's signature so the figure is reproducible.
- **Sentiment accuracy**: the generated text must equal the gold label exactly; anything else
  (another word, an empty output) counts as wrong. A confusion matrix has one row per gold label
  and one column per predicted label, with all other outputs in an ``<other>`` column.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import sacrebleu

OTHER = "<other>"


def conala_tokenize(code: str) -> list[str]:
    """Split ``code`` the way the CoNaLa evaluation does.

    Every character outside ``[A-Za-z0-9_]`` becomes its own token, a lower-case letter followed
    by an upper-case one is split (camelCase -> camel Case), and both quote characters become a
    backquote. No lower-casing.
    """
    spaced = re.sub(r"([^A-Za-z0-9_])", r" \1 ", code)
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", spaced)
    spaced = spaced.replace('"', "`").replace("'", "`")
    return spaced.split()


def _check(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")


def unsmoothed_corpus_bleu(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (0-100) of token lists with one reference each and no smoothing.

    Papineni et al. 2002: the geometric mean of the clipped n-gram precisions (n = 1..4, summed
    over the corpus) times the brevity penalty exp(1 - r/c) when the output is shorter than the
    references. Computed by sacreBLEU on space-joined tokens with its tokenizer and smoothing
    off, which is the same formula as the conala-baseline script.
    """
    _check(predictions, references)
    if not predictions:
        return 0.0
    hyps = [" ".join(tokens) for tokens in predictions]
    refs = [[" ".join(tokens) for tokens in references]]
    return float(sacrebleu.corpus_bleu(hyps, refs, tokenize="none", smooth_method="none", force=True).score)


def conala_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The official CoNaLa corpus BLEU (0-100) of predicted against reference snippets."""
    return unsmoothed_corpus_bleu([conala_tokenize(p) for p in predictions], [conala_tokenize(r) for r in references])


def conala_exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share (0-1) of predictions whose CoNaLa token list equals the reference's."""
    _check(predictions, references)
    if not predictions:
        return 0.0
    return sum(conala_tokenize(p) == conala_tokenize(r) for p, r in zip(predictions, references)) / len(predictions)


@dataclass(frozen=True)
class SacreBleuScore:
    score: float  # 0-100
    signature: str  # e.g. "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.3"


def sacre_bleu(predictions: Sequence[str], references: Sequence[str], *, lowercase: bool = False) -> SacreBleuScore:
    """sacreBLEU corpus BLEU of detokenized outputs against detokenized references (13a tokenizer)."""
    _check(predictions, references)
    metric = sacrebleu.metrics.BLEU(lowercase=lowercase)
    score = metric.corpus_score(list(predictions), [list(references)])
    return SacreBleuScore(float(score.score), str(metric.get_signature()))


def label_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share (0-1) of outputs exactly equal to the gold label (after stripping outer spaces)."""
    _check(predictions, references)
    if not predictions:
        return 0.0
    return sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(predictions)


def confusion_matrix(predictions: Sequence[str], references: Sequence[str]) -> dict[str, dict[str, int]]:
    """Counts ``[gold][predicted]``; a prediction that is not a gold label is counted as ``<other>``."""
    _check(predictions, references)
    labels = sorted({r.strip() for r in references})
    matrix = {gold: {predicted: 0 for predicted in [*labels, OTHER]} for gold in labels}
    for predicted, gold in zip(predictions, references):
        predicted = predicted.strip()
        matrix[gold.strip()][predicted if predicted in matrix else OTHER] += 1
    return matrix
