"""`polchain bench hostile`: a real node under a stated attack, as ratios to a quiet phase of the same run
(issue 30, item 6).

Who plays what (everything on this machine's loopback; each role on addresses of its own, none of
them 127.0.0.1, which a node trusts by default):

* **the target**: one real `polchain node` process (tiny preset, ``--threads 1``, mining **off**: its
  tip moves only by the honest miners' blocks below, so each latency is theirs alone and its CPU is
  spent on what it is sent; ``--keep-weights 4`` so that a block 10 below the tip has its
  post-state pruned).
* **the bystander**: GET /status every 50 ms from 127.0.200.1; its p99 per phase (a failed request,
  an error or a non-200 answer, counts as the client timeout, 10 s).
* **the honest miners**: the chain they extend is mined beforehand in this process (the project's
  fast miner through ``node.mining.mine_on_tip``, one thread, timestamps one target interval apart):
  nobody else extends the target's chain, so a block mined ahead on its tip is exactly what a miner
  kept in sync would find, and the mining CPU stays out of both phases. The blocks are released one
  at a time, one every ``--interval`` seconds, alternately by
  - **the known miner** (127.0.5.1, one key; it delivered the setup blocks, so the node knows it):
    latency = from the release to the node's answer ``accepted`` (the tip is switched before the node
    answers; each block is also checked to be the tip afterwards);
  - **a new miner** (a fresh key on a fresh /24, 127.2.i.1, no record at the node): its first
    block's latency, same measure, and its tries (a 503 ``busy`` is tried again after 0.25 s).
  A block not accepted after ``--block-timeout`` counts at that time (a lower bound), and the releases
  stop there (the next block needs it).
* **the attacker** (``--attack-seconds``, in a child process so that its CPU is not the node's; it
  shares the machine's cores with the node, which a remote attacker would not):
  - ``--idle-sockets N`` connections from one /24 (127.0.9.x), half idle (connected, nothing sent),
    half slow (an unfinished request, one byte a second), all open before the attack phase starts; a
    socket the node closes is opened again (at most ~50 a second);
  - junk blocks (bench/give_way.py ``junk_block``: fresh key, valid signature, parent = the tip, random
    nonces: the node replays J+1 steps before R fails) POSTed at ``--junk-rate`` per second by 16
    threads from rotating addresses over many /24s (127.10-49.x.y), a new address once one's junk was
    judged or refused as banned;
  - ``--fake-peers N`` tiny HTTP servers (127.50+.x.1, each its own /24) answering GET /status with the
    chain id, introduced with POST /peers, which then announce junk blocks (the header with
    ``X-Polchain-Origin``) at ``--announce-rate`` each and serve them when the node fetches; one that
    is refused (403) or no longer fetched from is replaced by a new one on a new address;
  - orphans (signed junk blocks on unknown parents) at ``--orphan-rate`` from a *known* host
    (127.0.77.1: it delivered one valid block in the setup, as an attacker who mined once);
  - ``--header-branches N`` header branches: a fake peer (127.70.x.1) whose /status claims the work of
    13 signed junk headers (bench/headers.py ``header_chain``) on an old block (10 below the tip, its
    post-state pruned: the node rebuilds it before the first junk body fails), serving them and the
    bodies when the node syncs from it.

Figures, attack phase over quiet phase of the same run: the bystander's p99; the known miner's median
block latency; the new miner's median first-block latency; the node's CPU per junk block (the node
process's CPU time from /proc/PID/stat over the attack phase, divided by the blocks it judged
invalid then, from its /metrics) over the attacker's CPU per junk block (``time.process_time`` of
making 200 of them, 20 with --quick, before the attack); bans held (the node's GET /peers banned entries at the end
against every attacker identity that sent a block the node judged invalid; each is also probed with a
POST, which a ban answers 403). Goals printed beside: 2x, 2x, 3x, 2 (met through protocol v4's admission
tickets: the junk's sender pays a ticket), all bans held.

``--junk-made ahead`` (the default of a full run): every junk block the attack sends on a tip (POSTed,
announced by a fake peer, or an orphan on a ghost of it) is made before the attack phase, on 2 worker
processes, for each honest block that will be the tip then (their hashes are known: the honest chain is
mined beforehand), as an attacker paying for its tickets on cores of its own would arrive; the node's
machine then carries the node and the bystander only. ``live`` (``--quick``'s default) makes each one
when it is sent, on the node's cores. The CPU figure's denominator is the making price either way.
"""
from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import math
import os
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from node.argtypes import nonneg_float, nonneg_int, positive_float, positive_int

from . import common
from .propagate import Node

# -- who is where --------------------------------------------------------------------------------------
BYSTANDER_IP = "127.0.200.1"
KNOWN_IP = "127.0.5.1"
ATTACKER_KNOWN_IP = "127.0.77.1"       # the attacker's host with a record: sends the orphans
ATTACKER_READER_IP = "127.0.78.1"      # the attacker reading the tip
IDLE_NET = "127.0.9"
SETUP_BLOCKS = 4                       # one by the attacker's known host, three by the known miner
BRANCH_HEADERS = 13
BRANCH_DEPTH = 10                      # the branch leaves the best chain this far below the tip: it claims
                                       # 3 blocks more than the tip, still more when the node polls it
BYSTANDER_EVERY_S = 0.05
CLIENT_TIMEOUT_S = 10.0                # the bystander's timeout: a failed request counts this long
RETRY_PAUSE_S = 0.25                   # an honest miner's pause after a 503 busy
JUNK_SENDERS = 16
PRICE_SAMPLES = (200, 20)              # junk blocks made alone to price one, full run and --quick (a ticket's
                                       # cost is geometric: the mean needs many)
SOCKETS_PER_TICK = 12                  # idle/slow sockets opened per 0.25 s at most (~50/s, reopening included)
GOALS = {"bystander_p99": 2.0, "known_latency": 2.0, "new_latency": 3.0, "node_over_attacker_cpu": 2.0}

DEFAULTS = {       # (full run, --quick)
    "quiet_seconds": (40.0, 8.0), "attack_seconds": (60.0, 12.0), "interval": (3.0, 2.0),
    "junk_rate": (20.0, 10.0), "idle_sockets": (300, 60), "fake_peers": (8, 3), "announce_rate": (1.0, 1.0),
    "orphan_rate": (5.0, 3.0), "header_branches": (2, 1), "junk_made": ("ahead", "live"),
}
PREMADE_SPARE = 1.3                    # junk made ahead per tip: the budget's rate x the interval x this


