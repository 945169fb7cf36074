"""`polchain bench propagate`: time for one block to cross a line of nodes on loopback.

N real `polchain node` processes (``--threads 1`` each, peer discovery off) are
started in a line, one after the other, node i knowing only node i-1. Blocks are mined beforehand in
this process (a chain of its own, timestamps spaced by the target interval) and
posted one at a time, in full (protocol v3: header and records; the block
carries no weights), to node 1; each then travels by gossip only (announce the
header, fetch header and records from the announcer, validate by replaying its
steps from the parent's post-state every node keeps; a node relays the block once
the replayed steps met R, before its accuracy evaluation: docs/p2p.md, "Fast relay"). Polling is slowed to once a minute so it cannot deliver the
block instead. For each block the time at which every node accepted it is read
from the node's own record (``received_at`` of GET /blocks/{hash}: all nodes
share this machine's clock), relative to the POST to node 1.

``--preset cifar10-resnet18`` runs ResNet18 (the CIFAR variant, 11.2 M
parameters, 45 MB bodies) on the tiny preset's synthetic data set (CIFAR-10 is
not downloaded by a benchmark), and with the initial difficulty lowered to
``--k`` (default 4) so blocks can be mined on a CPU: propagation cost (the
block's steps replayed and one evaluation per hop) does not depend on k. The
output says so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from consensus.errors import Verdict
from node.argtypes import positive_float, positive_int

from . import common


def register(sub) -> None:
    p = sub.add_parser("propagate", help="time for one block to cross a line of N nodes (loopback)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--nodes", type=positive_int, default=5, help="nodes in the line (default 5)")
    p.add_argument("--blocks", type=positive_int, default=None,
                   help="blocks sent across, one at a time (default 5 tiny, 1 resnet18)")
    p.set_defaults(func=main)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from consensus.spec import PRESETS
    p.add_argument("--preset", choices=PRESETS, default="tiny")
    p.add_argument("--k", type=positive_int, default=4,
                   help="initial difficulty for the cifar10-resnet18 stand-in spec (CPU mining)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep datadirs and logs here (default: a temp dir)")
    p.add_argument("--timeout", type=positive_float, default=600.0, help="give up after this many seconds per block")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result into this directory")


def main(args) -> int:
    return common.emit(run(args), args, table, name=f"propagate-{args.preset}")


# -- the spec ----------------------------------------------------------------------------
def bench_spec(preset_name: str, k: int = 4):
    """(spec, note). The resnet18 preset becomes ResNet18 on the tiny preset's synthetic data."""
    import dataclasses

    from consensus.spec import preset
    if preset_name == "tiny":
        return preset("tiny"), "tiny preset (tiny-cnn on synthetic data)"
    base = preset(preset_name)
    spec = dataclasses.replace(base, name=f"{base.name}-synthetic-bench", dataset=preset("tiny").dataset,
                               difficulty=dataclasses.replace(base.difficulty, initial=k))
    note = (f"{base.model.arch} ({preset_name} preset) on the tiny preset's synthetic data set, "
            f"initial difficulty k={k} instead of {base.difficulty.initial} so blocks can be mined on a CPU "
            "(CIFAR-10 not used: a benchmark never downloads it)")
    return spec, note


def write_spec(spec, path: Path) -> Path:
    path.write_text(spec.to_json())
    return path


