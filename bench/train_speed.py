"""Training speed of one configuration: target tokens/s and where a step's time goes.

    python bench/train_speed.py configs/multi30k/bigru-attention.yaml [--set KEY=VALUE ...]
        [--batches 40] [--warmup 5] [--sort target|source] [--largest] [--adam fused|default] [--compile]
        [--profile N]

Builds the configuration's data and model, then runs ``--warmup`` + ``--batches`` training steps
exactly as the trainer does (teacher forcing from the config, loss over non-padding tokens, clip,
Adam) and prints target tokens/s over the timed batches plus the mean milliseconds per phase
(encode, decoder loop, output layer, loss, backward, clip, optimizer). A Transformer
(``configs/multi30k/transformer.yaml``) runs its decoder over the whole target in one call, so
its "decoder loop" includes the output layer. ``--sort source`` and
``--adam default`` undo two of the speed changes (batches sorted by target length; fused Adam) so
their effect can be measured in the same session; ``--set model.decoder.readout_size=null``
removes the readout layer; ``--set train.precision=bf16`` times bf16 autocast;
``SEQ2SEQ_MALLOC=system`` in the environment keeps glibc's malloc settings (seq2seq.cpu_memory),
as the trainer did before it kept freed memory for reuse. The process's peak RSS comes last;
``--largest`` trains on the largest batches (source x target positions) instead of the first
shuffled ones, so that the peak is the one a whole epoch reaches. Run one
configuration at a time on an otherwise idle machine and compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seq2seq.config import RunConfig, build_config, load_config_file
from seq2seq.cpu_memory import keep_freed_memory
from seq2seq.data.batching import Batch, bucketed_batches
from seq2seq.data.corpus import Corpus, build_corpus
from seq2seq.devices import check_precision
from seq2seq.models.build import build_model, count_parameters
from seq2seq.training.loss import sequence_cross_entropy
from seq2seq.training.seeding import seed_everything

PHASES = ("encode", "decoder loop", "output layer", "loss", "backward", "clip", "optimizer")


@dataclass
class Setup:
    """What a training step needs: the configuration, its corpus, model, Adam and training batches."""

    config: RunConfig
    corpus: Corpus
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: list[Batch]  # shuffled with the config's seed, bucketed, all of the training split


def build(config: RunConfig, *, adam: str = "fused", sort: str = "target") -> Setup:
    """The configuration's corpus, model (seeded as the trainer seeds it), Adam with the config's
    betas and its shuffled training batches, at the config's thread count. ``adam="default"`` and
    ``sort="source"`` undo two speed changes (fused Adam; batches sorted by target length)."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)
    corpus = build_corpus(config.data, config.vocab)
    model = build_model(config.model, src_vocab_size=len(corpus.src_vocab), tgt_vocab_size=len(corpus.tgt_vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate,
                                 betas=tuple(config.train.adam_betas), fused=adam == "fused")
    generator = torch.Generator().manual_seed(config.train.seed)
    batches = list(bucketed_batches(corpus.encoded["train"], batch_size=config.train.batch_size, pad_index=0,
                                    shuffle=True, generator=generator, sort_by=sort))
    return Setup(config, corpus, model, optimizer, batches)


def train_step(setup: Setup, batch: Batch) -> tuple[list[float], int]:
    """One training step on ``batch`` as the trainer takes it (the config's teacher forcing, label-
    smoothed loss over the non-padding tokens, backward, clip, Adam; bf16 autocast if the config asks
    for it): the ``time.perf_counter()`` marks around the PHASES, and the target tokens."""
    config, model, optimizer, decoder = setup.config, setup.model, setup.optimizer, setup.model.decoder
    marks = [time.perf_counter()]
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.train.precision == "bf16"):
        memory, state = model.encode(batch.src, batch.src_lengths, batch.src_mask)
        marks.append(time.perf_counter())
        teacher_forcing = config.train.teacher_forcing.probability(0)
        if config.model.architecture == "transformer":  # all target positions in one call, the output layer with them
            logits, _ = decoder(batch.tgt_input, memory)
            marks.append(time.perf_counter())
        elif decoder.attention is None and teacher_forcing >= 1.0:  # forward()'s one call over the target
            logits, _ = decoder(batch.tgt_input, state, memory, teacher_forcing=teacher_forcing)
            marks.append(time.perf_counter())  # the output layer is timed with the loop here
        else:  # forward()'s loop over the steps, then the output layer apart
            features, embedded, attention = decoder.unroll(batch.tgt_input, state, memory,
                                                           teacher_forcing=teacher_forcing)
            marks.append(time.perf_counter())
            logits = decoder._scores(decoder.dropout(features), embedded, attention, memory)
        marks.append(time.perf_counter())
        loss_sum, n = sequence_cross_entropy(logits, batch.tgt_output, pad_index=0,
                                             label_smoothing=config.train.label_smoothing)
    marks.append(time.perf_counter())
    (loss_sum / n).backward()
    marks.append(time.perf_counter())
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.clip_norm)
    marks.append(time.perf_counter())
    optimizer.step()
    marks.append(time.perf_counter())
    return marks, n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sort", choices=("target", "source"), default="target")
    parser.add_argument("--largest", action="store_true",
                        help="train on the largest batches (source x target positions), where memory peaks")
    parser.add_argument("--adam", choices=("fused", "default"), default="fused")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the decoder step (inductor, dynamic shapes) before timing")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after timing, run N more batches under torch.profiler and print the top operators by self CPU "
                             "time, then the matrix products grouped by shape with their GFLOP/s inside the step")
    parser.add_argument("--flop-batches", type=int, default=3, help="batches whose FLOPs are counted (after the timed ones)")
    args = parser.parse_args(argv)
    print("command:", shlex.join(["python", "bench/train_speed.py", *(argv if argv is not None else sys.argv[1:])]))

    print(f"malloc keeps freed memory: {keep_freed_memory()}")  # as `seq2seq train` does
    config = build_config(base=load_config_file(args.config), overrides=args.overrides, source=str(args.config))
    transformer = config.model.architecture == "transformer"
    if config.model.decoder.copy or config.model.transformer.copy:  # config validation allows the architecture's own key only
        key = "model.transformer.copy" if transformer else "model.decoder.copy"
        parser.error(f"train_speed.py times models without copy: add --set {key}=false")
    setup = build(config, adam=args.adam, sort=args.sort)
    model, batches = setup.model, setup.batches

    def positions(batch) -> int:  # source x target positions: what activation memory grows with
        return batch.src.numel() * batch.tgt_input.size(1)

    if args.largest:
        batches.sort(key=positions, reverse=True)
    batches = batches[: args.warmup + args.batches]
    real = sum(int((b.tgt_output != 0).sum()) for b in batches)
    padded = sum(b.tgt_output.numel() for b in batches)
    print(f"parameters {count_parameters(model):,}; threads {torch.get_num_threads()}; precision {config.train.precision}; "
          f"target padding {1 - real / padded:.1%} of the positions")

    decoder = model.decoder
    if args.compile and transformer:
        parser.error("--compile compiles the RNN decoder's step; the Transformer has none")
    if args.compile:
        # The per-step function is compiled once for dynamic batch and source lengths; the warm-up
        # batches absorb the compilation. The encoder is left alone: packing by data-dependent lengths
        # makes it recompile for every batch.
        decoder._step_features = torch.compile(decoder._step_features, dynamic=True)  # what unroll() calls
    check_precision(config.train.precision, torch.device("cpu"))  # train.precision=bf16: bf16 autocast, as the trainer
    totals = dict.fromkeys(PHASES, 0.0)
    tokens = 0
    model.train()
    for number, batch in enumerate(batches):
        if number == args.warmup:
            totals, tokens = dict.fromkeys(PHASES, 0.0), 0
        marks, n = train_step(setup, batch)
        for phase, start, end in zip(PHASES, marks, marks[1:]):
            totals[phase] += end - start
        tokens += n
    seconds = sum(totals.values())
    tokens_per_s = tokens / seconds
    print(f"target tokens/s {tokens_per_s:,.0f} over {args.batches} batches ({1000 * seconds / args.batches:.0f} ms/batch)")
    print("  " + ", ".join(f"{phase} {1000 * value / args.batches:.0f} ms" for phase, value in totals.items()))
    largest = max(batches, key=positions)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
    print(f"peak RSS {peak:,.0f} MiB, data and model building included (largest batch: source "
          f"{tuple(largest.src.shape)}, target {tuple(largest.tgt_input.shape)})")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
            for batch in batches[args.warmup : args.warmup + args.profile]:
                train_step(setup, batch)
        print(f"profile over {args.profile} batches (self CPU time; profiling slows every operator a little):")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=48))
        print(product_table(profiler.events()))
    if args.compile or not args.flop_batches:  # compiled graphs hide their matrix products from the counter
        return 0
    flops_per_token = count_step_flops(model, batches[args.warmup : args.warmup + args.flop_batches], config)
    parameters = count_parameters(model)
    print(f"achieved {flops_per_token * tokens_per_s / 1e9:.1f} GFLOP/s counted ({flops_per_token / 1e6:.1f} MFLOP per target "
          f"token: matrix products of forward and backward, torch.utils.flop_counter over {args.flop_batches} batches); "
          f"{6 * parameters * tokens_per_s / 1e9:.1f} GFLOP/s by the 6 x parameters per token estimate")
    return 0


