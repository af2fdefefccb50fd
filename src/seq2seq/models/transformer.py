"""The Transformer (Vaswani et al. 2017, "Attention Is All You Need"): an encoder-decoder made of
attention and position-wise feed-forward layers only, beside the recurrent ones.

The file follows the paper top to bottom:

- section 3.2: scaled dot-product attention (eq. 1) and multi-head attention (3.2.2);
- section 3.3: the position-wise feed-forward network (eq. 2);
- section 3.1 and 5.4: each sub-layer in a residual block with dropout and layer norm;
- sections 3.4 and 3.5: embeddings scaled by sqrt(d_model), plus positional encodings;
- the encoder and decoder stacks (3.1), and the model with the toolkit's interface
  (:mod:`seq2seq.models.interface`): ``encode`` once, ``decoder.step`` per token with a key/value
  cache (:mod:`seq2seq.models.transformer_state`), ``forward`` for training.

Letters: B batch, S source length, T target length, N positions computed in one call (T in
training, 1 per decoding step), M positions attended to, D d_model, h heads, d_k = D / h,
F the feed-forward size, V the target vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq.models.copy import copy_mixture, extended_size
from seq2seq.models.dropout import Dropout
from seq2seq.models.linear import linear
from seq2seq.models.transformer_state import TransformerMemory, TransformerState


# --------------------------------------------------------------------------- 3.2 attention
def scaled_dot_product(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, *,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eq. 1, per head: softmax(Q K^T / sqrt(d_k)) V.

    ``query`` [B, h, N, d_k], ``keys`` and ``values`` [B, h, M, d_k], ``mask`` broadcastable to
    [B, h, N, M], True where a query may attend (None: everywhere) -> the context [B, h, N, d_k] and,
    with ``need_weights``, the weights [B, h, N, M].

    On CUDA (and other accelerators) the products go to PyTorch's fused kernel. It returns no
    weights, and on the CPU, at this toolkit's lengths (tens of positions), its flash kernel
    took 1.7x as long in float32 and 5.8x in bf16 as the expression written out (forward and
    backward at [128, 4 heads, 20 queries, 22 keys, 64]; bench/kernels.py, docs/BENCHMARKS.md). So
    ``need_weights`` and the CPU compute it explicitly; a test pins the two forms together.
    """
    if not need_weights and query.device.type != "cpu":
        return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask), None
    scores = query @ keys.transpose(-2, -1) / math.sqrt(query.size(-1))  # [B, h, N, M]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # [B, h, N, M]; every row has a real key, so no NaN
    return weights @ values, weights if need_weights else None


class TransformerAttention(nn.Module):
    """Section 3.2.2: MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O, head_i =
    Attention(Q W_i^Q, K W_i^K, V W_i^V). The h heads' projections are side by side in one matrix
    each. Keys and values are projected by :meth:`project_keys_values` so that a caller can keep
    them: the decoder caches its self-attention's, and projects the encoder's once per batch."""

    def __init__(self, *, d_model: int, heads: int) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads, self.head_size = heads, d_model // heads
        self.query_proj = nn.Linear(d_model, d_model, bias=False)  # W^Q of every head
        self.key_value_proj = nn.Linear(d_model, 2 * d_model, bias=False)  # [W^K; W^V]
        self.output_proj = nn.Linear(d_model, d_model, bias=False)  # W^O

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.heads, self.head_size).transpose(1, 2)  # [B, h, N, d_k]

    def project_keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, M, D] -> keys and values [B, h, M, d_k]."""
        keys, values = self.key_value_proj(x).chunk(2, dim=-1)  # [B, M, D] each
        return self._split_heads(keys), self._split_heads(values)

    def forward(
        self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, *,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Queries ``x`` [B, N, D] over ``keys``/``values`` [B, h, M, d_k] -> [B, N, D], and with
        ``need_weights`` the weights averaged over the heads [B, N, M] (else None)."""
        query = self._split_heads(self.query_proj(x))  # [B, h, N, d_k]
        context, weights = scaled_dot_product(query, keys, values, mask, need_weights=need_weights)
        batch, _, length, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, length, -1)  # the heads concatenated, [B, N, D]
        return self.output_proj(context), None if weights is None else weights.mean(dim=1)


