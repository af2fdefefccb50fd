"""One step of a recurrent network, computed three ways: pure Python, NumPy and PyTorch.

A recurrent neural network (RNN) reads a sequence one element at a time and keeps a
*hidden state* h, a short vector that summarises what it has read so far. One step
combines the previous state and the new input with two weight matrices and a bias, and
squashes the result with tanh so that it stays between -1 and 1:

    h_t = tanh(W_h h_{t-1} + W_x x_t + b)

With plain numbers (one hidden unit, one input): h_prev = 0.5, x = 1.0, W_h = 0.9, W_x = 1.0
and b = 0.1 give tanh(0.9 * 0.5 + 1.0 * 1.0 + 0.1) = tanh(1.55) = 0.9138.

The script computes that number three times (a Python expression, NumPy arrays, a
``torch.nn.RNN`` whose weights we set by hand), then does the same with vectors (3 hidden
units, 2 inputs), and finally runs a full ``nn.RNN`` over whole sequences of different
lengths and compares it with the package's NumPy reference (``seq2seq.reference.run_rnn``),
the oracle its tests use. Every pair of results must agree to within float rounding.

The figure: left, the tanh curve with our single step marked on it; right, the hidden state
over time, PyTorch (lines) against the NumPy reference (dots).

    python examples/01_rnn_step.py --out docs/img/learn
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from _common import parse_args, save_figure
from seq2seq.reference import rnn_cell, run_rnn

# The scalar example of the docstring.
H_PREV, X, W_H, W_X, B = 0.5, 1.0, 0.9, 1.0, 0.1
TOLERANCE = 1e-6  # float32 rounding; a wrong formula would be off by far more
FIGURE = "01_rnn_step.png"


def scalar_python() -> float:
    return math.tanh(W_H * H_PREV + W_X * X + B)


def scalar_numpy() -> float:
    h_prev, x = np.array([H_PREV]), np.array([X])
    w_h, w_x, b = np.array([[W_H]]), np.array([[W_X]]), np.array([B])
    return float(np.tanh(w_h @ h_prev + w_x @ x + b)[0])


def rnn_with_weights(w_h: np.ndarray, w_x: np.ndarray, b: np.ndarray) -> nn.RNN:
    """An ``nn.RNN`` holding our weights. PyTorch has two biases (b_ih and b_hh) that are simply
    added, so we put all of ``b`` in the first and zero in the second."""
    rnn = nn.RNN(input_size=w_x.shape[1], hidden_size=w_h.shape[0], batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(torch.tensor(w_h))
        rnn.weight_ih_l0.copy_(torch.tensor(w_x))
        rnn.bias_ih_l0.copy_(torch.tensor(b))
        rnn.bias_hh_l0.zero_()
    return rnn


def one_torch_step(rnn: nn.RNN, h_prev: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One step: a sequence of length 1 ([B=1, T=1, X]) starting from ``h_prev`` ([L=1, B=1, H])."""
    inputs = torch.tensor(x, dtype=torch.float32).view(1, 1, -1)
    h0 = torch.tensor(h_prev, dtype=torch.float32).view(1, 1, -1)
    with torch.no_grad():
        _, h_new = rnn(inputs, h0)
    return h_new.view(-1).numpy()


def scalar_torch() -> float:
    rnn = rnn_with_weights(np.array([[W_H]]), np.array([[W_X]]), np.array([B]))
    return float(one_torch_step(rnn, np.array([H_PREV]), np.array([X]))[0])


def vector_python(w_h: list[list[float]], w_x: list[list[float]], b: list[float], h: list[float], x: list[float]) -> list[float]:
    """The same formula with explicit loops: unit i sums its weighted inputs, then tanh."""
    return [
        math.tanh(sum(w_h[i][j] * h[j] for j in range(len(h))) + sum(w_x[i][k] * x[k] for k in range(len(x))) + b[i])
        for i in range(len(b))
    ]


