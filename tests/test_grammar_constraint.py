"""``--constrain grammar``: the prefix rule of Python's parser, and searches that only write Python."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_beam import EOS, ScriptedModel, run_scripted

from seq2seq.data.python_syntax import parses, viable_prefix
from seq2seq.data.tokenizers import PythonTokenizer
from seq2seq.decoding.grammar import PythonGrammarConstraint
from seq2seq.decoding.greedy import greedy_decode

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize("prefix", [
    "x =", "foo (", "foo ( a ,", "if x", "if x :", "for i in", "[ x for", "x [ 1 :", "lambda", "a if b",
    "return None if timeout is", "'''doc", "d = { 'a' :", "x . append ( 4", "not", "try :", "",
    "def f ( a ) ->", "@ property\ndef f ( self ) ->",
])
def test_prefixes_that_python_can_complete_are_viable(prefix: str) -> None:
    assert viable_prefix(prefix)


@pytest.mark.parametrize("prefix", [
    "x = )", "print x", "x = y z", "foo ( a b", "x = = 3", "[ ( ]", "def 3", "x +* 2", "import 'os'",
])
def test_prefixes_that_no_continuation_mends_are_not(prefix: str) -> None:
    assert not viable_prefix(prefix)


def test_a_line_of_a_file_is_judged_in_its_context() -> None:
    for line in ("else :", "elif x > 1 :", "except ValueError as e :", "finally :", "try :", "def f ( self ) :",
                 "@property", "class A ( B ) :", "return x"):
        assert parses(line, unit="line"), line
        assert viable_prefix(line[: len(line) // 2], unit="line"), line
    assert not parses("else :") and not parses("def f ( self ) :")  # not whole programs
    assert not parses("else x", unit="line") and not viable_prefix("else x", unit="line")
    assert not parses("   ") and not parses("", unit="line")  # an empty output is not code


def test_every_prefix_of_real_code_is_viable() -> None:
    """No false negatives: the constraint never bans what a reference needs (checked on the whole
    CoNaLa train set and all Django lines when they are present; here a sample of both kinds)."""
    tokenizer = PythonTokenizer()
    samples = [("program", "df . groupby ( [ 'a' , 'b' ] ) . agg ( { 'c' : [ 'sum' , 'max' ] } )"),
               ("program", "print ( ' ' . join ( x for x in l if x ) )"),
               ("program", "x = [ i ** 2 for i in range ( 10 ) if i % 2 ]"),
               ("line", "return None if timeout is None else time . time ( ) + timeout"),
               ("line", "for key , value in sorted ( d . items ( ) , key = lambda kv : kv [ 1 ] ) :")]
    conala = DATA / "conala" / "train.json"
    if conala.exists():
        samples += [("program", t["snippet"]) for t in json.loads(conala.read_text())[:300]]
    for unit, code in samples:
        tokens = tokenizer.tokenize(code)
        if not parses(tokenizer.detokenize(tokens), unit=unit):
            continue
        for end in range(1, len(tokens)):
            prefix = tokenizer.detokenize(tokens[:end])
            assert viable_prefix(prefix, unit=unit), prefix


TOKENS = ["<pad>", "<unk>", "<sos>", "<eos>", "x", "=", "(", ")", "1"]
X, EQ, OPEN, CLOSE, ONE = 4, 5, 6, 7, 8


def grammar(**options) -> PythonGrammarConstraint:
    return PythonGrammarConstraint(TOKENS, eos_index=EOS, detokenize=PythonTokenizer().detokenize, **options)


def test_banned_tokens_follow_the_parser() -> None:
    rules = grammar(candidates=len(TOKENS))
    after_eq = rules.advance(rules.advance(rules.start(), X), EQ)  # "x ="
    mask = rules.banned([rules.start(), after_eq], torch.zeros(2, len(TOKENS)))
    allowed = [[TOKENS[i] for i in range(len(TOKENS)) if not mask[row, i]] for row in range(2)]
    assert allowed[0] == ["x", "(", "1"]  # nothing to end yet; "=" and ")" cannot start a program
    assert allowed[1] == ["x", "(", "1"]  # "x =" can neither end nor take "=" or ")"
    full = rules.advance(after_eq, ONE)  # "x = 1"
    assert not rules.banned([full], torch.zeros(1, len(TOKENS)))[0, EOS]


def test_only_the_best_scored_candidates_are_checked_and_a_dead_end_may_stop() -> None:
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0, 5.0, 4.0, 0.0, 0.0, 3.0]])
    one = grammar(candidates=2, wanted=1)  # greedy search: the first allowed token is enough
    mask = one.banned([one.start()], scores)
    assert [i for i in range(len(TOKENS)) if not mask[0, i]] == [X]  # "1" is never checked
    rules = grammar(candidates=2)  # wanted 2: "=" is refused, so the search goes on down the ranking
    mask = rules.banned([rules.start()], scores)
    assert [i for i in range(len(TOKENS)) if not mask[0, i]] == [X, ONE]
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 8.0, 1.0]])  # "=" and ")" first: widen the search
    mask = rules.banned([rules.start()], scores)
    assert not mask[0, ONE] and not mask[0, X] and mask[0, EQ]
    stuck = grammar().advance(rules.start(), CLOSE)  # ")" alone: nothing mends it, so it may only stop
    assert (~rules.banned([stuck], torch.zeros(1, len(TOKENS)))[0]).nonzero().flatten().tolist() == [EOS]


def test_copied_words_are_read_per_input() -> None:
    rules = grammar(copy_words=[("y",), ("'s'",)], candidates=20)
    batch = rules.bind([1, 0])  # row 0 holds input 1, row 1 input 0
    states = [batch.start(0), batch.start(1)]
    assert batch.advance(states[0], len(TOKENS)) == (0, ("'s'",))
    assert batch.advance(states[1], len(TOKENS)) == (1, ("y",))
    after = [batch.advance(batch.advance(state, X), EQ) for state in states]  # "x ="
    mask = batch.banned(after, torch.zeros(2, len(TOKENS) + 2))
    assert not mask[0, len(TOKENS)] and not mask[1, len(TOKENS)]  # "x = 's'" and "x = y" are fine
    assert mask[0, len(TOKENS) + 1] and mask[1, len(TOKENS) + 1]  # an id beyond the input's words: never


# The scripted model has 7 tokens; read 4, 5, 6 as "x", "=", "1". It wants to stop after "x =".
SEARCH_TOKENS = ["<pad>", "<unk>", "<sos>", "<eos>", "x", "=", "1"]
TRAPS = {
    (): {X: 0.9, EQ: 0.1},
    (X,): {EOS: 0.1, EQ: 0.9},
    (X, EQ): {EOS: 0.5, EQ: 0.3, 6: 0.2},
    (X, EQ, 6): {EOS: 0.6, EQ: 0.4},
}


def test_greedy_and_beam_write_only_programs_that_parse() -> None:
    detokenize = PythonTokenizer().detokenize
    rules = PythonGrammarConstraint(SEARCH_TOKENS, eos_index=EOS, detokenize=detokenize)
    model = ScriptedModel(TRAPS, default={EOS: 1.0})
    src = torch.tensor([[1, 1, 1]])
    plain = greedy_decode(model, src, torch.tensor([3]), src != 0, sos_index=2, eos_index=EOS, max_len=6)[0]
    assert plain.tokens == [X, EQ]  # "x =": does not parse
    constrained = greedy_decode(model, src, torch.tensor([3]), src != 0, sos_index=2, eos_index=EOS, max_len=6,
                                constraint=rules.bind([0]))[0]
    assert constrained.tokens == [X, EQ, 6] and constrained.finished  # "x = = " refused, "x = 1" taken
    assert constrained.token_log_probs == pytest.approx([math.log(p) for p in (0.9, 0.9, 0.2, 0.6)], abs=1e-5)
    found = run_scripted(ScriptedModel(TRAPS, default={EOS: 1.0}), beam_size=3, nbest=3, constraint=rules)
    # "x = 1" (0.9 * 0.9 * 0.2 * 0.6 = 0.0972), then "x" (0.09); "x =" (0.405) and "x = =" are pruned
    assert [h.tokens for h in found if h.finished][:2] == [[X, EQ, 6], [X]]
    for hypothesis in found:
        assert parses(detokenize([SEARCH_TOKENS[t] for t in hypothesis.tokens]))


def test_placeholders_are_checked_with_their_values_restored() -> None:
    from seq2seq.data.slots import extract_slots

    _, slots = extract_slots("convert tuple `(('aa',), ('bb',))` to a list")
    tokens = ["<pad>", "<unk>", "<sos>", "<eos>", "x", "=", "str_0", "'str_0'"]
    rules = PythonGrammarConstraint(tokens, eos_index=EOS, detokenize=PythonTokenizer().detokenize,
                                    slots=[slots], candidates=len(tokens)).bind([0])
    after_eq = rules.advance(rules.advance(rules.start(0), 4), 5)  # "x ="
    mask = rules.banned([after_eq], torch.zeros(1, len(tokens)))
    assert not mask[0, 6]  # x = (('aa',), ('bb',)): the value is code
    assert mask[0, 7]  # x = '(('aa',), ('bb',))': quotes inside quotes do not parse


def test_an_unfinished_output_is_closed_or_cut_to_the_longest_part_that_parses() -> None:
    from seq2seq.data.python_syntax import completed

    detokenize = PythonTokenizer().detokenize
    loop = "[ f . write ( x ) . write ( ) . write ( ) .".split()
    assert detokenize(completed(loop, detokenize)) == "[f.write(x).write().write()]"
    assert completed(["x", "=", "1"], detokenize) == ["x", "=", "1"]  # already whole: unchanged
    assert completed([")", "("], detokenize) == []  # nothing to keep
    assert completed(["else", ":"], detokenize, unit="line") == ["else", ":"]


def test_checking_only_the_best_candidates_finds_what_checking_all_finds() -> None:
    detokenize = PythonTokenizer().detokenize
    exhaustive = PythonGrammarConstraint(SEARCH_TOKENS, eos_index=EOS, detokenize=detokenize, candidates=7 * 3, wanted=7 * 3)
    lazy = PythonGrammarConstraint(SEARCH_TOKENS, eos_index=EOS, detokenize=detokenize, candidates=6, wanted=6)
    table = {**TRAPS, (X, EQ, EQ): {X: 0.5, 6: 0.5}, (6,): {EOS: 0.7, EQ: 0.3}}
    for beam in (2, 3):
        every = run_scripted(ScriptedModel(table, default={EOS: 0.6, X: 0.4}), beam_size=beam, nbest=beam,
                             constraint=exhaustive, max_len=5)
        best = run_scripted(ScriptedModel(table, default={EOS: 0.6, X: 0.4}), beam_size=beam, nbest=beam,
                            constraint=lazy, max_len=5)
        assert [(h.tokens, round(h.score, 6)) for h in every] == [(h.tokens, round(h.score, 6)) for h in best]


def test_layout_tokens_follow_python_tokenizer_rules_and_the_parser() -> None:
    tokens = ["<pad>", "<unk>", "<sos>", "<eos>", "<newline>", "<indent>", "<dedent>", "if", "x", ":", "pass", "="]
    rules = PythonGrammarConstraint(tokens, eos_index=EOS, detokenize=PythonTokenizer().detokenize, candidates=len(tokens))

    def allowed(*written: str) -> set[str]:
        state = rules.start()
        for token in written:
            state = rules.advance(state, tokens.index(token))
        mask = rules.banned([state], torch.zeros(1, len(tokens)))[0]
        return {tokens[i] for i in range(len(tokens)) if not mask[i]}

    assert "<newline>" not in allowed("if", "x")  # "if x" + newline: no continuation mends it
    assert "<newline>" in allowed("if", "x", ":") and "<indent>" not in allowed("if", "x", ":")
    assert allowed("if", "x", ":", "<newline>") == {"<indent>"}  # a block needs its indented body
    assert "<dedent>" not in allowed("x", "=", "x", "<newline>", "<indent>")  # no layout loops
    assert "<newline>" not in allowed("x", "=", "x", "<newline>")
    assert "<indent>" not in allowed("x", "=", "x", "<newline>")  # no block opened: no indentation
    assert "<eos>" not in allowed("x", "=", "x", "<newline>")  # an output does not end in hidden layout
    assert "<eos>" in allowed("x", "=", "x")


def test_an_unfinished_block_header_is_given_an_empty_body() -> None:
    from seq2seq.data.python_syntax import completed

    detokenize = PythonTokenizer().detokenize
    header = "with open ( 'f' , delimiter = ',' ) . read ( ) . decode (".split()
    assert detokenize(completed(header, detokenize)) == "with open('f', delimiter=',').read().decode():\n    pass"


def test_sampling_under_the_grammar_draws_among_several_allowed_tokens() -> None:
    from seq2seq.data.vocab import Vocab
    from seq2seq.decoding.grammar import output_constraint

    vocab = Vocab(["<pad>", "<unk>", "<sos>", "<eos>", "x", "y", "z", "="])
    tokenizer = PythonTokenizer()
    sampled = output_constraint("grammar", vocab, tokenizer, sampling=True).bind([0])
    greedy = output_constraint("grammar", vocab, tokenizer).bind([0])
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0, 3.0, 2.0, 1.0, 0.5]])
    assert (~sampled.banned([sampled.start()], scores)[0]).sum() == 3  # x, y, z: "=" cannot start a program
    assert (~greedy.banned([greedy.start()], scores)[0]).nonzero().flatten().tolist() == [4]


def test_the_constraint_never_refuses_a_token_of_real_code() -> None:
    """Every token of every reference, layout included, is allowed after its prefix, and <eos> after all of them."""
    tokenizer = PythonTokenizer()
    snippets = ["try :\n    f ( )\nexcept ValueError :\n    pass", "for x in y :\n    if x :\n        print ( x )\nz = 1",
                "with open ( 'f' ) as f :\n    data = f . read ( )", "def f ( a ) -> int :\n    return a"]
    conala = DATA / "conala" / "train.json"
    if conala.exists():
        snippets += [t["snippet"] for t in json.loads(conala.read_text())]
    references = [tokenizer.tokenize(code) for code in snippets]
    references = [r for r in references if parses(tokenizer.detokenize(r))]
    vocab = ["<pad>", "<unk>", "<sos>", "<eos>", *sorted({t for r in references for t in r})]
    index = {token: i for i, token in enumerate(vocab)}
    rules = PythonGrammarConstraint(vocab, eos_index=EOS, detokenize=tokenizer.detokenize)
    for reference in references:
        state = rules.start()
        for token in reference:
            assert rules._fits(state, index[token]), (tokenizer.detokenize(list(state[1])), token)
            state = rules.advance(state, index[token])
        assert rules._fits(state, EOS), reference
