"""The CPU kernels the models route around, timed against PyTorch's own at the model's shapes.

    python bench/kernels.py [--threads 2] [--vocab 5921] [--repeats 30]

1. The attention's tanh over [B, S, A] (128 x 15 x 512 by default): ``torch.Tensor.tanh_`` against
   :func:`seq2seq.models.fast_paths.tanh_` (2 sigmoid(2x) - 1 on a CPU in float32).
2. The vocabulary projection [N, 512] x [512, V] at training's N = 2048 rows and beam search's
   320 and greedy's 64: ``F.linear`` against :func:`seq2seq.models.linear.linear` (rows padded to
   16 floats while computed).
3. Dropout (p 0.3) on the Multi30k Transformer's [128, 20, 256] activations, forward and
   backward: ``nn.Dropout`` (``bernoulli_``) against :class:`seq2seq.models.dropout.Dropout`
   (uniforms compared with p).
4. The Transformer's attention, eq. 1 with a padding mask, forward and backward at [128, 4 heads,
   20 queries, 22 keys, 64]: ``F.scaled_dot_product_attention`` (the flash kernel on the CPU)
   against :func:`seq2seq.models.transformer.scaled_dot_product` (the expression written out), in
   float32 and bfloat16.

Each pair alternates, and the best of ``--repeats`` timings of each is reported with the ratio
(ours / torch's time: below 1 is faster). The maximal difference of the results is printed too.
Ratios, not seconds, are the result: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seq2seq.cpu_memory import keep_freed_memory
from seq2seq.models.dropout import Dropout
from seq2seq.models.fast_paths import tanh_
from seq2seq.models.linear import linear
from seq2seq.models.transformer import scaled_dot_product


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_ms(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return 1000 * (time.perf_counter() - start)


def max_abs_difference(theirs: torch.Tensor, ours: torch.Tensor) -> float:
    return float((theirs.double() - ours.double()).abs().max())


def compare(
    name: str, theirs: Callable[[], torch.Tensor], ours: Callable[[], torch.Tensor], repeats: int,
    difference: Callable[[torch.Tensor, torch.Tensor], float] = max_abs_difference,
) -> None:
    difference = difference(theirs(), ours())
    times = {"torch": float("inf"), "ours": float("inf")}
    for _ in range(repeats):  # alternate, so that a slow spell of the machine hits both
        times["torch"] = min(times["torch"], time_ms(theirs))
        times["ours"] = min(times["ours"], time_ms(ours))
    ratio = times["ours"] / times["torch"]
    print(f"| {name} | {times['torch']:.2f} | {times['ours']:.2f} | {ratio:.2f} | {difference:.1e} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=5921, help="output width (Multi30k en: 5,921 words)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    print("command: " + shlex.join(["python", "bench/kernels.py", *(sys.argv[1:] if argv is None else argv)]))
    print(f"{cpu_name()}, torch {torch.__version__}, {args.threads} threads, float32\n")
    print("| kernel | torch ms | ours ms | ours / torch | max abs difference |")
    print("|---|---:|---:|---:|---:|")
    torch.manual_seed(0)

    energies = torch.randn(128, 15, 512)
    scratch = torch.empty_like(energies)
    compare("attention tanh [128, 15, 512]", lambda: scratch.copy_(energies).tanh_(),
            lambda: tanh_(scratch.copy_(energies)), args.repeats)

    layer = nn.Linear(512, args.vocab)
    with torch.no_grad():
        for rows in (2048, 320, 64):
            features = torch.randn(rows, 512)
            compare(f"output layer [{rows}, 512] x [512, {args.vocab}]", lambda: F.linear(features, layer.weight, layer.bias),
                    lambda: linear(layer, features), max(3, args.repeats // (10 if rows == 2048 else 1)))

    activations = torch.randn(128, 20, 256, requires_grad=True)
    upstream = torch.randn(128, 20, 256)
    def dropout_step(dropout: nn.Module) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            activations.grad = None
            dropout(activations).backward(upstream)
            return activations.grad
        return step
    def keep_rates(theirs: torch.Tensor, ours: torch.Tensor) -> float:  # the masks are random: compare their rates
        return abs(float((theirs != 0).float().mean()) - float((ours != 0).float().mean()))
    # the last column: the difference of the keep rates (both ~0.7)
    compare("dropout 0.3 [128, 20, 256], fwd + bwd", dropout_step(nn.Dropout(0.3)), dropout_step(Dropout(0.3)),
            args.repeats, keep_rates)

    padding = torch.rand(128, 1, 1, 22) > 0.1  # [B, 1, 1, M]: True where a key is real
    padding[..., 0] = True
    for dtype in (torch.float32, torch.bfloat16):
        query, keys, values = (torch.randn(128, 4, length, 64, dtype=dtype, requires_grad=True) for length in (20, 22, 22))
        grad = torch.randn(128, 4, 20, 64, dtype=dtype)
        def attention_step(function: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
            def step() -> torch.Tensor:
                query.grad = keys.grad = values.grad = None
                context = function()
                context.backward(grad)
                return torch.cat([context.detach().flatten(), query.grad.flatten()])
            return step
        name = "float32" if dtype == torch.float32 else "bfloat16"
        compare(f"attention [128, 4, 20, 22, 64] {name}, fwd + bwd",
                attention_step(lambda: F.scaled_dot_product_attention(query, keys, values, attn_mask=padding)),
                attention_step(lambda: scaled_dot_product(query, keys, values, padding)[0]), args.repeats)


if __name__ == "__main__":
    main()
