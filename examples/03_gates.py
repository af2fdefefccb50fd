"""LSTM and GRU gates, read off a trained encoder while it reads a real sentence.

Gated cells decide, at every step and for every hidden unit, how much to write, keep and
show. A gate is a sigmoid of the current input x_t and the previous hidden state h_{t-1},
so it is a number between 0 (closed) and 1 (open):

LSTM (Hochreiter & Schmidhuber 1997; forget gate: Gers et al. 2000)
    i = input gate:  how much of the new candidate g to write into the cell c
    f = forget gate: how much of the old cell c to keep   (c_t = f * c_{t-1} + i * g)
    o = output gate: how much of the cell to show         (h_t = o * tanh(c_t))
GRU (Cho et al. 2014)
    z = update gate: how much of the old state to keep    (h_t = (1 - z) * n + z * h_{t-1})
    r = reset gate:  how much of the old state the candidate n may look at

The script trains the package's ``lstm`` and ``gru`` presets (small) on the built-in
English -> Python task, runs each encoder over one test description, and recomputes the
gates from the layer's own weights (``weight_ih_l0``, ``weight_hh_l0`` and biases, stacked
in PyTorch's block order i, f, g, o and r, z, n) and from the hidden states the encoder
returned. As a check, the gates must rebuild exactly the states PyTorch computed.

The figure shows each gate as a heatmap: one row per hidden unit, one column per word.
Look for units whose forget/update gate drops at a particular word (they reset there) and
for columns where the input gate opens wide (a word worth writing down: a name or number).

    python examples/03_gates.py --out docs/img/learn
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import new_model, parse_args, save_figure, small_config, train
from seq2seq.config import DataConfig, VocabConfig
from seq2seq.data.corpus import Corpus, build_corpus
from seq2seq.models.encoders import RecurrentEncoder

FIGURE = "03_gates.png"
GATE_NAMES = {"lstm": ("input gate i", "forget gate f", "output gate o"), "gru": ("update gate z", "reset gate r")}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def encoder_run(encoder: RecurrentEncoder, ids: list[int]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Embedded inputs x [S, E], the encoder's hidden states h [S, H] and its layer weights."""
    src = torch.tensor([ids])  # [1, S]
    with torch.no_grad():
        states, _ = encoder(src, torch.tensor([len(ids)]))  # [1, S, H]
        embedded = encoder.embedding(src)[0]  # [S, E]
    weights = {name: p.detach().numpy() for name, p in encoder.rnn.named_parameters()}
    return embedded.numpy(), states[0].numpy(), weights


