"""Batched greedy decoding: at each step take the most probable token, until ``<eos>`` or ``max_len``."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch

from seq2seq.decoding.loop import Advance, decode_loop
from seq2seq.models.seq2seq import Seq2Seq

if TYPE_CHECKING:
    from seq2seq.decoding.constraints import PrefixConstraint

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Hypothesis:
    """One decoded sequence. ``tokens`` exclude ``<eos>``; ``token_log_probs`` include it when emitted."""

    tokens: list[int]
    token_log_probs: list[float]
    attention: torch.Tensor | None  # [T, S] over the example's real source positions, or None
    finished: bool  # False when max_len was reached before <eos>

    @property
    def score(self) -> float:
        return float(sum(self.token_log_probs))


@torch.inference_mode()
def greedy_decode(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    src_mask: torch.Tensor,
    *,
    sos_index: int,
    eos_index: int,
    max_len: int,
    constraint: PrefixConstraint | None = None,
    src_copy: torch.Tensor | None = None,
) -> list[Hypothesis]:
    """Decode a padded batch ``src`` [B, S]; one hypothesis per example, in batch order.

    With a ``constraint`` the most probable *allowed* token is taken at each step. ``src_copy``
    [B, S] is what a copy model needs (``Batch.src_copy``); its outputs may then hold extended ids."""
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")

    def choose(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        best_log_prob, best = torch.log_softmax(logits, dim=-1).max(dim=-1)  # [B], [B]
        return best, best_log_prob

    return decode_single_path(model, src, src_lengths, src_mask, sos_index=sos_index, eos_index=eos_index,
                              max_len=max_len, choose=choose, constraint=constraint, src_copy=src_copy)


def decode_single_path(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    src_mask: torch.Tensor,
    *,
    sos_index: int,
    eos_index: int,
    max_len: int,
    choose: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    constraint: PrefixConstraint | None = None,
    src_copy: torch.Tensor | None = None,
) -> list[Hypothesis]:
    """Greedy decoding and sampling: the shared loop (:func:`seq2seq.decoding.loop.decode_loop`)
    with a :class:`SinglePath` strategy that extends each example by ``choose``."""
    strategy = SinglePath(batch_size=src.size(0), src_lengths=src_lengths.cpu().tolist(), eos_index=eos_index,
                          max_len=max_len, choose=choose, constraint=constraint, device=src.device)
    return decode_loop(model, src, src_lengths, src_mask, sos_index=sos_index, strategy=strategy, src_copy=src_copy)


class SinglePath:
    """One hypothesis per example, extended by ``choose(logits [B, V]) -> (next tokens [B], their
    log-probabilities [B])`` until every example has emitted ``<eos>`` or ``max_len`` tokens. An
    example that has emitted ``<eos>`` leaves the batch, so later steps only compute the rest
    (``choose`` then sees fewer rows).

    A ``constraint`` sets the logits of banned tokens to -inf before ``choose`` sees them; the
    recorded log-probabilities stay the model's own (not renormalised over allowed tokens), so
    scores compare with unconstrained decoding and beam search.
    """

    def __init__(
        self,
        *,
        batch_size: int,
        src_lengths: list[int],
        eos_index: int,
        max_len: int,
        choose: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        constraint: PrefixConstraint | None,
        device: torch.device,
    ) -> None:
        self.max_steps, self.eos_index, self.choose, self.constraint = max_len, eos_index, choose, constraint
        self.src_lengths = src_lengths
        self.active = torch.arange(batch_size, device=device)  # [B']: the example of each row still decoding
        self.states = [] if constraint is None else [constraint.start(row) for row in range(batch_size)]
        # what each example emitted is written at its own row of these [B, T] tables
        self.tokens = torch.full((batch_size, max_len), eos_index, dtype=torch.long, device=device)
        self.log_probs = torch.zeros(batch_size, max_len, device=device)
        self.attention: torch.Tensor | None = None  # [B, T, S], made at the first step that returns attention
        self.steps = 0

    def step(self, step: int, logits: torch.Tensor, attention: torch.Tensor | None) -> Advance | None:
        """Choose each row's next token, record it, and drop the rows that emitted ``<eos>``."""
        logits = logits.float()  # [B', V]
        if self.constraint is None:
            prev, token_log_prob = self.choose(logits)  # [B'], [B']
        else:
            banned = self.constraint.banned(self.states, logits)  # [B', V]
            prev, _ = self.choose(logits.masked_fill(banned, -math.inf))
            token_log_prob = torch.log_softmax(logits, dim=-1).gather(1, prev.unsqueeze(1)).squeeze(1)  # [B']
            self.states = [self.constraint.advance(s, t) for s, t in zip(self.states, prev.tolist())]
        self.tokens[self.active, step] = prev
        self.log_probs[self.active, step] = token_log_prob
        if attention is not None:
            if self.attention is None:
                self.attention = torch.zeros(*self.tokens.shape, attention.size(-1), device=self.tokens.device)
            self.attention[self.active, step] = attention.float()
        self.steps = step + 1
        ended = prev == self.eos_index  # [B']
        n_ended = int(ended.sum())  # one device sync per step
        if not n_ended:
            return Advance(prev)
        if n_ended == ended.numel():
            return None
        keep = (~ended).nonzero().squeeze(1)  # [B'']
        self.active = self.active[keep]
        if self.constraint is not None:
            self.states = [self.states[r] for r in keep.tolist()]
        return Advance(prev[keep], state_rows=keep, memory_rows=keep)

    def finish(self) -> list[Hypothesis]:
        """One hypothesis per example, in batch order."""
        tokens, log_probs = self.tokens[:, : self.steps].cpu(), self.log_probs[:, : self.steps].cpu()  # [B, T]
        attention = None if self.attention is None else self.attention[:, : self.steps].cpu()  # [B, T, S]
        hypotheses = []
        for row, src_length in enumerate(self.src_lengths):
            ids = tokens[row].tolist()
            done = self.eos_index in ids
            length = ids.index(self.eos_index) if done else len(ids)
            scored = length + 1 if done else length  # the <eos> probability is part of the score
            weights = None if attention is None else attention[row, :scored, :src_length]
            hypotheses.append(Hypothesis(ids[:length], log_probs[row, :scored].tolist(), weights, done))
        return hypotheses


