"""Recurrent decoder, with or without Bahdanau attention, driven one step at a time.

Without attention (Sutskever et al. 2014; Cho et al. 2014) the only information about the
source is the initial state that the bridge derives from the encoder's final state.
With attention (Bahdanau et al. 2015), every step t

1. attends from the previous top-layer hidden state h_{t-1} to all encoder states, giving
   the context c_t (a weighted sum of the encoder states);
2. feeds ``[embedding(y_{t-1}); c_t]`` to the recurrent cell;
3. predicts the next token from ``[rnn output; c_t]`` with one linear layer, or, with a
   ``readout_size``, through Luong et al. 2015's attentional vector
   ``tanh(W_r [rnn output; c_t])`` first (as OpenNMT-py does): the vocabulary projection then
   reads ``readout_size`` features instead of ``H + He``, which halves the largest matrix product
   of training at the usual sizes.

With ``input_feeding`` (Luong et al. 2015, sections 3 and 3.3; OpenNMT-py's RNN decoder) the
order changes: the cell reads ``[embedding(y_{t-1}); h~_{t-1}]``, the previous step's attentional
vector, the attention then reads the *new* hidden state h_t (same additive score), and
``h~_t = tanh(W_r [h_t; c_t])`` both predicts the next token and is fed to the next step, so
the decoder knows which source words it has already covered.

With ``copy`` (See et al. 2017, section 2.2; only with attention) step 3 becomes the
pointer-generator mixture of :mod:`seq2seq.models.copy`: a gate p_gen, computed from
``[rnn output; c_t; embedding(y_{t-1})]``, mixes generating from the vocabulary with copying source
words through the attention weights, and the decoder returns log-probabilities over the target
vocabulary extended by the source's unknown words. Every caller already treats its output as
logits: log_softmax of normalised log-probabilities changes nothing.

In training's unroll (:meth:`RecurrentDecoder.unroll`) a one-layer cell's input projection is
split, ``W_ih [e; f] = W_e e + W_f f``: the embedding half of every step is one matrix product
over the whole target (:mod:`seq2seq.models.split_cell`), and each step keeps the smaller
product ``W_f f`` (f, the context or the fed attentional vector, depends on the previous step)
and no concatenation. Decoding one step at a time runs the ``nn`` module itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from seq2seq.models.attention import Attention
from seq2seq.models.copy import copy_mixture, extended_size
from seq2seq.models.dropout import Dropout
from seq2seq.models.encoders import rnn_class
from seq2seq.models.linear import linear
from seq2seq.models.split_cell import SplitCell
from seq2seq.models.state import DecoderState, Memory

# One step of the recurrent cell: (embedded [B, E], fed [B, F] or None, state) -> (top output [B, H], new
# state as the nn module returns it). The plain one is RecurrentDecoder._run_cell; training's unroll
# may pass SplitCell.step (seq2seq.models.split_cell), the same arithmetic with the input split.
CellStep = Callable[[torch.Tensor, "torch.Tensor | None", DecoderState], tuple[torch.Tensor, Any]]


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
        attention: Attention | None = None,
        coverage: bool = False,
        dropout: float = 0.0,
        copy: bool = False,
        readout_size: int | None = None,
        input_feeding: bool = False,
        pad_index: int = 0,
        unk_index: int = 1,
    ) -> None:
        super().__init__()
        if copy and attention is None:
            raise ValueError("the copy mechanism needs attention: it copies source words through the attention weights")
        if input_feeding and (attention is None or not readout_size):
            raise ValueError("input feeding needs attention and a readout_size: it feeds the attentional vector")
        if coverage and not getattr(attention, "supports_coverage", False):
            raise ValueError(f"coverage needs an attention whose score reads it, not {type(attention).__name__}")
        self.coverage = coverage
        # Set by seq2seq.models.fast_paths.install_fast_paths: training's unroll may split the cell's
        # input projection (SplitCell) where that applies.
        self.split_cells = False
        self.input_feeding = input_feeding
        self.cell = cell
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        self.unk_index = unk_index
        self.attention = attention
        context = context_size if attention is not None else 0
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_index)
        self.dropout = Dropout(dropout)
        # The cell reads the context (Bahdanau) or the previous attentional vector (input feeding).
        fed = readout_size if input_feeding else context
        self.rnn = rnn_class(cell)(
            embedding_size + fed,
            hidden_size,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        features = hidden_size + context
        self.readout = nn.Linear(features, readout_size) if readout_size else None  # W_r
        self.output = nn.Linear(readout_size or features, vocab_size)
        # See et al. 2017, eq. 8: p_gen = sigmoid(w^T [rnn output; c_t; embedding(y_{t-1})] + b), where an
        # input-feeding decoder's features are already the attentional vector h~_t.
        self.p_gen = nn.Linear((readout_size if input_feeding else features) + embedding_size, 1) if copy else None

    @property
    def copies(self) -> bool:
        return self.p_gen is not None

    def prepare_memory(self, states: torch.Tensor, mask: torch.Tensor, src_copy: torch.Tensor | None = None) -> Memory:
        """Project the attention keys once per batch (not once per step); a copy decoder also keeps
        ``src_copy`` [B, S], the source tokens as extended target ids, and the output width."""
        keys = self.attention.project_keys(states) if self.attention is not None else None
        if not self.copies:
            if src_copy is not None:
                raise ValueError("src_copy was given, but this decoder has no copy mechanism")
            return Memory(states=states, mask=mask, keys=keys)
        if src_copy is None or src_copy.shape != mask.shape:
            shape = None if src_copy is None else tuple(src_copy.shape)
            raise ValueError(f"a copy decoder needs src_copy [B, S] = {tuple(mask.shape)}, got {shape}")
        # Extended ids are V + j with j counted from 0 in each example: the largest one gives the width.
        return Memory(states=states, mask=mask, keys=keys, copy_ids=src_copy,
                      extended_size=extended_size(self.vocab_size, src_copy))

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embedded tokens [B, E] (dropout applied). A copied word (id >= V) has no embedding of its
        own and is read as ``<unk>``, as in See et al. 2017."""
        if self.copies:
            tokens = tokens.masked_fill(tokens >= self.vocab_size, self.unk_index)
        return self.dropout(self.embedding(tokens))

    def _features(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor, DecoderState, torch.Tensor | None]:
        """Everything of a step up to (not including) the output layer: features [B, H (+ He)]
        (with input feeding the attentional vector [B, R]), the input embedding [B, E] (p_gen reads
        it), the new state and the attention weights [B, S]."""
        return self._step_features(self._embed(prev_tokens), state, memory)

    def _step_features(
        self, embedded: torch.Tensor, state: DecoderState, memory: Memory, run_cell: CellStep | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, DecoderState, torch.Tensor | None]:
        """:meth:`_features` from the already embedded previous tokens [B, E]; ``run_cell`` runs the
        cell (default: :meth:`_run_cell`)."""
        run_cell = run_cell or self._run_cell
        if self.input_feeding:
            return self._fed_features(embedded, state, memory, run_cell)
        context, weights, coverage = None, None, None
        if self.attention is not None:
            context, weights, coverage = self._attend(state.top, state, memory)  # [B, He], [B, S], [B, S]
        features, new_state = run_cell(embedded, context, state)  # [B, H]
        if self.attention is not None:
            features = torch.cat([features, context], dim=-1)  # [B, H + He]
        return features, embedded, DecoderState.from_rnn_output(new_state, coverage=coverage), weights

    def _fed_features(
        self, embedded: torch.Tensor, state: DecoderState, memory: Memory, run_cell: CellStep
    ) -> tuple[torch.Tensor, torch.Tensor, DecoderState, torch.Tensor]:
        """:meth:`_features` of an input-feeding decoder (Luong et al. 2015, section 3.3)."""
        assert self.attention is not None and self.readout is not None  # checked in __init__
        feed = state.feed
        if feed is None:  # the first step: no attentional vector yet
            feed = embedded.new_zeros(embedded.size(0), self.readout.out_features)  # [B, R]
        output, new_state = run_cell(embedded, feed, state)  # [B, H]: h_t, the query
        context, weights, coverage = self._attend(output, state, memory)  # [B, He], [B, S], [B, S]
        attentional = torch.tanh(self.readout(torch.cat([output, context], dim=-1)))  # h~_t [B, R]
        return attentional, embedded, DecoderState.from_rnn_output(new_state, attentional, coverage), weights

    def _attend(
        self, query: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The context [B, He] and weights [B, S] for ``query`` [B, H], and for a coverage decoder the
        new coverage [B, S]: the sum of every step's weights so far (Tu et al. 2016; See et al. 2017, eq. 10),
        zeros before the first step."""
        assert self.attention is not None
        coverage = None
        if self.coverage:
            coverage = state.coverage if state.coverage is not None else memory.mask.new_zeros(
                memory.mask.shape, dtype=memory.states.dtype)  # [B, S]
        context, weights = self.attention(
            query=query, keys=memory.keys, values=memory.states, mask=memory.mask, coverage=coverage
        )
        # The coverage is a record of where the decoder has looked, not a path for gradients: backprop
        # through every earlier step's weights into the score made training diverge (gradient norms
        # growing to ~1,600 within 4 epochs on the built-in task, docs/RESULTS.md), so it is detached.
        return context, weights, None if coverage is None else (coverage + weights).detach()

    def _run_cell(
        self, embedded: torch.Tensor, fed: torch.Tensor | None, state: DecoderState
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """The recurrent cell on ``[embedded; fed]`` ([B, E (+ F)], F the fed width) for one step: the
        top layer's output [B, H] and the new state as the nn module returns it."""
        rnn_input = embedded if fed is None else torch.cat([embedded, fed], dim=-1)  # [B, E (+ F)]
        output, new_state = self.rnn(rnn_input.unsqueeze(1), state.as_rnn_input())
        return output.squeeze(1), new_state

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits [..., V] from features [..., H (+ He)], through the readout if there is one
        (an input-feeding decoder's features have been through it already)."""
        if self.readout is not None and not self.input_feeding:
            features = torch.tanh(self.readout(features))  # [..., R]
        return linear(self.output, features)  # self.output(features), into cache-aligned rows

    def _scores(
        self, features: torch.Tensor, embedded: torch.Tensor, weights: torch.Tensor | None, memory: Memory
    ) -> torch.Tensor:
        """The output of one step ([B, ...]) or many ([B, T, ...]): logits [B, (T,) V], or for a copy
        decoder the log-probabilities [B, (T,) V_ext] of the pointer-generator mixture."""
        logits = self._logits(features)
        if self.p_gen is None:
            return logits
        assert weights is not None and memory.copy_ids is not None  # a copy decoder has attention and copy ids
        gate = self.p_gen(torch.cat([features, embedded], dim=-1))  # [B, (T,) 1]
        return copy_mixture(logits, gate, weights, memory.copy_ids, memory.extended_size)

    def step(
        self, prev_tokens: torch.Tensor, state: DecoderState, memory: Memory
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One decoder step.

        Args:
            prev_tokens: [B] the previous output token (``<sos>`` at the first step).
            state: hidden (and cell) [L, B, H] after the previous step.
            memory: encoder states [B, S, He], mask [B, S] and projected keys (and copy ids).

        Returns:
            logits [B, V] (for a copy decoder log-probabilities [B, V_ext]), the new state, and the
            attention weights [B, S] (None without attention).
        """
        if prev_tokens.dim() != 1:
            raise ValueError(f"expected prev_tokens [B], got {tuple(prev_tokens.shape)}")
        features, embedded, state, weights = self._features(prev_tokens, state, memory)
        return self._scores(self.dropout(features), embedded, weights, memory), state, weights  # [B, V(_ext)]

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
            tgt_input: [B, T] ``<sos> y_1 ... y_{T-1}`` (gold tokens; extended ids for a copy decoder).

        Returns:
            logits [B, T, V] (for a copy decoder log-probabilities [B, T, V_ext]) and attention
            weights [B, T, S] (None without attention).
        """
        if tgt_input.dim() != 2:
            raise ValueError(f"expected tgt_input [B, T], got {tuple(tgt_input.shape)}")
        if self.attention is None and teacher_forcing >= 1.0:
            return self._unroll_teacher_forced(tgt_input, state), None
        features, embedded, attention = self.unroll(tgt_input, state, memory, teacher_forcing=teacher_forcing)
        return self._scores(self.dropout(features), embedded, attention, memory), attention  # [B, T, V(_ext)]

    def unroll(
        self, tgt_input: torch.Tensor, state: DecoderState, memory: Memory, *, teacher_forcing: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`forward`'s loop over the steps, up to (not including) the output layer: features
        [B, T, H (+ He)] (with input feeding the attentional vectors [B, T, R]), the input
        embeddings [B, T, E] and the attention weights [B, T, S] (None without attention)."""
        if tgt_input.dim() != 2:
            raise ValueError(f"expected tgt_input [B, T], got {tuple(tgt_input.shape)}")
        steps = tgt_input.size(1)
        forced = (torch.rand(steps) < teacher_forcing).tolist()  # one draw per step
        # The gold tokens are embedded in one lookup: one embedding gradient for the batch instead
        # of a dense [V, E] one per step (which backward would fill with zeros and add up T times).
        # unbind, not gold[:, t]: its backward is one stack, where T selects would each fill a
        # zero [B, T, E] gradient.
        embedded_gold = self._embed(tgt_input)  # [B, T, E]
        gold = embedded_gold.unbind(1)  # T x [B, E]
        # Split where the cell reads more than the embedding: a context or a fed vector.
        cell = None
        if self.split_cells and self.attention is not None and SplitCell.applies(self.rnn, embedded_gold):
            cell = SplitCell(self.rnn, self.embedding.embedding_dim)
            gold_projected = cell.project(embedded_gold).unbind(1)  # T x [B, G*H]
        features_per_step, embedded_per_step, weights_per_step = [], [], []
        prev = None  # the model's own prediction, for a step that does not read the gold token
        for t in range(steps):
            embedded = gold[t] if prev is None else self._embed(prev)  # [B, E]; step 0 reads <sos>
            run_cell = None if cell is None else cell.step(gold_projected[t] if prev is None else None)
            features, embedded, state, weights = self._step_features(embedded, state, memory, run_cell)
            features_per_step.append(features)
            embedded_per_step.append(embedded)
            weights_per_step.append(weights)
            prev = None
            if t + 1 < steps and not forced[t + 1]:
                with torch.no_grad():  # a copied word (id >= V) is read as <unk> by the next step
                    prev = self._scores(features, embedded, weights, memory).argmax(dim=-1)
        features = torch.stack(features_per_step, dim=1)  # [B, T, H (+ He)]
        embedded = torch.stack(embedded_per_step, dim=1)  # [B, T, E]
        attention = torch.stack(weights_per_step, dim=1) if self.attention is not None else None  # [B, T, S]
        return features, embedded, attention

    def _unroll_teacher_forced(self, tgt_input: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """Without attention and with gold inputs every step, the cell can run over the whole
        sequence in one call; the result equals stepping one token at a time."""
        embedded = self.dropout(self.embedding(tgt_input))  # [B, T, E]
        outputs, _ = self.rnn(embedded, state.as_rnn_input())  # [B, T, H]
        return self._logits(self.dropout(outputs))  # [B, T, V]
