"""The named model presets (``--preset`` / ``model.preset``): the seed's three architectures, the
attention family, copy, and the Transformer."""

from __future__ import annotations

from typing import Any

from seq2seq.config.errors import ConfigError, short_repr

_SIZES = {"embedding_size": 128, "hidden_size": 256}

PRESETS: dict[str, dict[str, Any]] = {
    # Sutskever et al. 2014 / Cho et al. 2014 style: the final encoder state is the only context.
    "rnn": {"encoder": {"cell": "rnn", **_SIZES}, "decoder": {"cell": "rnn", "attention": "none", **_SIZES}},
    "gru": {"encoder": {"cell": "gru", **_SIZES}, "decoder": {"cell": "gru", "attention": "none", **_SIZES}},
    "lstm": {"encoder": {"cell": "lstm", **_SIZES}, "decoder": {"cell": "lstm", "attention": "none", **_SIZES}},
    # Bahdanau et al. 2015: additive attention over all encoder states.
    "gru-attention": {
        "encoder": {"cell": "gru", **_SIZES},
        "decoder": {"cell": "gru", "attention": "bahdanau", **_SIZES},
    },
    "lstm-attention": {
        "encoder": {"cell": "lstm", **_SIZES},
        "decoder": {"cell": "lstm", "attention": "bahdanau", **_SIZES},
    },
    # See et al. 2017 (pointer-generator): lstm-attention that can also copy source words,
    # including words outside the target vocabulary (identifiers, literals).
    "lstm-attention-copy": {
        "encoder": {"cell": "lstm", **_SIZES},
        "decoder": {"cell": "lstm", "attention": "bahdanau", "copy": True, **_SIZES},
    },
}


# Luong et al. 2015: global attention queried with the current state, and local-p (section 3.2),
# each with input feeding and the attentional vector h~_t = tanh(W_c [c_t; h_t]) (sections 3.1, 3.3).
_LUONG = {"input_feeding": True}  # readout_size: the decoder's hidden size
_VARIANTS: dict[str, dict[str, Any]] = {
    "luong-dot": {"attention": "luong-dot", **_LUONG},
    "luong-general": {"attention": "luong-general", **_LUONG},
    "luong-concat": {"attention": "luong-concat", **_LUONG},
    "local-p": {"attention": "local-p", **_LUONG},
    # Vaswani et al. 2017's multi-head scaled dot product, queried like Bahdanau's by the previous state
    "multihead": {"attention": "multihead", "attention_heads": 4},
    # Tu et al. 2016 / See et al. 2017: Bahdanau's score also reads the coverage vector (and training
    # adds the coverage loss: train.coverage_weight defaults to 0.1 for a coverage model)
    "attention-coverage": {"attention": "bahdanau", "coverage": True},
}
for _cell in ("lstm", "gru"):
    for _name, _decoder in _VARIANTS.items():
        PRESETS[f"{_cell}-{_name}"] = {
            "encoder": {"cell": _cell, **_SIZES}, "decoder": {"cell": _cell, **_decoder, **_SIZES},
        }


# Vaswani et al. 2017, "Attention Is All You Need": model.transformer's defaults (a small base, see
# TransformerConfig). Trained as the paper does with train.lr_schedule=inverse_sqrt, adam_betas [0.9, 0.98]
# and label_smoothing 0.1; the preset holds the model section only, so these are --set keys.
PRESETS["transformer"] = {
    "architecture": "transformer",
    "transformer": {"d_model": 256, "heads": 4, "encoder_layers": 3, "decoder_layers": 3, "ffn_size": 1024, "dropout": 0.1},
}
# ... with See et al. 2017's pointer-generator copy over its last cross-attention (the NL -> code recipes)
PRESETS["transformer-copy"] = {
    "architecture": "transformer",
    "transformer": {**PRESETS["transformer"]["transformer"], "copy": True},
}


def preset_model_config(name: str) -> dict[str, Any]:
    """The model section of a named preset, as a plain dict (so overrides can be merged)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {short_repr(name)}; valid presets: {', '.join(PRESETS)}")
    # a copy of every section (encoder, decoder, transformer) and value (architecture)
    return {"preset": name, **{key: dict(value) if isinstance(value, dict) else value for key, value in PRESETS[name].items()}}