def register(sub) -> None:
    p = sub.add_parser("hostile", help="a real node under a stated attack: bystander, known and new miners, "
                                       "node CPU per junk block, bans; as ratios to a quiet phase",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a small budget for a smoke test (under a minute): quiet 8 s, attack 12 s, 60 sockets, "
                        "3 fake peers, 1 header branch; any flag given still wins")
    p.add_argument("--quiet-seconds", type=positive_float, default=None, help="quiet phase (default 40)")
    p.add_argument("--attack-seconds", type=positive_float, default=None, help="attack phase (default 60)")
    p.add_argument("--interval", type=positive_float, default=None,
                   help="seconds between two honest blocks' releases (default 3)")
    p.add_argument("--junk-rate", type=nonneg_float, default=None, help="junk blocks POSTed per second (default 20)")
    p.add_argument("--idle-sockets", type=nonneg_int, default=None,
                   help="idle and slow connections held from one /24 (default 300, half of each)")
    p.add_argument("--fake-peers", type=nonneg_int, default=None,
                   help="fake peers announcing junk at any time (default 8)")
    p.add_argument("--announce-rate", type=positive_float, default=None,
                   help="junk announcements per second per fake peer (default 1)")
    p.add_argument("--orphan-rate", type=nonneg_float, default=None,
                   help="orphans per second from the attacker's known host (default 5)")
    p.add_argument("--header-branches", type=nonneg_int, default=None,
                   help="header branches on an old pruned block during the attack (default 2)")
    p.add_argument("--junk-made", choices=("ahead", "live"), default=None,
                   help="make the junk before the attack, on worker processes, as an attacker with cores of its "
                        "own (default), or while sending it, on this machine's cores (--quick's default)")
    p.add_argument("--keep-weights", type=positive_int, default=4,
                   help="the target's --keep-weights (default 4: a block 10 below the tip is pruned)")
    p.add_argument("--block-timeout", type=positive_float, default=30.0,
                   help="an honest block not accepted after this many seconds is given up (the run stops "
                        "releasing: the next block needs it)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--work-dir", type=Path, default=None, help="keep the datadirs and the node's log here")
    common.add_output_arguments(p)
    p.set_defaults(func=main)


def budget(args) -> None:
    """Fill the unset budget flags from DEFAULTS (the --quick column with --quick)."""
    col = 1 if args.quick else 0
    for name, vals in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, vals[col])


def main(args) -> int:
    budget(args)
    return common.emit(run(args), args, table, name="hostile-tiny")


# -- small helpers -------------------------------------------------------------------------------------
def client_from(ip: str, url: str, timeout: float = 60.0):
    import httpx
    return httpx.Client(base_url=url, timeout=timeout, transport=httpx.HTTPTransport(local_address=ip))


def post_block(c, header, records: list | None = None):
    return c.post("/blocks", files={"header": (None, header.encode()),
                                    "records": (None, json.dumps(records or []))})


def json_of(r) -> dict:
    try:
        out = r.json()
        return out if isinstance(out, dict) else {}
    except ValueError:
        return {}


def reason_of(detail: str) -> str:
    """A 503's reason without its particulars (the network, the counts)."""
    return "gave way" if detail.startswith("gave way") else detail.split(";")[0].split("(")[0].strip()


def pctl(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(math.ceil(q * len(v))) - 1)] if q > 0 else v[0]


def node_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rejected_total(url: str) -> tuple[int, dict[str, int]]:
    """The node's blocks judged invalid so far (/metrics ``polchain_blocks_rejected_total``), and by reason."""
    import httpx
    text = httpx.get(url + "/metrics", timeout=30).text
    by = {m.group(1): int(m.group(2))
          for m in re.finditer(r'^polchain_blocks_rejected_total\{reason="([^"]*)"\} (\d+)', text, re.M)}
    return sum(by.values()), by


def covers(entry: str, host: str) -> bool:
    """Whether a GET /peers banned entry (a host, a peer URL or a ``net:`` network) covers ``host``."""
    if entry.startswith("net:"):
        try:
            return ipaddress.ip_address(host) in ipaddress.ip_network(entry[4:], strict=False)
        except ValueError:
            return False
    h = urlsplit(entry).hostname if "://" in entry else entry
    return (h or "").strip("[]") == host


# -- the target node -----------------------------------------------------------------------------------
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: the node gets SIGTERM when this process dies (Linux; only from the main thread)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:  # pragma: no cover - in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return preexec


class TargetNode(Node):
    """The target: one `polchain node` subprocess (bench.propagate.Node) that dies with this process."""

    def __init__(self, datadir: Path, *args: str):
        super().__init__("target", datadir, [], *args)
        self.preexec = _die_with_parent()

    def launch(self) -> "TargetNode":
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self.start()
        return self


# -- the honest chain, mined beforehand ----------------------------------------------------------------
def honest_chain(spec, datadir: Path, roles: list[str], seed: int):
    """Mine one block per role on a chain of our own, in order; [(role, Block, key)]. Roles: ``attacker``
    (the attacker's one valid block), ``setup`` and ``known`` (the known miner's key), ``new`` (a fresh key
    each)."""
    import logging

    import torch
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from miner.search import make_miner
    from node.chain import Chain
    from node.mining import mine_on_tip

    torch.set_num_threads(1)
    logging.getLogger("polchain.chain").setLevel(logging.WARNING)     # a "new tip" line per block otherwise
    rng = random.Random(seed)
    known = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    attacker = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    datadir.mkdir(parents=True, exist_ok=True)
    dataset, _ = common.bench_dataset(spec)          # tiny: the spec's own synthetic data
    chain = Chain(spec, datadir / "chain", dataset, archival=True)
    miner = make_miner("fast", spec, dataset, device="cpu", seed=seed + 1)
    out = []
    t0 = time.perf_counter()
    try:
        for i, role in enumerate(roles):
            key = {"attacker": attacker, "setup": known, "known": known}.get(role) or \
                Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
            ts = chain.tip().header.timestamp_ms + spec.difficulty.target_interval_ms
            block, found = mine_on_tip(chain, miner, key, now_ms=lambda: ts)
            res = chain.submit_mined(block, found.state, found.acc_after)
            if res.status != "accepted":
                raise RuntimeError(f"own block rejected: {res.code} {res.detail}")
            out.append((role, block))
            if (i + 1) % 10 == 0 or i + 1 == len(roles):
                common.progress(f"mined {i + 1}/{len(roles)} honest blocks ({time.perf_counter() - t0:.0f} s)")
    finally:
        chain.store.close()
    return out


