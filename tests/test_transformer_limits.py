"""What a Transformer cannot take, refused up front or clamped, never failing mid-run: learned
positions (decoding is clamped to them, longer sources and training lengths are refused), head
counts that do not divide d_model, and a run resumed with another architecture's weights or
config (one-line errors through the command line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import train_keeping_threads, train_tiny_run
from test_transformer import TINY, make_model

from seq2seq.cli import main
from seq2seq.config import ConfigError, build_config
from seq2seq.decoding.search import decode_sources
from seq2seq.models.ensemble import Ensemble
from seq2seq.models.interface import max_positions, supported_max_len

LEARNED = ("model.transformer.positions=learned", "model.transformer.max_positions=6", "data.max_src_len=6",
           "data.max_tgt_len=5")


def _error_of(args: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(args) == 2
    return capsys.readouterr().err


# --------------------------------------------------------------------------- learned positions
def test_decoding_stops_at_the_last_learned_position_instead_of_failing():
    torch.set_num_threads(1)
    model = make_model(*LEARNED)
    with torch.no_grad():
        model.decoder.output.bias[3] = -1e4  # <eos> never wins: every output runs to the length limit
    sources = [[4, 5, 6], [7, 8]]
    options = {"sos_index": 2, "eos_index": 3, "pad_index": 0, "batch_size": 2, "workers": 1}
    with pytest.raises(ValueError, match="position 6 is beyond the learned positions"):  # why the clamp exists
        decode_sources(model, sources, max_len=7, **options)
    assert max_positions(model) == 6 and supported_max_len(model, 50) == 6 and supported_max_len(model, 4) == 4
    for beam in (1, 3):
        found = decode_sources(model, sources, max_len=supported_max_len(model, 50), beam_size=beam, nbest=1, **options)
        assert [len(h[0].tokens) for h in found] == [6, 6] and not any(h[0].finished for h in found)
    sinusoidal = make_model()
    assert max_positions(sinusoidal) is None and supported_max_len(sinusoidal, 500) == 500
    assert Ensemble([model, sinusoidal]).max_positions == 6


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.transformer.max_positions=50"], r"data.max_src_len=100 needs 100 positions, but model.transformer.max_positions=50"),
    (["model.transformer.max_positions=50", "data.max_src_len=50", "data.max_tgt_len=50"],
     r"data.max_tgt_len=50 needs 51 positions"),  # the decoder reads <sos> + the target
])
def test_training_lengths_beyond_the_learned_positions_are_refused_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config(preset="transformer", overrides=["model.transformer.positions=learned", *overrides])
    build_config(preset="transformer", overrides=overrides)  # sinusoids have no limit


def test_validation_data_beyond_the_learned_positions_is_refused_before_training(tmp_path):
    from seq2seq.pipeline import train

    config = build_config(preset="transformer", overrides=[
        *TINY, *LEARNED, "data.builtin_train_size=60", "train.epochs=1", "train.device=cpu", "train.threads=1"])
    with pytest.raises(ValueError, match=r"valid example \d+ needs \d+ positions, but .* cover 6 "):
        train(config, tmp_path / "run")  # the built-in task's validation sentences are longer than 6
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("learned") / "run"
    config = build_config(preset="transformer", overrides=[
        *TINY, "model.transformer.positions=learned", "model.transformer.max_positions=64", "data.max_src_len=64",
        "data.max_tgt_len=63", "data.builtin_train_size=60", "train.epochs=1", "train.device=cpu", "train.threads=1",
        "decode.max_len=100"])  # decode.max_len beyond the positions: clamped, not refused
    return train_keeping_threads(config, run_dir)


def test_generate_clamps_max_len_and_refuses_a_longer_source(learned_run, capsys):
    assert main(["generate", str(learned_run), "--max-len", "200", "add 3 to total"]) == 0
    long_source = " ".join(["word"] * 70)
    error = _error_of(["generate", str(learned_run), long_source], capsys)
    assert error.count("\n") == 1
    assert "input 1: 70 tokens, but this model's learned positions cover 64 (model.transformer.max_positions)" in error


def test_evaluate_clamps_max_len_and_refuses_a_split_beyond_the_positions(learned_run):
    from seq2seq.checkpoint import load_run
    from seq2seq.data.batching import EncodedPair
    from seq2seq.data.corpus import build_corpus
    from seq2seq.pipeline import evaluate_run

    report = evaluate_run(learned_run, split="valid", device="cpu")  # decode.max_len 100 > 64 positions
    assert report.predictions
    run = load_run(learned_run)
    corpus = build_corpus(run.config.data, run.config.vocab, vocabs=(run.src_vocab, run.tgt_vocab))
    corpus.encoded["valid"].append(EncodedPair(src=[4] * 65, tgt=[2, 5, 3]))
    with pytest.raises(ValueError, match=r"valid example \d+ needs 65 positions, but .* cover 64"):
        evaluate_run(learned_run, split="valid", device="cpu", corpus=corpus)


# --------------------------------------------------------------------------- bad input from the command line
def test_heads_that_do_not_divide_d_model_are_refused_at_load(tmp_path, capsys):
    error = _error_of(["train", "--preset", "transformer", "--set", "model.transformer.heads=3",
                       "--out", str(tmp_path / "run")], capsys)
    assert "model.transformer.d_model=256 is not divisible by model.transformer.heads=3" in error
    assert error.count("\n") == 1 and "Value error" not in error and "{" not in error  # one line, no section dump
    assert not (tmp_path / "run").exists()


def test_resume_with_another_architecture_is_refused_in_one_line(tmp_path, capsys):
    recurrent = train_tiny_run(tmp_path / "rnn")
    transformer = tmp_path / "transformer"
    sets = [item for key in [*TINY, "data.builtin_train_size=60", "train.epochs=1", "train.threads=1"]
            for item in ("--set", key)]
    assert main(["train", "--quick", "--no-progress", "--no-eval", "--preset", "transformer", *sets,
                 "--out", str(transformer)]) == 0
    # another architecture asked for on the command line
    for run, other in ((recurrent, "transformer"), (transformer, "recurrent")):
        error = _error_of(["train", "--resume", str(run), "--set", f"model.architecture={other}"], capsys)
        assert error.count("\n") == 1 and "--resume cannot change model.architecture" in error
    assert "remove --preset" in _error_of(["train", "--resume", str(recurrent), "--preset", "transformer"], capsys)
    # a run directory whose configuration and checkpoint disagree (config.yaml swapped)
    configs = {run: (run / "config.yaml").read_text() for run in (recurrent, transformer)}
    (recurrent / "config.yaml").write_text(configs[transformer])
    (transformer / "config.yaml").write_text(configs[recurrent])
    for run, holds, described in ((recurrent, "recurrent", "transformer"), (transformer, "transformer", "recurrent")):
        error = _error_of(["train", "--resume", str(run), "--no-progress", "--no-eval", "--set", "train.epochs=2"], capsys)
        assert error.count("\n") == 1
        assert f"holds the weights of a {holds} model, but the configuration describes a {described} model" in error
