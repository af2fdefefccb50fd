"""Typed, validated configuration: one pydantic model per component, YAML in and out.

Every model forbids unknown keys, so a typo such as ``train.learning_rat`` fails at load
time with the key's full dotted path and the list of valid keys, instead of being
silently ignored. Components never read this tree; only the ``build_*`` factories do.
"""

from __future__ import annotations

import difflib
import math
import reprlib
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration file, preset or ``--set`` override is invalid."""


# Values quoted in error messages are shortened: a config may hold a huge line or a YAML alias
# bomb, whose full repr would be exponentially long; the message only has to show which value.
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 80, 80, 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6
_SHORT_LIMIT = 200


def short_repr(value: object) -> str:
    """``repr(value)`` cut to at most a couple of hundred characters, for error messages."""
    text = _SHORT.repr(value)
    return text if len(text) <= _SHORT_LIMIT else text[: _SHORT_LIMIT - 3] + "..."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the pairs come from and how they are tokenized."""

    format: Literal["builtin", "conala", "django", "parallel", "tsv", "json"] = "builtin"
    path: str | None = Field(default=None, description="folder (conala, django, parallel) or file (tsv, json)")
    shards: str | None = Field(
        default=None,
        description="a `seq2seq preprocess` folder: the training pairs are streamed from its memory-mapped shards "
        "(made with these data settings, checked against its manifest) instead of being read and encoded here",
    )
    builtin_task: Literal["nl2code"] = "nl2code"
    builtin_train_size: int = Field(default=20000, ge=10)
    builtin_valid_size: int | None = Field(
        default=None, ge=5, description="built-in task: pairs in valid and in test each (default: builtin_train_size / 20)"
    )
    builtin_seed: int = 1234
    src_lang: str = Field(default="de", description="parallel: file suffix of the source; the Moses tokenizer's source language")
    tgt_lang: str = Field(default="en", description="parallel: file suffix of the target; the Moses tokenizer's target language")
    src_fields: list[str] = Field(default_factory=lambda: ["rewritten_intent", "intent"])
    tgt_field: str = "snippet"
    label_map: dict[str, str] | None = Field(default=None, description="tsv/json: raw target value -> target text")
    valid_size: int = Field(default=400, ge=1, description="conala, or tsv/json without a valid file: first N train examples")
    src_tokenizer: Literal["word", "space", "moses", "python"] = "word"
    tgt_tokenizer: Literal["word", "space", "moses", "python"] = "python"
    lowercase_src: bool = True
    lowercase_tgt: bool = Field(default=False, description="lower-case targets too; translation BLEU then compares lower-cased text")
    max_src_len: int = Field(default=100, ge=1, description="longer training pairs are dropped")
    max_tgt_len: int = Field(default=100, ge=1)
    src_subwords: Literal["none", "bpe", "unigram"] = Field(
        default="none",
        description="split source words into SentencePiece subword units (bpe or unigram) trained on the train split",
    )
    tgt_subwords: Literal["none", "bpe", "unigram"] = Field(
        default="none", description="the same for the target; outputs are joined back into words before scoring"
    )
    subword_vocab_size: int = Field(default=8000, ge=50, description="at most this many subword units per side")
    slots: bool = Field(
        default=False,
        description="NL -> code: quoted values in the source become placeholders (var_0, str_0) in source and "
        "target, restored in outputs (as the CoNaLa baseline and tranX do)",
    )
    reverse: bool = Field(
        default=False,
        description="swap source and target after reading (e.g. a code -> NL model that scores how well an output "
        "explains its input, for seq2seq rerank); the tokenizers and lengths then apply to the swapped sides",
    )
    code_unit: Literal["program", "line"] | None = Field(
        default=None,
        description="python targets: what one output is, for the parse rate and --constrain grammar: a whole "
        "'program', or a 'line' of a file (a block header or an else/except clause counts, as tranX scores "
        "Django); default: line for django, else program",
    )

    @model_validator(mode="after")
    def _code_options(self) -> DataConfig:
        if self.code_unit is None:
            self.code_unit = "line" if self.format == "django" else "program"
        if self.lowercase_tgt and self.tgt_tokenizer == "python":
            raise ValueError("lowercase_tgt: true cannot be used with tgt_tokenizer: python (code is case sensitive)")
        if self.slots and self.reverse:
            raise ValueError("slots: true cannot be combined with reverse: true (placeholders are taken from the "
                             "natural-language side, which reverse makes the target)")
        if self.slots and self.tgt_tokenizer != "python":
            raise ValueError(f"slots: true needs tgt_tokenizer: python (placeholders stand for code values); got {self.tgt_tokenizer}")
        if self.slots and (self.src_subwords, self.tgt_subwords) != ("none", "none"):
            raise ValueError("slots: true cannot be combined with src_subwords / tgt_subwords (placeholders must stay whole tokens)")
        for side in ("src", "tgt"):  # pieces are joined back into words at spaces, and code tokens may hold spaces
            if getattr(self, f"{side}_subwords") != "none" and getattr(self, f"{side}_tokenizer") == "python":
                raise ValueError(f"{side}_subwords needs a word-level {side}_tokenizer (word, space or moses), not python")
        return self


