"""A multi-head model's per-head attention (a recurrent decoder's multi-head attention, or a
Transformer's last cross-attention) reaches every consumer: the Python API (one [k, T, S]
tensor per output whose mean is the attention), `seq2seq generate --plot-attention` (one panel per
head and the mean), and the server's JSON (`attention.heads`)."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import tiny_config, train_keeping_threads, train_tiny_run

from seq2seq.cli import main
from seq2seq.serving.server import Limits, create_app
from seq2seq.translator import Translator

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module", params=["multihead", "multihead-coverage", "transformer"])
def run_dir(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("heads") / request.param
    if request.param.startswith("multihead"):  # with coverage, each head's score reads it too
        coverage = str(request.param.endswith("coverage")).lower()
        return train_tiny_run(folder, "model.decoder.attention=multihead", "model.decoder.attention_heads=4",
                              "decode.max_len=12", f"model.decoder.coverage={coverage}")
    config = tiny_config("transformer", "model.transformer.d_model=32", "model.transformer.heads=4",
                         "model.transformer.ffn_size=64", "model.transformer.encoder_layers=1",
                         "model.transformer.decoder_layers=2", "data.builtin_train_size=120", "train.epochs=1",
                         "train.batch_size=16", "train.device=cpu", "train.threads=1", "decode.max_len=12")
    return train_keeping_threads(config, folder)


def test_generations_carry_each_heads_weights_whose_mean_is_the_attention(run_dir) -> None:
    translator = Translator.from_run_dir(run_dir)
    for beam in (1, 3):
        for generation in translator.generate_nbest(["sort list `l` in reverse", "x"], beam_size=beam, nbest=beam,
                                                    heads=True)[0]:
            assert generation.heads is not None and generation.heads.shape[0] == 4
            assert generation.heads.shape[1:] == generation.attention.shape
            torch.testing.assert_close(generation.heads.mean(0), generation.attention, atol=1e-5, rtol=0)
            torch.testing.assert_close(generation.heads.sum(-1), torch.ones(generation.heads.shape[:2]))


def test_an_onnx_export_gives_the_same_heads(run_dir) -> None:
    """Decoded by ONNX Runtime, the outputs' heads are recomputed by the torch model the export came
    from (the same weights): they equal the torch runtime's, and their mean is the export's attention."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')")
    from seq2seq.export import export_run

    export_run(run_dir)
    texts = ["sort list `l` in reverse", "add 3 to total"]
    expected = Translator.from_run_dir(run_dir).generate_nbest(texts, beam_size=3, nbest=2, heads=True)
    got = Translator.from_run_dir(run_dir, runtime="onnx").generate_nbest(texts, beam_size=3, nbest=2, heads=True)
    for mine, reference in zip((g for n in got for g in n), (e for n in expected for e in n), strict=True):
        assert mine.tokens == reference.tokens and mine.heads is not None
        torch.testing.assert_close(mine.heads, reference.heads, atol=1e-5, rtol=0)
        torch.testing.assert_close(mine.heads.mean(0), mine.attention, atol=1e-4, rtol=0)


def test_heads_are_computed_only_on_request(run_dir) -> None:
    from seq2seq import load

    assert Translator.from_run_dir(run_dir).generate(["x"])[0].heads is None
    [result] = load(run_dir).generate(["x"], heads=True)
    assert result.generations[0].heads.shape[0] == 4


def test_plot_attention_draws_the_heads(run_dir, tmp_path) -> None:
    path = tmp_path / "heads.png"
    assert main(["generate", str(run_dir), "add 3 to total", "--plot-attention", str(path)]) == 0
    assert path.stat().st_size > 1000


def test_server_answers_the_heads_beside_the_mean(run_dir) -> None:
    with TestClient(create_app([run_dir], Limits(), device="cpu")) as client:
        body = client.post("/v1/generate", json={"inputs": ["add 3 to total"]}).json()
    attention = body["results"][0]["generations"][0]["attention"]
    assert len(attention["heads"]) == 4
    assert all(len(head) == len(attention["weights"]) for head in attention["heads"])
    with TestClient(create_app([run_dir], Limits(), device="cpu")) as client:
        client_body = client.post("/v1/generate", json={"inputs": ["add 3 to total"], "attention": False}).json()
    without = client_body["results"][0]["generations"][0]["attention"]
    assert without is None


def test_a_single_head_model_has_no_heads(tmp_path) -> None:
    run = train_tiny_run(tmp_path / "bahdanau", "decode.max_len=8")
    assert Translator.from_run_dir(run).generate(["x"], heads=True)[0].heads is None
