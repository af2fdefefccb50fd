"""Data-parallel training under torchrun on the CPU (gloo): 2 processes x batch B give the weights of
1 process x batch 2B, and a rank killed mid-run plus ``--resume`` ends with the uninterrupted weights.

Each torchrun call starts 3 Python processes (the agent and 2 ranks) with one torch thread each.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seq2seq.checkpoint import load_run
from seq2seq.run_files import model_tensors, read_safetensors
from helpers import tiny_config

# Teacher forcing 1 and no dropout: no random draws, so equal updates give equal weights.
SETTINGS = [
    "model.encoder.embedding_size=16", "model.encoder.hidden_size=32", "model.decoder.embedding_size=16",
    "model.decoder.hidden_size=32", "model.decoder.attention_size=32", "model.encoder.dropout=0.0",
    "model.decoder.dropout=0.0", "data.builtin_train_size=160", "train.teacher_forcing=1.0", "train.learning_rate=0.01",
    "train.device=cpu", "train.threads=1", "train.early_stopping_patience=100", "train.lr_patience=0",
]
EPOCHS = 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(*train_args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
               "-m", "seq2seq", "train", "--no-progress", "--no-eval", *train_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def _weights(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return model_tensors(read_safetensors(run_dir / f"{which}.safetensors")[0])


def _epochs(run_dir: Path) -> list[int]:
    if not (run_dir / "metrics.jsonl").exists():  # killed in epoch 1, before its first record
        return []
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if json.loads(line)["kind"] == "epoch"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """An uninterrupted run of 2 processes x batch 8."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    sets = [arg for setting in [*SETTINGS, f"train.epochs={EPOCHS}", "train.batch_size=8"] for arg in ("--set", setting)]
    _finish(_torchrun("--preset", "lstm-attention", *sets, "--out", str(run_dir)))
    return run_dir


def test_two_processes_give_the_weights_of_one_process_with_the_doubled_batch(two_ranks, tmp_path):
    from seq2seq.pipeline import train

    config = tiny_config("lstm-attention", *SETTINGS, f"train.epochs={EPOCHS}", "train.batch_size=16")
    train(config, tmp_path / "one")
    assert _epochs(two_ranks) == _epochs(tmp_path / "one") == list(range(1, EPOCHS + 1))
    one, two = _weights(tmp_path / "one"), _weights(two_ranks)
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=2e-5, msg=lambda m, name=name: f"{name}: {m}")
    # the run directory reads like a one-process run's
    assert load_run(two_ranks, which="best", device=torch.device("cpu")).config.train.batch_size == 8
    records = [json.loads(line) for line in (two_ranks / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "epoch"] == [10, 20, 30]  # 160 pairs / (2 x 8) per update
    assert [r["kind"] for r in records] == ["epoch"] * 3 + ["end"]  # written once (by rank 0)
    from seq2seq.cli import main

    assert main(["evaluate", str(two_ranks), "--split", "valid"]) == 0
    assert json.loads((two_ranks / "eval_valid.json").read_text())["count"] == 8


def test_accumulation_under_two_processes_and_a_rank_without_a_share_of_the_last_update(tmp_path):
    """161 pairs in updates of 2 processes x accumulate 2 x batch 4 give the weights of 1 process x
    batch 16 (DDP exchanges gradients after each rank's second batch only). The last update holds
    1 pair, so rank 0's share is empty: it must still take part in the exchange, adding nothing."""
    from seq2seq.pipeline import train

    # no clipping: a stand-in counted by mistake doubles the last gradient, which clipping would hide
    settings = [setting.replace("builtin_train_size=160", "builtin_train_size=161") for setting in SETTINGS]
    settings.append("train.clip_norm=1000")
    sets = [arg for setting in [*settings, "train.epochs=2", "train.batch_size=4", "train.accumulate=2"]
            for arg in ("--set", setting)]
    _finish(_torchrun("--preset", "lstm-attention", *sets, "--out", str(tmp_path / "two")))
    train(tiny_config("lstm-attention", *settings, "train.epochs=2", "train.batch_size=16"), tmp_path / "one")
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "epoch"] == [11, 22]  # 10 updates of 16 pairs and one of 1, per epoch
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=2e-5, msg=lambda m, name=name: f"{name}: {m}")


def _partial(run_dir: Path) -> bool:
    """Whether the run's last checkpoint was written in the middle of an epoch."""
    metadata = read_safetensors(run_dir / "last.safetensors")[1]
    return json.loads(metadata["trainer_state"])["counters"].get("partial") is not None


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _rank_pid(agent: int, rank: int) -> int:
    for child in _children(agent):
        if f"RANK={rank}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            return child
    raise AssertionError(f"no rank {rank} among the children of {agent}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the rank's process through /proc (Linux)")
