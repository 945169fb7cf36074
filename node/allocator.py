"""The process's C allocator, tuned for the exact step (glibc only; anything else is left alone).

A ResNet-18 exact step allocates and frees tensors of 2-40 MB hundreds of times (im2col columns,
fp64 copies of the weights, GEMM outputs). glibc serves blocks above its mmap threshold with a
fresh ``mmap`` and gives them back at ``free``, so every such tensor is page-faulted and zeroed
again by the kernel, step after step. Raising the mmap threshold to glibc's maximum (32 MiB) and
keeping up to 1 GiB of freed heap makes those blocks reusable: -15 % per ResNet-18 step on two
threads, -8 % on one (docs/benchmarks.md 8.1). The cost: up to 1 GiB of freed memory stays
mapped to the process instead of going back to the system.

A user's own ``MALLOC_*_`` or ``GLIBC_TUNABLES=glibc.malloc.*`` settings or a preloaded allocator
(jemalloc, tcmalloc) win: nothing is changed then, and neither with ``POLCHAIN_MALLOC=system``. It
changes no result, only where memory comes from.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1          # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20      # glibc's largest accepted value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30


def _left_to_the_user() -> bool:
    env = os.environ
    preload = env.get("LD_PRELOAD", "")
    return (env.get("POLCHAIN_MALLOC", "") == "system" or "malloc" in preload
            or "glibc.malloc." in env.get("GLIBC_TUNABLES", "")
            or any(k.startswith("MALLOC_") and k.endswith("_") for k in env))


def tune_allocator() -> bool:
    """Keep large freed blocks for reuse (see the module text). True when the settings took effect."""
    if not sys.platform.startswith("linux") or _left_to_the_user():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):      # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
