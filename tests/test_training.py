"""Training behaviour: the loss ignores padding, a tiny task is learned to 100 %, resuming is exact."""

from __future__ import annotations

import json

import pytest
import torch

from seq2seq.data.batching import bucketed_batches
from seq2seq.decoding.greedy import greedy_decode, greedy_decode_all
from seq2seq.evaluation.metrics import exact_match
from seq2seq.models.build import build_model
from seq2seq.run_files import atomic_write_text, load_weights, save_weights
from seq2seq.training.loss import sequence_cross_entropy
from helpers import fit_reverse, tiny_config


def test_loss_ignores_padding_positions():
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[4, 5, 3, 0], [4, 3, 0, 0]])
    loss, n = sequence_cross_entropy(logits, targets, pad_index=0)
    changed = logits.clone()
    changed[0, 3] += 100.0
    changed[1, 2:] -= 50.0
    loss_changed, _ = sequence_cross_entropy(changed, targets, pad_index=0)
    assert n == 5
    assert torch.allclose(loss, loss_changed)
    manual = -sum(torch.log_softmax(logits[b, t], -1)[targets[b, t]] for b, t in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)])
    assert torch.allclose(loss, manual)


def test_label_smoothing_changes_loss_and_shape_check():
    logits, targets = torch.randn(1, 3, 5), torch.tensor([[1, 2, 3]])
    plain, _ = sequence_cross_entropy(logits, targets, pad_index=0)
    smooth, _ = sequence_cross_entropy(logits, targets, pad_index=0, label_smoothing=0.1)
    assert not torch.allclose(plain, smooth)
    with pytest.raises(ValueError, match="disagree"):
        sequence_cross_entropy(logits, torch.tensor([[1, 2]]), pad_index=0)


def _train_reverse(reverse_data, tmp_path, *, epochs: int, run_name: str = "run", resume: bool = False,
                   preset="lstm-attention", extra: tuple[str, ...] = ()):
    config = tiny_config(preset, f"train.epochs={epochs}", "train.batch_size=16", "train.teacher_forcing=0.5",
                         "train.learning_rate=0.01", "train.early_stopping_patience=100", *extra)
    return fit_reverse(config, reverse_data, tmp_path, run_name=run_name, resume=resume)


def test_overfits_tiny_reversal_task_to_100_percent(reverse_data, tmp_path):
    src_vocab, tgt_vocab, pairs, encoded = reverse_data
    model, _ = _train_reverse(reverse_data, tmp_path, epochs=40)
    hypotheses = greedy_decode_all(model, [p.src for p in encoded[:200]], sos_index=2, eos_index=3, pad_index=0, max_len=12)
    predicted = [tgt_vocab.decode(h.tokens) for h in hypotheses]
    assert exact_match(predicted, [t for _, t in pairs[:200]]) == 1.0


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(reverse_data, tmp_path):
    # Dropout and a scheduler that reacts every epoch make the RNG and scheduler state matter.
    extra = ("model.encoder.dropout=0.3", "model.decoder.dropout=0.3", "train.lr_patience=0", "train.lr_factor=0.7")
    straight, straight_trainer = _train_reverse(reverse_data, tmp_path, epochs=4, run_name="straight", extra=extra)
    _train_reverse(reverse_data, tmp_path, epochs=2, run_name="split", extra=extra)
    torch.manual_seed(12345)  # resuming must restore the RNG, whatever happened in between
    resumed, trainer = _train_reverse(reverse_data, tmp_path, epochs=4, run_name="split", resume=True, extra=extra)
    assert trainer.epoch == 4
    assert trainer.optimizer.param_groups[0]["lr"] == straight_trainer.optimizer.param_groups[0]["lr"]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "epoch"]
    assert epochs == [1, 2, 3, 4]