# -- the bystander -------------------------------------------------------------------------------------
class Bystander:
    """GET /status every BYSTANDER_EVERY_S from BYSTANDER_IP: (monotonic time, seconds, ok)."""

    def __init__(self, url: str):
        self.url = url
        self.samples: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="bystander", daemon=True)

    def _run(self) -> None:
        import httpx
        c = client_from(BYSTANDER_IP, self.url, timeout=CLIENT_TIMEOUT_S)
        try:
            while not self._stop.wait(BYSTANDER_EVERY_S):
                t0 = time.monotonic()
                try:
                    ok = c.get("/status").status_code == 200
                except httpx.HTTPError:
                    ok = False
                    c.close()
                    c = client_from(BYSTANDER_IP, self.url, timeout=CLIENT_TIMEOUT_S)
                self.samples.append((t0, time.monotonic() - t0, ok))
        finally:
            c.close()

    def start(self) -> "Bystander":
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join(CLIENT_TIMEOUT_S + 5)

    def window(self, t0: float, t1: float) -> dict:
        got = [(dt, ok) for t, dt, ok in self.samples if t0 <= t < t1]
        lat = [dt if ok else max(dt, CLIENT_TIMEOUT_S) for dt, ok in got]
        return {"requests": len(got), "failed": sum(1 for _, ok in got if not ok),
                "p50_s": _r(pctl(lat, 0.5)), "p99_s": _r(pctl(lat, 0.99)), "max_s": _r(max(lat, default=None))}


def _r(x, digits: int = 4):
    return None if x is None else round(x, digits)


# -- the honest miners ---------------------------------------------------------------------------------
class Releaser:
    """Releases the pre-mined blocks in order, one every ``interval`` seconds; one sample per block."""

    def __init__(self, url: str, blocks: list, interval: float, block_timeout: float):
        self.url, self.blocks, self.interval, self.block_timeout = url, blocks, interval, block_timeout
        self.next = 0
        self.samples: list[dict] = []
        self.stuck: str | None = None
        self._known = client_from(KNOWN_IP, url)
        self._new_nets = itertools.count()

    def close(self) -> None:
        self._known.close()

    def post_setup(self) -> None:
        for role, block in self.blocks[:SETUP_BLOCKS]:
            ip = ATTACKER_KNOWN_IP if role == "attacker" else KNOWN_IP
            with client_from(ip, self.url) as c:
                r = post_block(c, block.header, block.wire_records)
            if r.status_code != 200:
                raise RuntimeError(f"setup block {block.header.height} refused: HTTP {r.status_code} {r.text[:200]}")
        self.next = SETUP_BLOCKS

    def run_until(self, deadline: float, phase: str) -> None:
        while not self.stuck and self.next < len(self.blocks) and time.monotonic() < deadline:
            t0 = time.monotonic()
            self.samples.append(self._release(*self.blocks[self.next], phase))
            self.next += 1
            time.sleep(max(0.0, min(deadline, t0 + self.interval) - time.monotonic()))
        if self.next >= len(self.blocks) and not self.stuck:
            self.stuck = "ran out of pre-mined blocks"
        time.sleep(max(0.0, deadline - time.monotonic()))     # the phase lasts its time, releases or not

    def _release(self, role: str, block, phase: str) -> dict:
        import httpx
        if role == "new":
            n = next(self._new_nets)
            ip = f"127.{2 + n // 250}.{n % 250}.1"          # a /24 of its own: 127.2.0.0/24, 127.2.1.0/24, ...
            c = client_from(ip, self.url)
        else:
            ip, c = KNOWN_IP, self._known
        tries, codes = 0, Counter()
        t0 = time.perf_counter()
        try:
            while True:
                tries += 1
                try:
                    r = post_block(c, block.header, block.wire_records)
                    code, body = r.status_code, json_of(r)
                except httpx.HTTPError as exc:
                    code, body = type(exc).__name__, {}
                codes[str(code)] += 1
                if (code == 200 and body.get("status") == "accepted") or code == 409:   # 409: an earlier try got in
                    break
                if time.perf_counter() - t0 > self.block_timeout or code in (400, 403):
                    self.stuck = f"{role} block {block.header.height} not accepted: {code} {body.get('error')}"
                    break
                time.sleep(RETRY_PAUSE_S)
            latency = time.perf_counter() - t0
        finally:
            if role == "new":
                c.close()
        tip_ok = None
        if not self.stuck:
            try:
                tip_ok = httpx.get(self.url + "/status", timeout=30).json()["tip"] == block.hash
            except (httpx.HTTPError, ValueError, KeyError):
                tip_ok = None
        return {"phase": phase, "role": role, "height": block.header.height, "ip": ip, "latency_s": round(latency, 4),
                "tries": tries, "codes": dict(codes), "accepted": not self.stuck, "tip_is_it": tip_ok}


# -- the attacker (a child process) --------------------------------------------------------------------
class FakeServer:
    """A tiny threaded HTTP server on ``host`` (port chosen by the kernel): ``handler(method, path, query)``
    returns (status, JSON object)."""

    def __init__(self, host: str, handler):
        outer = self
        self.handler = handler
        self.requests: Counter = Counter()

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def _serve(self):
                u = urlsplit(self.path)
                outer.requests[(self.command, u.path.split("/")[1] if "/" in u.path else u.path)] += 1
                n = int(self.headers.get("content-length") or 0)
                if n:
                    self.rfile.read(min(n, 1 << 20))
                try:
                    status, obj = outer.handler(self.command, u.path, parse_qs(u.query))
                except Exception:  # noqa: BLE001 - a fake answers 500, never dies
                    status, obj = 500, {"error": "fake"}
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer((host, 0), H)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.host = host
        self._t = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self._t.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _block_json(header, status: str = "valid") -> dict:
    return {"hash": header.hash, "height": header.height, "status": status, "header": header.to_dict(),
            "records": []}


