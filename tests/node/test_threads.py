"""node/threads.py: the default torch thread count per model, and the note every command prints."""
from __future__ import annotations

import pytest
import torch

from node.threads import apply_threads, default_threads, free_cores


@pytest.fixture(autouse=True)
def keep_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("cores, load, want", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 9.0, 1),
                                               (16, 3.2, 13), (16, 0.0, 16), (1, 0.0, 1)])
def test_free_cores(cores, load, want):
    assert free_cores(cores, load) == want


def test_defaults_per_model():
    assert default_threads("tiny-cnn", "cpu", cores=16, load=0.0)[0] == 1
    assert default_threads("tiny-cnn", "cuda", cores=16, load=0.0)[0] == 1
    assert default_threads("resnet18-cifar", "cpu", cores=2, load=0.1)[0] == 2
    assert default_threads("resnet18-cifar", "cpu", cores=2, load=1.2)[0] == 1   # one other busy process
    assert default_threads("resnet18-cifar", "cuda:0", cores=16, load=2.0)[0] == 14


def test_apply_sets_and_says_why(monkeypatch):
    note = apply_threads(None, "tiny-cnn")
    assert torch.get_num_threads() == 1 and note.startswith("torch threads: 1 (tiny-cnn on cpu")
    assert "--threads N to change" in note
    assert apply_threads(2, "tiny-cnn") == "torch threads: 2 (--threads; --threads N to change)"
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert apply_threads(None, "resnet18-cifar").startswith("torch threads: 1 (OMP_NUM_THREADS")
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="at least 1"):
        apply_threads(0, "tiny-cnn")
