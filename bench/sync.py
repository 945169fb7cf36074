"""`polchain bench sync`: how fast a new node catches up, replay vs snapshot, and header batches.

A chain of ``--blocks`` blocks is mined in this process (timestamps spaced by
the target interval from genesis, so k stays at k0), or reused from
``--source DIR``. A source node serves it (archival, not mining, peer
discovery off). Then, for each mode, a fresh node process with ``--peer source``
starts and the time from its ``/health`` answering until its tip equals the
source's is measured over HTTP (start-up itself is not counted):

* ``replay``: from genesis with full validation: headers first (checked in
  batches), then every body (header and records) downloaded and every proof
  replayed from the previous block's post-state (the block's j + 1 SGD steps
  and one evaluation per block);
* ``snapshot``: the same node with ``--assume-valid <block at height - depth>``
  (``--snapshot-depth``, default 10): every header rule is checked, the
  checkpoint's post-state is fetched from the peer (GET /blocks/{hash}/state)
  and must hash to that header's ``state_hash``; the blocks up to it are taken
  on their headers, the ``depth`` blocks after it are validated from that state.

``--headers N`` (default 2000; 0 skips it) also times, in this process on a real
store, a catch-up of N headers (a synthetic header chain on genesis, every header
rule holding): one SQLite commit per header (``Chain.submit_header(header)``) vs
batches of 100 (``Chain.submit_headers``, one transaction each, what sync does),
against the header checks alone on an in-memory view.

Each node mode runs ``--runs`` times on a fresh datadir; medians are reported, with
the node's own figure from its ``sync: done ... (R blocks/s)`` log line.
``--preset cifar10-resnet18`` uses the same stand-in spec as ``bench propagate``
(ResNet18 on synthetic data, k lowered for CPU mining) and says so.
"""
from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from pathlib import Path

from node.argtypes import nonneg_int, positive_float, positive_int

from . import common
from .propagate import Node, bench_spec, mine_chain, stop_all, wait_until, write_spec


def register(sub) -> None:
    p = sub.add_parser("sync", help="catch-up speed of a new node (blocks/s): replay vs snapshot; header batches",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from consensus.spec import PRESETS
    p.add_argument("--preset", choices=PRESETS, default="tiny")
    p.add_argument("--k", type=positive_int, default=4, help="initial difficulty of the cifar10-resnet18 stand-in spec")
    p.add_argument("--blocks", type=positive_int, default=None, help="chain length (default 100 tiny, 10 resnet18)")
    p.add_argument("--runs", type=positive_int, default=1, help="fresh nodes per mode (the median is reported)")
    p.add_argument("--modes", default="replay,snapshot", help="comma-separated: replay, snapshot")
    p.add_argument("--snapshot-depth", type=nonneg_int, default=10,
                   help="snapshot mode: the checkpoint is this many blocks below the source's tip")
    p.add_argument("--headers", type=nonneg_int, default=2000,
                   help="headers of the in-process header catch-up (0: skip)")
    p.add_argument("--source", type=Path, default=None,
                   help="a datadir holding the chain to serve (mined there first when it is too short)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep datadirs and logs here (default: a temp dir)")
    p.add_argument("--timeout", type=positive_float, default=1800.0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result into this directory")
    p.set_defaults(func=main)


def main(args) -> int:
    return common.emit(run(args), args, table, name=f"sync-{args.preset}")


def source_height(datadir: Path, spec) -> int:
    """Height of the chain stored in ``datadir`` (0 when none)."""
    if not (Path(datadir) / "chain.sqlite").exists():
        return 0
    from node.store import Store
    store = Store(datadir)
    try:
        tip = store.tip()
        return tip.height if tip else 0
    finally:
        store.close()


MODES = ("replay", "snapshot")
DONE = re.compile(r"sync: done at height (\d+) target \d+, (\d+) blocks in ([\d.]+)s \(([\d.]+) blocks/s\)")


def run(args) -> dict:
    import logging
    logging.getLogger("httpx").setLevel(logging.WARNING)   # one line per request otherwise
    resnet = args.preset != "tiny"
    n_blocks = args.blocks or (10 if resnet else 100)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}")
    spec, note = bench_spec(args.preset, args.k)
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="polchain-sync-"))
    root.mkdir(parents=True, exist_ok=True)
    spec_args = ["--spec", str(write_spec(spec, root / "spec.json"))]
    src_dir = Path(args.source) if args.source else root / "source"
    result = common.result_header("sync", preset=args.preset, spec=spec.name, arch=spec.model.arch, data=note,
                                  blocks=n_blocks, runs=args.runs, machine=common.machine_info("cpu"),
                                  work_dir=str(root))
    nodes: list[Node] = []
    try:
        have = source_height(src_dir, spec)
        if have < n_blocks:
            if have:
                raise SystemExit(f"{src_dir} holds {have} blocks, fewer than --blocks {n_blocks}")
            common.progress(f"mining a {n_blocks}-block chain into {src_dir}")
            t0 = time.perf_counter()
            mine_chain(spec, src_dir, n_blocks)
            result["mining_s"] = round(time.perf_counter() - t0, 1)
        source = Node("source", src_dir, spec_args, "--archival", "--no-discover", "--poll-interval", "1").start()
        nodes.append(source)
        source.wait_ready()
        st = source.status()
        tip, height = st["tip"], st["height"]
        state = source.get(f"/blocks/{tip}/state")
        if state.status_code != 200:
            raise RuntimeError(f"source does not serve the tip's post-state: HTTP {state.status_code}")
        result.update(source_height=height, state_bytes=len(state.content))
        common.progress(f"source node up at height {height} ({source.url})")

        checkpoint = None
        if "snapshot" in modes:
            depth = max(0, min(args.snapshot_depth, height - 1))
            checkpoint = source.get(f"/blocks/{height - depth}").json()["hash"]
            result["snapshot_checkpoint_height"] = height - depth
        for mode in modes:
            rates, walls, logged = [], [], []
            for r in range(args.runs):
                extra = ["--assume-valid", checkpoint] if mode == "snapshot" else []
                node = Node(f"{mode}-{r + 1}", root / f"{mode}-{r + 1}", spec_args, "--no-discover",
                            "--poll-interval", "1", "--peer", source.url, *extra).start()
                nodes.append(node)
                node.wait_ready()
                t0 = time.monotonic()
                wait_until(lambda: node.status()["tip"] == tip, args.timeout, f"{node.name} synced", interval=0.05)
                wall = time.monotonic() - t0
                node.stop()
                text = node.log_path.read_text(errors="replace")
                if mode == "snapshot" and "snapshot: post-state of block" not in text:
                    raise RuntimeError(f"{node.name} did not take the checkpoint's post-state (see {node.log_path})")
                m = DONE.findall(text)
                log_rate = float(m[-1][3]) if m else None
                walls.append(wall)
                rates.append(height / wall)
                logged.append(log_rate)
                common.progress(f"{mode} run {r + 1}: {height} blocks in {wall:.2f} s = {height / wall:.1f} blocks/s"
                                + (f" (node's log: {log_rate} blocks/s)" if log_rate else ""))
            result[mode] = {"blocks_per_s": common.summary(rates, 2), "seconds": common.summary(walls, 2),
                            "node_log_blocks_per_s": logged}
        if "replay" in result and "snapshot" in result:
            result["speedup_snapshot"] = common.ratio(result["snapshot"]["blocks_per_s"]["median"],
                                                      result["replay"]["blocks_per_s"]["median"], 1)
        if args.headers:
            common.progress(f"header catch-up: {args.headers} headers, in this process")
            result["headers"] = header_catch_up(spec, args.headers, root / "headers")
        result["load_average_after"] = common.load_average()
        return result
    finally:
        stop_all(nodes)
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)