class Attacker:
    """Everything the attacker does, in threads of the child process; ``run`` returns what it saw."""

    def __init__(self, cfg: dict):
        from consensus.spec import preset
        self.cfg = cfg
        self.url = cfg["url"]
        self.spec = preset("tiny")
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.tip = None
        self.made = 0                             # junk blocks made (POSTed, announced, orphans)
        self.from_pool = 0                        # ... of them made before the attack (--junk-made ahead)
        # (tip hash, "tip" | "orphan") -> junk made ahead (--junk-made ahead, ``make_junk_ahead``)
        self.pool: dict[tuple[str, str], list] = {k: list(v) for k, v in cfg.get("pool", {}).items()}
        self.post_codes: Counter = Counter()
        self.busy_reasons: Counter = Counter()
        self.invalid_posters: dict[str, str] = {}     # address -> the node's reason code (400)
        self.announce_codes: Counter = Counter()
        self.fakes: list[dict] = []                   # every fake peer: host, url, fetched junk hashes, ...
        self.branches: list[dict] = []
        self.orphan_codes: Counter = Counter()
        self.sockets: Counter = Counter()
        self.open_samples: list[int] = []
        self._addr = itertools.count()
        self._fake_n = itertools.count()
        self._junk_next = 0.0
        self.threads: list[threading.Thread] = []
        self.sockets_filled = threading.Event()
        self.errors: list[str] = []

    # -- shared --------------------------------------------------------------------------------------
    def junk(self, rng: random.Random, parent=None):
        """A junk block on ``parent`` (default: the tip): one made ahead for it when there is one left."""
        from .give_way import junk_block
        parent = parent or self.tip
        with self.lock:
            self.made += 1
            ahead = self.pool.get((parent.hash, "tip"))
            if ahead:
                self.from_pool += 1
                return ahead.pop()
        return junk_block(self.spec, parent, rng)

    def orphan(self, rng: random.Random):
        """An orphan: junk on a ghost of the tip (``ghost_of``)."""
        with self.lock:
            ahead = self.pool.get((self.tip.hash, "orphan"))
            if ahead:
                self.made += 1
                self.from_pool += 1
                return ahead.pop()
        return self.junk(rng, parent=ghost_of(self.tip, rng))


    def _thread(self, fn, *args) -> None:
        def body() -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - a part of the attack that died is reported, not hidden
                with self.lock:
                    self.errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}"[:300])
        t = threading.Thread(target=body, name=fn.__name__, daemon=True)
        t.start()
        self.threads.append(t)

    def watch_tip(self) -> None:
        import httpx

        from consensus.block import BlockHeader
        with client_from(ATTACKER_READER_IP, self.url, timeout=30) as c:
            while True:
                try:
                    st = c.get("/status").json()
                    if self.tip is None or st["tip"] != self.tip.hash:
                        self.tip = BlockHeader.from_dict(c.get(f"/blocks/{st['tip']}").json()["header"])
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                if self.stop.wait(0.5):
                    return

    # -- idle and slow sockets from one /24 ----------------------------------------------------------
    SLOW_PREFIX = b"POST /blocks HTTP/1.1\r\nHost: target\r\nContent-Type: application/json\r\nX-Slow: "

    def hold_sockets(self) -> None:
        n = self.cfg["idle_sockets"]
        host, port = "127.0.0.1", int(urlsplit(self.url).port)
        sel = selectors.DefaultSelector()
        socks: dict[socket.socket, dict] = {}
        ips = itertools.count()
        last_drip = 0.0

        def drop(s: socket.socket, why: str) -> None:
            self.sockets[why] += 1
            try:
                sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
            socks.pop(s, None)

        while not self.stop.is_set():
            opened = 0
            cap = SOCKETS_PER_TICK if self.sockets_filled.is_set() else n     # the first fill at once
            while len(socks) < n and opened < cap and not self.stop.is_set():
                ip = f"{IDLE_NET}.{2 + next(ips) % 253}"
                try:
                    s = socket.create_connection((host, port), timeout=2, source_address=(ip, 0))
                except OSError:
                    self.sockets["connect failed"] += 1
                    break
                s.setblocking(False)
                kind = "slow" if self.sockets["opened"] % 2 else "idle"
                self.sockets["opened"] += 1
                socks[s] = {"kind": kind, "sent": 0}
                sel.register(s, selectors.EVENT_READ)
                opened += 1
                if kind == "slow":
                    try:
                        s.send(self.SLOW_PREFIX)
                    except OSError:
                        drop(s, "closed by the node")
            self.sockets_filled.set()
            for key, _ in sel.select(timeout=0.25):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                drop(s, "answered by the node" if data else "closed by the node")
            now = time.monotonic()
            if now - last_drip >= 1.0:
                last_drip = now
                for s, st in list(socks.items()):
                    if st["kind"] == "slow":
                        try:
                            s.send(b"a")
                        except BlockingIOError:
                            pass
                        except OSError:
                            drop(s, "closed by the node")
                self.open_samples.append(len(socks))
        for s in list(socks):
            s.close()
        sel.close()

    # -- junk POSTs from rotating addresses ----------------------------------------------------------
    def _next_address(self) -> str:
        n = next(self._addr)
        return f"127.{10 + n % 40}.{(n // 40) % 250 + 1}.{(n // 10000) % 250 + 2}"

    def _junk_slot(self) -> bool:
        """Pace all senders together at --junk-rate; False once stopping."""
        with self.lock:
            now = time.monotonic()
            self._junk_next = max(self._junk_next, now) + 1.0 / self.cfg["junk_rate"]
            at = self._junk_next
        return not self.stop.wait(max(0.0, at - time.monotonic()))

    def post_junk(self, i: int) -> None:
        import httpx
        rng = random.Random(self.cfg["seed"] * 1000 + i)
        ip, c = None, None
        while self._junk_slot():
            if c is None:
                ip = self._next_address()
                c = client_from(ip, self.url)
            try:
                r = post_block(c, self.junk(rng).header)
                code, body = r.status_code, json_of(r)
            except httpx.HTTPError as exc:
                code, body = type(exc).__name__, {}
            with self.lock:
                self.post_codes[str(code)] += 1
                if code == 503:
                    self.busy_reasons[reason_of(str(body.get("detail", "")) or "uvicorn 503")] += 1
                if code == 400:
                    self.invalid_posters[ip] = str(body.get("error"))
            if code not in (503, 429):        # judged (its address banned now), refused as banned, or broken
                c.close()
                c = None
        if c is not None:
            c.close()

    # -- fake peers announcing junk ------------------------------------------------------------------
    def _new_fake(self) -> dict:
        m = next(self._fake_n)
        host = f"127.{50 + m // 250}.{m % 250 + 1}.1"
        junk: dict[str, object] = {}
        rec = {"host": host, "fetched": [], "announced": 0, "handshake": 0, "introduced": None, "retired": None}

        def handler(method, path, query):
            if method == "GET" and path == "/status":
                rec["handshake"] += 1
                tip = self.tip
                return 200, {"chain_id": self.spec.chain_id, "height": 0, "cumulative_work": 0,
                             "tip": tip.hash if tip else ""}
            if method == "GET" and path == "/peers":
                return 200, []
            if method == "GET" and path.startswith("/blocks/"):
                h = path.split("/")[2]
                if h in junk:
                    rec["fetched"].append(h)
                    return 200, _block_json(junk[h])
                return 404, {"error": "not-found", "detail": ""}
            if method == "GET" and path == "/blocks":
                return 200, {"blocks": [], "next_start": None}
            return 202, {"status": "ignored"}

        server = FakeServer(host, handler)
        rec.update(url=server.url, server=server, junk=junk, client=client_from(host, self.url, timeout=30))
        self.fakes.append(rec)
        return rec

    def _retire(self, rec: dict, why: str) -> None:
        rec["retired"] = why
        rec["server"].close()
        rec["client"].close()

    def run_fakes(self) -> None:
        import httpx
        n = self.cfg["fake_peers"]
        rng = random.Random(self.cfg["seed"] * 1000 + 999)
        live = [self._new_fake() for _ in range(n)]
        period = 1.0 / (self.cfg["announce_rate"] * max(1, n))
        for i in itertools.cycle(range(n)):
            if self.stop.wait(period):
                break
            rec = live[i]
            try:
                if rec["introduced"] is None:
                    r = rec["client"].post("/peers", json={"url": rec["url"]})
                    rec["introduced"] = time.monotonic()
                    if r.status_code == 403:
                        raise _Retire("refused (403)")
                    continue
                if not rec["handshake"]:
                    if time.monotonic() - rec["introduced"] > 30:
                        raise _Retire("never handshaken")
                    continue
                header = self.junk(rng).header
                rec["junk"][header.hash] = header
                r = rec["client"].post("/blocks", content=header.encode(),
                                       headers={"content-type": "application/json", "x-polchain-origin": rec["url"]})
                rec["announced"] += 1
                body = json_of(r)
                with self.lock:
                    self.announce_codes[f"{r.status_code} {body.get('code') or body.get('error') or ''}".strip()] += 1
                if r.status_code == 403:
                    raise _Retire("refused (403)")
                if rec["fetched"] and body.get("code") == "not-fetched":
                    raise _Retire("no longer fetched from")
            except _Retire as exc:
                self._retire(rec, str(exc))
                live[i] = self._new_fake()
            except httpx.HTTPError:
                pass
        for rec in live:
            if rec["retired"] is None:
                self._retire(rec, "end of the attack")

    # -- orphans from a known host -------------------------------------------------------------------
    def send_orphans(self) -> None:
        import httpx
        rng = random.Random(self.cfg["seed"] * 1000 + 777)
        with client_from(ATTACKER_KNOWN_IP, self.url, timeout=30) as c:
            while not self.stop.wait(1.0 / self.cfg["orphan_rate"]):
                if self.tip is None:
                    continue
                try:
                    r = post_block(c, self.orphan(rng).header)
                    body = json_of(r)
                    code = f"{r.status_code} {body.get('code') or body.get('error') or ''}".strip()
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                with self.lock:
                    self.orphan_codes[code] += 1

    # -- header branches on an old pruned block ------------------------------------------------------
    def branches_at(self, t0: float) -> None:
        n = self.cfg["header_branches"]
        for b in range(n):
            at = t0 + self.cfg["attack_seconds"] * b / n + 1.0
            if self.stop.wait(max(0.0, at - time.monotonic())):
                return
            try:
                self.branch(b)
            except Exception as exc:  # noqa: BLE001 - one branch failing to start is a figure, not a crash
                self.branches.append({"error": f"{type(exc).__name__}: {exc}"[:300]})

    def branch(self, b: int) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from consensus.block import BlockHeader
        from consensus.difficulty import work

        from .headers import header_chain
        rng = random.Random(self.cfg["seed"] * 1000 + 500 + b)
        with client_from(ATTACKER_READER_IP, self.url, timeout=30) as c:
            tip_h = c.get("/status").json()["height"]
            base_h = max(1, tip_h - BRANCH_DEPTH)
            listed = c.get("/blocks", params={"start": 0, "limit": base_h + 1}).json()["blocks"]
            base_work = listed[-1]["cumulative_work"]
        ancestors = [BlockHeader.from_dict(x["header"]) for x in listed]
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        t_make = time.process_time()
        junk = header_chain(self.spec, BRANCH_HEADERS, key, ancestors=ancestors, salt=rng.randbytes(8).hex())
        make_s = time.process_time() - t_make
        chain = ancestors + junk
        by_hash = {h.hash: h for h in junk}
        claimed = base_work + sum(work(h.difficulty) for h in junk)
        rec = {"base_height": base_h, "tip_height": tip_h, "top_height": junk[-1].height, "claimed_work": claimed,
               "first_junk": junk[0].hash, "make_cpu_s": round(make_s, 6), "handshake": 0, "header_requests": 0,
               "bodies_served": 0}

        def handler(method, path, query):
            if method == "GET" and path == "/status":
                rec["handshake"] += 1
                return 200, {"chain_id": self.spec.chain_id, "height": junk[-1].height, "cumulative_work": claimed,
                             "tip": junk[-1].hash}
            if method == "GET" and path == "/peers":
                return 200, []
            if method == "GET" and path == "/blocks":
                rec["header_requests"] += 1
                start = int(query.get("start", ["0"])[0])
                limit = int(query.get("limit", ["100"])[0])
                part = chain[start:start + limit]
                nxt = start + limit if start + limit < len(chain) else None
                return 200, {"blocks": [_block_json(h) for h in part], "next_start": nxt}
            if method == "GET" and path.startswith("/blocks/"):
                h = by_hash.get(path.split("/")[2])
                if h is None:
                    return 404, {"error": "not-found", "detail": ""}
                rec["bodies_served"] += 1
                return 200, _block_json(h)
            return 202, {"status": "ignored"}

        host = f"127.70.{b + 1}.1"
        server = FakeServer(host, handler)
        rec.update(host=host, url=server.url)
        self.branches.append(rec)
        with client_from(host, self.url, timeout=30) as c:
            rec["introduced"] = c.post("/peers", json={"url": server.url}).status_code
        self._branch_servers.append(server)

    # -- the whole attack ----------------------------------------------------------------------------
    def run(self, started, stop_event) -> dict:
        from .give_way import junk_block
        cfg = self.cfg
        self._branch_servers: list[FakeServer] = []
        # the making of a junk block, alone, before anything else runs in this process
        rng = random.Random(cfg["seed"])
        from consensus.block import genesis_header
        g = genesis_header(self.spec)
        n = cfg["price_samples"]
        t0 = time.process_time()
        for _ in range(n):
            junk_block(self.spec, g, rng)
        making = (time.process_time() - t0) / n
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        self._thread(self.watch_tip)
        deadline = time.monotonic() + 60
        while self.tip is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if cfg["idle_sockets"]:
            self._thread(self.hold_sockets)
            self.sockets_filled.wait(60)
        if cfg["junk_rate"] > 0:
            for i in range(JUNK_SENDERS):
                self._thread(self.post_junk, i)
        if cfg["fake_peers"]:
            self._thread(self.run_fakes)
        if cfg["orphan_rate"] > 0:
            self._thread(self.send_orphans)
        t_attack = time.monotonic()
        if cfg["header_branches"]:
            self._thread(self.branches_at, t_attack)
        started.set()
        stop_event.wait()
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        for s in self._branch_servers:
            s.close()
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        fakes = [{k: v for k, v in f.items() if k not in ("server", "junk", "client")} for f in self.fakes]
        return {"making_cpu_s_per_junk": making, "process_cpu_s": round(cpu, 3), "junk_made": self.made,
                "junk_made_ahead": self.from_pool,
                "seconds": round(time.monotonic() - t_attack, 2),
                "posts": dict(self.post_codes), "busy_reasons": dict(self.busy_reasons),
                "invalid_posters": self.invalid_posters, "announcements": dict(self.announce_codes),
                "fakes": fakes, "branches": self.branches, "orphans": dict(self.orphan_codes),
                "sockets": dict(self.sockets), "errors": self.errors,
                "sockets_open": {"min": min(self.open_samples, default=0),
                                 "median": statistics.median(self.open_samples) if self.open_samples else 0,
                                 "max": max(self.open_samples, default=0)}}