class VocabConfig(_Strict):
    min_freq: int = Field(default=1, ge=1)
    max_size: int | None = Field(default=None, ge=5)


class EncoderConfig(_Strict):
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


class DecoderConfig(_Strict):
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
        "(inside the additive scores' tanh; added to the score, per head, for the dot-product ones); "
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


class TransformerConfig(_Strict):
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


class ModelConfig(_Strict):
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


class TeacherForcingConfig(_Strict):
    """The probability that a training step reads the gold previous token (else the model's own
    prediction), per optimizer step i (Bengio et al. 2015, "Scheduled Sampling for Sequence
    Prediction with Recurrent Neural Networks", section 2.4):

    - constant:         p_i = start (the seed's 0.5)
    - linear:           p_i = max(end, start - (start - end) i / steps)
    - exponential:      p_i = end + (start - end) rate^i                       (rate < 1)
    - inverse_sigmoid:  p_i = end + (start - end) k / (k + exp(i / k))         (k >= 1)

    ``train.teacher_forcing: 0.5`` (a number) is the constant schedule.
    """

    schedule: Literal["constant", "linear", "exponential", "inverse_sigmoid"] = "constant"
    start: float | None = Field(default=None, ge=0.0, le=1.0, description="p at step 0; default 0.5 for constant, else 1.0")
    end: float = Field(default=0.0, ge=0.0, le=1.0, description="the floor the decaying schedules approach")
    steps: int = Field(default=10000, ge=1, description="linear: optimizer steps from start to end")
    rate: float = Field(default=0.9995, gt=0.0, lt=1.0, description="exponential: the factor per optimizer step")
    k: float = Field(default=1000.0, ge=1.0, description="inverse_sigmoid: larger k decays later")

    @model_validator(mode="after")
    def _resolve_start(self) -> TeacherForcingConfig:
        if self.start is None:
            self.start = 0.5 if self.schedule == "constant" else 1.0
        if self.schedule != "constant" and self.end > self.start:
            raise ValueError(f"end ({self.end}) must not exceed start ({self.start}): the schedule decays")
        return self

    def probability(self, step: int) -> float:
        """p_i for optimizer step ``step`` (counted from 0)."""
        start = float(self.start if self.start is not None else 0.5)
        if self.schedule == "constant":
            return start
        if self.schedule == "linear":
            return max(self.end, start - (start - self.end) * step / self.steps)
        if self.schedule == "exponential":
            return self.end + (start - self.end) * self.rate**step
        return self.end + (start - self.end) * self.k / (self.k + math.exp(min(step / self.k, 700.0)))

    def describe(self) -> str:
        if self.schedule == "constant":
            return f"{self.start}"
        return f"{self.schedule} from {self.start} to {self.end}"


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(
        default=64, ge=1,
        description="pairs per batch of one process; one update reads batch_size x accumulate x processes pairs",
    )
    batch_tokens: int | None = Field(
        default=None, ge=1,
        description="instead of batch_size: fill each batch from the length buckets up to this many padded tokens "
        "(pairs x the longer side of its longest pair), per process and accumulation step",
    )
    accumulate: int = Field(
        default=1, ge=1,
        description="batches per optimizer update (gradient accumulation); the loss is the mean over all their "
        "target tokens, so accumulate 2 equals one batch twice the size",
    )
    learning_rate: float = Field(default=1e-3, gt=0, allow_inf_nan=False)
    teacher_forcing: TeacherForcingConfig = Field(
        default_factory=TeacherForcingConfig,
        description="a probability (0.5: the seed's constant) or a schedule section (scheduled sampling)",
    )
    coverage_weight: float | None = Field(
        default=None, ge=0.0,
        description="weight of the coverage loss sum_i min(a_i^t, c_i^t) per target token (See et al. 2017, eq. 13); "
        "needs attention; null: 1.0 for a model with model.decoder.coverage (as See et al.), else 0",
    )
    clip_norm: float = Field(default=1.0, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    word_dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="share of source tokens replaced by <unk> in each training batch (Iyyer et al. 2015's word dropout)",
    )
    adam_betas: tuple[float, float] = Field(
        default=(0.9, 0.999), description="Adam's (beta1, beta2); Vaswani et al. 2017 train with [0.9, 0.98]"
    )
    lr_schedule: Literal["plateau", "inverse_sqrt"] = Field(
        default="plateau",
        description="plateau: multiply by lr_factor when the validation loss stalls (per epoch); inverse_sqrt: "
        "Vaswani et al. 2017 eq. 3 per optimizer step, a linear warm-up to learning_rate over warmup_steps, then "
        "learning_rate * sqrt(warmup_steps / step)",
    )
    warmup_steps: int = Field(default=4000, ge=1, description="inverse_sqrt: optimizer steps to the peak learning_rate")
    lr_factor: float = Field(default=0.5, gt=0, lt=1)
    lr_patience: int = Field(default=1, ge=0)
    min_learning_rate: float = Field(default=1e-5, ge=0)
    early_stopping_patience: int = Field(default=4, ge=1)
    time_budget_s: float | None = Field(default=None, gt=0, description="stop after this many seconds")
    seed: int = 42
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto, cpu, cuda or cuda:N")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None = torch default)")
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="bf16: the training forward pass under torch.autocast in bfloat16 (fast on GPUs and on CPUs with "
        "AMX; emulated and slower elsewhere); weights, optimizer and loss stay float32",
    )
    keep_epoch_checkpoints: int = Field(
        default=0, ge=0,
        description="keep the weights of the last N epochs as epoch-<k>.safetensors, for `seq2seq average`",
    )
    save_every_steps: int | None = Field(
        default=None, ge=1,
        description="also write last.safetensors every N optimizer steps inside an epoch, so that --resume continues "
        "from there (as fairseq's --save-interval-updates); the dropout draws are re-seeded at each such step",
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        default="stop", description="a NaN/inf training loss: stop with an error, or skip the batch (counted per epoch)"
    )

    @field_validator("teacher_forcing", mode="before")
    @classmethod
    def _constant_teacher_forcing(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"schedule": "constant", "start": value}
        return value

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError(f"each beta must be in [0, 1), got {list(value)}")
        return value


