"""Reliability: SIGKILL at any moment, non-finite losses, a full disk or read-only folder, and safe loading.

1. Crash safety: ``seq2seq train`` is killed with SIGKILL at random moments and in the middle of
   writing a checkpoint, then resumed. After every kill the run directory loads (best, last and the
   full trainer state), and the finished run is bit-identical to an uninterrupted one.
2. A non-finite loss or gradient is reported with epoch, step and batch, never saved as best, and
   stops training or skips the batch as ``train.on_nonfinite`` says.
3. A full disk or a read-only folder is one line from the CLI (exit 2) naming the path, and leaves
   no temporary file and the previous checkpoint intact.
4. Loading never unpickles, and a run directory from another format version, with missing files,
   corrupt safetensors or tensors of the wrong shape is a RunDirError saying what is wrong.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import seq2seq.training.trainer as trainer_module
from helpers import tiny_config
from seq2seq.checkpoint import RunDirError, load_run, load_run_config
from seq2seq.cli import main
from seq2seq.models.build import build_model
from seq2seq.pipeline import train
from seq2seq.run_files import atomic_write_text, read_safetensors, write_safetensors
from seq2seq.training.checkpointing import load_checkpoint
from seq2seq.training.trainer import NonFiniteLossError, Trainer

SRC = Path(__file__).resolve().parents[1] / "src" / "seq2seq"
CHECKPOINTS = ("best.safetensors", "last.safetensors")


# ================================================================ 1. SIGKILL and resume

# 200 examples in batches of 32 for 5 epochs, one thread: a few seconds of training, so that
# random kills land in start-up, in epochs and in checkpoint writes alike.
KILL_RUN = ["--quick", "--no-progress", "--no-eval", "--set", "train.threads=1",
            "--set", "data.builtin_train_size=200", "--set", "train.epochs=5"]
TIMING_FIELDS = ("seconds", "train_tokens_per_s")


def _launch(run_dir: Path, log: Path) -> subprocess.Popen:
    """Start ``seq2seq train``: ``--resume`` once the folder is a run, else the original command."""
    if (run_dir / "run.json").exists():
        args = ["train", "--resume", str(run_dir), "--no-progress", "--no-eval"]
    else:
        args = ["train", *KILL_RUN, "--out", str(run_dir)]
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "seq2seq", *args], stdout=handle, stderr=handle)


def _finish(run_dir: Path, log: Path) -> None:
    process = _launch(run_dir, log)
    assert process.wait(timeout=300) == 0, log.read_text()[-3000:]


def _temporaries(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob(".*.tmp")) if run_dir.is_dir() else []


def _kill_during_checkpoint_write(process: subprocess.Popen, run_dir: Path) -> bool:
    """SIGKILL as soon as a checkpoint's temporary file appears; False if the run ended first."""
    while process.poll() is None:
        if any(name.startswith((".best.", ".last.")) for name in _temporaries(run_dir)):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.0002)
    return False