def make_junk_ahead(cfg: dict, tips: list) -> tuple[dict, int, float]:
    """--junk-made ahead: the junk for every tip of the attack (its POSTs and fake peers' announcements at the
    budget's rates, and its orphans, for an interval each, x PREMADE_SPARE), made on 2 worker processes;
    (pool, blocks made, seconds)."""
    import multiprocessing
    interval = cfg["interval"]
    per_tip = math.ceil((cfg["junk_rate"] + cfg["fake_peers"] * cfg["announce_rate"]) * interval * PREMADE_SPARE)
    orphans = math.ceil(cfg["orphan_rate"] * interval * PREMADE_SPARE)
    jobs = [(h, "tip", per_tip, cfg["seed"] * 7919 + 2 * i) for i, h in enumerate(tips)] + \
           [(h, "orphan", orphans, cfg["seed"] * 7919 + 2 * i + 1) for i, h in enumerate(tips)]
    jobs = [j for j in jobs if j[2] > 0]
    t0 = time.monotonic()
    pool: dict[tuple[str, str], list] = {}
    with multiprocessing.get_context("spawn").Pool(2) as workers:
        for (h, kind, _, _), blocks in zip(jobs, workers.map(_make_junk, jobs)):
            pool[(h["hash"], kind)] = blocks
    return pool, sum(len(v) for v in pool.values()), time.monotonic() - t0


