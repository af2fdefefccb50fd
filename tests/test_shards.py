"""Memory-mapped training shards: ``seq2seq preprocess`` writes them, training streams them and
learns exactly what it learns from the corpus in memory, and a damaged folder is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seq2seq.checkpoint import load_run
from seq2seq.cli import main
from seq2seq.data.corpus import build_corpus
from seq2seq.data.shards import open_shards
from seq2seq.data.vocab import Vocab
from seq2seq.run_files import model_tensors, read_safetensors
from helpers import tiny_config

TINY = ["model.encoder.embedding_size=16", "model.encoder.hidden_size=32", "model.decoder.embedding_size=16",
        "model.decoder.hidden_size=32", "model.decoder.attention_size=32", "train.epochs=2", "train.batch_size=16",
        "train.device=cpu", "train.threads=1", "decode.max_len=30"]


def _sets(*settings: str) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shards") / "nl2code"
    assert main(["preprocess", "--size", "300", "--shard-size", "128", "--out", str(folder)]) == 0
    return folder


def test_shards_hold_the_encoded_training_pairs(shards):
    config = tiny_config("lstm-attention", "data.builtin_train_size=300")
    corpus = build_corpus(config.data, config.vocab)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert [shard["pairs"] for shard in manifest["shards"]] == [128, 128, 44]
    folder = open_shards(shards, data=config.data)
    assert len(folder.train) == len(corpus.encoded["train"]) == 300
    assert [(p.src, p.tgt) for p in folder.train] == [(p.src, p.tgt) for p in corpus.encoded["train"]]
    src_lengths, tgt_lengths = folder.train.lengths()
    assert src_lengths.tolist() == [len(p.src) for p in corpus.encoded["train"]]
    assert tgt_lengths.tolist() == [len(p.tgt) for p in corpus.encoded["train"]]
    assert folder.tgt_vocab.itos == corpus.tgt_vocab.itos
    assert [e.tgt for e in folder.held_out["test"]] == [e.tgt for e in corpus.examples["test"]]


def test_training_from_shards_equals_training_in_memory_and_the_run_reads_alike(shards, tmp_path, capsys):
    assert main(["train", "--preset", "lstm-attention", *_sets("data.builtin_train_size=300", *TINY), "--no-progress",
                 "--no-eval", "--out", str(tmp_path / "memory")]) == 0
    assert main(["train", "--shards", str(shards), "--preset", "lstm-attention", *_sets(*TINY), "--no-progress", "--no-eval",
                 "--out", str(tmp_path / "sharded")]) == 0
    memory, sharded = (model_tensors(read_safetensors(tmp_path / run / "last.safetensors")[0]) for run in ("memory", "sharded"))
    for name in memory:
        assert torch.equal(memory[name], sharded[name]), name
    assert load_run(tmp_path / "sharded", which="best", device=torch.device("cpu")).config.data.shards == str(shards)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "sharded")]) == 0
    assert "test: 15 examples" in capsys.readouterr().out


def _copy(shards: Path, to: Path) -> Path:
    to.mkdir()
    for path in shards.iterdir():
        (to / path.name).write_bytes(path.read_bytes())
    return to


def test_a_damaged_shard_or_vocabulary_is_refused_in_one_line(shards, tmp_path, capsys):
    damaged = _copy(shards, tmp_path / "damaged")
    data = bytearray((damaged / "train-00001.src.npy").read_bytes())
    data[-1] ^= 1
    (damaged / "train-00001.src.npy").write_bytes(bytes(data))
    train = ["train", "--shards", str(damaged), *_sets(*TINY), "--no-progress", "--out", str(tmp_path / "run")]
    assert main(train) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"seq2seq train: error: {damaged / 'train-00001.src.npy'}: checksum does not match the manifest "
                     "(damaged or replaced shard)"]
    assert not (tmp_path / "run").exists()

    other_vocab = _copy(shards, tmp_path / "vocab")
    vocab = Vocab.load(other_vocab / "tgt_vocab.json")
    (other_vocab / "tgt_vocab.json").write_text(Vocab([*vocab.itos[:-1], "zzz-other"]).to_json())
    assert main([*train[:2], str(other_vocab), *train[3:]]) == 2
    assert "tgt_vocab.json does not match the manifest's vocabulary hash" in capsys.readouterr().err
    with pytest.raises(ValueError, match="the shards' vocabularies are not this run's"):
        open_shards(shards, vocabs=(vocab, Vocab([*vocab.itos[:-1], "zzz-other"])))


def test_a_copy_model_cannot_train_from_shards_and_says_so_at_config_load(shards, tmp_path, capsys):
    assert main(["train", "--shards", str(shards), "--preset", "lstm-attention-copy", *_sets(*TINY), "--no-progress",
                 "--out", str(tmp_path / "run")]) == 2
    assert "data.shards: a copy model (model.decoder.copy or model.transformer.copy) cannot train" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_data_settings_are_checked_with_todays_defaults_for_keys_the_manifest_predates(shards, tmp_path):
    config = tiny_config("lstm-attention", "data.builtin_train_size=300")
    older = _copy(shards, tmp_path / "older")
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["data"]["builtin_valid_size"]  # written before the key existed: its default applies
    (older / "manifest.json").write_text(json.dumps(manifest))
    assert len(open_shards(older, data=config.data).train) == 300
    manifest["data"]["lowercase_src"] = False
    (older / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"made with other data settings \(data.lowercase_src\)"):
        open_shards(older, data=config.data)


def test_builtin_valid_size_sets_both_held_out_splits():
    config = tiny_config("lstm-attention", "data.builtin_train_size=300", "data.builtin_valid_size=7")
    corpus = build_corpus(config.data, config.vocab)
    assert (len(corpus.examples["valid"]), len(corpus.examples["test"]), len(corpus.examples["train"])) == (7, 7, 300)


def test_streamed_preprocessing_equals_the_in_memory_corpus_with_a_cut_vocabulary_and_dropped_pairs(tmp_path):
    from seq2seq.preprocess import preprocess

    config = tiny_config("lstm-attention", "data.builtin_train_size=300", "vocab.max_size=60", "data.max_tgt_len=12",
                         "data.slots=true")
    corpus = build_corpus(config.data, config.vocab)
    assert 0 < len(corpus.encoded["train"]) < 300  # some pairs are longer than 12 target tokens
    outcome = preprocess(config, tmp_path / "shards", shard_size=64)
    folder = open_shards(tmp_path / "shards", data=config.data)
    assert (folder.src_vocab.itos, folder.tgt_vocab.itos) == (corpus.src_vocab.itos, corpus.tgt_vocab.itos)
    assert [(p.src, p.tgt) for p in folder.train] == [(p.src, p.tgt) for p in corpus.encoded["train"]]
    assert any(Vocab.unk_index in p.tgt for p in folder.train)
    assert outcome.shards == 5 and outcome.pairs["train"] == len(corpus.encoded["train"])
