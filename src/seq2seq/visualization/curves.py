"""Training curves and quality-by-length bars (plain numbers in, figures out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def loss_curves(
    train: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    valid: Mapping[str, tuple[Sequence[float], Sequence[float]]],
) -> Figure:
    """Left: training loss per logged step; right: validation loss per epoch. One line per model.

    Each mapping is ``name -> (x values, losses)``.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, (steps, losses) in train.items():
        left.plot(steps, losses, label=name)
    for name, (epochs, losses) in valid.items():
        right.plot(epochs, losses, marker="o", label=name)
    left.set(title="training loss", xlabel="step", ylabel="cross-entropy per token")
    right.set(title="validation loss", xlabel="epoch", ylabel="cross-entropy per token")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def quality_by_length(buckets: Sequence[str], scores: Mapping[str, Sequence[float]], *, metric: str = "exact match (%)") -> Figure:
    """Grouped bars: one group per source-length bucket, one bar per model."""
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(scores), 1)
    positions = np.arange(len(buckets))
    for i, (name, values) in enumerate(scores.items()):
        ax.bar(positions + i * width - 0.4 + width / 2, values, width, label=name)
    ax.set_xticks(positions, labels=list(buckets))
    ax.set(xlabel="source length (tokens)", ylabel=metric, title=f"{metric} by input length")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def grad_norm_curves(norms: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]], *, clip: float) -> Figure:
    """Gradient norm before clipping per logged step (mean over the window as a line, the window's
    largest as a faint line above it), log scale, with the clipping threshold. ``name -> (steps,
    means, maxima)``."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, (steps, means, maxima) in norms.items():
        (line,) = ax.plot(steps, means, label=f"{name} (mean)")
        ax.plot(steps, maxima, color=line.get_color(), alpha=0.35, linewidth=0.8)
    ax.axhline(clip, color="black", linestyle="--", linewidth=1, label=f"clip at {clip:g}")
    ax.set_yscale("log")
    ax.set(title="gradient norm before clipping (faint: window maximum)", xlabel="step", ylabel="L2 norm")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
