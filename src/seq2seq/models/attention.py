"""Additive attention (Bahdanau, Cho and Bengio 2015, "Neural Machine Translation by Jointly
Learning to Align and Translate", section 3.1 and appendix A.1.2).

The seed specification writes the score as

    score(h_t, h_s) = v^T tanh(W [h_t; h_s])

with ``h_t`` the decoder's previous hidden state (the query) and ``h_s`` an encoder state.
Splitting ``W`` column-wise into ``[W_q | W_k]`` gives ``W [h_t; h_s] = W_q h_t + W_k h_s``,
which is what the code computes: ``query_proj`` is ``W_q``, ``key_proj`` is ``W_k`` and
``energy`` is ``v``. The split lets ``W_k h_s`` be computed once per batch
(:meth:`project_keys`) instead of once per decoder step; the result is identical, which
the NumPy reference in :mod:`seq2seq.reference` checks with the concatenated form.
Like the formula (and the paper), no bias is used.

In training, the [B, S, A] tanh of every decoder step is not kept for backward: it is the largest
activation of the model (128 sentences x 41 target x 40 source positions x 512 is 430 MB over a
batch), while recomputing it costs one add and one tanh per step (:class:`AdditiveScore`).

That tanh is the largest elementwise operation of a decoder step. On a CPU, in float32, it is
computed as ``2 sigmoid(2x) - 1`` (:func:`tanh_`), about four times faster there than PyTorch's
own CPU tanh (``python bench/kernels.py``, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import torch
from torch import nn

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


class BahdanauAttention(nn.Module):
    def __init__(self, *, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W_q
        self.key_proj = nn.Linear(key_size, attention_size, bias=False)  # W_k
        self.energy = nn.Linear(attention_size, 1, bias=False)  # v

    def project_keys(self, states: torch.Tensor) -> torch.Tensor:
        """``W_k h_s`` for every source position: [B, S, He] -> [B, S, A]."""
        return self.key_proj(states)

    def forward(
        self, *, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend from one decoder state to all encoder states.

        Args:
            query: [B, Hq] decoder hidden state h_t.
            keys: [B, S, A] projected encoder states from :meth:`project_keys`.
            values: [B, S, He] encoder states h_s.
            mask: [B, S] True at real source tokens; padding gets weight exactly 0.

        Returns:
            context [B, He] (the weighted sum of ``values``) and weights [B, S] (sum to 1).
        """
        if query.dim() != 2 or keys.dim() != 3 or keys.shape[:2] != mask.shape:
            raise ValueError(
                f"expected query [B, Hq], keys [B, S, A], mask [B, S]; got {tuple(query.shape)}, "
                f"{tuple(keys.shape)}, {tuple(mask.shape)}"
            )
        projected = self.query_proj(query)  # [B, A]
        if torch.is_grad_enabled() and isinstance(self.energy.weight, nn.Parameter):
            scores = AdditiveScore.apply(projected, keys, self.energy.weight)  # [B, S]; keeps no [B, S, A]
        else:  # no gradient (decoding, ONNX export), or an energy layer without a plain weight (int8)
            # tanh in place: the sum is a fresh [B, S, A] tensor, the largest one of a decoder step; with
            # gradient this is safe too (tanh_ is then torch's own), since the sum's backward does not
            # need its output
            hidden = tanh_(projected.unsqueeze(1) + keys)  # [B, S, A]
            scores = self.energy(hidden).squeeze(-1)  # [B, S]
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: no mass on padding
        weights = torch.softmax(scores, dim=-1)  # [B, S]
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # [B, He]
        return context, weights
