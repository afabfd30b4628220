"""Hand a process's freed heap back to the operating system.

Why: a simulation worker serves one client after another. Each call's tensors (a batch's
activations, a model loaded from its checkpoint, a message's arrays) are freed when it ends,
but glibc's allocator keeps freed memory inside the process for reuse, and raises the size
below which it serves requests from its heap each time a large block is freed, so the heap
of a long-lived worker only grows. ``malloc_trim`` returns the free pages (anywhere in the
heap, not only at its top) without touching live memory. It is glibc's; elsewhere (macOS,
musl) :func:`release_freed_memory` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # no libc to load, or one without malloc_trim (musl)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return the allocator's free pages to the operating system; True where it could."""
    trim = _malloc_trim()
    return trim is not None and trim(0) >= 0
