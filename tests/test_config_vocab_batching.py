"""Configuration validation, vocabulary and batching."""

from __future__ import annotations

import pytest
import torch

from seq2seq.config import PRESETS, ConfigError, RunConfig, build_config, load_config_file, save_config
from seq2seq.data.batching import EncodedPair, bucketed_batches, collate
from seq2seq.data.vocab import SPECIALS, Vocab


# ----------------------------------------------------------------------------- config
def test_unknown_key_is_named_with_the_valid_keys():
    with pytest.raises(ConfigError) as info:
        build_config(overrides=["train.learnin_rate=0.1"])
    message = str(info.value)
    assert "train.learnin_rate" in message and "learning_rate" in message and "batch_size" in message


def test_unknown_section_in_a_file_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'.*did you mean 'train'"):
        build_config(base=load_config_file(path), source=str(path))


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"train.teacher_forcing"):
        build_config(overrides=["train.teacher_forcing=1.5"])
    with pytest.raises(ConfigError, match=r"model.encoder.cell"):
        build_config(overrides=["model.encoder.cell=transformer"])


def test_malformed_yaml_gives_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: malformed YAML"):
        load_config_file(path)


def test_overrides_are_typed_and_presets_exact():
    config = build_config(preset="rnn", overrides=["train.epochs=7", "train.learning_rate=3e-4", "model.encoder.bidirectional=true"])
    assert config.train.epochs == 7 and config.train.learning_rate == pytest.approx(3e-4)
    assert config.model.encoder.cell == "rnn" and config.model.decoder.attention == "none"
    assert config.model.encoder.bidirectional is True
    assert build_config(preset="lstm-attention").model.decoder.attention == "bahdanau"
    assert set(PRESETS) >= {"rnn", "lstm", "lstm-attention", "gru", "gru-attention"}
    with pytest.raises(ConfigError, match="unknown preset 'lstm-atention'"):
        build_config(preset="lstm-atention")


def test_recipe_defaults_match_the_specification():
    train = RunConfig().train
    assert train.teacher_forcing.probability(0) == 0.5 and train.clip_norm == 1.0


def test_config_yaml_round_trip(tmp_path):
    config = build_config(preset="gru-attention", overrides=["train.epochs=2"])
    save_config(config, tmp_path / "config.yaml")
    again = build_config(base=load_config_file(tmp_path / "config.yaml"))
    assert again == config


# ----------------------------------------------------------------------------- vocab
def test_vocab_specials_min_freq_max_size_and_round_trip(tmp_path):
    sequences = [["a", "b", "a"], ["c", "a", "b"], ["d"]]
    vocab = Vocab.build(sequences, min_freq=2)
    assert vocab.itos[:4] == list(SPECIALS)
    assert vocab.itos[4:] == ["a", "b"]
    assert Vocab.build(sequences, max_size=5).itos[4:] == ["a"]
    assert vocab.encode(["a", "zzz"], add_sos=True, add_eos=True) == [2, 4, 1, 3]
    assert vocab.decode([4, 5, 3, 4]) == ["a", "b"]
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == vocab.itos


def test_vocab_load_errors_name_the_file(tmp_path):
    (tmp_path / "bad.json").write_text('{"tokens": [1, 2]}')
    with pytest.raises(ValueError, match="bad.json"):
        Vocab.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not found"):
        Vocab.load(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- batching
def _pairs(lengths):
    return [EncodedPair(src=list(range(4, 4 + n)), tgt=[2, *range(4, 4 + n), 3]) for n in lengths]


def test_collate_pads_and_masks():
    batch = collate(_pairs([3, 1]), [0, 1], pad_index=0)
    assert batch.src.tolist() == [[4, 5, 6], [4, 0, 0]]
    assert batch.src_mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.src_lengths.tolist() == [3, 1]
    assert batch.tgt_input.tolist() == [[2, 4, 5, 6], [2, 4, 3, 0]]  # <eos> read only where the output is padding
    assert batch.tgt_output.tolist() == [[4, 5, 6, 3], [4, 3, 0, 0]]
    assert batch.n_tgt_tokens == 6
    with pytest.raises(ValueError, match="empty source"):
        collate([EncodedPair(src=[], tgt=[2, 3])], [0], pad_index=0)


def test_bucketing_covers_every_example_once_and_groups_lengths():
    lengths = [1 + (i * 7) % 30 for i in range(500)]
    pairs = _pairs(lengths)
    generator = torch.Generator().manual_seed(0)
    batches = list(bucketed_batches(pairs, batch_size=16, pad_index=0, shuffle=True, generator=generator, pool_factor=8))
    seen = sorted(i for b in batches for i in b.indices)
    assert seen == list(range(500))
    padding = sum(int((~b.src_mask).sum()) for b in batches)
    assert padding < 0.2 * sum(lengths)  # unsorted batches of 16 would pad about 80 %
    again = list(bucketed_batches(pairs, batch_size=16, pad_index=0, shuffle=True, generator=torch.Generator().manual_seed(0), pool_factor=8))
    assert [b.indices for b in batches] == [b.indices for b in again]


def test_training_batches_sort_by_target_length_unless_asked_for_source():
    # Source and target lengths independent of each other, as in translation.
    pairs = [EncodedPair(src=[5] * (1 + (i * 7) % 30), tgt=[2] + [6] * (1 + (i * 11) % 23) + [3]) for i in range(600)]

    def padding(sort_by: str, side: str) -> float:
        batches = list(bucketed_batches(pairs, batch_size=16, pad_index=0, shuffle=True,
                                        generator=torch.Generator().manual_seed(0), pool_factor=8, sort_by=sort_by))
        tensors = [b.tgt_output if side == "tgt" else b.src for b in batches]
        return sum(int((t == 0).sum()) for t in tensors) / sum(t.numel() for t in tensors)

    assert padding("target", "tgt") < padding("source", "tgt") / 3
    assert padding("source", "src") < padding("target", "src") / 3
    with pytest.raises(ValueError, match="sort_by"):
        next(bucketed_batches(pairs, batch_size=4, pad_index=0, shuffle=False, sort_by="random"))