def ghost_of(tip, rng: random.Random):
    """``tip`` with a random state hash: a parent nobody has, so junk on it is an orphan everywhere."""
    import dataclasses
    return dataclasses.replace(tip, state_hash=rng.randbytes(32).hex())


def _make_junk(job) -> list:
    """A worker of ``Attacker.make_ahead``: ``n`` junk blocks on the tip ``header`` (a dict), or orphans on
    ghosts of it."""
    from consensus.block import BlockHeader
    from consensus.spec import preset

    from .give_way import junk_block
    header, kind, n, seed = job
    spec, rng = preset("tiny"), random.Random(seed)
    tip = BlockHeader.from_dict({k: v for k, v in header.items() if k != "hash"})
    assert tip.hash == header["hash"], "a tip that does not round-trip"
    if kind == "tip":
        return [junk_block(spec, tip, rng) for _ in range(n)]
    return [junk_block(spec, ghost_of(tip, rng), rng) for _ in range(n)]


class _Retire(Exception):
    pass


def attacker_main(cfg: dict, started, stop, out) -> None:
    """The child process."""
    import logging
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        res = Attacker(cfg).run(started, stop)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        res = {"error": f"{type(exc).__name__}: {exc}"}
        started.set()
    out.put(json.dumps(res))


class AttackerProcess:
    def __init__(self, cfg: dict):
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        self.started, self.stop_event, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=attacker_main, args=(cfg, self.started, self.stop_event, self.out),
                                daemon=True)

    def start(self, timeout: float = 180) -> None:
        self.proc.start()
        if not self.started.wait(timeout):
            self.proc.kill()
            raise RuntimeError("the attacker process did not start")

    def finish(self, timeout: float = 120) -> dict:
        self.stop_event.set()
        try:
            return json.loads(self.out.get(timeout=timeout))
        finally:
            self.proc.join(timeout=30)
            if self.proc.is_alive():
                self.proc.kill()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()


# -- the run -------------------------------------------------------------------------------------------
def roles_for(args) -> list[str]:
    slots = int(math.ceil((args.quiet_seconds + args.attack_seconds) / args.interval)) + 2
    return ["attacker"] + ["setup"] * (SETUP_BLOCKS - 1) + ["known" if i % 2 == 0 else "new" for i in range(slots)]


def miner_figures(samples: list[dict], role: str) -> dict:
    """One role's blocks in one phase; a block given up (--block-timeout) counts at the time it was given
    up (a lower bound on its latency) and its tries so far."""
    mine = [s for s in samples if s["role"] == role]
    lat = [s["latency_s"] for s in mine]
    return {"blocks": sum(1 for s in mine if s["accepted"]), "given_up": sum(1 for s in mine if not s["accepted"]),
            "latency_s": common.summary(lat, 4) if lat else None,
            "tries": common.summary([s["tries"] for s in mine], 2) if mine else None,
            "first_try": sum(1 for s in mine if s["accepted"] and s["tries"] == 1),
            "not_tip_after": sum(1 for s in mine if s["tip_is_it"] is False)}


def check_bans(url: str, identities: dict[str, str]) -> dict:
    """GET /peers's banned entries against the identities (host -> how it sent an invalid block); each
    identity also probed with a POST /blocks of nothing (403 when banned, else 422)."""
    import httpx
    from concurrent.futures import ThreadPoolExecutor
    book = httpx.get(url + "/peers", timeout=60).json()
    banned = [p["url"] for p in book if p.get("state") == "banned"]
    listed = {h for h in identities if any(covers(e, h) for e in banned)}

    def probe(h: str):
        try:
            with client_from(h, url, timeout=30) as c:
                return c.post("/blocks", json={"nope": 1}).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__
    with ThreadPoolExecutor(8) as pool:
        probes = dict(zip(identities, pool.map(probe, list(identities))))
    kinds = Counter(identities.values())
    return {"identities": len(identities), "by_kind": dict(kinds), "banned_entries": len(banned),
            "held": len(listed), "refused_on_probe": sum(1 for c in probes.values() if c == 403),
            "probe_codes": dict(Counter(str(c) for c in probes.values())),
            "not_held": sorted(set(identities) - listed)[:20]}


