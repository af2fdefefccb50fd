"""Inverted dropout (Srivastava et al. 2014), with a cheaper mask on the CPU.

In training each element is zeroed with probability p and the survivors are scaled by
1 / (1 - p), so the expected value is unchanged and evaluation is the identity, as ``nn.Dropout``.
On the CPU, PyTorch draws the mask with ``bernoulli_``, which in this torch build is a scalar loop
(one generator call and one float comparison per element). This module draws the mask in one of
two cheaper ways on the CPU and leaves other devices to ``F.dropout`` (a fused kernel there):

- ``mask="uniform"`` (the RNN models'): float32 uniforms compared with p, 2-4x faster than
  ``bernoulli_``; on the RNN recipe's [128, 15, 512] activations the four dropout sites then cost
  a training step about 25 ms of 700.
- ``mask="bits"`` (the Transformer's, with 17 dropout sites a step): 16 random bits per element,
  four from each 64-bit word of torch's generator, about 8x faster than ``bernoulli_``
  (docs/BENCHMARKS.md). p is rounded to a multiple of 2^-16 (0.3 becomes 0.300003) and the
  survivors are scaled by the inverse of the rounded keep rate, so the expectation still holds.

Both draw from torch's default generator, so ``torch.manual_seed`` fixes the masks; they differ
from ``nn.Dropout``'s and from each other for the same seed, not in distribution. The RNN models
keep the uniform mask so that the figures recorded with it reproduce to the digit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MASKS = ("uniform", "bits")
_LEVELS = 1 << 16  # the values of 16 random bits


def _uniform_keep(x: torch.Tensor, p: float) -> torch.Tensor:
    """0 or 1 / (1 - p) per element of ``x``, in its dtype."""
    # float32 uniforms even for bf16 activations: bf16's 8-bit mantissa would round p
    keep = torch.rand(x.shape, dtype=torch.float32).ge_(p).mul_(1.0 / (1.0 - p))
    return keep.to(x.dtype)


def _bits_keep(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A boolean mask of ``shape``, True with probability 1 - p (p rounded to a multiple of 2^-16),
    and the factor 1 / (1 - p) for the rounded p."""
    dropped = round(p * _LEVELS)  # how many of the 2^16 values mean "drop"
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64)
    words.random_(-(1 << 63), None)  # torch's full-range draw: every 64-bit pattern equally likely
    bits = words.view(torch.int16)[:count].view(shape)  # four uniform 16-bit values per word
    keep = bits >= dropped - _LEVELS // 2  # int16 starts at -2^15: 2^16 - dropped values pass
    return keep, _LEVELS / (_LEVELS - dropped)


class _MaskedScale(torch.autograd.Function):
    """y = x * keep * scale, and the gradient masked and scaled alike. Only the boolean mask is
    kept for the backward pass: one byte per element."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.masked_fill(~keep, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad.masked_fill(~keep, 0.0).mul_(ctx.scale), None, None


class Dropout(nn.Module):
    def __init__(self, p: float = 0.5, *, mask: str = "uniform") -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        if mask not in MASKS:
            raise ValueError(f"dropout mask must be one of {', '.join(MASKS)}, not {mask!r}")
        self.p, self.mask = p, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        if self.mask == "uniform":
            return x * _uniform_keep(x, self.p)
        keep, scale = _bits_keep(x.shape, self.p)
        return _MaskedScale.apply(x, keep, scale)

    def extra_repr(self) -> str:
        return f"p={self.p}, mask={self.mask}"
