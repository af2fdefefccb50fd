"""Small helpers shared by the teaching examples: command line, figures, tiny data and training.

Everything model-related comes from the ``seq2seq`` package itself (config presets,
``build_model``, the ``Trainer``, greedy decoding, metrics); this file only glues those
pieces together so that each example can stay about its one idea.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the examples write files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from seq2seq.config import RunConfig, build_config  # noqa: E402
from seq2seq.data.batching import EncodedPair, encode_pairs  # noqa: E402
from seq2seq.data.corpus import Corpus, tokenize_examples  # noqa: E402
from seq2seq.data.example import Example  # noqa: E402
from seq2seq.data.tokenizers import build_tokenizer  # noqa: E402
from seq2seq.data.vocab import Vocab  # noqa: E402
from seq2seq.decoding.greedy import greedy_decode_all  # noqa: E402
from seq2seq.models.build import build_model  # noqa: E402
from seq2seq.models.seq2seq import Seq2Seq  # noqa: E402
from seq2seq.training.stats import EpochStats  # noqa: E402
from seq2seq.training.trainer import Trainer, seed_everything  # noqa: E402

DEFAULT_OUT = Path("docs/img/learn")
CPU = torch.device("cpu")


def parse_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    """``--out DIR`` (where the figure goes) and ``--quick`` (tiny sizes, for the tests).

    Also pins PyTorch to one thread: the examples' models are so small that a second thread
    buys little, and on a shared machine two spinning threads per process are many times slower.
    """
    parser = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for the figure (default {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds (used by the tests)")
    torch.set_num_threads(1)
    return parser.parse_args(argv)


def save_figure(figure: Figure, out_dir: Path, name: str) -> None:
    """Write ``figure`` as PNG at a modest dpi (the committed figures stay well under 300 KB)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    figure.savefig(path, dpi=90)
    plt.close(figure)
    print(f"figure: {path}")


def corpus_from_examples(splits: Mapping[str, Sequence[Example]]) -> Corpus:
    """Tokenize, build vocabularies from ``train`` and encode every split, like ``build_corpus``
    does for files, but for examples generated in memory. Both sides are split on spaces."""
    tok = build_tokenizer("space")
    tokens = {name: tokenize_examples(items, src_tokenizer=tok, tgt_tokenizer=tok) for name, items in splits.items()}
    src_vocab = Vocab.build(src for src, _ in tokens["train"])
    tgt_vocab = Vocab.build(tgt for _, tgt in tokens["train"])
    encoded = {name: encode_pairs(pairs, src_vocab=src_vocab, tgt_vocab=tgt_vocab) for name, pairs in tokens.items()}
    return Corpus(tok, tok, src_vocab, tgt_vocab, {k: list(v) for k, v in splits.items()}, tokens, encoded)


def small_config(preset: str, *, size: int, epochs: int = 1, extra: Sequence[str] = ()) -> RunConfig:
    """A preset shrunk to ``size`` (embedding = hidden = attention size), without dropout so
    that the small runs are easy to compare, with a learning rate that suits small models."""
    return build_config(preset=preset, overrides=[
        *(f"model.{part}.{key}={size}" for part in ("encoder", "decoder") for key in ("embedding_size", "hidden_size")),
        f"model.decoder.attention_size={size}",
        "model.encoder.dropout=0.0",
        "model.decoder.dropout=0.0",
        "train.learning_rate=0.005",
        "train.batch_size=32",
        f"train.epochs={epochs}",
        "train.early_stopping_patience=100",  # the examples compare fixed budgets
        "train.device=cpu",
        *extra,
    ])


def new_model(config: RunConfig, corpus: Corpus) -> Seq2Seq:
    """The package's model for ``config``, initialised from ``train.seed`` (same seed, same start)."""
    seed_everything(config.train.seed)
    return build_model(config.model, src_vocab_size=len(corpus.src_vocab), tgt_vocab_size=len(corpus.tgt_vocab))


def train(model: Seq2Seq, config: RunConfig, corpus: Corpus) -> list[EpochStats]:
    """Train with the package's ``Trainer`` (in memory: no run directory) and return its epochs."""
    seed_everything(config.train.seed)
    trainer = Trainer(model=model, config=config.train, pad_index=Vocab.pad_index, device=CPU)
    history = trainer.fit(corpus.encoded["train"], corpus.encoded["valid"]).history
    model.eval()
    return history


def greedy_tokens(model: Seq2Seq, corpus: Corpus, pairs: Sequence[EncodedPair], *, max_len: int = 60) -> list[list[str]]:
    """Greedy outputs as target token lists (``<eos>`` and what follows it removed)."""
    found = greedy_decode_all(
        model, [pair.src for pair in pairs], sos_index=Vocab.sos_index, eos_index=Vocab.eos_index,
        pad_index=Vocab.pad_index, max_len=max_len,
    )
    return [corpus.tgt_vocab.decode(h.tokens) for h in found]
