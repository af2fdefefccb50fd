"""The Python API (``seq2seq.load``) and the HTTP server: generation, limits, errors, several models, the page."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import pytest

from helpers import train_tiny_run
from seq2seq.checkpoint import RunDirError
from seq2seq.serving.cli import add_serve_command
from seq2seq.serving.server import Limits, bind_socket, create_app
from seq2seq.translator import InputError

with warnings.catch_warnings():
    # Starlette asks for the `httpx2` fork; the project's test extras install `httpx`, which works.
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

TEXTS = ["add 3 to total", "sort scores in reverse order"]
LIMITS = Limits(max_inputs=4, max_chars=200, max_body_bytes=20_000, timeout_s=30.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny attention model trained for one epoch on the built-in NL -> Python task (a few seconds)."""
    run_dir = train_tiny_run(tmp_path_factory.mktemp("serve") / "tiny", "decode.max_len=20")
    (run_dir / "eval_valid.json").write_text(json.dumps({"count": 6, "bleu": 1.5, "exact_match": 0.0}))
    return run_dir


@pytest.fixture(scope="module")
def client(run_dir):
    with TestClient(create_app([run_dir], LIMITS, device="cpu")) as client:
        yield client


def post(client: TestClient, **body):
    return client.post("/v1/generate", json=body)


# ----------------------------------------------------------------------------- Python API
def test_load_generates_outputs_scores_and_attention(run_dir):
    from seq2seq import load

    model = load(run_dir, device="auto")
    [result] = model.generate(["sort list `l` in reverse"], beam=4, nbest=3)
    assert len(result.outputs) == len(result.scores) == len(result.attention) == 3
    assert result.scores == sorted(result.scores, reverse=True)
    assert result.text == result.outputs[0]
    for generation, attention in zip(result.generations, result.attention):
        rows = len(generation.tokens) + generation.finished  # the <eos> step has a row too
        assert attention.shape == (rows, len(result.source_tokens))
    assert model.info.parameters == json.loads((run_dir / "run.json").read_text())["parameters"]


def test_load_errors_are_clear(run_dir, tmp_path):
    from seq2seq import load

    with pytest.raises(RunDirError, match="not found"):
        load(tmp_path / "missing")
    with pytest.raises(ValueError, match="bogus"):
        load(run_dir, device="bogus")
    with pytest.raises(InputError, match=r"model.generate\(\[text\]\)"):
        load(run_dir).generate("a bare string")


def test_import_seq2seq_stays_light():
    code = "import sys, seq2seq; assert 'torch' not in sys.modules; seq2seq.load; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----------------------------------------------------------------------------- generation
