"""Ensembles: the mean of the members' distributions, through greedy, beam search and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from seq2seq.checkpoint import RunDirError, load_ensemble, load_run
from seq2seq.cli import main
from seq2seq.decoding.search import decode_sources
from seq2seq.models.build import build_model
from seq2seq.models.ensemble import Ensemble, mean_log_probs
from seq2seq.training.validation import mean_reference_loss
from helpers import tiny_config, train_tiny_run

SPECIAL = {"sos_index": 2, "eos_index": 3, "pad_index": 0}


def _model(seed: int, preset: str = "lstm-attention", *extra: str):
    torch.manual_seed(seed)
    return build_model(tiny_config(preset, *extra).model, src_vocab_size=12, tgt_vocab_size=10).eval()


def test_mean_log_probs_is_the_log_of_the_mean_probability():
    a = torch.tensor([[2.0, 0.0, -1.0]])
    b = torch.tensor([[-3.0, 1.0, 0.5]])
    expected = torch.log((torch.softmax(a, -1) + torch.softmax(b, -1)) / 2)
    assert torch.allclose(mean_log_probs([a, b]), expected, atol=1e-6)
    # log-probabilities (a copy model's output) give the same as the logits they came from
    assert torch.allclose(mean_log_probs([torch.log_softmax(a, -1), b]), expected, atol=1e-6)
    # a token one member rules out keeps the other's probability
    ruled_out = torch.tensor([[0.0, -math.inf, 0.0]])
    assert torch.isfinite(mean_log_probs([ruled_out, b])).all()
    with pytest.raises(ValueError, match="vocabularies differ"):
        mean_log_probs([a, torch.zeros(1, 4)])


def _decode(model, sources, **options):
    return decode_sources(model, sources, max_len=8, **SPECIAL, **options)


SOURCES = [[4, 5, 6], [7, 8], [9, 10, 11, 4, 5]]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_an_ensemble_of_one_model_decodes_exactly_as_the_model(beam_size):
    model = _model(1)
    alone = _decode(model, SOURCES, beam_size=beam_size, nbest=beam_size)
    ensemble = _decode(Ensemble([model]), SOURCES, beam_size=beam_size, nbest=beam_size)
    for single, joint in zip(alone, ensemble):
        assert [h.tokens for h in single] == [h.tokens for h in joint]
        for h, g in zip(single, joint):
            assert h.token_log_probs == pytest.approx(g.token_log_probs, abs=1e-5)


def test_two_copies_of_a_model_are_that_model_and_two_models_differ_from_both():
    model, other = _model(1), _model(2, "gru-attention")
    twice = _decode(Ensemble([model, model]), SOURCES, beam_size=3)
    assert [h[0].tokens for h in twice] == [h[0].tokens for h in _decode(model, SOURCES, beam_size=3)]
    # the first step's log-probabilities are the log of the members' mean probability
    src = torch.tensor([SOURCES[0]])
    lengths, mask = torch.tensor([3]), torch.ones(1, 3, dtype=torch.bool)
    prev = torch.tensor([SPECIAL["sos_index"]])
    joint = Ensemble([model, other])
    memory, state = joint.encode(src, lengths, mask)
    scores, new_state, attention = joint.decoder.step(prev, state, memory)
    expected = []
    for member in (model, other):
        member_memory, member_state = member.encode(src, lengths, mask)
        logits, _, _ = member.decoder.step(prev, member_state, member_memory)
        expected.append(torch.softmax(logits, -1))
    assert torch.allclose(scores, torch.log((expected[0] + expected[1]) / 2), atol=1e-6)
    assert attention.shape == (1, 3) and torch.allclose(attention.sum(-1), torch.ones(1))
    assert len(new_state.parts) == 2
    # beam search reorders every member's state: tiled and selected rows keep their shapes
    tiled = new_state.select(torch.tensor([0, 0, 0]))
    assert all(part.hidden.size(1) == 3 for part in tiled.parts)


def test_an_ensemble_mixes_architectures_and_refuses_copy_with_no_copy():
    with_attention, without = _model(1), _model(2, "lstm")
    hypotheses = _decode(Ensemble([with_attention, without]), SOURCES, beam_size=2)
    assert all(h[0].attention is None for h in hypotheses)  # one member has no attention to show
    copy_model = _model(3, "lstm-attention", "model.decoder.copy=true")
    with pytest.raises(ValueError, match="copy"):
        Ensemble([with_attention, copy_model])


def test_the_ensembles_reference_loss_is_at_most_the_mean_of_the_members(reverse_data):
    # log of a mean >= mean of the logs (Jensen): the ensemble's cross-entropy is at most the members' mean.
    src_vocab, tgt_vocab, _, encoded = reverse_data
    members = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        members.append(build_model(tiny_config().model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab)).eval())
    losses = [mean_reference_loss(m, encoded[:40], pad_index=0, batch_size=16, device=torch.device("cpu")) for m in members]
    joint = mean_reference_loss(Ensemble(members), encoded[:40], pad_index=0, batch_size=16, device=torch.device("cpu"))
    assert joint <= sum(losses) / 2 + 1e-6
    with pytest.raises(ValueError, match="teacher forcing"):
        Ensemble(members)(torch.tensor([[4]]), torch.tensor([1]), torch.ones(1, 1, dtype=torch.bool),
                          torch.tensor([[2]]), teacher_forcing=0.5)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ensemble")
    first = train_tiny_run(folder / "a", "train.seed=1")
    second = train_tiny_run(folder / "b", "train.seed=2", "model.decoder.hidden_size=24")
    return first, second


def test_cli_evaluate_and_generate_with_an_ensemble(two_runs, capsys):
    first, second = two_runs
    assert main(["evaluate", str(first), "--ensemble", str(second), "--beam", "2"]) == 0
    assert capsys.readouterr().out.startswith("test:")
    (report,) = first.glob("eval_test_beam2_ensemble2-*.json")
    summary = json.loads(report.read_text())
    assert summary["ensemble"] == [str(first), str(second)]
    assert main(["evaluate", str(second), "--ensemble", str(first), "--beam", "2"]) == 0  # its own report
    assert len(list(first.glob("eval_test_beam2_ensemble2-*.json"))) == 1
    assert main(["generate", str(first), "--ensemble", str(second), "add 3 to total", "--scores"]) == 0
    assert capsys.readouterr().out.count("\t") == 2
    run = load_ensemble([first, second])
    assert isinstance(run.model, Ensemble) and len(run.model.members) == 2


def test_an_ensemble_refuses_runs_with_other_vocabularies(two_runs, tmp_path, capsys):
    first, _ = two_runs
    other = train_tiny_run(tmp_path / "other", "data.builtin_train_size=60")  # other data: other vocabularies
    with pytest.raises(RunDirError, match="vocabulary"):
        load_ensemble([first, other])
    assert main(["evaluate", str(first), "--ensemble", str(other)]) == 2
    err = capsys.readouterr().err
    assert "cannot join an ensemble" in err and str(other) in err and "Traceback" not in err
    assert main(["evaluate", str(first), "--ensemble", str(tmp_path / "missing")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_an_ensemble_is_refused_with_the_onnx_runtime(two_runs, capsys):
    first, second = two_runs
    assert main(["evaluate", str(first), "--ensemble", str(second), "--runtime", "onnx"]) == 2
    assert "torch runtime only" in capsys.readouterr().err
    assert load_run(first).model is not None


def test_python_api_loads_an_ensemble(two_runs):
    from seq2seq import load

    first, second = two_runs
    model = load(first, device="cpu", ensemble=[second])
    result = model.generate(["add 3 to total", "print names"], beam=2)
    assert len(result) == 2 and all(isinstance(r.outputs[0], str) for r in result)
    assert model.info.parameters == load_run(first).parameters + load_run(second).parameters
    assert model.info.ensemble == (str(first), str(second))
    assert load(first, device="cpu").info.ensemble == ()


def test_an_ensemble_of_copy_models_decodes_and_a_copy_mismatch_names_the_run(two_runs, tmp_path, capsys):
    first, _ = two_runs
    copy_a = train_tiny_run(tmp_path / "copy-a", "model.decoder.copy=true", "train.seed=1")
    copy_b = train_tiny_run(tmp_path / "copy-b", "model.decoder.copy=true", "train.seed=2")
    alone = load_run(copy_a).model
    run = load_ensemble([copy_a, copy_b])
    assert run.model.copies
    src, src_copy = [[4, 5, 6]], [[4, 5, 6]]
    hypotheses = decode_sources(run.model, src, max_len=6, beam_size=3, copy_sources=src_copy, **SPECIAL)
    assert hypotheses[0][0].tokens is not None
    same = decode_sources(Ensemble([alone, alone]), src, max_len=6, beam_size=3, copy_sources=src_copy, **SPECIAL)
    assert same[0][0].tokens == decode_sources(alone, src, max_len=6, beam_size=3, copy_sources=src_copy, **SPECIAL)[0][0].tokens
    assert main(["evaluate", str(first), "--ensemble", str(copy_a)]) == 2
    err = capsys.readouterr().err
    assert str(copy_a) in err and "copy mechanism" in err
