"""`polchain bench orphans`: propagation and orphan share of a real mining network on loopback.

N real `polchain node` processes (``--threads 1`` each, peer discovery off) on 127.0.0.1, M of
them mining (``--mine --device cpu``), on a seeded random graph whose nodes have degree 2-3 (a
random ring, every node with two neighbours, plus random chords up to three). The chain is the
preset with another target interval (``--interval``): a derived spec named
``<preset>-<interval>ms``, with its own chain id. The network runs for ``--seconds``; meanwhile
every ``--sample`` seconds the tip of every node is read from GET /status (a sample is "one tip"
when all nodes answer with the same tip). Then the nodes are stopped and every node's SQLite
store is read (``chain.sqlite``: every block it stored, on any branch, with the time it stored it
-- ``received_at``, the row's creation: on its verdict for a gossiped block -- and the peer it came
from; a block its own miner made has no peer).

Reported, over the blocks mined between the moment all nodes were up and ``--settle`` seconds
before the end (a block mined in the last seconds has had no time to spread or be beaten):

* **propagation**: for each block of the final best chain, the time from its miner storing it to
  the last node storing it (all nodes share this machine's clock); p50 and p90;
* **orphan share**: mined blocks not on the final best chain (the heaviest node's) / mined blocks;
* **one-tip share**: the share of samples in which every node had the same tip;
* the mean interval between best-chain blocks actually seen (the difficulty retargets towards the
  target interval from the preset's initial k) and the load average before and after.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from node.argtypes import nonneg_float, nonneg_int, positive_float, positive_int

from . import common


def register(sub) -> None:
    p = sub.add_parser("orphans", help="orphan share and propagation of N real mining nodes on a random graph",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from consensus.spec import NODE_PRESETS
    p.add_argument("--preset", choices=NODE_PRESETS, default="tiny")
    p.add_argument("--nodes", type=positive_int, default=12, help="nodes (default 12)")
    p.add_argument("--miners", type=positive_int, default=3, help="how many of them mine (default 3)")
    p.add_argument("--interval", type=positive_float, default=None,
                   help="target block interval, seconds (default: the preset's)")
    p.add_argument("--k", type=positive_int, default=None,
                   help="initial difficulty (default: the preset's; another k is another chain, named -k<K>)")
    p.add_argument("--seconds", type=positive_float, default=240.0,
                   help="how long the network runs once up (default 240)")
    p.add_argument("--settle", type=nonneg_float, default=None,
                   help="blocks mined in the last SETTLE seconds are not counted (default max(10, 2 x interval))")
    p.add_argument("--sample", type=positive_float, default=2.0, help="seconds between tip samples (default 2)")
    p.add_argument("--min-degree", type=positive_int, default=2)
    p.add_argument("--max-degree", type=positive_int, default=3)
    p.add_argument("--seed", type=nonneg_int, default=1, help="seed of the topology and of the choice of miners")
    p.add_argument("--work-dir", type=Path, default=None, help="keep datadirs and logs here (default: a temp dir)")
    common.add_output_arguments(p)
    p.set_defaults(func=main)


def main(args) -> int:
    for name in ("nodes", "miners", "seconds", "sample"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"error: --{name} must be positive")
    if args.nodes < 2 or args.miners > args.nodes:
        raise SystemExit("error: need --nodes >= 2 and --miners <= --nodes")
    if not 1 <= args.min_degree <= args.max_degree:
        raise SystemExit("error: need 1 <= --min-degree <= --max-degree")
    if args.interval is not None and args.interval <= 0:
        raise SystemExit("error: --interval must be positive")
    res = run(args)
    return common.emit(res, args, table, name=f"orphans-{res['spec']}-{res['nodes']}n")


# -- the spec and the graph ------------------------------------------------------------------
def interval_spec(preset_name: str, interval_s: float | None, k: int | None = None):
    """The preset with another target interval and/or initial k; named ``<preset>-<ms>ms`` and/or
    ``-k<K>`` (its own chain id)."""
    from consensus.spec import preset
    spec = preset(preset_name)
    if interval_s is not None:
        ms = int(round(interval_s * 1000))
        spec = dataclasses.replace(spec, name=f"{spec.name}-{ms}ms",
                                   difficulty=dataclasses.replace(spec.difficulty, target_interval_ms=ms))
    if k is not None:
        spec = dataclasses.replace(spec, name=f"{spec.name}-k{k}", difficulty=dataclasses.replace(spec.difficulty, initial=k))
    return spec


def random_graph(n: int, seed: int, min_degree: int = 2, max_degree: int = 3) -> list[tuple[int, int]]:
    """Edges (i, j), i > j, of a connected graph on n nodes with degrees in [min_degree, max_degree]
    (as far as n allows): a random ring (a line for n = 2), then random chords between nodes below
    max_degree, each node getting a target degree drawn from [min_degree, max_degree]."""
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    edges: set[tuple[int, int]] = set()

    def add(a: int, b: int) -> None:
        edges.add((max(a, b), min(a, b)))
    for k in range(n - 1):
        add(order[k], order[k + 1])
    if n > 2:
        add(order[-1], order[0])
    deg = [0] * n
    for a, b in edges:
        deg[a] += 1
        deg[b] += 1
    want = [rng.randint(min_degree, max_degree) for _ in range(n)]
    nodes = list(range(n))
    rng.shuffle(nodes)
    for a in nodes:
        others = [b for b in nodes if b != a and (max(a, b), min(a, b)) not in edges]
        rng.shuffle(others)
        for b in others:
            if deg[a] >= want[a]:
                break
            if deg[b] < max_degree:
                add(a, b)
                deg[a] += 1
                deg[b] += 1
    return sorted(edges)


# -- reading the stores ------------------------------------------------------------------------
def read_store(datadir: Path) -> dict:
    """{"blocks": {hash: {...}}, "best": [hash by height]} from a stopped node's chain.sqlite."""
    con = sqlite3.connect(f"file:{Path(datadir) / 'chain.sqlite'}?mode=ro", uri=True)
    try:
        blocks = {}
        for h, parent, height, status, work, received, peer, header in con.execute(
                "SELECT hash, parent, height, status, cumulative_work, received_at, peer, header_json FROM blocks"):
            blocks[h] = {"parent": parent, "height": height, "status": status, "work": int(work),
                         "received_at": received, "peer": peer, "miner": json.loads(header).get("miner", "")}
        best = [h for _, h in con.execute("SELECT height, hash FROM best_chain ORDER BY height")]
    finally:
        con.close()
    return {"blocks": blocks, "best": best}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    i = (len(v) - 1) * q
    lo, hi = int(i), min(int(i) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (i - lo)


def analyse(stores: list[dict], miner_keys: set[str], t_from: float, t_to: float) -> dict:
    """Propagation, orphan share and the mean interval from the nodes' stores (see the module doc)."""
    final = max(stores, key=lambda s: (s["blocks"][s["best"][-1]]["work"] if s["best"] else -1))
    best = set(final["best"])
    mined: dict[str, float] = {}      # hash -> when its miner stored it
    for s in stores:
        for h, b in s["blocks"].items():
            if b["height"] > 0 and b["peer"] is None and b["status"] == "valid" and b["miner"] in miner_keys:
                mined[h] = min(mined.get(h, b["received_at"]), b["received_at"])
    counted = {h: t for h, t in mined.items() if t_from <= t <= t_to}
    orphans = [h for h in counted if h not in best]
    prop, partial = [], 0
    for h, t0 in counted.items():
        if h not in best:
            continue
        seen = [s["blocks"][h]["received_at"] for s in stores if h in s["blocks"]
                and s["blocks"][h]["status"] == "valid"]
        if len(seen) == len(stores):
            prop.append(max(seen) - t0)
        else:
            partial += 1
    best_times = sorted(t for h, t in counted.items() if h in best)
    height_of = {h: b["height"] for s in stores for h, b in s["blocks"].items()}
    # every counted block: seconds since the start, height, on the final best chain (for windows after the fact)
    per_block = sorted([round(t - t_from, 3), height_of[h], h in best] for h, t in counted.items())
    half = [b for b in per_block if b[0] >= (t_to - t_from) / 2]
    gaps = [b - a for a, b in zip(best_times, best_times[1:])]
    tips = {s["best"][-1] for s in stores if s["best"]}
    return {
        "mined": len(counted), "mined_total": len(mined), "orphans": len(orphans),
        "orphan_share": round(len(orphans) / len(counted), 4) if counted else None,
        "best_chain_blocks": len(best_times), "final_height": len(final["best"]) - 1,
        "propagation_s": {"p50": _r(percentile(prop, 0.5)), "p90": _r(percentile(prop, 0.9)),
                          "max": _r(max(prop) if prop else None), "blocks": len(prop),
                          "not_at_every_node": partial},
        "best_chain_interval_s": _r(statistics.mean(gaps) if gaps else None),
        "mined_interval_s": _r((t_to - t_from) / len(counted) if counted else None),
        "second_half": {"mined": len(half), "orphans": sum(1 for b in half if not b[2]),
                        "orphan_share": _r(sum(1 for b in half if not b[2]) / len(half), 4) if half else None,
                        "mined_interval_s": _r((t_to - t_from) / 2 / len(half)) if half else None},
        "blocks": per_block,
        "one_tip_at_end": len(tips) == 1,
    }


def _r(x, d: int = 3):
    return None if x is None else round(x, d)


# -- the run -----------------------------------------------------------------------------------
def run(args) -> dict:
    import logging

    import httpx

    from .propagate import Node, stop_all, wait_until, write_spec
    logging.getLogger("httpx").setLevel(logging.WARNING)
    spec = interval_spec(args.preset, args.interval, args.k)
    interval_s = spec.difficulty.target_interval_ms / 1000
    settle = args.settle if args.settle is not None else max(10.0, 2 * interval_s)
    edges = random_graph(args.nodes, args.seed, args.min_degree, args.max_degree)
    rng = random.Random(args.seed + 1)
    miners = sorted(rng.sample(range(args.nodes), args.miners))
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="polchain-orphans-"))
    root.mkdir(parents=True, exist_ok=True)
    spec_args = ["--spec", str(write_spec(spec, root / "spec.json"))]
    result = common.result_header(
        "orphans", preset=args.preset, spec=spec.name, chain_id=spec.chain_id, arch=spec.model.arch,
        target_interval_s=interval_s, nodes=args.nodes, miners=miners, edges=[list(e) for e in edges],
        degrees=sorted(sum(i in e for e in edges) for i in range(args.nodes)), seed=args.seed,
        seconds=args.seconds, settle_s=settle, machine=common.machine_info("cpu"), work_dir=str(root))
    nodes: list[Node] = []
    try:
        common.progress(f"{args.nodes} nodes, miners {miners}, {len(edges)} links; spec {spec.name} ({root})")
        for i in range(args.nodes):
            extra = ["--mine", "--device", "cpu"] if i in miners else []
            nodes.append(Node(f"n{i}", root / f"n{i}", spec_args, "--no-discover", *extra))
        for i, n in enumerate(nodes):          # a node's --peer (lower index) is listening before it starts
            n.args += [a for e in edges if e[0] == i for a in ("--peer", nodes[e[1]].url)]
            n.start()
            n.wait_ready()

        def linked() -> bool:
            for i, n in enumerate(nodes):
                want = {nodes[b if a == i else a].url for a, b in edges if i in (a, b)}
                have = {p["url"] for p in n.get("/peers").json() if p["state"] in ("connected", "new")}
                if not want <= have:
                    return False
            return True
        wait_until(linked, 180, "every node connected to its neighbours", interval=0.5)
        keys = {nodes[i].status()["miner_key"] for i in miners}
        t_from = time.time()
        result["load_average_start"] = common.load_average()
        common.progress(f"network up; running {args.seconds:.0f} s")
        samples = {"total": 0, "one_tip": 0, "unanswered": 0}
        stop = threading.Event()

        def tip_of(n: Node):
            try:
                return httpx.get(n.url + "/status", timeout=max(5.0, args.sample * 2)).json()["tip"]
            except Exception:  # noqa: BLE001 - a busy node that does not answer counts as unanswered
                return None
        with ThreadPoolExecutor(len(nodes)) as pool:
            t_end = t_from + args.seconds
            next_log = t_from + 30
            while time.time() < t_end:
                t_s = time.time()
                tips = list(pool.map(tip_of, nodes))
                samples["total"] += 1
                if None in tips:
                    samples["unanswered"] += 1
                elif len(set(tips)) == 1:
                    samples["one_tip"] += 1
                if time.time() >= next_log:
                    next_log += 30
                    common.progress(f"{time.time() - t_from:.0f} s: {samples['one_tip']}/{samples['total']} "
                                    "samples on one tip")
                stop.wait(max(0.0, args.sample - (time.time() - t_s)))
        t_to = time.time() - settle
        result["load_average_after"] = common.load_average()
        stop_all(nodes)
        stores = [read_store(n.datadir) for n in nodes]
        result.update(analyse(stores, keys, t_from, t_to))
        result["samples"] = samples
        result["one_tip_share"] = round(samples["one_tip"] / samples["total"], 4) if samples["total"] else None
        return result
    finally:
        stop_all(nodes)
        if not args.work_dir:
            shutil.rmtree(root, ignore_errors=True)