def product_table(events, rows: int = 15) -> str:
    """The matrix products of profiled ``events`` grouped by operator and inner shape (K, N of [M, K] x
    [K, N]; M, the positions of a batch, varies), with their share of the self CPU time and their
    GFLOP/s inside the step: a shape whose rate falls far below the others' is one a layout change
    might speed up (as models/linear.py did for the output layer)."""
    groups: dict[tuple[str, int, int], list[float]] = {}
    total = 0.0
    for event in events:
        total += event.self_cpu_time_total
        shapes = event.input_shapes
        if event.name in ("aten::mm", "aten::addmm") and shapes:
            first, second = (shapes[0], shapes[1]) if event.name == "aten::mm" else (shapes[1], shapes[2])
            if len(first) != 2 or len(second) != 2:
                continue
            (m, k), n = first, second[1]
            flops = 2 * m * k * n
        elif event.name == "aten::bmm" and shapes and len(shapes[0]) == 3 and len(shapes[1]) == 3:
            (b, m, k), n = shapes[0], shapes[1][2]
            flops = 2 * b * m * k * n
        else:
            continue
        group = groups.setdefault((event.name.removeprefix("aten::"), k, n), [0.0, 0.0, 0])
        group[0] += event.self_cpu_time_total  # microseconds
        group[1] += flops
        group[2] += 1
    lines = [f"matrix products by shape ([M, K] x [K, N], M varying; the top {rows} by time):",
             f"  {'operator':8s} {'K':>6s} {'N':>6s} {'calls':>6s} {'ms':>9s} {'share':>6s} {'GFLOP/s':>8s}"]
    for (name, k, n), (micros, flops, calls) in sorted(groups.items(), key=lambda item: -item[1][0])[:rows]:
        rate = flops / micros / 1e3 if micros else 0.0
        lines.append(f"  {name:8s} {k:6d} {n:6d} {calls:6d} {micros / 1e3:9.1f} {micros / max(total, 1e-9):6.1%} {rate:8.1f}")
    return "\n".join(lines)


def count_step_flops(model: torch.nn.Module, batches: list, config) -> float:
    """Matrix-product FLOPs of forward + backward per target token, counted on ``batches`` with
    ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, as FLOP/s figures usually count;
    element-wise work is left out). The weights are not updated."""
    from torch.utils.flop_counter import FlopCounterMode

    total, tokens = 0, 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        with FlopCounterMode(display=False) as counter:
            logits, _ = model(batch.src, batch.src_lengths, batch.src_mask, batch.tgt_input, teacher_forcing=config.train.teacher_forcing.probability(0))
            loss_sum, n = sequence_cross_entropy(logits, batch.tgt_output, pad_index=0, label_smoothing=config.train.label_smoothing)
            (loss_sum / n).backward()
        total += counter.get_total_flops()
        tokens += n
    model.zero_grad(set_to_none=True)
    return total / max(tokens, 1)


if __name__ == "__main__":
    raise SystemExit(main())
