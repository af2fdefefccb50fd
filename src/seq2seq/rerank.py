"""n-best reranking (Yin & Neubig 2019, "Reranking for Neural Semantic Parsing", ACL).

A beam's best hypothesis by model score is often not its best output: beam search favours short
outputs, and the model cannot see whether the code it wrote says what the input asked. The
reranker scores every candidate of the n-best list by a weighted sum of features and picks the
highest; the weights are tuned on the validation split for the task's own metric.

Features (each one a number per candidate; the model score's weight is fixed at 1):

- ``model``: log p(code | intent), the forward model's score (what beam search ranks by);
- ``reconstruction``: log p(intent | code) from a reverse (code -> NL) model trained by this
  toolkit on the same data (``data.reverse: true``): does the code explain the intent?
- ``length``: the number of code tokens (a bonus or a penalty per token, against the beam's bias);
- ``parses``: 1 when Python's parser accepts the code (never executed), else 0;
- ``overlap``: the share of the intent's code-like words (quoted values, identifiers with ``_``,
  ``.`` or digits, camelCase) that appear in the code: the matching feature;
- ``finished``: 1 when the search ended the candidate with ``<eos>``, 0 when it was cut at the
  length limit (the beam lists finished candidates first; a raw score does not know the difference).

The report's first row is the beam's own first candidate, untuned.

Tuning is coordinate ascent over a grid of weights, a few rounds, each feature in turn, keeping a
change only when it raises the metric (ties keep the smaller weight), as rerankers tuned by MERT-like
line search do, on a grid instead of exact lines because the metric (corpus BLEU) is not linear.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

FEATURES = ("model", "reconstruction", "length", "parses", "overlap", "finished")
GRID = (-5.0, -3.0, -2.0, -1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
_CODE_WORD = re.compile(r"^(['\"`].*['\"`]|.*[_.\d].*|.*[a-z][A-Z].*)$")
_CODE_UNITS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|'[^']*'|\"[^\"]*\"")


@dataclass(frozen=True)
class Candidate:
    """One output of an n-best list with its feature values."""

    text: str  # the code, placeholders restored
    features: dict[str, float]


def overlap(source_words: Sequence[str], code: str) -> float:
    """The share of the source's code-like words (quoted values, identifiers with ``_``, ``.``,
    digits or camelCase) that occur in ``code``; 1.0 when the source has none."""
    wanted = {word.strip("`'\"") for word in source_words if _CODE_WORD.match(word)} - {""}
    if not wanted:
        return 1.0
    units = set(_CODE_UNITS.findall(code)) | {code}
    found = sum(1 for word in wanted if word in units or word in code)
    return found / len(wanted)


def score(candidate: Candidate, weights: dict[str, float]) -> float:
    return sum(weights.get(name, 0.0) * value for name, value in candidate.features.items())


def choose(nbest: Sequence[Sequence[Candidate]], weights: dict[str, float]) -> list[str]:
    """Per input, the text of its highest-scoring candidate (the first one on a tie: the beam's order)."""
    chosen = []
    for candidates in nbest:
        best = max(range(len(candidates)), key=lambda i: (score(candidates[i], weights), -i))
        chosen.append(candidates[best].text)
    return chosen


def tune(
    nbest: Sequence[Sequence[Candidate]],
    metric: Callable[[list[str]], float],
    *,
    features: Sequence[str],
    grid: Sequence[float] = GRID,
    rounds: int = 3,
) -> tuple[dict[str, float], float]:
    """Weights for ``features`` (``model`` fixed at 1) that maximise ``metric`` of the chosen
    texts on this n-best set; returns them and the metric they reach."""
    weights = {name: 0.0 for name in features}
    weights["model"] = 1.0
    best = metric(choose(nbest, weights))
    for _ in range(rounds):
        changed = False
        for name in features:
            if name == "model":
                continue
            for value in sorted(grid, key=abs):
                trial = {**weights, name: value}
                result = metric(choose(nbest, trial))
                if result > best + 1e-9:
                    best, weights, changed = result, trial, True
        if not changed:
            break
    return weights, best


@torch.inference_mode()
def reconstruction_scores(
    reverse, codes: Sequence[str], sources: Sequence[str], *, batch_size: int = 64
) -> list[float]:
    """log p(source | code) under ``reverse``, a loaded code -> NL run (``LoadedRun``), teacher-forced
    and batched; a code its tokenizer makes empty is read as the one token ``<unk>``."""
    from seq2seq.data.batching import CopyEncoding, EncodedPair, bucketed_batches
    from seq2seq.decoding.scoring import score_references

    src_vocab, tgt_vocab = reverse.src_vocab, reverse.tgt_vocab
    pairs = []
    for code, source in zip(codes, sources):
        code_tokens = reverse.src_tokenizer.tokenize(code) or ["<unk>"]
        words = reverse.tgt_tokenizer.tokenize(source)
        copy = None
        if reverse.model.copies:
            src_copy, oovs = tgt_vocab.encode_copy_source(code_tokens)
            copy = CopyEncoding(src_copy, tgt_vocab.encode(words, add_sos=True, add_eos=True, oovs=oovs), oovs)
        pairs.append(EncodedPair(src=src_vocab.encode(code_tokens),
                                 tgt=tgt_vocab.encode(words, add_sos=True, add_eos=True), copy=copy))
    scores = [0.0] * len(pairs)
    for batch in bucketed_batches(pairs, batch_size=batch_size, pad_index=tgt_vocab.pad_index, shuffle=False,
                                  copy=reverse.model.copies):
        batch = batch.to(reverse.device)
        found = score_references(reverse.model, batch.src, batch.src_lengths, batch.src_mask, batch.tgt,
                                 pad_index=tgt_vocab.pad_index, src_copy=batch.src_copy)
        for index, value in zip(batch.indices, found.tolist()):
            scores[index] = value
    return scores


@dataclass
class RerankReport:
    """What ``seq2seq rerank`` measured: the metric on the tuning and the evaluated split for the
    beam's own order (``model`` only), each feature added alone, and all of them, with the weights."""

    metric: str
    beam_size: int
    constrain: str | None
    rows: list[dict]  # {"features": [...], "weights": {...}, "tune": float, "test": float}
    predictions: list[str]  # the evaluated split's outputs under all the features

    def table(self, *, tune_split: str, split: str) -> str:
        lines = [f"| features | {self.metric} on {tune_split} (tuned) | {self.metric} on {split} | parses | weights |",
                 "|---|---|---|---|---|"]
        for row in self.rows:
            weights = ", ".join(f"{k} {v:g}" for k, v in row["weights"].items() if v)
            parsed = "" if row.get("parse_rate") is None else f"{row['parse_rate']:.1%}"
            lines.append(f"| {' + '.join(row['features'])} | {row['tune']:.2f} | {row['test']:.2f} | {parsed} | {weights} |")
        return "\n".join(lines)


def rerank_run(
    run_dir: Path,
    reverse_dir: Path | Sequence[Path],
    *,
    ensemble: Sequence[Path] = (),
    split: str = "test",
    tune_split: str = "valid",
    beam_size: int = 5,
    constrain: str | None = None,
    device: str = "cpu",
    output: Path | None = None,
) -> RerankReport:
    """Decode ``tune_split`` and ``split`` of ``run_dir``'s data into n-best lists of ``beam_size``,
    tune the feature weights on ``tune_split`` and report ``split``; ``reverse_dir`` is a run of
    the same data with ``data.reverse: true``, or several, whose reconstruction scores are averaged.
    With ``ensemble`` (more forward runs of the same data) the n-best lists come from the ensemble
    and ``model`` is its score. Writes ``rerank_<split>_beam<N>[_<constraint>][_ensemble…]_reverse-<hash>.json``
    into the run (the hash names the reverse models), so that no other setting overwrites it."""
    from seq2seq.checkpoint import load_for_decoding
    from seq2seq.pipeline import ensemble_tag, run_corpus, runs_hash
    from seq2seq.devices import resolve_device
    from seq2seq.evaluation.metrics import parse_rate
    from seq2seq.run_files import atomic_write_text
    from seq2seq.translator import Translator

    forward = Translator.from_run_dir(run_dir, device=device, ensemble=ensemble)
    reverse_dirs = [reverse_dir] if isinstance(reverse_dir, (str, Path)) else list(reverse_dir)
    if not reverse_dirs:
        raise ValueError("reranking needs at least one reverse model (--reverse RUN)")
    reverses = []
    for folder in reverse_dirs:
        reverse = load_for_decoding(folder, device=resolve_device(device))
        if not reverse.config.data.reverse:
            raise ValueError(f"{folder}: not a reverse model: train it with data.reverse: true on the same data")
        if reverse.config.data.format != forward.run.config.data.format:
            raise ValueError(f"{folder}: a reverse model of {reverse.config.data.format} data, but {run_dir} was "
                             f"trained on {forward.run.config.data.format} data: expected the same data")
        reverses.append(reverse)
    if split == tune_split:
        raise ValueError(f"--split {split} is the split the weights are tuned on: report another one")
    if beam_size < 2:
        raise ValueError(f"reranking needs an n-best list: --beam must be at least 2, got {beam_size}")
    config = forward.run.config
    corpus = run_corpus(forward.run)
    for name in (split, tune_split):
        if not corpus.examples.get(name):
            raise ValueError(f"split {name!r} of this run's data is empty or unknown; it has {sorted(corpus.examples)}")
    metric_name, metric = _task_metric(config, corpus)
    lists = {}
    for name in (tune_split, split):
        sources = [example.src for example in corpus.examples[name]]
        found = forward.generate_nbest(sources, beam_size=beam_size, nbest=beam_size, constrain=constrain or "none")
        codes = [generation.text for generations in found for generation in generations]
        explainers = [g.source for generations in found for g in generations]
        explained = [reconstruction_scores(reverse, codes, explainers) for reverse in reverses]
        values = iter([sum(column) / len(column) for column in zip(*explained)])
        lists[name] = [[Candidate(g.text, {"model": g.score, "reconstruction": next(values), "length": float(len(g.tokens)),
                                           "parses": float(bool(g.parses)), "overlap": overlap(source.split(), g.text),
                                           "finished": float(g.finished)})
                        for g in generations] for source, generations in zip(sources, found)]
    first = [candidates[0].text for candidates in lists[split]]
    rows = [{"features": ["beam's first"], "weights": {}, "tune": metric([c[0].text for c in lists[tune_split]], tune_split),
             "test": metric(first, split), "parse_rate": None if not forward.is_code else parse_rate(first, unit=forward.code_unit)}]
    for features in (("model",), *[("model", name) for name in FEATURES[1:]], FEATURES):
        weights, tuned = tune(lists[tune_split], lambda texts: metric(texts, tune_split), features=features)
        chosen = choose(lists[split], weights)
        rows.append({"features": list(features), "weights": weights, "tune": tuned, "test": metric(chosen, split),
                     "parse_rate": None if not forward.is_code else parse_rate(chosen, unit=forward.code_unit)})
    report = RerankReport(metric=metric_name, beam_size=beam_size, constrain=constrain, rows=rows,
                          predictions=choose(lists[split], rows[-1]["weights"]))
    summary = {"split": split, "tune_split": tune_split, "reverse": [str(folder) for folder in reverse_dirs],
               "ensemble": [str(folder) for folder in ensemble], "metric": metric_name,
               "beam_size": beam_size, "constrain": constrain, "rows": rows}
    name = (f"rerank_{split}_beam{beam_size}" + (f"_{constrain}" if constrain else "") + ensemble_tag(run_dir, ensemble)
            + f"_reverse-{runs_hash(reverse_dirs)}")
    atomic_write_text(run_dir / f"{name}.json", json.dumps(summary, indent=2))
    if output is not None:
        atomic_write_text(output, "".join(text.replace("\n", "\\n") + "\n" for text in report.predictions))
    return report


def _task_metric(config, corpus) -> tuple[str, Callable[[list[str], str], float]]:
    """The metric to tune and report: the task's published one where it has one (official CoNaLa
    BLEU, sacreBLEU), else token exact match in % (Django)."""
    from seq2seq.evaluation.evaluate import task_metric_for, task_scores
    from seq2seq.evaluation.metrics import exact_match

    data = config.data
    task = task_metric_for(data.format, has_label_map=data.label_map is not None)
    if task in ("conala", "sacrebleu"):
        key = "conala_bleu" if task == "conala" else "sacrebleu"

        def published(texts: list[str], split: str) -> float:
            references = [example.tgt for example in corpus.examples[split]]
            return task_scores(task, texts, references, lowercase=data.lowercase_tgt)[key]

        return ("official CoNaLa BLEU" if task == "conala" else "sacreBLEU"), published

    def matches(texts: list[str], split: str) -> float:
        return 100 * exact_match([corpus.tgt_tokenizer.tokenize(text) for text in texts], corpus.reference_tokens(split))

    return "exact match %", matches


__all__ = ["FEATURES", "Candidate", "RerankReport", "choose", "overlap", "reconstruction_scores", "rerank_run", "score", "tune"]