# -- a pre-mined chain ---------------------------------------------------------------------
def mine_chain(spec, datadir: Path, blocks: int, log=common.progress) -> list:
    """Mine ``blocks`` blocks into a datadir (fast miner, one thread); the Blocks in order.

    Timestamps start at genesis and are spaced by the target interval, so the
    difficulty stays at k0, R is never re-drawn and every timestamp lies in the past.
    """
    import torch

    from consensus.data import load_dataset
    from miner.search import make_miner
    from node.chain import Chain
    from node.keys import load_or_create_key
    from node.mining import mine_on_tip

    torch.set_num_threads(1)
    datadir = Path(datadir)
    datadir.mkdir(parents=True, exist_ok=True)
    (datadir / "spec.json").write_text(spec.to_json())
    dataset = load_dataset(spec.dataset, datadir / "data")
    chain = Chain(spec, datadir, dataset, archival=True)
    key = load_or_create_key(datadir / "node.key")
    miner = make_miner("fast", spec, dataset, device="cpu", seed=1)
    out = []
    t0 = time.perf_counter()
    for i in range(blocks):
        ts = chain.tip().header.timestamp_ms + spec.difficulty.target_interval_ms
        block, _ = mine_on_tip(chain, miner, key, now_ms=lambda: ts)
        res = chain.submit(block)
        if res.status != Verdict.ACCEPTED:
            raise RuntimeError(f"own block rejected: {res.code} {res.detail}")
        out.append(block)
        if (i + 1) % 10 == 0 or i + 1 == blocks:
            log(f"mined {i + 1}/{blocks} blocks ({time.perf_counter() - t0:.0f} s)")
    chain.store.close()
    return out


# -- node processes ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One `polchain node` subprocess (this module only ever signals the processes it started)."""

    def __init__(self, name: str, datadir: Path, spec_args: list[str], *args: str):
        self.name, self.datadir = name, Path(datadir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.spec_args = spec_args
        self.log_path = self.datadir.parent / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.preexec = None           # preexec_fn of the node's process (bench hostile: die with this one)

    def start(self) -> "Node":
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLCHAIN_")}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "node.cli", "--log-level", "INFO", "node", "--datadir", str(self.datadir),
               "--port", str(self.port), "--threads", "1", *self.spec_args, *self.args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=self.preexec)
        self.started = time.monotonic()
        return self

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited ({self.proc.returncode}); see {self.log_path}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"node {self.name} not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self._log.close()

    def get(self, path: str, timeout: float = 10):
        import httpx
        return httpx.get(self.url + path, timeout=timeout)

    def status(self) -> dict:
        return self.get("/status").json()


def stop_all(nodes) -> None:
    for n in nodes:
        try:
            n.stop()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass


def wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception:  # noqa: BLE001 - a node busy validating may time out; poll again
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout:.0f} s")
        time.sleep(interval)


def post_block(node: Node, block) -> int:
    """POST /blocks as a peer would: multipart header and records (a block carries no weights)."""
    import httpx
    from consensus.hashing import canonical_json
    files = {"header": (None, block.header.encode(), "application/json"),
             "records": (None, canonical_json(block.wire_records), "application/json")}
    return httpx.post(node.url + "/blocks", files=files, timeout=600).status_code


