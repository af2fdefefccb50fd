"""Recurrent cells and a length-aware multi-layer runner, written in NumPy from the equations.

These are the oracle the tests compare the PyTorch modules against, so they favour being
obviously right over being fast: one time step at a time, one direction at a time, no
packing. Weights use PyTorch's names and layouts (``weight_ih_l{k}[_reverse]`` of shape
[G*H, X], ``weight_hh_l{k}`` [G*H, H], biases [G*H]) so a ``state_dict`` converts directly.
"""

from __future__ import annotations

import numpy as np

# Number of stacked gate blocks in each cell's weight matrices.
GATES: dict[str, int] = {"rnn": 1, "gru": 3, "lstm": 4}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def rnn_cell(
    x: np.ndarray, h: np.ndarray, *, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray
) -> np.ndarray:
    """Elman (1990) recurrent cell with tanh, as in ``torch.nn.RNN``:

        h' = tanh(W_ih x + b_ih + W_hh h + b_hh)

    Args:
        x: [B, X] input. h: [B, H] previous hidden. w_ih [H, X], w_hh [H, H], b_ih/b_hh [H].

    Returns:
        h' [B, H].
    """
    return np.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def gru_cell(
    x: np.ndarray, h: np.ndarray, *, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray
) -> np.ndarray:
    """Gated recurrent unit (Cho et al. 2014, eq. 5-8) in the form ``torch.nn.GRU`` documents:

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    The stacked weights hold the blocks in the order r, z, n. Note that the reset gate
    multiplies ``W_hn h + b_hn`` (PyTorch/cuDNN), not ``h`` before the product (the paper).

    Args:
        x: [B, X]. h: [B, H]. w_ih [3H, X], w_hh [3H, H], b_ih/b_hh [3H].

    Returns:
        h' [B, H].
    """
    w_ir, w_iz, w_in = np.split(w_ih, 3, axis=0)  # each [H, X]
    w_hr, w_hz, w_hn = np.split(w_hh, 3, axis=0)  # each [H, H]
    b_ir, b_iz, b_in = np.split(b_ih, 3)
    b_hr, b_hz, b_hn = np.split(b_hh, 3)
    r = _sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)  # [B, H]
    z = _sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)  # [B, H]
    n = np.tanh(x @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))  # [B, H]
    return (1.0 - z) * n + z * h


def lstm_cell(
    x: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    *,
    w_ih: np.ndarray,
    w_hh: np.ndarray,
    b_ih: np.ndarray,
    b_hh: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et
    al. 2000) in the form ``torch.nn.LSTM`` documents:

        i  = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
        f  = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o  = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')

    The stacked weights hold the blocks in the order i, f, g, o.

    Args:
        x: [B, X]. h, c: [B, H]. w_ih [4H, X], w_hh [4H, H], b_ih/b_hh [4H].

    Returns:
        (h' [B, H], c' [B, H]).
    """
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # [B, 4H]
    pre_i, pre_f, pre_g, pre_o = np.split(pre, 4, axis=1)  # each [B, H]
    i, f, g, o = _sigmoid(pre_i), _sigmoid(pre_f), np.tanh(pre_g), _sigmoid(pre_o)
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


def _run_direction(
    cell: str,
    inputs: np.ndarray,
    lengths: np.ndarray,
    weights: dict[str, np.ndarray],
    suffix: str,
    *,
    reverse: bool,
    h0: np.ndarray,
    c0: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One direction of one layer, one sequence at a time so that padding is never read.

    Returns outputs [B, T, H] (zero at padding), final h [B, H] and final c [B, H] or None.
    """
    params = {
        "w_ih": weights[f"weight_ih_{suffix}"],
        "w_hh": weights[f"weight_hh_{suffix}"],
        "b_ih": weights[f"bias_ih_{suffix}"],
        "b_hh": weights[f"bias_hh_{suffix}"],
    }
    batch, steps, _ = inputs.shape
    hidden = params["w_hh"].shape[1]
    outputs = np.zeros((batch, steps, hidden), dtype=inputs.dtype)  # [B, T, H]
    h_final = np.zeros((batch, hidden), dtype=inputs.dtype)
    c_final = np.zeros((batch, hidden), dtype=inputs.dtype) if cell == "lstm" else None
    for b in range(batch):
        h = h0[b : b + 1]  # [1, H]
        c = None if c0 is None else c0[b : b + 1]
        # The backward direction starts at the sequence's own last real token, not at padding.
        order = range(int(lengths[b]) - 1, -1, -1) if reverse else range(int(lengths[b]))
        for t in order:
            x = inputs[b : b + 1, t]  # [1, X]
            if cell == "lstm":
                h, c = lstm_cell(x, h, c, **params)
            else:
                h = (rnn_cell if cell == "rnn" else gru_cell)(x, h, **params)
            outputs[b, t] = h[0]
        h_final[b] = h[0]
        if c_final is not None:
            c_final[b] = c[0]
    return outputs, h_final, c_final


def run_rnn(
    cell: str,
    inputs: np.ndarray,
    lengths: np.ndarray,
    weights: dict[str, np.ndarray],
    *,
    layers: int = 1,
    bidirectional: bool = False,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A stacked (optionally bidirectional) RNN over a padded batch, honouring ``lengths``.

    Equivalent to ``torch.nn.{RNN,GRU,LSTM}(batch_first=True)`` on a packed sequence in eval
    mode: each layer's input is the concatenation [forward; backward] of the layer below;
    a sequence's final state is the one after its own last token (the backward direction's
    is after its first token).

    Args:
        cell: "rnn", "gru" or "lstm".
        inputs: [B, T, X]. lengths: [B], each in 1..T.
        weights: PyTorch-named arrays (``weight_ih_l0``, ..., ``bias_hh_l1_reverse``).
        h0, c0: optional initial states [L*D, B, H] (zeros by default).

    Returns:
        outputs [B, T, D*H] (zero at padding), final h [L*D, B, H], final c [L*D, B, H] or None,
        with the first axis layers-major (layer k, direction d at index k*D + d) like PyTorch.
    """
    if cell not in GATES:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(GATES)}")
    if inputs.ndim != 3 or lengths.shape != inputs.shape[:1]:
        raise ValueError(f"expected inputs [B, T, X] and lengths [B]; got {inputs.shape}, {lengths.shape}")
    directions = 2 if bidirectional else 1
    batch = inputs.shape[0]
    hidden = weights["weight_hh_l0"].shape[1]
    if h0 is None:
        h0 = np.zeros((layers * directions, batch, hidden), dtype=inputs.dtype)
    if c0 is None and cell == "lstm":
        c0 = np.zeros_like(h0)
    finals_h, finals_c = [], []
    layer_input = inputs  # [B, T, X] then [B, T, D*H]
    for k in range(layers):
        per_direction = []
        for d in range(directions):
            index = k * directions + d
            out, h_n, c_n = _run_direction(
                cell,
                layer_input,
                lengths,
                weights,
                f"l{k}" + ("_reverse" if d == 1 else ""),
                reverse=d == 1,
                h0=h0[index],
                c0=None if c0 is None else c0[index],
            )
            per_direction.append(out)
            finals_h.append(h_n)
            finals_c.append(c_n)
        layer_input = np.concatenate(per_direction, axis=-1)  # [B, T, D*H]
    final_c = np.stack(finals_c) if cell == "lstm" else None  # [L*D, B, H]
    return layer_input, np.stack(finals_h), final_c
