"""Long fault and load runs: NOT collected by default.

Run them with ``scripts/fault-suite.sh`` (or ``POLCHAIN_LONG=1 python -m pytest tests/fault``).
Knobs (environment): POLCHAIN_FAULT_ITER scales the number of crash iterations
(default 1.0 = the counts in docs/security.md); POLCHAIN_FAULT_RESULTS names a JSON
file that receives every figure the tests record.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from tests.chain_spec import TINY_TEST, TINY_TEST_ARGS

if os.environ.get("POLCHAIN_LONG") != "1":
    collect_ignore_glob = ["test_*.py"]

CHAIN_BLOCKS = 40
_results: list[dict] = []


def scale(n: int) -> int:
    return max(1, round(n * float(os.environ.get("POLCHAIN_FAULT_ITER", "1"))))


@pytest.fixture(scope="session")
def record():
    """``record(test, **figures)``: figures for docs/security.md (written at session end)."""
    def _record(test: str, **figures):
        figures = {"test": test, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
        _results.append(figures)
        print("FIGURES", json.dumps(figures))
    return _record


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("POLCHAIN_FAULT_RESULTS")
    if path and _results:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(_results, indent=2) + "\n")


@pytest.fixture(scope="session")
def spec():
    return TINY_TEST


@pytest.fixture(scope="session")
def dataset(spec, request):
    try:
        return request.getfixturevalue("tiny_dataset")
    except pytest.FixtureLookupError:
        from consensus.data import load_dataset
        return load_dataset(spec.dataset, None)


@pytest.fixture(scope="session")
def chaindir(spec, dataset, tmp_path_factory) -> Path:
    """CHAIN_BLOCKS pre-mined blocks on disk (tests/fault/chainfile.py)."""
    from .chainfile import mine_chain
    d = tmp_path_factory.mktemp("chain")
    mine_chain(spec, dataset, d, CHAIN_BLOCKS)
    return d


@pytest.fixture(scope="session")
def blocks(chaindir):
    from .chainfile import load
    return load(chaindir)


@pytest.fixture
def nodes(tmp_path, request):
    from tests.nodeproc import NodeGroup
    group = NodeGroup(tmp_path, (*TINY_TEST_ARGS, "--poll-interval", "0.5"))
    yield group
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for name, node in group.nodes.items():
            print(f"\n===== {name} {node.url} =====\n" + "\n".join(node.log_text().splitlines()[-60:]))
    group.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
