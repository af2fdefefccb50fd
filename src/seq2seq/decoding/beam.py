"""Batched beam search over the shared decoding loop: ``beam_search`` and its :class:`BeamStrategy`.

:func:`~seq2seq.decoding.beam_rules.beam_step` decides, purely, which (beam, token) candidates
survive a step (fairseq's ``BeamSearch.step``); :class:`BeamStrategy` keeps what that implies across
steps: each beam's history, every example's finished hypotheses, when an example stops and which
rows leave the batch (OpenNMT-py splits ``beam_search.py`` from ``decode_strategy.py`` the same
way). The loop itself (encode once, then ``decoder.step`` and ``select``) is the one greedy decoding
and sampling use: :func:`seq2seq.decoding.loop.decode_loop`.
"""

from __future__ import annotations

import math

import torch

from seq2seq.decoding.beam_rules import (
    LENGTH_PENALTIES,
    beam_step,
    can_stop,
    length_penalty,
    max_lengths,
    normalized_score,
    repeated_ngram_mask,
)
from seq2seq.decoding.constraints import PrefixConstraint
from seq2seq.decoding.greedy import Hypothesis
from seq2seq.decoding.loop import Advance, decode_loop
from seq2seq.models.seq2seq import Seq2Seq

# the pure rules are imported from here too (tests, the translator): they belong to beam search
__all__ = ["LENGTH_PENALTIES", "BeamStrategy", "beam_search", "beam_step", "can_stop", "length_penalty",
           "max_lengths", "normalized_score", "repeated_ngram_mask"]


def _check_arguments(
    *, beam_size: int, nbest: int, max_len: int, min_len: int, kind: str, alpha: float, ngram: int, max_len_a: float
) -> None:
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be between 1 and beam_size={beam_size}, got {nbest}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    if min_len < 0:
        raise ValueError(f"min_len must be >= 0, got {min_len}")
    if kind not in LENGTH_PENALTIES:
        raise ValueError(f"unknown length_penalty {kind!r}; valid: {', '.join(LENGTH_PENALTIES)}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (the stopping bound needs a growing penalty), got {alpha}")
    if ngram < 0:
        raise ValueError(f"no_repeat_ngram_size must be >= 0, got {ngram}")
    if max_len_a < 0:
        raise ValueError(f"max_len_a must be >= 0, got {max_len_a}")


@torch.inference_mode()
def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    src_mask: torch.Tensor,
    *,
    sos_index: int,
    eos_index: int,
    pad_index: int,
    beam_size: int = 5,
    max_len: int = 100,
    max_len_a: float = 0.0,
    max_len_b: int = 10,
    min_len: int = 0,
    length_penalty: str = "none",
    alpha: float = 0.6,
    nbest: int = 1,
    no_repeat_ngram_size: int = 0,
    constraint: PrefixConstraint | None = None,
    src_copy: torch.Tensor | None = None,
) -> list[list[Hypothesis]]:
    """Decode a padded batch ``src`` [B, S]; per example, its ``nbest`` best hypotheses.

    ``constraint`` bans, at every step, the tokens it proves cannot lead to a valid output
    (see :mod:`seq2seq.decoding.constraints`); banned tokens are treated like ``<pad>``.
    ``src_copy`` [B, S] is what a copy model needs (``Batch.src_copy``); it travels in the memory,
    so the search only sees a wider vocabulary.

    A hypothesis finishes only by emitting ``<eos>`` (never before ``min_len`` tokens); ``<pad>``
    is never emitted. An example stops when it holds ``nbest`` finished hypotheses that no
    alive one can beat (see ``can_stop``), at its maximum length, or when every continuation is
    banned; then, if fewer than ``nbest`` finished, its best alive hypotheses fill the list with
    ``finished=False``. Stopped examples
    leave the batch, so later steps only compute the rest. Results are sorted by normalised score.
    """
    _check_arguments(beam_size=beam_size, nbest=nbest, max_len=max_len, min_len=min_len, kind=length_penalty,
                     alpha=alpha, ngram=no_repeat_ngram_size, max_len_a=max_len_a)
    src_lens = src_lengths.cpu().tolist()
    strategy = BeamStrategy(
        src_lengths=src_lens, src_width=src.size(1), beam_size=beam_size, nbest=nbest,
        limits=max_lengths(src_lens, max_len=max_len, max_len_a=max_len_a, max_len_b=max_len_b),
        penalty_kind=length_penalty, alpha=alpha, eos_index=eos_index, pad_index=pad_index, min_len=min_len,
        no_repeat_ngram_size=no_repeat_ngram_size, constraint=constraint, device=src.device,
    )
    return decode_loop(model, src, src_lengths, src_mask, sos_index=sos_index, strategy=strategy, src_copy=src_copy)


