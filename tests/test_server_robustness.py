"""The server under hostile clients, on loopback: ``seq2seq serve`` in a child process, raw sockets.

Idle and half-sent connections, byte-at-a-time requests, oversized and lying bodies, huge
headers, raw path-traversal targets, fuzzed request bytes and JSON string escapes that UTF-8 cannot
carry in every field of a request. After each, the server must still answer, its memory must stay
bounded, and no response may contain a file from outside the run directory.
``test_fuzzed_requests_thorough`` and ``test_fuzzed_text_requests_thorough`` (``pytest -m slow``)
send 1,000 fuzzed requests each.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import train_tiny_run

READ_TIMEOUT_S = 2.0
LOG: deque[str] = deque(maxlen=10_000)  # the server's stderr, as the fixture drains it
# Files a path-traversal attempt would reach; their contents must never appear in a response.
SECRET = "root:x:0:0"


@dataclass
class LiveServer:
    process: subprocess.Popen
    port: int

    @property
    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def exchange(self, raw: bytes, *, timeout: float = 10.0) -> bytes:
        """Send ``raw`` on a new connection; read until the server closes it, or until it has sent
        something and then gone quiet (a kept-alive connection). No half-close: uvicorn closes a
        connection at the client's end of stream, before it answers."""
        with self.connect() as sock:
            try:
                sock.sendall(raw)
            except OSError:  # the server answered and closed before reading everything
                pass
            return read_all(sock, first_s=timeout)

    def get(self, path: str) -> tuple[int, bytes]:
        return parse_response(self.exchange(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()))

    def post_generate(self, body: dict) -> tuple[int, bytes]:
        data = json.dumps(body).encode()
        head = f"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        return parse_response(self.exchange(head.encode() + data))

    def assert_answering(self) -> None:
        started = time.monotonic()
        assert self.get("/health")[0] == 200
        status, body = self.post_generate({"inputs": ["add 3 to total"], "attention": False})
        assert status == 200 and json.loads(body)["results"][0]["generations"], body[:200]
        assert time.monotonic() - started < 10, "the server answered, but slowly"


