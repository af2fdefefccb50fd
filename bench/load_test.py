"""Load test for ``seq2seq serve``: concurrent clients on loopback, bounded in requests and time.

    python bench/load_test.py RUN [--clients 50] [--requests 1000] [--max-seconds 120]
    python bench/load_test.py --quick        # first trains a tiny run (seq2seq train --quick)

The server runs in a child process (as ``seq2seq serve`` would, on a free 127.0.0.1 port),
the clients are asyncio tasks sharing one httpx client in this process. Prints requests/s,
p50/p99 latency, the error count and the command that reproduces the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

TEXTS = [
    "add 3 to total",
    "sort list `l` in reverse",
    "print the length of names",
    "check whether the string key starts with 'beta' or ends with 'dog'",
    "build a list size with each element of queue that is greater than 92 , squared",
    "set matrix to the square root of z , using the math module",
    "get the value for 'mango' in last",
    "a list of the numbers from 3 up to 18",
]


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: dict[str, int] = field(default_factory=dict)  # status code or exception name -> count

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def serve(run_dir: str, micro_batch: int, quantize: str | None, port_to: Connection) -> None:
    """Child process: what ``seq2seq serve RUN --port 0 --micro-batch N`` does, reporting its port."""
    from seq2seq.serving.server import Limits, bind_socket, create_app, uvicorn_server

    app = create_app([Path(run_dir)], Limits(micro_batch_inputs=micro_batch), device="cpu", quantize=quantize)
    sock = bind_socket("127.0.0.1", 0)
    port_to.send(sock.getsockname()[1])
    uvicorn_server(app, log_level="warning").run(sockets=[sock])


async def wait_until_healthy(client: httpx.AsyncClient, url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await client.get(url + "/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"the server at {url} did not become healthy within {timeout_s:g} s")


async def run_clients(url: str, *, clients: int, requests: int, max_seconds: float, body: dict) -> tuple[Tally, float]:
    """``clients`` tasks send requests one after another until ``requests`` are sent or time is up."""
    tally, sent = Tally(), 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=max_seconds) as client:
        await wait_until_healthy(client, url)
        deadline = time.monotonic() + max_seconds

        async def one_client() -> None:
            nonlocal sent
            while sent < requests and time.monotonic() < deadline:
                text = TEXTS[sent % len(TEXTS)]
                sent += 1
                start = time.perf_counter()
                try:
                    response = await client.post(url + "/v1/generate", json={**body, "inputs": [text]})
                except httpx.HTTPError as error:
                    tally.error(type(error).__name__)
                    continue
                if response.status_code == 200:
                    tally.latencies.append(time.perf_counter() - start)
                else:
                    tally.error(str(response.status_code))

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return tally, time.perf_counter() - start


def train_quick_run(out: Path) -> Path:
    from seq2seq.cli import main

    run_dir = out / "quick"
    if main(["train", "--quick", "--preset", "lstm-attention", "--no-progress", "--no-eval", "--out", str(run_dir)]) != 0:
        raise SystemExit("training the --quick run failed")
    return run_dir


def report(tally: Tally, elapsed: float, args: argparse.Namespace) -> str:
    done = len(tally.latencies)
    errors = sum(tally.errors.values())
    cuts = statistics.quantiles(tally.latencies, n=100, method="inclusive") if done > 1 else [float("nan")] * 99
    return "\n".join([
        f"command:    python bench/load_test.py {shlex.join(args.argv)}",
        f"load:       {args.clients} concurrent clients, {done + errors} requests of 1 input "
        f"({'greedy' if args.beam == 1 else f'beam {args.beam}'}), micro-batch {args.micro_batch}"
        f"{', int8 weights' if args.quantize else ''}",
        f"throughput: {done / elapsed:.1f} requests/s over {elapsed:.1f} s",
        f"latency:    p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms",
        f"errors:     {errors}" + (f" {tally.errors}" if errors else ""),
    ])


def bounded(low: float, high: float, kind: type = int):
    def parse(text: str):
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low:g} to {high:g}, got {text}")
        return value

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", help="run directory to serve (or --quick)")
    parser.add_argument("--quick", action="store_true", help="train a tiny run first (seq2seq train --quick) and serve it")
    parser.add_argument("--clients", type=bounded(1, 200), default=50, help="concurrent clients (default: 50)")
    parser.add_argument("--requests", type=bounded(1, 20_000), default=1000, help="requests in all (default: 1000)")
    parser.add_argument("--max-seconds", type=bounded(1, 600, float), default=120, help="stop sending after this (default: 120)")
    parser.add_argument("--beam", type=bounded(1, 16), default=1, help="beam size of every request (default: 1, greedy)")
    parser.add_argument("--micro-batch", type=bounded(0, 1024), default=64, help="server --micro-batch (default: 64; 0 = off)")
    parser.add_argument("--quantize", choices=["int8"], help="server --quantize int8")
    args = parser.parse_args(argv)
    if (args.run is None) == (not args.quick):
        parser.error("give a run directory or --quick (not both)")
    args.argv = argv
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # else one line per request once training set up logging
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = train_quick_run(Path(scratch)) if args.quick else Path(args.run)
        receive_port, send_port = multiprocessing.Pipe(duplex=False)
        server = multiprocessing.get_context("spawn").Process(
            target=serve, args=(str(run_dir), args.micro_batch, args.quantize, send_port), daemon=True
        )
        server.start()
        try:
            while not receive_port.poll(0.2):
                if not server.is_alive():
                    raise SystemExit("the server process failed to start (see its error above)")
            url = f"http://127.0.0.1:{receive_port.recv()}"
            body = {"beam": args.beam, "attention": True}
            tally, elapsed = asyncio.run(run_clients(url, clients=args.clients, requests=args.requests,
                                                     max_seconds=args.max_seconds, body=body))
        finally:
            server.terminate()  # SIGTERM: uvicorn shuts down cleanly
            server.join(timeout=30)
    print(report(tally, elapsed, args))
    return 1 if tally.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
