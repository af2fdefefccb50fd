"""CPU fast paths: optional implementations of a model's arithmetic, chosen in one place.

The model files compute their equations plainly (:mod:`seq2seq.models.bahdanau`,
:mod:`seq2seq.models.decoders`). :func:`install_fast_paths`, which ``build_model`` calls, is the
one place that swaps in faster implementations where they were measured to pay
(docs/BENCHMARKS.md, ``python bench/kernels.py``); tests pin each to the plain code.

1. The additive score's [B, S, A] tanh, the largest elementwise operation of a decoder step:
   on a CPU in float32 it is computed as ``2 sigmoid(2x) - 1`` (:func:`tanh_`), about four times
   faster there than PyTorch's own CPU tanh; in training it is not kept for backward but
   recomputed (:class:`AdditiveScore`): it is the model's largest activation (128 sentences x 41
   target x 40 source positions x 512 is 430 MB over a batch), while recomputing it costs one add
   and one tanh per step.
2. The split input projection of a one-layer decoder cell in training's unroll
   (:mod:`seq2seq.models.split_cell`).
3. The vocabulary projection into cache-aligned rows (:func:`seq2seq.models.linear.linear`), which
   applies wherever the output layer runs.

Luong's and the multi-head scores have no fast path: none was measured to pay for them.
"""

from __future__ import annotations

import torch
from torch import nn

from seq2seq.models.bahdanau import BahdanauAttention
from seq2seq.models.decoders import RecurrentDecoder
from seq2seq.models.linear import plain_cpu_float32


def tanh_(x: torch.Tensor) -> torch.Tensor:
    """tanh in place. On a CPU in float32 through the identity tanh(x) = 2 sigmoid(2x) - 1, about
    four times faster than ``torch.tanh`` there and within 2e-7 of it, absolutely (tested; near 0
    the relative error is large: |x| below about 3e-8 gives 0). Elsewhere the plain ``tanh_``: on
    a GPU; in lower precision, where sigmoid's rounding near 1/2 would cost far more; under
    autocast; in an ONNX export, whose runtime has its own fast Tanh; and where autograd records
    it (in-place sigmoid keeps its output for backward, which the next step would overwrite). The
    attention's own gradient (:class:`AdditiveScore`) computes the tanh with autograd off."""
    if not plain_cpu_float32(x) or (x.requires_grad and torch.is_grad_enabled()):
        return x.tanh_()
    return x.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


class AdditiveScore(torch.autograd.Function):
    """``tanh(q + k) v`` for queries [B, A], keys [B, S, A] and ``v`` [1, A], whose backward
    recomputes the tanh instead of keeping it (activation checkpointing for one expression).

    With t = tanh(q + k) and scores s = t v:  ds/dv = sum over (B, S) of grad * t,
    and the gradient of the pre-activation, shared by q (summed over S) and k, is
    grad * v * (1 - t^2).
    """

    @staticmethod
    def forward(ctx, query: torch.Tensor, keys: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(query, keys, energy)
        hidden = tanh_(query.unsqueeze(1) + keys)  # [B, S, A], freed on return
        return hidden @ energy.to(hidden.dtype).squeeze(0)  # [B, S]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        query, keys, energy = ctx.saved_tensors
        hidden = tanh_(query.unsqueeze(1) + keys)  # [B, S, A], recomputed as in forward
        grad = grad.to(hidden.dtype)  # [B, S]
        grad_energy = None
        if ctx.needs_input_grad[2]:  # the matrix product nn.Linear's weight gradient would be
            grad_energy = (grad.reshape(1, -1) @ hidden.reshape(-1, hidden.size(-1))).to(energy.dtype)  # [1, A]
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, grad_energy
        # The pre-activation's gradient, grad * (1 - t^2) * v. tanh_backward is autograd's own tanh
        # derivative: for bf16 it computes in float and rounds once.
        pre = torch.ops.aten.tanh_backward(grad.unsqueeze(-1).expand_as(hidden), hidden)  # [B, S, A]
        del hidden
        pre.mul_(energy.to(pre.dtype).squeeze(0))
        grad_query = pre.sum(dim=1) if ctx.needs_input_grad[0] else None  # [B, A]
        return grad_query, pre if ctx.needs_input_grad[1] else None, grad_energy


def additive_score(
    attention: BahdanauAttention, query: torch.Tensor, keys: torch.Tensor, coverage: torch.Tensor | None
) -> torch.Tensor:
    """:meth:`BahdanauAttention.score` through :class:`AdditiveScore` (with gradient) or an in-place
    :func:`tanh_` (without): the same scores [B, S]."""
    projected = attention.query_proj(query)  # [B, A]
    keys = attention.coverage_keys(keys, coverage)  # [B, S, A]
    if torch.is_grad_enabled() and isinstance(attention.energy.weight, nn.Parameter):
        return AdditiveScore.apply(projected, keys, attention.energy.weight)  # [B, S]; keeps no [B, S, A]
    # no gradient (decoding, ONNX export), or an energy layer without a plain weight (int8): tanh in
    # place on the sum, a fresh [B, S, A] tensor, the largest one of a decoder step; with gradient this
    # is safe too (tanh_ is then torch's own), since the sum's backward does not need its output
    hidden = tanh_(projected.unsqueeze(1) + keys)  # [B, S, A]
    return attention.energy(hidden).squeeze(-1)  # [B, S]


def install_fast_paths(model: nn.Module) -> nn.Module:
    """Switch every module of ``model`` that has a measured fast path onto it; returns ``model``."""
    for module in model.modules():
        if isinstance(module, BahdanauAttention):  # Luong's concat score is the same expression
            module.fast_score = additive_score
        if isinstance(module, RecurrentDecoder):
            module.split_cells = True
    return model