def test_greedy_returns_outputs_with_attention_and_parse_flag(client, run_dir):
    response = post(client, inputs=TEXTS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny"
    assert [result["source"] for result in body["results"]] == TEXTS
    from seq2seq import load

    expected = load(run_dir, device="cpu").generate(TEXTS)
    for result, direct in zip(body["results"], expected):
        [generation] = result["generations"]
        assert generation["text"] == direct.text  # the server decodes exactly like the Python API
        assert isinstance(generation["parses"], bool)
        attention = generation["attention"]
        assert attention["source_tokens"] == result["source_tokens"]
        assert attention["output_tokens"] == generation["tokens"] + (["<eos>"] if generation["finished"] else [])
        assert len(attention["weights"]) == len(attention["output_tokens"])
        for row in attention["weights"]:
            assert len(row) == len(result["source_tokens"])
            assert sum(row) == pytest.approx(1.0, abs=1e-3)


def test_python_constraint_works_with_greedy_and_beam_search(client):
    for options in ({}, {"beam": 3, "nbest": 2}):
        response = post(client, inputs=TEXTS, constrain="python", **options)
        assert response.status_code == 200, response.text


def test_grammar_constraint_returns_only_code_that_parses(client):
    for options in ({}, {"beam": 3, "nbest": 2}):
        response = post(client, inputs=TEXTS, constrain="grammar", attention=False, **options)
        assert response.status_code == 200, response.text
        for result in response.json()["results"]:
            finished = [g for g in result["generations"] if g["finished"]]
            assert all(g["parses"] for g in finished), finished


def test_beam_search_returns_an_nbest_list_best_first(client):
    response = post(client, inputs=TEXTS[:1], beam=4, nbest=3, length_penalty="gnmt", attention=False)
    assert response.status_code == 200, response.text
    generations = response.json()["results"][0]["generations"]
    assert len(generations) == 3
    scores = [generation["normalized_score"] for generation in generations]
    assert scores == sorted(scores, reverse=True)
    assert all(generation["attention"] is None for generation in generations)


def test_no_repeat_ngram_size_bans_repeats_in_the_outputs(client):
    plain = post(client, inputs=TEXTS, attention=False).json()["results"]
    assert any(len(set(r["generations"][0]["tokens"])) < len(r["generations"][0]["tokens"]) for r in plain)
    for beam in (1, 3):
        response = post(client, inputs=TEXTS, beam=beam, no_repeat_ngram_size=1, attention=False)
        assert response.status_code == 200, response.text
        for result in response.json()["results"]:
            tokens = result["generations"][0]["tokens"]
            assert len(set(tokens)) == len(tokens), tokens  # no token twice


def test_seeded_sampling_is_reproducible(client):
    first = post(client, inputs=TEXTS, sample=True, temperature=1.5, top_k=20, seed=7)
    second = post(client, inputs=TEXTS, sample=True, temperature=1.5, top_k=20, seed=7)
    assert first.status_code == second.status_code == 200, first.text
    assert first.json() == second.json()


def test_concurrent_requests_are_answered_like_single_ones(client, run_dir):
    """Merged into micro-batches or not, every request gets its own inputs' outputs; one bad input fails alone."""
    from seq2seq import load

    texts = ["add 3 to total", "print the length of names", "sort scores", "set x to 5", "   "] * 4
    expected = {text: result.text for text, result in zip(texts[:4], load(run_dir, device="cpu").generate(texts[:4]))}
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda text: post(client, inputs=[text]), texts))
    for text, response in zip(texts, responses):
        if text.strip():
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["generations"][0]["text"] == expected[text]
        else:
            assert response.status_code == 422
            assert response.json()["fields"][0]["field"] == "inputs"


# ----------------------------------------------------------------------------- limits and errors
@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ({"inputs": ["a"], "beam": 2, "nbest": 3}, "nbest", "nbest=3 cannot exceed beam=2"),
        ({"inputs": ["a"], "beam": 0}, "beam", "greater than or equal to 1"),
        ({"inputs": ["a"], "beam": 17}, "beam", "less than or equal to 16"),
        ({"inputs": ["a"], "sample": True, "beam": 3}, "sample", "one output per input"),
        ({"inputs": ["a"], "constrain": "java"}, "constrain", "'python'"),
        ({"inputs": ["a"], "sample": True, "temperature": 0}, "temperature", "greater than 0"),
        ({"inputs": ["a"], "top_p": 1.5}, "top_p", "less than or equal to 1"),
        ({"inputs": ["a"], "max_len": 0}, "max_len", "greater than or equal to 1"),
        ({"inputs": ["a"], "length_penalty": "long"}, "length_penalty", "'none', 'gnmt' or 'average'"),
        ({"inputs": ["a"], "no_repeat_ngram_size": -1}, "no_repeat_ngram_size", "greater than or equal to 0"),
        ({"inputs": ["a"], "sample": True, "no_repeat_ngram_size": 2}, "no_repeat_ngram_size", "not for sampling"),
        ({"inputs": ["a"], "beams": 2}, "beams", "Extra inputs"),
        ({"inputs": []}, "inputs", "at least 1 item"),
        ({"inputs": "add 3 to total"}, "inputs", "valid list"),
        ({"inputs": ["a", 3]}, "inputs.1", "valid string"),
        ({}, "inputs", "required"),
        ({"inputs": ["   "]}, "inputs", "empty source text"),
        ({"inputs": ["a"], "model": "nope"}, "model", "served models: tiny"),
    ],
)
def test_bad_requests_are_422_naming_the_field(client, body, field, needle):
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert [item["field"] for item in error["fields"]] == [field]
    assert needle in error["error"]


