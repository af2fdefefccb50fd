"""Multi-head attention: several alignments at once, and the one the decoder is shown.

One attention gives each output step one distribution over the source. Multi-head attention
(Vaswani et al. 2017, section 3.2.2) splits the attention width A into k heads of d = A / k
dimensions; each head projects the query and the encoder states its own way and attends on its
own, with the scaled dot product:

    head_i = softmax(q_i K_i^T / sqrt(d)) V_i       q_i = h_{t-1} W_i^Q, K_i = H_s W_i^K, V_i = H_s W_i^V
    c_t    = [head_1; ...; head_k] W^O

so one head can follow the word being translated while another watches, say, the noun that
decides an article's gender. Here the query is the recurrent decoder's previous state h_{t-1}
(``lstm-multihead``: Bahdanau's place in the step, Vaswani's score). The weights the decoder
returns (what search, copy and the heatmaps of 07 read) are the heads' *mean*, which still sums
to 1; :meth:`MultiHeadAttention.head_weights` gives each head's [B, k, S].

The script trains a small ``lstm-multihead`` model (4 heads) on example 07's synthetic
English -> French task (adjectives follow their nouns), steps its decoder through one test
sentence with the reference as input, asks the attention for each head's weights at every step
(the query of a step is ``state.top`` before ``decoder.step``), checks that against the package's
``seq2seq.models.multihead.attention_heads`` (one teacher-forced pass), and draws one heatmap per
head and their mean. On the test set it measures, per head, how often the largest weight falls on the
source word the target word translates, and how spread out each head is (entropy in bits).

    python examples/11_multihead.py --out docs/img/learn
"""

from __future__ import annotations

import importlib.util
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
from seq2seq.models.heads import attention_heads
from seq2seq.models.multihead import MultiHeadAttention
from seq2seq.models.seq2seq import Seq2Seq

FIGURE = "11_multihead.png"
PRESET = "lstm-multihead"
HEADS = 4


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (a file name that starts with a digit cannot be imported by name)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


LUONG = load_example("10_luong_attention")  # gold_alignment, heatmap, showcase; its TOY is example 07


@torch.inference_mode()
def heads_per_step(model: Seq2Seq, pair: EncodedPair) -> tuple[np.ndarray, np.ndarray]:
    """Step the decoder through one example's reference target by hand; return every head's weights
    [T, k, S] and the weights the decoder itself returned [T, S]. (The package does the same in one
    call, :func:`seq2seq.models.multihead.attention_heads`; :func:`head_statistics` checks they agree.)"""
    attention = model.decoder.attention
    assert isinstance(attention, MultiHeadAttention) and not model.decoder.input_feeding
    src = torch.tensor([pair.src])  # [1, S]
    memory, state = model.encode(src, torch.tensor([len(pair.src)]), torch.ones_like(src, dtype=torch.bool))
    heads, returned = [], []
    for prev in pair.tgt[:-1]:  # <sos> y_1 ... y_{T-1}: step t predicts y_t
        query = state.top  # [1, H]: without input feeding the step attends from h_{t-1}
        heads.append(attention.head_weights(query, memory.keys, memory.mask))  # [1, k, S]
        _, state, weights = model.decoder.step(torch.tensor([prev]), state, memory)
        returned.append(weights)  # [1, S]
    return torch.cat(heads).numpy(), torch.cat(returned).numpy()  # [T, k, S], [T, S]


def heads_from_package(model: Seq2Seq, pair: EncodedPair) -> np.ndarray:
    """Every head's weights [T, k, S] from the package's ``attention_heads`` (a teacher-forced pass)."""
    src = torch.tensor([pair.src])  # [1, S]
    heads = attention_heads(model, src, torch.tensor([len(pair.src)]), torch.ones_like(src, dtype=torch.bool),
                            torch.tensor([pair.tgt[:-1]]))  # [1, k, T, S]
    return heads[0].transpose(0, 1).numpy()  # [T, k, S]


def entropy_bits(weights: np.ndarray) -> float:
    """Mean entropy of the rows of ``weights`` [..., S], in bits (0: one-hot; log2 S: uniform)."""
    return float(-(weights * np.log2(np.clip(weights, 1e-12, None))).sum(axis=-1).mean())


