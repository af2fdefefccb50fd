"""Decoding speed of a Transformer run on its CPU runtimes: torch, onnx, ctranslate2 (float32 and int8).

    python bench/transformer_runtimes.py RUN [--split valid] [--beam 1] [--batch-size 64] [--rounds 3]
        [--threads 1] [--limit N] [--runtimes torch,onnx,ctranslate2,ctranslate2-int8]

RUN must be a transformer run exported both ways (``seq2seq export RUN --format onnx`` and
``--format ctranslate2``). Each round decodes the split's sources once with every runtime, in
turn, so that the machine's drift falls on all of them; the report gives each runtime's median
sentences/s, its ratio to torch's, how many outputs equal torch's and, where the run's task has
one, the published metric of its outputs (sacreBLEU for Multi30k). A benchmark, not a test:
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
from seq2seq.evaluation.evaluate import task_metric_for, task_scores
from seq2seq.pipeline import run_corpus
from seq2seq.translator import Generation, Translator

RUNTIMES = ("torch", "onnx", "ctranslate2", "ctranslate2-int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per decoding batch (1: one at a time)")
    parser.add_argument("--limit", type=int, help="only the first N sentences of the split")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated, torch first (the reference)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (onnxruntime and CTranslate2 use 1 here)")
    args = parser.parse_args()
    runtimes = args.runtimes.split(",")
    if runtimes[0] != "torch" or not set(runtimes) <= set(RUNTIMES):
        parser.error(f"--runtimes: torch first, then any of {', '.join(RUNTIMES[1:])}")
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    corpus = run_corpus(run)
    examples = corpus.examples[args.split][: args.limit]
    sources = [example.src for example in examples]
    translators = {name: Translator.from_run_dir(args.run, runtime=name.removesuffix("-int8"),
                                                 quantize="int8" if name.endswith("-int8") else None)
                   for name in runtimes}
    seconds: dict[str, list[float]] = {name: [] for name in runtimes}
    outputs: dict[str, list[Generation]] = {}
    for _ in range(args.rounds):
        for name, translator in translators.items():
            started = time.perf_counter()
            # no length penalty, whatever the run's config says: CTranslate2's search has none of ours
            found = translator.generate(sources, beam_size=args.beam, batch_size=args.batch_size, length_penalty="none")
            seconds[name].append(time.perf_counter() - started)
            outputs[name] = found
    data = run.config.data
    task = task_metric_for(data.format, has_label_map=data.label_map is not None)
    print(f"$ python bench/transformer_runtimes.py {shlex.join(sys.argv[1:])}")
    print(f"{len(sources)} sentences of {args.split}, beam {args.beam}, batch {args.batch_size}, "
          f"{run.parameters:,} parameters, median of {args.rounds} rounds")
    base = len(sources) / statistics.median(seconds["torch"])
    for name in runtimes:
        rate = len(sources) / statistics.median(seconds[name])
        same = sum(a.tokens == b.tokens for a, b in zip(outputs[name], outputs["torch"]))
        quality = ""
        if task is not None:
            scores = task_scores(task, [g.text for g in outputs[name]], [example.tgt for example in examples],
                                 lowercase=data.lowercase_tgt)
            quality = "  " + "  ".join(f"{key} {value:.2f}" for key, value in scores.items() if isinstance(value, float))
        print(f"  {name:17s} {rate:8.1f} sentences/s  x{rate / base:4.2f} of torch  same outputs as torch: "
              f"{same}/{len(sources)} ({same / len(sources):.1%}){quality}")


if __name__ == "__main__":
    main()
