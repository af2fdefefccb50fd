"""The attention scores of Luong, Pham and Manning 2015, "Effective Approaches to Attention-based
Neural Machine Translation": global attention (section 3.1, eq. 8) and local-p attention
(section 3.2, eqs. 9-10).

Luong's global attention is queried with the *current* decoder state h_t (after the recurrent
step, not before it as in Bahdanau et al.), and its context feeds the attentional vector
``h~_t = tanh(W_c [c_t; h_t])``, which is fed to the next step (input feeding, section 3.3). The
decoder does that when ``input_feeding`` is on; the ``lstm-luong-*`` presets switch it on. The
scores (eq. 8), for the query h_t [B, H] and the encoder states h_s [B, S, He]:

    dot      score(h_t, h_s) = h_t^T h_s                    (needs H = He)
    general  score(h_t, h_s) = h_t^T W_a h_s                W_a [H, He]
    concat   score(h_t, h_s) = v_a^T tanh(W_a [h_t; h_s])   W_a [A, H + He], v_a [A]

``general`` precomputes ``W_a h_s`` for every source position once per batch, as the additive
score precomputes its key half.
"""

from __future__ import annotations

import torch
from torch import nn

from seq2seq.models.attention import AttentionOptions, CoverageTerm, ScoredAttention
from seq2seq.models.bahdanau import BahdanauAttention


def check_dot_sizes(query_size: int, key_size: int) -> None:
    if query_size != key_size:
        raise ValueError(
            f"model.decoder.attention: luong-dot: the dot score h_t^T h_s needs model.decoder.hidden_size ({query_size}) "
            f"to equal the encoder's output size ({key_size}: model.encoder.hidden_size, times 2 if bidirectional); "
            "use luong-general otherwise"
        )


class DotAttention(ScoredAttention):
    """Luong eq. 8, ``dot``: score(h_t, h_s) = h_t^T h_s. No parameters (with coverage: + w_c c_ts)."""

    supports_coverage = True

    def __init__(self, *, query_size: int, key_size: int, coverage: bool = False) -> None:
        super().__init__()
        check_dot_sizes(query_size, key_size)
        self.coverage_term = CoverageTerm() if coverage else None

    @classmethod
    def from_options(cls, *, query_size: int, key_size: int, options: AttentionOptions) -> DotAttention:
        return cls(query_size=query_size, key_size=key_size, coverage=options.coverage)

    def score(self, query: torch.Tensor, keys: torch.Tensor, coverage: torch.Tensor | None) -> torch.Tensor:
        scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # [B, S, H] x [B, H, 1] -> [B, S]
        return self.add_coverage(scores, coverage)


class GeneralAttention(ScoredAttention):
    """Luong eq. 8, ``general``: score(h_t, h_s) = h_t^T W_a h_s, with ``W_a h_s`` as the keys
    (with coverage: + w_c c_ts)."""

    supports_coverage = True

    def __init__(self, *, query_size: int, key_size: int, coverage: bool = False) -> None:
        super().__init__()
        self.key_proj = nn.Linear(key_size, query_size, bias=False)  # W_a [H, He]
        self.coverage_term = CoverageTerm() if coverage else None

    @classmethod
    def from_options(cls, *, query_size: int, key_size: int, options: AttentionOptions) -> GeneralAttention:
        return cls(query_size=query_size, key_size=key_size, coverage=options.coverage)

    def project_keys(self, states: torch.Tensor) -> torch.Tensor:
        return self.key_proj(states)  # W_a h_s: [B, S, He] -> [B, S, H]

    def score(self, query: torch.Tensor, keys: torch.Tensor, coverage: torch.Tensor | None) -> torch.Tensor:
        return self.add_coverage(torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1), coverage)  # [B, S]


class ConcatAttention(BahdanauAttention):
    """Luong eq. 8, ``concat``: score(h_t, h_s) = v_a^T tanh(W_a [h_t; h_s]).

    The expression is Bahdanau's additive score (``W_a`` split into query and key columns the same
    way, and coverage read the same way); what makes it Luong's is the query, the current state
    h_t, which the input-feeding decoder passes."""


class LocalPAttention(ScoredAttention):
    """Luong section 3.2, local-p attention with the ``general`` score (their best single model,
    Table 4).

    The decoder predicts an aligned source position for each step (eq. 9) and attends only to the
    window [p_t - D, p_t + D] around it, favouring positions near p_t with a Gaussian (eq. 10):

        p_t     = S_x * sigmoid(v_p^T tanh(W_p h_t))        S_x: the sentence's source length
        a_t(s)  = align(h_t, h_s) exp(-(s - p_t)^2 / (2 sigma^2)),   sigma = D / 2

    ``align`` is the softmax of the general score over the window's real positions. As in the
    paper, the Gaussian is applied after the softmax, so the weights sum to at most 1 (they are
    not renormalised); positions outside the window get exactly 0. (Luong et al. take
    p_t in [0, S]; positions here are 0 .. S_x - 1, with S_x the real length, not the padded one.)
    With coverage, the general score gets the term w_c c_ts before the window's softmax.
    """

    supports_coverage = True

    def __init__(self, *, query_size: int, key_size: int, attention_size: int, window: int,
                 coverage: bool = False) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"the local-p window D must be at least 1, got {window}")
        self.window = window
        self.key_proj = nn.Linear(key_size, query_size, bias=False)  # W_a of the general score
        self.position_proj = nn.Linear(query_size, attention_size, bias=False)  # W_p
        self.position_energy = nn.Linear(attention_size, 1, bias=False)  # v_p
        self.coverage_term = CoverageTerm() if coverage else None

    @classmethod
    def from_options(cls, *, query_size: int, key_size: int, options: AttentionOptions) -> LocalPAttention:
        return cls(query_size=query_size, key_size=key_size, attention_size=options.attention_size,
                   window=options.window, coverage=options.coverage)

    def project_keys(self, states: torch.Tensor) -> torch.Tensor:
        return self.key_proj(states)  # [B, S, H]

    def position(self, query: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The predicted aligned position p_t [B] (eq. 9), in [0, S_x] for each sentence's length S_x.
        In float32 even under bf16 autocast: bf16 holds whole numbers only up to 256 exactly."""
        dtype = torch.promote_types(query.dtype, torch.float32)
        lengths = mask.sum(dim=-1).to(dtype)  # [B]
        return lengths * torch.sigmoid(self.position_energy(torch.tanh(self.position_proj(query))).squeeze(-1).to(dtype))

    def score(self, query: torch.Tensor, keys: torch.Tensor, coverage: torch.Tensor | None) -> torch.Tensor:
        return self.add_coverage(torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1), coverage)  # general score [B, S]

    def normalize(self, scores: torch.Tensor, mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        center = self.position(query, mask).unsqueeze(-1)  # [B, 1]
        positions = torch.arange(scores.size(-1), device=scores.device, dtype=center.dtype)  # [S]
        distance = positions - center  # [B, S]
        # A window of 2D + 1 positions around p_t; p_t <= S_x, so the last real position is always in it.
        inside = distance.abs() <= self.window  # [B, S]
        align = torch.softmax(scores.masked_fill(~inside, float("-inf")), dim=-1)  # [B, S]
        sigma = self.window / 2
        return align * torch.exp(-distance.square() / (2 * sigma * sigma)).to(align.dtype)  # eq. 10
