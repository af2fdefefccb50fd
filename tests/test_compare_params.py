"""The seed specification's parameter counts (~227K / ~820K / ~1.2M for rnn / lstm / lstm-attention)
are reproduced by configs/compare/seed-table.yaml, as `seq2seq compare` resolves it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seq2seq.compare import COMPARE_DEFAULTS, compare_defaults
from seq2seq.config import build_config
from seq2seq.data.corpus import build_corpus
from seq2seq.models.build import build_model, count_parameters

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "compare" / "seed-table.yaml"
CLAIMED = {"rnn": 227_000, "lstm": 820_000, "lstm-attention": 1_200_000}
EXACT = {"rnn": 223_282, "lstm": 816_178, "lstm-attention": 1_222_450,  # the recipe's comment derives these
         "transformer": 5_546_034}


def test_the_seed_tables_parameter_counts_are_reproduced():
    base = yaml.safe_load(RECIPE.read_text())
    overrides = compare_defaults(base)  # what `seq2seq compare` adds: nothing the file sets itself
    assert not any(o.startswith(("model.encoder.hidden_size", "model.encoder.embedding_size")) for o in overrides)
    shared = build_config(base=base, preset="rnn", overrides=overrides)
    corpus = build_corpus(shared.data, shared.vocab)
    assert len(corpus.src_vocab) == len(corpus.tgt_vocab) == 50
    for preset, exact in EXACT.items():
        config = build_config(base=base, preset=preset, overrides=compare_defaults(base, preset))
        count = count_parameters(build_model(config.model, src_vocab_size=50, tgt_vocab_size=50))
        assert count == exact
        if preset in CLAIMED:
            assert count == pytest.approx(CLAIMED[preset], rel=0.03)


def test_a_transformer_preset_gets_vaswanis_recipe_at_compares_size_unless_the_file_sets_it():
    config = build_config(preset="transformer", overrides=compare_defaults(None, "transformer"))
    assert (config.model.transformer.d_model, config.model.transformer.encoder_layers) == (128, 2)
    assert (config.train.lr_schedule, config.train.label_smoothing, config.train.learning_rate) == ("inverse_sqrt", 0.1, 0.001)
    assert "train.lr_schedule=inverse_sqrt" not in compare_defaults(None, "lstm-attention")
    kept = compare_defaults({"model": {"transformer": {"d_model": 64}}, "train": {"learning_rate": 0.01}}, "transformer")
    assert not any(d.startswith(("model.transformer.d_model", "train.learning_rate")) for d in kept)


def test_compare_defaults_fill_only_what_a_file_leaves_unset():
    assert compare_defaults(None) == COMPARE_DEFAULTS
    kept = compare_defaults({"model": {"encoder": {"hidden_size": 300}}, "train": {"epochs": 9}})
    assert "model.encoder.hidden_size=128" not in kept and "train.epochs=4" not in kept
    assert "model.decoder.hidden_size=128" in kept