def _kill_after(process: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL after ``seconds``; False if the run ended first."""
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def _assert_loadable(run_dir: Path) -> None:
    """Whatever a kill left must load: config, vocabularies, best and last weights, the trainer state."""
    if not (run_dir / "run.json").exists():
        return  # not a run yet: the next start begins it again
    load_run_config(run_dir)
    for name in CHECKPOINTS:
        if (run_dir / name).exists():
            run = load_run(run_dir, which=name.split(".")[0])
    if (run_dir / "last.safetensors").exists():
        optimizer = torch.optim.Adam(run.model.parameters())
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
        python_state = random.getstate()
        with torch.random.fork_rng():  # load_checkpoint restores the RNGs of this test process too
            load_checkpoint(run_dir / "last.safetensors", model=run.model, optimizer=optimizer, scheduler=scheduler)
        random.setstate(python_state)


def _metrics(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    """Every tensor and every metadata entry of best and last, and every metric but timings, equal."""
    for name in CHECKPOINTS:
        tensors, metadata = read_safetensors(run_dir / name)
        expected, expected_metadata = read_safetensors(reference / name)
        assert tensors.keys() == expected.keys(), name
        for key, tensor in expected.items():
            assert torch.equal(tensors[key], tensor), f"{name}: {key} differs"
        assert metadata == expected_metadata, name
    assert _metrics(run_dir) == _metrics(reference)
    assert _temporaries(run_dir) == []


@dataclass
class KillReport:
    kills: int = 0
    mid_write: int = 0  # kills that left a checkpoint's temporary file behind
    modes: list[str] = field(default_factory=list)


def _train_with_kills(run_dir: Path, plan: list[str], rng: random.Random, clean_seconds: float) -> KillReport:
    """Run ``plan`` (one kill mode per start), check the folder after each kill, then finish the run."""
    report, log = KillReport(), run_dir.parent / f"{run_dir.name}.log"
    for mode in plan:
        process = _launch(run_dir, log)
        if mode == "write":
            killed = _kill_during_checkpoint_write(process, run_dir)
        else:
            killed = _kill_after(process, rng.uniform(0.0, clean_seconds))
        if not killed:
            assert process.returncode == 0, log.read_text()[-3000:]
            break
        report.kills += 1
        report.modes.append(mode)
        report.mid_write += any(name.startswith((".best.", ".last.")) for name in _temporaries(run_dir))
        _assert_loadable(run_dir)
    _finish(run_dir, log)
    return report


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The reference: the same command, never killed; and how long it took."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    started = time.perf_counter()
    _finish(run_dir, run_dir.parent / "run.log")
    return run_dir, time.perf_counter() - started


def test_sigkill_mid_checkpoint_and_at_random_then_resume_is_bit_identical(uninterrupted, tmp_path):
    reference, seconds = uninterrupted
    report = _train_with_kills(tmp_path / "run", ["write", "random"], random.Random(7), seconds)
    assert report.kills >= 1 and report.modes[0] == "write"
    _assert_same_run(tmp_path / "run", reference)


@pytest.mark.slow
def test_many_sigkills_never_corrupt_the_run_and_resume_is_bit_identical(uninterrupted, tmp_path):
    reference, seconds = uninterrupted
    rng, total = random.Random(2024), KillReport()
    for trial in itertools.count():
        if total.kills >= 40:
            break
        plan = [rng.choice(["write", "random", "random"]) for _ in range(rng.randint(2, 4))]
        report = _train_with_kills(tmp_path / f"run{trial}", plan, rng, seconds)
        _assert_same_run(tmp_path / f"run{trial}", reference)
        total.kills, total.mid_write = total.kills + report.kills, total.mid_write + report.mid_write
        total.modes += report.modes
    print(f"SIGKILL: {total.kills} kills survived in {trial} runs ({total.modes.count('write')} aimed at a "
          f"checkpoint write, {total.mid_write} left a half-written temporary file); every run bit-identical")


def test_resume_of_a_run_killed_before_its_first_epoch_starts_at_epoch_one(reverse_data, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # Killed between epoch 1's metrics record and its checkpoint, in the middle of writing it.
    (run_dir / "metrics.jsonl").write_text('{"kind": "step", "step": 3, "epoch": 1, "train_loss": 2.0}\n'
                                           '{"kind": "epoch", "epoch": 1, "step": 4}\n{"ki')
    (run_dir / ".last.safetensors.x1y2.tmp").write_bytes(b"half a checkpoint")
    trainer = _reverse_trainer(reverse_data, run_dir)
    trainer.resume()
    assert (trainer.epoch, trainer.step) == (0, 0)
    assert (run_dir / "metrics.jsonl").read_text() == "" and _temporaries(run_dir) == []


def test_resume_refuses_a_run_whose_last_checkpoint_is_missing(reverse_data, tmp_path):
    run_dir = tmp_path / "run"
    trainer = _reverse_trainer(reverse_data, run_dir)
    trainer.fit(reverse_data[3][:200], reverse_data[3][200:])  # two epochs recorded
    (run_dir / "last.safetensors").unlink()
    with pytest.raises(RunDirError, match=re.escape(f"{run_dir / 'last.safetensors'}: training checkpoint not found")):
        _reverse_trainer(reverse_data, run_dir).resume()


# ================================================================ 2. non-finite losses


def _reverse_trainer(reverse_data, run_dir: Path, *extra: str) -> Trainer:
    """A GRU on the reversal task: 200 training pairs in 4 batches of 50."""
    src_vocab, tgt_vocab, _, _ = reverse_data
    config = tiny_config("gru", "train.epochs=2", "train.batch_size=50", "train.early_stopping_patience=10", *extra)
    run_dir.mkdir(exist_ok=True)
    model = build_model(config.model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
    return Trainer(model=model, config=config.train, pad_index=0, device=torch.device("cpu"), run_dir=run_dir)


def _poison(monkeypatch, *, at_call: int, gradient: bool = False) -> None:
    """Make the ``at_call``-th training loss NaN (or keep it finite with a NaN gradient)."""
    real = trainer_module.sequence_cross_entropy
    calls = itertools.count(1)

    def poisoned(logits, targets, **kwargs):
        loss, n = real(logits, targets, **kwargs)
        if next(calls) != at_call:
            return loss, n
        if gradient:  # d sqrt(u)/du at u = 0 is inf, times du/dlogits = 0: NaN gradients, loss unchanged
            return loss + torch.sqrt((logits * 0).sum()), n
        return loss * math.nan, n

    monkeypatch.setattr(trainer_module, "sequence_cross_entropy", poisoned)


def _epochs_saved(run_dir: Path) -> tuple[str, str]:
    return tuple(read_safetensors(run_dir / name)[1]["epoch"] for name in CHECKPOINTS)


@pytest.mark.parametrize(("gradient", "what"), [(False, "loss (nan)"), (True, "gradient norm (nan)")])
def test_non_finite_stops_with_epoch_step_and_batch_and_saves_nothing_of_the_epoch(
    reverse_data, tmp_path, monkeypatch, gradient, what
):
    trainer = _reverse_trainer(reverse_data, tmp_path / "run")
    _poison(monkeypatch, at_call=6, gradient=gradient)  # epoch 2, batch 2, after 5 optimizer steps
    with pytest.raises(NonFiniteLossError, match=re.escape(f"non-finite training {what} at epoch 2, step 5, batch 2 of 4")) as info:
        trainer.fit(reverse_data[3][:200], reverse_data[3][200:])
    assert "training examples" in str(info.value) and len(info.value.indices) == 50
    assert _epochs_saved(tmp_path / "run") == ("1", "1")
    assert [r["epoch"] for r in _metrics(tmp_path / "run") if r["kind"] == "epoch"] == [1]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_non_finite_batch_is_skipped_and_counted_when_configured(reverse_data, tmp_path, monkeypatch, caplog):
    trainer = _reverse_trainer(reverse_data, tmp_path / "run", "train.on_nonfinite=skip")
    _poison(monkeypatch, at_call=6)
    result = trainer.fit(reverse_data[3][:200], reverse_data[3][200:])
    assert [s.skipped_batches for s in result.history] == [0, 1]
    assert trainer.step == 7
    assert [r["skipped_batches"] for r in _metrics(tmp_path / "run") if r["kind"] == "epoch"] == [0, 1]
    assert "non-finite training loss (nan) at epoch 2, step 5, batch 2 of 4" in caplog.text and "skipped" in caplog.text


def test_non_finite_validation_loss_is_never_saved_as_best(reverse_data, tmp_path, monkeypatch):
    trainer = _reverse_trainer(reverse_data, tmp_path / "run")
    real = trainer_module.reference_loss_sums
    monkeypatch.setattr(trainer_module, "reference_loss_sums",
                        lambda *a, **k: (math.nan, 1) if trainer.epoch == 2 else real(*a, **k))
    trainer.fit(reverse_data[3][:200], reverse_data[3][200:])
    assert _epochs_saved(tmp_path / "run") == ("1", "2")
    assert math.isfinite(trainer.best_valid_loss) and trainer.bad_epochs == 1


def test_cli_reports_a_non_finite_loss_in_one_line_with_where_it_happened(tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, at_call=3)
    code = main(["train", "--quick", "--no-progress", "--no-eval", "--set", "data.builtin_train_size=100",
                 "--out", str(tmp_path / "run")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("seq2seq train: error:")]
    assert code == 2 and len(lines) == 1
    assert "non-finite training loss (nan) at epoch 1, step 2, batch 3 of" in lines[0]
    assert "the first is builtin:nl2code:train:" in lines[0] and "train.on_nonfinite=skip" in lines[0]
    assert not (tmp_path / "run" / "best.safetensors").exists()


# ================================================================ 3. a full disk, a read-only folder


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run of a tiny LSTM on the built-in task, trained in this process."""
    run_dir = tmp_path_factory.mktemp("small") / "run"
    train(tiny_config("lstm", "data.builtin_train_size=60", "train.epochs=2", "train.batch_size=16"), run_dir)
    return run_dir


@pytest.fixture
def run_copy(small_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(small_run, tmp_path / "run")
    return tmp_path / "run"


def _cli_error(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("seq2seq ")]


def test_full_disk_while_writing_a_checkpoint_is_one_line_and_keeps_the_old_one(run_copy, monkeypatch, capsys):
    before = _digests(run_copy)
    real_write_bytes = Path.write_bytes

    def disk_fills_up(path: Path, data: bytes) -> int:
        if path.name.startswith(".last.safetensors."):
            real_write_bytes(path, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", disk_fills_up)
    code = main(["train", "--resume", str(run_copy), "--set", "train.epochs=3", "--no-progress", "--no-eval"])
    assert code == 2
    [line] = _cli_error(capsys)
    assert line.startswith(f"seq2seq train: error: [Errno {errno.ENOSPC}] cannot write {run_copy / 'last.safetensors'}: ")
    assert "No space left on device" in line
    assert _temporaries(run_copy) == []
    assert _digests(run_copy)["last.safetensors"] == before["last.safetensors"]
    _assert_loadable(run_copy)
    # With room on the disk again, the run resumes where the old checkpoint left it.
    monkeypatch.setattr(Path, "write_bytes", real_write_bytes)
    assert main(["train", "--resume", str(run_copy), "--set", "train.epochs=3", "--no-progress", "--no-eval"]) == 0
    assert [r["epoch"] for r in _metrics(run_copy) if r["kind"] == "epoch"] == [1, 2, 3]


def test_full_disk_at_fsync_removes_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")

    def disk_full(fd: int) -> None:  # delayed allocation: the data is refused when it is flushed
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match=re.escape(f"cannot write {target}: No space left on device")) as info:
        atomic_write_text(target, "new")
    assert info.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["file.txt"]


@contextlib.contextmanager
def read_only(folder: Path, monkeypatch) -> Iterator[None]:
    """Make ``folder`` read-only: chmod where that binds, else (root ignores permission bits)
    refuse every write under it the way a read-only mount does, with EROFS."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.touch()
    except PermissionError:
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    probe.unlink()

    def inside(path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and Path(os.path.abspath(path)).is_relative_to(folder)

    def refuse(path: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def guard(real: Callable, *, writes: Callable[..., bool] = lambda *a, **k: True) -> Callable:
        def guarded(path, *args, **kwargs):
            if inside(path) and writes(*args, **kwargs):
                refuse(path)
            return real(path, *args, **kwargs)
        return guarded

    def opens_for_writing(mode: str = "r", *args, **kwargs) -> bool:
        return any(flag in mode for flag in "wax+")

    def os_open_writes(flags: int, *args, **kwargs) -> bool:
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

    try:
        with monkeypatch.context() as patch:
            for name in ("mkdir", "unlink", "remove", "rmdir", "chmod", "replace", "rename"):
                patch.setattr(os, name, guard(getattr(os, name)))
            patch.setattr(os, "open", guard(os.open, writes=os_open_writes))
            patch.setattr(io, "open", guard(io.open, writes=opens_for_writing))
            patch.setattr("builtins.open", guard(open, writes=opens_for_writing))
            yield
    finally:
        folder.chmod(0o755)


def test_read_only_output_folder_is_one_line_naming_the_path(tmp_path, monkeypatch, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    with read_only(parent, monkeypatch):
        code = main(["train", "--quick", "--no-progress", "--no-eval", "--set", "data.builtin_train_size=60",
                     "--out", str(parent / "run")])
    assert code == 2
    [line] = _cli_error(capsys)
    assert str(parent / "run") in line and re.search(r"Read-only file system|Permission denied", line)
    assert list(parent.iterdir()) == []


def test_resume_into_a_read_only_run_changes_nothing(run_copy, monkeypatch, capsys):
    before = _digests(run_copy)
    with read_only(run_copy, monkeypatch):
        code = main(["train", "--resume", str(run_copy), "--set", "train.epochs=3", "--no-progress", "--no-eval"])
    assert code == 2
    [line] = _cli_error(capsys)
    assert f"cannot write {run_copy / 'metrics.jsonl'}" in line
    assert _digests(run_copy) == before and _temporaries(run_copy) == []


# ================================================================ 4. safe loading

# Loaders that can run code from a file: pickle and its relatives, torch.load (pickle inside),
# and the switches that turn pickle back on.
UNSAFE = re.compile(
    r"\b(c?pickle|dill|shelve|marshal|joblib)\b|torch\s*\.\s*(jit\s*\.\s*)?load\b"
    r"|weights_only\s*=\s*False|allow_pickle\s*=\s*True"
)


def _code_without_strings_and_comments(path: Path) -> Iterator[tuple[int, str]]:
    """(line, code) with docstrings, strings and comments removed: prose may say 'no pickle'."""
    lines: dict[int, list[str]] = {}
    with open(path, "rb") as handle:
        for token in tokenize.tokenize(handle.readline):
            if token.type not in (tokenize.STRING, tokenize.COMMENT, tokenize.ENCODING):
                lines.setdefault(token.start[0], []).append(token.string)
    return ((number, " ".join(parts)) for number, parts in sorted(lines.items()))


def test_no_pickle_torch_load_or_weights_only_false_in_the_package():
    found = [
        f"{path.relative_to(SRC)}:{number}: {code.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for number, code in _code_without_strings_and_comments(path)
        if UNSAFE.search(code)
    ]
    assert found == [], "unsafe deserialization in the package:\n" + "\n".join(found)
    assert UNSAFE.search("torch.load(f, weights_only=False)") and UNSAFE.search("import pickle")


def _rewrite(path: Path, edit: Callable[[dict[str, torch.Tensor], dict[str, str]], None]) -> None:
    """Change a safetensors file's tensors or metadata and write it back with a matching digest."""
    tensors, metadata = read_safetensors(path)
    edit(tensors, metadata)
    write_safetensors(path, tensors, {k: v for k, v in metadata.items() if k != "content_sha256"})


def test_run_from_another_format_version_names_the_versions(run_copy):
    (run_copy / "run.json").write_text(json.dumps({"format_version": 2}))
    with pytest.raises(RunDirError, match=re.escape(f"{run_copy / 'run.json'}: format_version 2; this seq2seq reads 1")):
        load_run(run_copy)


def test_checkpoint_from_another_format_version_is_refused_on_resume(run_copy, capsys):
    def bump(tensors, metadata):
        state = json.loads(metadata["trainer_state"])
        metadata["trainer_state"] = json.dumps({**state, "format_version": 7})

    _rewrite(run_copy / "last.safetensors", bump)
    assert main(["train", "--resume", str(run_copy), "--set", "train.epochs=3", "--no-progress", "--no-eval"]) == 2
    [line] = _cli_error(capsys)
    assert f"{run_copy / 'last.safetensors'}: format_version 7; this seq2seq reads 1" in line


@pytest.mark.parametrize(("missing", "needle"), [
    ("run.json", "not a run directory (no run.json)"),
    ("config.yaml", "config.yaml: config file not found"),
    ("src_vocab.json", "src_vocab.json: vocabulary file not found"),
    ("tgt_vocab.json", "tgt_vocab.json: vocabulary file not found"),
    ("best.safetensors", "best.safetensors: not found"),
])
def test_missing_file_is_named(run_copy, missing, needle):
    (run_copy / missing).unlink()
    with pytest.raises(RunDirError, match=re.escape(needle)):
        load_run(run_copy)


@pytest.mark.parametrize(("damage", "needle"), [
    (lambda data: data[: len(data) // 2], "not a readable safetensors file"),
    (lambda data: b"\x00" * 8 + data[8:], "not a readable safetensors file"),
    (lambda data: data[:-10] + bytes([data[-10] ^ 0x40]) + data[-9:], "content does not match its content_sha256"),
    (lambda data: b"", "not a readable safetensors file"),
])
def test_corrupt_safetensors_is_a_run_dir_error_naming_the_file(run_copy, damage, needle, capsys):
    for name in CHECKPOINTS:
        path = run_copy / name
        path.write_bytes(damage(path.read_bytes()))
        with pytest.raises(RunDirError, match=re.escape(f"{path}: {needle}")):
            load_run(run_copy, which=name.split(".")[0])
    assert main(["generate", str(run_copy), "add 3 to total"]) == 2
    [line] = _cli_error(capsys)
    assert line.startswith(f"seq2seq generate: error: {run_copy / 'best.safetensors'}: {needle}")


def test_weights_of_the_wrong_shape_name_tensor_and_both_shapes(run_copy):
    def shrink(tensors, metadata):
        tensors["decoder.output.weight"] = tensors["decoder.output.weight"][:-1].clone()

    _rewrite(run_copy / "best.safetensors", shrink)
    rows, cols = read_safetensors(run_copy / "last.safetensors")[0]["model.decoder.output.weight"].shape
    with pytest.raises(RunDirError, match=re.escape(
        f"{run_copy / 'best.safetensors'}: weights do not fit the configured model: wrong shapes "
        f"['decoder.output.weight: file ({rows - 1}, {cols}) torch.float32 vs model ({rows}, {cols}) torch.float32']"
    )):
        load_run(run_copy)


def test_optimizer_state_of_the_wrong_shape_is_refused_before_training(run_copy):
    tensors, _ = read_safetensors(run_copy / "last.safetensors")
    victim = next(k for k, t in tensors.items() if k.endswith(".exp_avg") and t.dim() == 2 and t.shape[0] != t.shape[1])

    def transpose(tensors, metadata):
        tensors[victim] = tensors[victim].t().contiguous()

    _rewrite(run_copy / "last.safetensors", transpose)
    run = load_run(run_copy, which="last")
    optimizer = torch.optim.Adam(run.model.parameters())
    with pytest.raises(RunDirError, match=re.escape(f"{run_copy / 'last.safetensors'}: tensor {victim} has shape")):
        load_checkpoint(run_copy / "last.safetensors", model=run.model, optimizer=optimizer,
                        scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer))


def test_weights_only_file_cannot_be_resumed(run_copy):
    shutil.copy(run_copy / "best.safetensors", run_copy / "last.safetensors")
    with pytest.raises(RunDirError, match="holds weights only, not a training checkpoint"):
        Trainer(model=load_run(run_copy).model, config=load_run_config(run_copy).train, pad_index=0,
                device=torch.device("cpu"), run_dir=run_copy).resume()


# Ways to run code: the builtins exec / eval / compile (not re.compile), and child processes or
# shells (the package starts none; an execution-based metric would have to, with limits).
# compile() with PyCF_ONLY_AST in the same call returns a syntax tree, never byte code: a parse, as
# ast.parse is (which cannot take codeop's incomplete-input flag that data/python_syntax.py needs).
PARSE_ONLY = re.compile(r"\bcompile \(.*\bPyCF_ONLY_AST\b")
RUNS_CODE = re.compile(r"(?<![\w.])(exec|eval|compile|__import__)\s*\(|\b(subprocess|os\s*\.\s*(system|popen|exec\w*|spawn\w*))\b|\bruntime\s*\.\s*exec\b")


def test_generated_code_is_never_executed(tmp_path, monkeypatch):
    """Parsing is the only thing done with generated code: no exec/eval/compile or child process in
    the package, and an output that would write a file if run is only parsed."""
    found = [
        f"{path.relative_to(SRC)}:{number}: {code.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for number, code in _code_without_strings_and_comments(path)
        if RUNS_CODE.search(code.replace(" . ", "."))  # "re . compile" -> "re.compile": a method, not the builtin
        and not PARSE_ONLY.search(code)
    ]
    assert found == [], "code that can run generated text:\n" + "\n".join(found)
    assert RUNS_CODE.search("exec ( text )") and RUNS_CODE.search("import subprocess")
    assert not RUNS_CODE.search("re.compile ( x )") and not RUNS_CODE.search("model.eval ( )")
    assert PARSE_ONLY.search('compile ( text , "<output>" , "exec" , ast . PyCF_ONLY_AST | FLAG )')
    assert not PARSE_ONLY.search('compile ( text , "<output>" , "exec" )')

    from seq2seq.evaluation.metrics import parse_rate, parses

    marker = tmp_path / "ran"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"
    monkeypatch.setattr("builtins.exec", lambda *a, **k: pytest.fail("exec called"))
    monkeypatch.setattr("builtins.eval", lambda *a, **k: pytest.fail("eval called"))
    assert parses(payload) and parse_rate([payload, "x = ("]) == 0.5
    from seq2seq.data.python_syntax import viable_prefix  # the grammar constraint's prefix check

    assert viable_prefix(payload[: payload.rindex('(') + 1]) and viable_prefix(payload)
    assert not marker.exists()
