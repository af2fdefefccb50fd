"""Word dropout: replace random source tokens by ``<unk>`` during training.

Iyyer et al. (2015, section 3.1) drop whole words from the input of a sentence classifier; Sennrich
et al. (2016) and Gal & Ghahramani (2016) use the same idea for recurrent translation models. The
model learns not to rely on any single word, and it sees ``<unk>`` in contexts like the ones that
rare and unseen words create at test time.
"""

from __future__ import annotations

import torch


def word_dropout(src: torch.Tensor, src_mask: torch.Tensor, *, rate: float, unk_index: int) -> torch.Tensor:
    """``src`` [B, S] with each real token (``src_mask`` True) replaced by ``unk_index`` with
    probability ``rate``; padding is never touched. Draws from torch's global generator, whose state
    the trainer's checkpoint keeps, so a resumed run drops the same words."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate={rate}; expected 0 <= rate < 1")
    if rate == 0.0:
        return src
    drop = (torch.rand(src.shape, device=src.device) < rate) & src_mask  # [B, S]
    return src.masked_fill(drop, unk_index)
