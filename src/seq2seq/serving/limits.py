"""Request limits of the server, in a module of their own so that building the command line
(``seq2seq serve --help`` shows the defaults) does not import FastAPI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds on one request's cost; exceeding them is an error, never a slow server."""

    max_inputs: int = 32  # texts per request (413 beyond)
    max_chars: int = 5000  # characters over all texts of a request (413 beyond)
    max_body_bytes: int = 1_000_000  # raw request body (413 beyond)
    timeout_s: float = 30.0  # waiting plus decoding (504 beyond)
    max_queue: int = 256  # requests waiting per model (503 beyond)
    micro_batch_inputs: int = 64  # waiting requests merged up to this many texts; 0 = one request at a time
    max_attention_weights: int = 2_000_000  # attention weights in one response, about 16 MB of JSON (413 beyond)
    read_timeout_s: float = 10.0  # a request's headers and body must arrive within this (the connection is closed beyond)