def test_malformed_json_is_422_naming_the_body(client):
    response = client.post("/v1/generate", content=b'{"inputs": [', headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "body"


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [(["a"] * 5, "5 inputs; at most 4 per request"), (["x" * 150, "y" * 51], "201 characters of input; at most 200 per request")],
)
def test_too_many_inputs_or_characters_is_413(client, inputs, needle):
    response = post(client, inputs=inputs)
    assert response.status_code == 413
    assert response.json()["error"] == needle


def test_oversized_or_unsized_body_is_refused_before_reading(client):
    response = client.post("/v1/generate", content=b" " * 20_001, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "at most 20000" in response.json()["error"]
    chunked = client.post("/v1/generate", content=iter([b'{"inputs": ["a"]}']), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 411
    assert "Content-Length" in chunked.json()["error"]


def test_oversized_attention_is_413_asking_to_leave_it_out(run_dir):
    with TestClient(create_app([run_dir], Limits(max_attention_weights=10), device="cpu")) as client:
        refused = post(client, inputs=TEXTS)
        assert refused.status_code == 413 and "attention=false" in refused.json()["error"]
        assert post(client, inputs=TEXTS, attention=False).status_code == 200


def test_slow_generation_times_out_with_504(run_dir, monkeypatch):
    from seq2seq.api import Model

    generate = Model.generate

    def slow(*args, **kwargs):  # the tiny model alone can answer within the limit on a fast CPU
        time.sleep(0.5)
        return generate(*args, **kwargs)

    monkeypatch.setattr(Model, "generate", slow)
    with TestClient(create_app([run_dir], Limits(timeout_s=0.01), device="cpu")) as client:
        response = post(client, inputs=TEXTS, beam=8, max_len=200)
    assert response.status_code == 504
    assert "did not finish within 0.01 s" in response.json()["error"]


def test_a_failing_model_is_a_json_500(run_dir, monkeypatch):
    from seq2seq.api import Model

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(Model, "generate", broken)
    with TestClient(create_app([run_dir], LIMITS, device="cpu"), raise_server_exceptions=False) as client:
        response = post(client, inputs=TEXTS)
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (RuntimeError); the server log has the details"}


def test_full_queue_is_503_with_retry_after(run_dir):
    with TestClient(create_app([run_dir], Limits(max_queue=0), device="cpu")) as client:
        response = post(client, inputs=TEXTS)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "server busy" in response.json()["error"]


# ----------------------------------------------------------------------------- several models, info, health
def test_int8_and_onnx_serving_give_the_float_models_outputs(run_dir, tmp_path):
    """serve --quantize int8 / --runtime onnx answer like the float torch model, and /v1/models says which."""
    pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")
    from seq2seq.export import export_run

    copy = tmp_path / "tiny"
    shutil.copytree(run_dir, copy)
    export_run(copy)
    body = {"inputs": TEXTS, "beam": 3, "nbest": 2, "attention": False}
    answers = {}
    for options in ({}, {"quantize": "int8"}, {"runtime": "onnx"}):
        with TestClient(create_app([copy], LIMITS, device="cpu", **options)) as client:
            response = client.post("/v1/generate", json=body)
            assert response.status_code == 200, response.text
            answers[str(options)] = [[g["text"] for g in r["generations"]] for r in response.json()["results"]]
            info = client.get("/v1/models").json()[0]
            assert (info["weights"], info["runtime"]) == (options.get("quantize", "float32"), options.get("runtime", "torch"))
    assert answers["{'runtime': 'onnx'}"] == answers["{}"]  # float32 either way
    # int8 weights move the scores a little: this one-epoch model's near-tied runners-up may swap.
    assert [nbest[0] for nbest in answers["{'quantize': 'int8'}"]] == [nbest[0] for nbest in answers["{}"]]


def test_several_models_are_chosen_by_name(run_dir, tmp_path):
    text = tmp_path / "text"  # the same weights read as a text model: its outputs are not Python code
    shutil.copytree(run_dir, text)
    config = text / "config.yaml"
    config.write_text(config.read_text().replace("tgt_tokenizer: python", "tgt_tokenizer: space"))
    with TestClient(create_app([run_dir, text], LIMITS, device="cpu")) as client:
        assert [model["name"] for model in client.get("/v1/models").json()] == ["tiny", "text"]
        assert post(client, inputs=TEXTS[:1]).json()["model"] == "tiny"  # the first is the default
        answer = post(client, inputs=TEXTS[:1], model="text").json()
        assert answer["model"] == "text" and answer["results"][0]["generations"][0]["parses"] is None
        refused = post(client, inputs=TEXTS[:1], model="text", constrain="python")
        assert refused.status_code == 422 and refused.json()["fields"][0]["field"] == "constrain"
        missing = client.get("/v1/models/nope")
        assert missing.status_code == 404
        assert missing.json()["error"] == "unknown model 'nope'; served models: tiny, text"
    with pytest.raises(RunDirError, match="two runs are named 'tiny'"):
        create_app([run_dir, run_dir])


def test_model_info_describes_the_run(client, run_dir):
    info = client.get("/v1/models/tiny").json()
    assert info["architecture"]["decoder"]["attention"] == "bahdanau"
    assert info["parameters"] == json.loads((run_dir / "run.json").read_text())["parameters"]
    assert info["src_vocab_size"] == len(json.loads((run_dir / "src_vocab.json").read_text())["tokens"])
    assert info["target"] == "python" and info["max_len"] == 20
    assert [epoch["epoch"] for epoch in info["training"]["epochs"]] == [1]
    assert info["training"]["best_valid_loss"] == info["training"]["epochs"][0]["valid_loss"]
    assert info["evaluations"] == {"eval_valid": {"count": 6, "bleu": 1.5, "exact_match": 0.0}}
    assert str(run_dir) not in json.dumps(info)  # the server's file layout is not disclosed


def test_health_and_openapi(client):
    assert client.get("/health").json() == {"status": "ok", "version": "0.1.0", "models": ["tiny"]}
    schema = client.get("/openapi.json").json()
    assert {"/v1/generate", "/v1/models", "/v1/models/{name}", "/health"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert request["beam"]["maximum"] == 16 and request["nbest"]["minimum"] == 1
    assert {"413", "422", "504"} <= set(schema["paths"]["/v1/generate"]["post"]["responses"])


# ----------------------------------------------------------------------------- page and files
def test_page_and_assets_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text and '<link rel="stylesheet" href="/static/style.css">' in page.text
    for name, media_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type)
        assert "http://" not in asset.text and "https://" not in asset.text  # nothing from a CDN
    assert "https://" not in page.text and "http://" not in page.text


def raw_get(app, raw_path: str) -> tuple[int, bytes]:
    """GET a path exactly as written, as uvicorn passes it on (HTTP clients drop ``..`` before sending)."""
    messages: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": unquote(raw_path), "raw_path": raw_path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver")], "server": ("testserver", 80), "client": ("127.0.0.1", 5000)}
    asyncio.run(app(scope, receive, send))
    return messages[0]["status"], b"".join(m.get("body", b"") for m in messages[1:])


@pytest.mark.parametrize(
    "path",
    ["/static/../../etc/passwd", "/static/..%2F..%2F..%2Fetc%2Fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
     "/static/../server.py", "/static/..%2Fserver.py", "/static/..%5Cserver.py", "/static//etc/passwd",
     "/../../etc/passwd", "/static/%2Fetc%2Fpasswd", "/v1/models/..%2F..%2Fetc%2Fpasswd"],
)
def test_paths_outside_the_assets_are_404(client, path):
    status, body = raw_get(client.app, path)
    assert status == 404
    assert b"root:" not in body and b"import" not in body


# ----------------------------------------------------------------------------- command line
def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seq2seq")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    return parser


def test_serve_command_reports_user_errors(tmp_path, run_dir):
    parser = serve_parser()
    args = parser.parse_args(["serve", str(tmp_path / "norun")])
    with pytest.raises(RunDirError, match="norun"):
        args.func(args)
    args = parser.parse_args(["serve", str(run_dir), "--timeout", "0"])
    with pytest.raises(InputError, match="--timeout"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", str(run_dir), "--port", "70000"])


def test_busy_port_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