def pre_activations(x: np.ndarray, h: np.ndarray, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``W_ih x_t + b_ih`` and ``W_hh h_{t-1} + b_hh`` for every step: both [S, G*H].

    Gates depend only on x_t and h_{t-1}, so the states PyTorch returned are all we need;
    h_{-1} = 0 because the encoder starts from a zero state."""
    h_prev = np.vstack([np.zeros((1, h.shape[1])), h[:-1]])  # [S, H]
    from_x = x @ weights["weight_ih_l0"].T + weights["bias_ih_l0"]
    from_h = h_prev @ weights["weight_hh_l0"].T + weights["bias_hh_l0"]
    return from_x, from_h


def lstm_gates(x: np.ndarray, h: np.ndarray, weights: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
    """Gates i, f, o [S, H] (PyTorch block order i, f, g, o) and the largest error when they
    rebuild h: c_t = f c_{t-1} + i g, h_t = o tanh(c_t)."""
    from_x, from_h = pre_activations(x, h, weights)
    i, f, g, o = np.split(from_x + from_h, 4, axis=1)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    cell, rebuilt = np.zeros(h.shape[1]), []
    for t in range(len(h)):
        cell = f[t] * cell + i[t] * g[t]
        rebuilt.append(o[t] * np.tanh(cell))
    return dict(zip(GATE_NAMES["lstm"], (i, f, o))), float(np.abs(np.array(rebuilt) - h).max())


def gru_gates(x: np.ndarray, h: np.ndarray, weights: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
    """Gates z, r [S, H] (block order r, z, n) and the error when they rebuild
    h_t = (1 - z) n + z h_{t-1} with n = tanh(W_in x + b_in + r (W_hn h_{t-1} + b_hn))."""
    from_x, from_h = pre_activations(x, h, weights)
    x_r, x_z, x_n = np.split(from_x, 3, axis=1)
    h_r, h_z, h_n = np.split(from_h, 3, axis=1)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    h_prev = np.vstack([np.zeros((1, h.shape[1])), h[:-1]])
    error = float(np.abs((1 - z) * n + z * h_prev - h).max())
    return {GATE_NAMES["gru"][0]: z, GATE_NAMES["gru"][1]: r}, error


def pick_sentence(corpus: Corpus) -> int:
    """The first test description of medium length (14-20 words, else the one nearest to 17), so
    that the columns stay readable."""
    lengths = [len(src) for src, _ in corpus.tokens["test"]]
    return next((i for i, n in enumerate(lengths) if 14 <= n <= 20), min(range(len(lengths)), key=lambda i: abs(lengths[i] - 17)))


def plot(gates: dict[str, dict[str, np.ndarray]], words: list[str], title: str):
    fig, axes = plt.subplots(2, 3, figsize=(13, 8), layout="constrained")
    for row, (cell, named) in enumerate(gates.items()):
        for col, (name, values) in enumerate(named.items()):
            ax = axes[row, col]
            image = ax.imshow(values.T, cmap="magma", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
            ax.set_title(f"{cell.upper()} {name} (mean {values.mean():.2f})", fontsize=9)
            ax.set_xticks(range(len(words)), labels=words, rotation=90, fontsize=7)
            ax.set_ylabel("hidden unit", fontsize=8)
    fig.colorbar(image, ax=axes, fraction=0.02, label="gate value (0 closed, 1 open)")
    summary = axes[1, 2]
    for cell, named in gates.items():
        for name, values in named.items():
            summary.plot(values.mean(axis=1), marker=".", label=f"{cell} {name.split()[0]}")
    summary.set_xticks(range(len(words)), labels=words, rotation=90, fontsize=7)
    summary.set(title="mean over units", ylim=(0, 1))
    summary.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    n_train, size, epochs = (100, 16, 1) if args.quick else (3000, 64, 3)
    corpus = build_corpus(DataConfig(builtin_train_size=n_train, max_src_len=40), VocabConfig())
    index = pick_sentence(corpus)
    words, ids = corpus.tokens["test"][index][0], corpus.encoded["test"][index].src
    print(f"sentence: {' '.join(words)}")
    gates, results = {}, {}
    for cell, compute in (("lstm", lstm_gates), ("gru", gru_gates)):
        config = small_config(cell, size=size, epochs=epochs)
        model = new_model(config, corpus)
        history = train(model, config, corpus)
        gates[cell], error = compute(*encoder_run(model.encoder, ids))
        results[f"{cell}_rebuild_error"] = error
        results[f"{cell}_valid_loss"] = history[-1].valid_loss
        print(f"{cell}: valid loss {history[-1].valid_loss:.3f}; gates rebuild the encoder's states to {error:.1e}")
        for name, values in gates[cell].items():
            results[f"{cell} {name}"] = float(values.mean())
            print(f"  mean {name}: {values.mean():.3f}")
    assert max(results["lstm_rebuild_error"], results["gru_rebuild_error"]) < 1e-5, results
    title = (f"Encoder gates on a built-in test description; lstm and gru presets (hidden {size}) trained "
             f"{epochs} epoch(s) on {n_train} examples (valid loss lstm {results['lstm_valid_loss']:.2f}, "
             f"gru {results['gru_valid_loss']:.2f})")
    save_figure(plot(gates, words, title), args.out, FIGURE)
    return results


if __name__ == "__main__":
    main()
