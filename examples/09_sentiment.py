"""Sentiment as seq2seq: "i am not happy" -> "negative", and what the model looks at.

A sequence-to-sequence model does not care that its output is code or French: any task
whose answer can be written as text fits, including classification. Here the output is one
word, ``positive`` or ``negative`` (T5 casts SST-2 exactly like this). The interesting part
is *negation*: "happy" is positive, "not happy" is negative, so the model cannot just spot
good and bad words; it has to notice "not" (or "never") and flip the answer.

The script generates a small synthetic review set ("the movie was not very good", "i do not
like this film", ...) in which half of the sentences are negated, trains a tiny
``lstm-attention`` model on it, reports accuracy on held-out sentences, negated and plain,
and shows the attention of the step that writes the label over the source words for a few
hand-picked sentences that were kept out of training. Attention is not an explanation of
the decision (the encoder's final state, which starts the decoder, has also read the whole
sentence), but it shows which words the decoder chose to look at.

    python examples/09_sentiment.py --out docs/img/learn
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from _common import corpus_from_examples, new_model, parse_args, save_figure, small_config, train
from seq2seq.data.corpus import Corpus
from seq2seq.data.example import Example
from seq2seq.data.vocab import Vocab
from seq2seq.decoding.greedy import greedy_decode_all
from seq2seq.models.seq2seq import Seq2Seq

FIGURE = "09_sentiment.png"
POSITIVE = ("happy", "good", "great", "excellent", "wonderful", "fun", "pleasant", "brilliant")
NEGATIVE = ("sad", "bad", "terrible", "awful", "boring", "dull", "horrible", "disappointing")
LIKE, DISLIKE = ("love", "like", "enjoy", "recommend"), ("hate", "dislike", "regret", "avoid")
SUBJECTS = ("i am", "the movie was", "this film is", "the food was", "the service is", "my day was",
            "the book is", "the ending was", "our trip was", "the show is")
THINGS = ("this film", "the movie", "the food", "this book", "the show", "this place")
INTENSIFIERS = ("", "", "very", "really", "so", "quite", "truly")
OPENERS = ("", "", "", "honestly ,", "well ,", "overall ,")
# Shown in the figure; removed from the training data so that the model has never seen them.
SHOWCASE = {"i am happy": "positive", "i am not happy": "negative", "the movie was not bad": "positive",
            "the food was never very good": "negative", "i do not like this film": "negative",
            "honestly , i love the show": "positive"}


def adjective_sentence(rng: random.Random, negated: bool) -> tuple[str, bool]:
    """"the movie was (not) (very) good": positive when the adjective is, flipped by negation."""
    positive = rng.random() < 0.5
    negation = rng.choice(("not", "never")) if negated else ""
    words = [rng.choice(OPENERS), rng.choice(SUBJECTS), negation, rng.choice(INTENSIFIERS),
             rng.choice(POSITIVE if positive else NEGATIVE)]
    return " ".join(w for w in words if w), positive != negated


def verb_sentence(rng: random.Random, negated: bool) -> tuple[str, bool]:
    """"i (do not) love this film"."""
    positive = rng.random() < 0.5
    words = [rng.choice(OPENERS), "i", "do not" if negated else "", rng.choice(LIKE if positive else DISLIKE),
             rng.choice(THINGS)]
    return " ".join(w for w in words if w), positive != negated


def reviews(n: int, seed: int, *, exclude: set[str]) -> list[Example]:
    """``n`` labelled sentences, half of them negated, none of them in ``exclude``."""
    rng = random.Random(seed)
    examples = []
    while len(examples) < n:
        sentence, positive = rng.choice((adjective_sentence, verb_sentence))(rng, negated=rng.random() < 0.5)
        if sentence not in exclude:
            examples.append(Example(sentence, "positive" if positive else "negative"))
    return examples


def is_negated(sentence: str) -> bool:
    return any(word in sentence.split() for word in ("not", "never"))


def label_step(model: Seq2Seq, corpus: Corpus, sentences: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """For each sentence: the generated label and the attention [S] of the step that wrote it."""
    sources = [corpus.src_vocab.encode(sentence.split()) for sentence in sentences]
    found = greedy_decode_all(model, sources, sos_index=Vocab.sos_index, eos_index=Vocab.eos_index,
                              pad_index=Vocab.pad_index, max_len=3)
    return [(" ".join(corpus.tgt_vocab.decode(h.tokens)), h.attention[0].numpy()) for h in found]


def accuracy(model: Seq2Seq, corpus: Corpus, examples: Sequence[Example]) -> float:
    labels = label_step(model, corpus, [e.src for e in examples])
    return sum(label == e.tgt for (label, _), e in zip(labels, examples)) / max(len(examples), 1)


def plot(sentences: Sequence[str], labelled: list[tuple[str, np.ndarray]], title: str):
    fig, axes = plt.subplots(len(sentences), 1, figsize=(7, 1.05 * len(sentences) + 0.8), layout="constrained")
    longest = max(len(sentence.split()) for sentence in sentences)
    for ax, sentence, (label, weights) in zip(axes, sentences, labelled):
        words = sentence.split()
        ax.imshow(weights[None, :], cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xlim(-0.5, longest - 0.5)  # the same cell width in every row
        for x, w in enumerate(weights):
            ax.text(x, 0, f"{w:.2f}", ha="center", va="center", fontsize=7, color="white" if w < 0.6 else "black")
        ax.set_xticks(range(len(words)), labels=words, fontsize=9)
        ax.set_yticks([])
        ax.set_title(f'"{sentence}"  ->  {label}', fontsize=9, loc="left")
    fig.suptitle(title, fontsize=9)
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    n_train, size, epochs = (300, 16, 1) if args.quick else (3000, 32, 4)
    held_out = set(SHOWCASE)
    test = reviews(400, 3, exclude=held_out)
    splits = {"train": reviews(n_train, 1, exclude=held_out | {e.src for e in test}), "valid": reviews(200, 2, exclude=held_out),
              "test": test}
    corpus = corpus_from_examples(splits)
    config = small_config("lstm-attention", size=size, epochs=epochs, extra=["train.teacher_forcing=1.0"])
    model = new_model(config, corpus)
    train(model, config, corpus)
    results = {
        "test accuracy": accuracy(model, corpus, test),
        "test accuracy, negated": accuracy(model, corpus, [e for e in test if is_negated(e.src)]),
        "test accuracy, not negated": accuracy(model, corpus, [e for e in test if not is_negated(e.src)]),
    }
    for name, value in results.items():
        print(f"{name:28s} {value:.1%}")
    labelled = label_step(model, corpus, list(SHOWCASE))
    for sentence, (label, weights) in zip(SHOWCASE, labelled):
        print(f"{sentence:32s} -> {label:9s} attention: " + " ".join(f"{w}={a:.2f}" for w, a in zip(sentence.split(), weights)))
    results["showcase correct"] = sum(label == SHOWCASE[s] for s, (label, _) in zip(SHOWCASE, labelled)) / len(SHOWCASE)
    title = (f"Attention of the step that writes the label (sentences never seen in training)\nlstm-attention, hidden {size}, "
             f"{epochs} epoch(s) on {n_train} synthetic reviews; held-out accuracy {results['test accuracy']:.1%}")
    save_figure(plot(list(SHOWCASE), labelled, title), args.out, FIGURE)
    return results


if __name__ == "__main__":
    main()
