"""One optimizer update: the gradient of an update's batches (accumulated over this rank's and
summed over the ranks), clipped at ``clip_norm``, then Adam's step; or no step when the loss or
the gradient norm is not finite, which stops training or skips the update (``train.on_nonfinite``)."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from seq2seq.data.batching import Batch
from seq2seq.training.distributed import Ranks

logger = logging.getLogger(__name__)

# one batch's (objective sum, cross-entropy sum, target tokens): the trainer's loss
BatchLoss = Callable[[Batch], tuple[torch.Tensor, torch.Tensor, int]]


class NonFiniteLossError(ValueError):
    """A training batch gave a NaN or infinite loss or gradient norm and ``train.on_nonfinite`` is ``stop``.

    A ValueError, like the other errors whose remedy is in the input (here: a lower learning
    rate, a smaller ``clip_norm``, other data, or ``on_nonfinite: skip``), so the command line
    reports it in one line. ``indices`` are the batch's positions in the training pairs.
    """

    def __init__(self, message: str, *, indices: Sequence[int]) -> None:
        super().__init__(message)
        self.indices = list(indices)

    def __reduce__(self):  # pickled with its indices (from a worker of `seq2seq compare --jobs`)
        return functools.partial(NonFiniteLossError, indices=self.indices), (str(self),)


def adam(parameters, *, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam with its fused kernel where this torch build has one for the device (about 5x faster
    steps on a CPU than the per-tensor loop), else the default implementation; same update rule."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without the fused kernel
        return torch.optim.Adam(parameters, lr=lr, betas=betas)


def train_update(
    batches: Sequence[Batch],
    *,
    tokens: int,
    stand_in: Batch | None,
    loss: BatchLoss,
    model: nn.Module,
    forward: nn.Module,  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer,
    ranks: Ranks,
    clip_norm: float,
    device: torch.device,
) -> tuple[float, int, float] | str:
    """One optimizer step on this rank's ``batches`` of an update of ``tokens`` target tokens
    (all ranks, all accumulated batches): ``(loss sum, tokens, gradient norm before clipping)``
    over the whole update, or what was not finite (nothing is stepped).

    Each batch's backward pass adds d(objective sum / tokens): summed over the batches and the
    ranks (DDP's mean times the world size) that is the gradient of the mean over every token of
    the update, so accumulation and data parallelism give the update of one batch holding them all.
    A rank with no batch in this update (a short last one) runs ``stand_in`` with weight 0, so
    that it still joins DDP's gradient exchange."""
    optimizer.zero_grad(set_to_none=True)
    sums = torch.zeros(2, device=device)  # [objective sum, cross-entropy sum] of this rank
    work = [(batch, True) for batch in batches] or [(stand_in, False)]
    for number, (batch, counts) in enumerate(work, start=1):
        with ranks.no_sync(forward, sync=number == len(work)), ranks.watching("exchanging gradients"):
            objective_sum, loss_sum, _ = loss(batch)
            objective = objective_sum / tokens
            if ranks.distributed:  # DDP averages over the ranks; the update wants the sum
                objective = objective * ranks.world_size
            if not counts:  # the stand-in: a zero gradient for every parameter (0 x its loss could be NaN)
                objective = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
            objective.backward()
        if counts:
            sums += torch.stack([objective_sum.detach(), loss_sum.detach()])
    objective_sum, loss_sum = ranks.sum(sums).tolist()
    if not math.isfinite(objective_sum):
        optimizer.zero_grad(set_to_none=True)
        return f"loss ({objective_sum / tokens})"
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    if not torch.isfinite(grad_norm):  # clipping cannot rescue an inf norm: the step would write NaNs
        optimizer.zero_grad(set_to_none=True)
        return f"gradient norm ({float(grad_norm)})"
    optimizer.step()
    return loss_sum, tokens, float(grad_norm)


def handle_non_finite(what: str, indices: Sequence[int], *, epoch: int, step: int, number: int, of: int,
                      on_nonfinite: str) -> None:
    """Stop with an error, or log and go on, as ``train.on_nonfinite`` says (the same on every rank:
    what was not finite is the sum over the ranks). ``epoch`` is the one in training, from 1."""
    shown = ", ".join(map(str, indices[:8])) + (", ..." if len(indices) > 8 else "")
    where = (
        f"non-finite training {what} at epoch {epoch}, step {step}, batch {number} of {of} "
        f"(training examples {shown})"
    )
    if on_nonfinite == "stop":
        raise NonFiniteLossError(
            f"{where}; nothing of this epoch was saved. Lower train.learning_rate or train.clip_norm, "
            "or set train.on_nonfinite=skip to skip such batches",
            indices=indices,
        )
    logger.warning("%s: batch skipped", where)
