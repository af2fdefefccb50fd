"""One entry point for decoding many sources: greedy when ``beam_size == 1``, else beam search."""

from __future__ import annotations

import torch

from seq2seq.decoding.beam import beam_search
from seq2seq.decoding.greedy import Hypothesis, decode_all, greedy_decode
from seq2seq.models.seq2seq import Seq2Seq


def decode_sources(
    model: Seq2Seq,
    sources: list[list[int]],
    *,
    sos_index: int,
    eos_index: int,
    pad_index: int,
    max_len: int,
    beam_size: int = 1,
    nbest: int = 1,
    length_penalty: str = "none",
    alpha: float = 0.6,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> list[list[Hypothesis]]:
    """Up to ``nbest`` hypotheses per encoded source, best first, in input order."""
    if nbest > beam_size:
        raise ValueError(f"nbest={nbest} cannot exceed the beam size {beam_size}")

    def search(src: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> list[list[Hypothesis]]:
        if beam_size == 1:
            found = greedy_decode(model, src, lengths, mask, sos_index=sos_index, eos_index=eos_index, max_len=max_len)
            return [[hypothesis] for hypothesis in found]
        return beam_search(
            model, src, lengths, mask, sos_index=sos_index, eos_index=eos_index, pad_index=pad_index,
            beam_size=beam_size, max_len=max_len, nbest=nbest, length_penalty=length_penalty, alpha=alpha,
        )

    return decode_all(sources, search, pad_index=pad_index, batch_size=batch_size, device=device)