def run(args) -> dict:
    import logging

    import httpx
    import torch

    from consensus.spec import preset
    logging.getLogger("httpx").setLevel(logging.WARNING)
    torch.set_num_threads(1)       # the pre-mining; the node and the attacker are processes of their own
    spec = preset("tiny")
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="polchain-hostile-"))
    root.mkdir(parents=True, exist_ok=True)
    budget_cfg = {k: getattr(args, k) for k in DEFAULTS}
    result = common.result_header("hostile", preset="tiny", spec=spec.name, machine=common.machine_info("cpu"),
                                  quick=args.quick, budget=budget_cfg, keep_weights=args.keep_weights,
                                  mining="off (the tip moves only by the honest miners' blocks)",
                                  load_average_before=common.load_average(), work_dir=str(root))
    node = TargetNode(root / "target", "--preset", "tiny", "--no-mine", "--keep-weights", str(args.keep_weights))
    attacker: AttackerProcess | None = None
    bystander: Bystander | None = None
    releaser: Releaser | None = None
    t_start = time.monotonic()
    try:
        node.launch()
        roles = roles_for(args)
        common.progress(f"mining {len(roles)} honest blocks beforehand (one thread) while the target starts ({root})")
        blocks = honest_chain(spec, root / "miner", roles, args.seed)
        node.wait_ready()
        releaser = Releaser(node.url, blocks, args.interval, args.block_timeout)
        releaser.post_setup()
        bystander = Bystander(node.url).start()
        time.sleep(1.0)

        def phase(name: str, seconds: float) -> dict:
            cpu0, (rej0, _) = node_cpu_s(node.proc.pid), rejected_total(node.url)
            t0 = time.monotonic()
            releaser.run_until(t0 + seconds, name)
            t1 = time.monotonic()
            cpu1, (rej1, by1) = node_cpu_s(node.proc.pid), rejected_total(node.url)
            done = [x for x in releaser.samples if x["phase"] == name]
            common.progress(f"{name} phase done: {len(done)} honest blocks, median latency "
                            f"{statistics.median([x['latency_s'] for x in done]) if done else float('nan'):.3f} s; node CPU "
                            f"{cpu1 - cpu0:.1f} s; {rej1 - rej0} blocks judged invalid")
            return {"t0": t0, "t1": t1, "seconds": round(t1 - t0, 2), "node_cpu_s": round(cpu1 - cpu0, 3),
                    "judged_invalid": rej1 - rej0, "rejected_by_reason_total": by1}

        common.progress(f"quiet phase: {args.quiet_seconds:.0f} s, an honest block every {args.interval} s")
        quiet = phase("quiet", args.quiet_seconds)
        cfg = {"url": node.url, "seed": args.seed, "price_samples": PRICE_SAMPLES[1 if args.quick else 0], **budget_cfg}
        made_ahead = made_ahead_s = None
        if args.junk_made == "ahead":     # the tips of the attack: the last block released, then those to come
            n = math.ceil(args.attack_seconds / args.interval) + 2
            tips = [b.header.to_dict() | {"hash": b.header.hash}
                    for _, b in blocks[max(0, releaser.next - 1):releaser.next + n]]
            common.progress(f"making the attack's junk ahead for {len(tips)} tips on 2 worker processes")
            cfg["pool"], made_ahead, made_ahead_s = make_junk_ahead(cfg, tips)
            common.progress(f"made {made_ahead} junk blocks ahead in {made_ahead_s:.0f} s")
        common.progress(f"attack phase: {args.attack_seconds:.0f} s: {args.idle_sockets} idle/slow sockets, "
                        f"junk {args.junk_rate}/s, {args.fake_peers} fake peers, orphans {args.orphan_rate}/s, "
                        f"{args.header_branches} header branch(es)")
        attacker = AttackerProcess(cfg)
        attacker.start()
        attack = phase("attack", args.attack_seconds)
        att = attacker.finish()
        attacker = None
        bystander.stop()
        if "error" in att:
            raise RuntimeError(f"the attacker failed: {att['error']}")
        time.sleep(1.0)            # the last verdicts' bans
        identities: dict[str, str] = {ip: "junk POST" for ip in att["invalid_posters"]}
        invalid_hashes = set()
        for kind, recs, hashes in (("fake peer", att["fakes"], lambda f: f["fetched"]),
                                   ("header branch", [b for b in att["branches"] if "host" in b],
                                    lambda b: [b["first_junk"]] if b["bodies_served"] else [])):
            for rec in recs:
                for h in hashes(rec):
                    try:
                        st = httpx.get(f"{node.url}/blocks/{h}", timeout=30).json().get("status")
                    except (httpx.HTTPError, ValueError):
                        st = None
                    if st == "invalid":
                        identities.setdefault(rec["host"], kind)
                        invalid_hashes.add(h)
                        break
        bans = check_bans(node.url, identities)
        book = {p["url"]: p["state"] for p in httpx.get(node.url + "/peers", timeout=60).json()}
        for rec in att["branches"]:        # whether the node took the branch's peer at all (its book may be full)
            if "url" in rec:
                rec["state_in_book"] = book.get(rec["url"], "absent")
        bans["all_held"] = bans["held"] == bans["identities"] if bans["identities"] else None   # none to hold

        samples = releaser.samples
        by = {p: {"bystander": bystander.window(w["t0"], w["t1"]),
                  "known": miner_figures([s for s in samples if s["phase"] == p], "known"),
                  "new": miner_figures([s for s in samples if s["phase"] == p], "new"),
                  "seconds": w["seconds"], "node_cpu_s": w["node_cpu_s"], "judged_invalid": w["judged_invalid"]}
              for p, w in (("quiet", quiet, ), ("attack", attack))}

        def med(p, role):
            f = by[p][role]["latency_s"]
            return f["median"] if f else None

        judged = attack["judged_invalid"]
        node_per_junk = attack["node_cpu_s"] / judged if judged else None
        quiet_rate = quiet["node_cpu_s"] / quiet["seconds"] if quiet["seconds"] else 0.0
        excess = attack["node_cpu_s"] - quiet_rate * attack["seconds"]
        making = att["making_cpu_s_per_junk"]
        ratios = {
            "bystander_p99": common.ratio(by["attack"]["bystander"]["p99_s"] or 0, by["quiet"]["bystander"]["p99_s"] or 0),
            "known_latency": common.ratio(med("attack", "known") or 0, med("quiet", "known") or 0),
            "new_latency": common.ratio(med("attack", "new") or 0, med("quiet", "new") or 0),
            "node_over_attacker_cpu": common.ratio(node_per_junk, making) if node_per_junk else None,
        }
        if med("attack", "known") is None:
            ratios["known_latency"] = None
        if med("attack", "new") is None:
            ratios["new_latency"] = None
        result.update(
            phases=by, ratios=ratios, goals={**GOALS, "bans": "all held"},
            goals_met={k: (None if v is None else v <= GOALS[k]) for k, v in ratios.items()} | {"bans": bans["all_held"]},
            cpu={"node_cpu_s_attack": attack["node_cpu_s"], "node_cpu_s_quiet": quiet["node_cpu_s"],
                 "junk_judged": judged, "junk_judged_per_s": round(judged / attack["seconds"], 2),
                 "node_cpu_s_per_junk": _r(node_per_junk, 6),
                 "node_excess_cpu_s_per_junk": _r(excess / judged, 6) if judged else None,
                 "attacker_making_cpu_s_per_junk": round(making, 7),
                 "attacker_process_cpu_s": att["process_cpu_s"], "attacker_junk_made": att["junk_made"],
                 "attacker_process_cpu_s_per_junk": _r(att["process_cpu_s"] / att["junk_made"], 6)
                 if att["junk_made"] else None,
                 "rejected_by_reason_total": attack["rejected_by_reason_total"]},
            bans=bans,
            attack={"posts": att["posts"], "busy_reasons": att["busy_reasons"], "announcements": att["announcements"],
                    "orphans": att["orphans"], "sockets": att["sockets"], "sockets_open": att["sockets_open"],
                    "fake_peers_used": len(att["fakes"]),
                    "fake_peers_fetched_from": sum(1 for f in att["fakes"] if f["fetched"]),
                    "fake_peers_retired": dict(Counter(f["retired"] for f in att["fakes"])),
                    "branches": att["branches"], "seconds": att["seconds"], "errors": att["errors"],
                    "junk_made": att["junk_made"], "junk_made_ahead": att["junk_made_ahead"],
                    "made_ahead_s": _r(made_ahead_s, 1), "made_ahead_pooled": made_ahead},
            honest_blocks=samples, stopped_releasing=releaser.stuck if releaser.next < len(blocks) else None,
            wall_s=round(time.monotonic() - t_start, 1), load_average_after=common.load_average())
        return result
    finally:
        if attacker is not None:
            attacker.kill()
        if bystander is not None:
            bystander.stop()
        if releaser is not None:
            releaser.close()
        node.stop()
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)


