"""The library function behind ``seq2seq preprocess``: a corpus tokenized and numericalized once,
written as memory-mapped shards that training streams (``seq2seq train --shards DIR``).

One pass over the training examples, one shard at a time: each shard's pairs are tokenized,
length-filtered and written with *provisional* ids (numbered in order of first sight) while the
token counts grow; then the vocabularies are built from the counts, exactly as
:func:`seq2seq.data.corpus.build_corpus` builds them, and every shard is rewritten through a
provisional -> vocabulary id table. Only one shard's examples and tokens, the counts and the
held-out splits are in memory (the built-in task draws its train split as it goes; a data folder
is read whole), and the shards hold the same pairs, in the same order, as the in-memory corpus.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seq2seq.config import RunConfig
from seq2seq.data.corpus import build_tokenizers, stream_examples, tokenize_split
from seq2seq.data.shards import read_manifest, remap_shard, write_id_shard, write_manifest
from seq2seq.data.vocab import SPECIALS, Vocab

logger = logging.getLogger(__name__)


@dataclass
class PreprocessOutcome:
    manifest: Path
    pairs: dict[str, int]
    shards: int


class _ProvisionalIds:
    """Token -> provisional id (the specials keep theirs, then 4, 5, ... in order of first sight), and counts."""

    def __init__(self) -> None:
        self.ids = {token: index for index, token in enumerate(SPECIALS)}
        self.counts: Counter[str] = Counter()

    def encode(self, tokens: Sequence[str]) -> list[int]:
        self.counts.update(tokens)
        return [self.ids.setdefault(token, len(self.ids)) for token in tokens]

    def table(self, vocab: Vocab) -> np.ndarray:
        """[provisional ids] -> the vocabulary's id, ``<unk>`` for a token the vocabulary left out."""
        table = np.full(len(self.ids), Vocab.unk_index, dtype=np.int32)
        for token, index in self.ids.items():
            table[index] = vocab.stoi.get(token, Vocab.unk_index)
        return table


def preprocess(config: RunConfig, out: Path, *, shard_size: int = 100_000) -> PreprocessOutcome:
    """Tokenize and encode ``config.data``'s training pairs (vocabularies as ``config.vocab`` says) into
    shards of at most ``shard_size`` pairs in ``out``; valid and test are kept as text."""
    data = config.data
    if data.shards is not None:
        raise ValueError("data.shards is set: preprocess reads the raw data (data.format, data.path), not shards")
    if (data.src_subwords, data.tgt_subwords) != ("none", "none"):
        raise ValueError("preprocess: subword tokenization cannot be sharded yet; set data.src_subwords and "
                         "data.tgt_subwords to none, or train from the data itself")
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # the folder is incomplete until the new one is written
    held_out, train = stream_examples(data)
    src_tokenizer, tgt_tokenizer = build_tokenizers(data)
    src_ids, tgt_ids = _ProvisionalIds(), _ProvisionalIds()
    shards, dropped = [], 0
    while part := list(itertools.islice(train, shard_size)):
        # 1. tokenize and filter one shard's pairs as build_corpus does, 2. write them with provisional ids
        pairs, _ = tokenize_split(part, data, src_tokenizer=src_tokenizer, tgt_tokenizer=tgt_tokenizer)
        kept = [(src, tgt) for src, tgt in pairs if len(src) <= data.max_src_len and len(tgt) <= data.max_tgt_len]
        dropped += len(pairs) - len(kept)
        if kept:
            src = [src_ids.encode(tokens) for tokens, _ in kept]
            tgt = [[Vocab.sos_index, *tgt_ids.encode(tokens), Vocab.eos_index] for _, tokens in kept]
            shards.append(write_id_shard(out, f"train-{len(shards):05d}", src, tgt))
    if dropped:
        logger.info("dropped %d training pairs longer than %d/%d tokens", dropped, data.max_src_len, data.max_tgt_len)
    # 3. the vocabularies from the counts, 4. every shard through the provisional -> vocabulary table
    vocab = config.vocab
    src_vocab = Vocab.from_counts(src_ids.counts, min_freq=vocab.min_freq, max_size=vocab.max_size)
    tgt_vocab = Vocab.from_counts(tgt_ids.counts, min_freq=vocab.min_freq, max_size=vocab.max_size)
    src_table, tgt_table = src_ids.table(src_vocab), tgt_ids.table(tgt_vocab)
    shards = [remap_shard(out, entry, src_table=src_table, tgt_table=tgt_table) for entry in shards]
    manifest = write_manifest(out, shards=shards, held_out=held_out,
                              src_vocab=src_vocab, tgt_vocab=tgt_vocab, data=data)
    written = read_manifest(out)
    return PreprocessOutcome(manifest, written["pairs"], len(written["shards"]))
