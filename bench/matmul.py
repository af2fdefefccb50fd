"""Matrix-product speed of the installed torch at the Multi30k Transformer's training shapes.

    python bench/matmul.py [--threads 2] [--repeats 20]
    /path/to/other-venv/bin/python bench/matmul.py     # imports torch only: any venv can run it

A training step of ``configs/multi30k/transformer.yaml`` spends two thirds to three quarters of
its time in matrix products (``bench/train_speed.py --profile``), so the float32 GEMM of the torch
build sets its speed. For each shape [M, K] x [K, N] (M = 2,560 target positions of a batch; the output
layer's N = 5,921 words; the feed-forward and attention projections' 1,024 and 256), this prints
GFLOP/s of the forward product X W^T and the two backward ones (dX = G W, dW = G^T X), in float32
and bfloat16. Run it in ours' venv and in a peer's (OpenNMT-py pins torch < 2.3) to see how much
of a speed difference is the torch build's. Ratios, not absolute figures: the machines are shared.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable

import torch

SHAPES = ((2560, 256, 5921), (2560, 256, 1024), (2560, 1024, 256), (2560, 256, 256))  # (M, K, N)


def best_seconds(function: Callable[[], torch.Tensor], repeats: int) -> float:
    function()  # warm-up: first-call allocation and kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def format_rate(gflops: float) -> str:
    """Whole GFLOP/s at the real shapes; two significant digits below 10, so that a small rate is not 0."""
    return f"{gflops:.0f}" if gflops >= 10 else f"{gflops:.2g}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("command: " + shlex.join(["python", "bench/matmul.py", *(sys.argv[1:] if argv is None else argv)]))
    print(f"torch {torch.__version__}, {args.threads} threads, {torch.backends.mkl.is_available() and 'MKL' or 'no MKL'}; "
          f"best of {args.repeats}\n")
    print("| dtype | [M, K] x [K, N] | forward X W^T GFLOP/s | dX = G W | dW = G^T X |")
    print("|---|---|---:|---:|---:|")
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        for m, k, n in SHAPES:
            x, w, g = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype), torch.randn(m, n, dtype=dtype)
            gflop = 2 * m * k * n / 1e9
            rates = [gflop / best_seconds(f, args.repeats) for f in (lambda: x @ w.t(), lambda: g @ w, lambda: g.t() @ x)]
            name = "float32" if dtype == torch.float32 else "bfloat16"
            print(f"| {name} | [{m}, {k}] x [{k}, {n}] | " + " | ".join(map(format_rate, rates)) + " |")


if __name__ == "__main__":
    main()
