"""A one-layer decoder cell whose input projection is split between the embedding and the rest.

A decoder with attention feeds its cell ``[e_t; f_t]``: the embedding of the previous token and a
vector that depends on the previous step (the context, or with input feeding the previous
attentional vector). The cell's input projection splits column-wise,

    W_ih [e_t; f_t] + b_ih = (W_e e_t + b_ih) + W_f f_t,

and in training the gold embeddings of all steps are known before the loop starts: ``W_e e + b_ih``
is one matrix product over the whole target ([B, T, E] x [E, G*H]) instead of part of T small
ones, and each step is left with ``W_f f_t`` and no concatenation. Letters: G gates (3 for a GRU,
4 for an LSTM, 1 for a plain RNN), F the fed width (the context He, or the readout size R).

The step runs torch's own cell function (``torch.gru_cell``, ``lstm_cell``, ``rnn_tanh_cell``, the
arithmetic of a one-layer ``nn.GRU`` / ``nn.LSTM`` / ``nn.RNN`` step) with ``W_f`` as its input
weight and the precomputed ``W_e e_t + b_ih`` [B, G*H] as its input bias. A 2-D bias works on a
CPU, where the cell function adds it through ``addmm``; CUDA's fused cell kernels expect a 1-D
bias, so :meth:`SplitCell.applies` keeps this to CPU tensors. Measured on a CPU in float32 only
(docs/BENCHMARKS.md): bf16 autocast and GPUs keep the ``nn`` module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq.models.linear import plain_cpu_float32
from seq2seq.models.state import DecoderState

CELL_FUNCTIONS = {nn.GRU: torch.gru_cell, nn.LSTM: torch.lstm_cell, nn.RNN: torch.rnn_tanh_cell}


class SplitCell:
    """The cell of one training unroll, with its input weights split once into ``W_e`` (the
    embedding's columns) and ``W_f`` (the rest). Split once per unroll, not per step: slicing the
    weight at every step would make backward materialise a full-size zero gradient for each slice."""

    def __init__(self, rnn: nn.RNNBase, embedding_size: int) -> None:
        weight = rnn.weight_ih_l0  # [G*H, E + F]
        self.embedding_weight, self.fed_weight = weight[:, :embedding_size], weight[:, embedding_size:]
        self.bias_ih, self.weight_hh, self.bias_hh = rnn.bias_ih_l0, rnn.weight_hh_l0, rnn.bias_hh_l0
        self.function = CELL_FUNCTIONS[type(rnn)]

    @staticmethod
    def applies(rnn: nn.Module, embedded: torch.Tensor) -> bool:
        """Whether ``rnn`` is a plain one-layer, one-direction cell with biases (not an int8 module),
        and ``embedded`` a :func:`~seq2seq.models.linear.plain_cpu_float32` tensor."""
        return (
            type(rnn) in CELL_FUNCTIONS
            and rnn.num_layers == 1
            and rnn.bias
            and not rnn.bidirectional
            and getattr(rnn, "nonlinearity", "tanh") == "tanh"
            and getattr(rnn, "proj_size", 0) == 0
            and plain_cpu_float32(embedded)
        )

    def project(self, embedded: torch.Tensor) -> torch.Tensor:
        """``W_e e + b_ih``: [..., E] -> [..., G*H]."""
        return F.linear(embedded, self.embedding_weight, self.bias_ih)

    def step(self, projected: torch.Tensor | None):
        """One step's cell for the decoder (its ``CellStep``): ``(embedded, fed, state) -> (output, new
        state)``, given that step's ``W_e e + b_ih`` [B, G*H] when the unroll computed it with all the
        gold steps' (None for a step that reads the model's own prediction: projected here)."""
        return lambda embedded, fed, state: self(self.project(embedded) if projected is None else projected, fed, state)

    def __call__(
        self, projected: torch.Tensor, fed: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """One step from ``projected`` = W_e e_t + b_ih [B, G*H] and ``fed`` [B, F]: the output
        [B, H] and the new state in the nn module's layout ([1, B, H], or (h, c) of them)."""
        if self.function is torch.lstm_cell:
            hidden, cell = self.function(
                fed, (state.hidden[0], state.cell[0]), self.fed_weight, self.weight_hh, projected, self.bias_hh
            )
            return hidden, (hidden.unsqueeze(0), cell.unsqueeze(0))
        hidden = self.function(fed, state.hidden[0], self.fed_weight, self.weight_hh, projected, self.bias_hh)
        return hidden, hidden.unsqueeze(0)
