"""``seq2seq compare``: train several presets on the same data with equal budgets and compare them.

Equal budget means the same data, vocabulary, batches, seed, number of epochs and (if set)
wall-clock cap and optimizer-step cap per model. The report gives parameters, speed, validation perplexity, test
exact match / BLEU / parse rate, and exact match by source-length bucket, where the fixed
context vector of models without attention is expected to fall behind on long inputs.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seq2seq.compare_figures import write_figures
from seq2seq.compare_jobs import RunTask, train_in_parallel
from seq2seq.compare_report import description, markdown_report, recipe_note, render_html
from seq2seq.compare_runs import ModelResult, comparison_run_dirs, run_config, train_one
from seq2seq.config import PRESETS, build_config
from seq2seq.data.corpus import build_corpus
from seq2seq.run_files import atomic_write_text

logger = logging.getLogger(__name__)

# The default budget of `seq2seq compare`: small models, a higher learning rate and four
# epochs, so that the three models train in 3-8 minutes on 2 idle CPU cores. The budget
# is counted in epochs, not seconds, so that the table is the same on a busy machine (only
# the speed columns change). Anything here can be changed with --set, e.g. a wall-clock cap
# per model with --set train.time_budget_s=120.
COMPARE_DEFAULTS: list[str] = [
    "model.encoder.embedding_size=64",
    "model.decoder.embedding_size=64",
    "model.encoder.hidden_size=128",
    "model.decoder.hidden_size=128",
    "model.decoder.attention_size=128",
    "train.learning_rate=0.003",
    "train.epochs=4",
]


# A Transformer preset trains with Vaswani et al.'s recipe (inverse-square-root warm-up, Adam
# (0.9, 0.98), label smoothing 0.1) at a size near the RNNs' budget above: d_model 128, 2 + 2
# layers, 4 heads, FFN 512. At the RNNs' constant 3e-3 without warm-up, the `transformer` preset
# (d_model 256, 3 + 3 layers) did not learn the built-in task (validation perplexity 104 after its
# first epoch, where lstm-attention is at 9.5). Later entries win over COMPARE_DEFAULTS.
TRANSFORMER_COMPARE_DEFAULTS: list[str] = [
    "model.transformer.d_model=128",
    "model.transformer.ffn_size=512",
    "model.transformer.encoder_layers=2",
    "model.transformer.decoder_layers=2",
    "train.learning_rate=0.001",
    "train.lr_schedule=inverse_sqrt",
    "train.warmup_steps=400",
    "train.adam_betas=[0.9, 0.98]",
    "train.label_smoothing=0.1",
]


def is_transformer(preset: str) -> bool:
    return PRESETS.get(preset, {}).get("architecture") == "transformer"


def compare_defaults(base: dict[str, Any] | None, preset: str | None = None) -> list[str]:
    """The :data:`COMPARE_DEFAULTS` (and for a Transformer ``preset`` the
    :data:`TRANSFORMER_COMPARE_DEFAULTS`) that a config file ``base`` does not set itself (the file
    wins; ``--set`` overrides win over both)."""

    def is_set(dotted: str) -> bool:
        node: Any = base or {}
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
        return True

    defaults = COMPARE_DEFAULTS + (TRANSFORMER_COMPARE_DEFAULTS if preset and is_transformer(preset) else [])
    return [default for default in defaults if not is_set(default.split("=", 1)[0])]


# The task's published metric (see evaluation.evaluate.task_scores): column name, key in
# EvalReport.task, and cell format.
TASK_COLUMNS: dict[str, tuple[str, str, str]] = {
    "conala": ("CoNaLa BLEU", "conala_bleu", "{:.2f}"),
    "sacrebleu": ("sacreBLEU", "sacrebleu", "{:.2f}"),
    "accuracy": ("accuracy", "accuracy", "{:.1%}"),
}


@dataclass
class Comparison:
    results: list[ModelResult] = field(default_factory=list)  # per preset, its first seed's run
    test_split: str = "test"
    command: str = ""
    # preset -> every seed's run (``--seeds N``); the table then gives mean ± sample standard deviation.
    seeds: dict[str, list[ModelResult]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # how a preset's training differs from the shared budget

    def _runs(self, preset: str) -> list[ModelResult]:
        """Every seed's run of ``preset`` (one without ``--seeds``)."""
        return self.seeds.get(preset) or [r for r in self.results if r.preset == preset]

    def _spread(self, preset: str, value: Any, text: Any) -> str:
        """``text(value(run))`` for one seed; ``mean ± sd`` over the seeds when there are several."""
        values = [value(r) for r in self._runs(preset)]
        if len(values) == 1:
            return text(values[0])
        return f"{text(statistics.mean(values))} ± {text(statistics.stdev(values))}"

    def by_length_means(self, preset: str, name: str) -> list[float]:
        """The mean over ``preset``'s seeds of each length bucket's score ``name`` (a BucketScore
        field), bucket by bucket in its first seed's order (every seed is scored on the same test set,
        so in the same buckets)."""
        return [statistics.mean(_bucket(run, bucket.label, name) for run in self._runs(preset))
                for bucket in self._runs(preset)[0].test.by_length]

    @property
    def task(self) -> str | None:
        """The task's published metric (a key of TASK_COLUMNS), or None for exact-match tasks."""
        return self.results[0].test.task.get("metric") if self.results else None

    @property
    def length_metric(self) -> tuple[str, str]:
        """(label, BucketScore field) of quality by source length: exact match where whole outputs
        are right or wrong (generated code, labels), token BLEU where partial credit is the metric
        (translation, CoNaLa)."""
        if self.task in ("sacrebleu", "conala"):
            return "BLEU", "bleu"
        return ("accuracy" if self.task == "accuracy" else "EM"), "exact_match"

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        """The comparison table as a header and rows of cell texts (for Markdown and HTML).

        Columns follow the task: its own metric first; exact match and token BLEU only where they
        say something beyond it (not for labels, whose exact match is the accuracy, nor for
        translation); 'parses' only for code."""
        buckets = [b.label for b in self.results[0].test.by_length] if self.results else []
        task, (length_label, length_field) = self.task, self.length_metric
        is_code = bool(self.results) and self.results[0].test.parse_rate is not None
        token_scores = task not in ("accuracy", "sacrebleu")
        header = ["model", "parameters", "train tok/s", "s/epoch", "epochs", "valid ppl"]
        header += [TASK_COLUMNS[task][0]] if task else []
        header += ["exact match", "BLEU"] if token_scores else []
        header += ["parses"] if is_code else []
        header += ["grad norm mean / max", "steps clipped"]
        header += [f"{length_label} len {b}" for b in buckets]
        rows = []
        for r in self.results:
            spread = lambda value, text, preset=r.preset: self._spread(preset, value, text)  # noqa: E731
            cells = [
                r.preset + (f" ({len(self.seeds[r.preset])} seeds)" if len(self.seeds.get(r.preset, [])) > 1 else ""),
                f"{r.parameters:,}", spread(lambda m: m.train_tokens_per_s, "{:,.0f}".format),
                spread(lambda m: m.seconds_per_epoch, "{:.1f}".format), spread(lambda m: m.epochs, "{:.2g}".format),
                spread(lambda m: m.valid_perplexity, "{:.3f}".format),
            ]
            if task:
                _, key, fmt = TASK_COLUMNS[task]
                cells += [spread(lambda m: m.test.task[key], fmt.format)]
            if token_scores:
                cells += [spread(lambda m: m.test.exact_match, "{:.1%}".format), spread(lambda m: m.test.bleu, "{:.2f}".format)]
            if is_code:
                cells += [spread(lambda m: m.test.parse_rate, "{:.1%}".format)]
            largest = max(m.grad_norm_max for m in self._runs(r.preset))  # the largest of any seed's steps
            cells += [spread(lambda m: m.grad_norm_mean, "{:.2f}".format) + f" / {largest:.2f}",
                      spread(lambda m: m.clipped_fraction, "{:.0%}".format)]
            text = "{:.2f}".format if length_field == "bleu" else "{:.1%}".format
            counts = {b.label: b.count for b in r.test.by_length}
            cells += [spread(lambda m, b=b: _bucket(m, b, length_field), text) + f" (n={counts[b]})" if b in counts else "-"
                      for b in buckets]
            rows.append(cells)
        return header, rows

    def output_rows(self) -> tuple[list[str], list[list[str]]]:
        """How the outputs go wrong, as a second table (empty for label tasks): output length over
        reference length and outputs that ran to max_len (a decoder that loses its place loops there;
        corpus BLEU punishes every extra token where exact match counts the output once), and for
        attentive models repetition beyond the reference's and source tokens never attended above 0.1
        (over- and under-translation, Tu et al. 2016)."""
        if self.task == "accuracy" or not self.results:
            return [], []
        attentive = any(r.test.coverage for r in self.results)
        header = ["model", "output/reference length", "outputs stopped at max_len"]
        header += ["repeating an n-gram (2-4)", "source never attended > 0.1"] if attentive else []
        rows = []
        for r in self.results:
            spread = lambda value, text, preset=r.preset: self._spread(preset, value, text)  # noqa: E731
            cells = [r.preset, spread(lambda m: m.test.length_ratio, "{:.3f}".format),
                     spread(lambda m: m.test.stopped_at_max_len / m.test.count, "{:.1%}".format)]
            if attentive:
                cells += [spread(lambda m, key=key: m.test.coverage[key], "{:.1%}".format) if r.test.coverage else "-"
                          for key in ("repeated_ngrams", "unattended_source")]
            rows.append(cells)
        return header, rows

    def table_markdown(self) -> str:
        """The comparison table, then (where there is one) the table of :meth:`output_rows`."""
        tables = [self.table_rows(), self.output_rows()]
        return "\n\n".join(_markdown(header, rows) for header, rows in tables if header)

    def to_json(self) -> list[dict[str, Any]]:
        """One record per preset (its first seed), with every seed's record under ``seeds``."""
        records = []
        for r in self.results:
            record = _run_record(r)
            record["seeds"] = [_run_record(run) for run in self.seeds.get(r.preset, [r])]
            records.append(record)
        return records


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def _bucket(run: ModelResult, label: str, name: str) -> float:
    """The score ``name`` of ``run``'s test length bucket ``label``."""
    for bucket in run.test.by_length:
        if bucket.label == label:
            return getattr(bucket, name)
    raise ValueError(f"{run.run_dir}: no test length bucket {label!r} (its buckets: "
                     f"{', '.join(b.label for b in run.test.by_length)}); the seeds were scored on different test sets")


