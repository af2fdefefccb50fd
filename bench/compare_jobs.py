"""Does ``seq2seq compare --jobs 2`` finish a comparison sooner than the default, one run after another?

    python bench/compare_jobs.py [--presets rnn,lstm,lstm-attention] [--jobs 2] [--rounds 2]
        [--set KEY=VALUE ...] [--work DIR] [--json FILE]

Each round runs the same ``seq2seq compare`` twice, in separate processes and in alternating order:
once as the README runs it (the runs one after another, each with torch's default threads) and once
with ``--jobs N`` (N runs at a time, each with threads / N). It prints the wall time of each, from
the command's start to its report (training, evaluation and figures included), and their ratio per
round. ``--set`` shrinks the budget for a quicker reading (e.g. ``--set data.builtin_train_size=5000``).
The two tables differ in the last digits: a different thread count rounds differently in training.

Run it on an otherwise idle machine: the ratio is what matters, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_compare(presets: str, jobs: int, overrides: list[str], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "seq2seq", "compare", "--presets", presets, "--no-progress", "--out", str(out),
               *(f"--set={o}" for o in overrides), *(["--jobs", str(jobs)] if jobs > 1 else [])]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="rnn,lstm,lstm-attention")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    parser.add_argument("--work", type=Path, default=Path("/tmp/seq2seq-compare-jobs"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print("reproduce: python bench/compare_jobs.py " + shlex.join(sys.argv[1:]))
    print(f"cores: {os.cpu_count()}")
    rounds = []
    for index in range(args.rounds):
        order = [1, args.jobs] if index % 2 == 0 else [args.jobs, 1]
        seconds = {jobs: run_compare(args.presets, jobs, args.overrides, args.work / f"jobs{jobs}") for jobs in order}
        rounds.append({"one_after_another_s": seconds[1], "jobs_s": seconds[args.jobs], "speedup": seconds[1] / seconds[args.jobs]})
        print(f"round {index + 1}: one after another {seconds[1]:.1f} s, --jobs {args.jobs} {seconds[args.jobs]:.1f} s, "
              f"speed-up {rounds[-1]['speedup']:.2f}x", flush=True)
    print(f"median speed-up of --jobs {args.jobs}: {statistics.median(r['speedup'] for r in rounds):.2f}x over {len(rounds)} rounds")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
