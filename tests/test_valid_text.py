"""Text UTF-8 cannot carry (a JSON ``"\\ud800"`` escape, a command-line argument of bad bytes) is refused
where it comes in, at every entry point, naming the field and the character; every other character
(NUL, controls, noncharacters, U+2028) is valid text and is generated for as before.

The fuzzing that found it: ``test_server_robustness.py::test_fuzzed_text_requests`` and the JSON
readers' targets in ``test_fuzz.py``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import train_tiny_run
from seq2seq.cli import main
from seq2seq.data.valid_text import check_text, escape_surrogates, surrogate_problem
from seq2seq.serving.server import Limits, create_app
from seq2seq.translator import InputError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # Starlette asks for the `httpx2` fork
    from fastapi.testclient import TestClient

# Valid text that looks hostile: every C0 and C1 control, DEL, noncharacters, line separators, the BOM.
AWKWARD_BUT_VALID = ["add \x00\x07 3", "add 3\u2028to\u2029total", "\ufffe\uffff\ufdd0 add", "\U0010ffff \U0001fffe",
                     "add\x1b[31m 3", "".join(map(chr, range(1, 32))) + " add", "".join(map(chr, range(0x7f, 0xa0))) + " add",
                     "\ufeffadd 3"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("valid_text") / "tiny", "decode.max_len=10")


@pytest.fixture(scope="module")
def client(run_dir):
    with TestClient(create_app([run_dir], Limits(), device="cpu"), raise_server_exceptions=False) as client:
        yield client


# ----------------------------------------------------------------------------- the check
def test_the_check_names_the_character_and_its_position():
    assert surrogate_problem("add 3") is None and surrogate_problem("\x00\ufffe\u2028🙂") is None
    assert surrogate_problem("\x00\x07\ud800") == "holds an unpaired surrogate '\\ud800' at character 3: expected valid Unicode text"
    with pytest.raises(InputError, match=r"^input 2: the text holds an unpaired surrogate '\\udc00' at character 1: "):
        check_text("\udc00\ud800", what="input 2: the text", error=InputError)  # a reversed pair
    assert check_text("ok \u2028", what="x") == "ok \u2028"
    assert escape_surrogates("a\ud800b") == "a\\ud800b"


# ----------------------------------------------------------------------------- REST API (and so the page)
@pytest.mark.parametrize(
    ("raw", "field", "needle"),
    [
        (b'{"inputs":["\\u0000\\u0007\\ud800"]}', "inputs.0", "'\\ud800' at character 3"),  # the request
        (b'{"inputs":["add 3", "x\\udfff"]}', "inputs.1", "'\\udfff' at character 2"),
        (b'{"inputs":["\\ude42\\ud83d"]}', "inputs.0", "'\\ude42' at character 1"),  # a reversed pair
        (b'{"inputs":["add 3"], "model":"\\ud800"}', "model", "at character 1"),
        (b'{"inputs":["add 3"], "length_penalty":"\\udbff"}', "length_penalty", "'\\udbff' at character 1"),
        (b'{"inputs":["add 3"], "beam":"\\ud800"}', "beam", "unpaired surrogate"),
        (b'{"inputs":["add 3"], "\\ud800":1}', "body", "the key '\\ud800' holds an unpaired surrogate"),
    ],
)
def test_a_surrogate_in_any_field_is_a_422_naming_field_and_character(client, raw, field, needle):
    response = client.post("/v1/generate", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    answer = json.loads(response.content.decode("utf-8"))
    assert [item["field"] for item in answer["fields"]] == [field]
    assert needle in answer["error"] and "expected valid Unicode text" in answer["error"]
    assert client.get("/health").status_code == 200


def test_a_surrogate_sent_as_raw_bytes_is_a_malformed_body(client):
    raw = '{"inputs":["add \ud800"]}'.encode("utf-8", "surrogatepass")  # not UTF-8, so not JSON
    response = client.post("/v1/generate", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422) and "error" in response.json()


@pytest.mark.parametrize("text", AWKWARD_BUT_VALID)
def test_valid_but_awkward_text_is_generated_for_and_echoed_unchanged(client, text):
    response = client.post("/v1/generate", json={"inputs": [text], "beam": 2, "constrain": "python"})
    assert response.status_code == 200, response.text
    assert json.loads(response.content.decode("utf-8"))["results"][0]["source"] == text


# ----------------------------------------------------------------------------- Python API
def test_python_api_raises_input_error_with_the_position(run_dir):
    from seq2seq import load

    model = load(run_dir, device="cpu")
    with pytest.raises(InputError, match=r"^input 2: the text holds an unpaired surrogate '\\ud800' at character 5: "):
        model.generate(["add 3", "add \ud800 3"])
    [result] = model.generate(["add \x00 3\u2028"])
    assert result.source == "add \x00 3\u2028" and result.text.encode("utf-8")


# ----------------------------------------------------------------------------- seq2seq generate
def _generate(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["generate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_text_argument_with_a_surrogate_is_one_line(run_dir, capsys):
    code, out, err = _generate([str(run_dir), "add \ud800", "--device", "cpu"], capsys)
    assert code == 2 and out == ""
    assert err == "seq2seq generate: error: the text argument holds an unpaired surrogate '\\ud800' at character 5: expected valid Unicode text\n"


def test_cli_text_argument_of_bad_bytes_names_the_byte(run_dir):
    """A real process: the shell hands over bytes, which Python decodes with surrogateescape."""
    env = {**os.environ, "PYTHONUTF8": "1"}
    done = subprocess.run([sys.executable.encode(), b"-m", b"seq2seq", b"generate", str(run_dir).encode(), b"add \xff 3",
                           b"--device", b"cpu"], capture_output=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode("utf-8").splitlines()[-1] == (
        "seq2seq generate: error: the text argument is not valid UTF-8 (byte 0xff at character 5): expected UTF-8 text")


@pytest.mark.parametrize("where", ["file", "stdin"])
def test_cli_lines_holding_an_encoded_surrogate_name_the_line(run_dir, tmp_path, capsys, monkeypatch, where):
    data = "add 3\nadd \ud800 3\n".encode("utf-8", "surrogatepass")  # CESU-8: not UTF-8
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    if where == "stdin":
        monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data)))
    code, out, err = _generate([str(run_dir), "--device", "cpu", *(["--file", str(path)] if where == "file" else [])], capsys)
    name = str(path) if where == "file" else "stdin"
    assert code == 2 and out == "" and err.startswith(f"seq2seq generate: error: {name}:2: not valid UTF-8 text")


def test_cli_generates_for_valid_awkward_lines(run_dir, tmp_path, capsys):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(text.replace("\x0a", " ").replace("\x0d", " ") for text in AWKWARD_BUT_VALID) + "\n", encoding="utf-8")
    code, out, err = _generate([str(run_dir), "--file", str(path), "--device", "cpu"], capsys)
    assert code == 0, err
    assert len(out.encode("utf-8").splitlines()) == len(AWKWARD_BUT_VALID)
