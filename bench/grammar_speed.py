"""Decoding speed of ``--constrain grammar`` (and ``python``) against unconstrained search, same run.

    python bench/grammar_speed.py RUN [--split test] [--beams 1,5] [--rounds 3] [--limit 200]

For each beam size, each round decodes the split's first ``--limit`` inputs without a constraint,
then with the bracket constraint, then with the grammar, one after the other (one thread, one
batch at a time), so that the machine's drift falls on every side of the ratios. The report gives
each setting's median sentences/s and its median ratio to the unconstrained search of the same
round, with the parse rate of its outputs. The parser's verdict cache is cleared before every
timed grammar window, so a round does not profit from the one before. A benchmark, not a test:
read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from seq2seq.data.python_syntax import _accepts, viable_prefix
from seq2seq.pipeline import run_corpus
from seq2seq.translator import Translator

SETTINGS = ("none", "python", "grammar")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    translator = Translator.from_run_dir(Path(args.run))
    corpus = run_corpus(translator.run)
    sources = [example.src for example in corpus.examples[args.split][: args.limit]]
    print("command: python bench/grammar_speed.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(f"{len(sources)} inputs of {args.split}, 1 thread, {torch.__version__}\n")
    print("| beam | constraint | sentences/s (median) | ratio to none (median, range) | parse rate |")
    print("|---|---|---|---|---|")
    for beam in (int(b) for b in args.beams.split(",")):
        speed: dict[str, list[float]] = {name: [] for name in SETTINGS}
        parse_rates: dict[str, float] = {}
        for _ in range(args.rounds):
            for name in SETTINGS:
                viable_prefix.cache_clear()
                _accepts.cache_clear()
                started = time.perf_counter()
                found = translator.generate(sources, beam_size=beam, constrain=name)
                speed[name].append(len(sources) / (time.perf_counter() - started))
                parse_rates[name] = sum(bool(g.parses) for g in found) / len(found)
        for name in SETTINGS:
            ratios = [s / n for s, n in zip(speed[name], speed["none"])]
            print(f"| {beam} | {name} | {statistics.median(speed[name]):.1f} | {statistics.median(ratios):.2f} "
                  f"({min(ratios):.2f}-{max(ratios):.2f}) | {parse_rates[name]:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
