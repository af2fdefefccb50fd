"""Encoded pairs, padded batches with masks, and length-bucketed batch order.

Bucketing puts sentences of similar length in one batch so that little compute is spent
on padding, while the batch order stays random from epoch to epoch (the same idea as
torchtext's ``BucketIterator`` and fairseq's length-sorted batches).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from seq2seq.data.vocab import Vocab


@dataclass(frozen=True)
class EncodedPair:
    src: list[int]  # source ids, no <sos>/<eos>
    tgt: list[int]  # <sos> target ids <eos>


@dataclass
class Batch:
    """A padded batch. Masks are True at real tokens, False at padding."""

    src: torch.Tensor  # [B, S]
    src_lengths: torch.Tensor  # [B], on the CPU (pack_padded_sequence wants it there)
    src_mask: torch.Tensor  # [B, S] bool
    tgt: torch.Tensor | None  # [B, T] <sos> ... <eos> <pad>...
    tgt_mask: torch.Tensor | None  # [B, T] bool
    indices: list[int]  # positions of these examples in the data set

    @property
    def size(self) -> int:
        return self.src.size(0)

    @property
    def tgt_input(self) -> torch.Tensor:  # [B, T-1], what the decoder reads
        assert self.tgt is not None
        return self.tgt[:, :-1]

    @property
    def tgt_output(self) -> torch.Tensor:  # [B, T-1], what the decoder must predict
        assert self.tgt is not None
        return self.tgt[:, 1:]

    @property
    def n_tgt_tokens(self) -> int:
        """Predicted target tokens (including <eos>, excluding <sos> and padding)."""
        assert self.tgt_mask is not None
        return int(self.tgt_mask[:, 1:].sum())

    def to(self, device: torch.device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            src=move(self.src),
            src_lengths=self.src_lengths,
            src_mask=move(self.src_mask),
            tgt=move(self.tgt),
            tgt_mask=move(self.tgt_mask),
            indices=self.indices,
        )


def encode_pairs(
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]], *, src_vocab: Vocab, tgt_vocab: Vocab
) -> list[EncodedPair]:
    return [
        EncodedPair(src=src_vocab.encode(src), tgt=tgt_vocab.encode(tgt, add_sos=True, add_eos=True))
        for src, tgt in pairs
    ]


def _pad(sequences: Sequence[Sequence[int]], pad_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), longest), pad_index, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids, ids != pad_index


def collate(
    pairs: Sequence[EncodedPair], indices: Sequence[int], *, pad_index: int, with_target: bool = True
) -> Batch:
    """Pad one batch. Every source must hold at least one token (readers reject empty ones)."""
    if any(len(pair.src) == 0 for pair in pairs):
        raise ValueError("empty source sequence in batch; an encoder needs at least one token")
    src, src_mask = _pad([pair.src for pair in pairs], pad_index)
    tgt, tgt_mask = _pad([pair.tgt for pair in pairs], pad_index) if with_target else (None, None)
    lengths = torch.tensor([len(pair.src) for pair in pairs], dtype=torch.long)
    return Batch(src, lengths, src_mask, tgt, tgt_mask, list(indices))


def bucketed_batches(
    pairs: Sequence[EncodedPair],
    *,
    batch_size: int,
    pad_index: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    pool_factor: int = 50,
    with_target: bool = True,
) -> Iterator[Batch]:
    """Yield padded batches of similar-length pairs.

    With ``shuffle``: shuffle, cut into pools of ``pool_factor * batch_size``, sort each pool
    by length, cut it into batches, and shuffle the batch order. Without: sort everything by
    length (deterministic; for evaluation, callers restore the order with ``Batch.indices``).
    """
    n = len(pairs)
    if n == 0:
        return
    key = lambda i: (len(pairs[i].src), len(pairs[i].tgt))  # noqa: E731
    if not shuffle:
        order = sorted(range(n), key=key)
        chunks = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    else:
        order = torch.randperm(n, generator=generator).tolist()
        pool = batch_size * pool_factor
        chunks = []
        for start in range(0, n, pool):
            sorted_pool = sorted(order[start : start + pool], key=key)
            chunks.extend(sorted_pool[i : i + batch_size] for i in range(0, len(sorted_pool), batch_size))
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
    for chunk in chunks:
        yield collate([pairs[i] for i in chunk], chunk, pad_index=pad_index, with_target=with_target)
