"""Batched beam search: a pure step, pure book-keeping helpers, and a driver over ``decoder.step``.

The step follows fairseq's ``BeamSearch.step``: add each beam's running score to its next-token
log-probabilities and keep the best ``2K`` (beam, token) candidates, so that up to K of them may
end with ``<eos>`` (set aside as finished) while K still stay alive. As in fairseq, a candidate
ending in ``<eos>`` is finished only when it ranks among the first K; with K = 1 this makes beam
search exactly greedy decoding.

Scores are raw sums of log-probabilities; a length penalty only divides them when hypotheses of
different lengths are compared (finished ones against each other, and in the stopping test).
"""

from __future__ import annotations

import math

import torch

from seq2seq.decoding.constraints import PrefixConstraint
from seq2seq.decoding.greedy import Hypothesis
from seq2seq.models.seq2seq import Seq2Seq

LENGTH_PENALTIES = ("none", "gnmt", "average")


def length_penalty(kind: str, length: int | torch.Tensor, alpha: float) -> float | torch.Tensor:
    """The divisor of a raw score for a hypothesis of ``length`` scored tokens (``<eos>`` included).

    - ``none``: 1.
    - ``gnmt``: ((5 + length) / 6) ** alpha (Wu et al. 2016, "Google's NMT system", eq. 14).
    - ``average``: length ** alpha; alpha = 1 is the mean log-probability per token.

    Both penalties grow with the length for alpha >= 0, which the stopping bound relies on.
    """
    if kind == "none":
        return 1.0
    if kind == "gnmt":
        return ((5 + length) / 6) ** alpha
    if kind == "average":
        return length**alpha
    raise ValueError(f"unknown length_penalty {kind!r}; valid: {', '.join(LENGTH_PENALTIES)}")


_length_penalty = length_penalty  # beam_search's argument of the same name shadows the function


def normalized_score(hypothesis: Hypothesis, kind: str = "none", alpha: float = 0.6) -> float:
    """``hypothesis.score`` divided by the length penalty of its scored tokens (``<eos>`` counts)."""
    return hypothesis.score / float(length_penalty(kind, max(1, len(hypothesis.token_log_probs)), alpha))


