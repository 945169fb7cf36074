"""One torch thread for the consensus tests (the machine's 2 cores are shared; intra-op threads
contending with other processes made steps several times slower). test_determinism sets 1 and
2 threads itself and restores this."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
