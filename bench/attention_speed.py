"""Training speed of attention variants relative to a reference preset, in alternating windows.

    python bench/attention_speed.py [--presets lstm-luong-dot,lstm-multihead,...] [--reference lstm-attention]
        [--rounds 3] [--batches 20] [--warmup 3] [--set KEY=VALUE ...]

Every preset is built at the compare budget (``seq2seq compare``'s sizes: embeddings 64, hidden 128,
attention 128; any ``--set`` on top) on the same data and batches, and trained as the trainer does
(teacher forcing from the config, loss over non-padding tokens, clipping, Adam). Each round times
``--batches`` steps of the reference, then ``--batches`` of each preset, alternating, so that the
machine's drift falls on both sides of every ratio; the report gives each preset's median target
tokens/s and the median and range of its ratio to the reference's window of the same round. A
benchmark, not a test: run it on an otherwise idle machine and read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import torch

from seq2seq.compare import COMPARE_DEFAULTS
from seq2seq.config import build_config
from seq2seq.data.batching import bucketed_batches
from seq2seq.data.corpus import build_corpus
from seq2seq.models.build import build_model, count_parameters
from seq2seq.training.loss import sequence_cross_entropy
from seq2seq.training.seeding import seed_everything

VARIANTS = "lstm-luong-dot,lstm-luong-general,lstm-luong-concat,lstm-local-p,lstm-multihead,lstm-attention-coverage"


class Trainee:
    """One preset's model, optimizer and batches, timed a window at a time."""

    def __init__(self, preset: str, overrides: list[str], corpus, batches: list) -> None:
        self.preset = preset
        self.config = build_config(preset=preset, overrides=[*COMPARE_DEFAULTS, *overrides])
        seed_everything(self.config.train.seed)
        self.model = build_model(self.config.model, src_vocab_size=len(corpus.src_vocab),
                                 tgt_vocab_size=len(corpus.tgt_vocab)).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.train.learning_rate)
        self.batches = batches
        self.windows: list[float] = []  # target tokens/s of each timed window

    def train(self, batches: list) -> int:
        tokens = 0
        for batch in batches:
            self.optimizer.zero_grad(set_to_none=True)
            logits, _ = self.model(batch.src, batch.src_lengths, batch.src_mask, batch.tgt_input,
                                   teacher_forcing=self.config.train.teacher_forcing.probability(0))
            loss_sum, n = sequence_cross_entropy(logits, batch.tgt_output, pad_index=0)
            (loss_sum / n).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.clip_norm)
            self.optimizer.step()
            tokens += n
        return tokens

    def window(self, batches: list) -> None:
        started = time.perf_counter()
        tokens = self.train(batches)
        self.windows.append(tokens / (time.perf_counter() - started))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=VARIANTS)
    parser.add_argument("--reference", default="lstm-attention")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.batches < 1:
        parser.error("--rounds and --batches must be at least 1")
    print("command:", shlex.join(["python", "bench/attention_speed.py", *(argv if argv is not None else sys.argv[1:])]))

    base = build_config(preset=args.reference, overrides=[*COMPARE_DEFAULTS, *args.overrides])
    if base.train.threads:
        torch.set_num_threads(base.train.threads)
    corpus = build_corpus(base.data, base.vocab)
    generator = torch.Generator().manual_seed(base.train.seed)
    batches = list(bucketed_batches(corpus.encoded["train"], batch_size=base.train.batch_size, pad_index=0,
                                    shuffle=True, generator=generator))[: args.warmup + args.batches]
    if len(batches) < args.warmup + args.batches:
        parser.error(f"the training data give {len(batches)} batches; --warmup + --batches need {args.warmup + args.batches}")
    names = [args.reference, *[name for name in args.presets.split(",") if name and name != args.reference]]
    trainees = [Trainee(name, args.overrides, corpus, batches) for name in names]
    for trainee in trainees:
        trainee.train(batches[: args.warmup])
    for _ in range(args.rounds):
        for trainee in trainees:  # the reference first, then each variant: alternating windows
            trainee.window(batches[args.warmup :])
    reference = trainees[0]
    print(f"threads {torch.get_num_threads()}; {args.rounds} rounds of {args.batches} batches of {base.train.batch_size}")
    print(f"| preset | parameters | target tokens/s (median) | / {args.reference} (median of rounds) | range |")
    print("|---|---:|---:|---:|---|")
    for trainee in trainees:
        ratios = [mine / theirs for mine, theirs in zip(trainee.windows, reference.windows)]
        print(f"| {trainee.preset} | {count_parameters(trainee.model):,} | {statistics.median(trainee.windows):,.0f} | "
              f"{statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
