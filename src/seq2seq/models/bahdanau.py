"""Additive attention (Bahdanau, Cho and Bengio 2015, "Neural Machine Translation by Jointly
Learning to Align and Translate", section 3.1 and appendix A.1.2), with optional coverage.

The seed specification writes the score as

    score(h_t, h_s) = v^T tanh(W [h_t; h_s])

with ``h_t`` the decoder's previous hidden state (the query) and ``h_s`` an encoder state.
Splitting ``W`` column-wise into ``[W_q | W_k]`` gives ``W [h_t; h_s] = W_q h_t + W_k h_s``,
which is what the code computes: ``query_proj`` is ``W_q``, ``key_proj`` is ``W_k`` and
``energy`` is ``v``. The split lets ``W_k h_s`` be computed once per batch
(:meth:`BahdanauAttention.project_keys`) instead of once per decoder step; the result is
identical, which the NumPy reference in :mod:`seq2seq.reference` checks with the concatenated
form. Like the formula (and the paper), no bias is used.

With coverage (Tu et al. 2016, "Modeling Coverage for Neural Machine Translation"; See et al.
2017, eq. 11) the score also reads the coverage c_t [B, S], the sum of the previous steps'
attention weights, through one more column ``w_c`` of ``W``:

    score(h_t, h_s, c_ts) = v^T tanh(W_q h_t + W_k h_s + w_c c_ts)

so the model can learn to look away from source words it has already attended to.

On a CPU, training and decoding run this score through the fast paths of
:mod:`seq2seq.models.fast_paths` (same values; tested there).
"""

from __future__ import annotations

import torch
from torch import nn

from seq2seq.models.attention import AttentionOptions, ScoredAttention


class BahdanauAttention(ScoredAttention):
    supports_coverage = True

    def __init__(self, *, query_size: int, key_size: int, attention_size: int, coverage: bool = False) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W_q
        self.key_proj = nn.Linear(key_size, attention_size, bias=False)  # W_k
        self.energy = nn.Linear(attention_size, 1, bias=False)  # v
        self.coverage_proj = nn.Linear(1, attention_size, bias=False) if coverage else None  # w_c

    @classmethod
    def from_options(cls, *, query_size: int, key_size: int, options: AttentionOptions) -> BahdanauAttention:
        return cls(query_size=query_size, key_size=key_size, attention_size=options.attention_size,
                   coverage=options.coverage)

    def project_keys(self, states: torch.Tensor) -> torch.Tensor:
        """``W_k h_s`` for every source position: [B, S, He] -> [B, S, A]."""
        return self.key_proj(states)

    def coverage_keys(self, keys: torch.Tensor, coverage: torch.Tensor | None) -> torch.Tensor:
        """``W_k h_s + w_c c_ts`` [B, S, A]: the keys, plus the coverage term of a coverage model."""
        if self.coverage_proj is None:
            return keys
        if coverage is None:
            raise ValueError("a coverage attention needs the coverage vector [B, S]")
        return keys + self.coverage_proj(coverage.unsqueeze(-1).to(keys.dtype))  # [B, S, A]

    def score(self, query: torch.Tensor, keys: torch.Tensor, coverage: torch.Tensor | None) -> torch.Tensor:
        projected = self.query_proj(query)  # W_q h_t: [B, Hq] -> [B, A]
        hidden = torch.tanh(projected.unsqueeze(1) + self.coverage_keys(keys, coverage))  # [B, S, A]
        return self.energy(hidden).squeeze(-1)  # v^T tanh(...): [B, S]
