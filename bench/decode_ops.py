"""The tensor work of decoding, counted and timed: PyTorch operators, their time, and Python calls per search.

    python bench/decode_ops.py RUN [--split test] [--limit 64] [--beam 1] [--repeat 3] [--batch-size N]
        [--threads 1] [--json out.json]

Decodes the first ``--limit`` sources of the run's ``--split`` (as one batch unless ``--batch-size``),
with one worker and ``--threads`` threads, once to warm up, then ``--repeat`` times under
``torch.profiler`` (every operator call, by name, and its self CPU time), ``--repeat`` times
unprofiled (the search's wall time) and once under ``cProfile`` (Python function calls). Unlike a
timing, the counts do not depend on how busy the machine is, so two versions of the code can be
compared on a shared machine: the same operator counts mean the same tensor work. The operators'
self time (per operator, the median over the profiled searches) then says whether the same work
got slower, e.g. through a tensor's memory layout; it is a timing, so it is noisy, but it leaves out
the Python between the operators, which a whole search's time includes. ``bench/against_commit.py
--ops`` runs it with each tree's package (it uses only ``load_run`` and ``decode_sources``, which
older commits have too).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import pstats
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from seq2seq.checkpoint import load_run
from seq2seq.decoding.search import decode_sources


def test_sources(run, split: str) -> list[list[int]]:
    """The run's encoded ``split`` sources, through whichever corpus builder this tree has."""
    try:
        from seq2seq.pipeline import run_corpus
    except ImportError:  # before the pipeline module had it
        from seq2seq.data.corpus import build_corpus

        corpus = build_corpus(run.config.data, run.config.vocab, vocabs=(run.src_vocab, run.tgt_vocab),
                              subword_models=run.subword_models)
    else:
        corpus = run_corpus(run)
    if not corpus.encoded.get(split):
        raise SystemExit(f"the run's data has no {split!r} split")
    return [pair.src for pair in corpus.encoded[split]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained run directory (no copy model)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=64, help="sources decoded (one batch unless --batch-size)")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3,
                        help="profiled searches (operator times are their median) and timed searches (wall time: their median)")
    parser.add_argument("--batch-size", type=int, help="sources per batch (default: all of them in one)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the counts and times here")
    args = parser.parse_args()
    print("command:", shlex.join(["python", "bench/decode_ops.py", *sys.argv[1:]]), file=sys.stderr)
    if args.repeat < 1 or args.threads < 1 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--repeat, --threads and --batch-size must be at least 1")
    torch.set_num_threads(args.threads)
    run = load_run(args.run, device="cpu")
    if run.model.copies:
        raise SystemExit(f"{args.run}: a copy model needs copy sources; count a run without copy")
    sources = test_sources(run, args.split)[: args.limit]
    vocab = run.tgt_vocab
    common = dict(sos_index=vocab.sos_index, eos_index=vocab.eos_index, pad_index=vocab.pad_index,
                  max_len=run.config.decode.max_len, device="cpu", workers=1, beam_size=args.beam,
                  batch_size=args.batch_size or len(sources))
    decode_sources(run.model, sources, **common)  # warm-up
    operators: collections.Counter | None = None
    self_ms_runs: dict[str, list[float]] = collections.defaultdict(list)  # operator -> its time in each profiled search
    for _ in range(args.repeat):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            decode_sources(run.model, sources, **common)
        counted = collections.Counter(event.name for event in profiler.events())
        if operators is not None and counted != operators:
            raise SystemExit("the same search called different operators when repeated: is it deterministic?")
        operators = counted
        for average in profiler.key_averages():
            self_ms_runs[average.key].append(average.self_cpu_time_total / 1000)
    assert operators is not None
    median_ms = {name: statistics.median(times) for name, times in self_ms_runs.items()}
    wall_ms = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        decode_sources(run.model, sources, **common)
        wall_ms.append(1000 * (time.perf_counter() - start))
    python = cProfile.Profile()
    python.enable()
    decode_sources(run.model, sources, **common)
    python.disable()
    calls = pstats.Stats(python).total_calls
    result = {"operators": sum(operators.values()), "python_calls": calls, "by_operator": dict(operators),
              "self_ms": sum(median_ms.values()), "self_ms_by_operator": median_ms, "wall_ms": statistics.median(wall_ms)}
    print(f"{len(sources)} sources, beam {args.beam}, batch {common['batch_size']}, {args.threads} thread(s): "
          f"{result['operators']:,} operator calls, "
          f"{calls:,} Python calls, {result['self_ms']:,.0f} ms in the operators (profiled), "
          f"{result['wall_ms']:,.0f} ms a search (unprofiled)", file=sys.stderr)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
