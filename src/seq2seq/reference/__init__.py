"""NumPy implementations of the models' equations, used as the oracle in tests."""

from seq2seq.reference.attention import bahdanau_attention, masked_softmax
from seq2seq.reference.cells import gru_cell, lstm_cell, rnn_cell, run_rnn
from seq2seq.reference.decoder import decoder_step_reference

__all__ = [
    "bahdanau_attention",
    "decoder_step_reference",
    "gru_cell",
    "lstm_cell",
    "masked_softmax",
    "rnn_cell",
    "run_rnn",
]