def header_catch_up(spec, n: int, root: Path, batch: int = 100) -> dict:
    """Seconds for ``n`` headers: one commit each, in batches of ``batch``, and the checks alone."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from consensus.block import genesis_header
    from consensus.data import load_dataset
    from consensus.validation import validate_header
    from node.chain import Chain

    from .headers import _Headers, header_chain

    headers = header_chain(spec, n, Ed25519PrivateKey.generate())
    dataset = load_dataset(spec.dataset, root / "data")
    now = headers[-1].timestamp_ms / 1000 + 60
    out = {"headers": n, "batch": batch}
    for name, submit in (("one_commit_per_header", lambda c: [c.submit_header(h) for h in headers]),
                         ("batched", lambda c: [c.submit_headers(headers[i:i + batch]) for i in range(0, n, batch)])):
        chain = Chain(spec, root / name, dataset, clock=lambda: now)
        t0 = time.perf_counter()
        submit(chain)
        dt = time.perf_counter() - t0
        stored = chain.store.count_by_status().get("header-only", 0)
        chain.store.close()
        if stored != n:
            raise RuntimeError(f"{name}: {stored} of {n} headers stored")
        out[name] = {"seconds": round(dt, 3), "ms_per_header": round(1000 * dt / n, 3)}
    view = _Headers([genesis_header(spec)])
    t0 = time.perf_counter()
    for h in headers:
        validate_header(h, spec, view, int(now * 1000))
        view.by_hash[h.hash] = h
    dt = time.perf_counter() - t0
    out["checks_alone"] = {"seconds": round(dt, 3), "ms_per_header": round(1000 * dt / n, 3)}
    out["speedup_batched"] = common.ratio(out["one_commit_per_header"]["seconds"], out["batched"]["seconds"], 1)
    return out


def table(res: dict) -> str:
    rows = []
    for mode in MODES:
        if mode in res:
            r = res[mode]
            rows.append((mode, r["blocks_per_s"]["median"], r["seconds"]["median"],
                         " ".join(f"{v:g}" for v in r["blocks_per_s"]["runs"]),
                         " ".join("-" if v is None else f"{v:g}" for v in r["node_log_blocks_per_s"])))
    lines = [
        f"polchain bench sync: a new node catching up {res['source_height']} blocks from one peer on loopback "
        f"(blocks carry no weights; a post-state is {res['state_bytes'] / 1e6:.2f} MB)",
        f"spec: {res['spec']} ({res['arch']}); {res['data']}",
        f"machine: {common.machine_line(res['machine'])}",
        "time from the new node's /health to its tip = the source's tip; node start-up not counted",
    ]
    if "snapshot_checkpoint_height" in res:
        lines.append(f"snapshot: checkpoint at height {res['snapshot_checkpoint_height']}, the blocks above it "
                     "validated from its post-state")
    lines += ["", common.format_table(["mode", "blocks/s", "seconds", "runs (blocks/s)", "node's log (blocks/s)"],
                                      rows)]
    if res.get("speedup_snapshot"):
        lines += ["", f"snapshot / replay: {res['speedup_snapshot']}x"]
    if res.get("headers"):
        h = res["headers"]
        lines += ["", f"header catch-up, {h['headers']} headers (in process, real SQLite):",
                  common.format_table(["path", "seconds", "ms/header"], [
                      (name.replace("_", " "), h[name]["seconds"], h[name]["ms_per_header"])
                      for name in ("one_commit_per_header", "batched", "checks_alone")]),
                  f"batched / one commit per header: {h['speedup_batched']}x faster"]
    if res.get("load_average_after"):
        lines.append(f"load average after: {res['load_average_after'][0]}")
    return "\n".join(lines)
