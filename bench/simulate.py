"""`polchain bench simulate`: a discrete-event model of block propagation and orphans (SimPy).

Nodes on a random graph (each node with degree between ``--min-degree`` and ``--max-degree``; a
random ring plus random chords, so it is connected), every link with its own one-way latency drawn
from a log-normal distribution (``--latency-ms`` median, ``--latency-sigma``). Blocks are mined as
one Poisson process at the target interval, each block by a miner drawn uniformly from the mining
nodes (equal power), on that miner's current tip. A block travels as the node does it (docs/p2p.md):

* a hop costs the gossip: ``--round-trips`` one-way latencies (announce, then GET the header and
  records: 3), the transfer of ``block_bytes`` at ``--bandwidth-mbit``, and ``--hop-overhead``
  seconds of HTTP handling on the two nodes;
* a node validates one block at a time, in arrival order, a child only after its parent: the
  **work check** (header, records, load the parent's post-state, replay the J+1 exact steps, R,
  ``state_hash``), then it **relays** (fast relay), then the **accuracy** evaluation of E and the
  store; only then does the block count as accepted there and can become the node's tip (fork
  choice by cumulative work: every block here has the same difficulty, so the highest one, the
  first one seen on a tie);
* a miner's own block is accepted and relayed at once.

Stage costs per profile come from the measured figures in docs/benchmarks.md (v3 validation, one
torch thread on the 2-core AMD EPYC of this project): ``tiny``, ``resnet18-cpu`` (one thread),
``resnet18-cpu2`` (two threads); ``resnet18-gpu`` is an ESTIMATE (no GPU was measured in this
project). Snapshot state fetches are not on this path: a v2/v3 block carries no weights, each node
derives the post-state by its replay.

Reported per (profile, node count): propagation -- the time from a best-chain block's mining to its
acceptance by the last node (p50 and p90 over blocks) and by 90 % of the nodes (p50) -- and the
orphan share (mined blocks off the final heaviest chain / mined blocks, over the first ``--blocks``
blocks; the run mines ``--tail`` more so the end does not decide). ``--calibrate`` fits the
per-hop overhead of loopback runs of `polchain bench orphans` (latency 0: every node on one
machine) to their measured propagation and ``--check`` compares the fitted model with runs it was
not fitted on.

``--from-genesis`` (issue 33.5) models a fresh chain's start instead of a fixed interval: each miner
tries ``--attempts-per-s`` candidates per second, a candidate meets R with probability 2^-k, the
accuracy rule keeps ``--hit-share`` of the R hits, k starts at the preset's k0 (or ``--k0``) and
follows the preset's retarget rule (``consensus.difficulty``) on each branch's own timestamps, and
fork choice is by cumulative work (2^k per block). Reported per retarget window: k, the best chain's
mean interval, the orphan share, and the first window within sqrt 2 of the target. (A miner's rate is
drawn for its tip when the last block came; a tip that changes meanwhile keeps the old k until the next
block: k only moves once per window.)
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from node.argtypes import fraction, nonneg_float, nonneg_int, positive_float, positive_int

from . import common

if TYPE_CHECKING:
    from consensus.spec import ChainSpec


# -- parameters ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """What one hop costs a validator, in seconds, and the preset's target interval."""
    name: str
    work_check_s: float     # header + records + load parent state + J+1 exact steps + R + state_hash
    eval_s: float           # accuracy of W' on E (after the relay)
    store_s: float
    interval_s: float       # the preset's target interval
    block_bytes: int        # header + records on the wire (v2/v3: no weights)
    source: str


PROFILES = {
    "tiny": Profile("tiny", 0.092, 0.016, 0.008, 2.0, 750,
                    "measured: v3 exact step 9.9 ms x 9 steps (J = 8) + header/state 2 ms, eval of E 0.016 s, "
                    "store 8 ms, one thread (docs/benchmarks.md 1 and 8.1)"),
    "resnet18-cpu": Profile("resnet18-cpu", 7.24, 14.8, 0.35, 60.0, 750,
                            "measured: v3 exact step 1.41 s x 5 steps (J = 4) + load state 0.08 s + state hash "
                            "0.11 s, eval of E 14.8 s, store 0.35 s, one thread (docs/benchmarks.md 5.1, 8.1)"),
    "resnet18-cpu2": Profile("resnet18-cpu2", 4.44, 7.7, 0.35, 60.0, 750,
                             "measured: as resnet18-cpu on two threads (exact step 0.85 s, eval 7.7 s)"),
    "resnet18-gpu": Profile("resnet18-gpu", 0.30, 0.05, 0.10, 60.0, 750,
                            "ESTIMATE, no GPU measured: exact step ~0.05 s (about 13 GFLOP of fp64 GEMMs "
                            "plus ~200 elementwise kernels) x 5 + state load/hash 0.05 s, eval of 500 images "
                            "~0.05 s, store 0.1 s"),
}
DEFAULT_PROFILES = ("tiny", "resnet18-cpu", "resnet18-gpu")


