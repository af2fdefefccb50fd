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
