"""Node processes die with the pytest that started them (issue 31.13).

A pytest run of a small test file holds a node through a session fixture (as the node tests'
``static_node`` does, tests/node/conftest.py) and sleeps; this test ends that pytest with SIGTERM or
SIGKILL and the node must be gone: after SIGTERM the run tears down as after Ctrl-C (the fixture
stops its node before pytest exits); after SIGKILL nothing in pytest runs, and the kernel's
parent-death signal (``tests.nodeproc.die_with_parent``) stops the node.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.nodeproc import REPO, patient

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`

INNER = '''
import os
import time
from pathlib import Path

import pytest

from tests.nodeproc import NodeProc


@pytest.fixture(scope="session")
def session_node(tmp_path_factory):
    """A session fixture's node as the suites hold theirs (tests/node/conftest.py ``_session_node``), on an
    empty chain: the template chain's mining is not this test's subject."""
    n = NodeProc(tmp_path_factory.mktemp("held") / "data").start()
    yield n
    if n.alive():
        n.stop()


def test_holds_a_session_node(session_node):
    Path(os.environ["NODEPROC_TEST_PID_FILE"]).write_text(str(session_node.proc.pid))
    time.sleep(3600)
'''


def gone(pid: int) -> bool:
    """No such process, or a zombie (dead; its new parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_session_fixtures_node_dies_with_pytest(tmp_path, sig):
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pytest.ini").write_text("[pytest]\n")          # its own rootdir: not the repository's testpaths
    (inner / "test_holds_a_node.py").write_text(INNER)
    pid_file = tmp_path / "node.pid"
    env = {**os.environ, "NODEPROC_TEST_PID_FILE": str(pid_file), "PYTHONPATH": str(REPO)}
    # -p tests.conftest: the suite's hooks (its SIGTERM handler) as a run of the suite has them
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
           "--basetemp", str(tmp_path / "basetemp"), str(inner / "test_holds_a_node.py")]
    run = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    node_pid = None
    try:
        deadline = time.monotonic() + patient(120)
        while not (pid_file.exists() and pid_file.read_text()):
            assert run.poll() is None, run.stdout.read().decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the inner run never started its node"
            time.sleep(0.2)
        node_pid = int(pid_file.read_text())
        assert not gone(node_pid)
        run.send_signal(sig)
        rc = run.wait(patient(60))
        out = run.stdout.read().decode(errors="replace")
        if sig == signal.SIGTERM:
            # a normal teardown: interrupted (exit 2), the fixture stopped the node before pytest exited
            assert rc == 2, out[-3000:]
            assert gone(node_pid), "pytest exited on SIGTERM before its fixture stopped the node"
        else:
            assert rc == -signal.SIGKILL
            assert wait_gone(node_pid, patient(10)), f"node {node_pid} still running after pytest was killed"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if node_pid is not None and not gone(node_pid):
            os.kill(node_pid, signal.SIGKILL)          # the node this test's run started, left behind
