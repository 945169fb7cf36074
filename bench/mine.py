"""`polchain bench mine`: what a valid block costs each miner, reference loop vs fast search.

Both miners mine whole blocks, in one process on the same data, from the same
parent post-state (the genesis weights) and with the same requirements R: round
i gives both miners the stand-in parent i (a post-state hash, hence R, of its
own), in alternating order, and each mines on it until it has a block or the
round's cap (``--seconds``) has passed. ``--runs`` is the number of rounds. Both
run the protocol search as in a node: the J advance steps, the evaluation of
W_J against the floor (the stand-in parent claims ``--acc-floor`` correct), the
exact confirmation of every predicted hit and the accuracy check of every
confirmed one are all inside a round.

Two figures are reported per miner, both steady-state quantities that do not
depend on how long a run is:

* **search CPU seconds per candidate**: process CPU time spent judging candidate
  nonces against R, over the candidates judged (one exact step each for the
  reference loop; one group of the ghost batch for the fast search);
* **CPU seconds per valid block**: all process CPU time of all rounds, capped
  ones included, over the blocks found (an unbiased rate for a memoryless
  search), with the wall seconds and candidates per block beside it.

(Until protocol v3 this benchmark timed attempts per second in fixed windows;
with ResNet-18 on a CPU one window could hold nothing but advance steps and the
W_J evaluation, so its ratio depended on the window: 17.7x in 20 s runs, 4.1x in
60 s runs.) Use a difficulty a CPU reaches in seconds (``--k``; the README's
ResNet-18 setting is k = 4): the cost per block at the spec's k is the figure
here with its search part grown about 2^(k_spec - k)-fold.
"""
from __future__ import annotations

import argparse
import hashlib
import time
from types import SimpleNamespace

from node.argtypes import nonneg_int, positive_int

from . import common


