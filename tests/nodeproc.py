"""Real `polchain node` processes for integration tests (any suite may use this).

    node = NodeProc(tmp_path / "a", "--mine", "--poll-interval", "0.5").start()
    node.status()["height"]; node.wait_for(lambda: ..., timeout=60); node.kill(); node.restart()

* Each node runs ``python -m node.cli node`` with ``--threads 1`` (and
  OMP/MKL at one thread) on a free loopback port, its own datadir, stdout and
  stderr in a log file beside the datadir. ``start`` waits until ``/health``
  answers (200, or 503 while the node syncs).
* ``stop`` sends SIGTERM and waits (SIGKILL after ``timeout``); ``kill`` is
  ``kill -9``. ``restart`` starts the same command again on the same port and
  datadir. Only the process this object started is ever signalled.
* ``NodeGroup`` keeps track of several nodes and stops them all (a fixture
  calls ``close`` at teardown).
* A node dies with the process that started it, whatever ends that process
  (issue 31.13): on Linux the child asks the kernel for SIGTERM when its parent
  dies (``prctl(PR_SET_PDEATHSIG)``, set between fork and exec), so a pytest
  killed by SIGKILL leaves no node behind; and ``sigterm_as_interrupt`` (installed
  by tests/conftest.py) turns a SIGTERM to pytest into a Ctrl-C, so the run ends
  with its normal teardown and the fixtures stop their nodes themselves.
* Every bound a test gives a wait (``wait_for``, ``wait_height``, ``start``,
  ``stop``, a subprocess through ``patient``) is stretched by ``PATIENCE``
  (default 5, ``POLCHAIN_TEST_PATIENCE``): a bound only says when a run is
  broken, never how fast it must be, and a shared 2-core machine at load 14-21
  was measured 5-10x slower than a quiet one (a node start 15 s, ``polchain
  verify`` of 5 blocks 58-125 s, against 3 s of CPU). A test that passes waits
  no longer for it; one that fails takes longer to say so.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import httpx

REPO = Path(__file__).resolve().parents[1]
PATIENCE = float(os.environ.get("POLCHAIN_TEST_PATIENCE", "5"))


def patient(seconds: float) -> float:
    """A test's bound on a wait, stretched for a loaded machine (see PATIENCE)."""
    return seconds * PATIENCE
_used_ports: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nobody listens on now (not handed out twice by this process)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port")


PR_SET_PDEATHSIG = 1
try:  # resolved here, in the parent: between fork and exec the child only calls it
    import ctypes
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover - no libc prctl
    _prctl = None


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for a child that must not outlive this process: SIGTERM on the parent's death.

    The kernel sends the signal when the *thread* that forked the child ends, so it is only set for a
    child started from the main thread (a node started from a worker thread gets None: no such link).
    The child checks its parent after the prctl: if this process died before it, it exits at once."""
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def preexec() -> None:  # pragma: no cover - runs in the child, between fork and exec
        _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return preexec


def sigterm_as_interrupt() -> None:
    """In pytest's main thread: the first SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so the
    run stops with its normal teardown -- session fixtures stop their nodes and remove their files;
    a second SIGTERM kills at once (the nodes then get theirs from ``die_with_parent``). A SIGTERM
    handler someone else installed is left alone."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, on_sigterm)


def node_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", POLCHAIN_LOG_LEVEL="INFO")
    return env