@dataclass(frozen=True)
class Network:
    nodes: int
    miners: int
    min_degree: int = 2
    max_degree: int = 3
    latency_median_s: float = 0.05
    latency_sigma: float = 0.5
    round_trips: float = 3.0          # one-way latencies per hop: announce, GET request, response
    bandwidth_bps: float = 10e6
    hop_overhead_s: float = 0.015     # HTTP handling per hop (loopback, quiet: 0.043 s hop - 0.03 s validation)
    topology: str = "random"          # random | line (node i linked to i+1)
    adopt: str = "accepted"           # a node's tip (and mining) moves when a block is: accepted | work-checked


@dataclass(frozen=True)
class Start:
    """A fresh chain from genesis (``--from-genesis``): each miner tries ``attempts_per_s`` candidates per
    second, a candidate meets R with probability 2^-k and the accuracy rule keeps ``hit_share`` of the R
    hits, so a miner finds a block at rate attempts_per_s x hit_share / 2^k; k starts at the spec's
    ``difficulty.initial`` and follows the spec's retarget rule (``consensus.difficulty``) on each branch's
    own timestamps (the time each block was mined)."""
    spec: ChainSpec                 # its difficulty rule (k0, window, max_step, target) is the one applied
    attempts_per_s: float           # per miner
    hit_share: float                # R hits the accuracy rule keeps


# -- the graph ----------------------------------------------------------------------------------
def graph(n: int, rng: random.Random, min_degree: int = 2, max_degree: int = 3, topology: str = "random"
          ) -> list[list[int]]:
    """Adjacency lists. random: a random ring (connected, every node degree 2; a line for n = 2) plus
    random chords until each node reaches a degree drawn from [min_degree, max_degree] (as far as
    the others' max_degree allows; tries are bounded, so a few nodes may stay below). line: 0-1-...-n-1."""
    adj: list[set[int]] = [set() for _ in range(n)]

    def link(a: int, b: int) -> None:
        adj[a].add(b)
        adj[b].add(a)
    if topology == "line" or n <= 2:
        for i in range(n - 1):
            link(i, i + 1)
        return [sorted(s) for s in adj]
    order = list(range(n))
    rng.shuffle(order)
    for k in range(n):
        link(order[k], order[(k + 1) % n])
    want = [rng.randint(min_degree, max_degree) for _ in range(n)]
    for a in order:
        tries = 0
        while len(adj[a]) < want[a] and tries < 50:
            tries += 1
            b = rng.randrange(n)
            if b != a and b not in adj[a] and len(adj[b]) < max_degree:
                link(a, b)
    return [sorted(s) for s in adj]


