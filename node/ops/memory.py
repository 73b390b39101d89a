"""Handing memory back to the system after a study.

CPython frees a study's arrays, but glibc's allocator keeps the freed pages of its heap (and, after a large
block is freed, raises its mmap threshold so the next ones land in the heap too): a process that decoded a
big image keeps its peak resident set. :func:`release_memory` asks glibc to return what it holds free
(``malloc_trim``); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, when the process runs on glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return trim


def release_memory() -> None:
    """Return the allocator's free memory to the system (the study's arrays are freed by reference counting
    as it ends; ctypes lets other threads run during the trim)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