class NodeProc:
    """One `polchain node` subprocess."""

    def __init__(self, datadir: Path, *args: str, port: int | None = None, log: Path | None = None,
                 name: str | None = None):
        self.datadir = Path(datadir)
        self.args = list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name or self.datadir.name
        self.log_path = Path(log) if log else self.datadir.parent / f"{self.datadir.name}-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.client = httpx.Client(base_url=self.url, timeout=patient(30))

    def __repr__(self) -> str:
        return f"<NodeProc {self.name} {self.url} {'up' if self.alive() else 'down'}>"

    # -- life cycle ---------------------------------------------------------------
    def command(self) -> list[str]:
        return [sys.executable, "-m", "node.cli", "node", "--datadir", str(self.datadir), "--port", str(self.port),
                "--threads", "1", *self.args]

    def launch(self) -> "NodeProc":
        """Start the process without waiting for it."""
        if self.alive():
            raise RuntimeError(f"{self} is already running")
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env=node_env(), start_new_session=True, preexec_fn=die_with_parent())
        return self

    def start(self, timeout: float = 120) -> "NodeProc":
        self.launch()
        self.wait_ready(timeout)
        return self

    def restart(self, *args: str, timeout: float = 120) -> "NodeProc":
        """Start again (same port and datadir); ``args`` replace the extra arguments when given."""
        if self.alive():
            self.stop()
        if args:
            self.args = list(args)
        return self.start(timeout)

    def wait_ready(self, timeout: float = 120) -> None:
        timeout = patient(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                r = httpx.get(self.url + "/health", timeout=2)
                if r.status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} on {self.url} not ready after {timeout}s:\n{self.log_text()[-3000:]}")

    def send(self, sig: int, timeout: float = 20) -> int:
        """Send ``sig`` and wait for the exit code (``timeout`` stretched by PATIENCE)."""
        if self.proc is None or self.proc.poll() is not None:
            self._close_log()
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(patient(timeout))
        finally:
            self._close_log()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        try:
            return self.send(sig, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None and not self._log.closed:
            self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return [line for line in self.log_text().splitlines() if rx.search(line)]

    # -- HTTP ------------------------------------------------------------------------
    def get(self, path: str, **kw) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.client.post(path, **kw)

    def status(self) -> dict:
        r = self.get("/status")
        r.raise_for_status()
        return r.json()

    def peers(self) -> list[dict]:
        r = self.get("/peers")
        r.raise_for_status()
        return r.json()

    def best_chain(self, start: int = 0) -> list[dict]:
        """Every block of the node's best chain from ``start`` (GET /blocks, paged)."""
        out: list[dict] = []
        nxt: int | None = start
        while nxt is not None:
            r = self.get("/blocks", params={"start": nxt, "limit": 500})
            r.raise_for_status()
            page = r.json()
            out.extend(page["blocks"])
            nxt = page["next_start"]
        return out

    def block(self, ident: str) -> dict | None:
        r = self.get(f"/blocks/{ident}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def wait_height(self, height: int, timeout: float = 60) -> dict:
        timeout = patient(timeout)
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st["height"] >= height:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: height {st['height']} < {height} after {timeout}s")
            time.sleep(0.2)

    def wait_for(self, predicate: Callable[[], object], timeout: float = 60, interval: float = 0.3,
                 what: str = "condition"):
        return wait_for(predicate, timeout, interval, f"{self.name}: {what}")


def wait_for(predicate: Callable[[], object], timeout: float = 60, interval: float = 0.3, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (HTTP errors count as not yet); ``timeout``
    is stretched by PATIENCE."""
    timeout = patient(timeout)
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met after {timeout}s" + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(interval)


class NodeGroup:
    """Nodes started by one test or module; ``close`` stops every one of them."""

    def __init__(self, root: Path, common_args: tuple[str, ...] = ()):
        self.root = Path(root)
        self.common_args = tuple(common_args)
        self.nodes: dict[str, NodeProc] = {}

    def add(self, name: str, *args: str, peers: tuple[NodeProc | str, ...] = (), port: int | None = None) -> NodeProc:
        """Create (not start) a node; ``peers``: NodeProcs or URLs for --peer."""
        peer_args: list[str] = []
        for p in peers:
            peer_args += ["--peer", p.url if isinstance(p, NodeProc) else p]
        node = NodeProc(self.root / name, *self.common_args, *peer_args, *args, port=port, name=name)
        self.nodes[name] = node
        return node

    def start(self, name: str, *args: str, peers: tuple = (), timeout: float = 120) -> NodeProc:
        return self.add(name, *args, peers=peers).start(timeout)

    def start_all(self, nodes: list[NodeProc], timeout: float = 120) -> list[NodeProc]:
        """Launch several at once (start-up overlaps), then wait for each."""
        for n in nodes:
            n.launch()
        for n in nodes:
            n.wait_ready(timeout)
        return nodes

    def __getitem__(self, name: str) -> NodeProc:
        return self.nodes[name]

    def close(self) -> None:
        for n in self.nodes.values():
            try:
                n.stop(timeout=15)
            except Exception:
                n.kill()
            n.client.close()
