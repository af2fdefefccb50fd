"""Luong attention: three ways to score, a different query, and a window that moves.

Example 07 scored each source position with Bahdanau's additive score, queried by the decoder's
*previous* state h_{t-1}. Luong, Pham and Manning 2015 ("Effective Approaches to Attention-based
Neural Machine Translation") query with the *current* state h_t, after the recurrent step, and
feed the result, the attentional vector h~_t = tanh(W_c [c_t; h_t]), to the next step (input
feeding, section 3.3). They compare three scores (eq. 8):

    dot      score(h_t, h_s) = h_t^T h_s                    no parameters at all
    general  score(h_t, h_s) = h_t^T W_a h_s                one matrix between the two states
    concat   score(h_t, h_s) = v_a^T tanh(W_a [h_t; h_s])   Bahdanau's additive form

and *local-p* attention (section 3.2): the decoder first predicts where to look,

    p_t = S_x * sigmoid(v_p^T tanh(W_p h_t))                S_x the source length

then scores (with ``general``) only the window [p_t - D, p_t + D], and multiplies the softmax by
a Gaussian exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2, centred on p_t. Positions outside the
window get exactly 0, and the weights of a step sum to *at most* 1 (they are not renormalised).

The script prints each formula next to the lines of ``seq2seq/models/luong.py`` and
``bahdanau.py`` that compute it (read with ``inspect``), trains five small models (the
``lstm-attention`` and ``lstm-luong-dot/general/concat``, ``lstm-local-p`` presets, window D = 2)
on example 07's synthetic English -> French task, where adjectives follow their nouns ("the red
car" -> "la voiture rouge"), and draws their weights on the same test sentence, each fed the
reference translation one step at a time, plus local-p's predicted position p_t per step. It
also measures, on the test set, how often a target word's largest weight falls on the source word
it translates (the task's alignment is known), for nouns, adjectives and verbs and, apart, for the
articles, which translate "the" but take their gender from the noun.

    python examples/10_luong_attention.py --out docs/img/learn
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import corpus_from_examples, greedy_tokens, new_model, parse_args, save_figure, small_config, train
from seq2seq.data.batching import EncodedPair
from seq2seq.data.corpus import Corpus
from seq2seq.models.bahdanau import BahdanauAttention
from seq2seq.models.luong import DotAttention, GeneralAttention, LocalPAttention
from seq2seq.models.seq2seq import Seq2Seq

FIGURE = "10_luong_attention.png"
WINDOW = 2  # local-p's half-width D: the toy sentences have 4 to 7 words, so the default 10 would cover them all

# name -> (preset, the formula, the class whose source computes it, substrings of those lines)
MODELS = {
    "bahdanau": ("lstm-attention", "v^T tanh(W_q h_{t-1} + W_k h_s)", BahdanauAttention,
                 ("self.query_proj(query)", "torch.tanh(", "self.energy(")),
    "luong-dot": ("lstm-luong-dot", "h_t^T h_s", DotAttention, ("torch.bmm(keys, query.unsqueeze(-1))",)),
    "luong-general": ("lstm-luong-general", "h_t^T W_a h_s", GeneralAttention,
                      ("self.key_proj(states)", "torch.bmm(keys, query.unsqueeze(-1))")),
    # ConcatAttention *is* Bahdanau's score (its class body is only a docstring); the query differs
    "luong-concat": ("lstm-luong-concat", "v_a^T tanh(W_a [h_t; h_s])", BahdanauAttention,
                     ("self.query_proj(query)", "torch.tanh(", "self.energy(")),
    "local-p": ("lstm-local-p",
                "p_t = S_x sigmoid(v_p^T tanh(W_p h_t)); general score * Gaussian in [p_t - D, p_t + D]",
                LocalPAttention, ("torch.sigmoid(self.position_energy", "inside = distance.abs() <= self.window",
                                  "torch.exp(-distance.square()")),
}


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (a file name that starts with a digit cannot be imported by name)."""
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


TOY = load_example("07_attention")  # the toy translation task: toy_translation, NOUNS, ADJECTIVES, VERBS


