"""Backpropagation through time, and why gradients vanish or explode.

To train an RNN we unroll it over the sequence and backpropagate through every step
("backpropagation through time"). The gradient that reaches an input k steps before the
end has been multiplied by k Jacobians, one per step, each roughly "recurrent weights times
the slope of tanh". If that product shrinks by a factor below 1 at each step, the gradient
*vanishes* exponentially with k, and the network cannot learn that an early input matters;
above 1 it *explodes* (training diverges unless gradients are clipped, as the package's
trainer does at norm 1.0).

This script measures it directly: it feeds random sequences to the recurrent layers the
package's encoder uses (``seq2seq.models.encoders.rnn_class``: ``nn.RNN``, ``nn.GRU``,
``nn.LSTM``), takes a scalar of the final hidden state, u . h_T, and plots the norm of its
gradient with respect to the input x_{T-k} against the distance k, on a log scale.

Left panel: the three cells as PyTorch initialises them (random, untrained). All vanish at
initialisation; the vanilla RNN fastest.
Right panel: what sets the slope. A vanilla RNN can only move it through the size of its
recurrent weights (orthogonal W_h scaled by a gain): a small gain vanishes, a large one
explodes, and only a knife-edge in between keeps it flat. Gated cells have a dial that
training can turn: an LSTM's forget gate (or a GRU's update gate) near 1 copies the state
almost unchanged, an *additive* path along which the gradient survives for many steps. Here
we turn the dial by hand through the gate's bias.

    python examples/02_bptt_gradients.py --out docs/img/learn
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn

from _common import parse_args, save_figure
from seq2seq.models.encoders import rnn_class

FIGURE = "02_bptt_gradients.png"
INPUT_SIZE, BATCH = 16, 32


def gradient_by_distance(rnn: nn.RNNBase, steps: int) -> torch.Tensor:
    """Mean over a batch of ||d(u . h_T) / d x_{T-k}|| for k = 0 .. steps-1: a tensor [steps]."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(BATCH, steps, INPUT_SIZE, generator=generator).requires_grad_(True)  # [B, T, X]
    outputs, _ = rnn(inputs)  # [B, T, H]
    direction = torch.randn(rnn.hidden_size, generator=generator)
    (outputs[:, -1] @ (direction / direction.norm())).sum().backward()  # one scalar per sequence, summed
    norms = inputs.grad.norm(dim=-1).mean(dim=0)  # [T], index t = position in the sequence
    return norms.flip(0)  # index k = distance from the end


def cell(name: str, hidden: int) -> nn.RNNBase:
    """The layer the package's encoder builds for ``name``, with PyTorch's default initialisation."""
    torch.manual_seed(0)
    return rnn_class(name)(INPUT_SIZE, hidden, batch_first=True)


def rnn_with_gain(gain: float, hidden: int) -> nn.RNNBase:
    """Vanilla RNN whose recurrent matrix is orthogonal times ``gain`` (all its singular values = gain)."""
    rnn = cell("rnn", hidden)
    with torch.no_grad():
        nn.init.orthogonal_(rnn.weight_hh_l0, gain=gain)
    return rnn


def gated_with_keep_bias(name: str, bias: float, hidden: int) -> nn.RNNBase:
    """An LSTM with forget-gate bias ``bias`` (gate blocks i, f, g, o) or a GRU with update-gate
    bias ``bias`` (blocks r, z, n): sigmoid(3) = 0.95, so the cell keeps 95 % of its state per step."""
    rnn = cell(name, hidden)
    block = 1  # f is the second LSTM block, z the second GRU block
    with torch.no_grad():
        rnn.bias_ih_l0[block * hidden : (block + 1) * hidden] = bias
        rnn.bias_hh_l0[block * hidden : (block + 1) * hidden] = 0.0
    return rnn


def per_step_factor(norms: torch.Tensor) -> float:
    """Geometric-mean factor by which the gradient changes per step back in time."""
    return float((norms[-1] / norms[0]) ** (1.0 / (len(norms) - 1)))


def measure(steps: int, hidden: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    defaults = {name: gradient_by_distance(cell(name, hidden), steps) for name in ("rnn", "gru", "lstm")}
    dials = {f"rnn, gain {g}": gradient_by_distance(rnn_with_gain(g, hidden), steps) for g in (0.5, 1.0, 2.0)}
    for name, gate in (("lstm", "forget"), ("gru", "update")):
        for bias in (0.0, 3.0):
            dials[f"{name}, {gate}-gate bias {bias:g}"] = gradient_by_distance(gated_with_keep_bias(name, bias, hidden), steps)
    return defaults, dials


def color(label: str) -> str:
    """One colour family per cell type, so both panels read alike (shades for the RNN gains)."""
    shades = {"0.5": "#9ecae1", "1.0": "#4292c6", "2.0": "#08306b"}
    if label.startswith("rnn"):
        return shades.get(label.rsplit(" ", 1)[-1], "C0")
    return "C1" if label.startswith("gru") else "C2"


def plot(defaults: dict[str, torch.Tensor], dials: dict[str, torch.Tensor], hidden: int):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, curves, title in ((left, defaults, "at PyTorch's default initialisation"),
                              (right, dials, "what sets the slope (weights set by hand)")):
        for label, norms in curves.items():
            style = "--" if "bias 0" in label else "-"
            ax.semilogy(range(len(norms)), norms.detach().numpy(), style, color=color(label),
                        label=f"{label} (x{per_step_factor(norms):.2f}/step)")
        ax.set(title=title, xlabel="distance k = T - t (steps back from the end)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    left.set_ylabel("||d (u . h_T) / d x_t||  (log scale)")
    fig.suptitle(f"Gradient reaching an input k steps back; untrained layers, hidden size {hidden}, mean of {BATCH} sequences",
                 fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    steps, hidden = (30, 32) if args.quick else (60, 64)
    defaults, dials = measure(steps, hidden)
    results = {}
    for label, norms in {**defaults, **dials}.items():
        factor, ratio = per_step_factor(norms), float(norms[-1] / norms[0])
        results[label] = factor
        print(f"{label:28s} gradient at k={steps - 1} / at k=0 = {ratio:9.2e}   per step x{factor:.3f}")
    save_figure(plot(defaults, dials, hidden), args.out, FIGURE)
    return results


if __name__ == "__main__":
    main()