def vector_case(rng: np.random.Generator) -> dict[str, float]:
    """3 hidden units, 2 inputs: pure Python, NumPy, PyTorch and the package's ``rnn_cell``."""
    w_h, w_x = rng.normal(0, 0.5, (3, 3)), rng.normal(0, 0.5, (3, 2))
    b, h, x = rng.normal(0, 0.1, 3), rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 2)
    python = np.array(vector_python(w_h.tolist(), w_x.tolist(), b.tolist(), h.tolist(), x.tolist()))
    numpy = np.tanh(w_h @ h + w_x @ x + b)
    torch_ = one_torch_step(rnn_with_weights(w_h, w_x, b), h, x)
    reference = rnn_cell(x[None], h[None], w_ih=w_x, w_hh=w_h, b_ih=b, b_hh=np.zeros(3))[0]
    print(f"vector step  python {np.round(python, 4)}  numpy {np.round(numpy, 4)}  torch {np.round(torch_, 4)}")
    return {
        "vector_numpy_vs_python": float(np.abs(numpy - python).max()),
        "vector_torch_vs_python": float(np.abs(torch_ - python).max()),
        "vector_reference_vs_python": float(np.abs(reference - python).max()),
    }


def full_sequence(*, hidden: int, steps: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``nn.RNN`` over a padded batch of 3 sequences (packed with their lengths) against the
    NumPy reference: returns both output tensors [B, T, H] and the lengths."""
    torch.manual_seed(0)
    rnn = nn.RNN(input_size=4, hidden_size=hidden, batch_first=True)
    lengths = [steps, steps - 2, 3]
    inputs = torch.randn(len(lengths), steps, 4)  # [B, T, X]
    packed = nn.utils.rnn.pack_padded_sequence(inputs, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        outputs, _ = rnn(packed)
    outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=steps)  # [B, T, H]
    weights = {name: tensor.detach().numpy() for name, tensor in rnn.state_dict().items()}
    reference, _, _ = run_rnn("rnn", inputs.numpy(), np.array(lengths), weights)  # [B, T, H]
    return outputs.numpy(), reference, lengths


def plot(torch_out: np.ndarray, reference: np.ndarray, lengths: Sequence[int], value: float):
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    z = np.linspace(-4, 4, 200)
    pre = W_H * H_PREV + W_X * X + B
    left.plot(z, np.tanh(z), color="grey")
    left.scatter([pre], [value], color="crimson", zorder=3)
    left.annotate(f"tanh({pre:.2f}) = {value:.4f}", (pre, value), xytext=(-3.8, 0.55), arrowprops={"arrowstyle": "->"})
    left.set(title="one step: h = tanh(W_h h_prev + W_x x + b)", xlabel="W_h h_prev + W_x x + b", ylabel="new h")
    steps = range(1, lengths[0] + 1)
    for unit, color in zip(range(min(3, torch_out.shape[2])), ("C0", "C1", "C2")):
        right.plot(steps, torch_out[0, : lengths[0], unit], color=color, label=f"unit {unit} (torch)")
        right.scatter(steps, reference[0, : lengths[0], unit], color=color, s=14, marker="o", edgecolor="black", zorder=3)
    right.set(title="nn.RNN (lines) vs NumPy reference (dots)", xlabel="time step t", ylabel="hidden state h_t")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    scalars = {"python": scalar_python(), "numpy": scalar_numpy(), "torch": scalar_torch()}
    for level, value in scalars.items():
        print(f"scalar step  {level:6s} h = {value:.4f}")
    results = {f"scalar_{level}": value for level, value in scalars.items()}
    results.update(vector_case(np.random.default_rng(0)))
    torch_out, reference, lengths = full_sequence(hidden=4 if args.quick else 8, steps=8 if args.quick else 20)
    results["full_torch_vs_reference"] = float(np.abs(torch_out - reference).max())
    print(f"full nn.RNN vs seq2seq.reference.run_rnn over lengths {lengths}: max |difference| = "
          f"{results['full_torch_vs_reference']:.2e}")
    assert all(abs(v - math.tanh(1.55)) < TOLERANCE for v in scalars.values()), scalars
    assert all(v < TOLERANCE for k, v in results.items() if not k.startswith("scalar")), results
    save_figure(plot(torch_out, reference, lengths, scalars["torch"]), args.out, FIGURE)
    return results


if __name__ == "__main__":
    main()