def register(sub) -> None:
    p = sub.add_parser("mine", help="CPU seconds per valid block and per candidate, reference loop vs fast search",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, preset_default="tiny", seconds_default=120.0, runs_default=8)
    p.add_argument("--k", type=positive_int, default=None, help="difficulty (default: the spec's initial k)")
    p.add_argument("--acc-floor", type=nonneg_int, default=0,
                   help="the stand-in parents' claimed accuracy (correct on E; default 0: no floor)")
    p.add_argument("--groups", type=positive_int, default=None,
                   help="fast search: candidates per pass (default: per device)")
    p.add_argument("--channels-last", action="store_true",
                   help="fast search in channels_last layout (its own parameter copies; default off)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.set_defaults(func=run)


BENCH_MINER = hashlib.sha256(b"polchain-bench-mine/key").hexdigest()   # batches are bound to a key


def stand_in_job(i: int, k: int, acc_floor: int = 0):
    """A mining job on a stand-in parent: what mine() reads from a parent header is its hash
    (batches), post-state hash, height and timestamp (R and its epoch) and claimed accuracy (floor)."""
    from miner.reference import Job
    now = int(time.time() * 1000)
    tag = f"polchain-bench-mine/{i}".encode()
    parent = SimpleNamespace(hash=hashlib.sha256(tag).hexdigest(), state_hash=hashlib.sha256(b"state " + tag).hexdigest(),
                             height=0, timestamp_ms=now, acc_after=acc_floor)
    return Job(parent, k, BENCH_MINER, mtp_ms=now)


HEARTBEAT_S = 30.0     # a line on stderr this often inside a long round (ResNet-18 on a CPU: minutes)


def mine_round(miner, job, w, cap_s: float, device: str, label: str | None = None) -> dict:
    """One round: ``miner`` mines on ``job`` from W until it has a block or ``cap_s`` has passed; with
    ``label``, a progress line every HEARTBEAT_S seconds while it runs."""
    before = miner.progress.snapshot()
    common.sync_device(device)
    cpu0, t0 = time.process_time(), time.perf_counter()
    beat = [t0 + HEARTBEAT_S]

    def should_stop() -> bool:
        now = time.perf_counter()
        if label is not None and now >= beat[0]:
            beat[0] = now + HEARTBEAT_S
            common.progress(f"  {label}: {miner.progress.since(before)['attempts']} candidates so far, "
                            f"{now - t0:.0f} s of the {cap_s:g} s cap")
        return now - t0 >= cap_s

    found = miner.mine(job, w, should_stop=should_stop)
    common.sync_device(device)
    grew = miner.progress.since(before)
    return {"block": found is not None, "cpu_s": round(time.process_time() - cpu0, 4),
            "wall_s": round(time.perf_counter() - t0, 4), "candidates": grew["attempts"],
            "search_cpu_s": round(miner.progress.search_cpu_s - before.search_cpu_s, 4),
            "r_hits": grew["r_hits"], "restarts": grew["restarts"]}


def per_block(rounds: list[dict]) -> dict:
    """The steady-state figures of one miner's rounds (capped rounds count in every total)."""
    blocks = sum(r["block"] for r in rounds)
    cpu, wall = sum(r["cpu_s"] for r in rounds), sum(r["wall_s"] for r in rounds)
    cands, search = sum(r["candidates"] for r in rounds), sum(r["search_cpu_s"] for r in rounds)
    each = (lambda x, d=4: round(x / blocks, d)) if blocks else (lambda x, d=4: None)
    return {"blocks": blocks, "capped_rounds": len(rounds) - blocks, "cpu_s": round(cpu, 3),
            "cpu_s_per_block": each(cpu), "wall_s_per_block": each(wall), "candidates_per_block": each(cands, 1),
            "search_cpu_s_per_candidate": round(search / cands, 6) if cands else None,
            "search_share_of_cpu": round(search / cpu, 3) if cpu > 0 else None,
            "candidates_per_cpu_s": round(cands / cpu, 2) if cpu > 0 else None, "rounds": rounds}


def run(args) -> int:
    from consensus.training import genesis_state
    from miner.search import default_groups, make_miner, pick_device

    spec = common.load_spec(args)
    device = pick_device(args.device)
    data, data_note = common.bench_dataset(spec, args.data_dir)
    k = args.k or spec.difficulty.initial
    groups = args.groups or default_groups(spec, device)
    w = genesis_state(spec)
    miners = {"reference": make_miner("reference", spec, data, device=device, seed=args.seed),
              "fast": make_miner("fast", spec, data, device=device, seed=args.seed, groups=groups)}
    if args.channels_last:
        from miner.fast import FastSearch
        miners["fast"].search = FastSearch(miners["fast"].replayer, groups, channels_last=True)
    result = common.result_header("mine", preset=args.preset, arch=spec.model.arch, device=device, data=data_note,
                                  k=k, groups=groups, channels_last=bool(args.channels_last),
                                  batch_size=spec.training.batch_size, advance_steps=spec.proof.max_advance_steps,
                                  acc_floor=args.acc_floor, round_cap_s=args.seconds, rounds=args.runs,
                                  machine=common.machine_info(device))

    # warm-up: oneDNN/cuDNN primitive creation and allocator growth stay out of the measured rounds
    warm = max(1.0, min(args.seconds, 5.0))
    most = 2 * args.runs * args.seconds + 2 * warm
    common.progress(f"bench mine: {spec.model.arch} on {device} at k={k} (about 2^{k} candidates a block), "
                    f"{args.runs} rounds per miner, each until a block or {args.seconds:g} s: at most "
                    + (f"{most / 60:.0f} min" if most >= 120 else f"{most:.0f} s")
                    + (" (the spec's k: try --k 4 on a CPU)" if not args.k and k > 6 and device == "cpu" else ""))
    for name, m in miners.items():
        common.progress(f"warm-up {name} ({warm:.0f} s at most)")
        mine_round(m, stand_in_job(-1, k, args.acc_floor), w, warm, device)

    rounds: dict[str, list[dict]] = {"reference": [], "fast": []}
    for i in range(args.runs):
        order = ("reference", "fast") if i % 2 == 0 else ("fast", "reference")
        for name in order:
            r = mine_round(miners[name], stand_in_job(i, k, args.acc_floor), w, args.seconds, device,
                           label=f"round {i + 1}/{args.runs} {name}")
            rounds[name].append(r)
            common.progress(f"round {i + 1}/{args.runs} {name}: "
                            f"{'a block' if r['block'] else f'no block (cap {args.seconds:g} s)'} after "
                            f"{r['candidates']} candidates, {r['wall_s']:.1f} s ({r['cpu_s']:.1f} CPU s)")

    for name in rounds:
        result[name] = per_block(rounds[name])
    ref, fast = result["reference"], result["fast"]
    result["ratio_cpu_per_block"] = (common.ratio(ref["cpu_s_per_block"], fast["cpu_s_per_block"])
                                     if ref["cpu_s_per_block"] and fast["cpu_s_per_block"] else None)
    result["ratio_search_cost_per_candidate"] = (
        common.ratio(ref["search_cpu_s_per_candidate"], fast["search_cpu_s_per_candidate"])
        if ref["search_cpu_s_per_candidate"] and fast["search_cpu_s_per_candidate"] else None)
    result["load_average_after"] = common.load_average()
    return common.emit(result, args, table)


def table(res: dict) -> str:
    def f(v, fmt="{:.3g}"):
        return "-" if v is None else fmt.format(v)
    rows = []
    for name, label in (("reference", "reference (Algorithm 1)"), ("fast", f"fast (G={res['groups']})")):
        r = res[name]
        rows.append((label, f"{r['blocks']}/{r['blocks'] + r['capped_rounds']}", f(r["cpu_s_per_block"]),
                     f(r["wall_s_per_block"]), f(r["candidates_per_block"], "{:.0f}"),
                     f(r["search_cpu_s_per_candidate"] and r["search_cpu_s_per_candidate"] * 1000),
                     f(r["search_share_of_cpu"] and r["search_share_of_cpu"] * 100, "{:.0f}%")))
    lines = [
        f"polchain bench mine: preset {res['preset']} ({res['arch']}), device {res['device']}, k={res['k']}, "
        f"S={res['batch_size']}, J={res['advance_steps']}, floor {res['acc_floor']}",
        f"data: {res['data']}",
        f"machine: {common.machine_line(res['machine'])}",
        f"{res['rounds']} rounds per miner (one block each, capped at {res['round_cap_s']:g} s), alternating",
        "",
        common.format_table(["miner", "blocks", "CPU s/block", "wall s/block", "candidates/block",
                             "search CPU ms/candidate", "search share"], rows),
        "",
        f"reference / fast, CPU s per valid block: {f(res['ratio_cpu_per_block'])}x; "
        f"search cost per candidate: {f(res['ratio_search_cost_per_candidate'])}x",
    ]
    if not (res["reference"]["blocks"] and res["fast"]["blocks"]):
        lines.append("a miner found no block: lower --k or raise --seconds for a per-block figure")
    load_after = res.get("load_average_after")
    if load_after:
        lines.append(f"load average after: {load_after[0]}")
    return "\n".join(lines)
