"""The decoding loop that greedy, sampling and beam search share: it relies on nothing but
``encode``, ``decoder.step`` and ``select``, encodes once, and applies a strategy's row choices."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config

from seq2seq.decoding.beam import beam_search
from seq2seq.decoding.greedy import greedy_decode
from seq2seq.decoding.loop import Advance, decode_loop
from seq2seq.decoding.sampling import sample_decode
from seq2seq.models.build import build_model

PAD, SOS, EOS = 0, 2, 3


class Opaque:
    """A decoder state or memory that shows the search nothing but ``select``."""

    __slots__ = ("_value",)

    def __init__(self, value) -> None:
        self._value = value

    def select(self, index: torch.Tensor) -> Opaque:
        return Opaque(self._value.select(index))


class OpaqueModel:
    """A real model behind the decoder interface alone, counting its ``encode`` calls."""

    def __init__(self, model) -> None:
        self.model, self.decoder, self.encodes = model, self, 0

    def eval(self) -> OpaqueModel:
        self.model.eval()
        return self

    def encode(self, src, src_lengths, src_mask, *, src_copy=None):
        self.encodes += 1
        memory, state = self.model.encode(src, src_lengths, src_mask, src_copy=src_copy)
        return Opaque(memory), Opaque(state)

    def step(self, prev_tokens, state, memory):
        logits, state, weights = self.model.decoder.step(prev_tokens, state._value, memory._value)
        return logits, Opaque(state), weights


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model(tiny_config().model, src_vocab_size=12, tgt_vocab_size=10).eval()
    with torch.no_grad():
        model.decoder.output.bias[EOS] += 0.22  # outputs of several lengths, so rows leave the batch
    src = torch.tensor([[4, 5, 6, 7, 8], [8, 9, 0, 0, 0], [10, 11, 4, 0, 0], [5, 5, 5, 5, 5], [11, 0, 0, 0, 0],
                        [7, 6, 9, 10, 0]])
    return model, (src, (src != PAD).sum(dim=1), src != PAD)


SEARCHES = {
    "greedy": lambda model, batch: [[h] for h in greedy_decode(model, *batch, sos_index=SOS, eos_index=EOS, max_len=8)],
    "sampling": lambda model, batch: [
        [h] for h in sample_decode(model, *batch, sos_index=SOS, eos_index=EOS, max_len=8, seed=1)
    ],
    "beam": lambda model, batch: beam_search(model, *batch, sos_index=SOS, eos_index=EOS, pad_index=PAD,
                                             beam_size=3, nbest=2, max_len=8, no_repeat_ngram_size=2),
}


@pytest.mark.parametrize("name", SEARCHES)
def test_every_search_needs_only_encode_step_and_select_and_encodes_once(setup, name) -> None:
    model, batch = setup
    opaque = OpaqueModel(model)
    expected, found = SEARCHES[name](model, batch), SEARCHES[name](opaque, batch)
    assert opaque.encodes == 1
    assert len({len(h.tokens) for hs in expected for h in hs}) > 1  # rows left the batch at different steps
    for alternatives, alike in zip(expected, found):
        assert [(h.tokens, h.token_log_probs, h.finished) for h in alternatives] == [
            (h.tokens, h.token_log_probs, h.finished) for h in alike
        ]
        for h, g in zip(alternatives, alike):
            assert torch.equal(h.attention, g.attention)


class Duplicate:
    """A strategy of a few lines: feed example 0 twice and example 2 once, then compare rows."""

    max_steps = 5

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def step(self, step: int, logits: torch.Tensor, attention: torch.Tensor | None) -> Advance | None:
        self.seen.append(logits)
        if step == 1:
            return None
        rows = torch.tensor([0, 0, 2])
        return Advance(torch.tensor([4, 4, 4]), state_rows=rows, memory_rows=rows)

    def finish(self) -> list[torch.Tensor]:
        return self.seen


def test_the_loop_applies_the_strategys_rows_and_stops_when_it_says_so(setup) -> None:
    model, (src, lengths, mask) = setup
    seen = decode_loop(model, src, lengths, mask, sos_index=SOS, strategy=Duplicate())
    assert [tuple(logits.shape) for logits in seen] == [(6, 10), (3, 10)]  # stopped before max_steps
    # the two copies of example 0 read the same token from the same state and memory
    assert torch.equal(seen[1][0], seen[1][1])
    memory, state = model.encode(src[[2]], lengths[[2]], mask[[2]])
    _, state, _ = model.decoder.step(torch.tensor([SOS]), state, memory)
    alone, _, _ = model.decoder.step(torch.tensor([4]), state, memory)
    assert torch.allclose(seen[1][2], alone[0], atol=1e-6)
