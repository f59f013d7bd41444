"""glibc's heap, tuned from Python: what training and batch prediction ask of it.

Training frees and re-allocates the same large blocks every step: the word-embedding gradient
(MiniLM: 30,522 x 384 floats, 47 MB) and the bf16 copies of the weights autocast makes. glibc
serves blocks over 32 MB from fresh ``mmap``s and gives freed heap tops back to the system, so
each step paid for faulting those pages in again: 47 ms a step to zero the embedding gradient,
a sixth of a MiniLM bf16 step on one core. ``keep_freed_blocks`` keeps freed blocks mapped for
the run, then hands them back: page faults fell from ~16,500 to ~2,000-2,800 a step (MiniLM,
packed bf16 batches). glibc does not promise to reuse the very block every time.

No-ops where libc is not glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from typing import Any, Iterator

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def trim() -> None:
    """Hand the memory freed blocks hold back to the system (``malloc_trim``).

    Batch prediction calls it after each chunk: chunks of varying sizes fragment glibc's heaps, and
    RSS crept up ~1 MB a chunk of 500 lines (+30 MB from 10k to 100k lines) although nothing was
    kept. It costs 10-20 ms a chunk of 1,000 lines (a chunk takes seconds); gc.collect() would cost
    ~600 ms (torch's and transformers' heap of objects) and is not needed: a chunk's examples and
    outputs hold no reference cycles."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@contextlib.contextmanager
def keep_freed_blocks() -> Iterator[None]:
    """Inside: every block comes from the heap (no ``mmap``) and freed memory stays mapped, so a
    block freed at one step is reused, without page faults, at the next. On leaving: glibc's
    defaults again, and what is free is returned."""
    if _LIBC is None:
        yield
        return
    _LIBC.mallopt(_M_MMAP_MAX, 0)
    _LIBC.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        _LIBC.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        trim()
