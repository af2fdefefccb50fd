"""Shared fixtures: tiny data sets and the location of the real data beside the repo."""

from __future__ import annotations

import pytest
import torch

from seq2seq.data.batching import encode_pairs
from seq2seq.data.tasks import generate_reverse
from seq2seq.data.tokenizers import build_tokenizer
from seq2seq.data.vocab import Vocab

@pytest.fixture(autouse=True)
def _deterministic():
    """Seed torch, and give the next test the thread count this one found: training sets it for the
    whole process (``train.threads``), which would make later tests depend on the order."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def reverse_data():
    """A tiny reversal task, tokenized and encoded: (src_vocab, tgt_vocab, train, test token pairs, encoded)."""
    tok = build_tokenizer("space")
    examples = generate_reverse(seed=3, n=240, vocab_size=8, min_len=2, max_len=6)
    pairs = [(tok.tokenize(e.src), tok.tokenize(e.tgt)) for e in examples]
    src_vocab = Vocab.build(s for s, _ in pairs)
    tgt_vocab = Vocab.build(t for _, t in pairs)
    encoded = encode_pairs(pairs, src_vocab=src_vocab, tgt_vocab=tgt_vocab)
    return src_vocab, tgt_vocab, pairs, encoded