# -- the model -------------------------------------------------------------------------------------
def simulate(profile: Profile, net: Network, *, interval_s: float | None = None, blocks: int = 200,
             tail: int = 20, seed: int = 1, miner_ids: list[int] | None = None,
             adjacency: list[list[int]] | None = None, cost_scale: float = 1.0, start: Start | None = None) -> dict:
    """One run of the model; see the module doc. Deterministic for a seed. ``cost_scale`` multiplies
    the validation stages (a loopback run on a loaded machine: load average / cores). With ``start``
    the blocks come at the rate the difficulty gives (``Start``), not at ``interval_s``, every block's
    work is 2^k and fork choice follows cumulative work; the result has a ``start`` part (``start_report``)."""
    import simpy

    from consensus.difficulty import is_retarget_height, retarget_step

    rng = random.Random(seed)
    n = net.nodes
    if start is not None:     # blocks come at the difficulty's rate: the interval reported is the spec's target
        interval = start.spec.difficulty.target_interval_ms / 1000
    else:
        interval = interval_s if interval_s is not None else profile.interval_s
    adj = adjacency or graph(n, rng, net.min_degree, net.max_degree, net.topology)
    miners = miner_ids if miner_ids is not None else sorted(rng.sample(range(n), min(net.miners, n)))
    transfer = profile.block_bytes * 8 / net.bandwidth_bps
    mu = math.log(net.latency_median_s) if net.latency_median_s > 0 else None
    link_delay: dict[tuple[int, int], float] = {}
    for a in range(n):
        for b in adj[a]:
            if a < b:
                lat = rng.lognormvariate(mu, net.latency_sigma) if mu is not None else 0.0
                link_delay[(a, b)] = link_delay[(b, a)] = net.hop_overhead_s + net.round_trips * lat + transfer
    work_check = profile.work_check_s * cost_scale
    after_relay = (profile.eval_s + profile.store_s) * cost_scale
    adopt_on_work = net.adopt == "work-checked"

    env = simpy.Environment()
    inf = math.inf
    busy_until = [0.0] * n
    tip = [0] * n                                  # block index; 0 is genesis
    height = [0]
    parent = [-1]
    k_of = [start.spec.difficulty.initial if start else 0]
    cum = [0]                                       # cumulative work: 2^k per block (without start: 1)
    mined_at = [0.0]
    miner_of = [-1]
    arrival: list[list[float]] = [[0.0] * n]        # earliest scheduled arrival per node
    started: list[bytearray] = [bytearray(b"\x01" * n)]
    accepted: list[list[float]] = [[0.0] * n]
    pending: dict[tuple[int, int], list[int]] = {}
    events = [0]

    def at(delay: float, fn, *a) -> None:
        ev = env.timeout(delay)
        ev.callbacks.append(lambda _ev: fn(*a))
        events[0] += 1

    def relay(node: int, blk: int) -> None:
        now = env.now
        arr = arrival[blk]
        for nb in adj[node]:
            t = now + link_delay[(node, nb)]
            if t < arr[nb]:
                arr[nb] = t
                at(t - now, arrive, nb, blk)

    def accept(node: int, blk: int) -> None:
        if cum[blk] > cum[tip[node]]:
            tip[node] = blk

    def next_k(p: int) -> int:
        """The difficulty of a child of block ``p`` (consensus.difficulty.next_difficulty on the model's chain)."""
        d = start.spec.difficulty
        if not is_retarget_height(start.spec, height[p] + 1):
            return k_of[p]
        first = p
        for _ in range(d.retarget_window):
            first = parent[first]
        span_ms = round(1000 * (mined_at[p] - mined_at[first]))
        k = k_of[p] + retarget_step(span_ms, d.target_interval_ms * d.retarget_window, d.max_step)
        return max(d.minimum, min(d.maximum, k))

    def enqueue(node: int, blk: int) -> None:
        now = env.now
        start = max(now, busy_until[node])
        checked = start + work_check
        done = checked + after_relay
        busy_until[node] = done
        accepted[blk][node] = done
        at(checked - now, relay, node, blk)
        at((checked if adopt_on_work else done) - now, accept, node, blk)
        for child in pending.pop((node, blk), ()):   # arrived before this parent: queued right behind it
            enqueue(node, child)

    def arrive(node: int, blk: int) -> None:
        if started[blk][node]:
            return
        started[blk][node] = 1
        if accepted[parent[blk]][node] == inf:          # parent not here yet
            pending.setdefault((node, parent[blk]), []).append(blk)
            return
        enqueue(node, blk)

    def mining():
        total = blocks + tail
        while len(height) - 1 < total:
            if start is None:
                yield env.timeout(rng.expovariate(1.0 / interval))
                m = rng.choice(miners)
                k = 0
            else:       # each miner at the rate of its own tip's next k (drawn when the last block came)
                rates = [start.attempts_per_s * start.hit_share / 2 ** next_k(tip[x]) for x in miners]
                yield env.timeout(rng.expovariate(sum(rates)))
                m = rng.choices(miners, weights=rates)[0]
                k = next_k(tip[m])
            p = tip[m]
            b = len(height)
            k_of.append(k)
            cum.append(cum[p] + (2 ** k if start else 1))
            height.append(height[p] + 1)
            parent.append(p)
            mined_at.append(env.now)
            miner_of.append(m)
            arrival.append([inf] * n)
            started.append(bytearray(n))
            acc = [inf] * n
            accepted.append(acc)
            arrival[b][m] = env.now
            started[b][m] = 1
            acc[m] = env.now
            tip[m] = b
            relay(m, b)

    env.process(mining())
    env.run()

    # final best chain: the most work (the highest block), ties to the one accepted first by most nodes
    top = max(cum)
    cands = [b for b in range(len(height)) if cum[b] == top]
    best_tip = min(cands, key=lambda b: statistics.median(accepted[b]))
    best = set()
    b = best_tip
    while b > 0:
        best.add(b)
        b = parent[b]
    counted = range(1, blocks + 1)
    orphans = sum(1 for b in counted if b not in best)
    reach_all, reach_90 = [], []
    for b in counted:
        if b in best:
            acc = sorted(accepted[b])
            reach_all.append(acc[-1] - mined_at[b])
            reach_90.append(acc[int(math.ceil(0.9 * n)) - 1] - mined_at[b])
    degrees = [len(a) for a in adj]
    extra = {"start": start_report(start, best_tip, parent, height, k_of, mined_at, counted, best)} if start else {}
    return {**extra,
        "profile": profile.name, "nodes": n, "miners": len(miners), "interval_s": interval, "blocks": blocks,
        "orphans": orphans, "orphan_share": round(orphans / blocks, 4),
        "propagation_s": {"p50": _r(_pct(reach_all, 0.5)), "p90": _r(_pct(reach_all, 0.9)),
                          "reach_90pct_p50": _r(_pct(reach_90, 0.5)), "blocks": len(reach_all)},
        "degree": {"min": min(degrees), "mean": round(sum(degrees) / n, 2), "max": max(degrees)},
        "hops_diameter_from_node0": _eccentricity(adj, 0), "events": events[0], "seed": seed,
    }


