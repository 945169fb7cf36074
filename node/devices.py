"""``--device`` values naming several devices: ``cuda:0,cuda:1`` or ``cuda:all``.

``expand_devices`` turns the flag into the list of devices to run one search
each on: a single device stays as written (``cpu``, ``mps``, ``auto``,
``cuda``, ``cuda:N``), so a one-device node behaves as before; a list is
comma-separated CUDA devices; ``cuda:all`` is every visible CUDA device.
Mistakes are refused with a message naming the bad part: unknown names,
repeats (``cuda`` and ``cuda:0`` are the same device), an index that is not
visible, CUDA or MPS where torch has none, and ``cpu``/``mps``/``auto`` in a list.
"""
from __future__ import annotations

import re

_SINGLE_ONLY = ("cpu", "mps", "auto")
_CUDA = re.compile(r"cuda(?::(\d+))?")


def cuda_device_count() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    import torch
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def no_cuda_reason() -> str:
    """Why no CUDA device can be used, in one line that says what to do."""
    import torch
    if torch.version.cuda is None:
        return (f"this torch ({torch.__version__}) is a CPU build: install a CUDA build of torch "
                "(https://pytorch.org/get-started/locally/) or use --device cpu")
    return f"no CUDA device is visible to torch {torch.__version__} (driver, CUDA_VISIBLE_DEVICES?); use --device cpu"


def expand_devices(text: str, cuda_count: int | None = None) -> list[str]:
    """The devices ``text`` names, in order; ``cuda_count`` defaults to torch's count (asked only if needed)."""
    items = [part.strip().lower() for part in str(text).split(",")]
    if any(not part for part in items):
        raise ValueError(f"--device {text!r}: empty entry")

    def count() -> int:
        nonlocal cuda_count
        if cuda_count is None:
            cuda_count = cuda_device_count()
        return cuda_count

    if items == ["cuda:all"]:
        if count() == 0:
            raise ValueError(f"--device cuda:all: no CUDA device is visible ({no_cuda_reason()})")
        return [f"cuda:{i}" for i in range(count())]
    if len(items) == 1 and (items[0] in _SINGLE_ONLY or _CUDA.fullmatch(items[0])):
        if items[0] == "mps" and not mps_available():
            raise ValueError("--device mps: this machine or torch build has no MPS (Apple GPU); use --device cpu")
        _check_index(items[0], text, count)
        return items
    out: list[str] = []
    for part in items:
        if part in _SINGLE_ONLY or part == "cuda:all":
            raise ValueError(f"--device {text!r}: {part} cannot be part of a list (name CUDA devices: cuda:0,cuda:1)")
        if not _CUDA.fullmatch(part):
            raise ValueError(f"--device {text!r}: unknown device {part!r} (cpu, mps, auto, cuda, cuda:N, "
                             f"cuda:N,cuda:M, cuda:all)")
        _check_index(part, text, count)
        name = "cuda:0" if part == "cuda" else part
        if name in out:
            raise ValueError(f"--device {text!r}: {name} named twice")
        out.append(name)
    return out


def _check_index(part: str, text: str, count) -> None:
    m = _CUDA.fullmatch(part)
    if m and count() == 0:
        raise ValueError(f"--device {text!r}: {no_cuda_reason()}")
    if m and m.group(1) is not None and int(m.group(1)) >= count():
        raise ValueError(f"--device {text!r}: {part} is not visible ({count()} CUDA device(s))")


def device_arg(text: str) -> str:
    """argparse ``type=`` for a one-device ``--device`` (mine, bench, testnet): a device torch cannot
    use is a one-line usage error (exit 2), not a traceback from the first tensor put on it."""
    import argparse
    try:
        devices = expand_devices(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--device {text!r}: ")) from None
    if len(devices) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: one device here (several are for `polchain node --mine`)")
    return devices[0]
