"""Decoding speed of a Transformer run on its three CPU runtimes: torch, onnx, ctranslate2.

    python bench/transformer_runtimes.py RUN [--split valid] [--beam 1] [--rounds 3] [--threads 1]

RUN must be a transformer run exported both ways (``seq2seq export RUN --format onnx`` and
``--format ctranslate2``). Each round decodes the split's sources once with every runtime, in
turn, so that the machine's drift falls on all of them; the report gives each runtime's median
sentences/s, its ratio to torch's, and how many outputs equal torch's. A benchmark, not a test:
read the ratios on an otherwise idle machine, not the seconds.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from seq2seq.checkpoint import load_run
from seq2seq.pipeline import run_corpus
from seq2seq.translator import Translator

RUNTIMES = ("torch", "onnx", "ctranslate2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (onnxruntime and CTranslate2 use 1 here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    corpus = run_corpus(run)
    sources = [example.src for example in corpus.examples[args.split]]
    translators = {name: Translator.from_run_dir(args.run, runtime=name) for name in RUNTIMES}
    seconds: dict[str, list[float]] = {name: [] for name in RUNTIMES}
    outputs: dict[str, list[list[str]]] = {}
    for _ in range(args.rounds):
        for name, translator in translators.items():
            started = time.perf_counter()
            found = translator.generate(sources, beam_size=args.beam)
            seconds[name].append(time.perf_counter() - started)
            outputs[name] = [g.tokens for g in found]
    print(f"$ python bench/transformer_runtimes.py {shlex.join(sys.argv[1:])}")
    print(f"{len(sources)} sentences of {args.split}, beam {args.beam}, {run.parameters:,} parameters, "
          f"median of {args.rounds} rounds")
    base = len(sources) / statistics.median(seconds["torch"])
    for name in RUNTIMES:
        rate = len(sources) / statistics.median(seconds[name])
        same = sum(a == b for a, b in zip(outputs[name], outputs["torch"]))
        print(f"  {name:12s} {rate:8.1f} sentences/s  x{rate / base:4.2f} of torch  same outputs as torch: "
              f"{same}/{len(sources)}")


if __name__ == "__main__":
    main()