def read_all(sock: socket.socket, *, first_s: float = 10.0, quiet_s: float = 0.3) -> bytes:
    """What the server sends: wait up to ``first_s`` for the first bytes, then read until it closes
    or sends nothing for ``quiet_s``."""
    chunks = []
    sock.settimeout(first_s)
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            sock.settimeout(quiet_s)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response; status 0 if the server sent none."""
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    head, _, body = raw.partition(b"\r\n\r\n")
    if length := re.search(rb"(?im)^content-length: *(\d+)\r?$", head):
        body = body[: int(length.group(1))]  # a second response (to pipelined bytes) may follow
    return (int(match.group(1)) if match else 0), body


def closed_by_server(sock: socket.socket, wait_s: float) -> bool:
    """True once the server has closed ``sock`` (EOF or reset) within ``wait_s``."""
    sock.settimeout(wait_s)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    run_dir = train_tiny_run(tmp_path_factory.mktemp("robust") / "tiny", "decode.max_len=20")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "seq2seq", "serve", str(run_dir), "--port", "0", "--device", "cpu",
         "--read-timeout", str(READ_TIMEOUT_S)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )
    port = None
    deadline = time.monotonic() + 120
    while port is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            raise RuntimeError(f"seq2seq serve exited with {process.returncode}")
        if match := re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line):
            port = int(match.group(1))
    assert port, "seq2seq serve did not report its port"
    # Keep draining its log so that the child never blocks on a full pipe; the last lines are kept.
    threading.Thread(target=lambda: LOG.extend(process.stderr), daemon=True).start()
    live = LiveServer(process, port)
    for _ in range(100):
        try:
            if live.get("/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    live.assert_answering()  # the first generation's warm-up is not counted against any later test
    yield live
    process.terminate()
    process.wait(timeout=30)


# ----------------------------------------------------------------------------- slow and idle clients
def test_idle_and_half_sent_connections_are_closed_and_the_server_keeps_answering(server):
    before = server.rss_kib
    idle = [server.connect() for _ in range(150)]  # connect, send nothing
    half_headers = [server.connect() for _ in range(150)]  # headers never finished
    for sock in half_headers:
        sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
    half_bodies = [server.connect() for _ in range(100)]  # 10 of 200 promised body bytes
    for sock in half_bodies:
        sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{\"inputs\": ")
    opened = idle + half_headers + half_bodies
    try:
        server.assert_answering()  # 400 stalled connections do not block anyone else
        grown_mib = (server.rss_kib - before) / 1024
        assert grown_mib < 64, f"400 stalled connections grew the server by {grown_mib:.0f} MiB"
        started = time.monotonic()
        still_open = [sock for sock in opened if not closed_by_server(sock, max(0.1, READ_TIMEOUT_S + 3 - (time.monotonic() - started)))]
        assert not still_open, f"{len(still_open)} of {len(opened)} stalled connections still open after {READ_TIMEOUT_S + 3:g} s"
        print(f"\n{len(opened)} stalled connections: server RSS +{grown_mib:.1f} MiB, all closed "
              f"{time.monotonic() - started:.1f} s after the server answered around them")
    finally:
        for sock in opened:
            sock.close()
    server.assert_answering()


def test_a_request_trickled_byte_by_byte_is_cut_off_at_the_deadline(server):
    """Slowloris: bytes keep coming, but the request is never complete; the deadline is per request."""
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * 1000
    with server.connect() as sock:
        started, sent = time.monotonic(), 0
        try:
            while time.monotonic() - started < READ_TIMEOUT_S + 5:
                sock.sendall(request[sent : sent + 1])
                sent += 1
                time.sleep(0.05)
            closed_after = None
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - started
    assert closed_after is not None, "a byte-at-a-time request held its connection past the deadline"
    assert READ_TIMEOUT_S - 0.5 <= closed_after <= READ_TIMEOUT_S + 3
    server.assert_answering()


def test_a_kept_alive_connection_gets_a_fresh_deadline_per_request(server):
    """A slow but steady client is not punished: each request on one connection has its own deadline
    (the first counts from the connection's opening, the next ones from their first byte)."""
    with server.connect() as sock:
        for request in range(3):
            if request:  # idle between requests: the keep-alive timer applies, not the read deadline
                time.sleep(READ_TIMEOUT_S * 0.6)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            time.sleep(READ_TIMEOUT_S * 0.6)  # slow, but within this request's deadline
            sock.sendall(b"\r\n")
            reply = b""
            while b'"status":"ok"' not in reply:
                chunk = sock.recv(65536)
                assert chunk, "the server closed a connection whose requests each arrived in time"
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200")


def test_a_pipelined_partial_request_gets_a_deadline_too(server):
    """A complete request followed, in the same packet, by one whose body never finishes: the first
    is answered, then the connection is closed at the second's deadline."""
    with server.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 200\r\n\r\n{\"inputs\": ")
        started = time.monotonic()
        reply = read_all(sock, first_s=5, quiet_s=READ_TIMEOUT_S + 5)  # until the server closes
        elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in reply
    assert elapsed <= READ_TIMEOUT_S + 3, f"closed after {elapsed:.1f} s"


# ----------------------------------------------------------------------------- oversized input
def test_an_oversized_body_is_refused_before_it_is_sent(server):
    with server.connect() as sock:
        sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50000000\r\n\r\n")  # 50 MB promised, none sent
        status, body = parse_response(read_all(sock, first_s=5))
    assert status == 413 and b"at most 1000000" in body
    server.assert_answering()


def test_a_body_longer_than_its_content_length_is_not_read_past_it(server):
    data = json.dumps({"inputs": ["add 3 to total"], "attention": False}).encode()
    head = f"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
    # 2 MB of junk after the declared body: the server answers the request, then refuses the junk as
    # a malformed next request (its headers limit) instead of buffering it.
    raw = server.exchange(head + data + b"x" * 2_000_000, timeout=10)
    assert raw.startswith(b"HTTP/1.1 200")
    server.assert_answering()


def test_huge_headers_are_a_400(server):
    status, _ = parse_response(server.exchange(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"))
    assert status == 400
    server.assert_answering()


# ----------------------------------------------------------------------------- what a request can read
TRAVERSALS = [
    "/static/../../../../etc/passwd", "/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%252f..%252fetc%252fpasswd", "/static/....//....//etc/passwd", "/static/..\\..\\..\\etc\\passwd",
    "/../../../../etc/passwd", "//etc/passwd", "/static//etc/passwd", "/static/%00../../etc/passwd",
    "/static/index.html/../../../../etc/passwd", "/v1/models/..%2f..%2f..%2fetc%2fpasswd", "/v1/models/../../etc/passwd",
    "http://127.0.0.1/etc/passwd", "/static/config.yaml", "/static/model.safetensors", "/config.yaml", "/run.json",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_raw_traversal_targets_read_nothing_outside_the_package(server, target):
    raw = server.exchange(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status, body = parse_response(raw)
    assert status in (400, 404), raw[:300]
    assert SECRET.encode() not in body and b'"dtype"' not in body and b"decoder:" not in body  # a weights file, a config


def test_a_model_name_cannot_name_a_path(server):
    for name in ("../../etc/passwd", "/etc/passwd", "tiny/../../etc", "tiny/config.yaml"):
        status, body = server.post_generate({"inputs": ["add 3 to total"], "model": name})
        assert status == 422 and b"unknown model" in body and SECRET.encode() not in body


# ----------------------------------------------------------------------------- fuzzed requests
METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"BREW", b"", b"G\x00T"])
TARGETS = st.one_of(st.sampled_from([b"/", b"/health", b"/v1/generate", b"/v1/models", b"/static/app.js", b"*"]),
                    st.binary(max_size=80), st.text(max_size=60).map(lambda t: ("/" + t).encode("utf-8", "surrogatepass")))
JSON_BODIES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
).map(lambda value: json.dumps(value).encode())
GENERATE_BODIES = st.fixed_dictionaries(
    {"inputs": st.lists(st.text(max_size=40), max_size=3)},
    optional={"beam": st.integers(-3, 40), "nbest": st.integers(-3, 40), "max_len": st.integers(-3, 2000),
              "sample": st.booleans(), "temperature": st.floats(-1, 20), "model": st.text(max_size=10),
              "constrain": st.sampled_from(["python", "java", None]), "top_p": st.floats(-1, 2)},
).map(lambda value: json.dumps(value).encode())
BODIES = st.one_of(st.binary(max_size=300), JSON_BODIES, GENERATE_BODIES)
HEADER_LINES = st.lists(st.sampled_from([
    b"Content-Type: application/json", b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: abc",
    b"Content-Length: 99999999999999999999", b"Transfer-Encoding: chunked", b"Connection: keep-alive", b"Expect: 100-continue",
    b"Host:", b"X: \x00\xff", b": nameless", b"Content-Type: text/plain",
]), max_size=4)


@st.composite
def raw_requests(draw) -> bytes:
    method, target, body = draw(METHODS), draw(TARGETS), draw(BODIES)
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 extra", b""]))
    headers = [b"Host: x"] + draw(HEADER_LINES)
    if draw(st.booleans()):
        headers.append(b"Content-Length: %d" % len(body))
    return method + b" " + target + b" " + version + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


def check_fuzzed_request(server: LiveServer, raw: bytes) -> None:
    """Every request gets an HTTP answer or a closed connection, never a 500 or a leaked file."""
    reply = server.exchange(raw, timeout=READ_TIMEOUT_S + 5)
    status, body = parse_response(reply)
    assert status != 500 and not 501 <= status < 600 or status == 503, reply[:400]
    if status >= 400 and body and b"application/json" in reply.partition(b"\r\n\r\n")[0]:  # HEAD: no body
        assert "error" in json.loads(body)
    assert SECRET.encode() not in reply


@settings(max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=raw_requests())
def test_fuzzed_requests(server, raw):
    check_fuzzed_request(server, raw)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=raw_requests())
def test_fuzzed_requests_thorough(server, raw):
    check_fuzzed_request(server, raw)


# ----------------------------------------------------------------------------- JSON escapes in every field
# What a JSON string can carry but UTF-8 only partly: lone high and low surrogates, reversed and
# doubled pairs, a proper pair, noncharacters, every C0 and C1 control (NUL included), DEL, the BOM
# and U+2028/2029. json.dumps writes each as a \uXXXX escape (raw, with ensure_ascii=False, and a
# surrogate then becomes the 3 bytes UTF-8 refuses).
ESCAPE_CHARS = [
    "\ud800", "\udbff", "\udc00", "\udfff", "\ude42\ud83d", "\ud83d\ude42", "\ud800\ud800", "\udcff",
    "\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0001fffe", "\U0010ffff", "\u2028", "\u2029", "\ufeff", "\x7f",
    *map(chr, range(0x00, 0x20)), *map(chr, range(0x80, 0xA0)),
]
ESCAPED_TEXT = st.lists(st.sampled_from([*ESCAPE_CHARS, "add", "3", "to", "total", " ", "'x'", "`l`"]), max_size=8).map("".join)
REQUEST_FIELDS = {  # each field's good values, and the escaped text any of them may get instead
    "model": st.sampled_from(["tiny", None]), "beam": st.integers(1, 3), "nbest": st.just(1),
    "length_penalty": st.sampled_from(["none", "gnmt"]), "alpha": st.just(0.6), "constrain": st.sampled_from(["python", None]),
    "sample": st.booleans(), "temperature": st.just(1.0), "top_k": st.just(0), "top_p": st.just(1.0), "seed": st.just(3),
    "max_len": st.integers(1, 20), "attention": st.booleans(),
}


@st.composite
def text_requests(draw) -> tuple[dict, bytes]:
    """A /v1/generate body whose inputs, options and keys may hold escaped text, and its bytes."""
    body = {"inputs": draw(st.lists(ESCAPED_TEXT, min_size=1, max_size=3))}
    for name in draw(st.lists(st.sampled_from(sorted(REQUEST_FIELDS)), max_size=4, unique=True)):
        body[name] = draw(ESCAPED_TEXT if draw(st.integers(0, 3)) == 0 else REQUEST_FIELDS[name])
    if body.get("sample") is True:
        body["beam"] = 1
    if draw(st.integers(0, 7)) == 0:
        body[draw(ESCAPED_TEXT)] = 1  # an unknown key
    raw = json.dumps(body, ensure_ascii=draw(st.integers(0, 3)) > 0).encode("utf-8", "surrogatepass")
    return body, raw


def holds_surrogate(text: object) -> bool:
    return isinstance(text, str) and any("\ud800" <= char <= "\udfff" for char in text)


def check_text_request(server: LiveServer, body: dict, raw: bytes) -> None:
    """Never a 500: text with a surrogate is a 422 naming the field (``inputs.N``) and the character's
    position; other text is generated for, and every answer is valid UTF-8 JSON."""
    head = f"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\nConnection: close\r\n\r\n"
    reply = server.exchange(head.encode() + raw, timeout=READ_TIMEOUT_S + 10)
    status, content = parse_response(reply)
    assert status in (200, 400, 413, 422), reply[:400]
    answer = json.loads(content.decode("utf-8"))  # strict: the bytes are UTF-8 and the JSON well-formed
    json.dumps(answer, ensure_ascii=False).encode("utf-8")  # no escaped surrogate inside either
    try:
        body = json.loads(raw.decode("utf-8"))  # what the server reads: a proper pair becomes one character
        escaped = True
    except UnicodeDecodeError:  # a surrogate went out raw, as bytes that are not UTF-8: a malformed body
        escaped = False
    bad_inputs = [f"inputs.{i}" for i, text in enumerate(body["inputs"]) if holds_surrogate(text)]
    if status == 200:
        assert not bad_inputs and [r["source"] for r in answer["results"]] == body["inputs"], answer
        return
    assert "error" in answer, answer
    if bad_inputs and escaped and not any(holds_surrogate(key) for key in body):
        fields = [item["field"] for item in answer["fields"]]
        assert bad_inputs[0] in fields and "unpaired surrogate" in answer["error"], answer
        assert re.search(r"at character \d+", answer["error"]), answer


@settings(max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=text_requests())
def test_fuzzed_text_requests(server, case):
    check_text_request(server, *case)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=text_requests())
def test_fuzzed_text_requests_thorough(server, case):
    check_text_request(server, *case)


def test_the_server_survived_everything(server):
    """Runs last in this module: after every test above the server still answers, with bounded memory."""
    server.assert_answering()
    assert server.process.poll() is None
    assert server.rss_kib < 1024 * 1024, f"server RSS {server.rss_kib / 1024:.0f} MiB"
    time.sleep(0.5)  # the log thread catches up
    assert not [line for line in LOG if "Traceback" in line], "".join(LOG)[-3000:]
    print(f"\nserver RSS after the module: {server.rss_kib / 1024:.0f} MiB")
