"""Forced decoding: how probable the model finds given reference outputs."""

from __future__ import annotations

import torch

from seq2seq.models.seq2seq import Seq2Seq


@torch.inference_mode()
def score_references(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    src_mask: torch.Tensor,
    tgt: torch.Tensor,
    *,
    pad_index: int = 0,
    src_copy: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of log-probabilities of each reference, [B].

    ``tgt`` [B, T] is ``<sos> y_1 ... y_n <eos> <pad>...`` as in ``Batch.tgt``; the decoder reads
    the gold prefix (teacher forcing 1.0) and every predicted position up to and including
    ``<eos>`` counts, padding does not. Equals ``Hypothesis.score`` when ``tgt`` is a decoded output.
    A copy model needs ``src_copy`` [B, S] and reads extended ids in ``tgt``.
    """
    if tgt.dim() != 2 or tgt.size(0) != src.size(0):
        raise ValueError(f"expected tgt [B, T] with B = {src.size(0)}, got {tuple(tgt.shape)}")
    model.eval()
    logits, _ = model(src, src_lengths, src_mask, tgt[:, :-1], teacher_forcing=1.0, src_copy=src_copy)  # [B, T-1, V]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    gold = tgt[:, 1:]  # [B, T-1]
    token_log_probs = log_probs.gather(2, gold.unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    return token_log_probs.masked_fill(gold == pad_index, 0.0).sum(dim=1)  # [B]


@torch.inference_mode()
def step_distributions(
    model: Seq2Seq,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    src_mask: torch.Tensor,
    tgt: torch.Tensor,
    *,
    src_copy: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token probabilities at every step of given outputs, [B, T-1, V] ([B, T-1, V_ext] for a
    copy model, which needs ``src_copy`` [B, S]).

    ``tgt`` [B, T] is ``<sos> y_1 ... y_n [<eos>] <pad>...``; entry [b, t] is the distribution the
    decoder had when it chose ``tgt[b, t + 1]``, reading the given prefix (teacher forcing 1.0),
    so for a decoded output it is exactly what the search saw at that step.
    """
    if tgt.dim() != 2 or tgt.size(0) != src.size(0):
        raise ValueError(f"expected tgt [B, T] with B = {src.size(0)}, got {tuple(tgt.shape)}")
    model.eval()
    logits, _ = model(src, src_lengths, src_mask, tgt[:, :-1], teacher_forcing=1.0, src_copy=src_copy)  # [B, T-1, V]
    return torch.softmax(logits.float(), dim=-1)
