"""The one decoding loop that greedy decoding, sampling and beam search share.

The loop only knows the decoder interface: ``model.encode`` once, then ``model.decoder.step``
per token, and ``select(index)`` on the decoder state and the encoder memory. Everything a search
decides (which tokens come next, which rows live on, when to stop, what to return) belongs to a
:class:`Strategy`; greedy and sampling are :class:`seq2seq.decoding.greedy.SinglePath`, beam search
is :class:`seq2seq.decoding.beam.BeamStrategy`. A new architecture (say a Transformer with a
key/value cache) therefore decodes with every strategy once its state has ``select``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

R = TypeVar("R", covariant=True)


@dataclass(frozen=True)
class Advance:
    """What a strategy decided at one step.

    ``tokens`` [N'] are the next decoder inputs, one per row that lives on. ``state_rows`` [N']
    are the rows of this step's decoder state they continue (None: every row, in order), and
    ``memory_rows`` [N'] the rows of the memory they read (None: unchanged). The two differ in
    beam search, where beams of one example reorder their states but share one source.
    """

    tokens: torch.Tensor
    state_rows: torch.Tensor | None = None
    memory_rows: torch.Tensor | None = None


class Strategy(Protocol[R]):
    """A search, as the loop sees it."""

    max_steps: int  # the loop runs at most this many decoder steps

    def step(self, step: int, logits: torch.Tensor, attention: torch.Tensor | None) -> Advance | None:
        """Read one step's ``logits`` [N, V] and ``attention`` [N, S] (or None); None means done."""
        ...

    def finish(self) -> R:
        """The search's result, once the loop has ended."""
        ...


@torch.inference_mode()
def decode_loop(
    model,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    src_mask: torch.Tensor,
    *,
    sos_index: int,
    strategy: Strategy[R],
    src_copy: torch.Tensor | None = None,
) -> R:
    """Encode ``src`` [B, S] once, then feed ``strategy`` one decoder step at a time from ``<sos>``.

    ``model`` is a ``Seq2Seq`` or anything with its ``encode`` and ``decoder.step`` (an ensemble,
    the ONNX runtime). The first step has one row per example; the strategy's ``Advance`` decides
    the rows of every later one.
    """
    model.eval()
    memory, state = model.encode(src, src_lengths, src_mask, src_copy=src_copy)
    prev = torch.full((src.size(0),), sos_index, dtype=torch.long, device=src.device)  # [B]
    for step in range(strategy.max_steps):
        logits, state, attention = model.decoder.step(prev, state, memory)  # [N, V], [N, S] or None
        advance = strategy.step(step, logits, attention)
        if advance is None:
            break
        prev = advance.tokens  # [N']
        if advance.state_rows is not None:
            state = state.select(advance.state_rows)
        if advance.memory_rows is not None:
            memory = memory.select(advance.memory_rows)
    return strategy.finish()
