"""The comparison report's text: the paragraphs that say what was compared, the Markdown report,
and one self-contained HTML file (the table, the description and every figure embedded as a base64
PNG, no external asset, so it opens offline and can be mailed)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

from seq2seq.config import RunConfig
from seq2seq.data.corpus import Corpus

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1b1f24; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
code { background: #f2f4f7; padding: 0.1rem 0.3rem; border-radius: 3px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.35rem 0.6rem; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; font-weight: 600; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.9rem; }
"""


def recipe_note(preset: str, config: RunConfig) -> str:
    """How a Transformer preset's training differs from the shared budget's line."""
    tf, train_config = config.model.transformer, config.train
    return (f"{preset}: d_model {tf.d_model}, {tf.encoder_layers} + {tf.decoder_layers} layers, {tf.heads} heads, "
            f"FFN {tf.ffn_size}; {train_config.lr_schedule} schedule to lr {train_config.learning_rate:g} after "
            f"{train_config.warmup_steps} warm-up steps, Adam betas {list(train_config.adam_betas)}, label smoothing "
            f"{train_config.label_smoothing:g}, teacher forcing {train_config.teacher_forcing.describe()}.")


def description(corpus: Corpus, config: RunConfig, split: str, notes: list[str], *, outputs_table: bool = True) -> list[str]:
    """The paragraphs that say what was compared and how (the same in Markdown and HTML);
    ``outputs_table``: whether the report has the second table (not for label tasks)."""
    ban = config.decode.no_repeat_ngram_size
    second = ("Second table: output tokens over reference tokens and the share of outputs that ran to the length limit "
              "without ending (a decoder that loses its place loops until there; corpus BLEU punishes every extra token, "
              "exact match counts such an output once); for attentive models, the share of outputs repeating an n-gram "
              "(2-4) more often than their reference, and of source tokens never attended above 0.1.")
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in corpus.examples.items())
    return [
        f"Data: {config.data.format} ({sizes}); vocabularies: source {len(corpus.src_vocab):,}, target {len(corpus.tgt_vocab):,}.",
        f"Equal budget: {config.train.epochs} epochs max (early stopping patience {config.train.early_stopping_patience}), "
        f"batch {config.train.batch_size}, Adam lr {config.train.learning_rate}, teacher forcing {config.train.teacher_forcing.describe()}, "
        f"clip {config.train.clip_norm}, seed {config.train.seed}"
        + (f", wall-clock cap {config.train.time_budget_s:.0f} s per model" if config.train.time_budget_s else "")
        + (f", {config.train.max_steps:,} optimizer steps max" if config.train.max_steps else "") + ".",
        *notes,
        f"Scores on the `{split}` split with greedy decoding{f' (no repeated {ban}-grams)' if ban else ''}; "
        "the task's own metric where it has one "
        "(official CoNaLa BLEU, sacreBLEU on detokenized text, label accuracy); exact match and BLEU over target tokens; "
        "'parses' = share of outputs accepted by `ast.parse` (never executed). "
        "EM / BLEU / accuracy len = exact match (token BLEU for translation and CoNaLa, accuracy for labels) by source length in tokens. Gradient norm: the L2 norm of all gradients "
        f"before clipping at {config.train.clip_norm:g}, its mean over training steps and its largest value; "
        "'steps clipped' = share of steps where it exceeded the threshold." + (f" {second}" if outputs_table else ""),
    ]


def markdown_report(*, command: str, paragraphs: Sequence[str], table: str, figures: Sequence[Path]) -> str:
    """The report as Markdown: the command, ``paragraphs``, the ``table`` and the figures, linked."""
    lines = ["# Architecture comparison", "", f"Command: `{command}`", "", *paragraphs, "", table, ""]
    lines += [f"![{path.stem.replace('_', ' ')}]({path.name})" for path in figures]
    return "\n".join([*lines, ""])


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = escape(path.stem.replace("_", " "))
    return f'<figure><img src="data:image/png;base64,{data}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th scope=\"col\">{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<div class=\"table-wrap\"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def render_html(
    *,
    title: str,
    command: str,
    paragraphs: Sequence[str],
    tables: Sequence[tuple[Sequence[str], Sequence[Sequence[str]]]],
    figures: Sequence[Path],
) -> str:
    """The report page; ``tables`` are (header, rows) pairs of cell texts, ``figures`` PNG files,
    read and embedded."""
    text = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    images = "".join(_image(path) for path in figures)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>Command: <code>{escape(command)}</code></p>{text}"
        + "".join(_table(header, rows) for header, rows in tables) +
        f"<h2>Figures</h2>{images}</body></html>\n"
    )