# --------------------------------------------------------------------------- 3.3 feed-forward
class FeedForward(nn.Module):
    """Eq. 2: FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, the same at every position: [B, N, D] -> [B, N, D]."""

    def __init__(self, *, d_model: int, ffn_size: int) -> None:
        super().__init__()
        self.inner = nn.Linear(d_model, ffn_size)  # W_1, b_1
        self.outer = nn.Linear(ffn_size, d_model)  # W_2, b_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(torch.relu(self.inner(x)))


# --------------------------------------------------------------------------- 3.1 residual blocks
class Residual(nn.Module):
    """A sub-layer's residual connection with dropout (section 5.4, "residual dropout") and layer norm:

    - post-norm, the paper's (section 3.1): LayerNorm(x + Dropout(Sublayer(x)));
    - pre-norm (Wang et al. 2019, "Learning Deep Transformer Models for Machine Translation"):
      x + Dropout(Sublayer(LayerNorm(x))), which trains deep stacks without a careful warm-up;
      the stack then ends with one more layer norm.

    A layer calls ``inputs(x)`` for what the sub-layer reads and ``add(x, y)`` with its output ``y``.
    """

    def __init__(self, *, d_model: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        self.pre_norm = pre_norm

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if self.pre_norm else x

    def add(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(y)
        return x if self.pre_norm else self.norm(x)


class EncoderLayer(nn.Module):
    """Section 3.1: multi-head self-attention, then the feed-forward network, each a residual block."""

    def __init__(self, *, d_model: int, heads: int, ffn_size: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attention = TransformerAttention(d_model=d_model, heads=heads)
        self.attention_block = Residual(d_model=d_model, dropout=dropout, pre_norm=pre_norm)
        self.ffn = FeedForward(d_model=d_model, ffn_size=ffn_size)
        self.ffn_block = Residual(d_model=d_model, dropout=dropout, pre_norm=pre_norm)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` [B, S, D], ``mask`` [B, 1, 1, S] (padding keys False) -> [B, S, D]."""
        h = self.attention_block.inputs(x)
        x = self.attention_block.add(x, self.self_attention(h, *self.self_attention.project_keys_values(h), mask)[0])
        return self.ffn_block.add(x, self.ffn(self.ffn_block.inputs(x)))


class DecoderLayer(nn.Module):
    """Section 3.1: masked self-attention over the target prefix, attention over the encoder output
    ("encoder-decoder attention", 3.2.3), then the feed-forward network, each a residual block."""

    def __init__(self, *, d_model: int, heads: int, ffn_size: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attention = TransformerAttention(d_model=d_model, heads=heads)
        self.self_block = Residual(d_model=d_model, dropout=dropout, pre_norm=pre_norm)
        self.cross_attention = TransformerAttention(d_model=d_model, heads=heads)
        self.cross_block = Residual(d_model=d_model, dropout=dropout, pre_norm=pre_norm)
        self.ffn = FeedForward(d_model=d_model, ffn_size=ffn_size)
        self.ffn_block = Residual(d_model=d_model, dropout=dropout, pre_norm=pre_norm)

    def forward(
        self, x: torch.Tensor, *, past: tuple[torch.Tensor, torch.Tensor] | None, self_mask: torch.Tensor | None,
        memory_keys: torch.Tensor, memory_values: torch.Tensor, memory_mask: torch.Tensor, need_weights: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """``x`` [B, N, D]: the N newest target positions; ``past``: keys and values [B, h, t, d_k] of
        the t positions before them (None: there are none). Returns the output [B, N, D], the keys
        and values of all t + N positions (the next step's cache), and with ``need_weights`` the
        cross-attention weights averaged over the heads [B, N, S]."""
        h = self.self_block.inputs(x)
        keys, values = self.self_attention.project_keys_values(h)  # [B, h, N, d_k]
        if past is not None:
            keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)  # [B, h, t+N, d_k]
        x = self.self_block.add(x, self.self_attention(h, keys, values, self_mask)[0])
        h = self.cross_block.inputs(x)
        context, weights = self.cross_attention(h, memory_keys, memory_values, memory_mask, need_weights=need_weights)
        x = self.cross_block.add(x, context)
        return self.ffn_block.add(x, self.ffn(self.ffn_block.inputs(x))), (keys, values), weights


# --------------------------------------------------------------------------- 3.4, 3.5 embeddings
def sinusoids(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Section 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(pos / 10000^(2i/D)).
    ``positions`` [N] -> [N, D]."""
    two_i = torch.arange(0, size, 2, dtype=torch.float32, device=positions.device)  # [ceil(D/2)]
    angles = positions.float().unsqueeze(1) / 10000.0 ** (two_i / size)  # [N, ceil(D/2)]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :size]  # interleaved, [N, D]


class Embeddings(nn.Module):
    """Section 3.4: token embeddings multiplied by sqrt(D), plus the positions (3.5: sinusoidal, or
    learned, which the paper found "nearly identical"), then dropout (5.4). ``tokens`` may be
    another side's embedding, to share one table between source and target."""

    def __init__(
        self, *, vocab_size: int, d_model: int, pad_index: int, positions: str = "sinusoidal",
        max_positions: int = 512, dropout: float = 0.1, tokens: nn.Embedding | None = None,
    ) -> None:
        super().__init__()
        if positions not in ("sinusoidal", "learned"):
            raise ValueError(f"positions must be sinusoidal or learned, not {positions!r}")
        self.tokens = tokens if tokens is not None else nn.Embedding(vocab_size, d_model, padding_idx=pad_index)
        self.learned = nn.Embedding(max_positions, d_model) if positions == "learned" else None
        self.dropout = Dropout(dropout)
        self.scale = math.sqrt(d_model)

    @property
    def max_positions(self) -> int | None:
        """The number of positions this embedding can encode (learned), or None (sinusoidal: any)."""
        return None if self.learned is None else self.learned.num_embeddings

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``tokens`` [B, N] at ``positions`` [N] -> sqrt(D) E[tokens] + PE[positions], [B, N, D], before
        dropout. The ONNX step graph calls this with positions computed inside the graph."""
        encoding = sinusoids(positions, self.tokens.embedding_dim) if self.learned is None else self.learned(positions)
        return self.tokens(tokens) * self.scale + encoding  # [B, N, D] + [N, D]

    def forward(self, tokens: torch.Tensor, *, start: int = 0) -> torch.Tensor:
        """``tokens`` [B, N] at positions start .. start + N - 1 -> [B, N, D]."""
        if self.max_positions is not None and start + tokens.size(1) > self.max_positions:
            raise ValueError(f"position {start + tokens.size(1) - 1} is beyond the learned positions: "
                             f"model.transformer.max_positions is {self.max_positions}")
        positions = torch.arange(start, start + tokens.size(1), device=tokens.device)  # [N]
        return self.dropout(self.embed(tokens, positions))


# --------------------------------------------------------------------------- 3.1 the stacks
class TransformerEncoder(nn.Module):
    """Section 3.1: the embedded source through N encoder layers: src [B, S] -> states [B, S, D]."""

    def __init__(
        self, *, embeddings: Embeddings, layers: int, d_model: int, heads: int, ffn_size: int, dropout: float,
        pre_norm: bool,
    ) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.layers = nn.ModuleList(
            EncoderLayer(d_model=d_model, heads=heads, ffn_size=ffn_size, dropout=dropout, pre_norm=pre_norm)
            for _ in range(layers)
        )
        # pre-norm leaves the residual stream unnormalised: the stack's output gets one layer norm
        self.final_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        mask = src_mask[:, None, None, :]  # [B, 1, 1, S]: no query reads a padding key
        x = self.embeddings(src)  # [B, S, D]
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x)


class TransformerDecoder(nn.Module):
    """Section 3.1: N decoder layers over the embedded target prefix, then the output layer (3.4:
    with ``tie_output`` it shares the target embedding's matrix). ``forward`` reads a whole
    teacher-forced target at once; ``step`` one position, with the earlier ones' keys and values
    from the cache in :class:`TransformerState`, so a step costs one position, not the prefix."""

    def __init__(
        self, *, embeddings: Embeddings, vocab_size: int, layers: int, d_model: int, heads: int, ffn_size: int,
        dropout: float, pre_norm: bool, tie_output: bool, pad_index: int, copy: bool = False, unk_index: int = 1,
    ) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.layers = nn.ModuleList(
            DecoderLayer(d_model=d_model, heads=heads, ffn_size=ffn_size, dropout=dropout, pre_norm=pre_norm)
            for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        self.output = nn.Linear(d_model, vocab_size)
        if tie_output:
            self.output.weight = embeddings.tokens.weight  # [V, D]: one matrix for both
        self.heads, self.head_size, self.pad_index = heads, d_model // heads, pad_index
        # Copy (See et al. 2017, eq. 8 and 9, over the last layer's cross-attention, heads averaged):
        # p_gen = sigmoid(w . [h_t; x_t] + b) from the top layer's output h_t, which already holds
        # the cross-attention's context, and the embedded input x_t.
        self.p_gen = nn.Linear(2 * d_model, 1) if copy else None
        self.vocab_size, self.unk_index = vocab_size, unk_index

    def prepare_memory(
        self, states: torch.Tensor, src_mask: torch.Tensor, src_copy: torch.Tensor | None = None
    ) -> TransformerMemory:
        """Project the encoder states [B, S, D] to every layer's cross-attention keys and values, once;
        a copy decoder also keeps ``src_copy`` [B, S], the source tokens as extended target ids."""
        projected = [layer.cross_attention.project_keys_values(states) for layer in self.layers]
        keys, values = tuple(k for k, _ in projected), tuple(v for _, v in projected)
        if self.p_gen is None:
            if src_copy is not None:
                raise ValueError("src_copy was given, but this Transformer has no copy mechanism")
            return TransformerMemory(states, src_mask, keys, values)
        if src_copy is None or src_copy.shape != src_mask.shape:
            shape = None if src_copy is None else tuple(src_copy.shape)
            raise ValueError(f"a copy Transformer needs src_copy [B, S] = {tuple(src_mask.shape)}, got {shape}")
        return TransformerMemory(states, src_mask, keys, values, src_copy, extended_size(self.vocab_size, src_copy))

    def _embed(self, tokens: torch.Tensor, *, start: int = 0) -> torch.Tensor:
        """A copied word (extended id >= V) has no embedding of its own: it is read as ``<unk>``."""
        if self.p_gen is not None:
            tokens = tokens.masked_fill(tokens >= self.vocab_size, self.unk_index)
        return self.embeddings(tokens, start=start)

    def _output(self, h: torch.Tensor, x: torch.Tensor, weights: torch.Tensor, memory: TransformerMemory) -> torch.Tensor:
        """Logits [B, N, V] from the top layer's output ``h`` [B, N, D]; for a copy decoder the
        log-probabilities [B, N, V_ext] of the pointer-generator mixture, gated by [h; x] (``x`` the
        embedded inputs) over the cross-attention ``weights`` [B, N, S]."""
        logits = linear(self.output, h)  # nn.Linear's product, rows padded on the CPU (models/linear.py)
        if self.p_gen is None:
            return logits
        assert memory.copy_ids is not None  # prepare_memory checked it
        gate = self.p_gen(torch.cat([h, x], dim=-1))  # [B, N, 1]
        return copy_mixture(logits, gate, weights, memory.copy_ids, memory.extended_size)

    def initial_state(self, memory: TransformerMemory) -> TransformerState:
        """An empty cache: keys and values [B, h, 0, d_k] per layer."""
        empty = memory.states.new_zeros(memory.states.size(0), self.heads, 0, self.head_size)
        return TransformerState((empty,) * len(self.layers), (empty,) * len(self.layers), 0)

    def _layers(
        self, x: torch.Tensor, memory: TransformerMemory, *, past: TransformerState | None,
        self_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, TransformerState, torch.Tensor]:
        """``x`` [B, N, D] through every layer -> logits [B, N, V] (a copy decoder: log-probabilities
        [B, N, V_ext]), the new cache, and the last layer's cross-attention weights [B, N, S] (the
        "attention" the toolkit plots, scores and copies through)."""
        memory_mask = memory.mask[:, None, None, :]  # [B, 1, 1, S]
        inputs = x  # the embedded inputs, for the copy gate
        keys, values = [], []
        weights = None
        for i, layer in enumerate(self.layers):
            x, (layer_keys, layer_values), weights = layer(
                x, past=None if past is None else (past.keys[i], past.values[i]), self_mask=self_mask,
                memory_keys=memory.keys[i], memory_values=memory.values[i], memory_mask=memory_mask,
                need_weights=i == len(self.layers) - 1,
            )
            keys.append(layer_keys)
            values.append(layer_values)
        start = 0 if past is None else past.position
        state = TransformerState(tuple(keys), tuple(values), start + x.size(1))
        assert weights is not None  # the last layer computed them
        return self._output(self.final_norm(x), inputs, weights, memory), state, weights

    def forward(self, tgt_input: torch.Tensor, memory: TransformerMemory) -> tuple[torch.Tensor, torch.Tensor]:
        """``tgt_input`` [B, T] (<sos> y_1 ...) -> logits [B, T, V] and cross-attention [B, T, S]."""
        if tgt_input.dim() != 2 or tgt_input.size(0) != memory.states.size(0):
            raise ValueError(f"expected tgt_input [B, T] with B = {memory.states.size(0)}, got {tuple(tgt_input.shape)}")
        length = tgt_input.size(1)
        # Section 3.2.3: position t reads positions <= t only ("masking out ... illegal connections"),
        # and no position reads target padding (it follows every real token, so this changes only
        # padding rows, which the loss ignores: step, whose cache holds real positions, agrees).
        causal = torch.ones(length, length, dtype=torch.bool, device=tgt_input.device).tril()  # [T, T]
        self_mask = causal & (tgt_input != self.pad_index)[:, None, None, :]  # [B, 1, T, T]
        logits, _, attention = self._layers(self._embed(tgt_input), memory, past=None, self_mask=self_mask)
        return logits, attention

    def step(
        self, prev_tokens: torch.Tensor, state: TransformerState, memory: TransformerMemory
    ) -> tuple[torch.Tensor, TransformerState, torch.Tensor]:
        """``prev_tokens`` [B] at position ``state.position`` -> logits [B, V], the state with this
        position cached, and the cross-attention weights [B, S]."""
        if prev_tokens.dim() != 1:
            raise ValueError(f"expected prev_tokens [B], got {tuple(prev_tokens.shape)}")
        x = self._embed(prev_tokens.unsqueeze(1), start=state.position)  # [B, 1, D]
        logits, state, weights = self._layers(x, memory, past=state, self_mask=None)  # the cache is the past only
        return logits[:, 0], state, weights[:, 0]


# --------------------------------------------------------------------------- the model
class Transformer(nn.Module):
    """The encoder-decoder of Vaswani et al. 2017 with the toolkit's model interface
    (:class:`seq2seq.models.interface.EncoderDecoder`). It returns logits; the loss lives elsewhere."""

    def __init__(self, *, encoder: TransformerEncoder, decoder: TransformerDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    @property
    def copies(self) -> bool:
        """Whether the decoder copies source words (``model.transformer.copy``)."""
        return self.decoder.p_gen is not None

    @property
    def max_positions(self) -> int | None:
        """The longest source, and the most decoding steps, that learned positions cover
        (``model.transformer.max_positions``); None with sinusoids, which have no limit."""
        return self.decoder.embeddings.max_positions

    def reset_parameters(self) -> None:
        """Xavier-uniform matrices (as the reference tensor2tensor code), zero biases, unit layer
        norms, and embeddings from N(0, D^-1/2), which the sqrt(D) scale brings to unit size; padding
        rows zero. Embeddings come last, so a tied output layer keeps the embedding's init."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=module.embedding_dim ** -0.5)
                if module.padding_idx is not None:
                    nn.init.zeros_(module.weight[module.padding_idx])

    def encode(
        self, src: torch.Tensor, src_lengths: torch.Tensor, src_mask: torch.Tensor, *,
        src_copy: torch.Tensor | None = None,
    ) -> tuple[TransformerMemory, TransformerState]:
        """src [B, S] -> the memory (encoder states and projected keys/values; a copy model's
        ``src_copy`` [B, S]) and an empty cache."""
        if src.dim() != 2 or src_mask.shape != src.shape:
            raise ValueError(f"expected src [B, S] and src_mask of its shape, got {tuple(src.shape)} and {tuple(src_mask.shape)}")
        memory = self.decoder.prepare_memory(self.encoder(src, src_mask), src_mask, src_copy)
        return memory, self.decoder.initial_state(memory)

    def forward(
        self, src: torch.Tensor, src_lengths: torch.Tensor, src_mask: torch.Tensor, tgt_input: torch.Tensor, *,
        teacher_forcing: float = 1.0, src_copy: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, T, V] for every target position, and the last decoder layer's cross-attention
        averaged over the heads [B, T, S]."""
        if teacher_forcing < 1.0:
            raise ValueError(f"the Transformer trains with teacher forcing 1.0 (it reads the whole gold prefix at "
                             f"once); got {teacher_forcing}: set train.teacher_forcing=1.0")
        memory, _ = self.encode(src, src_lengths, src_mask, src_copy=src_copy)
        return self.decoder(tgt_input, memory)
