"""The ``seq2seq serve`` subcommand: registered on the main parser by :func:`add_serve_command`.

    seq2seq serve RUN [RUN ...] [--host 127.0.0.1] [--port 8000]
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

from seq2seq.checkpoint import CHECKPOINTS
from seq2seq.translator import InputError

logger = logging.getLogger(__name__)


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the subcommands of the main parser (``build_parser`` in seq2seq/cli.py)."""
    from seq2seq.serving.limits import Limits

    defaults = Limits()
    p = subparsers.add_parser(
        "serve",
        help="serve trained runs over HTTP, with a web page",
        description="Serve one or more run directories: POST /v1/generate, GET /v1/models, GET /health, "
        "the OpenAPI schema at /openapi.json and a web page at /. Each model is named by its folder name.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory (several: the request's `model` picks one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port (default: 8000; 0 = any free port)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--checkpoint", choices=list(CHECKPOINTS), default="best",
                   help="weights to serve: best (the default), last, or averaged (written by seq2seq average)")
    p.add_argument("--quantize", choices=["int8"],
                   help="decode with int8 weights (dynamic quantization; CPU only, about 2x faster, see docs/BENCHMARKS.md)")
    p.add_argument("--runtime", choices=["torch", "onnx", "ctranslate2"], default="torch",
                   help="onnx: decode with each run's ONNX export (seq2seq export RUN) through onnxruntime, on the CPU; "
                        "ctranslate2: each transformer run's CTranslate2 export (export --format ctranslate2), "
                        "greedy and beam only")
    p.add_argument("--max-inputs", type=_positive_int, default=defaults.max_inputs,
                   help="texts per request (default: %(default)s)")
    p.add_argument("--max-chars", type=_positive_int, default=defaults.max_chars,
                   help="characters over all texts of a request (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=defaults.timeout_s,
                   help="seconds a request may wait and decode (default: %(default)s)")
    p.add_argument("--read-timeout", type=float, default=defaults.read_timeout_s, metavar="SECONDS",
                   help="a request's headers and body must arrive within this; slower connections are closed "
                   "(default: %(default)s)")
    p.add_argument("--micro-batch", type=int, default=defaults.micro_batch_inputs, metavar="N",
                   help="decode waiting requests with equal options together, up to N texts "
                   "(default: %(default)s; 0 = one request at a time)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from seq2seq.serving.server import Limits, bind_socket, create_app, uvicorn_server

    if not args.timeout > 0:
        raise InputError(f"--timeout must be > 0, got {args.timeout}")
    if not args.read_timeout > 0:
        raise InputError(f"--read-timeout must be > 0, got {args.read_timeout}")
    if args.micro_batch < 0:
        raise InputError(f"--micro-batch must be >= 0, got {args.micro_batch}")
    limits = Limits(max_inputs=args.max_inputs, max_chars=args.max_chars, timeout_s=args.timeout,
                    micro_batch_inputs=args.micro_batch, read_timeout_s=args.read_timeout)
    app = create_app([Path(run) for run in args.runs], limits, device=args.device, checkpoint=args.checkpoint,
                     quantize=args.quantize, runtime=args.runtime)
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    if not _is_loopback(args.host):
        logger.warning("listening on %s: anyone who can reach this machine can use the models", args.host)
    print(f"serving on http://{'[' + host + ']' if ':' in host else host}:{port}/  (Ctrl+C to stop)", file=sys.stderr)
    try:
        uvicorn_server(app, read_timeout_s=limits.read_timeout_s).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn has already shut down cleanly and re-raises the signal for its caller
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value