class DecodeConfig(_Strict):
    max_len: int = Field(default=100, ge=1)
    batch_size: int = Field(default=128, ge=1)
    # batches decoded at once by evaluation (threads sharing torch's intra-op threads); 0: automatic,
    # 2 on a CPU with at least 2 threads, else 1 (seq2seq.decoding.search.decode_workers)
    workers: int = Field(default=0, ge=0)
    constrain: Literal["none", "python", "grammar"] = Field(
        default="none",
        description="python targets, for evaluate, generate and the server unless they say otherwise: 'grammar' "
        "keeps only prefixes Python's parser can complete (every finished output parses); 'python' only "
        "balances brackets",
    )


class RunConfig(_Strict):
    """The whole run; this is what ``config.yaml`` in a run directory holds."""

    data: DataConfig = Field(default_factory=DataConfig)
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)

    @model_validator(mode="after")
    def _transformer_teacher_forcing(self) -> RunConfig:
        """The Transformer reads the whole gold prefix at once: it trains with teacher forcing 1.0, its
        default; another value given explicitly is refused (scheduled sampling is the recurrent decoders')."""
        if self.model.architecture != "transformer":
            return self
        forcing = self.train.teacher_forcing
        if "teacher_forcing" not in self.train.model_fields_set:
            self.train.teacher_forcing = TeacherForcingConfig(schedule="constant", start=1.0)
        elif forcing.schedule != "constant" or forcing.start != 1.0:
            raise ValueError(f"train.teacher_forcing: the Transformer trains with teacher forcing 1.0, got "
                             f"{forcing.describe()} (scheduled sampling is for the recurrent decoders)")
        return self

    @model_validator(mode="after")
    def _learned_positions_cover_training(self) -> RunConfig:
        """Learned positions exist up to model.transformer.max_positions: a training pair that needs more
        (the decoder reads <sos> + the target) would fail mid-epoch, so such a setting is refused here."""
        tf = self.model.transformer
        if self.model.architecture != "transformer" or tf.positions != "learned":
            return self
        for key, needed in (("data.max_src_len", self.data.max_src_len), ("data.max_tgt_len", self.data.max_tgt_len + 1)):
            if needed > tf.max_positions:
                raise ValueError(f"{key}={getattr(self.data, key.split('.')[1])} needs {needed} positions, but "
                                 f"model.transformer.max_positions={tf.max_positions}; raise it or lower {key}")
        return self

    @model_validator(mode="after")
    def _shards_without_copy(self) -> RunConfig:
        """Shards hold the pairs' ids, not the source words a copy model extends its vocabulary with."""
        if self.data.shards is not None and (self.model.decoder.copy or self.model.transformer.copy):
            raise ValueError("data.shards: a copy model (model.decoder.copy or model.transformer.copy) cannot train "
                             "from shards yet; "
                             "train it from the data itself (--data / data.path)")
        return self

    @model_validator(mode="after")
    def _coverage_loss_needs_attention(self) -> RunConfig:
        """The coverage loss reads a recurrent decoder's attention weights (See et al. 2017, eq. 13)."""
        weight = self.train.coverage_weight
        if weight and (self.model.architecture != "recurrent" or self.model.decoder.attention == "none"):
            raise ValueError(
                f"train.coverage_weight: {weight} needs a recurrent decoder with attention (the loss reads its weights); "
                f"got model.architecture: {self.model.architecture}, model.decoder.attention: {self.model.decoder.attention}"
            )
        return self