def test_max_steps_stops_mid_epoch_validates_and_a_resume_trains_no_further(reverse_data, tmp_path):
    """200 pairs in batches of 16: 13 updates per epoch. max_steps 20 ends in epoch 2 after its 7th
    update, and that part-epoch is validated and recorded like a time budget's last epoch."""
    capped, trainer = _train_reverse(reverse_data, tmp_path, epochs=4, run_name="capped", extra=("train.max_steps=20",))
    assert (trainer.step, trainer.epoch) == (20, 2)
    records = [json.loads(line) for line in (tmp_path / "capped" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [(r["epoch"], r["step"]) for r in epochs] == [(1, 13), (2, 20)]
    assert epochs[1]["fraction"] == pytest.approx(7 / 13)
    weights = {name: value.clone() for name, value in capped.state_dict().items()}
    resumed, trainer = _train_reverse(reverse_data, tmp_path, epochs=4, run_name="capped", resume=True,
                                      extra=("train.max_steps=20",))
    assert (trainer.step, trainer.epoch) == (20, 2)
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_max_steps_at_an_epoch_boundary_is_that_many_whole_epochs(reverse_data, tmp_path):
    one_epoch, _ = _train_reverse(reverse_data, tmp_path, epochs=1, run_name="epoch")
    capped, trainer = _train_reverse(reverse_data, tmp_path, epochs=4, run_name="capped", extra=("train.max_steps=13",))
    assert (trainer.step, trainer.epoch) == (13, 1)
    for (name, a), (_, b) in zip(one_epoch.state_dict().items(), capped.state_dict().items()):
        assert torch.equal(a, b), name


def test_resume_from_a_mid_epoch_checkpoint_gives_the_uninterrupted_weights(reverse_data, tmp_path):
    """train.save_every_steps 3 (13 updates per epoch): a crash at step 20 resumes from step 18,
    in epoch 2, and ends with the uninterrupted run's weights, bit for bit (dropout and teacher
    forcing draw random numbers; both runs re-seed them at each mid-epoch checkpoint). Steps are
    logged every 4, so the record of step 20 spans the checkpoint; a seed of 8 digits checks that
    the re-seeding takes any train.seed."""
    from seq2seq.models.build import build_model
    from seq2seq.training.trainer import Trainer

    src_vocab, tgt_vocab, _, encoded = reverse_data
    config = tiny_config("lstm-attention", "train.epochs=3", "train.batch_size=16", "train.teacher_forcing=0.5",
                         "train.learning_rate=0.01", "train.early_stopping_patience=100", "model.encoder.dropout=0.3",
                         "model.decoder.dropout=0.3", "train.save_every_steps=3", "train.seed=20240101").train

    def fit(run_dir: Path, *, resume: bool = False, crash_at: int | None = None) -> Trainer:
        def crash(step: int, *_: object) -> None:
            if step == crash_at:
                raise KeyboardInterrupt
        torch.manual_seed(config.seed)
        model = build_model(tiny_config("lstm-attention").model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
        run_dir.mkdir(exist_ok=True)
        trainer = Trainer(model=model, config=config, pad_index=0, device=torch.device("cpu"), run_dir=run_dir, on_batch=crash,
                          step_log_every=4)
        if resume:
            trainer.resume()
        trainer.fit(encoded[:200], encoded[200:])
        return trainer

    straight = fit(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "split", crash_at=20)
    torch.manual_seed(12345)  # whatever happened in between
    resumed = fit(tmp_path / "split", resume=True)
    assert resumed.step == straight.step == 39
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name

    def records(run_dir: Path) -> list[dict]:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if "per_s" not in k and k != "seconds"} for line in lines]

    # the step records up to the checkpoint are kept once, those after it written again: the same log
    assert records(tmp_path / "split") == records(tmp_path / "straight")


def test_a_crash_after_max_steps_loses_nothing_and_a_lowered_max_steps_still_closes_the_epoch(reverse_data, tmp_path):
    """save_every_steps 5 and max_steps 20 (13 updates per epoch): step 20 ends epoch 2, so no mid-epoch
    checkpoint is written there; a crash before that epoch is validated resumes from step 15 and ends
    as the uninterrupted run. A mid-epoch checkpoint resumed with max_steps below its step trains
    nothing more, but still validates and records its part-epoch."""
    from seq2seq.models.build import build_model
    from seq2seq.training.trainer import Trainer

    src_vocab, tgt_vocab, _, encoded = reverse_data

    def fit(run_dir: Path, *, max_steps: int, resume: bool = False, crash_at: int | None = None):
        def crash(step: int, *_: object) -> None:
            if step == crash_at:
                raise KeyboardInterrupt
        config = tiny_config("lstm-attention", "train.epochs=4", "train.batch_size=16", "train.learning_rate=0.01",
                             "train.early_stopping_patience=100", "train.save_every_steps=5",
                             f"train.max_steps={max_steps}").train
        torch.manual_seed(config.seed)
        model = build_model(tiny_config("lstm-attention").model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
        run_dir.mkdir(exist_ok=True)
        trainer = Trainer(model=model, config=config, pad_index=0, device=torch.device("cpu"), run_dir=run_dir, on_batch=crash)
        if resume:
            trainer.resume()
        return trainer, trainer.fit(encoded[:200], encoded[200:])

    def epochs(run_dir: Path) -> list[tuple[int, int]]:
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [(r["epoch"], r["step"]) for r in records if r["kind"] == "epoch"]

    straight, result = fit(tmp_path / "straight", max_steps=20)
    assert result.out_of_steps and not result.out_of_time and (straight.step, straight.epoch) == (20, 2)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "split", max_steps=20, crash_at=20)
    resumed, result = fit(tmp_path / "split", max_steps=20, resume=True)
    assert result.out_of_steps and epochs(tmp_path / "split") == epochs(tmp_path / "straight") == [(1, 13), (2, 20)]
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name

    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "lowered", max_steps=20, crash_at=17)  # the last checkpoint: step 15, in epoch 2
    lowered, result = fit(tmp_path / "lowered", max_steps=14, resume=True)
    assert result.out_of_steps and (lowered.step, lowered.epoch) == (15, 2)
    assert epochs(tmp_path / "lowered") == [(1, 13), (2, 15)]


