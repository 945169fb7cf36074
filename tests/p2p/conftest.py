"""Fixtures for the P2P suite: real `polchain node` processes on loopback.

``nodes``       a NodeGroup (tests/nodeproc.py) for one test: ``nodes.start("a", "--mine")``,
                ``nodes.add(...)`` + ``nodes.start_all([...])``; every node is stopped at teardown.
``line``        (module) A - B - C in a line: A and C mine, B relays, C knows only B. Discovery is
                off on these three so the line stays a line.

Every node runs the tiny preset with ``--threads 1`` and a short poll interval; when a test fails
the tail of each node's log is printed.
"""
from __future__ import annotations

import pytest

from tests.nodeproc import NodeGroup
from tests.chain_spec import TINY_TEST_ARGS

POLL = "0.5"
COMMON = (*TINY_TEST_ARGS, "--poll-interval", POLL)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _dump_logs(group: NodeGroup, lines: int = 40) -> None:
    for name, node in group.nodes.items():
        tail = node.log_text().splitlines()[-lines:]
        print(f"\n===== {name} {node.url} ({node.log_path}) =====")
        print("\n".join(tail))


@pytest.fixture
def nodes(tmp_path, request):
    group = NodeGroup(tmp_path, COMMON)
    yield group
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        _dump_logs(group)
    group.close()


@pytest.fixture(scope="module")
def line(tmp_path_factory, request):
    group = NodeGroup(tmp_path_factory.mktemp("line"), COMMON)
    a = group.add("a", "--mine", "--no-discover")
    b = group.add("b", "--no-discover", peers=(a,))
    c = group.add("c", "--mine", "--no-discover", peers=(b,))
    try:
        group.start_all([a, b, c])
        yield group
    finally:
        if any(getattr(i, "rep_call", None) is not None and i.rep_call.failed
               for i in request.session.items if i.module is request.module):
            _dump_logs(group)
        group.close()