def head_statistics(model: Seq2Seq, corpus: Corpus) -> dict[str, float]:
    """Per head and for the mean, over the test set: alignment agreement and entropy; and the checks
    (each head's rows sum to 1, the mean of the heads is what the decoder returned, and the package's
    ``attention_heads`` gives the heads that stepping by hand gives)."""
    hits, total = np.zeros(HEADS + 1), 0
    entropies, row_error, mean_error, package_error = [], 0.0, 0.0, 0.0
    for pair, (src, tgt) in zip(corpus.encoded["test"], corpus.tokens["test"]):
        heads, returned = heads_per_step(model, pair)  # [T, k, S], [T, S]
        package_error = max(package_error, float(np.abs(heads_from_package(model, pair) - heads).max()))
        gold = np.array(LUONG.gold_alignment(src, tgt))
        every = np.concatenate([heads, returned[:, None]], axis=1)[: len(gold)]  # [T', k + 1, S] (no <eos> row)
        hits += (every.argmax(axis=-1) == gold[:, None]).sum(axis=0)
        total += len(gold)
        entropies.append([entropy_bits(every[:, i]) for i in range(HEADS + 1)])
        row_error = max(row_error, float(np.abs(heads.sum(axis=-1) - 1).max()))
        mean_error = max(mean_error, float(np.abs(heads.mean(axis=1) - returned).max()))
    names = [f"head {i + 1}" for i in range(HEADS)] + ["mean"]
    mean_entropy = np.mean(entropies, axis=0)
    return {**{f"{name}: alignment agreement": hits[i] / total for i, name in enumerate(names)},
            **{f"{name}: entropy bits": float(mean_entropy[i]) for i, name in enumerate(names)},
            "heads: max |row sum - 1|": row_error, "max |mean of heads - returned weights|": mean_error,
            "max |attention_heads - heads stepped by hand|": package_error}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    n_train, size, epochs = (300, 16, 1) if args.quick else (3000, 64, 4)
    toy = LUONG.TOY
    corpus = corpus_from_examples({"train": toy.toy_translation(n_train, 1), "valid": toy.toy_translation(100, 2),
                                   "test": toy.toy_translation(50 if args.quick else 300, 3)})
    config = small_config(PRESET, size=size, epochs=epochs,
                          extra=["train.teacher_forcing=1.0", f"model.decoder.attention_heads={HEADS}"])
    model = new_model(config, corpus)
    valid_loss = min(h.valid_loss for h in train(model, config, corpus))
    outputs = greedy_tokens(model, corpus, corpus.encoded["test"])
    exact = sum(out == ref for out, (_, ref) in zip(outputs, corpus.tokens["test"])) / len(outputs)
    results = {"valid loss": valid_loss, "exact match": exact, **head_statistics(model, corpus)}
    print(f"{PRESET}, {HEADS} heads of {size // HEADS}: valid loss {valid_loss:.3f}, test exact match {exact:.0%}")
    for i in range(HEADS + 1):
        name = f"head {i + 1}" if i < HEADS else "mean"
        print(f"  {name:7s} largest weight on the aligned word {results[f'{name}: alignment agreement']:.0%}, "
              f"entropy {results[f'{name}: entropy bits']:.2f} bits")
    checks = ("heads: max |row sum - 1|", "max |mean of heads - returned weights|",
              "max |attention_heads - heads stepped by hand|")
    print("  checks: " + ", ".join(f"{key} = {results[key]:.1e}" for key in checks))

    index = LUONG.showcase(corpus)
    src, tgt = corpus.tokens["test"][index]
    heads, returned = heads_per_step(model, corpus.encoded["test"][index])
    fig, axes = plt.subplots(1, HEADS + 1, figsize=(3.0 * (HEADS + 1), 4.4), layout="constrained")
    for i, ax in enumerate(axes):
        name = f"head {i + 1}" if i < HEADS else "mean of the heads (returned)"
        key = f"head {i + 1}" if i < HEADS else "mean"
        LUONG.heatmap(ax, heads[:, i] if i < HEADS else returned, src, [*tgt, "<eos>"],
                      f"{name}\naligned {results[f'{key}: alignment agreement']:.0%}, "
                      f"{results[f'{key}: entropy bits']:.2f} bits")
    fig.suptitle(f"{PRESET}: {HEADS} heads of {size // HEADS} dimensions (hidden {size}, {n_train} training pairs, "
                 f"{epochs} epoch(s), valid loss {valid_loss:.2f}); rows: the weights that predict that word",
                 fontsize=9)
    save_figure(fig, args.out, FIGURE)
    return results


if __name__ == "__main__":
    main()