def formula_lines(cls: type, parts: Sequence[str]) -> list[str]:
    """``file:line  code`` for the one line of ``cls`` that holds each of ``parts``."""
    lines, start = inspect.getsourcelines(cls)
    path = Path(inspect.getsourcefile(cls)).as_posix().split("/src/")[-1]
    found = []
    for part in parts:
        hits = [f"{path}:{start + i}  {line.strip()}" for i, line in enumerate(lines) if part in line]
        if len(hits) != 1:
            raise RuntimeError(f"expected one line with {part!r} in {cls.__name__}, found {hits}")
        found += hits
    return found


def gold_alignment(src: Sequence[str], tgt: Sequence[str]) -> list[int]:
    """The source position each target word translates, for the toy task: "the [adj] noun verb the
    [adj] noun" -> "art noun [adj] verbe art noun [adj]" (the adjective follows its noun)."""
    verbs = {verb for verb, _ in TOY.VERBS}
    k = next(i for i, word in enumerate(src) if word in verbs)

    def phrase(offset: int, length: int) -> list[int]:  # "the noun" -> [0, 1]; "the adj noun" -> [0, 2, 1]
        return [offset, offset + 1] if length == 2 else [offset, offset + 2, offset + 1]

    aligned = [*phrase(0, k), k, *phrase(k + 1, len(src) - k - 1)]
    if len(aligned) != len(tgt):
        raise ValueError(f"not a toy sentence pair: {src} -> {tgt}")
    return aligned


@torch.inference_mode()
def teacher_forced_steps(model: Seq2Seq, pair: EncodedPair) -> tuple[np.ndarray, np.ndarray]:
    """Feed one example's reference target to the decoder one step at a time (as search does, with
    the gold previous token) and return the weights [T, S] and each step's attention query [T, H].

    The query is what the attention reads: without input feeding (Bahdanau) the state *before* the
    step, h_{t-1}; with input feeding (Luong) the new state h_t the step computes."""
    src = torch.tensor([pair.src])  # [1, S]
    memory, state = model.encode(src, torch.tensor([len(pair.src)]), torch.ones_like(src, dtype=torch.bool))
    weights, queries = [], []
    for prev in pair.tgt[:-1]:  # <sos> y_1 ... y_{T-1}: row t is the weights that predict y_t
        before = state.top  # [1, H]
        _, state, step_weights = model.decoder.step(torch.tensor([prev]), state, memory)
        queries.append(state.top if model.decoder.input_feeding else before)
        weights.append(step_weights)
    return torch.cat(weights).numpy(), torch.cat(queries).numpy()  # [T, S], [T, H]


@torch.inference_mode()
def local_p_positions(model: Seq2Seq, queries: np.ndarray, length: int) -> np.ndarray:
    """local-p's predicted position p_t [T] for each step's query [T, H] (eq. 9)."""
    mask = torch.ones(len(queries), length, dtype=torch.bool)  # [T, S]: one sentence, every step
    return model.decoder.attention.position(torch.from_numpy(queries), mask).numpy()


def alignment_agreement(model: Seq2Seq, corpus: Corpus) -> tuple[float, float]:
    """Share of test target words (not <eos>) whose largest weight is on the word they translate:
    for the articles "le"/"la" (aligned to "the", though the noun decides the gender) and for the
    other words (nouns, adjectives, verbs)."""
    hits, total = np.zeros(2), np.zeros(2)  # [other words, articles]
    for pair, (src, tgt) in zip(corpus.encoded["test"], corpus.tokens["test"]):
        weights, _ = teacher_forced_steps(model, pair)
        gold = gold_alignment(src, tgt)
        article = np.array([word in ("le", "la") for word in tgt], dtype=int)  # 1 at articles
        np.add.at(hits, article, weights[: len(gold)].argmax(axis=1) == np.array(gold))
        np.add.at(total, article, 1)
    return float(hits[0] / total[0]), float(hits[1] / total[1])


def heatmap(ax: plt.Axes, weights: np.ndarray, src: list[str], out: list[str], title: str) -> None:
    ax.imshow(weights, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(src)), labels=src, rotation=90, fontsize=8)
    ax.set_yticks(range(len(out)), labels=out, fontsize=8)
    ax.set_title(title, fontsize=8)


