"""Multi-head attention over the encoder states of a recurrent decoder (Vaswani et al. 2017,
"Attention Is All You Need", section 3.2.2, with one query per step: the decoder's state)."""

from __future__ import annotations

import math

import torch
from torch import nn

from seq2seq.models.attention import AttentionOptions, CoverageTerm, ScoredAttention


class MultiHeadAttention(ScoredAttention):
    """k heads of scaled dot-product attention over the encoder states (Vaswani et al. 2017,
    section 3.2.2), queried by the recurrent decoder's state:

        head_i  = softmax(q_i K_i^T / sqrt(d)) V_i     q_i = h_t W_i^Q, K_i = H_s W_i^K, V_i = H_s W_i^V
        c_t     = [head_1; ...; head_k] W^O            d = A / k, W^O [A, He]

    The context keeps the encoder's width He, so the decoder around it is unchanged. The weights it
    returns are the heads' mean [B, S] (it sums to 1, so copy reads it as any other attention);
    :meth:`head_weights` gives each head's [B, k, S]. With coverage, each head's score gets its own
    term w_c,i c_ts (:class:`~seq2seq.models.attention.CoverageTerm`), the coverage being the sum
    of the mean weights.
    """

    supports_coverage = True

    def __init__(self, *, query_size: int, key_size: int, attention_size: int, heads: int,
                 coverage: bool = False) -> None:
        super().__init__()
        if heads < 1 or attention_size % heads:
            raise ValueError(f"attention_size {attention_size} must be divisible by heads {heads}")
        self.heads, self.head_size = heads, attention_size // heads
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W^Q
        self.key_value_proj = nn.Linear(key_size, 2 * attention_size, bias=False)  # [W^K; W^V] in one product
        self.output_proj = nn.Linear(attention_size, key_size, bias=False)  # W^O
        self.coverage_term = CoverageTerm(heads) if coverage else None

    @classmethod
    def from_options(cls, *, query_size: int, key_size: int, options: AttentionOptions) -> MultiHeadAttention:
        return cls(query_size=query_size, key_size=key_size, attention_size=options.attention_size,
                   heads=options.heads, coverage=options.coverage)

    def project_keys(self, states: torch.Tensor) -> torch.Tensor:
        return self.key_value_proj(states)  # [B, S, 2A]: the keys K then the values V of every head

    def _split(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, _ = keys.shape
        keys_values = keys.view(batch, length, 2, self.heads, self.head_size)  # [B, S, 2, k, d]
        return keys_values[:, :, 0].transpose(1, 2), keys_values[:, :, 1].transpose(1, 2)  # [B, k, S, d] each

    def score(self, query: torch.Tensor, keys: torch.Tensor, coverage: torch.Tensor | None) -> torch.Tensor:
        """Each head's scaled dot products q_i . k_i,s / sqrt(d): [B, k, S], one row per head (so
        :meth:`attend`, not the base class, normalises them)."""
        key_heads, _ = self._split(keys)  # [B, k, S, d]
        queries = self.query_proj(query).view(query.size(0), self.heads, self.head_size, 1)  # [B, k, d, 1]
        scores = torch.matmul(key_heads, queries).squeeze(-1) / math.sqrt(self.head_size)  # [B, k, S]
        return self.add_coverage(scores, coverage)

    def head_weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
                     coverage: torch.Tensor | None = None) -> torch.Tensor:
        """Each head's weights [B, k, S] (0 at padding)."""
        scores = self.score(query, keys, coverage)  # [B, k, S]
        return torch.softmax(scores.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=-1)  # [B, k, S]

    def attend(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
        coverage: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """context [B, He] and the heads' mean weights [B, S]; ``values`` are unused (the heads read
        their own projections from ``keys``)."""
        weights = self.head_weights(query, keys, mask, coverage)  # [B, k, S]
        _, value_heads = self._split(keys)  # [B, k, S, d]
        heads = torch.matmul(weights.unsqueeze(2), value_heads).squeeze(2)  # [B, k, d]
        context = self.output_proj(heads.reshape(query.size(0), -1))  # [B, A] -> [B, He]
        return context, weights.mean(dim=1)  # [B, He], [B, S]
