"""`polchain testnet`: a local multi-process testnet, no Docker.

Spawns N ``polchain node`` subprocesses (``sys.executable -m node.cli node ...``) with datadirs
DATADIR/node0..N-1 on ports BASE..BASE+N-1. Node i peers with node0 and with node i-1 (a star
around node0 plus a line), the first M nodes mine with one torch thread each. Logs go to
DATADIR/nodeI.log. While it runs, one live status line is rewritten in place; Ctrl-C or SIGTERM
stops every node (SIGTERM, wait, then SIGKILL for stragglers). Running it again with the same
--datadir resumes the same chain.

For scripts: --duration SECONDS exits after that long; --until-height H exits 0 as soon as every
node reports the same tip at height >= H (non-zero if --duration runs out first). The last line
printed to stdout is a summary in words; with --json it is a JSON object instead (ok, heights, tips,
start heights, seconds). Stopped (Ctrl-C, SIGTERM) before every node answered, the testnet did not
run: the summary says so, "ok" is false and the exit status 1.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from node.argtypes import nonneg_int, port, positive_float, positive_int
from node.devices import device_arg
from node.threads import threads_arg

# Per-node settings the testnet sets itself: never let the caller's environment override them.
_PER_NODE_ENV = ("DATADIR", "HOST", "PORT", "PEERS", "PUBLIC_URL", "MINE", "KEY", "SPEC", "THREADS",
                 "PRESET", "DEVICE")


def add_commands(sub) -> None:
    s = sub.add_parser(
        "testnet", help="run a local multi-process testnet (N nodes, M miners), no Docker",
        description="Spawns N `polchain node` processes on ports BASE..BASE+N-1 with datadirs DATADIR/nodeI "
                    "(logs in DATADIR/nodeI.log), node i peering with node0 and node i-1; the first M mine. "
                    "Shows one live status line; Ctrl-C stops all nodes. Rerun with the same --datadir to "
                    "resume the chain.")
    s.add_argument("--nodes", type=positive_int, default=3, help="number of nodes (default 3)")
    s.add_argument("--miners", type=nonneg_int, default=None, help="how many of them mine (default min(2, nodes))")
    s.add_argument("--preset", default="tiny", help="chain preset (default tiny)")
    s.add_argument("--spec", type=Path, default=None,
                   help="chain spec file instead of a preset (e.g. from `polchain spec --dataset-archive`)")
    s.add_argument("--base-port", type=port, default=8000, help="node i listens on BASE+i (default 8000)")
    s.add_argument("--host", default=None,
                   help="interface the nodes listen on (default 127.0.0.1; 0.0.0.0 with --public-host)")
    s.add_argument("--public-host", default=None, metavar="HOST",
                   help="address other machines reach this one at; the nodes announce http://HOST:PORT "
                        "(default: --host, or 127.0.0.1 when that is 0.0.0.0)")
    s.add_argument("--datadir", "--data-dir", dest="datadir", default="./testnet-data",
                   help="parent of node0..nodeN-1 (default ./testnet-data; --data-dir is the same option)")
    s.add_argument("--dataset-dir", type=Path, default=None,
                   help="shared dataset cache for all nodes (default DATADIR/data)")
    s.add_argument("--threads", type=threads_arg, default=1,
                   help="torch threads per node (default 1: the nodes share this machine's cores)")
    s.add_argument("--device", default="cpu", type=device_arg, help="device for the miners: cpu (default), cuda, auto")
    s.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS", help="stop after this long")
    s.add_argument("--until-height", type=nonneg_int, default=None, metavar="H",
                   help="exit 0 once all nodes share a tip at height >= H (non-zero if --duration ends first)")
    s.add_argument("--interval", type=positive_float, default=1.0, help="seconds between status polls (default 1)")
    s.add_argument("--json", action="store_true",
                   help="end with one JSON line (ok, nodes, start_heights, heights, tips, seconds, reached_after) "
                        "instead of the summary in words")
    s.add_argument("--node-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed to every `polchain node` (repeatable, e.g. --node-arg=--no-discover)")
    s.set_defaults(func=cmd_testnet)


# -- processes ---------------------------------------------------------------------------
def _child_preexec() -> None:  # pragma: no cover - runs in the child
    # Own process group: a Ctrl-C in the terminal reaches only us, and we stop the nodes in order.
    os.setsid()
    # Linux: if the testnet process dies without cleaning up (SIGKILL), the nodes get SIGTERM.
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Node:
    def __init__(self, index: int, args, root: Path):
        self.index = index
        self.port = args.base_port + index
        connect_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        self.url = f"http://{connect_host}:{self.port}"          # how we (and the other local nodes) call it
        self.public_url = f"http://{args.public_host}:{self.port}" if args.public_host else self.url
        self.datadir = root / f"node{index}"
        self.log_path = root / f"node{index}.log"
        self.mining = index < args.miners
        self.proc: subprocess.Popen | None = None
        self.status: dict | None = None
        self.start_height: int | None = None

    def command(self, args, peers: list[str]) -> list[str]:
        cmd = [sys.executable, "-m", "node.cli", "--log-level", os.environ.get("POLCHAIN_LOG_LEVEL", "INFO"),
               "node", "--datadir", str(self.datadir), "--host", args.host, "--port", str(self.port),
               "--public-url", self.public_url, "--threads", str(args.threads)]
        cmd += ["--spec", str(args.spec)] if args.spec is not None else ["--preset", args.preset]
        if args.dataset_dir is not None:
            cmd += ["--dataset-dir", str(args.dataset_dir)]
        for p in peers:
            cmd += ["--peer", p]
        if self.mining:
            cmd += ["--mine", "--device", args.device]
        return cmd + list(args.node_arg)

    def start(self, args, peers: list[str], env: dict) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"\n==== polchain testnet: starting node{self.index} at {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n"
                  .encode())
        log.flush()
        kwargs = {"preexec_fn": _child_preexec} if os.name == "posix" else {}
        self.proc = subprocess.Popen(self.command(args, peers), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=env, **kwargs)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("" if host in ("0.0.0.0", "::") else host, port))
            return True
        except OSError:
            return False


def _get_status(url: str, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/status", timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def stop_nodes(nodes: list[Node], grace: float = 20.0) -> None:
    """SIGTERM every node, wait up to `grace` seconds in all, then SIGKILL what is left."""
    for n in nodes:
        if n.alive():
            try:
                n.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for n in nodes:
        if n.proc is None:
            continue
        try:
            n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"node{n.index} (pid {n.proc.pid}) did not stop in {grace:.0f}s; killing it", file=sys.stderr)
            n.proc.kill()
            n.proc.wait()


# -- status line ---------------------------------------------------------------------------
def _fmt_duration(s: float) -> str:
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Monitor:
    def __init__(self, nodes: list[Node], window: float = 60.0):
        self.nodes = nodes
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()   # (time, best height)
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(nodes)), thread_name_prefix="poll")

    def poll(self) -> None:
        results = list(self.pool.map(lambda n: _get_status(n.url), self.nodes))
        now = time.monotonic()
        for n, st in zip(self.nodes, results):
            n.status = st
            if st is not None and n.start_height is None:
                n.start_height = int(st["height"])
        heights = [int(n.status["height"]) for n in self.nodes if n.status]
        if heights:
            self.samples.append((now, max(heights)))
            while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
                self.samples.popleft()

    def blocks_per_minute(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, h0), (t1, h1) = self.samples[0], self.samples[-1]
        return (h1 - h0) * 60.0 / (t1 - t0) if t1 - t0 >= 5 else None

    def shared_tip(self) -> tuple[str, int] | None:
        """(tip, height) when every node is up and reports the same tip."""
        if not all(n.status for n in self.nodes):
            return None
        tips = {(n.status["tip"], int(n.status["height"])) for n in self.nodes}
        return tips.pop() if len(tips) == 1 else None

    def line(self, elapsed: float) -> str:
        parts = []
        hs = "/".join(str(n.status["height"]) if n.status else ("-" if n.alive() else "x") for n in self.nodes)
        parts.append(f"h {hs}")
        up = [n for n in self.nodes if n.status]
        if not up:
            return f"[{_fmt_duration(elapsed)}] waiting for {len(self.nodes)} nodes to start..."
        best = max(up, key=lambda n: (int(n.status["height"]), n.status["tip"]))
        shared = self.shared_tip()
        parts.append(f"tip {best.status['tip'][:10]}" + ("" if shared else " (forked/syncing)"))
        bpm = self.blocks_per_minute()
        parts.append(f"{bpm:.1f} blk/min" if bpm is not None else "- blk/min")
        acc = best.status.get("tip_accuracy") or {}
        if acc.get("of"):
            parts.append(f"acc {acc['correct']}/{acc['of']} ({100.0 * acc['correct'] / acc['of']:.1f}%)")
        parts.append(f"k {best.status.get('difficulty', '?')}")
        aps = sum(float((n.status.get("mining") or {}).get("attempts_per_second") or 0.0) for n in up)
        parts.append(f"{aps:.0f} att/s")
        return f"[{_fmt_duration(elapsed)}] " + " | ".join(parts)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


# -- the command -------------------------------------------------------------------------
def cmd_testnet(args) -> int:
    if args.nodes < 1:
        print("error: --nodes must be at least 1", file=sys.stderr)
        return 2
    args.miners = min(2, args.nodes) if args.miners is None else args.miners
    if not 0 <= args.miners <= args.nodes:
        print("error: --miners must be between 0 and --nodes", file=sys.stderr)
        return 2
    from consensus.spec import preset as load_preset
    from node.setup import read_spec_file
    from node.startup_error import StartupError
    try:
        if args.spec is not None:
            args.spec = args.spec.resolve()  # the nodes run in their own directories
            chain = f"spec {read_spec_file(args.spec).name} ({args.spec})"
        else:
            chain = f"preset {load_preset(args.preset).name}"
    except (StartupError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if args.host is None:
        args.host = "0.0.0.0" if args.public_host else "127.0.0.1"
    root = Path(args.datadir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if args.dataset_dir is None:
        # one dataset cache for all nodes (the synthetic set is generated, CIFAR-10 downloaded, once)
        args.dataset_dir = root / "data"
    nodes = [Node(i, args, root) for i in range(args.nodes)]
    busy = [n.port for n in nodes if not _port_free(args.host, n.port)]
    if busy:
        print(f"error: port(s) {', '.join(map(str, busy))} already in use (another testnet running? "
              f"try --base-port)", file=sys.stderr)
        return 2

    env = {k: v for k, v in os.environ.items() if not (k.startswith("POLCHAIN_") and k[9:] in _PER_NODE_ENV)}
    env["PYTHONUNBUFFERED"] = "1"
    # children must import this very checkout even when run from another directory
    src = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")

    stop = threading.Event()
    reason = {"signal": None}

    def on_signal(signum, _frame):
        reason["signal"] = signal.Signals(signum).name
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    tty = sys.stdout.isatty()
    t0 = time.monotonic()
    monitor = Monitor(nodes)
    rc = 0
    reached_at = None
    try:
        print(f"polchain testnet: {args.nodes} nodes ({args.miners} mining), {chain}, "
              f"{args.threads} torch thread(s) per node, datadir {root}")
        for n in nodes:
            peers = [] if n.index == 0 else sorted({nodes[0].url, nodes[n.index - 1].url})
            n.start(args, peers, env)
            print(f"  node{n.index}  {n.public_url}  {'miner' if n.mining else 'relay'}  pid {n.proc.pid}  "
                  f"log {n.log_path}")
        sys.stdout.flush()
        last_plain = 0.0
        while not stop.is_set():
            elapsed = time.monotonic() - t0
            dead = [n for n in nodes if not n.alive()]
            if dead:
                if tty:
                    sys.stdout.write("\n")
                for n in dead:
                    print(f"error: node{n.index} exited with status {n.proc.returncode}; last lines of "
                          f"{n.log_path}:\n{n.log_tail()}", file=sys.stderr)
                rc = 1
                break
            was_started = [n.start_height is not None for n in nodes]
            monitor.poll()
            for n, before in zip(nodes, was_started):
                if not before and n.start_height is not None:
                    msg = f"node{n.index} up at height {n.start_height} after {elapsed:.1f}s"
                    print(("\r\033[K" if tty else "") + msg)
            line = monitor.line(elapsed)
            if tty:
                width = shutil.get_terminal_size((100, 24)).columns - 1
                sys.stdout.write("\r\033[K" + line[:width])
                sys.stdout.flush()
            elif elapsed - last_plain >= 10:
                print(line, flush=True)
                last_plain = elapsed
            shared = monitor.shared_tip()
            if args.until_height is not None and shared and shared[1] >= args.until_height:
                reached_at = elapsed
                if tty:
                    sys.stdout.write("\n")
                print(f"all {len(nodes)} nodes share tip {shared[0][:16]} at height {shared[1]} "
                      f"after {elapsed:.1f}s")
                break
            if args.duration is not None and elapsed >= args.duration:
                if tty:
                    sys.stdout.write("\n")
                if args.until_height is not None:
                    print(f"error: nodes did not share a tip at height >= {args.until_height} within "
                          f"{args.duration:g}s ({monitor.line(elapsed)})", file=sys.stderr)
                    rc = 1
                break
            stop.wait(args.interval)
        if stop.is_set():
            if tty:
                sys.stdout.write("\n")
            print(f"{reason['signal'] or 'stop'}: stopping nodes...")
            monitor.poll()   # a node that answers now came up, whatever the last poll saw
            if args.until_height is not None:
                rc = 1   # interrupted before the height was reached
    finally:
        monitor.close()
        # a second Ctrl-C while stopping should not leave orphans: ignore it, the wait is bounded
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_nodes(nodes)
        for s, h in old.items():
            signal.signal(s, h)
    came_up = sum(n.start_height is not None for n in nodes)
    if came_up < len(nodes) and rc == 0:
        rc = 1           # stopped (or out of time) before every node answered: the testnet never ran
    summary = {
        "ok": rc == 0, "nodes": [n.public_url for n in nodes],
        "start_heights": [n.start_height for n in nodes],
        "heights": [int(n.status["height"]) if n.status else None for n in nodes],
        "tips": [n.status["tip"] if n.status else None for n in nodes],
        "seconds": round(time.monotonic() - t0, 1),
        "reached_after": round(reached_at, 1) if reached_at is not None else None,
        "came_up": came_up,
    }
    if args.json:
        print(f"stopped {len(nodes)} nodes; logs in {root}/node*.log")
        print(json.dumps(summary), flush=True)
    else:
        print(summary_line(summary, root, reason["signal"]), flush=True)
    return rc


def summary_line(summary: dict, root: Path, signal_name: str | None = None) -> str:
    """The end of a run in words: how long, how far, and whether every node came up at all."""
    n, up = len(summary["nodes"]), summary["came_up"]
    line = f"stopped {n} node{'s' if n != 1 else ''} after {_fmt_duration(summary['seconds'])}"
    if up < n:
        by = f" by {signal_name}" if signal_name else ""
        line += (f"{by} before {'they' if n > 1 else 'it'} came up ({up} of {n} answered): the testnet did not run;"
                 f" see {root}/node*.log")
        return line
    heights = summary["heights"]
    tips = {t for t in summary["tips"] if t}
    line += f": heights {'/'.join('-' if h is None else str(h) for h in heights)}"
    line += f", one tip {next(iter(tips))[:16]}" if len(tips) == 1 and None not in heights else ", tips differ"
    if summary["reached_after"] is not None:
        line += f" (shared after {summary['reached_after']:.1f}s)"
    return line + f"; logs in {root}/node*.log"
