"""Checkpoint averaging (kept epoch weights, `seq2seq average`, `--checkpoint averaged`) and word dropout."""

from __future__ import annotations

import json

import pytest
import torch

from seq2seq.checkpoint import RunDirError, load_run
from seq2seq.cli import main
from seq2seq.models.build import build_model
from seq2seq.training.averaging import average_run, average_weights, epoch_checkpoints
from seq2seq.run_files import read_safetensors, save_weights, write_safetensors
from seq2seq.training.trainer import Trainer
from seq2seq.training.word_dropout import word_dropout
from helpers import tiny_config, train_tiny_run


def test_average_weights_is_the_element_wise_mean(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.5]]), "steps": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([[1.5]]), "steps": torch.tensor([3])}
    write_safetensors(tmp_path / "a.safetensors", a, {})
    write_safetensors(tmp_path / "b.safetensors", b, {})
    mean = average_weights([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0]))
    assert torch.equal(mean["b"], torch.tensor([[1.0]]))
    assert mean["w"].dtype == torch.float32
    assert torch.equal(mean["steps"], torch.tensor([3]))  # integer tensors are kept, not averaged


def test_average_weights_refuses_files_that_do_not_match(tmp_path):
    write_safetensors(tmp_path / "a.safetensors", {"w": torch.zeros(2)}, {})
    write_safetensors(tmp_path / "b.safetensors", {"w": torch.zeros(3)}, {})
    write_safetensors(tmp_path / "c.safetensors", {"v": torch.zeros(2)}, {})
    with pytest.raises(RunDirError, match=r"b\.safetensors: tensor w is \(3,\)"):
        average_weights([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    with pytest.raises(RunDirError, match="other tensors"):
        average_weights([tmp_path / "a.safetensors", tmp_path / "c.safetensors"])


def _trainer(reverse_data, run_dir, *extra):
    src_vocab, tgt_vocab, _, encoded = reverse_data
    config = tiny_config("lstm-attention", "train.batch_size=16", "train.early_stopping_patience=100", *extra)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
    run_dir.mkdir(exist_ok=True)
    return Trainer(model=model, config=config.train, pad_index=0, device=torch.device("cpu"), run_dir=run_dir), encoded


def test_trainer_keeps_the_weights_of_the_last_n_epochs_and_they_average(reverse_data, tmp_path):
    run_dir = tmp_path / "run"
    trainer, encoded = _trainer(reverse_data, run_dir, "train.epochs=4", "train.keep_epoch_checkpoints=2")
    trainer.fit(encoded[:200], encoded[200:])
    kept = epoch_checkpoints(run_dir)
    assert list(kept) == [3, 4]
    last, _ = read_safetensors(run_dir / "last.safetensors")
    epoch4, metadata = read_safetensors(kept[4])
    assert metadata["epoch"] == "4"
    assert all(torch.equal(epoch4[name], last[f"model.{name}"]) for name in epoch4)  # epoch 4's file = the final weights

    path, chosen = average_run(run_dir)
    assert chosen == [3, 4]
    averaged, metadata = read_safetensors(path)
    epoch3, _ = read_safetensors(kept[3])
    assert metadata["averaged_epochs"] == "3,4"
    for name, tensor in averaged.items():
        assert torch.allclose(tensor, (epoch3[name] + epoch4[name]) / 2, atol=1e-7), name
    assert not torch.equal(averaged["decoder.output.weight"], epoch4["decoder.output.weight"])


def test_without_kept_epochs_no_file_is_written(reverse_data, tmp_path):
    run_dir = tmp_path / "run"
    trainer, encoded = _trainer(reverse_data, run_dir, "train.epochs=2")
    trainer.fit(encoded[:200], encoded[200:])
    assert epoch_checkpoints(run_dir) == {}
    with pytest.raises(RunDirError, match="keep_epoch_checkpoints"):
        average_run(run_dir)
    with pytest.raises(RunDirError, match="run directory not found"):
        average_run(tmp_path / "missing")


def test_resume_with_kept_epochs_and_word_dropout_is_bit_identical(reverse_data, tmp_path):
    extra = ("train.keep_epoch_checkpoints=2", "train.word_dropout=0.3")
    straight, encoded = _trainer(reverse_data, tmp_path / "straight", "train.epochs=4", *extra)
    straight.fit(encoded[:200], encoded[200:])
    first, _ = _trainer(reverse_data, tmp_path / "split", "train.epochs=2", *extra)
    first.fit(encoded[:200], encoded[200:])
    torch.manual_seed(999)  # resuming restores the generator that word dropout draws from
    resumed, _ = _trainer(reverse_data, tmp_path / "split", "train.epochs=4", *extra)
    resumed.resume()
    resumed.fit(encoded[:200], encoded[200:])
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert list(epoch_checkpoints(tmp_path / "split")) == [3, 4]


def test_word_dropout_changes_training_but_never_padding(reverse_data, tmp_path):
    src = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 0, 0, 0, 0]])
    mask = src != 0
    torch.manual_seed(0)
    dropped = word_dropout(src, mask, rate=0.5, unk_index=1)
    assert torch.equal(dropped[~mask], src[~mask])  # padding untouched
    assert set(dropped[mask].tolist()) <= set(src[mask].tolist()) | {1}
    assert torch.equal(word_dropout(src, mask, rate=0.0, unk_index=1), src)
    big = torch.randint(4, 50, (200, 50))
    share = (word_dropout(big, torch.ones_like(big, dtype=torch.bool), rate=0.25, unk_index=1) == 1).float().mean()
    assert 0.23 < float(share) < 0.27
    with pytest.raises(ValueError, match="rate"):
        word_dropout(src, mask, rate=1.0, unk_index=1)

    # The trainer feeds the model the dropped source: <unk> (id 1) appears in what the model reads.
    noisy, encoded = _trainer(reverse_data, tmp_path / "noisy", "train.epochs=1", "train.word_dropout=0.3")
    seen = []
    forward = noisy.model.forward
    noisy.model.forward = lambda src, *args, **kwargs: seen.append(src.clone()) or forward(src, *args, **kwargs)
    noisy.fit(encoded[:200], encoded[200:])
    training_sources = seen[: len(seen) - 3]  # the last calls are validation (no dropout there)
    unk_share = sum(int((s == 1).sum()) for s in training_sources) / sum(int((s != 0).sum()) for s in training_sources)
    assert 0.2 < unk_share < 0.4
    validation = seen[-1]
    assert not (validation == 1).any()  # validation reads the source as it is


