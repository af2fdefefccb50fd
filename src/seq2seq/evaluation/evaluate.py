"""Evaluate a model on a split: decode, score, and break the scores down by input length."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from seq2seq.data.batching import EncodedPair, copy_encodings
from seq2seq.data.python_syntax import Unit, completed
from seq2seq.data.slots import Slot, restore_slots
from seq2seq.data.subwords import SubwordTokenizer
from seq2seq.data.tokenizers import Tokenizer
from seq2seq.data.vocab import Vocab
from seq2seq.decoding.constraints import prefer_accepted
from seq2seq.decoding.grammar import output_constraint
from seq2seq.decoding.greedy import Hypothesis
from seq2seq.decoding.search import check_no_repeat_ngram, decode_sources
from seq2seq.evaluation.metrics import exact_match, parse_rate, parses, repetition_rate, token_bleu, unattended_rate
from seq2seq.evaluation.task_metrics import (
    conala_bleu,
    conala_exact_match,
    confusion_matrix,
    label_accuracy,
    sacre_bleu,
)
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.training.validation import mean_reference_loss

def tertile_edges(lengths: Sequence[int]) -> tuple[int, ...]:
    """Bucket edges that split the source lengths into short / medium / long thirds.

    Computed from the evaluation set itself, so every model scored on that set gets the
    same buckets; duplicate edges (many equal lengths) are merged.
    """
    if not lengths:
        return ()
    ordered = sorted(lengths)
    edges = [ordered[(len(ordered) * k) // 3 - 1] for k in (1, 2) if (len(ordered) * k) // 3 >= 1]
    unique = sorted(set(edges))
    return tuple(edge for edge in unique if edge < ordered[-1])


@dataclass(frozen=True)
class BucketScore:
    label: str  # e.g. "11-20"
    count: int
    exact_match: float
    bleu: float


@dataclass
class EvalReport:
    count: int
    loss: float  # mean per-token cross-entropy of the references (teacher forcing)
    exact_match: float  # 0-1
    bleu: float  # 0-100
    parse_rate: float | None  # 0-1, None for non-code targets
    decode_sentences_per_s: float
    by_length: list[BucketScore] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)
    task: dict = field(default_factory=dict)  # the task's published metric, see task_scores()
    # attentive models: the share of outputs that repeat an n-gram more often than their reference
    # (repetition_rate) and the share of source tokens never attended above 0.1 (unattended_rate)
    coverage: dict = field(default_factory=dict)
    constraint: str | None = None  # the search constraint the outputs were decoded with (python, grammar)
    no_repeat_ngram_size: int = 0  # > 0: the outputs were decoded without a repeated n-gram of this size
    length_penalty: str = "none"  # how the beam ranked finished outputs of different lengths (greedy: none)
    alpha: float | None = None  # that penalty's exponent (None without one)
    completed: int = 0  # grammar: outputs cut by max_len that were closed or shortened to parse (python_syntax.completed)
    # runaway outputs (a decoder that loses its place repeats itself up to max_len; corpus BLEU punishes
    # each extra token while exact match counts the output once): the outputs that reached max_len
    # without <eos>, and the split's output tokens over its reference tokens (sacreBLEU's "ratio")
    stopped_at_max_len: int = 0
    length_ratio: float = 1.0

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50.0))

    def summary(self) -> dict:
        data = asdict(self)
        data.pop("predictions")
        data["perplexity"] = self.perplexity
        return data


def _bucket_labels(edges: Sequence[int]) -> list[tuple[int, int, str]]:
    bounds, low = [], 1
    for edge in edges:
        bounds.append((low, edge, f"{low}-{edge}"))
        low = edge + 1
    bounds.append((low, 10**9, f"{low}+"))
    return bounds


def scores_by_length(
    src_lengths: Sequence[int],
    predictions: Sequence[Sequence[str]],
    references: Sequence[Sequence[str]],
    *,
    edges: Sequence[int] | None = None,
) -> list[BucketScore]:
    """Exact match and BLEU per source-length bucket (``edges`` are inclusive upper bounds;
    by default the tertiles of ``src_lengths``)."""
    edges = tertile_edges(src_lengths) if edges is None else edges
    scores = []
    for low, high, label in _bucket_labels(edges):
        rows = [i for i, n in enumerate(src_lengths) if low <= n <= high]
        if rows:
            preds, refs = [predictions[i] for i in rows], [references[i] for i in rows]
            scores.append(BucketScore(label, len(rows), exact_match(preds, refs), token_bleu(preds, refs)))
    return scores


TASK_METRICS = ("conala", "sacrebleu", "accuracy")


def task_metric_for(data_format: str, *, has_label_map: bool) -> str | None:
    """The published metric of a data format: CoNaLa BLEU, sacreBLEU for parallel text, label
    accuracy when targets are labels (a ``label_map``); None where token exact match is the metric."""
    if data_format == "conala":
        return "conala"
    if data_format == "parallel":
        return "sacrebleu"
    if has_label_map:
        return "accuracy"
    return None


def task_scores(metric: str, predictions: Sequence[str], references: Sequence[str], *, lowercase: bool = False) -> dict:
    """``metric``'s figures for detokenized ``predictions`` against raw reference texts; ``lowercase``
    (a model trained on lower-cased targets) makes sacreBLEU case-insensitive (its ``-lc``)."""
    if metric == "conala":
        return {"metric": "conala", "conala_bleu": conala_bleu(predictions, references),
                "conala_exact_match": conala_exact_match(predictions, references)}
    if metric == "sacrebleu":
        score = sacre_bleu(predictions, references, lowercase=lowercase)
        return {"metric": "sacrebleu", "sacrebleu": score.score, "signature": score.signature}
    if metric == "accuracy":
        return {"metric": "accuracy", "accuracy": label_accuracy(predictions, references),
                "confusion": confusion_matrix(predictions, references)}
    raise ValueError(f"unknown task metric {metric!r}; valid: {', '.join(TASK_METRICS)}")


def _parsing_first(
    alternatives: list[Hypothesis], oovs: Sequence[str], tgt_vocab: Vocab, tgt_tokenizer: Tokenizer, unit: Unit,
    slots: Sequence[Slot] = (),
) -> list[Hypothesis]:
    """The finished alternatives that Python's parser accepts (never executed) first, in their
    order; judged with their placeholders restored, as they will be written."""
    def accept(h: Hypothesis) -> bool:
        tokens = tgt_vocab.decode(h.tokens, oovs=oovs)
        return h.finished and parses(tgt_tokenizer.detokenize(restore_slots(tokens, slots) if slots else tokens), unit=unit)

    return prefer_accepted(alternatives, accept)


def evaluate(
    model: Seq2Seq,
    pairs: Sequence[EncodedPair],
    references: Sequence[Sequence[str]],
    *,
    tgt_vocab: Vocab,
    tgt_tokenizer: Tokenizer,
    max_len: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    is_code: bool = True,
    edges: Sequence[int] | None = None,
    beam_size: int = 1,
    constrain: str | None = None,
    code_unit: Unit = "program",
    task_metric: str | None = None,
    raw_references: Sequence[str] | None = None,
    task_lowercase: bool = False,
    slots: Sequence[Sequence[Slot]] | None = None,
    workers: int = 1,
    no_repeat_ngram_size: int = 0,
    length_penalty: str = "none",
    alpha: float = 0.6,
) -> tuple[EvalReport, list[Hypothesis]]:
    """Decode ``pairs`` (greedy, or beam search when ``beam_size > 1``) and score against the
    reference token lists. ``constrain="python"`` prunes unbalanced-bracket prefixes during the
    search, ``"grammar"`` every prefix that Python's parser cannot complete (see
    :mod:`seq2seq.decoding.grammar`); with either, a beam prefers the finished outputs that parse.
    ``code_unit`` is what one output is for the parse rate and the grammar (``program`` or
    ``line``, see :mod:`seq2seq.data.python_syntax`).

    Exact match and BLEU compare target *tokens* (the tokenizer's units; with subwords, the words
    the units spell), so formatting differences such as spaces around operators do not count as
    errors. ``task_metric`` adds the task's published metric (see :func:`task_scores`), computed
    on the detokenized outputs against ``raw_references``, the untokenized reference texts
    (case-insensitively with ``task_lowercase``, for models trained on lower-cased targets). With ``slots`` (one tuple of
    placeholders per pair, ``data.slots``) the outputs' placeholders are restored before anything
    is scored, and ``references`` must be the targets as written. A copy model reads each pair's
    ``CopyEncoding``, and the source words it copies appear in its outputs. ``workers``: batches
    decoded at once; ``no_repeat_ngram_size``: no n-gram of that size twice in an output;
    ``length_penalty`` and ``alpha``: how a beam ranks finished outputs of different lengths (all three
    :func:`seq2seq.decoding.search.decode_sources`).
    """
    if slots is not None and len(slots) != len(pairs):
        raise ValueError(f"{len(slots)} slot tuples for {len(pairs)} pairs")
    if task_metric is not None and (raw_references is None or len(raw_references) != len(pairs)):
        raise ValueError(f"task metric {task_metric!r} needs one raw reference text per example")
    device = torch.device(device)
    if not pairs:
        raise ValueError("nothing to evaluate: the split is empty")
    if constrain not in (None, "python", "grammar"):
        raise ValueError(f"constrain={constrain!r}: expected 'python' or 'grammar'")
    if constrain and not is_code:
        raise ValueError(f"the {constrain} constraint needs a model whose target tokenizer is 'python'")
    check_no_repeat_ngram(no_repeat_ngram_size, model=model, constrain=constrain)
    # the loss of a runtime that computes no logits (CTranslate2) is its torch model's, the exported weights
    scorer = model.reference if getattr(model, "searches_itself", False) else model
    loss = mean_reference_loss(scorer, pairs, pad_index=tgt_vocab.pad_index, batch_size=batch_size, device=device)
    copies = copy_encodings(pairs) if model.copies else None
    started = time.perf_counter()
    found = decode_sources(
        model, [pair.src for pair in pairs], sos_index=tgt_vocab.sos_index, eos_index=tgt_vocab.eos_index,
        pad_index=tgt_vocab.pad_index, max_len=max_len, beam_size=beam_size,
        nbest=beam_size if constrain else 1, batch_size=batch_size, device=device,
        constraint=output_constraint(constrain, tgt_vocab, tgt_tokenizer, unit=code_unit, beam_size=beam_size,
                                     copy_words=None if copies is None else [copy.oovs for copy in copies], slots=slots),
        copy_sources=None if copies is None else [copy.src for copy in copies], workers=workers,
        no_repeat_ngram_size=no_repeat_ngram_size, length_penalty=length_penalty, alpha=alpha,
    )
    oovs = [()] * len(pairs) if copies is None else [copy.oovs for copy in copies]  # what ids >= V stand for
    if constrain:
        found = [_parsing_first(alternatives, o, tgt_vocab, tgt_tokenizer, code_unit, () if slots is None else slots[i])
                 for i, (alternatives, o) in enumerate(zip(found, oovs))]
    hypotheses = [alternatives[0] for alternatives in found]
    seconds = time.perf_counter() - started
    predicted_tokens = [tgt_vocab.decode(h.tokens, oovs=o) for h, o in zip(hypotheses, oovs)]
    if slots is not None:
        predicted_tokens = [restore_slots(tokens, found) for tokens, found in zip(predicted_tokens, slots)]
    unfinished = 0
    if constrain == "grammar":  # an output cut by max_len: its brackets closed, or its longest part that parses
        closed = [completed(tokens, tgt_tokenizer.detokenize, unit=code_unit) for tokens in predicted_tokens]
        unfinished = sum(new != old for new, old in zip(closed, predicted_tokens))
        predicted_tokens = closed
    texts = [tgt_tokenizer.detokenize(tokens) for tokens in predicted_tokens]
    if slots is not None:  # a restored value may span several tokens ("[1, 2]"): score the text's own tokens
        predicted_tokens = [tgt_tokenizer.tokenize(text) for text in texts]
    if isinstance(tgt_tokenizer, SubwordTokenizer):  # score the words the units spell, as word-level metrics do
        predicted_tokens = [tgt_tokenizer.words(tokens) for tokens in predicted_tokens]
        references = [tgt_tokenizer.words(tokens) for tokens in references]
    report = EvalReport(
        count=len(pairs),
        loss=loss,
        exact_match=exact_match(predicted_tokens, references),
        bleu=token_bleu(predicted_tokens, references),
        parse_rate=parse_rate(texts, unit=code_unit) if is_code else None,
        decode_sentences_per_s=len(pairs) / max(seconds, 1e-9),
        by_length=scores_by_length([len(p.src) for p in pairs], predicted_tokens, references, edges=edges),
        predictions=texts,
        task=task_scores(task_metric, texts, raw_references, lowercase=task_lowercase) if task_metric else {},
        coverage=_coverage_scores(hypotheses, predicted_tokens, references),
        constraint=constrain,
        no_repeat_ngram_size=no_repeat_ngram_size,
        length_penalty=length_penalty if beam_size > 1 else "none",
        alpha=alpha if beam_size > 1 and length_penalty != "none" else None,
        completed=unfinished,
        stopped_at_max_len=sum(not h.finished and len(h.tokens) >= max_len for h in hypotheses),  # not dead ends
        length_ratio=sum(map(len, predicted_tokens)) / max(1, sum(map(len, references))),
    )
    return report, hypotheses


def _coverage_scores(
    hypotheses: Sequence[Hypothesis], predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]
) -> dict:
    """What coverage is measured on (Tu et al. 2016): over- and under-translation, for attentive models."""
    if any(h.attention is None for h in hypotheses):
        return {}
    return {"repeated_ngrams": repetition_rate(predictions, references),
            "unattended_source": unattended_rate([h.attention.tolist() for h in hypotheses], threshold=0.1)}


__all__ = ["BucketScore", "EvalReport", "evaluate", "parses", "scores_by_length", "task_metric_for", "task_scores"]
