"""CTranslate2 export of the Transformer (seq2seq.models.ctranslate2_export) and ``--runtime
ctranslate2``: CTranslate2's greedy outputs and their scores equal PyTorch's (post-/pre-norm,
sinusoidal/learned positions, tied/untied output), on random models and a trained run through the
command line; an RNN run, a missing or a stale export are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install -e '.[ctranslate2]')")

from helpers import train_keeping_threads, train_tiny_run  # noqa: E402
from test_transformer import TINY, VARIANTS, make_model  # noqa: E402

from seq2seq.cli import main  # noqa: E402
from seq2seq.config import build_config  # noqa: E402
from seq2seq.ctranslate2_runtime import CTranslate2Model  # noqa: E402
from seq2seq.decoding.search import decode_sources  # noqa: E402
from seq2seq.models.ctranslate2_export import transformer_spec  # noqa: E402
from seq2seq.translator import Translator  # noqa: E402

SRC_ITOS = ["<pad>", "<unk>", "<sos>", "<eos>", *(f"s{i}" for i in range(4, 19))]  # make_model's 19 / 23 tokens
TGT_ITOS = ["<pad>", "<unk>", "<sos>", "<eos>", *(f"t{i}" for i in range(4, 23))]
# trains in about 5 s on one thread to outputs that differ per input (not yet correct ones)
TRAINED = [*TINY, "model.transformer.d_model=32", "model.transformer.ffn_size=64", "model.transformer.dropout=0.0",
           "data.builtin_train_size=600", "train.epochs=8", "train.batch_size=32", "train.device=cpu", "train.threads=1",
           "train.learning_rate=0.003", "train.lr_schedule=inverse_sqrt", "train.warmup_steps=30"]
SOURCES = ["add 3 to total", "print hello", "sort the list `items` in reverse order and print the first one", "x"]


@pytest.mark.parametrize("variant", [*VARIANTS, "learned-post"])
def test_greedy_outputs_and_scores_equal_torch(variant, tmp_path):
    torch.set_num_threads(1)
    extra = VARIANTS.get(variant, ("model.transformer.positions=learned", "model.transformer.max_positions=12",
                                   "data.max_src_len=12", "data.max_tgt_len=11"))
    model = make_model(*extra, seed=3)
    with torch.no_grad():  # a few <eos> wins, so that finished and cut outputs are both compared
        model.decoder.output.bias[3] += 2.0
    spec = transformer_spec(model, src_tokens=SRC_ITOS, tgt_tokens=TGT_ITOS, positions=64)
    spec.save(str(tmp_path))
    (tmp_path / "ctranslate2.json").write_text('{"positions": 64}')
    ct2 = CTranslate2Model(tmp_path, model, src_itos=SRC_ITOS, tgt_itos=TGT_ITOS)
    generator = torch.Generator().manual_seed(5)
    sources = [torch.randint(4, 19, (n,), generator=generator).tolist() for n in (3, 7, 1, 5, 6, 2, 4, 8)]
    for beam in (1, 3):  # a batch of sources of different lengths: beam search's first row was wrong once
        with torch.no_grad():
            expected = decode_sources(model, sources, sos_index=2, eos_index=3, pad_index=0, max_len=9, batch_size=8,
                                      workers=1, beam_size=beam, nbest=beam)
        got = ct2.search(sources, max_len=9, beam_size=beam, nbest=beam)
        for mine, reference in zip((h for n in got for h in n), (h for n in expected for h in n), strict=True):
            assert mine.tokens == reference.tokens
            assert mine.finished == reference.finished
            assert mine.score == pytest.approx(reference.score, abs=1e-4)
            # the last layer's cross-attention, heads averaged, a row per step (<eos>'s too): what plots read
            assert mine.attention.shape == reference.attention.shape
            torch.testing.assert_close(mine.attention, reference.attention, atol=1e-4, rtol=0)
        if beam == 1:
            assert {h[0].finished for h in expected} == {True, False}  # both kinds were compared


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ct2") / "run"
    config = build_config(preset="transformer", overrides=[
        *TRAINED, "model.transformer.norm=pre", "decode.max_len=20"])
    return train_keeping_threads(config, run_dir)


def _output(args: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def test_trained_run_generates_the_same_through_ctranslate2(trained_run, capsys, tmp_path):
    error = _error(["generate", str(trained_run), "--runtime", "ctranslate2", "print hello"], capsys)
    assert "ctranslate2.json: not found; export the run first" in error
    assert main(["export", str(trained_run), "--format", "ctranslate2"]) == 0
    assert (trained_run / "ctranslate2" / "model.bin").is_file()
    translator = Translator.from_run_dir(trained_run, runtime="ctranslate2")
    assert translator.run.model.max_positions == 1024  # sinusoids: the rows written (decoding is clamped to them)
    for text in SOURCES:
        torch_out = _output(["generate", str(trained_run), "--scores", text], capsys)
        ct2_out = _output(["generate", str(trained_run), "--runtime", "ctranslate2", "--scores",
                           text], capsys)
        (torch_text, torch_score, torch_parses), (ct2_text, ct2_score, ct2_parses) = (
            out.rstrip("\n").split("\t") for out in (torch_out, ct2_out))  # text, log-probability, parses or not
        assert (ct2_text, ct2_parses) == (torch_text, torch_parses)
        assert float(ct2_score) == pytest.approx(float(torch_score), abs=1e-3)
    # beam search too: CTranslate2's own, ranked by the summed log-probabilities as ours
    for beam in (3, 5):
        expected = Translator.from_run_dir(trained_run).generate_nbest(SOURCES, beam_size=beam, nbest=2)
        got = Translator.from_run_dir(trained_run, runtime="ctranslate2").generate_nbest(
            SOURCES, beam_size=beam, nbest=2)
        assert [[g.tokens for g in n] for n in got] == [[e.tokens for e in n] for n in expected]
        assert len({n[0].text for n in expected}) > 2  # the outputs differ per input: a real comparison
    # the heatmap of CTranslate2's attention (the last layer's, heads averaged)
    _output(["generate", str(trained_run), "--runtime", "ctranslate2", "--plot-attention", str(tmp_path / "a.png"),
             "print hello"], capsys)
    assert (tmp_path / "a.png").stat().st_size > 1000
    [generation] = Translator.from_run_dir(trained_run, runtime="ctranslate2").generate(["print hello"], heads=True)
    torch.testing.assert_close(generation.heads.mean(0), generation.attention, atol=1e-4, rtol=0)  # recomputed by torch
    assert "greedy and beam search only" in _error(
        ["generate", str(trained_run), "--runtime", "ctranslate2", "--sample", "print hello"], capsys)


def _error(args: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_stale_export_and_an_rnn_run_are_refused(trained_run, tmp_path, capsys):
    from seq2seq.export import export_run

    export_run(trained_run, fmt="ctranslate2")
    assert "export holds other weights" in _error(
        ["generate", str(trained_run), "--runtime", "ctranslate2", "--checkpoint", "last", "print hello"], capsys)
    recurrent = train_tiny_run(tmp_path / "rnn")
    error = _error(["export", str(recurrent), "--format", "ctranslate2"], capsys)
    assert "CTranslate2 export supports transformer runs only, this run is recurrent (export it with --format onnx" in error
    assert not (recurrent / "ctranslate2").exists()


def test_evaluate_through_ctranslate2_float32_and_int8(trained_run, capsys):
    import json

    from seq2seq.export import export_run

    export_run(trained_run, fmt="ctranslate2")
    for args in ([], ["--runtime", "ctranslate2"], ["--runtime", "ctranslate2", "--quantize", "int8"]):
        assert main(["evaluate", str(trained_run), "--split", "valid", *args]) == 0
    torch_report = json.loads((trained_run / "eval_valid.json").read_text())
    ct2 = json.loads((trained_run / "eval_valid_ctranslate2.json").read_text())
    int8 = json.loads((trained_run / "eval_valid_int8_ctranslate2.json").read_text())
    assert ct2["runtime"] == int8["runtime"] == "ctranslate2" and int8["quantize"] == "int8"
    # float32: CTranslate2's greedy search finds torch's outputs; the loss is the torch model's own
    assert ct2["exact_match"] == torch_report["exact_match"] and ct2["bleu"] == pytest.approx(torch_report["bleu"])
    assert ct2["loss"] == pytest.approx(torch_report["loss"])
    assert abs(int8["bleu"] - torch_report["bleu"]) < 10  # int8 rounds the products: close, not equal
    assert "no --constrain" in _error(["evaluate", str(trained_run), "--runtime", "ctranslate2", "--constrain", "python"],
                                      capsys)
    assert "no quantize" in _error(["evaluate", str(trained_run), "--runtime", "onnx", "--quantize", "int8"], capsys)
    # CTranslate2 normalizes lengths its own way, so a length penalty asked for is refused there, before decoding
    for command in (["evaluate", str(trained_run)], ["generate", str(trained_run), "print hello"]):
        error = _error([*command, "--runtime", "ctranslate2", "--beam", "2", "--length-penalty", "average"], capsys)
        assert "without a length penalty" in error and "--length-penalty none" in error


def test_a_runs_length_penalty_gives_way_to_none_through_ctranslate2(trained_run, tmp_path, capsys, caplog):
    """A run whose config ranks beams by length (the Multi30k Transformer recipe's decode.length_penalty:
    average) still decodes through CTranslate2, whose search has no such penalty: a beam search that names
    no penalty runs without one and says so once; one that names a penalty is refused, as above."""
    import json
    import logging
    import shutil

    from fastapi.testclient import TestClient

    from seq2seq import api
    from seq2seq.export import export_run
    from seq2seq.serving.server import create_app

    run = tmp_path / "penalised"
    shutil.copytree(trained_run, run)
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("length_penalty: none", "length_penalty: average"))
    export_run(run, fmt="ctranslate2")
    expected = [r.generations[0].text for r in api.load(run).generate(SOURCES, beam=3, length_penalty="none")]

    caplog.set_level(logging.WARNING, logger="seq2seq")
    assert main(["evaluate", str(run), "--split", "valid", "--beam", "3", "--runtime", "ctranslate2"]) == 0
    report = json.loads((run / "eval_valid_beam3_ctranslate2.json").read_text())  # no _average1: none was applied
    assert (report["runtime"], report["length_penalty"]) == ("ctranslate2", "none")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("decode.length_penalty (average, alpha" in m and "is not applied" in m for m in warnings), warnings
    assert main(["evaluate", str(run), "--split", "valid", "--beam", "3"]) == 0  # torch keeps the run's penalty
    assert json.loads((run / "eval_valid_beam3_average0.6.json").read_text())["length_penalty"] == "average"

    model = api.load(run, runtime="ctranslate2")
    assert [r.generations[0].text for r in model.generate(SOURCES, beam=3)] == expected
    with pytest.raises(ValueError, match="--length-penalty none or left out"):
        model.generate(SOURCES, beam=3, length_penalty="average")
    with TestClient(create_app([run], device="cpu", runtime="ctranslate2")) as client:
        found = client.post("/v1/generate", json={"inputs": SOURCES, "beam": 3})
        assert found.status_code == 200, found.text
        assert [r["generations"][0]["text"] for r in found.json()["results"]] == expected
        refused = client.post("/v1/generate", json={"inputs": SOURCES, "beam": 3, "length_penalty": "gnmt"})
        assert refused.status_code == 422 and "without a length penalty" in refused.text
    assert _output(["generate", str(run), "--runtime", "ctranslate2", "--beam", "3", SOURCES[1]], capsys).strip() == expected[1]


def test_the_api_and_the_server_decode_through_ctranslate2(trained_run):
    from fastapi.testclient import TestClient

    from seq2seq import api
    from seq2seq.export import export_run
    from seq2seq.serving.server import create_app

    export_run(trained_run, fmt="ctranslate2")
    model = api.load(trained_run, runtime="ctranslate2")
    assert model.info.runtime == "ctranslate2"
    expected = [r.generations[0].text for r in api.load(trained_run).generate(SOURCES, beam=3)]
    assert [r.generations[0].text for r in model.generate(SOURCES, beam=3)] == expected
    with TestClient(create_app([trained_run], device="cpu", runtime="ctranslate2", quantize="int8")) as client:
        found = client.post("/v1/generate", json={"inputs": SOURCES[:2]})
        assert found.status_code == 200, found.text
        assert len(found.json()["results"]) == 2
        attention = found.json()["results"][0]["generations"][0]["attention"]  # CTranslate2's, for the web page's heatmap
        assert len(attention["weights"]) == len(attention["output_tokens"])
        assert all(abs(sum(row) - 1) < 1e-3 for row in attention["weights"])
        refused = client.post("/v1/generate", json={"inputs": ["print hello"], "sample": True})
        assert refused.status_code == 422 and "greedy and beam search only" in refused.text


def test_a_copy_transformer_is_refused_in_one_line(tmp_path, capsys):
    config = build_config(preset="transformer-copy", overrides=[*TRAINED, "train.epochs=1"])
    run_dir = train_keeping_threads(config, tmp_path / "copy")
    assert "CTranslate2 has no copy mechanism" in _error(["export", str(run_dir), "--format", "ctranslate2"], capsys)
    assert not (run_dir / "ctranslate2").exists()  # (the ONNX export takes it: tests/test_onnx_transformer.py)
