"""The figures of ``seq2seq compare``'s report: loss curves, quality by input length (the seeds'
mean), gradient norms, and one attention heatmap per attentive model (each head too, where it has
heads), written as PNG files beside the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt

from seq2seq.data.corpus import Corpus
from seq2seq.visualization.attention import attention_heatmap, head_heatmaps
from seq2seq.visualization.curves import grad_norm_curves, loss_curves, quality_by_length

if TYPE_CHECKING:  # compare imports this module
    from seq2seq.compare import Comparison
    from seq2seq.compare_runs import ModelResult


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (steps and epochs)."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_figures(comparison: Comparison, corpus: Corpus, out_dir: Path, split: str, *, clip: float) -> list[Path]:
    """Write the report's figures into ``out_dir``; return their paths, in report order."""
    train_curves, valid_curves, norm_curves = {}, {}, {}
    for r in comparison.results:
        records = read_metrics(r.run_dir)
        steps = [m for m in records if m["kind"] == "step"]
        epochs = [m for m in records if m["kind"] == "epoch"]
        train_curves[r.preset] = ([m["step"] for m in steps], [m["train_loss"] for m in steps])
        valid_curves[r.preset] = ([m["epoch"] for m in epochs], [m["valid_loss"] for m in epochs])
        normed = [m for m in steps if "grad_norm_mean" in m]
        norm_curves[r.preset] = ([m["step"] for m in normed], [m["grad_norm_mean"] for m in normed],
                                 [m["grad_norm_max"] for m in normed])
    figures = {"loss_curves.png": loss_curves(train_curves, valid_curves)}
    buckets = [b.label for b in comparison.results[0].test.by_length]
    label, name = comparison.length_metric
    scale = 1 if name == "bleu" else 100
    scores = {r.preset: [scale * value for value in comparison.by_length_means(r.preset, name)] for r in comparison.results}
    metric = "token BLEU" if name == "bleu" else f"{'accuracy' if label == 'accuracy' else 'exact match'} (%)"
    figures["quality_by_length.png"] = quality_by_length(buckets, scores, metric=metric)
    figures["grad_norm.png"] = grad_norm_curves(norm_curves, clip=clip)
    for r in comparison.results:  # one heatmap per model with attention (each head too, where it has heads)
        figure = _attention_figure(r, corpus, split)
        if figure is not None:
            figures[f"attention_{r.preset}.png"] = figure
    written = []
    for name, figure in figures.items():
        figure.savefig(out_dir / name, dpi=110)
        plt.close(figure)
        written.append(out_dir / name)
    return written


def _attention_figure(result: ModelResult, corpus: Corpus, split: str):
    from seq2seq.translator import Translator

    translator = Translator.from_run_dir(result.run_dir)
    # A long example shows best what attention aligns: take the longest test source of at most 30 tokens.
    candidates = [i for i, (src, _) in enumerate(corpus.tokens[split]) if len(src) <= 30]
    index = max(candidates or range(len(corpus.tokens[split])), key=lambda i: len(corpus.tokens[split][i][0]))
    generation = translator.generate([corpus.examples[split][index].src], heads=True)[0]
    out_tokens = generation.tokens + (["<eos>"] if generation.finished else [])
    if generation.attention is None:  # a model without attention (rnn, lstm)
        return None
    title = f"{result.preset}: {generation.text}"
    if generation.heads is not None:  # multi-head attention or a Transformer: each head and their mean
        return head_heatmaps(generation.heads.numpy()[:, : len(out_tokens)], generation.source_tokens, out_tokens, title=title)
    weights = generation.attention.numpy()[: len(out_tokens)]
    return attention_heatmap(weights, generation.source_tokens, out_tokens, title=title)
