"""Smoke tests of the benchmarks: toy sizes, the JSON fields checked, not the figures' values.

The benchmarks generate their data; here they get the session's tiny data set
instead (generating it again would cost seconds per test). A benchmark may set
torch's thread count; it is restored after each test.
"""
from __future__ import annotations

import json

import pytest
import torch

from bench import common
from node.cli import main


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def shared_data(monkeypatch, tiny_dataset):
    monkeypatch.setattr(common, "bench_dataset", lambda spec, data_dir=None: (tiny_dataset, "synthetic (the spec's own)"))
    return tiny_dataset


@pytest.fixture
def bench_json(capsys):
    """Run `polchain bench ...` in-process with --json; the one JSON object it printed."""
    def run(*argv: str) -> dict:
        capsys.readouterr()
        assert main(["--log-level", "WARNING", "bench", *argv, "--json"]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        return json.loads(out[-1])
    return run