def test_fit_says_why_it_stopped(reverse_data, tmp_path):
    """Each budget that can end a run names itself in the result (what ``seq2seq train`` prints)."""
    from seq2seq.models.build import build_model
    from seq2seq.training.trainer import Trainer

    src_vocab, tgt_vocab, _, encoded = reverse_data

    def fit(*extra: str, bad_epochs: int = 0):
        config = tiny_config("gru", "train.batch_size=16", "train.early_stopping_patience=2", *extra)
        model = build_model(config.model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
        trainer = Trainer(model=model, config=config.train, pad_index=0, device=torch.device("cpu"))
        trainer.bad_epochs = bad_epochs  # as a resumed run that had stopped early
        return trainer.fit(encoded[:200], encoded[200:])

    result = fit("train.epochs=1")
    assert (result.stopped_by, result.stop_message, len(result.history)) == ("epochs", "train.epochs (1) done", 1)
    result = fit("train.epochs=3", "train.max_steps=5")
    assert (result.stopped_by, result.stop_message) == ("max_steps", "train.max_steps (5) reached")
    assert result.out_of_steps and [r.step for r in result.history] == [5]
    result = fit("train.epochs=3", "train.time_budget_s=1e-6")
    assert result.out_of_time and result.stop_message.startswith("train.time_budget_s (")
    assert len(result.history) == 1 and result.history[0].fraction == pytest.approx(1 / 13)
    result = fit("train.epochs=3", bad_epochs=2)
    assert result.stopped_early and not result.history and "no improvement for 2 epochs" in result.stop_message


def test_the_log_ends_with_why_training_stopped_and_a_finished_run_can_be_kept_as_it_is(tmp_path):
    """fit's end record makes a finished run recognisable: ``keep_finished`` (compare --resume) then
    returns a run that its time budget ended from its log (a time budget counts per invocation),
    while a plain resume gives it another budget."""
    from seq2seq.pipeline import train
    from seq2seq.training.metrics_log import MetricsLog

    threads = torch.get_num_threads()
    config = tiny_config("gru", "data.builtin_train_size=120", "train.batch_size=16", "train.epochs=3",
                         "train.time_budget_s=1e-6", "train.threads=1")
    try:
        first = train(config, tmp_path / "run")
        log = MetricsLog(tmp_path / "run" / "metrics.jsonl")
        records = [record for _, record in log.records()]
        assert records[-1] == {"kind": "end", "epoch": 1, "step": 1, "stopped_by": "time_budget",
                               "message": first.result.stop_message}
        ended = log.ended()
        assert (ended.stopped_by, ended.stop_message, ended.history) == ("time_budget", first.result.stop_message, first.result.history)
        text = log.path.read_text()
        kept = train(config, tmp_path / "run", resume=True, keep_finished=True)
        assert log.path.read_text() == text and kept.result.history == first.result.history  # not trained further
        for a, b in zip(first.model.state_dict().values(), kept.model.state_dict().values()):
            assert torch.equal(a, b)
        trained_on = train(config, tmp_path / "run", resume=True)  # another time budget: one more (part) epoch
        assert [stats.epoch for stats in trained_on.result.history] == [2]
        assert [stats.epoch for stats in log.history()] == [1, 2] and log.ended().stopped_by == "time_budget"
        assert [record["kind"] for _, record in log.records()].count("end") == 1  # the first end was dropped on resume
        log.append({"kind": "step", "step": 3, "epoch": 3, "train_loss": 1.0})  # as a run killed in epoch 3
        assert log.ended() is None
    finally:
        torch.set_num_threads(threads)


def test_early_stopping_ends_the_run_after_patience_epochs_without_improvement(reverse_data, tmp_path, monkeypatch):
    """A validation loss that never improves after epoch 1 stops the run after 1 + patience epochs."""
    from seq2seq.models.build import build_model
    from seq2seq.training.trainer import Trainer

    src_vocab, tgt_vocab, _, encoded = reverse_data
    config = tiny_config("gru", "train.batch_size=16", "train.epochs=10", "train.early_stopping_patience=2")
    model = build_model(config.model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
    trainer = Trainer(model=model, config=config.train, pad_index=0, device=torch.device("cpu"))
    monkeypatch.setattr(trainer, "evaluate_loss", lambda pairs: 1.0)  # epoch 1 improves on inf, then never again
    result = trainer.fit(encoded[:200], encoded[200:])
    assert (result.stopped_by, len(result.history), trainer.epoch) == ("early_stopping", 3, 3)
    assert result.stop_message == "early stopping: no improvement for 2 epochs (train.early_stopping_patience 2)"


def test_resume_after_a_crash_drops_metrics_written_after_the_checkpoint(reverse_data, tmp_path):
    _train_reverse(reverse_data, tmp_path, epochs=1)
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"kind": "step", "step": 999, "epoch": 2, "train_loss": 1.0}\n{"kind": "st')
    _train_reverse(reverse_data, tmp_path, epochs=2, resume=True)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert all(r["step"] != 999 for r in records)
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]


def test_resume_from_weights_only_file_is_refused(reverse_data, tmp_path):
    _train_reverse(reverse_data, tmp_path, epochs=1)
    run = tmp_path / "run"
    (run / "last.safetensors").write_bytes((run / "best.safetensors").read_bytes())
    with pytest.raises(ValueError, match="weights only"):
        _train_reverse(reverse_data, tmp_path, epochs=2, resume=True)


def test_run_dir_files_are_safetensors_and_json(reverse_data, tmp_path):
    _train_reverse(reverse_data, tmp_path, epochs=1)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"best.safetensors", "last.safetensors", "metrics.jsonl"} <= files
    assert not any(name.endswith((".pt", ".pth", ".pkl", ".tmp")) for name in files)