def table(res: dict) -> str:
    q, a, r, g, ok = res["phases"]["quiet"], res["phases"]["attack"], res["ratios"], res["goals"], res["goals_met"]

    def med(p, role):
        f = p[role]["latency_s"]
        return f["median"] if f else None

    cpu, bans, b = res["cpu"], res["bans"], res["budget"]
    mark = lambda k: "-" if ok[k] is None else "yes" if ok[k] else "NO"   # noqa: E731
    rows = [
        ("bystander GET /status p99 s", q["bystander"]["p99_s"], a["bystander"]["p99_s"], r["bystander_p99"],
         f"<= {g['bystander_p99']}x", mark("bystander_p99")),
        ("known miner's block latency s (median)", med(q, "known"), med(a, "known"), r["known_latency"],
         f"<= {g['known_latency']}x", mark("known_latency")),
        ("new miner's first block latency s (median)", med(q, "new"), med(a, "new"), r["new_latency"],
         f"<= {g['new_latency']}x", mark("new_latency")),
        ("node CPU / attacker CPU per junk block", None, cpu["node_cpu_s_per_junk"], r["node_over_attacker_cpu"],
         f"<= {g['node_over_attacker_cpu']} (v4 tickets)", mark("node_over_attacker_cpu")),
        ("bans held / attacker identities", None, f"{bans['held']}/{bans['identities']}", None, "all",
         mark("bans")),
        ("  ... refused (403) when probed", None, f"{bans['refused_on_probe']}/{bans['identities']}", None, "", ""),
    ]
    ntries = a["new"]["tries"]
    lines = [
        "polchain bench hostile: one tiny node (mining off), a bystander, a known and a new miner; quiet, then attack",
        f"machine: {common.machine_line(res['machine'])}",
        f"attack budget: {b['attack_seconds']:.0f} s; {b['idle_sockets']} idle/slow sockets from one /24; junk "
        f"{b['junk_rate']}/s from rotating addresses; {b['fake_peers']} fake peers announcing {b['announce_rate']}/s "
        f"each; orphans {b['orphan_rate']}/s from a known host; {b['header_branches']} header branch(es) on a "
        f"pruned block. Quiet {b['quiet_seconds']:.0f} s; an honest block every {b['interval']} s. Junk made "
        + (f"ahead: {res['attack']['junk_made_ahead']} of the {res['attack']['junk_made']} sent were made before the "
           f"attack ({res['attack']['made_ahead_s']} s on 2 worker processes), the rest live"
           if b.get("junk_made") == "ahead" else "live, on this machine's cores, while the attack ran") + ".",
        "",
        common.format_table(["figure", "quiet", "attack", "attack/quiet", "goal", "met"], rows),
        "",
        f"blocks accepted: known {q['known']['blocks']} quiet / {a['known']['blocks']} attack, new "
        f"{q['new']['blocks']} / {a['new']['blocks']}; given up: {q['known']['given_up'] + q['new']['given_up']} / "
        f"{a['known']['given_up'] + a['new']['given_up']} (new miner's tries under attack: median "
        f"{ntries['median'] if ntries else '-'}, "
        f"max {ntries['max'] if ntries else '-'}); bystander failures {q['bystander']['failed']} / "
        f"{a['bystander']['failed']} of {q['bystander']['requests']} / {a['bystander']['requests']}",
        f"node CPU: {cpu['node_cpu_s_quiet']} s quiet, {cpu['node_cpu_s_attack']} s attack; {cpu['junk_judged']} junk "
        f"blocks judged ({cpu['junk_judged_per_s']}/s): {cpu['node_cpu_s_per_junk']} s each "
        f"({cpu['node_excess_cpu_s_per_junk']} s over the quiet rate); making one: "
        f"{cpu['attacker_making_cpu_s_per_junk'] * 1000:.3f} ms (the attacker process: "
        f"{cpu['attacker_process_cpu_s_per_junk']} s per junk made, HTTP included; under v4 making one includes "
        "its admission ticket).",
        f"bans: {bans['held']} of {bans['identities']} identities that sent an invalid block listed banned "
        f"({bans['by_kind']}); {bans['refused_on_probe']} refused (403) on a probe",
        f"attack: POST codes {res['attack']['posts']}; announcements {res['attack']['announcements']}; orphans "
        f"{res['attack']['orphans']}; sockets {res['attack']['sockets']} (open: {res['attack']['sockets_open']})",
    ]
    br = [f"base {x['base_height']} (tip {x['tip_height']}): {x['header_requests']} header requests, "
          f"{x['bodies_served']} bodies fetched, {x.get('state_in_book', '?')} in the peer book"
          if "host" in x else x.get("error", "?") for x in res["attack"]["branches"]]
    if br:
        lines.append("header branches: " + "; ".join(br))
    if res["attack"].get("errors"):
        lines.append(f"attacker errors (parts of the attack that stopped): {res['attack']['errors']}")
    if res.get("stopped_releasing"):
        lines.append(f"honest releases stopped early: {res['stopped_releasing']}")
    lines.append(f"load average before {res['load_average_before']}, after {res['load_average_after']}; "
                 f"wall {res['wall_s']} s")
    return "\n".join(lines)