def start_report(start: Start, best_tip: int, parent: list[int], height: list[int], k_of: list[int],
                 mined_at: list[float], counted: range, best: set[int]) -> dict:
    """A fresh chain's start, by retarget window (heights 1..window + 1, then ``window`` each): the best
    chain's k and mean interval there, and the orphan share among the counted blocks mined at those
    heights; ``reached``: the first window whose mean interval is within sqrt 2 of the target."""
    d = start.spec.difficulty
    target, w = d.target_interval_ms / 1000, d.retarget_window
    chain = []
    b = best_tip
    while b > 0:
        chain.append(b)
        b = parent[b]
    chain.reverse()
    last = max(height[b] for b in counted)
    windows, lo = [], 1
    while lo <= last:
        hi = min(last, w + 1 if lo == 1 else lo + w - 1)
        mine = [b for b in chain if lo <= height[b] <= hi]
        mined = [b for b in counted if lo <= height[b] <= hi]
        if not mine or len(mine) < hi - lo + 1:
            break
        gaps = [mined_at[b] - mined_at[parent[b]] for b in mine]
        windows.append({"heights": [lo, hi], "k": sorted({k_of[b] for b in mine}),
                        "mean_interval_s": _r(statistics.fmean(gaps), 2), "starts_at_s": _r(mined_at[mine[0]], 1),
                        "mined": len(mined), "orphans": sum(1 for b in mined if b not in best)})
        lo = hi + 1
    reached = next((x for x in windows if target / 2 ** 0.5 <= x["mean_interval_s"] <= target * 2 ** 0.5), None)
    miners_rate = start.attempts_per_s * start.hit_share
    return {"k0": d.initial, "max_step": d.max_step, "window": w, "target_interval_s": target,
            "attempts_per_s_per_miner": start.attempts_per_s, "hit_share": start.hit_share,
            "one_miner_interval_at_k0_s": _r(2 ** d.initial / miners_rate, 2), "windows": windows,
            "reached_target_at_height": reached["heights"][0] if reached else None,
            "reached_target_after_s": reached["starts_at_s"] if reached else None}


def _eccentricity(adj: list[list[int]], src: int) -> int:
    dist = {src: 0}
    frontier = [src]
    while frontier:
        nxt = []
        for a in frontier:
            for b in adj[a]:
                if b not in dist:
                    dist[b] = dist[a] + 1
                    nxt.append(b)
        frontier = nxt
    return max(dist.values())


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    i = (len(v) - 1) * q
    lo = int(i)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (i - lo)


def _r(x, d: int = 3):
    return None if x is None else round(x, d)


# -- calibration on real loopback runs ------------------------------------------------------------
# The issue's measurement (issue 20): 12 nodes, 3 miners, random degree 2-3, 240 s, tiny at 2 s,
# load 9-19: a block reached all 12 in median 2.64 s (p90 3.68 s); 116 of 223 mined blocks orphaned.
ISSUE_RUN = {"name": "issue 20 (12 nodes, load 9-19)", "nodes": 12, "miners": 3, "edges": None,
             "mined_interval_s": 240 / 223, "propagation_s": {"p50": 2.64, "p90": 3.68},
             "orphan_share": round(116 / 223, 4), "mined": 223, "load": "9-19", "load_mean": 14.0}
