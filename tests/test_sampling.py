"""Ancestral sampling: reproducible with a seed, top-k 1 is greedy, filters, and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_config

from seq2seq.data.batching import collate
from seq2seq.decoding.greedy import greedy_decode
from seq2seq.decoding.sampling import filter_logits, sample_decode
from seq2seq.models.build import build_model

SOS, EOS = 2, 3


@pytest.fixture
def setup(reverse_data):
    src_vocab, tgt_vocab, _, encoded = reverse_data
    model = build_model(tiny_config().model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
    batch = collate(encoded[:16], list(range(16)), pad_index=0)
    return model, (model, batch.src, batch.src_lengths, batch.src_mask)


def _tokens(hypotheses):
    return [h.tokens for h in hypotheses]


def test_same_seed_same_output_different_seed_different_output(setup) -> None:
    _, args = setup
    first = sample_decode(*args, sos_index=SOS, eos_index=EOS, max_len=10, seed=7)
    again = sample_decode(*args, sos_index=SOS, eos_index=EOS, max_len=10, seed=7)
    other = sample_decode(*args, sos_index=SOS, eos_index=EOS, max_len=10, seed=8)
    assert _tokens(first) == _tokens(again)
    assert [h.score for h in first] == [h.score for h in again]
    assert _tokens(first) != _tokens(other)  # 16 untrained, nearly uniform rows: a clash is hopeless


def test_top_k_1_is_greedy_tokens_and_scores(setup) -> None:
    _, args = setup
    greedy = greedy_decode(*args, sos_index=SOS, eos_index=EOS, max_len=10)
    sampled = sample_decode(*args, sos_index=SOS, eos_index=EOS, max_len=10, top_k=1, temperature=3.0, seed=1)
    assert _tokens(sampled) == _tokens(greedy)
    assert [h.score for h in sampled] == pytest.approx([h.score for h in greedy], abs=1e-5)
    assert [h.finished for h in sampled] == [h.finished for h in greedy]


def test_sampling_leaves_the_global_rng_alone(setup) -> None:
    _, args = setup
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample_decode(*args, sos_index=SOS, eos_index=EOS, max_len=5, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_filter_logits_top_k_and_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda filtered: (filtered > -math.inf)[0].tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_p=0.5)) == [True, False, False, False]  # 0.5 already reaches p
    assert kept(filter_logits(logits, top_p=0.7)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_p=0.9)) == [True, True, True, False]
    assert kept(filter_logits(logits, top_p=0.01)) == [True, False, False, False]  # the best always stays
    assert kept(filter_logits(logits[:, [3, 1, 0, 2]], top_p=0.7)) == [False, True, True, False]  # order-free


@pytest.mark.parametrize(("name", "value"), [("temperature", 0.0), ("temperature", -1.0), ("top_k", -1),
                                              ("top_p", 0.0), ("top_p", 1.5), ("max_len", 0)])
def test_invalid_arguments_raise_naming_the_argument(setup, name: str, value) -> None:
    _, args = setup
    options = {"max_len": 5, name: value}
    with pytest.raises(ValueError, match=name):
        sample_decode(*args, sos_index=SOS, eos_index=EOS, **options)
