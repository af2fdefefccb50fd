"""Typed, validated configuration: one pydantic model per component, YAML in and out.

Every model forbids unknown keys, so a typo such as ``train.learning_rat`` fails at load
time with the key's full dotted path and the list of valid keys, instead of being
silently ignored. Components never read this tree; only the ``build_*`` factories do.

One file per part: the sections (:mod:`.data`, :mod:`.model`, :mod:`.train`, :mod:`.run`), the
named presets (:mod:`.presets`), and reading files and overrides into a :class:`RunConfig`
(:mod:`.loading`).
"""

from seq2seq.config.data import DataConfig, VocabConfig
from seq2seq.config.errors import ConfigError, StrictModel, short_repr
from seq2seq.config.loading import (
    apply_overrides,
    build_config,
    config_to_yaml,
    deep_merge,
    load_config_file,
    save_config,
)
from seq2seq.config.model import DecoderConfig, EncoderConfig, ModelConfig, TransformerConfig
from seq2seq.config.presets import PRESETS, preset_model_config
from seq2seq.config.run import DecodeConfig, RunConfig
from seq2seq.config.train import TeacherForcingConfig, TrainConfig

__all__ = [
    "PRESETS", "ConfigError", "DataConfig", "DecodeConfig", "DecoderConfig", "EncoderConfig", "ModelConfig",
    "RunConfig", "StrictModel", "TeacherForcingConfig", "TrainConfig", "TransformerConfig", "VocabConfig",
    "apply_overrides", "build_config", "config_to_yaml", "deep_merge", "load_config_file", "preset_model_config",
    "save_config", "short_repr",
]
