"""The names a config may give, and the classes they build: one literal dict per kind of component.

``model.decoder.attention`` names an entry of :data:`ATTENTIONS` ("none" for no attention); config
validation and :func:`seq2seq.models.build.build_model` both read this dict, so a new attention is
one class and one entry here (docs/EXTENDING.md). The architectures (``model.architecture``) are
the same kind of dict, :data:`seq2seq.models.build.ARCHITECTURES`, beside their builders.
"""

from __future__ import annotations

from seq2seq.models.bahdanau import BahdanauAttention
from seq2seq.models.luong import ConcatAttention, DotAttention, GeneralAttention, LocalPAttention, check_dot_sizes
from seq2seq.models.multihead import MultiHeadAttention

ATTENTIONS = {
    "bahdanau": BahdanauAttention,  # Bahdanau et al. 2015: v^T tanh(W_q h_{t-1} + W_k h_s)
    "luong-dot": DotAttention,  # Luong et al. 2015, eq. 8: h_t^T h_s
    "luong-general": GeneralAttention,  # Luong et al. 2015, eq. 8: h_t^T W_a h_s
    "luong-concat": ConcatAttention,  # Luong et al. 2015, eq. 8: v_a^T tanh(W_a [h_t; h_s])
    "local-p": LocalPAttention,  # Luong et al. 2015, section 3.2: general score in a Gaussian window
    "multihead": MultiHeadAttention,  # Vaswani et al. 2017, section 3.2.2, queried by the RNN state
}

# Attentions whose weights sum to 1 at every step (the copy mechanism mixes them into a distribution).
NORMALISED = frozenset(name for name in ATTENTIONS if name != "local-p")


def attention_names() -> list[str]:
    return ["none", *ATTENTIONS]


def check_attention(name: str, *, query_size: int, key_size: int, attention_size: int, heads: int,
                    coverage: bool, copy: bool) -> None:
    """Raise ValueError (naming the config key) if ``name`` cannot be built with these sizes and switches."""
    if name != "none" and name not in ATTENTIONS:
        raise ValueError(f"model.decoder.attention: unknown attention {name!r}; valid: {', '.join(attention_names())}")
    if name == "luong-dot":
        check_dot_sizes(query_size, key_size)
    if name == "multihead" and attention_size % heads:
        raise ValueError(
            f"model.decoder.attention_heads: {heads} heads do not divide attention_size {attention_size}; "
            f"valid head counts for it: {', '.join(str(k) for k in range(1, attention_size + 1) if attention_size % k == 0)}"
        )
    if coverage and not getattr(ATTENTIONS.get(name), "supports_coverage", False):
        valid = [n for n, cls in ATTENTIONS.items() if cls.supports_coverage]
        raise ValueError(f"model.decoder.coverage: true needs an attention whose score reads the coverage "
                         f"({', '.join(valid)}); got attention: {name}")
    if copy and name not in NORMALISED:
        raise ValueError(f"model.decoder.copy: true needs attention weights that sum to 1 (one of "
                         f"{', '.join(sorted(NORMALISED))}); got attention: {name}")
