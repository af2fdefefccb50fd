"""Teacher forcing, and the exposure bias it leaves behind.

A decoder predicts the output one token at a time, each step reading the previous token.
During training we can feed it the *gold* previous token ("teacher forcing") or its *own*
previous prediction. The package draws, at every step, gold with probability
``train.teacher_forcing`` (default 0.5) and its own argmax otherwise.

- Ratio 1.0: always gold. Training is easy and fast (the model never sees its own errors),
  and the validation loss, which is also measured with gold prefixes, looks best.
- Ratio 0.0: always its own output. Early in training those outputs are garbage, so the
  model learns from confusing prefixes; but it practises recovering from its own mistakes.
- At inference there is no gold prefix: greedy decoding always reads its own outputs. A
  model that only ever saw gold prefixes is now off its training distribution as soon as it
  makes one mistake ("exposure bias", Ranzato et al. 2016; scheduled sampling: Bengio et al. 2015).

The script trains the same small ``lstm-attention`` model three times on the built-in task,
with ratio 0, 0.5 and 1.0 and otherwise identical settings, and after every epoch records the
validation loss (gold prefixes) and the greedy exact match (own prefixes). At the end it
measures, on the validation set, the token accuracy with gold prefixes against the token
accuracy of greedy decoding: the gap between the two is the price of exposure bias.

    python examples/05_teacher_forcing.py --out docs/img/learn
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import torch

from _common import CPU, greedy_tokens, new_model, parse_args, save_figure, small_config
from seq2seq.config import DataConfig, VocabConfig
from seq2seq.data.batching import bucketed_batches
from seq2seq.data.corpus import Corpus, build_corpus
from seq2seq.data.vocab import Vocab
from seq2seq.evaluation.metrics import exact_match
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.training.trainer import Trainer, seed_everything

FIGURE = "05_teacher_forcing.png"
RATIOS = (0.0, 0.5, 1.0)


@dataclass
class Curve:
    ratio: float
    valid_loss: list[float] = field(default_factory=list)  # per epoch, gold prefixes
    greedy_exact_match: list[float] = field(default_factory=list)  # per epoch, own prefixes
    forced_token_accuracy: float = 0.0  # after training, gold prefixes
    greedy_token_accuracy: float = 0.0  # after training, own prefixes


@torch.no_grad()
def forced_token_accuracy(model: Seq2Seq, corpus: Corpus) -> float:
    """Share of validation target tokens that the argmax gets right when every prefix is gold."""
    right, total = 0, 0
    for batch in bucketed_batches(corpus.encoded["valid"], batch_size=64, pad_index=Vocab.pad_index, shuffle=False):
        logits, _ = model(batch.src, batch.src_lengths, batch.src_mask, batch.tgt_input, teacher_forcing=1.0)
        real = batch.tgt_output != Vocab.pad_index  # [B, T-1]
        right += int(((logits.argmax(-1) == batch.tgt_output) & real).sum())
        total += int(real.sum())
    return right / total


def greedy_token_accuracy(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Share of reference positions (``<eos>`` included) where greedy decoding put the same token."""
    scores = []
    for pred, ref in zip(predictions, references):
        pred, ref = [*pred, "<eos>"], [*ref, "<eos>"]
        scores.append(sum(p == r for p, r in zip(pred, ref)) / len(ref))
    return sum(scores) / max(len(scores), 1)


