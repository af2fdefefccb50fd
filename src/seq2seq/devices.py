"""Choosing the torch device a run trains or decodes on, from the ``device`` setting's text, and
checking that it can run the asked precision.

Its own module, before ``training`` and ``checkpoint``, because the trainer, the pipeline and the
Translator facade (the API and the server) all need it, and serving never imports ``training``.
"""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable or unknown device is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available here; use 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse bf16 where it cannot run: a CPU without oneDNN bfloat16 kernels (they need AVX-512,
    fast with AVX512-BF16 or AMX; oneDNN's LSTM fails without them) or a GPU without bfloat16.
    Called before anything is built on the device or written."""
    if precision != "bf16":
        return
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise ValueError("train.precision=bf16: this CPU has no bfloat16 kernels (oneDNN needs AVX-512; "
                         "AVX512-BF16 or AMX make it fast); use train.precision=fp32")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"train.precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp32")