CORES = 2    # the machine the loopback runs were taken on


def real_run(path: Path) -> dict:
    """The figures the model needs from a `polchain bench orphans --json/--out` result."""
    try:
        res = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read {path}: {exc}") from None
    if res.get("benchmark") != "orphans":
        raise SystemExit(f"error: {path} is not a `polchain bench orphans` result")
    window = res["seconds"] - res["settle_s"]
    load = [x for x in (res.get("load_average_start"), res.get("load_average_after")) if x]
    return {"name": f"{Path(path).name} ({res['nodes']} nodes, target {res['target_interval_s']} s)",
            "nodes": res["nodes"], "miners": res["miners"], "edges": res["edges"],
            "mined_interval_s": res.get("mined_interval_s") or window / max(1, res["mined"]),
            "propagation_s": res["propagation_s"],
            "orphan_share": res["orphan_share"], "mined": res["mined"],
            "load": "-".join(str(x[0]) for x in load),
            "load_mean": statistics.mean(x[0] for x in load) if load else CORES}


LOOPBACK_HOP_S = 0.015   # HTTP handling of one hop on a quiet machine (0.043 s tiny hop - 0.03 s validation)


def loopback_model(run: dict, profile: Profile, contention: float, *, blocks: int, seed: int) -> dict:
    """The model of a real loopback run: its graph and miners when known, latency 0, and every node's
    work (HTTP handling and validation stages) slowed by ``contention`` x load average / cores (at
    least 1): all nodes of the run shared the machine's cores with each other and with other jobs."""
    scale = max(1.0, contention * run.get("load_mean", CORES) / CORES)
    net = Network(run["nodes"], len(run["miners"]) if isinstance(run["miners"], list) else run["miners"],
                  latency_median_s=0.0, bandwidth_bps=1e10, hop_overhead_s=LOOPBACK_HOP_S * scale)
    adj = None
    if run.get("edges"):
        sets: list[set[int]] = [set() for _ in range(run["nodes"])]
        for a, b in run["edges"]:
            sets[a].add(b)
            sets[b].add(a)
        adj = [sorted(s) for s in sets]
    out = simulate(profile, net, interval_s=run["mined_interval_s"], blocks=blocks, seed=seed,
                   miner_ids=run["miners"] if isinstance(run["miners"], list) else None, adjacency=adj,
                   cost_scale=scale)
    out["cost_scale"] = round(scale, 3)
    return out


def calibrate(runs: list[dict], profile: Profile, *, blocks: int, seed: int) -> float:
    """The contention factor (load average / cores -> slowdown of a node's work) that best fits the
    runs' propagation p50 and p90 (least squares of log ratios, grid 0.02..5); orphan shares are not
    fitted."""
    def err(c: float) -> float:
        e = 0.0
        for r in runs:
            m = loopback_model(r, profile, c, blocks=blocks, seed=seed)["propagation_s"]
            for q in ("p50", "p90"):
                if r["propagation_s"].get(q) and m[q]:
                    e += math.log(m[q] / r["propagation_s"][q]) ** 2
        return e
    grid = [round(0.02 * 1.15 ** i, 4) for i in range(0, 41)]
    best = min(grid, key=err)
    lo, hi = best / 1.15, best * 1.15             # refine once
    fine = [lo + (hi - lo) * i / 10 for i in range(11)]
    return round(min(fine, key=err), 4)


