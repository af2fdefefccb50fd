"""Would another BLAS train faster on this CPU? Training steps with every ``nn.Linear`` product
through NumPy's OpenBLAS against PyTorch's own (MKL), in alternating rounds.

    python bench/openblas_linear.py [configs/multi30k/transformer.yaml] [--batches 10] [--rounds 4] [--gemm]
    OMP_WAIT_POLICY=PASSIVE python bench/openblas_linear.py ...   # torch's threads sleep between regions

On an AMD CPU without AVX-512 (Zen 3), torch's MKL multiplies float32 matrices below the cores'
peak on some shapes, and NumPy's OpenBLAS, which has Zen kernels, is faster on most of the
Transformer's shapes in isolation (``--gemm`` prints both; torch there is the plain product, not
the padded-rows output layer of :mod:`seq2seq.models.linear`). This script asks whether that
carries over to training: each round times ``--batches`` training steps of the configuration
(train_speed.py's step: forward, loss, backward, clip, Adam) with torch's products, then the same
batches with every ``nn.Linear`` (the output layer included) computed by ``numpy.matmul`` on the
tensors' memory, forward and backward. The batches and the
arithmetic are the same (the model keeps training from reading to reading); only the library that
multiplies changes. OpenBLAS's thread count is NumPy's default (all cores) unless
``OPENBLAS_NUM_THREADS`` sets it; ``OMP_WAIT_POLICY=PASSIVE`` makes torch's threads sleep, not spin,
between parallel regions. A diagnostic, not a fast path: the toolkit does not use NumPy for its
products (docs/BENCHMARKS.md has the answer).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seq2seq.config import build_config, load_config_file
from seq2seq.cpu_memory import keep_freed_memory
from seq2seq.models import linear as aligned_rows


def _train_speed():
    """The sibling bench/train_speed.py as a module, whether this file runs as a script or is loaded by path."""
    if "bench_train_speed" not in sys.modules:
        path = Path(__file__).resolve().parent / "train_speed.py"
        spec = importlib.util.spec_from_file_location("bench_train_speed", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_train_speed"] = module  # its dataclass looks its module up there
        spec.loader.exec_module(module)
    return sys.modules["bench_train_speed"]


train_speed = _train_speed()


class NumpyLinear(torch.autograd.Function):
    """``inputs @ weight^T + bias`` for inputs [N, I] and weight [O, I], with NumPy's matmul (its BLAS)
    for the forward product and both backward products; float32 CPU tensors only."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        inputs = inputs.contiguous()
        ctx.save_for_backward(inputs, weight)
        ctx.has_bias = bias is not None
        output = inputs.new_empty(inputs.size(0), weight.size(0))  # [N, O]
        np.matmul(inputs.numpy(), weight.detach().numpy().T, out=output.numpy())
        return output.add_(bias) if bias is not None else output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        inputs, weight = ctx.saved_tensors
        grad = grad.contiguous().numpy()  # [N, O]
        needs = ctx.needs_input_grad
        grad_inputs = torch.from_numpy(np.matmul(grad, weight.detach().numpy())) if needs[0] else None  # [N, I]
        grad_weight = torch.from_numpy(np.matmul(grad.T, inputs.numpy())) if needs[1] else None  # [O, I]
        grad_bias = torch.from_numpy(grad.sum(axis=0)) if ctx.has_bias and needs[2] else None  # [O]
        return grad_inputs, grad_weight, grad_bias


def numpy_forward(self: nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
    flat = inputs.reshape(-1, inputs.size(-1))
    return NumpyLinear.apply(flat, self.weight, self.bias).view(*inputs.shape[:-1], self.out_features)


TORCH_FORWARD = nn.Linear.forward
ALIGNED_MIN_ROWS = aligned_rows.MIN_ROWS


def use_numpy(on: bool) -> None:
    """Route every nn.Linear through NumPy (and keep the output layer off the padded-rows product,
    which would otherwise call torch directly), or restore torch's own."""
    nn.Linear.forward = numpy_forward if on else TORCH_FORWARD
    aligned_rows.MIN_ROWS = sys.maxsize if on else ALIGNED_MIN_ROWS


def gemm_rates(shapes: list[tuple[int, int, int]], repeats: int = 20) -> None:
    """GFLOP/s of x [M, K] @ W^T for W [N, K] in torch and in NumPy, best of ``repeats``."""
    def best(product) -> float:
        for _ in range(3):
            product()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            times.append(time.perf_counter() - start)
        return min(times)

    print("| [M, K] x [K, N] | torch GFLOP/s | NumPy GFLOP/s | NumPy / torch |\n|---|---:|---:|---:|")
    for m, k, n in shapes:
        x, w = torch.randn(m, k), torch.randn(n, k)
        flops = 2 * m * k * n / 1e9
        ours, theirs = flops / best(lambda: x @ w.t()), flops / best(lambda: x.numpy() @ w.numpy().T)
        print(f"| [{m}, {k}] x [{k}, {n}] | {ours:.0f} | {theirs:.0f} | {theirs / ours:.2f}x |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, nargs="?", default=Path("configs/multi30k/transformer.yaml"))
    parser.add_argument("--batches", type=int, default=10, help="training steps timed per reading")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--gemm", action="store_true", help="first time the products alone, torch against NumPy")
    args = parser.parse_args()
    print("command:", shlex.join(["python", "bench/openblas_linear.py", *sys.argv[1:]]))
    keep_freed_memory()  # as `seq2seq train` does
    config = build_config(base=load_config_file(args.config), source=str(args.config))
    if config.train.precision != "fp32":
        parser.error(f"{args.config}: train.precision is {config.train.precision}; NumPy's products are float32 only")
    setup = train_speed.build(config)  # the config's threads, seed, corpus, model, Adam and shuffled batches
    batches = setup.batches[: args.batches]
    print(f"torch {torch.__version__} threads {torch.get_num_threads()}; NumPy {np.__version__}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset: all cores)')}")
    if args.gemm:
        gemm_rates([(1792, 256, 5921), (1792, 256, 1024), (1792, 1024, 256), (1792, 256, 256)])

    def tokens_per_s() -> float:
        tokens, start = 0, time.perf_counter()
        for batch in batches:
            tokens += train_speed.train_step(setup, batch)[1]
        return tokens / (time.perf_counter() - start)

    def reading(numpy_products: bool) -> float:
        use_numpy(numpy_products)
        try:
            return tokens_per_s()
        finally:
            use_numpy(False)

    setup.model.train()
    reading(False), reading(True)  # warm both paths up
    ratios = []
    for round_ in range(args.rounds):
        readings = {on: reading(on) for on in ((False, True) if round_ % 2 == 0 else (True, False))}
        ratios.append(readings[True] / readings[False])
        print(f"round {round_ + 1}: torch {readings[False]:,.0f}, NumPy {readings[True]:,.0f} target tokens/s "
              f"({ratios[-1]:.2f}x)", flush=True)
    print(f"NumPy's products / torch's, median of {args.rounds} rounds: {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