def _hypothesis(
    tokens: torch.Tensor, log_probs: torch.Tensor, attention: torch.Tensor | None, *, src_length: int, finished: bool
) -> Hypothesis:
    """Build a Hypothesis from one row: tokens [T'] (no eos), log_probs [T], attention [T, S]."""
    weights = None if attention is None else attention[:, :src_length].cpu()  # [T, S_real]
    return Hypothesis(tokens.tolist(), log_probs.tolist(), weights, finished)


def _keep_best(kept: list[tuple[float, Hypothesis]], item: tuple[float, Hypothesis], cap: int) -> None:
    """Insert a (normalised score, hypothesis) and keep the ``cap`` best, best first. The sort is
    stable, so a later hypothesis that ties a kept one ranks behind it: ``can_stop`` relies on that
    when it stops at a tie."""
    kept.append(item)
    kept.sort(key=lambda pair: pair[0], reverse=True)
    del kept[cap:]


class BeamStrategy:
    """The book-keeping of a batched beam search around :func:`beam_step`, for the shared loop.

    Rows b*K .. b*K+K-1 hold the K beams of the b-th example still searching (``active[b]`` is
    its index in the batch); each row keeps its history (tokens, their log-probabilities and
    attention). Each example keeps its best finished hypotheses and, when it stops without
    ``nbest`` of them, its best alive ones as unfinished. Every example's K beams start from the
    same ``<sos>``, so the first step runs once per example and its outputs are tiled K times.
    """

    def __init__(
        self,
        *,
        src_lengths: list[int],
        src_width: int,
        beam_size: int,
        nbest: int,
        limits: list[int],
        penalty_kind: str,
        alpha: float,
        eos_index: int,
        pad_index: int,
        min_len: int,
        no_repeat_ngram_size: int,
        constraint: PrefixConstraint | None,
        device: torch.device,
    ) -> None:
        batch, beam = len(src_lengths), beam_size
        self.src_lengths, self.beam, self.nbest, self.limits = src_lengths, beam, nbest, limits
        self.kind, self.alpha, self.eos_index, self.pad_index = penalty_kind, alpha, eos_index, pad_index
        self.min_len, self.ngram, self.constraint = min_len, no_repeat_ngram_size, constraint
        self.max_steps = max(limits)
        self.tile = torch.arange(batch, device=device).repeat_interleave(beam)  # [B*K]
        self.active = list(range(batch))  # original example of each remaining sentence
        self.scores = torch.full((batch, beam), -math.inf, device=device)  # [B, K]; only beam 0 is alive at first
        self.scores[:, 0] = 0.0
        self.tokens = torch.zeros(batch * beam, 0, dtype=torch.long, device=device)  # [B*K, t]
        self.token_lps = torch.zeros(batch * beam, 0, device=device)  # [B*K, t]
        self.weights = torch.zeros(batch * beam, 0, src_width, device=device)  # [B*K, t, S], empty without attention
        self.states = [] if constraint is None else [constraint.start(b) for b in range(batch) for _ in range(beam)]
        self.finished: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(batch)]
        self.unfinished: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(batch)]

    def penalty(self, length: int) -> float:
        """The divisor of a raw score of ``length`` scored tokens (see ``length_penalty``)."""
        return float(length_penalty(self.kind, length, self.alpha))

    def step(self, step: int, logits: torch.Tensor, attention: torch.Tensor | None) -> Advance | None:
        """One step of the search on ``logits`` [N, V]: None once every example has stopped."""
        # 1. The first step ran once per example: tile its outputs to the K beams.
        if step == 0:
            logits, attention = logits[self.tile], None if attention is None else attention[self.tile]  # [B*K, ...]
        # 2. Score every next token of every alive beam, with the banned ones at -inf; keep the 2K best.
        log_probs = self.log_probs(step, logits)  # [N, V]
        n_active, vocab = len(self.active), log_probs.size(-1)
        new_scores, token_ids, beam_ids = beam_step(log_probs.view(n_active, self.beam, vocab), self.scores, step=step)
        parents = beam_ids + torch.arange(n_active, device=logits.device).unsqueeze(1) * self.beam  # [B', 2K] rows
        cand_lps = log_probs[parents.reshape(-1), token_ids.reshape(-1)].view(n_active, 2 * self.beam)  # [B', 2K]
        is_eos = token_ids == self.eos_index  # [B', 2K]
        # 2b. A sentence whose every continuation is banned keeps its alive hypotheses as unfinished
        #     ones (it stops in step 5), so that the search never returns fewer than it can.
        for b in (new_scores[:, 0] == -math.inf).nonzero().flatten().tolist():
            self.keep_alive_as_unfinished(b, step, with_attention=attention is not None)
        # 3. Candidates ending in <eos> among the first K are finished hypotheses.
        self.finish_eos_candidates(step, new_scores, is_eos, parents, cand_lps, attention)
        # 4. The first K candidates not ending in <eos> stay alive; extend their histories.
        rows, prev = self.extend_alive(new_scores, token_ids, parents, cand_lps, is_eos, attention)
        # 5. Stop sentences that are done, and drop them from every row table so later steps skip them.
        done = self.stopped(step, with_attention=attention is not None)
        state_rows, memory_rows = (rows, None) if step else (self.tile[rows], self.tile)
        if not any(done):
            return Advance(prev, state_rows, memory_rows)
        keep = [b for b, stopped in enumerate(done) if not stopped]
        if not keep:
            return None
        keep_rows = self.drop(keep)  # [B''*K]
        memory_rows = keep_rows if memory_rows is None else memory_rows[keep_rows]
        return Advance(prev[keep_rows], state_rows[keep_rows], memory_rows)

    def log_probs(self, step: int, logits: torch.Tensor) -> torch.Tensor:
        """[N, V] next-token log-probabilities, -inf at <pad>, at <eos> before ``min_len`` and at banned tokens."""
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # [N, V], a fresh tensor: banned in place
        vocab = log_probs.size(-1)
        log_probs[:, self.pad_index] = -math.inf
        if step < self.min_len:
            log_probs[:, self.eos_index] = -math.inf
        if self.ngram:
            log_probs.masked_fill_(repeated_ngram_mask(self.tokens, n=self.ngram, vocab_size=vocab), -math.inf)
        if self.constraint is not None:
            cumulative = log_probs + self.scores.reshape(-1, 1)  # [N, V]: how the beam will rank them
            log_probs.masked_fill_(self.constraint.banned(self.states, cumulative, group=self.beam), -math.inf)
        return log_probs

    def finish_eos_candidates(
        self,
        step: int,
        new_scores: torch.Tensor,
        is_eos: torch.Tensor,
        parents: torch.Tensor,
        cand_lps: torch.Tensor,
        attention: torch.Tensor | None,
    ) -> None:
        """Keep each candidate that ends in <eos> and ranks among the first K as a finished hypothesis."""
        beam = self.beam
        for b, j in ((is_eos[:, :beam] & (new_scores[:, :beam] > -math.inf)).nonzero().tolist()):
            row, example = int(parents[b, j]), self.active[b]
            lps = torch.cat([self.token_lps[row], cand_lps[b, j : j + 1]])  # [T]
            rows_attention = None if attention is None else torch.cat([self.weights[row], attention[row : row + 1]])
            hypothesis = _hypothesis(self.tokens[row], lps, rows_attention, src_length=self.src_lengths[example],
                                     finished=True)
            _keep_best(self.finished[example], (float(new_scores[b, j]) / self.penalty(step + 1), hypothesis), beam)

    def extend_alive(
        self,
        new_scores: torch.Tensor,
        token_ids: torch.Tensor,
        parents: torch.Tensor,
        cand_lps: torch.Tensor,
        is_eos: torch.Tensor,
        attention: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Make the first K candidates not ending in <eos> the new beams; returns the rows they
        extend [B'*K] and their tokens [B'*K]."""
        beam = self.beam
        order = torch.arange(2 * beam, device=is_eos.device) + is_eos.long() * 2 * beam  # eos ranks last
        alive = order.topk(beam, dim=1, largest=False).indices  # [B', K], best first
        self.scores = new_scores.gather(1, alive).masked_fill(is_eos.gather(1, alive), -math.inf)  # [B', K]
        rows = parents.gather(1, alive).reshape(-1)  # [B'*K]
        prev = token_ids.gather(1, alive).reshape(-1)  # [B'*K]
        self.tokens = torch.cat([self.tokens[rows], prev.unsqueeze(1)], dim=1)  # [B'*K, t+1]
        self.token_lps = torch.cat([self.token_lps[rows], cand_lps.gather(1, alive).reshape(-1, 1)], dim=1)
        if attention is not None:
            self.weights = torch.cat([self.weights[rows], attention[rows].unsqueeze(1)], dim=1)  # [B'*K, t+1, S]
        if self.constraint is not None:
            self.states = [self.constraint.advance(self.states[r], t) for r, t in zip(rows.tolist(), prev.tolist())]
        return rows, prev

    def stopped(self, step: int, *, with_attention: bool) -> list[bool]:
        """Per remaining sentence, whether it is done; at the length limit its alive hypotheses are kept."""
        done = []
        best_alive = self.scores[:, 0].tolist()
        for b, example in enumerate(self.active):
            at_limit = step + 1 >= self.limits[example]
            if at_limit:
                self.keep_alive_as_unfinished(b, step + 1, with_attention=with_attention)
            stop = can_stop(finished_scores=[s for s, _ in self.finished[example]], best_alive=best_alive[b],
                            wanted=self.nbest, max_penalty=self.penalty(self.limits[example]))
            done.append(at_limit or stop)
        return done

    def keep_alive_as_unfinished(self, b: int, length: int, *, with_attention: bool) -> None:
        """Keep sentence b's alive hypotheses (``length`` tokens each) as unfinished ones, unless it
        already holds ``nbest`` finished."""
        example = self.active[b]
        if len(self.finished[example]) >= self.nbest:
            return
        for k in range(self.beam):
            row, score = b * self.beam + k, float(self.scores[b, k])
            if score > -math.inf:
                hypothesis = _hypothesis(self.tokens[row], self.token_lps[row],
                                         self.weights[row] if with_attention else None,
                                         src_length=self.src_lengths[example], finished=False)
                _keep_best(self.unfinished[example], (score / self.penalty(max(1, length)), hypothesis), self.beam)

    def drop(self, keep: list[int]) -> torch.Tensor:
        """Keep only the sentences ``keep`` (indices into ``active``); returns their rows [B''*K]."""
        keep_sentences = torch.tensor(keep, device=self.scores.device)
        beams = torch.arange(self.beam, device=self.scores.device)
        keep_rows = (keep_sentences.unsqueeze(1) * self.beam + beams).reshape(-1)  # [B''*K]
        self.active = [self.active[b] for b in keep]
        self.scores = self.scores.index_select(0, keep_sentences)
        self.tokens, self.token_lps = self.tokens[keep_rows], self.token_lps[keep_rows]
        self.weights = self.weights[keep_rows]
        if self.constraint is not None:
            self.states = [self.states[r] for r in keep_rows.tolist()]
        return keep_rows

    def finish(self) -> list[list[Hypothesis]]:
        """Per example, its ``nbest`` hypotheses: the finished ones first, then the best unfinished."""
        return [[h for _, h in (finished + unfinished)[: self.nbest]]
                for finished, unfinished in zip(self.finished, self.unfinished)]
