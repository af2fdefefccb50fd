"""The library function behind ``seq2seq preprocess``: a corpus tokenized and numericalized once,
written as memory-mapped shards that training streams (``seq2seq train --shards DIR``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from seq2seq.config import RunConfig
from seq2seq.data.corpus import build_corpus
from seq2seq.data.shards import read_manifest, write_shards

logger = logging.getLogger(__name__)


@dataclass
class PreprocessOutcome:
    manifest: Path
    pairs: dict[str, int]
    shards: int


def preprocess(config: RunConfig, out: Path, *, shard_size: int = 100_000) -> PreprocessOutcome:
    """Read, tokenize and encode ``config.data`` (vocabularies as ``config.vocab`` says) and write the
    training pairs as shards of ``shard_size`` pairs into ``out``.

    This step holds the corpus in memory once (the readers and the vocabulary count need it);
    training from the shards then holds only the pairs' lengths and the current batches."""
    if config.data.shards is not None:
        raise ValueError("data.shards is set: preprocess reads the raw data (data.format, data.path), not shards")
    corpus = build_corpus(config.data, config.vocab)
    manifest = write_shards(
        out, train=corpus.encoded["train"], held_out={split: corpus.examples.get(split, []) for split in ("valid", "test")},
        src_vocab=corpus.src_vocab, tgt_vocab=corpus.tgt_vocab, data=config.data, shard_size=shard_size,
    )
    written = read_manifest(out)
    return PreprocessOutcome(manifest, written["pairs"], len(written["shards"]))
