"""The bottleneck: a whole sentence squeezed into one vector, and how attention removes it.

Without attention (Sutskever et al. 2014; Cho et al. 2014) the decoder learns about the
source only through the encoder's *final* state: one fixed-size vector, whatever the length
of the input. A short input fits; a long one does not, and the decoder has to guess the
details it lost. With attention (Bahdanau et al. 2015) the decoder looks back at *every*
encoder state at every step, so the memory grows with the input.

The task is the package's reversal toy (``seq2seq.data.tasks.generate_reverse``): "a b c"
-> "c b a" over 20 symbols, with inputs of 3 to 24 symbols. It is trivial for a person, but
it needs every symbol of the input, in order: exactly what a fixed vector struggles to hold.
The script trains the ``lstm`` and ``lstm-attention`` presets with the same size, data,
seed and number of epochs, and scores greedy exact match (the whole output right) by input
length with the package's ``scores_by_length``.

    python examples/06_bottleneck.py --out docs/img/learn
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import corpus_from_examples, greedy_tokens, new_model, parse_args, save_figure, small_config, train
from seq2seq.data.corpus import Corpus
from seq2seq.data.tasks import generate_reverse
from seq2seq.evaluation.evaluate import BucketScore, scores_by_length
from seq2seq.visualization.curves import quality_by_length

FIGURE = "06_bottleneck.png"
PRESETS = ("lstm", "lstm-attention")
EDGES = (8, 13, 18)  # inclusive upper bounds of the length buckets: 3-8, 9-13, 14-18, 19-24


def reversal_corpus(n_train: int, n_test: int, max_len: int) -> Corpus:
    """Train, valid and test drawn from different seeds of the same generator."""
    def draw(seed: int, n: int):
        return generate_reverse(seed=seed, n=n, vocab_size=20, min_len=3, max_len=max_len)

    return corpus_from_examples({"train": draw(1, n_train), "valid": draw(2, n_test // 2), "test": draw(3, n_test)})


def score(preset: str, corpus: Corpus, *, size: int, epochs: int) -> list[BucketScore]:
    # Gold prefixes only (ratio 1.0): the comparison is about the context, and this trains fastest.
    config = small_config(preset, size=size, epochs=epochs, extra=["train.teacher_forcing=1.0"])
    model = new_model(config, corpus)
    history = train(model, config, corpus)
    predictions = greedy_tokens(model, corpus, corpus.encoded["test"])
    references = [tgt for _, tgt in corpus.tokens["test"]]
    lengths = [len(pair.src) for pair in corpus.encoded["test"]]
    buckets = scores_by_length(lengths, predictions, references, edges=EDGES)
    shown = ", ".join(f"{b.label}: {b.exact_match:.0%}" for b in buckets)
    print(f"{preset:15s} valid loss {history[-1].valid_loss:.3f}; exact match by input length {shown}")
    return buckets


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    n_train, n_test, size, epochs = (300, 60, 16, 1) if args.quick else (4000, 500, 64, 6)
    corpus = reversal_corpus(n_train, n_test, max_len=24)
    scores = {preset: score(preset, corpus, size=size, epochs=epochs) for preset in PRESETS}
    labels = [f"{b.label}\n(n={b.count})" for b in scores[PRESETS[0]]]
    figure = quality_by_length(labels, {p: [100 * b.exact_match for b in s] for p, s in scores.items()})
    figure.axes[0].set_title(f"Reversal, {n_train} training examples, {epochs} epoch(s), hidden {size}: "
                             "exact match by input length", fontsize=9)
    save_figure(figure, args.out, FIGURE)
    return {f"{preset} {b.label}": b.exact_match for preset, buckets in scores.items() for b in buckets}


if __name__ == "__main__":
    main()
