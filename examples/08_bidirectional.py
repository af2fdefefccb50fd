"""Bidirectional encoders: what reading the sentence backwards as well adds.

A unidirectional encoder reads left to right, so its state at word s has seen only the
words up to s. A bidirectional encoder (Schuster & Paliwal 1997; used by Bahdanau et al.
2015) runs a second RNN from right to left and concatenates the two states, so every
position's annotation describes its left *and* right context: "sort" in "sort scores in
reverse order" already knows that "reverse" is coming. The attention decoder reads these
annotations, so it gets the right context of each word without having to look for it.

The script trains the ``lstm-attention`` preset twice on the built-in English -> Python task,
with ``model.encoder.bidirectional`` false and true (same data, seed, epochs; each direction
has the same hidden size), and prints both scores. Then it asks *what* the states know,
with a linear probe: from the encoder state at position s, predict the word at position
s + k, for k from -3 (three words back) to +3 (three words ahead). The probe is a ridge
regression onto one-hot words, fitted on some sentences and scored on others. The forward
half of the bidirectional state behaves like the unidirectional encoder (it knows the
past); the backward half is what knows the words ahead.

One caveat when reading the scores: the bidirectional model is larger (a second encoder RNN,
and a learned bridge that maps both final states to the decoder's start), so not all of its
gain has to come from the right context; the probe is what isolates that part.

    python examples/08_bidirectional.py --out docs/img/learn
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import greedy_tokens, new_model, parse_args, save_figure, small_config, train
from seq2seq.config import DataConfig, VocabConfig
from seq2seq.data.batching import EncodedPair, collate
from seq2seq.data.corpus import Corpus, build_corpus
from seq2seq.data.vocab import Vocab
from seq2seq.evaluation.metrics import exact_match
from seq2seq.models.build import count_parameters
from seq2seq.models.seq2seq import Seq2Seq

FIGURE = "08_bidirectional.png"
OFFSETS = range(-3, 4)
RIDGE = 1e-2  # keeps the least-squares solve well conditioned; the results barely depend on it


def encoder_states(model: Seq2Seq, pairs: Sequence[EncodedPair]) -> list[np.ndarray]:
    """The encoder's annotation of every position, one [S_i, D*H] array per sentence."""
    batch = collate(pairs, range(len(pairs)), pad_index=Vocab.pad_index, with_target=False)
    with torch.no_grad():
        states, _ = model.encoder(batch.src, batch.src_lengths)  # [B, S, D*H]
    return [states[i, :n].numpy() for i, n in enumerate(batch.src_lengths.tolist())]