# The kill after an epoch's end (None) is slow-marked: the mid-epoch case (1) covers the same resume
# path and more, and the default suite keeps under 10 minutes on 2 cores.
@pytest.mark.parametrize("save_every", [pytest.param(None, marks=pytest.mark.slow), 1])
def test_a_killed_rank_then_resume_gives_the_weights_of_the_uninterrupted_run(two_ranks, tmp_path, save_every):
    """With ``train.save_every_steps`` 1 the kill lands (almost always) after a mid-epoch checkpoint,
    and the resumed run goes on from that update; without, from the last epoch's end."""
    run_dir = tmp_path / "run"
    extra = [] if save_every is None else [f"train.save_every_steps={save_every}"]
    sets = [arg for setting in [*SETTINGS, f"train.epochs={EPOCHS}", "train.batch_size=8", *extra] for arg in ("--set", setting)]
    process = _torchrun("--preset", "lstm-attention", *sets, "--out", str(run_dir))
    deadline = time.monotonic() + 120
    while not (run_dir / "last.safetensors").exists():  # a checkpoint is there: kill rank 1 after it
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0][-3000:]
        time.sleep(0.02)
    os.kill(_rank_pid(process.pid, 1), signal.SIGKILL)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0, output[-3000:]
    saved = _epochs(run_dir)
    assert max(saved, default=0) < EPOCHS, f"rank 1 was killed after the run ended: {saved}"
    if save_every is None:
        assert saved, "the first epoch's checkpoint was there before the kill"

    if save_every is not None and _partial(run_dir):  # a mid-epoch checkpoint of 2 processes: not with 1
        from seq2seq.cli import main

        assert main(["train", "--resume", str(run_dir), "--no-progress", "--no-eval"]) == 2
    output = _finish(_torchrun("--resume", str(run_dir)))
    assert "resumed" in output
    assert _epochs(run_dir) == list(range(1, EPOCHS + 1))
    resumed, straight = _weights(run_dir), _weights(two_ranks)
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name
    assert not list(run_dir.glob("*.tmp*"))


def test_nproc_runs_the_same_command_under_torchrun_and_reports_a_failure_in_one_line(monkeypatch, capsys, tmp_path):
    import torch.distributed.run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from seq2seq.cli import main

    commands = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.distributed.run, "main", commands.append)
    assert main(["train", "--quick", "--nproc", "2", "--set", "train.epochs=1", "--out", str(tmp_path / "run")]) == 0
    assert commands == [["--standalone", "--nproc-per-node=2", "-m", "seq2seq",
                         "train", "--quick", "--set", "train.epochs=1", "--out", str(tmp_path / "run")]]

    def fails(command):
        failure = ProcessFailure(local_rank=1, pid=1, exitcode=-9, error_file="")
        raise ChildFailedError("seq2seq", {1: failure})

    monkeypatch.setattr(torch.distributed.run, "main", fails)
    assert main(["train", "--nproc=2", "--resume", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("seq2seq train: error: a training process of 2 failed (exit code -9")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--nproc", "2", "--out", str(tmp_path / "run")]) == 2
    assert "--nproc starts torchrun itself" in capsys.readouterr().err


def _presets() -> list[str]:
    from seq2seq.config import PRESETS

    return list(PRESETS)


@pytest.mark.parametrize("preset", _presets())
def test_every_parameter_of_every_preset_gets_a_gradient_from_one_batch(preset):
    """Training wraps the model in DDP with ``find_unused_parameters=False``, which fails on a
    parameter that a forward pass leaves out: every preset's batch loss reaches all of them, with
    scheduled sampling, word dropout and copy (a target word found only in the source)."""
    from seq2seq.data.batching import collate, encode_pairs
    from seq2seq.data.vocab import Vocab
    from seq2seq.models.build import build_model
    from seq2seq.training.trainer import Trainer

    torch.manual_seed(0)
    pairs = [("set x to 5".split(), "x = 5".split()), ("call foo with bar".split(), "foo ( bar )".split())] * 4
    src_vocab = Vocab.build([src for src, _ in pairs])
    tgt_vocab = Vocab.build([tgt[:-1] for _, tgt in pairs])  # "5" and ")" only by copying
    teacher = "1.0" if preset.startswith("transformer") else "0.5"
    config = tiny_config(preset, f"train.teacher_forcing={teacher}", "train.word_dropout=0.1", "model.transformer.d_model=32",
                         "model.transformer.ffn_size=64", "model.transformer.encoder_layers=1", "model.transformer.decoder_layers=1")
    model = build_model(config.model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
    trainer = Trainer(model=model, config=config.train, pad_index=0, device=torch.device("cpu"))
    encoded = encode_pairs(pairs, src_vocab=src_vocab, tgt_vocab=tgt_vocab)
    batch = collate(encoded, list(range(len(encoded))), pad_index=0, copy=model.copies)
    objective, _, _ = trainer._loss(batch, teacher_forcing=trainer.teacher_forcing)
    objective.backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.requires_grad and parameter.grad is None]
    assert not missing, f"{preset}: no gradient for {missing}"
