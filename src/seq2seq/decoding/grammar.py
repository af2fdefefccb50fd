"""``--constrain grammar``: decoding that can only write Python that Python's own parser accepts.

Every prefix a search keeps is the prefix of some program (:func:`viable_prefix`), and a
hypothesis may end (``<eos>``) only when its text is a whole program (:func:`parses`), so every
finished output parses. The check is CPython's parser run on the detokenized prefix, not a copy
of Python's grammar: it cannot fall behind the language, and it is exact where a hand-written
pushdown automaton over tokens would approximate.

What it costs is one parse per (prefix, candidate token), so only the tokens a search could
choose are checked, in score order, until ``wanted`` of them are allowed: 1 for greedy search,
2K for a beam of K, whose K hypotheses of one input are checked together in the order of their
candidates' cumulative scores (beam search ranks the 2K best of a sentence). The ``candidates``
best are tried first, the next ones while fewer than ``wanted`` are allowed; sampling wants all
``candidates``. Everything not checked is
banned, which changes nothing for greedy or beam search; sampling draws among the allowed ones of
the ``candidates`` best. Verdicts are cached by text, and beams share most of
their prefixes. With ``data.slots`` the check reads the code with its placeholders restored
(``str_0`` may stand for a value that is not an identifier), from ``slots`` per input.

The decoder state stays a value: a hypothesis' constraint state is ``(row, tokens)``, a tuple that
beam search copies when it reorders rows. ``copy_words`` gives, per input of the decode call, the
source words that a copy model's ids >= V stand for; :meth:`bind` picks a batch's rows out of it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch

from seq2seq.data.python_syntax import Unit, parses, viable_prefix
from seq2seq.data.slots import Slot, restore_slots
from seq2seq.data.tokenizers import DEDENT, INDENT, NEWLINE, Tokenizer
from seq2seq.data.vocab import Vocab
from seq2seq.decoding.constraints import PrefixConstraint, python_constraint

State = tuple  # (row of the batch, the output's token texts so far)
LAYOUT = (NEWLINE, INDENT, DEDENT)
_PROBE = "x"  # a token after trailing layout, so that the detokenizer writes the layout out


def _layout_may_follow(layout: str, previous: str | None) -> bool:
    """NEWLINE ends a line of code; INDENT comes right after it; DEDENTs after it or each other
    (and only while a block is open, which the caller checks)."""
    if layout == NEWLINE:
        return previous is not None and previous not in LAYOUT
    if layout == INDENT:
        return previous == NEWLINE
    return previous in (NEWLINE, DEDENT)


class PythonGrammarConstraint:
    """A :class:`~seq2seq.decoding.constraints.PrefixConstraint` that keeps prefixes Python can complete.

    ``vocab_tokens[i]`` is the text of output token ``i``; ``detokenize`` turns a list of token
    texts into source code (the target tokenizer's). ``unit`` is what one output is, a
    ``program`` or a ``line`` of one (see :mod:`seq2seq.data.python_syntax`).
    """

    def __init__(
        self,
        vocab_tokens: Sequence[str],
        *,
        eos_index: int,
        detokenize: Callable[[Sequence[str]], str],
        unit: Unit = "program",
        copy_words: Sequence[Sequence[str]] | None = None,
        slots: Sequence[Sequence[Slot]] | None = None,
        candidates: int = 10,
        wanted: int | None = None,
    ) -> None:
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        self.vocab_tokens = list(vocab_tokens)
        self.eos_index, self.detokenize, self.unit, self.candidates = eos_index, detokenize, unit, candidates
        self.wanted = candidates if wanted is None else wanted
        self.copy_words, self.slots = copy_words, slots
        self.row_words: Sequence[Sequence[str]] = ()
        self.row_slots: Sequence[Sequence[Slot]] = ()
        # <pad>, <unk>, <sos>: never part of code (the layout tokens are, and <eos> has its own rule)
        self.never = {i for i, token in enumerate(self.vocab_tokens)
                      if token.startswith("<") and token.endswith(">") and token not in LAYOUT and i != eos_index}

    def bind(self, examples: Sequence[int]) -> PythonGrammarConstraint:
        """The constraint for a batch whose row b holds input ``examples[b]`` of the decode call."""
        bound = copy.copy(self)  # shares the vocabulary; only the rows' data differ
        bound.row_words = [] if self.copy_words is None else [self.copy_words[e] for e in examples]
        bound.row_slots = [] if self.slots is None else [self.slots[e] for e in examples]
        return bound

    def start(self, row: int = 0) -> State:
        return (row, ())

    def advance(self, state: State, token: int) -> State:
        row, tokens = state
        return (row, (*tokens, self._text(row, token)))

    def banned(self, states: Sequence[State], scores: torch.Tensor, group: int = 1) -> torch.Tensor:
        """[N, V'] True where token v may not follow hypothesis n: all but the allowed ones among the
        best-scored candidates (``scores`` [N, V'], higher is better; -inf is already banned).

        Rows come in runs of ``group`` hypotheses of one input (a beam, whose ``scores`` are then
        the candidates' cumulative scores): candidates are checked best first across the group,
        until ``wanted`` are allowed, since the search ranks them together."""
        device = scores.device
        scores = scores.detach().float().cpu()  # [N, V']
        n_rows, vocab = scores.shape
        mask = torch.ones(n_rows, vocab, dtype=torch.bool)
        for first in range(0, n_rows, group):
            block = scores[first : first + group].reshape(-1)  # [g * V']: the group's candidates
            allowed = self._allowed_in(states, first, block, vocab)
            for row, token in allowed:
                mask[row, token] = False
            if not allowed and group == 1:  # a dead end (the prefix check is generous): let it stop;
                mask[first, self.eos_index] = False  # a beam instead keeps its hypotheses as unfinished ones
        return mask.to(device)

    def _allowed_in(self, states: Sequence[State], first: int, block: torch.Tensor, vocab: int) -> list[tuple[int, int]]:
        """Up to ``wanted`` (row, token) pairs allowed, best first down ``block``'s ranking: its
        ``candidates`` best at once, then 64 at a time while too few are allowed."""
        width = min(max(self.candidates, self.wanted), block.numel())
        # ties: the lower token id first; kept a tensor, read in slices (a beam's block is K x V long)
        ranking = block.argsort(descending=True, stable=True)
        allowed = self._check(states, first, ranking[:width].tolist(), block, vocab, self.wanted)
        if len(allowed) >= self.wanted or width == block.numel() or block[ranking[width - 1]] == -math.inf:
            return allowed
        for start in range(width, block.numel(), 64):
            if block[ranking[start]] == -math.inf:
                break
            chunk = ranking[start : start + 64].tolist()
            allowed += self._check(states, first, chunk, block, vocab, self.wanted - len(allowed))
            if len(allowed) >= self.wanted:
                break
        return allowed

    def _check(
        self, states: Sequence[State], first: int, positions: Sequence[int], block: torch.Tensor, vocab: int, wanted: int
    ) -> list[tuple[int, int]]:
        """The allowed ones of ``positions`` (indices into ``block``, best first), at most ``wanted``."""
        allowed = []
        for position in positions:
            if block[position] == -math.inf:
                break  # best first: only banned ones follow
            row, token = first + position // vocab, position % vocab
            if token not in self.never and self._fits(states[row], token):
                allowed.append((row, token))
                if len(allowed) >= wanted:
                    break
        return allowed

    def _fits(self, state: State, token: int) -> bool:
        row, prefix = state
        if token == self.eos_index:  # a whole program, not ending in layout the detokenizer would hide
            return bool(prefix) and prefix[-1] not in LAYOUT and parses(self._code(row, prefix), unit=self.unit)
        text = self._text(row, token)
        if text is None:
            return False
        if text in LAYOUT:
            # Python's tokenizer writes NEWLINE after a line, then one INDENT or DEDENTs: nothing else
            # can make a layout token meaningful. Trailing layout is rendered (the detokenizer drops
            # it): "if x" + NEWLINE is "if x\n", which no continuation mends.
            previous = prefix[-1] if prefix else None
            depth = prefix.count(INDENT) - prefix.count(DEDENT)
            if not _layout_may_follow(text, previous) or (text == DEDENT and depth <= 0):
                return False
            probed = self._code(row, [*prefix, text, _PROBE])
            if text == INDENT:  # an indentation must be one a statement may start at: keep the probe
                return viable_prefix(probed, unit=self.unit)  # (after a DEDENT, "except" may be what comes)
            return viable_prefix(probed[: -len(_PROBE)], unit=self.unit)
        return viable_prefix(self._code(row, [*prefix, text]), unit=self.unit)

    def _code(self, row: int, tokens: Sequence[str]) -> str:
        """The source code that ``tokens`` stand for: their placeholders restored (``data.slots``), detokenized."""
        slots = self.row_slots[row] if row < len(self.row_slots) else ()
        return self.detokenize(restore_slots(list(tokens), slots) if slots else tokens)

    def _text(self, row: int, token: int) -> str | None:
        if token < len(self.vocab_tokens):
            return self.vocab_tokens[token]
        words = self.row_words[row] if row < len(self.row_words) else ()
        index = token - len(self.vocab_tokens)
        return words[index] if index < len(words) else None


def output_constraint(
    constrain: str | None,
    tgt_vocab: Vocab,
    tgt_tokenizer: Tokenizer,
    *,
    unit: Unit = "program",
    copy_words: Sequence[Sequence[str]] | None = None,
    slots: Sequence[Sequence[Slot]] | None = None,
    beam_size: int = 1,
    sampling: bool = False,
) -> PrefixConstraint | None:
    """The search constraint for ``constrain`` (None, ``python`` or ``grammar``) in a search of
    ``beam_size``; per input, ``copy_words``: the source words that a copy model's ids >= V stand
    for, and ``slots``: the values its placeholders stand for."""
    if constrain == "python":
        return python_constraint(tgt_vocab.itos, eos_index=tgt_vocab.eos_index)
    if constrain == "grammar":
        return PythonGrammarConstraint(tgt_vocab.itos, eos_index=tgt_vocab.eos_index, detokenize=tgt_tokenizer.detokenize,
                                       unit=unit, copy_words=copy_words, slots=slots, candidates=max(10, 2 * beam_size),
                                       wanted=10 if sampling else 1 if beam_size == 1 else 2 * beam_size)
    return None


__all__ = ["PythonGrammarConstraint", "output_constraint"]
