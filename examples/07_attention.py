"""Attention: where the decoder looks while it writes each output word.

At every output step t the decoder scores every source position s by how useful it looks
right now (Bahdanau, Cho and Bengio 2015, section 3.1):

    score(h_t, h_s) = v^T tanh(W [h_t; h_s])

where h_t is the decoder's state and h_s the encoder's state at source position s. A
softmax turns the scores into weights that sum to 1, and the weighted sum of the h_s (the
*context*) goes into the next prediction. ``W`` and ``v`` are learned like every other
weight: nobody tells the model which words correspond.

The script prints the formula next to the lines of ``seq2seq/models/bahdanau.py`` that
compute it (read with ``inspect``, so they are the code that actually runs), trains two small
``lstm-attention`` models, and draws the weights as heatmaps (one row per output token, one
column per source token, bright = large weight):

- translation: German -> English on Multi30k (``../shared/data/multi30k``) when that folder
  exists, else a tiny synthetic English -> French word task whose adjectives follow their
  nouns ("the red car" -> "la voiture rouge"), so its alignment has to cross;
- code: the package's built-in English -> Python task, where names and numbers are copied.

    python examples/07_attention.py --out docs/img/learn
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from _common import corpus_from_examples, new_model, parse_args, save_figure, small_config, train
from seq2seq.config import DataConfig, VocabConfig
from seq2seq.data.corpus import Corpus, build_corpus
from seq2seq.data.example import Example
from seq2seq.data.vocab import Vocab
from seq2seq.decoding.greedy import greedy_decode_all
from seq2seq.models.bahdanau import BahdanauAttention
from seq2seq.models.seq2seq import Seq2Seq

FIGURE = "07_attention.png"
FORMULA = "score = v^T tanh(W [h_t; h_s])"
# Substrings of the lines that compute the formula: W_k h_s, W_q h_t, tanh(W_q h_t + W_k h_s), v^T (...).
# (On a CPU, training and decoding run the same score through seq2seq/models/fast_paths.py: an
# AdditiveScore whose backward recomputes the tanh instead of keeping it.)
FORMULA_CODE = ("self.key_proj(states)", "self.query_proj(query)", "torch.tanh(", "self.energy(")
MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"

# The synthetic translation task: (English, French, grammatical gender) for nouns.
NOUNS = [("cat", "chat", "m"), ("dog", "chien", "m"), ("bird", "oiseau", "m"), ("man", "homme", "m"),
         ("horse", "cheval", "m"), ("car", "voiture", "f"), ("woman", "femme", "f"), ("house", "maison", "f"),
         ("girl", "fille", "f"), ("ball", "balle", "f")]
ADJECTIVES = [("red", "rouge"), ("yellow", "jaune"), ("fast", "rapide"), ("calm", "calme"), ("sad", "triste"),
              ("young", "jeune"), ("modern", "moderne"), ("strange", "étrange")]
VERBS = [("sees", "voit"), ("follows", "suit"), ("likes", "aime"), ("watches", "regarde"), ("finds", "trouve")]


def formula_lines() -> list[str]:
    """``file:line  code`` for each line of BahdanauAttention that computes the score."""
    lines, start = inspect.getsourcelines(BahdanauAttention)
    path = Path(inspect.getsourcefile(BahdanauAttention)).as_posix().split("/src/")[-1]
    found = [f"{path}:{start + i}  {line.strip()}" for i, line in enumerate(lines)
             if any(part in line for part in FORMULA_CODE) and not line.lstrip().startswith(('"', "def"))]
    if len(found) != len(FORMULA_CODE):
        raise RuntimeError(f"expected one line each for {FORMULA_CODE} in BahdanauAttention, found {found}")
    return found


def noun_phrase(rng: random.Random) -> tuple[list[str], list[str]]:
    """"the red car" -> "la voiture rouge": the article agrees with the noun, the adjective follows it."""
    (noun, nom, gender), (adj, adjectif) = rng.choice(NOUNS), rng.choice(ADJECTIVES)
    article = "le" if gender == "m" else "la"
    if rng.random() < 0.5:
        return ["the", noun], [article, nom]
    return ["the", adj, noun], [article, nom, adjectif]


def toy_translation(n: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        (subject, sujet), (verb, verbe), (obj, objet) = noun_phrase(rng), rng.choice(VERBS), noun_phrase(rng)
        examples.append(Example(" ".join([*subject, verb, *obj]), " ".join([*sujet, verbe, *objet])))
    return examples


def translation_corpus(quick: bool) -> tuple[Corpus, str]:
    """Multi30k de -> en (short sentences) when it is there and this is a full run, else the toy task."""
    if quick or not MULTI30K.is_dir():
        splits = {"train": toy_translation(300 if quick else 3000, 1), "valid": toy_translation(50, 2),
                  "test": toy_translation(50, 3)}
        return corpus_from_examples(splits), "synthetic English -> French"
    data = DataConfig(format="parallel", path=str(MULTI30K), src_lang="de", tgt_lang="en", src_tokenizer="word",
                      tgt_tokenizer="word", max_src_len=10, max_tgt_len=10)
    corpus = build_corpus(data, VocabConfig(min_freq=3))
    corpus.encoded["valid"] = corpus.encoded["valid"][:300]  # validation only steers the learning rate here
    return corpus, "Multi30k German -> English"


def code_corpus(quick: bool) -> tuple[Corpus, str]:
    return build_corpus(DataConfig(builtin_train_size=200 if quick else 4000), VocabConfig()), "built-in English -> Python"


def attend(model: Seq2Seq, corpus: Corpus, low: int, high: int) -> tuple[list[str], list[str], np.ndarray]:
    """Decode the test sources of length [low, high]; return the first whose output is right (else the
    first without <unk>, else the first): source tokens, output tokens and the weights [T, S]."""
    candidates = [i for i, (src, _) in enumerate(corpus.tokens["test"]) if low <= len(src) <= high] or [0]
    found = greedy_decode_all(model, [corpus.encoded["test"][i].src for i in candidates], sos_index=Vocab.sos_index,
                              eos_index=Vocab.eos_index, pad_index=Vocab.pad_index, max_len=40)
    outputs = [corpus.tgt_vocab.decode(h.tokens) for h in found]
    right = [k for k, i in enumerate(candidates) if outputs[k] == corpus.tokens["test"][i][1]]
    clean = [k for k, out in enumerate(outputs) if "<unk>" not in out]
    k = (right or clean or [0])[0]
    hypothesis = found[k]
    out_tokens = outputs[k] + (["<eos>"] if hypothesis.finished else [])
    return corpus.tokens["test"][candidates[k]][0], out_tokens, hypothesis.attention.numpy()[: len(out_tokens)]


def trained(corpus: Corpus, *, size: int, epochs: int) -> tuple[Seq2Seq, float]:
    config = small_config("lstm-attention", size=size, epochs=epochs, extra=["train.teacher_forcing=1.0"])
    model = new_model(config, corpus)
    history = train(model, config, corpus)
    return model, min(h.valid_loss for h in history)


def heatmap(ax: plt.Axes, weights: np.ndarray, src: list[str], out: list[str], title: str) -> None:
    ax.imshow(weights, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(src)), labels=src, rotation=90, fontsize=8)
    ax.set_yticks(range(len(out)), labels=out, fontsize=8)
    ax.set(xlabel="source token", ylabel="generated token")
    ax.set_title(title, fontsize=9)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    code_lines = formula_lines()
    print(FORMULA)
    for line in code_lines:
        print(f"    {line}")
    epochs = 1 if args.quick else 3
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2), layout="constrained")
    results = {}
    # (corpus and its name, source lengths to pick the example from, model size)
    tasks = ((translation_corpus(args.quick), (6, 10), 16 if args.quick else 128),
             (code_corpus(args.quick), (9, 14), 16 if args.quick else 64))
    for ax, ((corpus, name), (low, high), size) in zip(axes, tasks):
        model, valid_loss = trained(corpus, size=size, epochs=epochs)
        src, out, weights = attend(model, corpus, low, high)
        print(f"{name}: best valid loss {valid_loss:.3f}\n  {' '.join(src)}\n  -> {' '.join(out)}")
        heatmap(ax, weights, src, out, f"{name}: hidden {size}, {len(corpus.encoded['train'])} training pairs, "
                f"{epochs} epoch(s), best valid loss {valid_loss:.2f}")
        results[f"{name}: valid loss"] = valid_loss
        results[f"{name}: rows sum to 1"] = float(np.abs(weights.sum(axis=1) - 1).max())
    fig.suptitle(f"{FORMULA}\n" + "\n".join(code_lines), fontsize=8, family="monospace")
    save_figure(fig, args.out, FIGURE)
    return results


if __name__ == "__main__":
    main()
