"""One step of the recurrent decoder in NumPy (the oracle for ``RecurrentDecoder.step``).

Bahdanau et al. 2015, section 3.1, with the simplifications the model documents: at step t

1. the query is the previous top-layer hidden state h_{t-1};
2. ``c_t`` is the additive-attention context over the encoder states;
3. the cell reads ``[E y_{t-1}; c_t]``;
4. ``logits = W_o [h_t; c_t] + b_o``.

Without attention (Sutskever et al. 2014; Cho et al. 2014) steps 1-2 are skipped, the cell
reads ``E y_{t-1}`` and ``logits = W_o h_t + b_o``.
"""

from __future__ import annotations

import numpy as np

from seq2seq.reference.attention import bahdanau_attention
from seq2seq.reference.cells import run_rnn


def decoder_step_reference(
    prev_tokens: np.ndarray,
    hidden: np.ndarray,
    cell_state: np.ndarray | None,
    *,
    cell: str,
    embedding: np.ndarray,
    rnn_weights: dict[str, np.ndarray],
    output_w: np.ndarray,
    output_b: np.ndarray,
    states: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    attention_w: np.ndarray | None = None,
    attention_v: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Reproduce one ``RecurrentDecoder.step`` in eval mode (no dropout).

    Args:
        prev_tokens: [B] previous token ids.
        hidden: [L, B, H] previous hidden state; cell_state: [L, B, H] for an LSTM, else None.
        cell: "rnn", "gru" or "lstm". embedding: [V, E].
        rnn_weights: PyTorch-named cell weights (``weight_ih_l0``, ...), unidirectional.
        output_w: [V, H (+ He)], output_b: [V].
        states [B, S, He], mask [B, S], attention_w [A, H + He], attention_v [A]: the encoder
            memory and the unsplit attention parameters; all None for a decoder without attention.

    Returns:
        logits [B, V], new hidden [L, B, H], new cell [L, B, H] or None, weights [B, S] or None.
    """
    embedded = embedding[prev_tokens]  # [B, E]
    weights = context = None
    if attention_w is not None:
        context, weights = bahdanau_attention(hidden[-1], states, mask, w=attention_w, v=attention_v)
        embedded = np.concatenate([embedded, context], axis=-1)  # [B, E + He]
    ones = np.ones(prev_tokens.shape[0], dtype=np.int64)
    _, new_hidden, new_cell = run_rnn(
        cell, embedded[:, None, :], ones, rnn_weights, layers=hidden.shape[0], h0=hidden, c0=cell_state
    )  # [L, B, H]
    features = new_hidden[-1]  # [B, H]: the top layer's output is its new hidden state
    if context is not None:
        features = np.concatenate([features, context], axis=-1)  # [B, H + He]
    logits = features @ output_w.T + output_b  # [B, V]
    return logits, new_hidden, new_cell, weights
