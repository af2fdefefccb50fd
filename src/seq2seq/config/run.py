"""``decode``, and the whole run (``config.yaml`` of a run directory) with the checks across sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from seq2seq.config.data import DataConfig, VocabConfig
from seq2seq.config.errors import StrictModel
from seq2seq.config.model import ModelConfig
from seq2seq.config.train import TeacherForcingConfig, TrainConfig, default_coverage_weight


class DecodeConfig(StrictModel):
    max_len: int = Field(default=100, ge=1)
    batch_size: int = Field(default=128, ge=1)
    # batches decoded at once by evaluation (threads sharing torch's intra-op threads); 0: automatic,
    # 2 on a CPU with at least 2 threads, else 1 (seq2seq.decoding.search.decode_workers)
    workers: int = Field(default=0, ge=0)
    # > 0: no n-gram of this size may occur twice in an output (fairseq's --no-repeat-ngram-size), a
    # guard against runaway loops; greedy decoding then runs as a beam of one. 0 = off
    no_repeat_ngram_size: int = Field(default=0, ge=0)
    # how a beam compares finished outputs of different lengths (seq2seq.decoding.beam_rules.length_penalty):
    # none = raw log-probability sums; gnmt = divided by ((5 + length) / 6) ** alpha (Wu et al. 2016, the
    # penalty Vaswani et al. 2017 decode with, alpha 0.6); average = divided by length ** alpha
    length_penalty: Literal["none", "gnmt", "average"] = "none"
    alpha: float = Field(default=0.6, ge=0.0)
    constrain: Literal["none", "python", "grammar"] = Field(
        default="none",
        description="python targets, for evaluate, generate and the server unless they say otherwise: 'grammar' "
        "keeps only prefixes Python's parser can complete (every finished output parses); 'python' only "
        "balances brackets",
    )


class RunConfig(StrictModel):
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

    @model_validator(mode="after")
    def _coverage_weight_resolved(self) -> RunConfig:
        """A null ``train.coverage_weight`` becomes the weight training uses (default_coverage_weight
        of a recurrent coverage model), so that a run's saved config says what it trained with and
        a later change of the default cannot change a resumed run."""
        if self.train.coverage_weight is None:
            coverage = self.model.architecture == "recurrent" and self.model.decoder.coverage
            self.train.coverage_weight = default_coverage_weight(coverage)
        return self