# -- the command --------------------------------------------------------------------------------------
def register(sub) -> None:
    p = sub.add_parser("simulate", help="discrete-event model (SimPy) of propagation and orphans at scale",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", default=",".join(DEFAULT_PROFILES),
                   help=f"comma-separated, of {', '.join(PROFILES)} (default {','.join(DEFAULT_PROFILES)})")
    p.add_argument("--nodes", default="100,1000,10000", help="comma-separated node counts")
    p.add_argument("--miner-share", type=fraction, default=0.25,
                   help="share of the nodes that mine, equal power (default 0.25, as 3 of 12)")
    p.add_argument("--interval", type=positive_float, default=None,
                   help="target interval, s, for every profile (default: each profile's preset)")
    p.add_argument("--tiny-interval", type=positive_float, default=None, help="target interval for tiny only")
    p.add_argument("--resnet-interval", type=positive_float, default=None,
                   help="target interval for the resnet18 profiles")
    p.add_argument("--min-degree", type=positive_int, default=2)
    p.add_argument("--max-degree", type=positive_int, default=3)
    p.add_argument("--latency-ms", type=nonneg_float, default=50.0, help="median one-way link latency (default 50 ms)")
    p.add_argument("--latency-sigma", type=nonneg_float, default=0.5, help="log-normal sigma of link latencies")
    p.add_argument("--bandwidth-mbit", type=positive_float, default=10.0, help="per-link bandwidth (default 10 Mbit/s)")
    p.add_argument("--hop-overhead", type=nonneg_float, default=0.015, help="HTTP handling per hop, s (default 0.015)")
    p.add_argument("--adopt", choices=("accepted", "work-checked"), default="accepted",
                   help="when a node builds on a block: once accepted (today) or once its work is checked "
                        "(the accuracy evaluation then runs while it mines on it)")
    p.add_argument("--blocks", type=positive_int, default=None,
                   help="blocks counted per run (default: 200, fewer for large nets to bound the run time)")
    p.add_argument("--seed", type=nonneg_int, default=1)
    g = p.add_argument_group("a fresh chain from genesis (issue 33.5): blocks at the rate the difficulty gives")
    g.add_argument("--from-genesis", action="store_true",
                   help="start at the preset's k0 and apply its retarget rule (instead of a fixed interval)")
    g.add_argument("--attempts-per-s", type=positive_float, default=None,
                   help="candidates per second of each miner (required with --from-genesis)")
    g.add_argument("--hit-share", type=fraction, default=1.0,
                   help="share of R hits the accuracy rule keeps (default 1; ResNet-18 from genesis: 0.31 measured)")
    g.add_argument("--k0", type=positive_int, default=None, help="initial difficulty instead of the preset's")
    g.add_argument("--max-step", type=nonneg_int, default=None, help="retarget step limit instead of the preset's")
    p.add_argument("--calibrate", type=Path, nargs="*", default=None, metavar="JSON",
                   help="`polchain bench orphans` results (tiny, loopback) to fit the loopback hop overhead on "
                        "(the issue's 12-node figure is added)")
    p.add_argument("--check", type=Path, nargs="*", default=None, metavar="JSON",
                   help="orphans results the fit is checked against (not fitted)")
    common.add_output_arguments(p, figure="simulate")
    p.set_defaults(func=main)


def _list(text: str, kind, what: str) -> list:
    try:
        vals = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: --{what}: give a comma-separated list") from None
    if not vals:
        raise SystemExit(f"error: --{what}: empty")
    return vals


def auto_blocks(nodes: int) -> int:
    """Blocks per run: 200, fewer above 1,000 nodes (about 3.5 events per node and block)."""
    return max(40, min(200, int(3_000_000 / (3.5 * nodes))))


