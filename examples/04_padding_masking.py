"""Padding and masking: what goes wrong when the model does not know where a sentence ends.

Sentences in a batch have different lengths, but a tensor is a rectangle, so short
sentences are filled up with a ``<pad>`` token. Padding is bookkeeping, not data: a
sentence must get exactly the same result alone as in a batch with longer sentences.
The package makes sure of it in two places:

1. the encoder *packs* the batch with the true lengths (``pack_padded_sequence``), so the
   recurrent cell never reads a pad and the final state is the one after the last real word;
2. the attention *masks* the pads: their scores are set to -inf before the softmax, so they
   get weight exactly 0 (``scores.masked_fill(~mask, -inf)`` in ``models/attention.py``).

This script trains a small ``lstm-attention`` model on the built-in task, takes a short test
sentence, and runs it (a) alone and (b) padded, in a batch with the longest test sentence,
three ways: as the package does it (packing + mask), without the attention mask (all
positions marked real), and without either (the encoder also runs over the pads). It
measures the attention mass that lands on ``<pad>`` and the largest difference between the
logits of the sentence alone and in the batch, and decodes it greedily each way.

The figure: the sentence's attention in the padded batch with and without the mask
(``<pad>`` columns on the right), and the logit differences on a log scale.

    python examples/04_padding_masking.py --out docs/img/learn
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import new_model, parse_args, save_figure, small_config, train
from seq2seq.config import DataConfig, VocabConfig
from seq2seq.data.batching import Batch, collate
from seq2seq.data.corpus import Corpus, build_corpus
from seq2seq.data.vocab import PAD, Vocab
from seq2seq.decoding.greedy import greedy_decode
from seq2seq.models.seq2seq import Seq2Seq

FIGURE = "04_padding_masking.png"
SETTINGS = ("packing + mask (the package)", "no attention mask", "no mask, no packing")
EXACT_FLOOR = 1e-9  # a difference of exactly 0 still needs a bar on a log scale


@dataclass
class Outcome:
    setting: str
    pad_mass: float  # mean over output steps of the attention weight on <pad> positions
    max_logit_diff: float  # largest |logit alone - logit in the batch| over the sentence's target
    attention: np.ndarray  # [T, S] the sentence's attention in the padded batch
    output: str  # greedy decoding of the sentence in the padded batch


def inputs_for(batch: Batch, setting: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(lengths, mask) as each setting hands them to the model; pads are in the ids either way."""
    full_lengths = torch.full_like(batch.src_lengths, batch.src.size(1))
    all_real = torch.ones_like(batch.src_mask)
    if setting == SETTINGS[0]:
        return batch.src_lengths, batch.src_mask
    if setting == SETTINGS[1]:
        return batch.src_lengths, all_real
    return full_lengths, all_real


