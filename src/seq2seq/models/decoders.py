"""Recurrent decoder, with or without Bahdanau attention, driven one step at a time.

Without attention (Sutskever et al. 2014; Cho et al. 2014) the only information about the
source is the initial state that the bridge derives from the encoder's final state.
With attention (Bahdanau et al. 2015), every step t

1. attends from the previous top-layer hidden state h_{t-1} to all encoder states, giving
   the context c_t (a weighted sum of the encoder states);
2. feeds ``[embedding(y_{t-1}); c_t]`` to the recurrent cell;
3. predicts the next token from ``[rnn output; c_t]`` with one linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from seq2seq.models.attention import BahdanauAttention
from seq2seq.models.encoders import rnn_class
from seq2seq.models.state import DecoderState, Memory


class RecurrentDecoder(nn.Module):
    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        context_size: int,
        cell: str = "lstm",
        layers: int = 1,
        attention: BahdanauAttention | None = None,
        dropout: float = 0.0,
        pad_index: int = 0,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        self.attention = attention
        context = context_size if attention is not None else 0
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_index)
        self.dropout = nn.Dropout(dropout)
        self.rnn = rnn_class(cell)(
            embedding_size + context,
            hidden_size,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.output = nn.Linear(hidden_size + context, vocab_size)

    def prepare_memory(self, states: torch.Tensor, mask: torch.Tensor) -> Memory:
        """Project the attention keys once per batch (not once per step)."""
        keys = self.attention.project_keys(states) if self.attention is not None else None
        return Memory(states=states, mask=mask, keys=keys)

    def _features(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """Everything of a step up to (not including) the output layer: [B, H (+ He)]."""
        embedded = self.dropout(self.embedding(prev_tokens))  # [B, E]
        weights = None
        if self.attention is not None:
            context, weights = self.attention(
                query=state.top, keys=memory.keys, values=memory.states, mask=memory.mask
            )  # [B, He], [B, S]
            embedded = torch.cat([embedded, context], dim=-1)  # [B, E + He]
        output, new_state = self.rnn(embedded.unsqueeze(1), state.as_rnn_input())
        features = output.squeeze(1)  # [B, H]
        if self.attention is not None:
            features = torch.cat([features, context], dim=-1)  # [B, H + He]
        return features, DecoderState.from_rnn_output(new_state), weights

    def step(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One decoder step.

        Args:
            prev_tokens: [B] the previous output token (``<sos>`` at the first step).
            state: hidden (and cell) [L, B, H] after the previous step.
            memory: encoder states [B, S, He], mask [B, S] and projected keys.

        Returns:
            logits [B, V], the new state, and the attention weights [B, S] (None without attention).
        """
        if prev_tokens.dim() != 1:
            raise ValueError(f"expected prev_tokens [B], got {tuple(prev_tokens.shape)}")
        features, state, weights = self._features(prev_tokens, state, memory)
        return self.output(self.dropout(features)), state, weights  # [B, V]

    def forward(
        self,
        tgt_input: torch.Tensor,
        state: DecoderState,
        memory: Memory,
        *,
        teacher_forcing: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unroll over a target prefix.

        With probability ``teacher_forcing`` a step reads the gold previous token, otherwise
        the model's own argmax prediction. The draw is made **once per time step and shared
        by the whole batch** (as in the PyTorch seq2seq tutorials), from torch's global RNG,
        so seeding torch makes it reproducible.

        The output layer runs once over all steps (one large matrix product instead of T
        small ones); a step whose successor reads the model's own prediction also computes
        its logits, without gradient, just for that argmax.

        Args:
            tgt_input: [B, T] ``<sos> y_1 ... y_{T-1}`` (gold tokens).

        Returns:
            logits [B, T, V] and attention weights [B, T, S] (None without attention).
        """
        if tgt_input.dim() != 2:
            raise ValueError(f"expected tgt_input [B, T], got {tuple(tgt_input.shape)}")
        if self.attention is None and teacher_forcing >= 1.0:
            return self._unroll_teacher_forced(tgt_input, state), None
        steps = tgt_input.size(1)
        forced = (torch.rand(steps) < teacher_forcing).tolist()  # one draw per step
        features_per_step, weights_per_step = [], []
        prev = tgt_input[:, 0]
        for t in range(steps):
            features, state, weights = self._features(prev, state, memory)
            features_per_step.append(features)
            weights_per_step.append(weights)
            if t + 1 < steps:
                if forced[t + 1]:
                    prev = tgt_input[:, t + 1]
                else:
                    with torch.no_grad():
                        prev = self.output(features).argmax(dim=-1)
        features = torch.stack(features_per_step, dim=1)  # [B, T, H (+ He)]
        logits = self.output(self.dropout(features))  # [B, T, V]
        attention = torch.stack(weights_per_step, dim=1) if self.attention is not None else None  # [B, T, S]
        return logits, attention

    def _unroll_teacher_forced(self, tgt_input: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """Without attention and with gold inputs every step, the cell can run over the whole
        sequence in one call; the result equals stepping one token at a time."""
        embedded = self.dropout(self.embedding(tgt_input))  # [B, T, E]
        outputs, _ = self.rnn(embedded, state.as_rnn_input())  # [B, T, H]
        return self.output(self.dropout(outputs))  # [B, T, V]
