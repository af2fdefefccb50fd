"""Quality metrics for generated code (and any token sequences).

- exact match: the predicted token list equals the reference token list;
- BLEU over code tokens: sacreBLEU corpus BLEU-4 (its default "exp" smoothing) on space-joined
  tokens with ``tokenize="none"``, so the code tokenizer (not sacreBLEU's) defines the units;
  this is *not* the official CoNaLa BLEU (different tokenization, no smoothing there);
- parse rate: share of outputs that ``ast.parse`` accepts (the code is never executed);
- perplexity: exp of the mean per-token cross-entropy.
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections.abc import Sequence

import sacrebleu


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


def parses(code: str) -> bool:
    """True when ``code`` is a syntactically valid, non-empty Python program. Only parsed, never
    executed. An empty output (``ast.parse("")`` accepts it) is not counted as code: otherwise a
    model that learned to stop at once would score a perfect parse rate."""
    if not code.strip():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for invalid escape sequences
            ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def parse_rate(codes: Sequence[str]) -> float:
    return sum(parses(code) for code in codes) / len(codes) if codes else 0.0


def perplexity(mean_token_loss: float) -> float:
    return math.exp(min(mean_token_loss, 50.0))


def _check(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
