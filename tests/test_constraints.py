"""Syntax-aware decoding: bracket pruning during the search (greedy, sampling, beam)."""

from __future__ import annotations

import math

import pytest
import torch
from test_beam import EOS, PAD, SOS, ScriptedModel, run_scripted

from seq2seq.decoding.constraints import PythonBracketConstraint
from seq2seq.decoding.greedy import greedy_decode
from seq2seq.decoding.sampling import sample_decode

OPEN, CLOSE, X = 4, 5, 6  # the scripted model's tokens A, B, C read as "(", ")", "x"
TOKENS = ["<pad>", "<unk>", "<sos>", "<eos>", "(", ")", "x"]


def constraint() -> PythonBracketConstraint:
    return PythonBracketConstraint(TOKENS, eos_index=EOS)


def test_bracket_states_and_banned_tokens() -> None:
    rules = PythonBracketConstraint(["<eos>", "(", ")", "[", "]", "{", "}", "x"], eos_index=0)
    state = rules.start()
    for token in (1, 3, 7):  # ( [ x
        state = rules.advance(state, token)
    assert state == ("(", "[")
    banned = rules.banned([rules.start(), state, ("(",)], torch.zeros(3, 8))
    # empty prefix: every closer banned, <eos> allowed
    assert banned[0].tolist() == [False, False, True, False, True, False, True, False]
    # inside "( [": only "]" may close, and the output may not end
    assert banned[1].tolist() == [True, False, True, False, False, False, True, False]
    assert banned[2].tolist() == [True, False, False, False, True, False, True, False]
    assert rules.advance(state, 4) == ("(",)


def test_vocabulary_without_brackets_bans_nothing() -> None:
    rules = PythonBracketConstraint(["<eos>", "x", "'('"], eos_index=0)  # a string literal is not a bracket
    assert not rules.banned([rules.start()], torch.zeros(1, 3)).any()
    assert rules.advance(rules.start(), 2) == ()


# The model wants ")" first (unmatched), then after "(" it wants to stop (unclosed).
GREEDY_TRAPS = {
    (): {CLOSE: 0.6, OPEN: 0.3, EOS: 0.1},
    (OPEN,): {EOS: 0.5, X: 0.3, CLOSE: 0.2},
    (OPEN, X): {EOS: 0.7, CLOSE: 0.3},
    (OPEN, X, CLOSE): {EOS: 0.9, X: 0.1},
}


def _greedy(model: ScriptedModel, rules: PythonBracketConstraint | None):
    src = torch.tensor([[1, 1, 1]])
    return greedy_decode(model, src, torch.tensor([3]), src != 0, sos_index=SOS, eos_index=EOS, max_len=6,
                         constraint=rules)[0]


def test_greedy_with_constraint_takes_the_best_allowed_token_and_keeps_model_scores() -> None:
    plain = _greedy(ScriptedModel(GREEDY_TRAPS, default={EOS: 1.0}), None)
    assert plain.tokens == [CLOSE]  # ")" : can never parse
    constrained = _greedy(ScriptedModel(GREEDY_TRAPS), constraint())
    assert constrained.tokens == [OPEN, X, CLOSE] and constrained.finished
    # scores are the model's own probabilities, not renormalised over the allowed tokens
    assert constrained.token_log_probs == pytest.approx([math.log(p) for p in (0.3, 0.3, 0.3, 0.9)], abs=1e-5)


def test_beam_with_constraint_never_finishes_with_unbalanced_brackets() -> None:
    found = run_scripted(ScriptedModel(GREEDY_TRAPS, default={EOS: 1.0}), beam_size=3, nbest=3, constraint=constraint())
    finished = [h for h in found if h.finished]
    # "" (p = 0.1), "( )" (0.06) and "( x )" (0.024) are valid; ")" (0.6) and "( x" are pruned
    assert [h.tokens for h in finished] == [[], [OPEN, CLOSE], [OPEN, X, CLOSE]]
    for hypothesis in finished:
        depth = 0
        for token in hypothesis.tokens:
            depth += {OPEN: 1, CLOSE: -1}.get(token, 0)
            assert depth >= 0
        assert depth == 0
    unconstrained = run_scripted(ScriptedModel(GREEDY_TRAPS, default={EOS: 1.0}), beam_size=3, nbest=3)
    assert unconstrained[0].tokens == [CLOSE]


def test_sampling_with_constraint_only_draws_allowed_tokens() -> None:
    src = torch.tensor([[1, 1, 1]] * 64)
    found = sample_decode(ScriptedModel(GREEDY_TRAPS, default={EOS: 0.5, X: 0.5}), src, torch.tensor([3] * 64), src != 0,
                          sos_index=SOS, eos_index=EOS, max_len=6, seed=0, constraint=constraint())
    for hypothesis in found:
        assert hypothesis.tokens[:1] != [CLOSE]
        if hypothesis.finished:
            assert hypothesis.tokens.count(OPEN) == hypothesis.tokens.count(CLOSE)
    assert PAD not in {t for h in found for t in h.tokens}
