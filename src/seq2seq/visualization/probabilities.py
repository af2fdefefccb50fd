"""Decoder choices as figures: the next-token distribution at one step, and the beam's n-best list."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def next_token_chart(
    probabilities: np.ndarray, vocab_tokens: Sequence[str], *, chosen: int | None = None, k: int = 10, title: str = ""
) -> Figure:
    """Horizontal bars of the ``k`` most probable next tokens, most probable on top.

    ``probabilities`` [V] is one step's distribution over the output vocabulary
    (``vocab_tokens[i]`` names entry i); ``chosen`` (a token id) is drawn in a second colour,
    and added below the top k if it is not among them, so the decoder's choice is always shown.
    """
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim != 1 or probabilities.shape[0] != len(vocab_tokens):
        raise ValueError(f"probabilities {probabilities.shape} do not match a vocabulary of {len(vocab_tokens)} tokens")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    top = [int(i) for i in np.argsort(-probabilities, kind="stable")[:k]]
    if chosen is not None and chosen not in top:
        top.append(int(chosen))
    labels = [_shorten(vocab_tokens[i], 24) for i in top]
    colours = ["tab:orange" if i == chosen else "tab:blue" for i in top]
    fig, ax = plt.subplots(figsize=(6.0, 1.0 + 0.3 * len(top)))
    positions = np.arange(len(top))
    ax.barh(positions, probabilities[top], color=colours)
    ax.set_yticks(positions, labels=labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("probability")
    for position, value in zip(positions, probabilities[top]):
        ax.text(min(value + 0.01, 0.9), position, f"{value:.3f}", va="center", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def nbest_chart(outputs: Sequence[str], scores: Sequence[float], *, marks: Sequence[str] = (), title: str = "") -> Figure:
    """Horizontal bars of the n-best outputs' scores (log-probabilities, <= 0), best on top.

    ``marks`` optionally adds a short note after each output (e.g. "parses" / "syntax error").
    """
    if len(outputs) != len(scores) or not outputs:
        raise ValueError(f"need one score per output and at least one output, got {len(outputs)} outputs and {len(scores)} scores")
    if marks and len(marks) != len(outputs):
        raise ValueError(f"need one mark per output, got {len(marks)} for {len(outputs)} outputs")
    labels = [f"{rank}. {_shorten(text, 60)}" + (f"  [{marks[rank - 1]}]" if marks else "")
              for rank, text in enumerate(outputs, start=1)]
    fig, ax = plt.subplots(figsize=(9.0, 1.0 + 0.4 * len(outputs)))
    positions = np.arange(len(outputs))
    ax.barh(positions, scores, color="tab:blue")
    ax.set_yticks(positions, labels=labels, fontsize=8, family="monospace")
    ax.invert_yaxis()
    ax.set_xlabel("score (log-probability; closer to 0 is better)")
    for position, value in zip(positions, scores):
        ax.text(value, position, f" {value:.3f}", va="center", ha="right" if value < 0 else "left", fontsize=7, color="white")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