def showcase(corpus: Corpus) -> int:
    """The first test sentence with an adjective in both noun phrases (the alignment crosses twice)."""
    return next((i for i, (src, _) in enumerate(corpus.tokens["test"]) if len(src) == 7), 0)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    n_train, size, epochs = (300, 16, 1) if args.quick else (3000, 64, 4)
    corpus = corpus_from_examples({"train": TOY.toy_translation(n_train, 1), "valid": TOY.toy_translation(100, 2),
                                   "test": TOY.toy_translation(100 if args.quick else 300, 3)})
    index = showcase(corpus)
    src, tgt = corpus.tokens["test"][index]
    rows = [*tgt, "<eos>"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 8.6), layout="constrained")
    results: dict[str, float] = {}
    for ax, (name, (preset, formula, cls, parts)) in zip(axes.flat, MODELS.items()):
        print(f"{name}: score = {formula}")
        for line in formula_lines(cls, parts):
            print(f"    {line}")
        config = small_config(preset, size=size, epochs=epochs,
                              extra=["train.teacher_forcing=1.0", f"model.decoder.attention_window={WINDOW}"])
        model = new_model(config, corpus)
        valid_loss = min(h.valid_loss for h in train(model, config, corpus))
        outputs = greedy_tokens(model, corpus, corpus.encoded["test"])
        exact = sum(out == ref for out, (_, ref) in zip(outputs, corpus.tokens["test"])) / len(outputs)
        agreement, articles = alignment_agreement(model, corpus)
        weights, queries = teacher_forced_steps(model, corpus.encoded["test"][index])
        print(f"  valid loss {valid_loss:.3f}, test exact match {exact:.0%}, largest weight on the aligned word: "
              f"{agreement:.0%} of nouns, adjectives and verbs, {articles:.0%} of articles")
        results |= {f"{name}: valid loss": valid_loss, f"{name}: exact match": exact,
                    f"{name}: alignment agreement": agreement, f"{name}: article agreement": articles,
                    f"{name}: max row sum": float(weights.sum(axis=1).max()),
                    f"{name}: rows sum to 1": float(np.abs(weights.sum(axis=1) - 1).max())}
        heatmap(ax, weights, src, rows, f"{name} ({preset})\nscore = {formula if name != 'local-p' else 'local-p'}\n"
                f"valid loss {valid_loss:.2f}, exact {exact:.0%}; "
                f"aligned: words {agreement:.0%}, articles {articles:.0%}")
        if name == "local-p":
            positions = local_p_positions(model, queries, len(src))
            outside = np.abs(np.arange(len(src))[None, :] - positions[:, None]) > WINDOW  # [T, S]
            results["local-p: weight outside the window"] = float(weights[outside].sum())
            results["local-p: positions in [0, S]"] = float(((positions >= 0) & (positions <= len(src))).all())
            print(f"  p_t per step: {' '.join(f'{p:.1f}' for p in positions)}; row sums "
                  f"{' '.join(f'{w:.2f}' for w in weights.sum(axis=1))}")
            # distances are s - p_t with s = 0 .. S_x - 1, the heatmap's cell centres: p_t plots on the same axis
            ax.plot(positions, range(len(rows)), "o-", color="white", markersize=4, label="p_t")
            ax.set_xlim(-0.5, len(src) - 0.5)  # p_t may lie right of the last word's centre (it is in [0, S_x])
            ax.legend(loc="lower left", fontsize=7)
            plot_positions(axes.flat[5], positions, weights, gold_alignment(src, tgt), rows)
    fig.suptitle(f"The same sentence, five attentions (hidden {size}, {n_train} training pairs, {epochs} epoch(s); "
                 f"each row: the weights that predict that word, fed the reference)", fontsize=9)
    save_figure(fig, args.out, FIGURE)
    return results


def plot_positions(ax: plt.Axes, positions: np.ndarray, weights: np.ndarray, gold: list[int], rows: list[str]) -> None:
    """local-p's p_t per step, its window [p_t - D, p_t + D], the aligned source word and the largest weight."""
    steps = np.arange(len(rows))
    ax.fill_between(steps, positions - WINDOW, positions + WINDOW, alpha=0.2, label=f"window, D = {WINDOW}")
    ax.plot(steps, positions, "o-", label="p_t")
    ax.plot(steps, weights.argmax(axis=1), "s", label="largest weight")
    ax.plot(steps[: len(gold)], gold, "x", markersize=9, label="aligned source word")
    ax.set_xticks(steps, labels=rows, rotation=90, fontsize=8)
    ax.set(ylabel="source position", title="local-p: predicted position per step")
    ax.legend(fontsize=7)


if __name__ == "__main__":
    main()
