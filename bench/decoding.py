"""Decoding speed: greedy vs beam 5 vs beam 10, at batch 64 and batch 1, on trained runs.

    python bench/decoding.py RUN [RUN ...] [--split test] [--batch1-limit 200] [--json out.json]
                             [--runtimes torch,int8,onnx] [--settings greedy,beam5]

For each run directory it decodes the run's own test split (the built-in task's 1,000 test
pairs, Multi30k's test2016, ...) with every setting and prints sentences/s, generated tokens/s
and the cost of beam search relative to greedy decoding at the same batch size (the issue's
goal: beam 5 at most 3x greedy at batch 64). Ratios, not seconds, are the result: the
machines are shared and noisy. Settings run one after another, never in parallel, each once
after a short warm-up; batch 1 decodes only the first ``--batch1-limit`` sentences.
``--runtimes`` decodes each run with the float32 torch model, its int8 dynamic quantization and
its ONNX export through onnxruntime (``seq2seq export RUN`` first), with the same search code.

Train the runs first, e.g. (the figures in docs/BENCHMARKS.md used these):

    seq2seq train --preset lstm-attention --set train.epochs=3 --out runs/bench-builtin
    seq2seq train --preset lstm-attention --data ../shared/data/multi30k --set data.tgt_tokenizer=word \
        --set vocab.min_freq=2 --set train.epochs=3 --set decode.max_len=60 --out runs/bench-multi30k
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from seq2seq.checkpoint import load_run
from seq2seq.cpu_memory import keep_freed_memory
from seq2seq.data.batching import copy_encodings
from seq2seq.decoding.search import decode_sources, decode_workers
from seq2seq.pipeline import run_corpus

SETTINGS = {  # name -> beam size
    "greedy": 1,
    "beam5": 5,
    "beam10": 10,
}
RUNTIMES = ("torch", "int8", "onnx")


@dataclass
class Measurement:
    run: str
    runtime: str
    setting: str
    batch_size: int
    sentences: int
    seconds: float
    generated_tokens: int  # output tokens, <eos> included

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds


def measure(run_dir: Path, *, split: str, batch1_limit: int, runtime: str, settings: list[str],
            workers: int = 0) -> list[Measurement]:
    run = load_run(run_dir, device="cpu", quantize="int8" if runtime == "int8" else None,
                   runtime="onnx" if runtime == "onnx" else "torch")
    corpus = run_corpus(run)
    if not corpus.encoded.get(split):
        raise SystemExit(f"{run_dir}: the run's data has no {split!r} split")
    sources = [pair.src for pair in corpus.encoded[split]]
    copies = copy_encodings(corpus.encoded[split]) if run.model.copies else None
    vocab = run.tgt_vocab
    common = dict(sos_index=vocab.sos_index, eos_index=vocab.eos_index, pad_index=vocab.pad_index,
                  max_len=run.config.decode.max_len, device="cpu",
                  workers=decode_workers(workers, "cpu", model=run.model))

    def copy_ids(count: int) -> dict:
        return {} if copies is None else {"copy_sources": [copy.src for copy in copies[:count]]}

    decode_sources(run.model, sources[:64], beam_size=5, batch_size=64, **common, **copy_ids(64))  # warm-up
    measurements = []
    for batch_size, subset in ((64, sources), (1, sources[:batch1_limit])):
        for name in settings:
            beam = SETTINGS[name]
            started = time.perf_counter()
            found = decode_sources(run.model, subset, beam_size=beam, batch_size=batch_size, **common,
                                   **copy_ids(len(subset)))
            seconds = time.perf_counter() - started
            tokens = sum(len(alternatives[0].token_log_probs) for alternatives in found)
            measurements.append(Measurement(str(run_dir), runtime, name, batch_size, len(subset), seconds, tokens))
            print(f"  {run_dir}  {runtime:5s} {name:8s} batch {batch_size:3d}: {len(subset) / seconds:8.1f} sentences/s", file=sys.stderr)
    return measurements


def table(measurements: list[Measurement]) -> str:
    reference = {(m.run, m.setting, m.batch_size): m for m in measurements if m.runtime == "torch"}
    lines = [
        "| run | runtime | decoding | batch | sentences | sentences/s | tokens/s | speed vs torch fp32 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        base = reference.get((m.run, m.setting, m.batch_size))
        ratio = f"{m.sentences_per_s / base.sentences_per_s:.2f}x" if base else "-"
        lines.append(f"| {Path(m.run).name} | {m.runtime} | {m.setting} | {m.batch_size} | {m.sentences} "
                     f"| {m.sentences_per_s:,.1f} | {m.tokens_per_s:,.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="trained run directories")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch1-limit", type=int, default=200, help="sentences decoded one at a time")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--workers", type=int, default=0,
                        help="batches decoded at once, as decode.workers (default 0: automatic, 2 with 2+ threads; "
                             "onnx always 1)")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--runtimes", default="torch", help=f"comma-separated, of {', '.join(RUNTIMES)}")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    args = parser.parse_args()
    keep_freed_memory()  # as the seq2seq command does (seq2seq.cpu_memory)
    runtimes, settings = args.runtimes.split(","), args.settings.split(",")
    if unknown := [r for r in runtimes if r not in RUNTIMES] + [s for s in settings if s not in SETTINGS]:
        parser.error(f"unknown runtime or setting: {', '.join(unknown)}")
    torch.set_num_threads(args.threads)
    command = "python bench/decoding.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    measurements = [
        m for run_dir in args.runs for runtime in runtimes
        for m in measure(run_dir, split=args.split, batch1_limit=args.batch1_limit, runtime=runtime, settings=settings,
                         workers=args.workers)
    ]
    print(f"command: {command}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {decode_workers(args.workers, 'cpu')} batches at "
          f"once (onnx: 1), {platform.processor() or platform.machine()}")
    print(table(measurements))
    if args.json:
        args.json.write_text(json.dumps([{**asdict(m), "sentences_per_s": m.sentences_per_s,
                                          "tokens_per_s": m.tokens_per_s} for m in measurements], indent=2))


if __name__ == "__main__":
    main()
