"""seq2seq: recurrent encoder-decoders for NL -> Python code, translation and text-to-text tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from seq2seq.api import load


def __getattr__(name: str) -> Any:
    """``seq2seq.load`` is imported on first use, so ``import seq2seq`` does not import torch (PEP 562)."""
    if name == "load":
        from seq2seq.api import load

        return load
    raise AttributeError(f"module 'seq2seq' has no attribute {name!r}")