def main(args) -> int:
    profiles = _list(args.profiles, str, "profiles")
    for p in profiles:
        if p not in PROFILES:
            raise SystemExit(f"error: unknown profile {p!r} (known: {', '.join(PROFILES)})")
    sizes = _list(args.nodes, int, "nodes")
    if min(sizes) < 2:
        raise SystemExit("error: --nodes: at least 2")
    if not 0 < args.miner_share <= 1:
        raise SystemExit("error: --miner-share must be in (0, 1]")
    if not 1 <= args.min_degree <= args.max_degree:
        raise SystemExit("error: need 1 <= --min-degree <= --max-degree")
    for name in ("interval", "tiny_interval", "resnet_interval"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be positive")
    if args.blocks is not None and args.blocks < 1:
        raise SystemExit("error: --blocks must be positive")
    if args.from_genesis and args.attempts_per_s is None:
        raise SystemExit("error: --from-genesis needs --attempts-per-s (each miner's candidates per second)")
    if not args.from_genesis and (args.attempts_per_s, args.k0, args.max_step) != (None, None, None):
        raise SystemExit("error: --attempts-per-s, --k0 and --max-step belong to --from-genesis")
    if args.from_genesis and (args.calibrate is not None or args.interval or args.tiny_interval or args.resnet_interval):
        raise SystemExit("error: --from-genesis takes the presets' targets: no --interval options, no --calibrate")
    if not 0 < args.hit_share <= 1:
        raise SystemExit("error: --hit-share must be in (0, 1]")
    return common.emit_with_figures(run(args, profiles, sizes), args, table, name="simulate", draw=draw)


def start_for(args, name: str) -> Start | None:
    """The ``Start`` of ``--from-genesis`` for a profile: its preset's difficulty rule, with --k0 and
    --max-step applied (a spec the chain could have: the ranges are checked as a spec file's are)."""
    if not args.from_genesis:
        return None
    from consensus.spec import preset
    spec = preset("tiny" if name == "tiny" else "cifar10-resnet18")
    d = spec.difficulty
    d = replace(d, initial=args.k0 if args.k0 is not None else d.initial,
                max_step=args.max_step if args.max_step is not None else d.max_step)
    if not d.minimum <= d.initial <= d.maximum:
        raise SystemExit(f"error: --k0 must be within [{d.minimum}, {d.maximum}]")
    return Start(replace(spec, difficulty=d), args.attempts_per_s, args.hit_share)


def interval_for(args, name: str) -> float:
    if args.interval is not None:
        return args.interval
    if name == "tiny" and args.tiny_interval is not None:
        return args.tiny_interval
    if name.startswith("resnet18") and args.resnet_interval is not None:
        return args.resnet_interval
    return PROFILES[name].interval_s


def run(args, profiles: list[str], sizes: list[int]) -> dict:
    res = common.result_header("simulate", machine=common.machine_info("cpu"),
                               load_average_start=common.load_average())
    res["profiles"] = {p: asdict(PROFILES[p]) for p in profiles}
    if args.calibrate is not None:
        fit_runs = [real_run(p) for p in args.calibrate] + [ISSUE_RUN]
        hop = calibrate(fit_runs, PROFILES["tiny"], blocks=200, seed=args.seed)
        res["calibration"] = {"contention": hop, "loopback_hop_s": LOOPBACK_HOP_S, "fitted_on": [], "checked_on": []}
        for r in fit_runs:
            res["calibration"]["fitted_on"].append(_compare(r, hop, args.seed))
        for p in args.check or []:
            res["calibration"]["checked_on"].append(_compare(real_run(p), hop, args.seed))
        common.progress(f"calibrated contention factor: {hop}")
    net0 = Network(0, 0, args.min_degree, args.max_degree, args.latency_ms / 1000, args.latency_sigma,
                   bandwidth_bps=args.bandwidth_mbit * 1e6, hop_overhead_s=args.hop_overhead, adopt=args.adopt)
    res["network"] = {k: v for k, v in asdict(net0).items() if k not in ("nodes", "miners")}
    res["network"]["miner_share"] = args.miner_share
    rows = []
    for name in profiles:
        for n in sizes:
            net = replace(net0, nodes=n, miners=max(1, round(n * args.miner_share)))
            blocks = args.blocks or auto_blocks(n)
            t0 = time.perf_counter()
            start = start_for(args, name)
            out = simulate(PROFILES[name], net, interval_s=interval_for(args, name), blocks=blocks,
                           tail=max(10, blocks // 10), seed=args.seed, start=start)
            out["seconds"] = round(time.perf_counter() - t0, 2)
            common.progress(f"{name}, {n} nodes: orphan share {out['orphan_share']}, propagation p50 "
                            f"{out['propagation_s']['p50']} s ({out['seconds']} s, {out['events']} events)")
            rows.append(out)
    res["results"] = rows
    res["load_average_after"] = common.load_average()
    return res


def _compare(run: dict, hop: float, seed: int) -> dict:
    m = loopback_model(run, PROFILES["tiny"], hop, blocks=300, seed=seed)
    return {"run": run["name"], "load": run.get("load"), "mined_interval_s": round(run["mined_interval_s"], 3),
            "cost_scale": m["cost_scale"],
            "measured": {"p50": run["propagation_s"].get("p50"), "p90": run["propagation_s"].get("p90"),
                         "orphan_share": run["orphan_share"], "mined": run["mined"]},
            "model": {"p50": m["propagation_s"]["p50"], "p90": m["propagation_s"]["p90"],
                      "orphan_share": m["orphan_share"]}}


def table(res: dict) -> str:
    net = res["network"]
    lines = [f"polchain bench simulate (SimPy): random graph, degree {net['min_degree']}-{net['max_degree']}, "
             f"{net['miner_share']:.0%} of nodes mine; link latency log-normal, median "
             f"{net['latency_median_s'] * 1000:.0f} ms (sigma {net['latency_sigma']}) x {net['round_trips']:g} per hop, "
             f"{net['bandwidth_bps'] / 1e6:g} Mbit/s, hop overhead {net['hop_overhead_s']} s; tips move on blocks "
             f"{net.get('adopt', 'accepted')}",
             "validation per hop: work check -> relay -> accuracy on E -> store (fast relay); "
             "resnet18-gpu is an estimate, not a measurement", ""]
    cal = res.get("calibration")
    if cal:
        lines.append(f"calibration on loopback runs (latency 0): a node's work slowed by {cal['contention']} x load "
                     f"average / {CORES} cores (fitted); HTTP per hop {cal['loopback_hop_s']} s and the tiny stages "
                     "scaled by it")
        crow = []
        for kind in ("fitted_on", "checked_on"):
            for c in cal[kind]:
                crow.append((kind.split("_")[0], c["run"], c["load"], c["cost_scale"], c["mined_interval_s"],
                             c["measured"]["p50"],
                             c["model"]["p50"], c["measured"]["p90"], c["model"]["p90"],
                             c["measured"]["orphan_share"], c["model"]["orphan_share"]))
        lines += [common.format_table(["", "run", "load", "slowdown", "mined every s", "p50 real", "p50 model", "p90 real",
                                       "p90 model", "orphans real", "orphans model"], crow), ""]
    rows = [(r["profile"], r["nodes"], r["miners"], r["interval_s"], r["blocks"], r["degree"]["mean"],
             r["hops_diameter_from_node0"], r["propagation_s"]["p50"], r["propagation_s"]["p90"],
             r["propagation_s"]["reach_90pct_p50"], r["orphan_share"], r["seconds"]) for r in res["results"]]
    lines.append(common.format_table(["profile", "nodes", "miners", "interval s", "blocks", "mean degree",
                                      "ecc. node0", "all p50 s", "all p90 s", "90% p50 s", "orphan share",
                                      "sim s"], rows))
    for r in res["results"]:
        if "start" in r:
            lines += ["", start_table(r)]
    return "\n".join(lines)


def start_table(r: dict) -> str:
    s = r["start"]
    reached = (f"within sqrt 2 of the target from height {s['reached_target_at_height']}, "
               f"{s['reached_target_after_s']:g} s after genesis" if s["reached_target_at_height"] else
               "the target was not reached")
    rows = [(f"{w['heights'][0]}-{w['heights'][1]}", ",".join(map(str, w["k"])), w["mean_interval_s"],
             w["starts_at_s"], w["mined"], w["orphans"], f"{w['orphans'] / w['mined']:.0%}" if w["mined"] else "-")
            for w in s["windows"]]
    return "\n".join([
        f"{r['profile']}, {r['nodes']} nodes, from genesis: k0 {s['k0']}, steps of up to {s['max_step']} per "
        f"{s['window']} blocks, {s['attempts_per_s_per_miner']:g} candidates/s per miner x {r['miners']}, "
        f"{s['hit_share']:g} of R hits kept (one miner at k0: a block every {s['one_miner_interval_at_k0_s']:g} s); "
        f"target {s['target_interval_s']:g} s: {reached}",
        common.format_table(["heights", "k", "mean interval s", "starts at s", "mined", "orphans", "share"], rows)])


def draw(res: dict, out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    by: dict[str, list[dict]] = {}
    for r in res["results"]:
        by.setdefault(r["profile"], []).append(r)
    for name, rs in by.items():
        rs = sorted(rs, key=lambda r: r["nodes"])
        xs = [r["nodes"] for r in rs]
        label = f"{name} ({rs[0]['interval_s']:g} s)" + (" [estimate]" if name.endswith("gpu") else "")
        ax1.plot(xs, [r["propagation_s"]["p50"] for r in rs], marker="o", label=label)
        ax2.plot(xs, [100 * r["orphan_share"] for r in rs], marker="o", label=label)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("nodes")
        ax.grid(alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("time to reach all nodes, median (s)")
    ax2.set_ylabel("orphan share (%)")
    ax2.axhline(5, color="grey", ls="--", lw=0.8)
    ax1.legend(fontsize=7)
    net = res["network"]
    fig.suptitle(f"simulated: degree {net['min_degree']}-{net['max_degree']}, latency median "
                 f"{net['latency_median_s'] * 1000:.0f} ms, {net['miner_share']:.0%} miners", fontsize=9)
    return common.save_figure(fig, res, out_dir, "simulate", threads=False)
