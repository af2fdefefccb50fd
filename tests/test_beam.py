"""Beam search: the pure step and helpers, hand-computed hypotheses on scripted log-probabilities,
and properties on real tiny models (beam 1 == greedy, batch == alone, nbest, n-gram ban, attention)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_config

from seq2seq.data.batching import bucketed_batches, collate
from seq2seq.decoding.beam import (
    beam_search,
    beam_step,
    can_stop,
    length_penalty,
    max_lengths,
    normalized_score,
    repeated_ngram_mask,
)
from seq2seq.decoding.greedy import Hypothesis, greedy_decode
from seq2seq.decoding.scoring import score_references
from seq2seq.models.build import build_model
from seq2seq.models.state import DecoderState, Memory

PAD, SOS, EOS, A, B, C = 0, 2, 3, 4, 5, 6
VOCAB = 7
TINY = 1e-9  # probability of every token a script does not list


# --------------------------------------------------------------------------- scripted model
class ScriptedModel:
    """A stand-in for Seq2Seq whose next-token distribution depends only on the prefix.

    ``table`` maps a prefix (tuple of generated ids) to {token: probability}; prefixes not in the
    table use ``default``. The prefix travels in the decoder state (hidden [1, N, MAX + 1]: its
    length, then its tokens), so ``select`` reorders it exactly like a real state.
    """

    MAX = 16

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], default: dict[int, float] | None = None):
        self.table = table
        self.default = default or {A: 0.5, B: 0.5}
        self.decoder = self
        self.steps = 0
        self.rows_per_step: list[int] = []

    def eval(self) -> ScriptedModel:
        return self

    def encode(self, src, src_lengths, src_mask, *, src_copy=None):
        states = torch.ones(src.size(0), src.size(1), 1)  # [B, S, 1]
        return Memory(states, src_mask), DecoderState(torch.zeros(1, src.size(0), self.MAX + 1))

    def step(self, prev_tokens, state, memory):
        self.rows_per_step.append(prev_tokens.size(0))
        hidden = state.hidden.clone()  # [1, N, MAX + 1]
        logits = torch.full((prev_tokens.size(0), VOCAB), math.log(TINY))
        for row, token in enumerate(prev_tokens.tolist()):
            length = int(hidden[0, row, 0])
            if token != SOS:
                hidden[0, row, 1 + length] = token
                hidden[0, row, 0] = length = length + 1
            prefix = tuple(int(t) for t in hidden[0, row, 1 : 1 + length])
            for next_token, prob in self.table.get(prefix, self.default).items():
                logits[row, next_token] = math.log(prob)
        weights = memory.mask.float() / memory.mask.float().sum(dim=1, keepdim=True)  # [N, S] uniform
        return logits, DecoderState(hidden), weights


def run_scripted(model: ScriptedModel, **kwargs) -> list[Hypothesis]:
    src = torch.tensor([[1, 1, 1]])
    options = dict(sos_index=SOS, eos_index=EOS, pad_index=PAD, beam_size=2, max_len=6)
    options.update(kwargs)
    return beam_search(model, src, torch.tensor([3]), src != 0, **options)[0]


def test_beam_step_keeps_the_2k_best_candidates_and_only_expands_beam_0_at_step_0() -> None:
    log_probs = torch.log(torch.tensor([[[0.1, 0.6, 0.3], [0.5, 0.4, 0.1]]]))  # [B=1, K=2, V=3]
    scores, tokens, beams = beam_step(log_probs, torch.tensor([[-1.0, -2.0]]), step=1)
    expected = [(-1 + math.log(0.6), 1, 0), (-1 + math.log(0.3), 2, 0), (-2 + math.log(0.5), 0, 1),
                (-2 + math.log(0.4), 1, 1)]
    assert scores.shape == tokens.shape == beams.shape == (1, 4)
    assert scores[0].tolist() == pytest.approx([e[0] for e in expected])
    assert tokens[0].tolist() == [e[1] for e in expected] and beams[0].tolist() == [e[2] for e in expected]
    # step 0: beam 1 is a copy of beam 0 and is ignored; 3 real candidates, the 4th is -inf
    scores, tokens, beams = beam_step(log_probs, torch.zeros(1, 2), step=0)
    assert tokens[0, :3].tolist() == [1, 2, 0] and beams[0, :3].tolist() == [0, 0, 0]
    assert scores[0, 3] == -math.inf


def test_length_penalties_and_stopping_bound() -> None:
    assert length_penalty("none", 7, 0.6) == 1.0
    assert length_penalty("gnmt", 7, 0.6) == pytest.approx((12 / 6) ** 0.6)
    assert length_penalty("average", 4, 1.0) == 4.0
    with pytest.raises(ValueError, match="gnmt"):
        length_penalty("wu", 3, 1.0)
    h = Hypothesis([A, B], [math.log(0.5)] * 3, None, True)
    assert normalized_score(h, "average", 1.0) == pytest.approx(math.log(0.5))
    assert not can_stop(finished_scores=[-1.0], best_alive=-5.0, wanted=2, max_penalty=1.0)
    assert can_stop(finished_scores=[-1.0, -2.0], best_alive=-2.0, wanted=2, max_penalty=1.0)
    # with a penalty an alive -3 might still reach -3 / 2 = -1.5 > -2: go on
    assert not can_stop(finished_scores=[-1.0, -2.0], best_alive=-3.0, wanted=2, max_penalty=2.0)
    assert can_stop(finished_scores=[], best_alive=-math.inf, wanted=2, max_penalty=1.0)
    # only the wanted best count: an alive -1.5 can still beat the 2nd finished, never the 1st
    assert can_stop(finished_scores=[-1.0, -2.0], best_alive=-1.5, wanted=1, max_penalty=1.0)
    assert not can_stop(finished_scores=[-1.0, -2.0], best_alive=-1.5, wanted=2, max_penalty=1.0)
    assert not can_stop(finished_scores=[-2.0], best_alive=-1.5, wanted=1, max_penalty=1.0)
    assert max_lengths([3, 10], max_len=20, max_len_a=1.5, max_len_b=2) == [6, 17]
    assert max_lengths([3, 10], max_len=20, max_len_a=0.0, max_len_b=2) == [20, 20]


def test_repeated_ngram_mask() -> None:
    tokens = torch.tensor([[4, 5, 4, 6, 4], [4, 5, 6, 7, 8]])  # [N=2, t=5]
    mask = repeated_ngram_mask(tokens, n=2, vocab_size=9)
    assert mask[0].nonzero().flatten().tolist() == [5, 6]  # "4 5" and "4 6" exist; the prefix is 4
    assert not mask[1].any()
    assert repeated_ngram_mask(tokens, n=1, vocab_size=9)[1].nonzero().flatten().tolist() == [4, 5, 6, 7, 8]
    assert not repeated_ngram_mask(tokens, n=0, vocab_size=9).any()
    assert not repeated_ngram_mask(tokens[:, :1], n=2, vocab_size=9).any()


# "a" is best after one token, but its best continuation is <eos> (total 0.30), while
# "b b" (0.4 * 0.9 * 0.9 = 0.324) is better overall. Greedy returns "a"; beam 2 must return "b b".
TRAP = {
    (): {A: 0.6, B: 0.4},
    (A,): {EOS: 0.5, A: 0.25, B: 0.25},
    (B,): {B: 0.9, EOS: 0.1},
    (B, B): {EOS: 0.9, B: 0.1},
    (A, A): {EOS: 0.9, A: 0.1},
    (A, B): {EOS: 0.9, A: 0.1},
}


def test_early_eos_trap_the_longer_better_hypothesis_comes_first() -> None:
    best, second = run_scripted(ScriptedModel(TRAP), nbest=2)
    assert best.tokens == [B, B] and best.finished
    assert best.score == pytest.approx(math.log(0.4 * 0.9 * 0.9), abs=1e-5)
    assert best.token_log_probs == pytest.approx([math.log(0.4), math.log(0.9), math.log(0.9)], abs=1e-5)
    assert second.tokens == [A] and second.score == pytest.approx(math.log(0.3), abs=1e-5)
    # greedy (beam 1) falls into the trap
    (greedy,) = run_scripted(ScriptedModel(TRAP), beam_size=1)
    assert greedy.tokens == [A] and greedy.finished


# Without a penalty "a" (0.6 * 0.6 = 0.36) beats "b b" (0.4 * 0.8 * 0.8 = 0.256); dividing by
# the length (average, alpha 1) turns it round: log(.36) / 2 = -0.511 < log(.256) / 3 = -0.454.
PENALISED = {
    (): {A: 0.6, B: 0.4},
    (A,): {EOS: 0.6, A: 0.2, B: 0.2},
    (B,): {B: 0.8, EOS: 0.2},
    (B, B): {EOS: 0.8, B: 0.2},
}


def test_length_penalty_changes_the_winner() -> None:
    (plain,) = run_scripted(ScriptedModel(PENALISED))
    assert plain.tokens == [A]
    (averaged,) = run_scripted(ScriptedModel(PENALISED), length_penalty="average", alpha=1.0)
    assert averaged.tokens == [B, B]
    assert normalized_score(averaged, "average", 1.0) == pytest.approx(math.log(0.256) / 3, abs=1e-5)


def test_min_len_forbids_early_eos_and_max_len_returns_unfinished() -> None:
    eager = {(): {EOS: 0.9, A: 0.1}}  # <eos> is best at once; afterwards the default (a|b, no eos)
    (first,) = run_scripted(ScriptedModel(eager, default={EOS: 0.9, A: 0.05, B: 0.05}))
    assert first.tokens == [] and first.finished and first.score == pytest.approx(math.log(0.9), abs=1e-5)
    (forced,) = run_scripted(ScriptedModel(eager, default={EOS: 0.9, A: 0.05, B: 0.05}), min_len=2)
    assert len(forced.tokens) == 2 and forced.finished
    endless = run_scripted(ScriptedModel({}, default={A: 0.6, B: 0.4}), max_len=3, nbest=2)
    assert endless[0].tokens == [A, A, A]  # the second is one of the tied "a a b" orders
    assert [h.score for h in endless] == pytest.approx([math.log(0.6**3), math.log(0.6**2 * 0.4)], abs=1e-5)
    assert not any(h.finished for h in endless) and len(endless[0].token_log_probs) == 3
    limited = run_scripted(ScriptedModel({}, default={A: 0.6, B: 0.4}), max_len=50, max_len_a=1.0, max_len_b=1)
    assert len(limited[0].tokens) == 4  # 1.0 * 3 source tokens + 1


def test_finished_sentences_leave_the_batch() -> None:
    # example 0 finishes at step 1 for sure; example 1 never emits <eos> and runs to max_len
    model = ScriptedModel({(): {EOS: 0.99, A: 0.01}, (A,): {EOS: 1.0}}, default={A: 0.6, B: 0.4})

    class PerExample(ScriptedModel):  # example 1 reads a different script: its first step has no <eos>
        def encode(self, src, src_lengths, src_mask, *, src_copy=None):
            memory, state = super().encode(src, src_lengths, src_mask)
            hidden = state.hidden.clone()
            hidden[0, 1, 0], hidden[0, 1, 1] = 1, B  # pretend example 1 already emitted "b"
            return memory, DecoderState(hidden)

    model = PerExample(model.table, default=model.default)
    src = torch.tensor([[1, 1], [1, 1]])
    results = beam_search(model, src, torch.tensor([2, 2]), src != 0, sos_index=SOS, eos_index=EOS,
                          pad_index=PAD, beam_size=2, max_len=5)
    assert results[0][0].finished and not results[1][0].finished
    # the first step runs once per example; example 0's best candidate is then <eos> (0.99), which
    # no alive beam can beat, so it leaves before step 1: 2 examples, then example 1's 2 beams
    assert model.rows_per_step[:3] == [2, 2, 2]
    before = len(model.rows_per_step)
    results = beam_search(model, src, torch.tensor([2, 2]), src != 0, sos_index=SOS, eos_index=EOS,
                          pad_index=PAD, beam_size=2, max_len=5, nbest=2)
    assert [h.tokens for h in results[0]] == [[], [A]]  # the second hypothesis ends at step 1
    # 2 examples, then 2 x 2 beams, then example 0 (two finished) is dropped
    assert model.rows_per_step[before : before + 3] == [2, 4, 2]


def test_greedy_drops_examples_that_emitted_eos_from_later_steps() -> None:
    class PerExample(ScriptedModel):  # example 1 starts after "a a", whose best next token is <eos>
        def encode(self, src, src_lengths, src_mask, *, src_copy=None):
            memory, state = super().encode(src, src_lengths, src_mask)
            hidden = state.hidden.clone()
            hidden[0, 1, 0], hidden[0, 1, 1], hidden[0, 1, 2] = 2, A, A
            return memory, DecoderState(hidden)

    model = PerExample(TRAP)
    src = torch.tensor([[1, 1, 1], [1, 1, 0]])
    first, second = greedy_decode(model, src, torch.tensor([3, 2]), src != 0, sos_index=SOS, eos_index=EOS, max_len=5)
    assert model.rows_per_step == [2, 1]  # example 1 ends at step 1; step 2 computes example 0 alone
    assert (first.tokens, first.finished) == ([A], True)
    assert first.token_log_probs == pytest.approx([math.log(0.6), math.log(0.5)])
    assert (second.tokens, second.finished) == ([], True)
    assert second.token_log_probs == pytest.approx([math.log(0.9)])
    assert first.attention.shape == (2, 3) and second.attention.shape == (1, 2)


# --------------------------------------------------------------------------- real tiny models
@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: threads only add contention on a shared machine (6x faster with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_TRAINED: dict[tuple[str, int], object] = {}  # reverse_data is deterministic, so models can be shared


def _model(reverse_data, preset: str = "lstm-attention", *, train_steps: int = 0, extra: tuple[str, ...] = ()):
    if (preset, train_steps, extra) not in _TRAINED:
        _TRAINED[preset, train_steps, extra] = _build(reverse_data, preset, train_steps, extra)
    return _TRAINED[preset, train_steps, extra]


# Luong's input feeding: the decoder state also carries the attentional vector, which beams reorder.
INPUT_FEEDING = ("model.decoder.readout_size=24", "model.decoder.input_feeding=true")


def _build(reverse_data, preset: str, train_steps: int, extra: tuple[str, ...] = ()):
    src_vocab, tgt_vocab, _, encoded = reverse_data
    torch.manual_seed(0)
    model = build_model(tiny_config(preset, *extra).model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
    if train_steps:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        batches = list(bucketed_batches(encoded[:200], batch_size=32, pad_index=PAD, shuffle=True,
                                        generator=torch.Generator().manual_seed(0)))
        for step in range(train_steps):
            batch = batches[step % len(batches)]
            logits, _ = model(batch.src, batch.src_lengths, batch.src_mask, batch.tgt_input)
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.tgt_output, ignore_index=PAD)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    else:
        with torch.no_grad():  # like a trained model, never predict <pad> (beam search bans it, greedy does not)
            model.decoder.output.bias[PAD] = -1e4
    return model


def _batch(reverse_data, start: int, size: int):
    encoded = reverse_data[3]
    return collate(encoded[start : start + size], list(range(size)), pad_index=PAD)


OPTIONS = dict(sos_index=SOS, eos_index=EOS, pad_index=PAD)


@pytest.mark.parametrize(
    "train_steps, extra",
    [(0, ()), (30, ()), pytest.param(30, INPUT_FEEDING, id="30-input-feeding")],
)
def test_beam_1_equals_greedy_and_wider_beams_score_higher(reverse_data, train_steps: int, extra) -> None:
    """Beam 1 is greedy exactly. A wider beam is not *guaranteed* to beat greedy (the greedy
    prefix, or its <eos>, can be pruned: on the trained model beam 4 loses on 1 of 40 examples
    because three <eos> candidates rank 5th-7th behind 4 alive ones), so wider beams are checked
    on the whole set: never worse on average and worse on at most 1 example in 10."""
    model = _model(reverse_data, train_steps=train_steps, extra=extra)
    batch = _batch(reverse_data, 200, 40)
    args = (model, batch.src, batch.src_lengths, batch.src_mask)
    greedy = greedy_decode(*args, sos_index=SOS, eos_index=EOS, max_len=15)
    narrow = [hs[0] for hs in beam_search(*args, **OPTIONS, beam_size=1, max_len=15)]
    for g, b1 in zip(greedy, narrow):
        assert b1.tokens == g.tokens and b1.finished == g.finished
        assert b1.score == pytest.approx(g.score, abs=1e-4)
    both_finished = [i for i, g in enumerate(greedy) if g.finished]  # untrained: few finish within 15 steps
    assert len(both_finished) >= (20 if train_steps else 1)
    for beam_size in (2, 4):
        wide = [hs[0] for hs in beam_search(*args, **OPTIONS, beam_size=beam_size, max_len=15)]
        gains = [wide[i].score - greedy[i].score for i in both_finished]
        assert sum(gains) >= 0
        assert sum(gain < -1e-4 for gain in gains) <= len(gains) // 10


@pytest.mark.parametrize(
    "settings",
    [dict(length_penalty="none"), dict(length_penalty="gnmt", alpha=0.6), dict(length_penalty="average", alpha=1.0),
     dict(min_len=4, no_repeat_ngram_size=2)],
    ids=["none", "gnmt", "average", "min-len-and-ngram-ban"],
)
def test_stopping_at_the_nbest_finished_ones_finds_what_a_full_beam_of_finished_ones_does(reverse_data, settings) -> None:
    """nbest=n stops a sentence once no alive beam can beat its n-th best finished hypothesis;
    asking for the whole beam (nbest=K) waits for K of them. The n best must be the same, and the
    early stop must save decoder rows."""
    model = _model(reverse_data, "gru-attention", train_steps=20)
    batch = _batch(reverse_data, 200, 24)
    args = (model, batch.src, batch.src_lengths, batch.src_mask)
    options = dict(OPTIONS, beam_size=4, max_len=15, **settings)
    rows: list[int] = []
    step = model.decoder.step

    def counted(prev, state, memory):
        rows.append(prev.size(0))
        return step(prev, state, memory)

    model.decoder.step = counted
    try:
        best = beam_search(*args, **options, nbest=1)
        best_rows, rows[:] = sum(rows), []
        two = beam_search(*args, **options, nbest=2)
        two_rows, rows[:] = sum(rows), []
        full = beam_search(*args, **options, nbest=4)
    finally:
        del model.decoder.step
    assert sum(hs[0].finished for hs in best) >= 12
    for fewer in (best, two):
        for found, wanted in zip(fewer, full):
            assert [(h.tokens, h.finished) for h in found] == [(h.tokens, h.finished) for h in wanted[: len(found)]]
            assert [h.score for h in found] == pytest.approx([h.score for h in wanted[: len(found)]], abs=1e-5)
    assert rows[0] == batch.size  # the first step runs once per example, not once per beam
    assert best_rows <= two_rows < sum(rows)


def test_an_example_alone_equals_the_same_example_in_a_batch(reverse_data) -> None:
    model = _model(reverse_data, "gru-attention", train_steps=20)
    batch = _batch(reverse_data, 200, 12)  # different lengths: padding, and rows stop at different steps
    together = beam_search(model, batch.src, batch.src_lengths, batch.src_mask, **OPTIONS, beam_size=3,
                           max_len=12, nbest=2)
    for row in range(batch.size):
        length = int(batch.src_lengths[row])
        src = batch.src[row : row + 1, :length]
        (alone,) = beam_search(model, src, batch.src_lengths[row : row + 1], src != PAD, **OPTIONS,
                               beam_size=3, max_len=12, nbest=2)
        assert [h.tokens for h in alone] == [h.tokens for h in together[row]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in together[row]], abs=1e-4)


@pytest.mark.parametrize("extra", [(), INPUT_FEEDING], ids=["plain", "input-feeding"])
def test_greedy_alone_equals_greedy_in_a_batch(reverse_data, extra) -> None:
    """Rows leave the batch as they finish: what is left must decode as it would alone."""
    model = _model(reverse_data, "gru-attention", train_steps=20, extra=extra)
    batch = _batch(reverse_data, 200, 12)
    together = greedy_decode(model, batch.src, batch.src_lengths, batch.src_mask, sos_index=SOS, eos_index=EOS,
                             max_len=12)
    assert len({len(h.tokens) for h in together if h.finished}) > 1  # rows finish at different steps
    for row in range(batch.size):
        length = int(batch.src_lengths[row])
        src = batch.src[row : row + 1, :length]
        (alone,) = greedy_decode(model, src, batch.src_lengths[row : row + 1], src != PAD, sos_index=SOS,
                                 eos_index=EOS, max_len=12)
        assert (alone.tokens, alone.finished) == (together[row].tokens, together[row].finished)
        assert alone.token_log_probs == pytest.approx(together[row].token_log_probs, abs=1e-4)
        assert torch.allclose(alone.attention, together[row].attention, atol=1e-5)


def test_nbest_distinct_sorted_no_repeated_bigrams_and_attention(reverse_data) -> None:
    model = _model(reverse_data)
    batch = _batch(reverse_data, 200, 8)
    results = beam_search(model, batch.src, batch.src_lengths, batch.src_mask, **OPTIONS, beam_size=5,
                          max_len=20, nbest=3, length_penalty="gnmt", alpha=0.6)
    for row, hypotheses in enumerate(results):
        assert len(hypotheses) == 3
        assert len({tuple(h.tokens) for h in hypotheses}) == 3
        norms = [normalized_score(h, "gnmt", 0.6) for h in hypotheses]
        assert norms == sorted(norms, reverse=True)
        for h in hypotheses:
            assert h.attention.shape == (len(h.token_log_probs), int(batch.src_lengths[row]))
            assert torch.allclose(h.attention.sum(dim=-1), torch.ones(len(h.token_log_probs)), atol=1e-5)
    banned = beam_search(model, batch.src, batch.src_lengths, batch.src_mask, **OPTIONS, beam_size=3,
                         max_len=20, min_len=10, no_repeat_ngram_size=2)
    for (h,) in banned:
        assert len(h.tokens) >= 10
        bigrams = list(zip(h.tokens, h.tokens[1:]))
        assert len(bigrams) == len(set(bigrams))


def test_no_attention_model_gives_no_attention(reverse_data) -> None:
    model = _model(reverse_data, "lstm")
    batch = _batch(reverse_data, 200, 4)
    for (h,) in beam_search(model, batch.src, batch.src_lengths, batch.src_mask, **OPTIONS, max_len=8):
        assert h.attention is None


def test_score_of_the_greedy_output_equals_its_hypothesis_score(reverse_data) -> None:
    model = _model(reverse_data, train_steps=20)
    batch = _batch(reverse_data, 200, 10)
    greedy = greedy_decode(model, batch.src, batch.src_lengths, batch.src_mask, sos_index=SOS, eos_index=EOS,
                           max_len=15)
    rows = [[SOS, *h.tokens, EOS] if h.finished else [SOS, *h.tokens] for h in greedy]
    tgt = torch.full((len(rows), max(map(len, rows))), PAD)
    for i, ids in enumerate(rows):
        tgt[i, : len(ids)] = torch.tensor(ids)
    scores = score_references(model, batch.src, batch.src_lengths, batch.src_mask, tgt)
    assert scores.tolist() == pytest.approx([h.score for h in greedy], abs=1e-4)


@pytest.mark.parametrize(("name", "value"), [("beam_size", 0), ("nbest", 6), ("length_penalty", "wu"),
                                              ("alpha", -1.0), ("min_len", -1), ("no_repeat_ngram_size", -2)])
def test_invalid_arguments_are_named(name: str, value) -> None:
    with pytest.raises(ValueError, match=name.split("_")[0]):
        run_scripted(ScriptedModel(TRAP), **{"beam_size": 5, name: value})


@pytest.mark.parametrize("beam_size", [1, 3])
def test_decoding_batches_in_parallel_gives_the_same_outputs_in_order_and_restores_the_threads(
    reverse_data, beam_size: int
) -> None:
    from seq2seq.decoding.search import SamplingOptions, decode_sources

    model = _model(reverse_data, "gru-attention", train_steps=20)
    sources = [pair.src for pair in reverse_data[3][200:240]]
    options = dict(OPTIONS, max_len=12, beam_size=beam_size, nbest=beam_size, batch_size=6)  # 7 batches
    torch.set_num_threads(2)
    one = decode_sources(model, sources, workers=1, **options)
    two = decode_sources(model, sources, workers=2, **options)
    assert torch.get_num_threads() == 2  # divided among the workers only while they run
    assert len(two) == len(sources)
    for alone, parallel in zip(one, two):
        assert [(h.tokens, h.finished) for h in alone] == [(h.tokens, h.finished) for h in parallel]
        assert [h.score for h in alone] == pytest.approx([h.score for h in parallel], abs=1e-5)
    with pytest.raises(ValueError, match="one generator"):
        decode_sources(model, sources, workers=2, sampling=SamplingOptions(seed=1), **dict(options, beam_size=1, nbest=1))
    with pytest.raises(ValueError, match="workers must be at least 1"):
        decode_sources(model, sources, workers=0, **options)


def test_automatic_decode_workers() -> None:
    from seq2seq.decoding.search import decode_workers

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert decode_workers(0, "cpu") == 2
        assert decode_workers(0, "cuda") == 1  # resolving needs no GPU
        assert decode_workers(3, "cpu") == 3
        torch.set_num_threads(1)
        assert decode_workers(0, "cpu") == 1
    finally:
        torch.set_num_threads(threads)


class _BanFrom:
    """A constraint that bans every token once a prefix has ``length`` tokens."""

    def __init__(self, length: int) -> None:
        self.length = length

    def bind(self, examples) -> _BanFrom:
        return self

    def start(self, row: int = 0) -> tuple:
        return (0,)

    def advance(self, state: tuple, token: int) -> tuple:
        return (state[0] + 1,)

    def banned(self, states, scores: torch.Tensor, group: int = 1) -> torch.Tensor:
        return torch.tensor([[state[0] >= self.length] * scores.size(-1) for state in states], device=scores.device)


def test_a_search_with_every_continuation_banned_returns_its_alive_prefixes_unfinished() -> None:
    model = ScriptedModel({(): {A: 0.6, B: 0.4}}, default={A: 0.7, C: 0.3})
    # banned from the third token on: the two alive prefixes come back, unfinished, best first
    best, second = run_scripted(model, constraint=_BanFrom(2), nbest=2, max_len=6)
    assert (best.tokens, second.tokens) == ([A, A], [B, A]) and not best.finished and not second.finished
    assert best.score == pytest.approx(math.log(0.6 * 0.7)) and second.score == pytest.approx(math.log(0.4 * 0.7))
    # banned from the start: the empty prefix is all there is
    (only,) = run_scripted(model, constraint=_BanFrom(0), nbest=1, max_len=6)
    assert (only.tokens, only.token_log_probs, only.finished) == ([], [], False)


def test_no_repeat_ngram_size_in_greedy_and_beam_decoding(reverse_data) -> None:
    """decode_sources' no_repeat_ngram_size: greedy runs as a beam of one with the ban (without it, a
    beam of one is greedy), no output holds an n-gram twice, and sampling or CTranslate2 refuse it."""
    from seq2seq.decoding.search import SamplingOptions, decode_sources

    model = _model(reverse_data, "gru-attention", train_steps=20)
    sources = [pair.src for pair in reverse_data[3][200:240]]
    options = dict(OPTIONS, max_len=12, batch_size=16)

    def ngrams(tokens, n):
        return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]

    plain = decode_sources(model, sources, **options)
    repeating = [h[0] for h in plain if len(set(ngrams(h[0].tokens, 2))) < len(ngrams(h[0].tokens, 2))]
    assert repeating, "a model trained 20 steps should repeat itself somewhere"
    greedy = decode_sources(model, sources, no_repeat_ngram_size=2, **options)
    # the ban changes exactly the greedy outputs that repeated a bigram (a beam of one with no ban
    # in its way follows greedy's path, scores included)
    for before, after in zip(plain, greedy):
        if any(before[0] is h for h in repeating):
            assert after[0].tokens != before[0].tokens
        else:
            assert after[0].tokens == before[0].tokens and after[0].finished == before[0].finished
            assert after[0].token_log_probs == pytest.approx(before[0].token_log_probs, abs=1e-5)
    beam = decode_sources(model, sources, no_repeat_ngram_size=2, beam_size=3, nbest=3, **options)
    for hypothesis in [h[0] for h in greedy] + [h for hs in beam for h in hs]:
        assert len(set(ngrams(hypothesis.tokens, 2))) == len(ngrams(hypothesis.tokens, 2)), hypothesis.tokens
    with pytest.raises(ValueError, match="not with sampling"):
        decode_sources(model, sources, no_repeat_ngram_size=2, sampling=SamplingOptions(seed=1), **options)
    with pytest.raises(ValueError, match="must be >= 0"):
        decode_sources(model, sources, no_repeat_ngram_size=-1, **options)
