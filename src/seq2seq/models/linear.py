"""The vocabulary projection, written into rows padded to whole cache lines.

A decoder's largest matrix product is its output layer, ``features @ W^T + b`` with one column
per target word. On a CPU, MKL's float32 product slows down when that width is an odd number
such as Multi30k's 5,921 words: on the benchmark machine ``python bench/kernels.py``
(docs/BENCHMARKS.md) times [2048, 512] x [512, 5921] at 0.80x of ``F.linear``'s time when the
product is written into rows of 5,936 floats (a multiple of 16 floats, 64 bytes) instead.
:func:`linear` therefore writes the product into a buffer whose rows are padded that way and
copies it out into a plain contiguous tensor. The result is the same product (bitwise on that
machine; tested within float rounding) and the parameters keep their shapes, so checkpoints,
int8 quantization and ONNX export see an ordinary ``nn.Linear``.
"""

from __future__ import annotations

import torch
from torch import nn

ROW_ALIGNMENT = 16  # float32 elements: one 64-byte cache line
# Below this many rows (greedy decoding's batch of 64) the copy costs more than the padding saves:
# [64, 512] x [512, 5921] took 1.11x as long padded, [128, ...] 0.92x, [2048, ...] 0.77-0.80x.
MIN_ROWS = 128


def plain_cpu_float32(x: torch.Tensor) -> bool:
    """Whether ``x`` is on the path the CPU kernels of this package were measured on (this module,
    :func:`seq2seq.models.fast_paths.tanh_`, :class:`seq2seq.models.split_cell.SplitCell`): a float32
    CPU tensor, outside autocast and outside an ONNX export (whose graph keeps the plain operators)."""
    try:
        autocast = torch.is_autocast_enabled("cpu")
    except TypeError:  # torch before 2.4 takes no device here
        autocast = torch.is_autocast_cpu_enabled()
    on_cpu = x.device.type == "cpu" and x.dtype == torch.float32
    return on_cpu and not autocast and not torch.onnx.is_in_onnx_export()


class _AlignedRowsLinear(torch.autograd.Function):
    """``inputs @ weight^T + bias`` for inputs [N, I] (I in-features) and weight [V, I], with the
    output's rows padded while it is computed. The backward is nn.Linear's: two matrix products
    and a column sum."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.has_bias = bias is not None
        width = weight.size(0)
        padded = -(-width // ROW_ALIGNMENT) * ROW_ALIGNMENT
        rows = inputs.new_empty(inputs.size(0), padded)[:, :width]  # [N, V] with a row stride of `padded`
        if bias is None:
            torch.mm(inputs, weight.t(), out=rows)
        else:
            torch.addmm(bias, inputs, weight.t(), out=rows)
        return rows.contiguous()  # [N, V]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        inputs, weight = ctx.saved_tensors
        grad_inputs = grad @ weight if ctx.needs_input_grad[0] else None  # [N, I]
        grad_weight = grad.t() @ inputs if ctx.needs_input_grad[1] else None  # [V, I]
        grad_bias = grad.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None  # [V]
        return grad_inputs, grad_weight, grad_bias


def linear(layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``layer(inputs)`` for inputs [..., I]; through the padded rows where that helps: a plain
    ``nn.Linear`` on :func:`plain_cpu_float32` inputs and weights whose output width is not
    already a multiple of 16, with at least ``MIN_ROWS`` rows. Anything else (a GPU, bf16, an
    int8 layer, greedy decoding's small batches) runs the layer itself."""
    if (
        type(layer) is not nn.Linear
        or layer.out_features % ROW_ALIGNMENT == 0
        or inputs.numel() < MIN_ROWS * inputs.size(-1)
        or layer.weight.dtype != torch.float32
        or not plain_cpu_float32(inputs)
    ):
        return layer(inputs)
    flat = inputs.reshape(-1, inputs.size(-1))  # [N, I]
    return _AlignedRowsLinear.apply(flat, layer.weight, layer.bias).view(*inputs.shape[:-1], layer.out_features)