def test_cli_average_then_evaluate_and_generate_with_the_averaged_weights(tmp_path, capsys):
    run_dir = train_tiny_run(tmp_path / "run", "train.epochs=3", "train.keep_epoch_checkpoints=3")
    assert sorted(epoch_checkpoints(run_dir)) == [1, 2, 3]
    assert main(["evaluate", str(run_dir), "--checkpoint", "averaged"]) == 2
    assert "seq2seq average" in capsys.readouterr().err  # the error says how to write it
    assert main(["average", str(run_dir), "--last", "2"]) == 0
    assert "epochs 2, 3" in capsys.readouterr().out
    assert main(["evaluate", str(run_dir)]) == 0
    best_report = (run_dir / "eval_test.json").read_text()
    assert main(["evaluate", str(run_dir), "--checkpoint", "averaged"]) == 0
    assert (run_dir / "eval_test.json").read_text() == best_report  # the best weights' report is kept
    summary = json.loads((run_dir / "eval_test_averaged.json").read_text())
    assert summary["checkpoint"] == "averaged"
    assert main(["generate", str(run_dir), "add 3 to total", "--checkpoint", "averaged"]) == 0
    run = load_run(run_dir, which="averaged")
    averaged, _ = read_safetensors(run_dir / "averaged.safetensors")
    assert torch.equal(run.model.state_dict()["decoder.output.weight"], averaged["decoder.output.weight"])


@pytest.mark.parametrize("args, message", [
    (["--last", "5"], "only [1, 2] are kept"),
    (["--epochs", "1,7"], "no weights kept for epoch(s) [7]"),
    (["--epochs", "two"], "expected comma-separated epoch numbers"),
])
def test_cli_average_errors_name_what_is_wrong(tmp_path, capsys, args, message):
    run_dir = train_tiny_run(tmp_path / "run", "train.epochs=2", "train.keep_epoch_checkpoints=5")
    capsys.readouterr()
    assert main(["average", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (run_dir / "averaged.safetensors").exists()


def test_save_weights_of_a_model_round_trip_through_an_average_of_one(tmp_path):
    model = build_model(tiny_config().model, src_vocab_size=20, tgt_vocab_size=20)
    save_weights(model, tmp_path / "epoch-001.safetensors")
    (averaged,) = [average_weights([tmp_path / "epoch-001.safetensors"])]
    for name, tensor in model.state_dict().items():
        assert torch.equal(averaged[name], tensor), name


def test_resume_removes_epoch_files_a_crash_left_beyond_the_checkpoint(reverse_data, tmp_path):
    run_dir = tmp_path / "run"
    first, encoded = _trainer(reverse_data, run_dir, "train.epochs=2", "train.keep_epoch_checkpoints=5")
    first.fit(encoded[:200], encoded[200:])
    (run_dir / "epoch-003.safetensors").write_bytes((run_dir / "epoch-002.safetensors").read_bytes())  # a kill before `last`
    (run_dir / "epoch-007.safetensors").write_bytes(b"from another life")
    resumed, _ = _trainer(reverse_data, run_dir, "train.epochs=3", "train.keep_epoch_checkpoints=5")
    resumed.resume()
    resumed.fit(encoded[:200], encoded[200:])
    assert list(epoch_checkpoints(run_dir)) == [1, 2, 3]
    epoch3, _ = read_safetensors(run_dir / "epoch-003.safetensors")
    assert all(torch.equal(epoch3[name], tensor) for name, tensor in resumed.model.state_dict().items())


def test_overwrite_removes_the_old_runs_epoch_and_averaged_weights(tmp_path, capsys):
    run_dir = train_tiny_run(tmp_path / "run", "train.epochs=2", "train.keep_epoch_checkpoints=2")
    assert main(["average", str(run_dir)]) == 0
    assert main(["train", "--quick", "--set", "train.epochs=1", "--no-eval", "--overwrite", "--out", str(run_dir)]) == 0
    assert epoch_checkpoints(run_dir) == {} and not (run_dir / "averaged.safetensors").exists()