def test_weights_round_trip_and_shape_mismatch_is_named(tmp_path):
    config = tiny_config("lstm")
    model = build_model(config.model, src_vocab_size=20, tgt_vocab_size=20)
    save_weights(model, tmp_path / "w.safetensors")
    other = build_model(config.model, src_vocab_size=20, tgt_vocab_size=20)
    load_weights(other, tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    bigger = build_model(config.model, src_vocab_size=25, tgt_vocab_size=20)
    with pytest.raises(ValueError, match="encoder.embedding.weight"):
        load_weights(bigger, tmp_path / "w.safetensors")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")

    def failing(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    from seq2seq.run_files import atomic_write

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_greedy_alone_equals_greedy_in_a_batch(reverse_data):
    src_vocab, tgt_vocab, pairs, encoded = reverse_data
    config = tiny_config("lstm-attention")
    model = build_model(config.model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab)).eval()
    batch = next(bucketed_batches(encoded[:16], batch_size=16, pad_index=0, shuffle=False))
    together = greedy_decode(model, batch.src, batch.src_lengths, batch.src_mask, sos_index=2, eos_index=3, max_len=10)
    for row in (0, 7, 15):
        n = int(batch.src_lengths[row])
        alone = greedy_decode(model, batch.src[row : row + 1, :n], batch.src_lengths[row : row + 1],
                              batch.src_mask[row : row + 1, :n], sos_index=2, eos_index=3, max_len=10)[0]
        assert alone.tokens == together[row].tokens
        assert alone.score == pytest.approx(together[row].score, abs=1e-5)
        assert torch.allclose(alone.attention, together[row].attention, atol=1e-6)


def test_greedy_scores_are_the_model_log_probabilities(reverse_data):
    src_vocab, tgt_vocab, pairs, encoded = reverse_data
    model = build_model(tiny_config("gru").model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab)).eval()
    batch = next(bucketed_batches(encoded[:4], batch_size=4, pad_index=0, shuffle=False))
    hypotheses = greedy_decode(model, batch.src, batch.src_lengths, batch.src_mask, sos_index=2, eos_index=3, max_len=6)
    for row, hyp in enumerate(hypotheses):
        ids = [2, *hyp.tokens] + ([3] if hyp.finished else [])
        tgt_in = torch.tensor([ids[:-1]])
        logits, _ = model(batch.src[row : row + 1], batch.src_lengths[row : row + 1], batch.src_mask[row : row + 1], tgt_in)
        log_probs = torch.log_softmax(logits[0], -1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
        # Without <eos> at max_len the last predicted token is still scored.
        assert hyp.score == pytest.approx(float(log_probs.sum().detach()), abs=1e-4)


def test_atomic_write_gives_normal_file_permissions(tmp_path):
    import os
    import stat

    atomic_write_text(tmp_path / "f.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~umask


def test_gradient_norms_before_clipping_are_recorded(tmp_path):
    """Each epoch record carries the pre-clipping gradient norm; the clipped share follows clip_norm."""
    import json

    from helpers import train_tiny_run

    shares = {}
    for clip in ("1e-6", "1e6"):
        run_dir = train_tiny_run(tmp_path / clip, f"train.clip_norm={clip}")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        (epoch,) = [m for m in records if m["kind"] == "epoch"]
        assert 0 < epoch["grad_norm_mean"] <= epoch["grad_norm_max"]
        shares[clip] = epoch["clipped_fraction"]
    assert shares == {"1e-6": 1.0, "1e6": 0.0}


BF16_CPU = torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_bf16_autocast_trains_with_float32_weights_and_learns(reverse_data, tmp_path, monkeypatch):
    # A GRU model: its cells run in bfloat16 without oneDNN, so the autocast path is exercised on
    # any CPU (the refusal that protects oneDNN's LSTM is bypassed where it would apply).
    if not BF16_CPU:
        monkeypatch.setattr("seq2seq.training.trainer.check_precision", lambda precision, device: None)
    fp32_model, fp32_trainer = _train_reverse(reverse_data, tmp_path, epochs=3, run_name="fp32", preset="gru-attention")
    bf16_model, bf16_trainer = _train_reverse(reverse_data, tmp_path, epochs=3, run_name="bf16", preset="gru-attention",
                                              extra=("train.precision=bf16",))
    assert all(p.dtype == torch.float32 for p in bf16_model.parameters())
    records = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["valid_loss"] for r in records if r["kind"] == "epoch"]
    assert losses[-1] < losses[0] and all(map(torch.isfinite, torch.tensor(losses)))
    fp32_losses = [json.loads(line)["valid_loss"] for line in (tmp_path / "fp32" / "metrics.jsonl").read_text().splitlines()
                   if json.loads(line)["kind"] == "epoch"]
    assert losses[-1] == pytest.approx(fp32_losses[-1], rel=0.1)  # bfloat16 changes the numbers, not the learning
    weight = "decoder.output.weight"
    assert not torch.equal(fp32_model.state_dict()[weight], bf16_model.state_dict()[weight])


@pytest.mark.skipif(BF16_CPU, reason="this CPU runs bf16; the refusal is for CPUs without bfloat16 kernels")
def test_bf16_on_a_cpu_without_bfloat16_is_a_clear_error_before_anything_is_written(tmp_path):
    from seq2seq.cli import main

    out = tmp_path / "run"
    assert main(["train", "--quick", "--set", "train.precision=bf16", "--out", str(out)]) == 2
    assert not out.exists() or not any(out.iterdir())


def test_a_nonfinite_loss_error_survives_pickling_with_its_indices():
    """compare --jobs sends a worker's error to the main process by pickle."""
    import pickle

    from seq2seq.training.update import NonFiniteLossError

    error = pickle.loads(pickle.dumps(NonFiniteLossError("non-finite training loss", indices=[4, 7])))
    assert (type(error), str(error), error.indices) == (NonFiniteLossError, "non-finite training loss", [4, 7])