def table(res: dict) -> str:
    p = res["propagation_s"]
    rows = [(res["spec"], res["target_interval_s"], res["best_chain_interval_s"], res["mined"], res["orphans"],
             res["orphan_share"], p["p50"], p["p90"], res["one_tip_share"])]
    lines = [
        f"polchain bench orphans: {res['nodes']} nodes, miners {res['miners']}, degrees {min(res['degrees'])}-"
        f"{max(res['degrees'])} (seed {res['seed']}), {res['seconds']:.0f} s on loopback",
        f"machine: {common.machine_line(res['machine'])}",
        f"blocks counted: mined from when all nodes were up to {res['settle_s']:.0f} s before the end; "
        "propagation: miner stores it -> last node stores it (best-chain blocks)",
        "",
        common.format_table(["spec", "target s", "seen s", "mined", "orphans", "orphan share", "prop p50 s",
                             "prop p90 s", "one-tip share"], rows),
        "",
        f"second half of the window (difficulty retargeted from the preset's k): "
        f"{res['second_half']['orphans']} of {res['second_half']['mined']} orphaned "
        f"({res['second_half']['orphan_share']}), a block mined every {res['second_half']['mined_interval_s']} s"
        if res.get("second_half") else "",
        f"final height {res['final_height']}; one tip at the end: {res['one_tip_at_end']}; "
        f"{p['not_at_every_node']} best-chain block(s) not at every node; "
        f"load average start {(res.get('load_average_start') or ['?'])[0]}, "
        f"after {(res.get('load_average_after') or ['?'])[0]}",
    ]
    return "\n".join(lines)