@torch.no_grad()
def run(model: Seq2Seq, batch: Batch, setting: str, tgt_vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Teacher-forced logits [B, T, V] and attention [B, T, S], and row 0 decoded greedily."""
    lengths, mask = inputs_for(batch, setting)
    logits, attention = model(batch.src, lengths, mask, batch.tgt_input)
    found = greedy_decode(model, batch.src, lengths, mask, sos_index=Vocab.sos_index, eos_index=Vocab.eos_index, max_len=60)
    return logits, attention, " ".join(tgt_vocab.decode(found[0].tokens))


def compare(model: Seq2Seq, corpus: Corpus, short: int, long: int) -> tuple[str, list[Outcome]]:
    """The short sentence's greedy output alone, and each setting's outcome in the padded batch."""
    pairs = corpus.encoded["test"]
    alone = collate([pairs[short]], [short], pad_index=Vocab.pad_index)
    padded = collate([pairs[short], pairs[long]], [short, long], pad_index=Vocab.pad_index)
    reference, _, alone_output = run(model, alone, SETTINGS[0], corpus.tgt_vocab)  # alone there is no padding: all settings agree
    steps, length = reference.size(1), len(pairs[short].src)
    outcomes = []
    for setting in SETTINGS:
        logits, attention, output = run(model, padded, setting, corpus.tgt_vocab)
        weights = attention[0, :steps]  # [T, S] the short sentence's rows, without target padding
        outcomes.append(Outcome(
            setting=setting,
            pad_mass=float(weights[:, length:].sum(dim=1).mean()),
            max_logit_diff=float((logits[0, :steps] - reference[0]).abs().max()),
            attention=weights.numpy(),
            output=output,
        ))
    return alone_output, outcomes


def plot(outcomes: list[Outcome], words: list[str], pads: int, target: list[str]):
    fig, axes = plt.subplots(1, 4, figsize=(16, 5), gridspec_kw={"width_ratios": [1, 1, 1, 0.9]}, layout="constrained")
    columns = words + [PAD] * pads
    rows = target + ["<eos>"]
    for ax, outcome in zip(axes, outcomes):
        ax.imshow(outcome.attention, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.axvline(len(words) - 0.5, color="white", linestyle="--")
        ax.set_xticks(range(len(columns)), labels=columns, rotation=90, fontsize=7)
        ax.set_yticks(range(len(rows)), labels=rows, fontsize=7)
        ax.set_title(f"{outcome.setting}\nattention on <pad>: {outcome.pad_mass:.1%}", fontsize=9)
    diffs = [max(o.max_logit_diff, EXACT_FLOOR) for o in outcomes]
    bars = axes[3].bar(range(len(outcomes)), diffs, color=["C2", "C1", "C3"])
    axes[3].set_yscale("log")
    axes[3].set_xticks(range(len(outcomes)), labels=[o.setting.replace(" (", "\n(").replace(", ", ",\n") for o in outcomes], fontsize=7)
    axes[3].bar_label(bars, labels=[f"{o.max_logit_diff:.1e}" for o in outcomes], fontsize=8)
    axes[3].set(title="max |logit alone - in the batch|", ylim=(EXACT_FLOOR / 2, 100))
    fig.suptitle("The same sentence alone and padded in a batch (source tokens across, target tokens down)", fontsize=10)
    return fig


def first_in(lengths: Sequence[int], low: int, high: int, fallback: int) -> int:
    """The first test sentence whose length is in [low, high] (tiny quick-mode sets may have none)."""
    return next((i for i, n in enumerate(lengths) if low <= n <= high), fallback)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    n_train, size, epochs = (200, 16, 1) if args.quick else (4000, 64, 3)
    corpus = build_corpus(DataConfig(builtin_train_size=n_train), VocabConfig())
    config = small_config("lstm-attention", size=size, epochs=epochs, extra=["train.teacher_forcing=1.0"])
    model = new_model(config, corpus)
    train(model, config, corpus)
    lengths = [len(pair.src) for pair in corpus.encoded["test"]]
    # A short sentence of a few words, padded by about twice its length: long enough to see
    # the attention pattern, short enough that the pads do not fill the whole picture.
    short = first_in(lengths, 6, 8, fallback=int(np.argmin(lengths)))
    long = first_in(lengths, 22, 26, fallback=int(np.argmax(lengths)))
    words, target = corpus.tokens["test"][short]
    print(f"sentence ({lengths[short]} words): {' '.join(words)}  ->  {' '.join(target)}")
    print(f"padded to {lengths[long]} positions in a batch with a {lengths[long]}-word sentence")
    alone_output, outcomes = compare(model, corpus, short, long)
    print(f"{'alone':30s} {'':35s} greedy: {alone_output}")
    results = {}
    for o in outcomes:
        print(f"{o.setting:30s} pad attention {o.pad_mass:7.2%}   max logit diff {o.max_logit_diff:.2e}   greedy: {o.output}")
        results[f"{o.setting}: pad mass"], results[f"{o.setting}: max logit diff"] = o.pad_mass, o.max_logit_diff
    save_figure(plot(outcomes, words, lengths[long] - lengths[short], target), args.out, FIGURE)
    return results


if __name__ == "__main__":
    main()