# search(src, src_lengths, src_mask, src_copy, examples): examples[b] is the input that batch row b holds
Search = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, list[int]], list[list[Hypothesis]]]


def decode_all(
    sources: list[list[int]],
    search: Search,
    *,
    pad_index: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    copy_sources: list[list[int]] | None = None,
    workers: int = 1,
) -> list[list[Hypothesis]]:
    """Run ``search(src, src_lengths, src_mask, src_copy, examples)`` over many encoded sources in
    length-sorted batches (``examples``: the position in ``sources`` of each batch row); the
    n-best lists come back in input order.

    ``copy_sources`` (for a copy model): each source as extended target ids
    (``CopyEncoding.src``), batched into ``src_copy`` [B, S]; without them ``src_copy`` is None.
    ``workers`` > 1 searches that many batches at once, in threads that share torch's intra-op
    threads (see :func:`in_parallel`); the results do not depend on it."""
    from seq2seq.data.batching import CopyEncoding, EncodedPair, bucketed_batches

    if copy_sources is not None and len(copy_sources) != len(sources):
        raise ValueError(f"{len(copy_sources)} copy sources for {len(sources)} sources")
    pairs = [
        EncodedPair(src=ids, tgt=[], copy=None if copy_sources is None else CopyEncoding(copy_sources[i], [], ()))
        for i, ids in enumerate(sources)
    ]
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    results: list[list[Hypothesis] | None] = [None] * len(pairs)
    batches = list(bucketed_batches(pairs, batch_size=batch_size, pad_index=pad_index, shuffle=False,
                                    with_target=False, copy=copy_sources is not None))

    def decode(batch) -> tuple[list[int], list[list[Hypothesis]]]:
        batch = batch.to(torch.device(device))
        return batch.indices, search(batch.src, batch.src_lengths, batch.src_mask, batch.src_copy, batch.indices)

    found = in_parallel(decode, batches, workers) if workers > 1 and len(batches) > 1 else map(decode, batches)
    for indices, hypotheses in found:
        for index, alternatives in zip(indices, hypotheses):
            results[index] = alternatives
    return [h for h in results if h is not None]


def in_parallel(function: Callable[[T], R], items: list[T], workers: int) -> list[R]:
    """``function`` over ``items``, ``workers`` at a time in threads, results in order.

    Meanwhile torch's intra-op threads are divided among the workers (2 threads: one each) and
    restored afterwards. A decoder step's matrix products are small, so two batches on one thread
    each use the cores better than one batch on two threads, and one batch's Python book-keeping
    overlaps the other's arithmetic (torch releases the GIL inside its operators). On 2 cores
    this made greedy decoding 1.27x and beam 5 1.07x faster (docs/BENCHMARKS.md).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seq2seq-decode") as pool:
            return list(pool.map(function, items))
    finally:
        torch.set_num_threads(threads)


def greedy_decode_all(
    model: Seq2Seq,
    sources: list[list[int]],
    *,
    sos_index: int,
    eos_index: int,
    pad_index: int,
    max_len: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    copy_sources: list[list[int]] | None = None,
) -> list[Hypothesis]:
    """Greedy-decode many encoded sources (``copy_sources``: see :func:`decode_all`); results come back in input order."""

    def search(
        src: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor, src_copy: torch.Tensor | None, examples: list[int]
    ) -> list[list[Hypothesis]]:
        found = greedy_decode(model, src, lengths, mask, sos_index=sos_index, eos_index=eos_index, max_len=max_len,
                              src_copy=src_copy)
        return [[hypothesis] for hypothesis in found]

    nbest = decode_all(sources, search, pad_index=pad_index, batch_size=batch_size, device=device,
                       copy_sources=copy_sources)
    return [hypotheses[0] for hypotheses in nbest]
