"""``model``: the encoder, decoder and Transformer sections, and the checks across them (sizes, attention)."""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import Field, field_validator, model_validator

from seq2seq.config.errors import StrictModel, short_repr


class EncoderConfig(StrictModel):
    cell: Literal["rnn", "gru", "lstm"] = "lstm"
    embedding_size: int = Field(default=128, ge=1)
    hidden_size: int = Field(default=256, ge=1)
    layers: int = Field(default=1, ge=1)
    bidirectional: bool = False
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)


# The config key is ``copy``, which shadows pydantic's deprecated ``BaseModel.copy()`` method;
# nothing calls that method (``model_copy`` replaced it), so the warning at class creation is noise.
warnings.filterwarnings("ignore", message='Field name "copy" in "(DecoderConfig|TransformerConfig)" shadows',
                        category=UserWarning)


class DecoderConfig(StrictModel):
    cell: Literal["rnn", "gru", "lstm"] = "lstm"
    embedding_size: int = Field(default=128, ge=1)
    hidden_size: int = Field(default=256, ge=1)
    layers: int = Field(default=1, ge=1)
    attention: str = Field(
        default="none",
        description="none, or an attention of seq2seq.models.registry.ATTENTIONS: bahdanau, luong-dot, "
        "luong-general, luong-concat, local-p, multihead",
    )
    attention_size: int = Field(default=256, ge=1)
    attention_heads: int = Field(default=4, ge=1, description="multihead: the number of heads (divides attention_size)")
    attention_window: int = Field(default=10, ge=1, description="local-p: the half-width D of the window (Luong et al.: 10)")
    coverage: bool = Field(
        default=False,
        description="coverage (Tu et al. 2016; See et al. 2017): the sum of past attention weights feeds the score "
        "(inside the additive scores' tanh; added to the score, per head, for the dot-product and bilinear ones); "
        "train.coverage_weight adds the coverage loss",
    )
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    copy: bool = Field(default=False, description="pointer-generator copy mechanism (See et al. 2017); needs attention")
    readout_size: int | None = Field(
        default=None, ge=1,
        description="a tanh layer of this size between [rnn output; context] and the vocabulary projection "
        "(Luong et al. 2015's attentional vector); null = project directly, as the seed architectures do",
    )
    input_feeding: bool = Field(
        default=False,
        description="Luong et al. 2015 input feeding (as OpenNMT-py): attend from the new hidden state after the "
        "recurrent step and feed the attentional vector to the next step; needs attention; readout_size null = hidden_size",
    )

    @field_validator("attention")
    @classmethod
    def _registered_attention(cls, name: str) -> str:
        from seq2seq.models.registry import attention_names

        if name not in attention_names():
            raise ValueError(f"unknown attention {short_repr(name)}; valid: {', '.join(attention_names())}")
        return name

    @model_validator(mode="after")
    def _input_feeding_needs_attention(self) -> DecoderConfig:
        if self.input_feeding and self.attention == "none":
            raise ValueError(
                "input_feeding: true needs attention (it feeds the attentional vector h~_t = tanh(W_r [h_t; c_t])); "
                f"got attention: {self.attention}"
            )
        if self.input_feeding and self.readout_size is None:
            self.readout_size = self.hidden_size  # the attentional vector's size: Luong et al.'s, and OpenNMT-py's
        return self


class TransformerConfig(StrictModel):
    """The Transformer of ``model.architecture: transformer`` (Vaswani et al. 2017); the defaults are
    the ``transformer`` preset's, a small "base": d_k = d_model / heads = 64 and ffn_size = 4 d_model as
    in the paper, at half its width and depth, so that it trains on two CPU cores."""

    d_model: int = Field(default=256, ge=1, description="the width of every layer (the paper's base: 512)")
    heads: int = Field(default=4, ge=1, description="attention heads; must divide d_model (base: 8)")
    encoder_layers: int = Field(default=3, ge=1, description="N of the encoder stack (base: 6)")
    decoder_layers: int = Field(default=3, ge=1, description="N of the decoder stack (base: 6)")
    ffn_size: int = Field(default=1024, ge=1, description="inner size of the feed-forward networks (base: 2048)")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="residual and embedding dropout (section 5.4)")
    positions: Literal["sinusoidal", "learned"] = Field(default="sinusoidal", description="section 3.5")
    max_positions: int = Field(default=512, ge=1, description="learned positions: the longest sequence")
    norm: Literal["post", "pre"] = Field(
        default="post", description="post: LayerNorm(x + Sublayer(x)) as the paper; pre: x + Sublayer(LayerNorm(x))"
    )
    share_embeddings: bool = Field(
        default=False, description="one embedding table for source and target (the vocabularies must be of one size)"
    )
    tie_output: bool = Field(default=True, description="the output layer shares the target embedding's matrix (3.4)")
    copy: bool = Field(default=False, description="pointer-generator copy (See et al. 2017) over the last decoder "
                       "layer's cross-attention, heads averaged")

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.d_model % self.heads:
            raise ValueError(f"model.transformer.d_model={self.d_model} is not divisible by "
                             f"model.transformer.heads={self.heads} (each head gets d_model / heads dimensions)")
        return self


class ModelConfig(StrictModel):
    preset: str | None = None
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    transformer: TransformerConfig = Field(
        default_factory=TransformerConfig, description="read by model.architecture: transformer only"
    )
    init: Literal["pytorch", "uniform"] = Field(
        default="pytorch",
        description="pytorch: each module's own default (embeddings N(0, 1)); uniform: every parameter "
        "U(-init_range, init_range), OpenNMT-py's default (param_init 0.1)",
    )
    init_range: float = Field(default=0.1, gt=0, le=1, description="the bound of init: uniform")

    architecture: str = Field(default="recurrent", description="the encoder-decoder family (seq2seq.models.registry.ARCHITECTURES)")

    @model_validator(mode="after")
    def _layers_compatible(self) -> ModelConfig:
        from seq2seq.models.build import ARCHITECTURES
        from seq2seq.models.registry import check_attention

        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {short_repr(self.architecture)}; valid: {', '.join(ARCHITECTURES)}")
        if self.architecture == "transformer":  # the recurrent sections are not read
            if self.decoder.copy:
                raise ValueError("model.decoder.copy is the recurrent decoder's key (model.architecture: transformer): "
                                 "set model.transformer.copy=true instead, and model.decoder.copy=false")
            if self.decoder.coverage:
                raise ValueError("model.decoder.coverage: the Transformer has no coverage (model.architecture: "
                                 "transformer); set model.decoder.coverage=false")
            return self
        if self.decoder.copy and self.decoder.attention == "none":
            raise ValueError("model.decoder.copy: true needs attention (it copies source words through the attention "
                             "weights); got model.decoder.attention: none")
        if self.decoder.layers not in (self.encoder.layers, 1):
            raise ValueError(
                f"decoder.layers={self.decoder.layers} must equal encoder.layers={self.encoder.layers} or be 1"
            )
        dec = self.decoder
        key_size = self.encoder.hidden_size * (2 if self.encoder.bidirectional else 1)
        check_attention(dec.attention, query_size=dec.hidden_size, key_size=key_size, attention_size=dec.attention_size,
                        heads=dec.attention_heads, coverage=dec.coverage, copy=dec.copy)
        return self