# -- the benchmark ------------------------------------------------------------------------------
def run(args) -> dict:
    import logging
    logging.getLogger("httpx").setLevel(logging.WARNING)   # one line per request otherwise
    n_nodes = max(2, args.nodes)
    resnet = args.preset != "tiny"
    n_blocks = args.blocks or (1 if resnet else 5)
    spec, note = bench_spec(args.preset, args.k)
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="polchain-propagate-"))
    root.mkdir(parents=True, exist_ok=True)
    spec_args = ["--spec", str(write_spec(spec, root / "spec.json"))]
    result = common.result_header("propagate", preset=args.preset, spec=spec.name, arch=spec.model.arch, data=note,
                                  nodes=n_nodes, blocks=n_blocks, chain_id=spec.chain_id,
                                  machine=common.machine_info("cpu"), work_dir=str(root))
    nodes: list[Node] = []
    try:
        common.progress(f"starting {n_nodes} nodes in a line ({root})")
        for i in range(n_nodes):
            peers = ["--peer", nodes[-1].url] if nodes else []
            nodes.append(Node(f"n{i + 1}", root / f"n{i + 1}", spec_args, "--no-discover", "--poll-interval", "60",
                              *peers))
        nodes[0].start()
        common.progress(f"mining {n_blocks} block(s) in-process while node 1 starts")
        blocks = mine_chain(spec, root / "miner", n_blocks)
        # one after the other: a node whose --peer is not listening yet when it first polls keeps that
        # peer in backoff until a later poll (a minute here), and the line would not come up
        for n in nodes:
            if n.proc is None:
                n.start()
            n.wait_ready()

        def linked() -> bool:
            for i, n in enumerate(nodes):
                want = {m.url for m in nodes[max(0, i - 1):i + 2] if m is not n}
                have = {p["url"] for p in n.get("/peers").json() if p["state"] in ("connected", "new")}
                if have != want:
                    return False
            return True
        # each node introduces itself to its --peer on its first poll; the line is up when all see both sides
        wait_until(linked, 120, "every node connected to its neighbours", interval=0.3)
        common.progress("line connected")

        per_block = []
        size = len(blocks[0].header.encode()) + len(json.dumps(blocks[0].wire_records))
        for j, block in enumerate(blocks):
            header = block.header
            t_post = time.time()
            code = post_block(nodes[0], block)
            if code != 200:
                raise RuntimeError(f"node n1 refused block {header.height}: HTTP {code}")
            wait_until(lambda: nodes[-1].get(f"/blocks/{header.hash}").status_code == 200, args.timeout,
                       f"block {header.height} at n{n_nodes}")
            t_seen = time.time()
            times = []
            for n in nodes:
                b = wait_until(lambda: n.get(f"/blocks/{header.hash}").json(), 30, f"block at {n.name}")
                times.append(round(b["received_at"] - t_post, 4))
            hops = [round(b - a, 4) for a, b in zip(times, times[1:])]
            per_block.append({"height": header.height, "hash": header.hash, "accepted_at_s": times,
                              "hops_s": hops, "end_to_end_s": times[-1], "observed_s": round(t_seen - t_post, 3)})
            common.progress(f"block {header.height}: end to end {times[-1]:.3f} s; per hop "
                            + ", ".join(f"{h:.3f}" for h in hops))
        ends = [b["end_to_end_s"] for b in per_block]
        all_hops = [h for b in per_block for h in b["hops_s"]]
        result.update(body_bytes=size, per_block=per_block,
                      end_to_end_s=common.summary(ends), hop_s=common.summary(all_hops),
                      first_node_validation_s=common.summary([b["accepted_at_s"][0] for b in per_block]),
                      load_average_after=common.load_average())
        return result
    finally:
        stop_all(nodes)
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)


def table(res: dict) -> str:
    rows = [(b["height"], b["end_to_end_s"], statistics.median(b["hops_s"]), " ".join(f"{t:.3f}" for t in b["accepted_at_s"]))
            for b in res["per_block"]]
    e, h = res["end_to_end_s"], res["hop_s"]
    lines = [
        f"polchain bench propagate: {res['nodes']} nodes in a line on loopback, {res['blocks']} block(s), "
        f"{res['body_bytes']} byte blocks (header and records; no weights since protocol v2)",
        f"spec: {res['spec']} ({res['arch']}); {res['data']}",
        f"machine: {common.machine_line(res['machine'])}",
        "gossip only (announce -> fetch -> replay, R -> relay -> accuracy); times from the POST to node 1",
        "",
        common.format_table(["height", "end to end s", "median hop s", "accepted at (s) n1..nN"], rows),
        "",
        f"end to end: median {e['median']} s (min {e['min']}, max {e['max']}); per hop: median {h['median']} s; "
        f"node 1 alone (validation of the posted block): median {res['first_node_validation_s']['median']} s",
    ]
    if res.get("load_average_after"):
        lines.append(f"load average after: {res['load_average_after'][0]}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--blocks", type=int, default=None)
    a = ap.parse_args()
    print(json.dumps(run(a), indent=2))
