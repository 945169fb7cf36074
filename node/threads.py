"""How many torch CPU threads a command uses unless ``--threads`` says: measured per model and device.

Measured with ``polchain bench threads`` on a 2-core machine (docs/benchmarks.md, "Thread
defaults"): a tiny-cnn step (batch 4) never gains from a second thread and loses 3.7x with one
other busy process; a ResNet-18 evaluation of E gains about 2x from two *free* cores, but with
one other busy process two threads were 1.2-13x slower than one (every small kernel waits for
the thread whose core is taken). So:

* ``tiny-cnn``, any device: 1 thread;
* other models (ResNet-18), any device: the cores that are free when the command starts
  (cores minus the rounded 1-minute load average, at least 1). On a GPU the search runs on the
  device, but blocks are still validated on the CPU, where this is what counts.

``apply_threads`` sets the count and returns a one-line note that every command prints at start.
"""
from __future__ import annotations

import os

ONE_THREAD_ARCHS = ("tiny-cnn",)


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work right now: cores - round(1-minute load average), at least 1."""
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, cores - int(load + 0.5)))


def default_threads(arch: str, device: str = "cpu", *, cores: int | None = None,
                    load: float | None = None) -> tuple[int, str]:
    """(threads, why) for a model on a device."""
    if arch in ONE_THREAD_ARCHS:
        return 1, f"{arch} on {device}: one thread is fastest (measured)"
    n = free_cores(cores, load)
    total = cores or os.cpu_count() or 1
    return n, f"{arch} on {device}: the {n} of {total} cores free at start (measured: busy cores slow threads down)"


def threads_arg(text: str) -> int:
    """argparse type of ``--threads``: a positive integer."""
    import argparse
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return n


def apply_threads(requested: int | None, arch: str, device: str = "cpu") -> str:
    """Set torch's thread count (``requested``, else the default); the note to print at start."""
    import torch
    if requested is not None and requested < 1:
        raise ValueError(f"--threads must be at least 1, got {requested}")
    if requested:
        n, why = requested, "--threads"
    elif os.environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        n, why = int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    else:
        n, why = default_threads(arch, device)
    torch.set_num_threads(n)
    return f"torch threads: {n} ({why}; --threads N to change)"
