"""NumPy implementations of the models' equations, used as the oracle in tests."""

from seq2seq.reference.attention import (
    additive_coverage_attention,
    bahdanau_attention,
    local_p_attention,
    luong_attention,
    masked_softmax,
    multi_head_attention,
)
from seq2seq.reference.cells import gru_cell, lstm_cell, rnn_cell, run_rnn
from seq2seq.reference.decoder import decoder_step_reference

__all__ = [
    "additive_coverage_attention",
    "bahdanau_attention",
    "local_p_attention",
    "luong_attention",
    "multi_head_attention",
    "decoder_step_reference",
    "gru_cell",
    "lstm_cell",
    "masked_softmax",
    "rnn_cell",
    "run_rnn",
]
