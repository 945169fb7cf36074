"""`polchain bench mine`: attempts per second, reference loop vs fast search, side by side.

Both miners run in one process on the same data, from the same parent
post-state (the genesis weights) and with the same requirements R, in
alternating timed runs; the figures are medians over the runs. An *attempt* is
one candidate nonce (its mini-batch derived from parent, miner key and nonce)
judged against R: one canonical SGD step for the reference loop, one group of
the ghost batch for the fast search (whose per-pass canonical training step
and any confirmations are inside the timed time). Both run the protocol v2
search as in a node: a failed attempt becomes an advance step while the block
has fewer than J, and the accuracy floor is the parent's claim. Each run mines
on its own stand-in parent (a post-state hash, hence R, of its own; the same
for both miners), at the spec's initial difficulty unless --k says otherwise;
where R happens to be met the miners do their real confirmation and accuracy
work, and mining simply goes on. Once a trajectory holds J advance steps each
miner evaluates E once (can W_J still clear the floor?): with ResNet-18 on a CPU
that one evaluation is many reference attempts, so runs much shorter than a
minute understate the reference loop (measured: 20 s runs gave 17.7x per CPU
second, 60 s runs 4.1x).
"""
from __future__ import annotations

import argparse
import hashlib
import time
from types import SimpleNamespace

from . import common


def register(sub) -> None:
    p = sub.add_parser("mine", help="attempts/s of the reference loop and the fast search",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, preset_default="tiny", seconds_default=10.0, runs_default=3)
    p.add_argument("--k", type=int, default=None, help="difficulty (default: the spec's initial k)")
    p.add_argument("--groups", type=int, default=None, help="fast search: candidates per pass (default: per device)")
    p.add_argument("--channels-last", action="store_true",
                   help="fast search in channels_last layout (its own parameter copies; default off)")
    p.add_argument("--seed", type=int, default=0)
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


def measure(miner, job, w, seconds: float, device: str) -> tuple[float, int, float, float]:
    """(attempts/s, attempts, wall seconds, process CPU seconds) of one timed run of miner.mine
    from the parent's post-state W."""
    def body(should_stop) -> int:
        before = miner.progress.attempts
        miner.mine(job, w, should_stop=should_stop)   # a found block ends one call; go on
        return miner.progress.attempts - before
    cpu0 = time.process_time()
    attempts, elapsed = common.run_for(seconds, body, device)
    return attempts / elapsed, attempts, elapsed, time.process_time() - cpu0


def run(args) -> int:
    common.apply_threads(args.threads)
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
                                  batch_size=spec.training.batch_size,
                                  seconds_per_run=args.seconds, runs=args.runs, machine=common.machine_info(device))

    # warm-up: oneDNN/cuDNN primitive creation and allocator growth stay out of the timed runs
    warm = max(1.0, min(args.seconds, 5.0))
    for name, m in miners.items():
        common.progress(f"warm-up {name} ({warm:.0f} s)")
        measure(m, stand_in_job(-1, k), w, warm, device)

    rates: dict[str, list[float]] = {"reference": [], "fast": []}
    cpu_rates: dict[str, list[float]] = {"reference": [], "fast": []}
    counts: dict[str, list[int]] = {"reference": [], "fast": []}
    for i in range(args.runs):
        order = ("reference", "fast") if i % 2 == 0 else ("fast", "reference")
        for name in order:
            rate, n, dt, cpu = measure(miners[name], stand_in_job(i, k), w, args.seconds, device)
            rates[name].append(rate)
            cpu_rates[name].append(n / cpu if cpu > 0 else 0.0)
            counts[name].append(n)
            common.progress(f"run {i + 1}/{args.runs} {name}: {n} attempts in {dt:.1f} s = {rate:.2f}/s "
                            f"({cpu:.1f} CPU s)")

    for name in rates:
        # attempts per process-CPU-second: with one torch thread on a CPU device it is robust to
        # other processes sharing the cores; with more threads it also counts OpenMP spin-waiting.
        result[name] = {"attempts_per_s": common.summary(rates[name]),
                        "attempts_per_cpu_s": common.summary(cpu_rates[name]), "attempts": counts[name]}
    result["ratio"] = common.ratio(result["fast"]["attempts_per_s"]["median"],
                                   result["reference"]["attempts_per_s"]["median"])
    result["ratio_runs"] = [common.ratio(f, r) for f, r in zip(rates["fast"], rates["reference"])]
    result["ratio_cpu"] = common.ratio(result["fast"]["attempts_per_cpu_s"]["median"],
                                       result["reference"]["attempts_per_cpu_s"]["median"])
    result["load_average_after"] = common.load_average()
    return common.emit(result, args, table)


def table(res: dict) -> str:
    rows = []
    for name, label in (("reference", "reference (Algorithm 1)"), ("fast", f"fast (G={res['groups']})")):
        r = res[name]["attempts_per_s"]
        rows.append((label, r["median"], r["min"], r["max"], res[name]["attempts_per_cpu_s"]["median"],
                     " ".join(f"{v:g}" for v in r["runs"])))
    lines = [
        f"polchain bench mine: preset {res['preset']} ({res['arch']}), device {res['device']}, k={res['k']}, "
        f"S={res['batch_size']}",
        f"data: {res['data']}",
        f"machine: {common.machine_line(res['machine'])}",
        f"{res['runs']} runs of {res['seconds_per_run']:g} s per miner, alternating; medians",
        "",
        common.format_table(["miner", "attempts/s", "min", "max", "per CPU s", "runs (attempts/s)"], rows),
        "",
        f"ratio fast / reference: {res['ratio']}x (per run: {', '.join(f'{r}x' for r in res['ratio_runs'])}; "
        f"per CPU second: {res['ratio_cpu']}x)",
    ]
    load_after = res.get("load_average_after")
    if load_after:
        lines.append(f"load average after: {load_after[0]}")
    return "\n".join(lines)
