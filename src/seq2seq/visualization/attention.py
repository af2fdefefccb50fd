"""Attention heatmap: source tokens on the x axis, output tokens on the y axis."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def attention_heatmap(
    weights: np.ndarray, src_tokens: Sequence[str], out_tokens: Sequence[str], *, title: str = ""
) -> Figure:
    """``weights`` [T, S]: row t is the distribution over source positions when emitting token t."""
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (len(out_tokens), len(src_tokens)):
        raise ValueError(f"weights {weights.shape} do not match {len(out_tokens)} output x {len(src_tokens)} source tokens")
    width = min(2.0 + 0.32 * len(src_tokens), 24.0)
    height = min(1.5 + 0.32 * len(out_tokens), 18.0)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(src_tokens)), labels=list(src_tokens), rotation=90, fontsize=8)
    ax.set_yticks(range(len(out_tokens)), labels=list(out_tokens), fontsize=8)
    ax.set_xlabel("source token")
    ax.set_ylabel("generated token")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def head_heatmaps(
    heads: np.ndarray, src_tokens: Sequence[str], out_tokens: Sequence[str], *, title: str = ""
) -> Figure:
    """One heatmap per head of a multi-head attention, ``heads`` [k, T, S], and their mean last
    (the weights the model reports as its attention)."""
    heads = np.asarray(heads, dtype=float)
    if heads.ndim != 3 or heads.shape[1:] != (len(out_tokens), len(src_tokens)):
        raise ValueError(f"heads {heads.shape} do not match [k, {len(out_tokens)} output, {len(src_tokens)} source tokens]")
    panels = [*heads, heads.mean(axis=0)]
    names = [f"head {i + 1}" for i in range(len(heads))] + ["mean of the heads"]
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    width = min(1.0 + columns * (1.5 + 0.25 * len(src_tokens)), 30.0)
    height = min(1.0 + rows * (1.2 + 0.25 * len(out_tokens)), 30.0)
    fig, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, weights, name in zip(axes.flat, panels, names):
        ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(src_tokens)), labels=list(src_tokens), rotation=90, fontsize=7)
        ax.set_yticks(range(len(out_tokens)), labels=list(out_tokens), fontsize=7)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
