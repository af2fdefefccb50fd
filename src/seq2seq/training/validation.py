"""Mean per-token loss of the references: validation during training, perplexity in evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from seq2seq.data.batching import EncodedPair, bucketed_batches
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.training.loss import sequence_cross_entropy


def mean_reference_loss(
    model: Seq2Seq, pairs: Sequence[EncodedPair], *, pad_index: int, batch_size: int, device: torch.device
) -> float:
    """Mean cross-entropy per target token with gold previous tokens (teacher forcing 1.0), no smoothing.

    A copy model is scored on the extended targets: a reference word it can only copy counts as
    that word, not as ``<unk>``."""
    total, tokens = reference_loss_sums(model, pairs, pad_index=pad_index, batch_size=batch_size, device=device)
    return total / max(tokens, 1)


@torch.inference_mode()
def reference_loss_sums(
    model: Seq2Seq,
    pairs: Sequence[EncodedPair],
    *,
    pad_index: int,
    batch_size: int,
    device: torch.device,
    shard: tuple[int, int] = (0, 1),
) -> tuple[float, int]:
    """(summed cross-entropy, target tokens) of :func:`mean_reference_loss`, over the length-sorted
    batches ``shard = (index, count)`` takes: every ``count``-th batch from the ``index``-th, so that
    ``count`` processes each score their share and add up the sums."""
    index, count = shard
    model.eval()
    total, tokens = 0.0, 0
    batches = bucketed_batches(pairs, batch_size=batch_size, pad_index=pad_index, shuffle=False, copy=model.copies)
    for number, batch in enumerate(batches):
        if number % count != index:
            continue
        batch = batch.to(device)
        logits, _ = model(batch.src, batch.src_lengths, batch.src_mask, batch.tgt_input, teacher_forcing=1.0,
                          src_copy=batch.src_copy)
        loss_sum, n = sequence_cross_entropy(logits, batch.tgt_output, pad_index=pad_index)
        total, tokens = total + float(loss_sum), tokens + n
    return total, tokens
