"""node/devices.py: `--device cuda:0,cuda:1` and `--device cuda:all` expand to one device per search."""
from __future__ import annotations

import pytest

from node.devices import expand_devices


@pytest.mark.parametrize("text, count, want", [
    ("cpu", 0, ["cpu"]),
    ("auto", 0, ["auto"]),
    ("cuda", 1, ["cuda"]),
    (" CUDA:1 ", 2, ["cuda:1"]),
    ("cuda:0,cuda:1", 2, ["cuda:0", "cuda:1"]),
    ("cuda:1, cuda:0", 2, ["cuda:1", "cuda:0"]),
    ("cuda,cuda:2", 3, ["cuda:0", "cuda:2"]),
    ("cuda:all", 1, ["cuda:0"]),
    ("cuda:all", 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),
])
def test_expand(text, count, want):
    assert expand_devices(text, cuda_count=count) == want


@pytest.mark.parametrize("text, count, message", [
    ("cuda:all", 0, "no CUDA device is visible"),
    ("cuda:2", 2, "cuda:2 is not visible \\(2 CUDA device"),
    ("cuda:0,cuda:5", 2, "cuda:5 is not visible"),
    ("cuda:0,cuda:0", 2, "cuda:0 named twice"),
    ("cuda,cuda:0", 2, "cuda:0 named twice"),
    ("cpu,cuda:0", 1, "cpu cannot be part of a list"),
    ("cuda:0,auto", 1, "auto cannot be part of a list"),
    ("cuda:all,cuda:0", 1, "cuda:all cannot be part of a list"),
    ("cuda:0,,cuda:1", 2, "empty entry"),
    ("", 0, "empty entry"),
    ("gpu0", 1, "unknown device 'gpu0'"),
    ("cuda:0,tpu", 1, "unknown device 'tpu'"),
    ("cuda:-1,cuda:0", 1, "unknown device 'cuda:-1'"),
    ("cuda", 0, "CPU build|no CUDA device is visible"),          # was a traceback from deep in torch
    ("cuda:0,cuda:1", 0, "CPU build|no CUDA device is visible"),
])
def test_refused(text, count, message):
    with pytest.raises(ValueError, match=message):
        expand_devices(text, cuda_count=count)


def test_count_asked_only_when_needed(monkeypatch):
    """A plain `cpu` node never touches CUDA; cuda:all asks torch (none on a CPU-only machine: refused)."""
    import node.devices as devices
    calls = []
    monkeypatch.setattr(devices, "cuda_device_count", lambda: calls.append(1) or 0)
    assert expand_devices("cpu") == ["cpu"] and calls == []
    with pytest.raises(ValueError, match="no CUDA device"):
        expand_devices("cuda:all")
    assert calls == [1]


def test_mps_is_refused_where_torch_has_none(monkeypatch):
    import node.devices as devices
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    with pytest.raises(ValueError, match="has no MPS"):
        expand_devices("mps")
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert expand_devices("mps") == ["mps"]
