"""Connections that never complete a request cannot fill the node (issue 30.1).

Found: uvicorn's ``limit_concurrency = 256`` counted open connections and nothing timed out one that
never sent a request: 260 silent sockets made 60 of 60 ``GET /status`` probes 503 for 120 s, trusted
loopback clients included. The node's connection layer (node/connections.py) now closes a connection
whose first byte is not in within 5 s and whose request headers are not in within 10 s, refuses at once
a connection over its address's or its network's cap or over the total, and keeps slots for trusted
clients (their own pool) and known senders (a reserve).

A real ``polchain node`` on loopback with ``--cap-local-networks`` (loopback networks count as public
networks, so a /24 of 127.x is capped as one network). The attacker is a child process
(tests/adversarial/idle_sockets.py) on 127.0.3.x and others; the bystander is this process on another
address, one fresh connection per ``GET /status``. Latencies are compared within one run (quiet, then
attacked); the bounds are generous (a 2-core machine shared with the attacker and other test runs).
Each test prints a FIGURES line.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.nodeproc import REPO, NodeProc, patient
from tests.chain_spec import TINY_TEST_ARGS

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`

FIRST_BYTE_S, HEADERS_S = 5.0, 10.0         # node/connections.py ConnectionLimits
BYSTANDER = "127.0.4.9"
STRANGER = "127.0.30.1"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = NodeProc(tmp_path_factory.mktemp("conn") / "d", *TINY_TEST_ARGS, "--cap-local-networks").start()
    yield n
    n.stop()


class Prober:
    """``GET /status`` from ``ip`` on a fresh connection every ``every`` seconds, in a thread: the latency
    of each answer and every status or error seen."""

    def __init__(self, url: str, ip: str, every: float = 0.05):
        self.url, self.ip, self.every = url, ip, every
        self.lat: list[float] = []
        self.outcomes: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        transport = httpx.HTTPTransport(local_address=self.ip)
        with httpx.Client(base_url=self.url, timeout=10, transport=transport) as c:
            while not self._stop.wait(self.every):
                t0 = time.perf_counter()
                try:
                    r = c.get("/status", headers={"connection": "close"})
                    key = str(r.status_code)
                    if r.status_code == 200:
                        self.lat.append(time.perf_counter() - t0)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(30)


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[int(0.99 * (len(xs) - 1))] if xs else float("nan")


def attacker(node: NodeProc, ips: str, count: int, seconds: float, **kw) -> subprocess.Popen:
    args = [sys.executable, "-m", "tests.adversarial.idle_sockets", "127.0.0.1", str(node.port), "--ips", ips,
            "--count", str(count), "--seconds", str(seconds)]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)


def report(proc: subprocess.Popen, seconds: float) -> dict:
    out, _ = proc.communicate(timeout=patient(seconds + 60))
    assert proc.returncode == 0, out
    return json.loads(out)


def latency(prober: Prober) -> dict:
    lat = prober.lat
    return {"n": len(lat), "median": statistics.median(lat) if lat else None, "p99": p99(lat),
            "outcomes": prober.outcomes}


def test_a_thousand_idle_sockets_from_one_network_leave_others_served(node):
    """1,000 silent sockets from 127.0.3.1-250 (one /24): held (no reconnect), then reopened every second
    as the node closes them (~950 connects a second). A bystander on another /24 is served all along."""
    with Prober(node.url, BYSTANDER) as quiet:
        time.sleep(5)
    held_s = FIRST_BYTE_S - 0.5                 # the node closes none of them for 5 s
    proc = attacker(node, "127.0.3.1-250", 1000, held_s, reopen=3600)
    time.sleep(1.0)                             # the sockets are open
    with Prober(node.url, BYSTANDER) as held:
        time.sleep(held_s - 1.5)
    held_report = report(proc, held_s)
    attack_s = 12.0
    proc = attacker(node, "127.0.3.1-250", 1000, attack_s)
    time.sleep(1.0)
    with Prober(node.url, BYSTANDER) as attacked:
        time.sleep(attack_s - 3)
    got = report(proc, attack_s)
    closed = got["closed"]
    at_once = [c for c in closed if c["held"] < 1.0]
    by_deadline = [c["held"] for c in closed if c["held"] >= 1.0]
    figures = {
        "sockets": got["count"], "connects": got["opened"], "refused_at_once": len(at_once),
        "first_sweep_refused": sum(1 for c in held_report["closed"] if c["held"] < 1.0),
        "closed_by_deadline": len(by_deadline),
        "held_by_deadline_s": [min(by_deadline, default=None), max(by_deadline, default=None)],
        "oldest_open_at_end_s": max(got["open_ages"], default=None),
        "quiet": latency(quiet), "held": latency(held), "reconnecting": latency(attacked),
    }
    print("FIGURES", json.dumps(figures))
    assert got["count"] >= 1000 or got["count"] == got["opened"], figures   # as many as the fd limit allows
    for phase in (quiet, held, attacked):                                   # every probe answered
        assert phase.outcomes == {"200": sum(phase.outcomes.values())}, figures
    # p99 within 2x of the quiet phase's, and 50 ms (at the default patience) for a 2-core machine shared
    # with the attacker: reopened each second, runs here gave 1.8-3.6x, the median unchanged
    assert p99(held.lat) <= 2 * p99(quiet.lat) + patient(0.01), figures
    assert p99(attacked.lat) <= 2 * p99(quiet.lat) + patient(0.01), figures
    assert figures["first_sweep_refused"] >= held_report["count"] - 64, figures   # over the /24's cap: at once
    assert by_deadline, figures                                 # the admitted ones: closed when silent
    assert all(FIRST_BYTE_S - 0.5 <= h <= FIRST_BYTE_S + patient(1.0) for h in by_deadline), figures
    assert max(got["open_ages"], default=0) <= FIRST_BYTE_S + patient(1.0), figures


def test_slowloris_is_closed_at_the_header_deadline(node):
    """One header byte a second: the node closes it 10 s after the connect, headers unfinished."""
    seconds = HEADERS_S + patient(3.0)
    got = report(attacker(node, "127.0.5.1-10", 10, seconds, trickle=1.0), seconds)
    held = sorted(c["held"] for c in got["closed"])
    print("FIGURES", json.dumps({"connections": got["count"], "held_s": held,
                                 "bytes_sent": sorted(c["sent"] for c in got["closed"]),
                                 "still_open": len(got["open_ages"])}))
    assert got["open_ages"] == [] and len(held) == got["count"] == 10, got
    assert all(HEADERS_S - 0.5 <= h <= HEADERS_S + patient(1.0) for h in held), held
    assert all(c["sent"] >= HEADERS_S - 2 for c in got["closed"]), got      # it kept sending: still closed


def test_a_trusted_client_gets_in_while_the_caps_are_full(node):
    """1,000 idle sockets from 10 networks fill every slot for clients without a record; 127.0.0.1
    (trusted by default) has slots of its own."""
    attack_s = 12.0
    proc = attacker(node, ",".join(f"127.0.{n}.1-25" for n in range(10, 20)), 1000, attack_s)
    time.sleep(1.0)
    with Prober(node.url, "127.0.0.1", every=0.1) as trusted, Prober(node.url, STRANGER, every=0.1) as stranger:
        time.sleep(attack_s - 3)
    got = report(proc, attack_s)
    refused = sum(1 for c in got["closed"] if c["held"] < 1.0)
    print("FIGURES", json.dumps({"sockets": got["count"], "connects": got["opened"], "refused_at_once": refused,
                                 "trusted": trusted.outcomes, "trusted_p99": p99(trusted.lat),
                                 "stranger": stranger.outcomes}))
    assert trusted.outcomes == {"200": sum(trusted.outcomes.values())} and len(trusted.lat) >= 20, trusted.outcomes
    assert refused > 0, got["count"]                          # the caps were full: others were refused
    assert set(stranger.outcomes) - {"200"}, stranger.outcomes  # ... the stranger among them