def probe_rows(states: Sequence[np.ndarray], pairs: Sequence[EncodedPair], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(state at s, word id at s + k) for every position where s + k is inside the sentence."""
    features, words = [], []
    for state, pair in zip(states, pairs):
        for s in range(len(pair.src)):
            if 0 <= s + k < len(pair.src):
                features.append(state[s])
                words.append(pair.src[s + k])
    return np.array(features), np.array(words)


def probe_accuracy(states: Sequence[np.ndarray], pairs: Sequence[EncodedPair], k: int, vocab_size: int) -> float:
    """Fit a linear map from states to one-hot words on the first 2/3 of the sentences (ridge
    regression, closed form), score its argmax on the rest."""
    cut = 2 * len(pairs) // 3
    x_fit, y_fit = probe_rows(states[:cut], pairs[:cut], k)
    x_test, y_test = probe_rows(states[cut:], pairs[cut:], k)
    add_bias = lambda x: np.hstack([x, np.ones((len(x), 1))])  # noqa: E731
    a = add_bias(x_fit)
    weights = np.linalg.solve(a.T @ a + RIDGE * np.eye(a.shape[1]), a.T @ np.eye(vocab_size)[y_fit])
    return float(((add_bias(x_test) @ weights).argmax(axis=1) == y_test).mean())


def majority_baseline(pairs: Sequence[EncodedPair], k: int) -> float:
    """Accuracy of always guessing the most frequent word: what a probe gets from no information."""
    _, words = probe_rows([np.zeros((len(p.src), 1)) for p in pairs], pairs, k)
    return Counter(words.tolist()).most_common(1)[0][1] / len(words)


def train_and_score(corpus: Corpus, *, bidirectional: bool, size: int, epochs: int) -> tuple[Seq2Seq, dict[str, float]]:
    config = small_config("lstm-attention", size=size, epochs=epochs,
                          extra=["train.teacher_forcing=1.0", f"model.encoder.bidirectional={str(bidirectional).lower()}"])
    model = new_model(config, corpus)
    history = train(model, config, corpus)
    predictions = greedy_tokens(model, corpus, corpus.encoded["test"], max_len=100)
    scores = {"valid loss": history[-1].valid_loss,
              "test exact match": exact_match(predictions, [tgt for _, tgt in corpus.tokens["test"]]),
              "parameters": count_parameters(model)}
    return model, scores


def probe_curves(models: dict[str, Seq2Seq], pairs: Sequence[EncodedPair], vocab_size: int) -> dict[str, list[float]]:
    """Probe accuracy by offset for the unidirectional states and each half of the bidirectional ones."""
    uni, bi = encoder_states(models["unidirectional"], pairs), encoder_states(models["bidirectional"], pairs)
    half = bi[0].shape[1] // 2  # PyTorch concatenates [forward; backward]
    views = {"unidirectional": uni, "bidirectional, forward half": [s[:, :half] for s in bi],
             "bidirectional, backward half": [s[:, half:] for s in bi], "bidirectional, both halves": bi}
    curves = {name: [probe_accuracy(states, pairs, k, vocab_size) for k in OFFSETS] for name, states in views.items()}
    curves["always the most frequent word"] = [majority_baseline(pairs, k) for k in OFFSETS]
    return curves


def plot(scores: dict[str, dict[str, float]], curves: dict[str, list[float]], title: str):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [0.6, 1]}, layout="constrained")
    names = list(scores)
    bars = left.bar(names, [100 * scores[n]["test exact match"] for n in names], color=["C0", "C3"])
    left.bar_label(bars, labels=[f"{100 * scores[n]['test exact match']:.1f} %\n(valid loss {scores[n]['valid loss']:.2f},\n"
                                 f"{scores[n]['parameters']:,} parameters)" for n in names], fontsize=8)
    left.set(title="built-in task: greedy exact match on test", ylabel="exact match (%)")
    left.set_ylim(0, max(100 * s["test exact match"] for s in scores.values()) * 1.5 + 1)
    styles = {"unidirectional": ("C0", "-"), "bidirectional, forward half": ("C3", ":"),
              "bidirectional, backward half": ("C3", "--"), "bidirectional, both halves": ("C3", "-"),
              "always the most frequent word": ("grey", ":")}
    for name, values in curves.items():
        color, style = styles[name]
        right.plot(list(OFFSETS), [100 * v for v in values], style, color=color, marker="o", label=name)
    right.axvline(0, color="black", linewidth=0.5)
    right.set(title="linear probe: which word can be read off the state at position s?",
              xlabel="k: predict the word at position s + k (negative = behind, positive = ahead)",
              ylabel="probe accuracy on held-out sentences (%)")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    n_train, size, epochs, n_probe = (120, 16, 1, 120) if args.quick else (4000, 64, 3, 1500)
    corpus = build_corpus(DataConfig(builtin_train_size=n_train), VocabConfig())
    models, scores = {}, {}
    for bidirectional in (False, True):
        name = "bidirectional" if bidirectional else "unidirectional"
        models[name], scores[name] = train_and_score(corpus, bidirectional=bidirectional, size=size, epochs=epochs)
        print(f"{name:15s} {scores[name]['parameters']:,} parameters, valid loss {scores[name]['valid loss']:.3f}, "
              f"test exact match {scores[name]['test exact match']:.1%}")
    curves = probe_curves(models, corpus.encoded["train"][:n_probe], len(corpus.src_vocab))
    print("probe accuracy for the word at s + k, k = " + " ".join(f"{k:+d}" for k in OFFSETS))
    for name, values in curves.items():
        print(f"  {name:30s} " + " ".join(f"{100 * v:4.0f}%" for v in values))
    title = (f"Unidirectional vs bidirectional encoder: lstm-attention, hidden {size} per direction, "
             f"{n_train} training examples, {epochs} epoch(s); probe on {n_probe} training sentences")
    save_figure(plot(scores, curves, title), args.out, FIGURE)
    results = {f"{name} {metric}": value for name, s in scores.items() for metric, value in s.items()}
    results.update({f"probe {name} k={k:+d}": v for name, values in curves.items() for k, v in zip(OFFSETS, values)})
    return results


if __name__ == "__main__":
    main()