def _run_record(r: ModelResult) -> dict[str, Any]:
    return {
        "preset": r.preset, "parameters": r.parameters, "epochs": r.epochs,
        "train_tokens_per_s": r.train_tokens_per_s, "seconds_per_epoch": r.seconds_per_epoch,
        "valid_perplexity": r.valid_perplexity, "test": r.test.summary(), "run_dir": str(r.run_dir),
        "grad_norm_mean": r.grad_norm_mean, "grad_norm_max": r.grad_norm_max, "clipped_fraction": r.clipped_fraction,
    }


def run_comparison(
    base: dict[str, Any], overrides: list[str], *, presets: list[str], out_dir: Path, overwrite: bool = False,
    resume: bool = False, show_progress: bool = True, command: str = "", seeds: int = 1, defaults: bool = False,
    jobs: int = 1,
) -> Comparison:
    """Train ``presets`` one after another into ``out_dir/<preset>`` and write the report there.
    ``resume``: a run already in ``out_dir`` continues where it stopped (a finished one trains no
    further and is evaluated again), provided its settings and vocabularies match; ``overwrite``
    replaces it instead; neither: an existing run is an error.
    With ``seeds > 1`` each preset trains once per seed (``train.seed``, ``train.seed + 1``, ...) into
    ``out_dir/<preset>/seed<k>``, with the same data and vocabulary; the table reports mean ± sd.
    ``defaults``: put :func:`compare_defaults` (per preset) under ``overrides``, as ``seq2seq compare`` does.
    ``jobs`` > 1: the runs train that many at a time in worker processes (:mod:`seq2seq.compare_jobs`),
    each with ``train.threads`` = torch's threads // ``jobs`` unless ``train.threads`` is set."""
    if seeds < 1 or jobs < 1:
        raise ValueError(f"seeds and jobs must be at least 1, got {seeds} and {jobs}")
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the runs in out_dir, or replace them")

    def preset_overrides(preset: str) -> list[str]:
        return [*compare_defaults(base, preset), *overrides] if defaults else overrides

    # the shared budget's line describes the recurrent presets (a Transformer's recipe is a note of its own)
    described = next((preset for preset in presets if not is_transformer(preset)), presets[0])
    shared = build_config(base=base, preset=described, overrides=preset_overrides(described), source="compare")
    first_seed = shared.train.seed
    run_dirs = comparison_run_dirs(out_dir, presets, seeds=seeds, first_seed=first_seed, resume=resume, overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(shared.data, shared.vocab)
    split = "test" if corpus.encoded.get("test") else "valid"
    comparison = Comparison(test_split=split, command=command)
    comparison.notes = [
        recipe_note(preset, build_config(base=base, preset=preset, overrides=preset_overrides(preset), source=f"compare/{preset}"))
        for preset in presets if is_transformer(preset)
    ]
    started = time.perf_counter()
    if jobs > 1:
        threads = [] if shared.train.threads else [f"train.threads={max(1, torch.get_num_threads() // jobs)}"]
        tasks = []
        for (preset, seed), run_dir in run_dirs.items():
            config, label = run_config(base, preset_overrides(preset) + threads, preset, seed if seeds > 1 else None)
            tasks.append(RunTask(label, config, run_dir))
        train_in_parallel(tasks, corpus, jobs=jobs, resume=resume, overwrite=overwrite)
        resume, overwrite = True, False  # every run has trained: the loop below loads and evaluates them
    for preset in presets:
        runs = []
        for seed in range(first_seed, first_seed + seeds):
            runs.append(train_one(base, preset_overrides(preset), preset, run_dirs[preset, seed], corpus, overwrite=overwrite, resume=resume,
                                  show_progress=show_progress, split=split, seed=seed if seeds > 1 else None))
        comparison.results.append(runs[0])
        comparison.seeds[preset] = runs
    logger.info("trained %d models in %.0f s", len(presets) * seeds, time.perf_counter() - started)
    figures = write_figures(comparison, corpus, out_dir, split, clip=shared.train.clip_norm)
    paragraphs = description(corpus, shared, split, comparison.notes, outputs_table=bool(comparison.output_rows()[0]))
    atomic_write_text(out_dir / "comparison.md", markdown_report(
        command=comparison.command, paragraphs=paragraphs, table=comparison.table_markdown(), figures=figures))
    atomic_write_text(out_dir / "comparison.html", render_html(
        title="Architecture comparison", command=comparison.command, paragraphs=paragraphs,
        tables=[table for table in (comparison.table_rows(), comparison.output_rows()) if table[0]], figures=figures,
    ))
    atomic_write_text(out_dir / "results.json", json.dumps(comparison.to_json(), indent=2))
    return comparison
