"""Keep freed host memory inside the process, so large tensors stop page-faulting on every batch.

glibc's ``malloc`` serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and gives it back to the kernel on ``free``. A training step allocates tensors of that
size many times over: the logits and their gradients are [B*T, V] (128 x 20 target tokens x a
5,921-word vocabulary is 60 MiB each). Each one is a fresh mapping, so the kernel zero-fills and
maps it again page by page, and the operator that first writes it (``fill_``, ``add``, the
log-softmax backward) spends most of its time in page faults: system time was 15 % of the
Multi30k recipe's training time, and training became 1.14x faster without it
(docs/BENCHMARKS.md). The usual fixes are jemalloc or tcmalloc through ``LD_PRELOAD`` (Intel's
PyTorch tuning guide); :func:`keep_freed_memory` gets the same effect from glibc itself, with
``mallopt``, without a second allocator or a re-exec:

- ``M_MMAP_MAX = 0``: no allocation is served by its own mapping; all come from the heap, whose
  freed chunks the next batch reuses;
- ``M_TRIM_THRESHOLD = 1 GiB``: the heap's free top is handed back to the kernel only above 1 GiB.

The price is memory: the process keeps what it freed, and the heap fragments (the small
remainders that ``posix_memalign`` splits off stay in glibc's thread cache and keep freed chunks
from merging), so peak RSS grew by 11-15 % on the same recipe (docs/BENCHMARKS.md). It is
process-wide, so the command line turns it on (``seq2seq train``, ``evaluate``, ``generate``,
``serve``, ``compare`` and the benchmarks), not the library; ``SEQ2SEQ_MALLOC=system`` keeps
glibc's defaults. Other C
libraries (macOS, Windows, musl) are left alone. Only host memory is concerned: CUDA tensors
have PyTorch's own caching allocator.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

ENV_VAR = "SEQ2SEQ_MALLOC"
# glibc's <malloc.h> parameter numbers for mallopt()
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (see the module docstring).

    Returns True when the settings were applied; False on other C libraries or platforms, or when
    ``SEQ2SEQ_MALLOC=system`` asks for glibc's defaults. Calling it again changes nothing.
    """
    choice = os.environ.get(ENV_VAR, "reuse").strip().lower()
    if choice not in ("reuse", "system"):
        raise ValueError(f"{ENV_VAR}={choice!r}: expected 'reuse' (the default) or 'system' (glibc's own settings)")
    if choice == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # glibc only: musl's mallopt is a no-op
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    logger.debug("malloc keeps freed memory for reuse: %s", applied)
    return applied