def train_with_ratio(ratio: float, corpus: Corpus, *, size: int, epochs: int) -> Curve:
    """Train epoch by epoch with the package's Trainer, decoding the validation set after each."""
    config = small_config("lstm-attention", size=size, epochs=1, extra=[f"train.teacher_forcing={ratio}"])
    model = new_model(config, corpus)  # same seed: all three ratios start from the same weights
    seed_everything(config.train.seed)
    trainer = Trainer(model=model, config=config.train, pad_index=Vocab.pad_index, device=CPU)
    references = [tgt for _, tgt in corpus.tokens["valid"]]
    curve = Curve(ratio)
    for epoch in range(1, epochs + 1):
        trainer.config.epochs = epoch  # fit() trains up to config.epochs: one more epoch per call
        history = trainer.fit(corpus.encoded["train"], corpus.encoded["valid"]).history
        predictions = greedy_tokens(model, corpus, corpus.encoded["valid"])
        curve.valid_loss.append(history[-1].valid_loss)
        curve.greedy_exact_match.append(exact_match(predictions, references))
        print(f"ratio {ratio}: epoch {epoch} valid loss {curve.valid_loss[-1]:.3f}, "
              f"greedy exact match {curve.greedy_exact_match[-1]:.1%}", flush=True)
    curve.forced_token_accuracy = forced_token_accuracy(model, corpus)
    curve.greedy_token_accuracy = greedy_token_accuracy(predictions, references)
    return curve


def plot(curves: list[Curve], title: str):
    fig, (loss_ax, em_ax, gap_ax) = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    for curve in curves:
        epochs = range(1, len(curve.valid_loss) + 1)
        loss_ax.plot(epochs, curve.valid_loss, marker="o", label=f"ratio {curve.ratio}")
        em_ax.plot(epochs, [100 * v for v in curve.greedy_exact_match], marker="o", label=f"ratio {curve.ratio}")
    loss_ax.set(title="validation loss (gold prefixes)", xlabel="epoch", ylabel="cross-entropy per token")
    for ax in (loss_ax, em_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    em_ax.set(title="greedy exact match (own prefixes)", xlabel="epoch", ylabel="exact match (%)")
    positions = np.arange(len(curves))
    forced = [100 * c.forced_token_accuracy for c in curves]
    greedy = [100 * c.greedy_token_accuracy for c in curves]
    gap_ax.bar(positions - 0.2, forced, 0.4, label="gold prefixes (teacher forced)")
    gap_ax.bar(positions + 0.2, greedy, 0.4, label="own prefixes (greedy)")
    for x, f, g in zip(positions, forced, greedy):
        gap_ax.annotate(f"gap {f - g:.1f}", (x, max(f, g) + 1), ha="center", fontsize=8)
    gap_ax.set_xticks(positions, labels=[f"ratio {c.ratio}" for c in curves])
    gap_ax.set(title="token accuracy after training: exposure bias", ylabel="token accuracy (%)", ylim=(0, 105))
    for ax in (loss_ax, em_ax, gap_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    n_train, size, epochs = (150, 16, 1) if args.quick else (4000, 64, 5)
    corpus = build_corpus(DataConfig(builtin_train_size=n_train), VocabConfig())
    curves = [train_with_ratio(ratio, corpus, size=size, epochs=epochs) for ratio in RATIOS]
    results = {}
    for c in curves:
        print(f"ratio {c.ratio}: token accuracy gold prefixes {c.forced_token_accuracy:.1%}, greedy "
              f"{c.greedy_token_accuracy:.1%} (gap {c.forced_token_accuracy - c.greedy_token_accuracy:.1%}); "
              f"greedy exact match {c.greedy_exact_match[-1]:.1%}")
        results[f"ratio {c.ratio}: valid loss"] = c.valid_loss[-1]
        results[f"ratio {c.ratio}: greedy exact match"] = c.greedy_exact_match[-1]
        results[f"ratio {c.ratio}: forced token accuracy"] = c.forced_token_accuracy
        results[f"ratio {c.ratio}: greedy token accuracy"] = c.greedy_token_accuracy
    title = (f"Teacher-forcing ratio on the built-in task: lstm-attention (hidden {size}), {n_train} training "
             f"examples, {epochs} epoch(s), {len(corpus.encoded['valid'])} validation examples")
    save_figure(plot(curves, title), args.out, FIGURE)
    return results


if __name__ == "__main__":
    main()