def beam_step(
    log_probs: torch.Tensor, scores: torch.Tensor, *, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expand K beams by one token and keep the best 2K candidates (fairseq ``BeamSearch.step``).

    Args:
        log_probs: [B, K, V] next-token log-probabilities of every beam (banned tokens at -inf).
        scores: [B, K] running sums of log-probabilities of the beams.
        step: 0 at the first token; there all beams hold the same ``<sos>`` prefix, so only
            beam 0 is expanded (otherwise each candidate would appear K times).

    Returns:
        new_scores [B, 2K] sorted best first, token_ids [B, 2K] and beam_ids [B, 2K] (the beam
        each candidate extends). When fewer than 2K candidates exist, the rest are -inf.
    """
    batch, beam, vocab = log_probs.shape
    if scores.shape != (batch, beam):
        raise ValueError(f"scores must be [B, K] = {(batch, beam)}, got {tuple(scores.shape)}")
    if step == 0:
        log_probs, scores = log_probs[:, :1, :], scores[:, :1]  # [B, 1, V], [B, 1]
    candidates = (scores.unsqueeze(-1) + log_probs).reshape(batch, -1)  # [B, K' * V]
    wanted = 2 * beam
    new_scores, flat = candidates.topk(min(wanted, candidates.size(1)), dim=-1)  # [B, <=2K]
    if new_scores.size(1) < wanted:  # tiny vocabulary: pad with impossible candidates
        missing = wanted - new_scores.size(1)
        new_scores = torch.cat([new_scores, new_scores.new_full((batch, missing), -math.inf)], dim=1)
        flat = torch.cat([flat, flat.new_zeros((batch, missing))], dim=1)  # [B, 2K]
    return new_scores, flat % vocab, torch.div(flat, vocab, rounding_mode="floor")


def repeated_ngram_mask(tokens: torch.Tensor, *, n: int, vocab_size: int) -> torch.Tensor:
    """True at tokens that would complete an n-gram already present in each row of ``tokens``.

    ``tokens`` [N, t] are the generated tokens so far; returns a mask [N, V] (all False when
    n = 0 or no full n-gram exists yet). Paulus et al. 2018 ("A deep reinforced model for
    abstractive summarization") introduced this trigram-avoidance rule.
    """
    rows, length = tokens.shape
    mask = torch.zeros(rows, vocab_size, dtype=torch.bool, device=tokens.device)
    if n <= 0 or length < n:
        return mask
    windows = tokens.unfold(1, n, 1)  # [N, W, n], every n-gram so far
    prefix = tokens[:, length - (n - 1) :]  # [N, n-1], the n-1 tokens the next one would follow
    matched = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(dim=-1)  # [N, W]
    counts = torch.zeros(rows, vocab_size, dtype=torch.long, device=tokens.device)
    counts.scatter_add_(1, windows[:, :, -1], matched.long())  # add, not scatter: indices repeat
    return counts > 0


def can_stop(*, finished_scores: list[float], best_alive: float, wanted: int, max_penalty: float) -> bool:
    """Whether no alive hypothesis can still enter the ``wanted`` best finished ones.

    ``finished_scores`` are the kept finished hypotheses' normalised scores, best first,
    ``best_alive`` the best alive raw score (<= 0), ``wanted`` how many hypotheses the search
    returns (``nbest``) and ``max_penalty`` the length penalty at the maximum length.
    Bound: an alive hypothesis with raw score s ends with raw score s' <= s <= 0 and length
    L' <= L_max, so for a penalty that grows with the length,
    s' / lp(L') <= s / lp(L') <= s / lp(L_max). With no penalty this is just s.

    Only the ``wanted`` best matter: waiting for a full beam of finished hypotheses (as fairseq
    does) cannot change them, it only costs steps. With ``nbest`` = 1 and no penalty the search
    stops as soon as its best candidate ends with ``<eos>``, as OpenNMT-py 3.5's does ("early stop
    when top beam is finished", ``onmt/translate/beam_search.py``).
    """
    if best_alive == -math.inf:
        return True  # nothing left alive (every continuation was banned)
    if len(finished_scores) < wanted:
        return False
    return best_alive / max_penalty <= finished_scores[wanted - 1]


def max_lengths(src_lengths: list[int], *, max_len: int, max_len_a: float, max_len_b: int) -> list[int]:
    """Decoding steps allowed per example: ``min(max_len, a * src_len + b)`` when a > 0 (fairseq)."""
    if max_len_a <= 0:
        return [max_len] * len(src_lengths)
    return [max(1, min(max_len, int(max_len_a * length + max_len_b))) for length in src_lengths]


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
    kind = length_penalty
    _check_arguments(beam_size=beam_size, nbest=nbest, max_len=max_len, min_len=min_len, kind=kind,
                     alpha=alpha, ngram=no_repeat_ngram_size, max_len_a=max_len_a)
    model.eval()
    device, batch, beam = src.device, src.size(0), beam_size
    src_lens = src_lengths.cpu().tolist()
    limits = max_lengths(src_lens, max_len=max_len, max_len_a=max_len_a, max_len_b=max_len_b)
    penalty = lambda n: float(_length_penalty(kind, n, alpha))  # noqa: E731

    # 1. Encode once. Every example's K beams start from the same <sos>, so the first step runs once
    #    per example; its outputs, state and memory are then tiled K times: rows b*K .. b*K+K-1 are
    #    example b's beams.
    memory, state = model.encode(src, src_lengths, src_mask, src_copy=src_copy)
    tile = torch.arange(batch, device=device).repeat_interleave(beam)  # [B*K]
    active = list(range(batch))  # original example of each remaining sentence
    scores = torch.full((batch, beam), -math.inf, device=device)  # [B, K]; only beam 0 is alive at first
    scores[:, 0] = 0.0
    prev = torch.full((batch,), sos_index, dtype=torch.long, device=device)  # [B], then [B*K]
    tokens = torch.zeros(batch * beam, 0, dtype=torch.long, device=device)  # [B*K, t]
    token_lps = torch.zeros(batch * beam, 0, device=device)  # [B*K, t]
    weights = torch.zeros(batch * beam, 0, src.size(1), device=device)  # [B*K, t, S], stays empty without attention
    states = [] if constraint is None else [constraint.start()] * (batch * beam)  # per row
    finished: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(batch)]
    unfinished: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(batch)]

    def keep_alive_as_unfinished(b: int, length: int) -> None:
        """Keep sentence b's alive hypotheses (``length`` tokens each) as unfinished ones, unless it
        already holds ``nbest`` finished. Reads the loop's current scores, tokens and weights."""
        example = active[b]
        if len(finished[example]) >= nbest:
            return
        for k in range(beam):
            row, score = b * beam + k, float(scores[b, k])
            if score > -math.inf:
                hypothesis = _hypothesis(tokens[row], token_lps[row], None if attention is None else weights[row],
                                         src_length=src_lens[example], finished=False)
                _keep_best(unfinished[example], (score / penalty(max(1, length)), hypothesis), beam)

    for step in range(max(limits)):
        # 2. Score every next token of every alive beam, with the banned ones at -inf.
        logits, state, attention = model.decoder.step(prev, state, memory)  # [N, V], [N, S]
        if step == 0:
            logits, state, memory = logits[tile], state.select(tile), memory.select(tile)  # [B*K, ...]
            attention = None if attention is None else attention[tile]
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # [N, V], a fresh tensor: banned in place
        vocab = log_probs.size(-1)
        log_probs[:, pad_index] = -math.inf
        if step < min_len:
            log_probs[:, eos_index] = -math.inf
        if no_repeat_ngram_size:
            log_probs.masked_fill_(repeated_ngram_mask(tokens, n=no_repeat_ngram_size, vocab_size=vocab), -math.inf)
        if constraint is not None:
            log_probs.masked_fill_(constraint.banned(states, vocab, device), -math.inf)
        n_active = len(active)
        new_scores, token_ids, beam_ids = beam_step(log_probs.view(n_active, beam, vocab), scores, step=step)
        parents = beam_ids + torch.arange(n_active, device=device).unsqueeze(1) * beam  # [B', 2K] rows
        cand_lps = log_probs[parents.reshape(-1), token_ids.reshape(-1)].view(n_active, 2 * beam)  # [B', 2K]
        is_eos = token_ids == eos_index  # [B', 2K]

        # 2b. A sentence whose every continuation is banned keeps its alive hypotheses as unfinished
        #     ones (it stops in step 5), so that the search never returns fewer than it can.
        for b in (new_scores[:, 0] == -math.inf).nonzero().flatten().tolist():
            keep_alive_as_unfinished(b, step)

        # 3. Candidates ending in <eos> among the first K are finished hypotheses.
        for b, j in ((is_eos[:, :beam] & (new_scores[:, :beam] > -math.inf)).nonzero().tolist()):
            row = int(parents[b, j])
            lps = torch.cat([token_lps[row], cand_lps[b, j : j + 1]])  # [T]
            rows_attention = None if attention is None else torch.cat([weights[row], attention[row : row + 1]])
            hypothesis = _hypothesis(tokens[row], lps, rows_attention, src_length=src_lens[active[b]], finished=True)
            _keep_best(finished[active[b]], (float(new_scores[b, j]) / penalty(step + 1), hypothesis), beam)

        # 4. The first K candidates not ending in <eos> stay alive; extend their histories.
        order = torch.arange(2 * beam, device=device) + is_eos.long() * 2 * beam  # eos ranks last
        alive = order.topk(beam, dim=1, largest=False).indices  # [B', K], best first
        scores = new_scores.gather(1, alive).masked_fill(is_eos.gather(1, alive), -math.inf)  # [B', K]
        rows = parents.gather(1, alive).reshape(-1)  # [B'*K]
        prev = token_ids.gather(1, alive).reshape(-1)  # [B'*K]
        tokens = torch.cat([tokens[rows], prev.unsqueeze(1)], dim=1)  # [B'*K, t+1]
        token_lps = torch.cat([token_lps[rows], cand_lps.gather(1, alive).reshape(-1, 1)], dim=1)
        if attention is not None:
            weights = torch.cat([weights[rows], attention[rows].unsqueeze(1)], dim=1)  # [B'*K, t+1, S]
        state = state.select(rows)
        if constraint is not None:
            states = [constraint.advance(states[r], t) for r, t in zip(rows.tolist(), prev.tolist())]

        # 5. Stop sentences that are done; at the length limit keep alive ones as unfinished.
        done = []
        best_alive = scores[:, 0].tolist()
        for b, example in enumerate(active):
            at_limit = step + 1 >= limits[example]
            if at_limit:
                keep_alive_as_unfinished(b, step + 1)
            stop = can_stop(finished_scores=[s for s, _ in finished[example]], best_alive=best_alive[b],
                            wanted=nbest, max_penalty=penalty(limits[example]))
            done.append(at_limit or stop)

        # 6. Drop the stopped sentences from every batched tensor so later steps skip them.
        if any(done):
            keep = [b for b, stopped in enumerate(done) if not stopped]
            if not keep:
                break
            keep_sentences = torch.tensor(keep, device=device)
            keep_rows = (keep_sentences.unsqueeze(1) * beam + torch.arange(beam, device=device)).reshape(-1)
            active = [active[b] for b in keep]
            scores = scores.index_select(0, keep_sentences)
            prev, tokens, token_lps = prev[keep_rows], tokens[keep_rows], token_lps[keep_rows]
            weights = weights[keep_rows]
            if constraint is not None:
                states = [states[r] for r in keep_rows.tolist()]
            state, memory = state.select(keep_rows), memory.select(keep_rows)

    return [[h for _, h in (finished[b] + unfinished[b])[:nbest]] for b in range(batch)]