# --------------------------------------------------------------------------- presets
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
    # adds the coverage loss: train.coverage_weight defaults to 1.0 for a coverage model)
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


# --------------------------------------------------------------------------- building
def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _yaml_problem(error: Exception) -> str:
    """The one-line gist of a YAML error (PyYAML's own message spans several lines)."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return getattr(error, "problem", None) or str(error).split("\n", 1)[0]


def _parse_override(item: str) -> tuple[list[str], Any]:
    shown = short_repr(item)
    if "=" not in item:
        raise ConfigError(f"--set {shown}: expected key.sub=value, e.g. train.epochs=5")
    key, raw = item.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"--set {shown}: empty key")
    if not raw.strip():
        return path, ""
    # YAML gives the natural types: 5 -> int, 1e-3 -> float, true -> bool, null -> None.
    try:
        return path, yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # ValueError: an int over 4300 digits
        raise ConfigError(
            f"--set {shown}: the value of {short_repr(key.strip())} is not valid YAML ({_yaml_problem(error)}): expected a number, "
            "true/false, null, a [list], a {mapping} or a string (quote a string that starts with @, `, [ or {)"
        ) from None


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested dict (validation happens afterwards)."""
    tree = deep_merge({}, tree)
    for item in overrides:
        path, value = _parse_override(item)
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {short_repr(item)}: {short_repr(part)} is a value, not a section")
            node = child
        node[path[-1]] = value
    return tree


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        key = ".".join(loc) or "(root)"
        if item["type"] == "extra_forbidden":
            valid = _valid_keys(loc[:-1])
            hint = difflib.get_close_matches(loc[-1], valid, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            lines.append(f"  unknown key {short_repr(key)}{suggestion}; valid keys here: {', '.join(valid)}")
        else:
            lines.append(f"  {key}: {item['msg']} (got {short_repr(item.get('input'))})")
    return "\n".join(lines)


def _valid_keys(section: list[str]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in section:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None) if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def build_config(
    *,
    base: dict[str, Any] | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    source: str = "config",
) -> RunConfig:
    """Resolve a run configuration: defaults <- preset <- file contents and ``--set`` overrides."""
    if base is not None and not isinstance(base, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(base).__name__}")
    tree = apply_overrides(dict(base or {}), overrides or [])
    model = tree.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{source}: 'model' must be a section (a mapping), got {short_repr(model)}")
    preset = preset or model.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise ConfigError(f"{source}: model.preset is {short_repr(preset)}: expected one of {', '.join(PRESETS)}")
    if preset:
        try:
            preset_tree = preset_model_config(preset)
        except ConfigError as error:
            raise ConfigError(f"{source}: model.preset: {error}") from None
        # Values given explicitly (file or --set) win over the preset's.
        tree["model"] = deep_merge(preset_tree, {k: v for k, v in model.items() if k != "preset"})
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def _read_config_text(path: Path) -> str:
    """The file as UTF-8 text; a folder, an unreadable file or undecodable bytes name the file (and line)."""
    if path.is_dir():
        raise ConfigError(f"{path}: expected a YAML config file, found a folder")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror or error})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[error.start]:02x}): expected UTF-8 text") from None


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with a clear error for a missing or malformed file."""
    text = _read_config_text(path)
    try:
        tree = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # ValueError: an int over 4300 digits
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: malformed YAML: {_yaml_problem(error)}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, train, ...) at the top level")
    return tree


def config_to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(config_to_yaml(config), encoding="utf-8")
