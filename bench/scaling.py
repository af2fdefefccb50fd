"""Does the time per epoch grow linearly with the data? One training epoch at several sizes.

    python bench/scaling.py [--sizes 10000,20000,50000,100000] [--preset lstm-attention]
        [--set KEY=VALUE ...] [--json FILE]

For each size N the built-in NL -> Python generator makes N training pairs (the same seed, so a
larger set contains every template family in the same proportions), the model is built from the
same seed, and one epoch is trained exactly as ``seq2seq train`` trains it (bucketed batches, teacher
forcing, clipping, Adam). The epoch's training time excludes validation, which does not depend on
N. The table gives seconds per epoch, microseconds per target token and per pair, their ratio to
the smallest size, and a least-squares line ``seconds = a + b * pairs`` with its R^2: linear
scaling means a flat time per token and an R^2 near 1. Peak resident memory is the process's
high-water mark after each size (sizes run from small to large, so it is the largest size's).

Run it on an otherwise idle machine: the ratios are what matter, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import sys
import time
from pathlib import Path

import torch

from seq2seq.compare import COMPARE_DEFAULTS
from seq2seq.config import build_config
from seq2seq.cpu_memory import keep_freed_memory
from seq2seq.data.corpus import build_corpus
from seq2seq.devices import resolve_device
from seq2seq.models.build import build_model, count_parameters
from seq2seq.training.trainer import Trainer, seed_everything


def one_epoch(size: int, *, preset: str, overrides: list[str]) -> dict:
    config = build_config(preset=preset, overrides=[
        *COMPARE_DEFAULTS, f"data.builtin_train_size={size}", "train.epochs=1", *overrides,
    ])
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)
    started = time.perf_counter()
    corpus = build_corpus(config.data, config.vocab)
    data_seconds = time.perf_counter() - started
    model = build_model(config.model, src_vocab_size=len(corpus.src_vocab), tgt_vocab_size=len(corpus.tgt_vocab))
    trainer = Trainer(model=model, config=config.train, pad_index=0, device=resolve_device(config.train.device))
    result = trainer.fit(corpus.encoded["train"], corpus.encoded["valid"])
    epoch = result.history[0]
    return {
        "pairs": len(corpus.encoded["train"]),
        "target_tokens": epoch.train_tokens,
        "epoch_seconds": epoch.seconds,
        "data_seconds": data_seconds,
        "parameters": count_parameters(model),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``: (a, b, R^2)."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    a = mean_y - b * mean_x
    total = sum((y - mean_y) ** 2 for y in ys)
    residual = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys))
    return a, b, 1 - residual / total if total else 1.0


def table(rows: list[dict]) -> str:
    base = rows[0]
    base_per_token = base["epoch_seconds"] / base["target_tokens"]
    lines = [
        "| pairs | parameters | target tokens | s / epoch | µs / target token | µs / pair | per token vs smallest | data build s | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        per_token = row["epoch_seconds"] / row["target_tokens"]
        lines.append(
            f"| {row['pairs']:,} | {row['parameters']:,} | {row['target_tokens']:,} | {row['epoch_seconds']:.1f} | {1e6 * per_token:.1f} | "
            f"{1e6 * row['epoch_seconds'] / row['pairs']:.1f} | {per_token / base_per_token:.2f}x | "
            f"{row['data_seconds']:.1f} | {row['peak_rss_mib']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,20000,50000,100000", help="comma-separated numbers of training pairs")
    parser.add_argument("--preset", default="lstm-attention")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (on top of seq2seq compare's defaults)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the seq2seq command does (seq2seq.cpu_memory)
    print("command:", shlex.join(["python", "bench/scaling.py", *(argv if argv is not None else sys.argv[1:])]), flush=True)
    try:
        sizes = sorted({int(part) for part in args.sizes.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: expected comma-separated integers, e.g. 10000,100000")
    if len(sizes) < 2 or sizes[0] < 10:
        parser.error("--sizes: give at least two different sizes of at least 10 pairs")

    rows = []
    for size in sizes:
        rows.append(one_epoch(size, preset=args.preset, overrides=args.overrides))
        row = rows[-1]
        print(f"{row['pairs']:,} pairs: {row['epoch_seconds']:.1f} s, {row['target_tokens']:,} target tokens", flush=True)
    a, b, r2 = fit_line([r["pairs"] for r in rows], [r["epoch_seconds"] for r in rows])
    print()
    print(f"preset {args.preset} with seq2seq compare's defaults, {rows[0]['threads']} threads")
    print(table(rows))
    print(f"\nleast squares: seconds = {a:.2f} + {1e3 * b:.3f} ms x pairs (R^2 = {r2:.4f})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "fit": {"a": a, "b": b, "r2": r2}, "argv": argv or sys.argv[1:]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
