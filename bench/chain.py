"""`polchain bench chain`: mine a chain solo and draw its learning curve next to plain SGD.

``--blocks`` blocks are mined one after another into a ``node.chain.Chain`` in
a temp datadir, as ``polchain mine`` does (``node.mining.mine_on_tip``: fast
miner, real timestamps, every block validated by ``Chain.submit``, the
difficulty retargeted by the spec's rule). Per block it records the height, the
interval (timestamp minus the parent's; block 1's parent is genesis, whose
timestamp is fixed by the spec, so block 1 shows its own wall time), the
difficulty k, the attempts, the wall time (mining + building + validating), and
the canonical SGD steps the miner took.

Canonical steps are counted by wrapping ``Replayer.step`` on the miner's
replayer: every step the miner computed (attempts of the reference loop; for the
fast miner one per pass of G candidates plus one per confirmation of a predicted
hit), i.e. the gradient-step *compute* the chain spent. Under protocol v3 the
steps that *stuck* are exactly those in the chain: a block's post-state is its
parent's advanced by its j advance steps and its winning step, one per nonce in
its header; their running total is ``effective_steps``.

After mining (so the chain's timestamps are not stretched by it), the post-state
W' of every block (kept by the archival chain) is evaluated on the FULL test
split (not only E) in eval mode. Then the same model is trained from genesis by plain SGD (same lr,
batch size S, random batches, no consensus) for as many canonical steps as the
chain took, ``--sgd-runs`` times with different batch seeds, evaluated at the same
step counts (mean, and the min..max band), so the cost of consensus on learning
is visible. The figure (PNG and SVG, matplotlib, imported only here)
puts the accuracy lines over the block-interval bars, paper-style, and plots
accuracy against gradient steps below.

A long run (ResNet-18 on a CPU: hours) can be stopped and resumed. ``--datadir DIR``
keeps the chain in DIR with the miner's key and one JSON line per mined block
(``bench-chain-rows.jsonl``, appended as each block is accepted); a later run with
the same DIR and spec goes on from the tip until the chain has ``--blocks`` blocks.
``--minutes M`` stops mining after M minutes (the block under way is given up) and
Ctrl-C stops it at once; either way the blocks mined so far are evaluated and
reported, and the figures say how many of the requested blocks there are.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from consensus.errors import Verdict

from node.argtypes import nonneg_int, positive_float, positive_int
from node.devices import device_arg
from node.threads import threads_arg

from . import common


def register(sub) -> None:
    p = sub.add_parser("chain", help="mine N blocks solo; learning curve vs plain SGD (figure)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_spec_arguments(p, "tiny")
    p.add_argument("--blocks", type=positive_int, default=50,
                   help="blocks in the chain at the end (with --datadir: counting those mined before)")
    p.add_argument("--datadir", type=Path, default=None,
                   help="keep the chain (and the miner's key and per-block rows) here; a datadir from an earlier "
                        "run goes on from its tip (default: a temp dir, removed after)")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="stop mining after this many minutes and report the blocks so far (Ctrl-C does it at once)")
    p.add_argument("--device", default="cpu", type=device_arg, help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--miner", choices=("fast", "reference"), default="fast")
    p.add_argument("--groups", type=positive_int, default=None, help="fast miner: candidates per pass")
    p.add_argument("--first-hit", action="store_true",
                   help="publish the first R hit (the default fills the block's J advance steps first)")
    p.add_argument("--threads", type=threads_arg, default=1,
                   help="torch CPU threads (default 1: on a loaded 2-core machine 2 threads run far slower)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="miner seed")
    p.add_argument("--sgd-seed", type=nonneg_int, default=1, help="seed of the first plain-SGD run's batches")
    p.add_argument("--sgd-runs", type=nonneg_int, default=3,
                   help="plain-SGD runs (seeds sgd-seed, +1, ...): mean, and the min..max band in the figure")
    p.add_argument("--dataset-dir", "--data-dir", dest="data_dir", type=Path, default=None,
                   help="where CIFAR-10 lives, if it does (--data-dir: the old name)")
    p.add_argument("--k", type=positive_int, default=None, metavar="K",
                   help="lower (or raise) the difficulty for this run: sets difficulty.initial and .minimum to K "
                        "(e.g. ResNet-18 on a CPU); the output says so")
    p.add_argument("--held-out", choices=("auto", "full", "beyond-e"), default="auto",
                   help="test images the blocks' models are scored on: the full test split, or the test split "
                        "without E (its first evaluation.size images, which the accuracy rule selects on); auto: "
                        "without E when E is 10%% or more of the test split (e.g. the real CIFAR-10 sample)")
    p.add_argument("--sgd-points", type=positive_int, default=40,
                   help="plain-SGD curve: evaluations besides the blocks' step counts (each is a pass over the "
                        "held-out images: lower it for ResNet-18 on a CPU)")
    common.add_output_arguments(p, figure="chain-<preset>")
    p.set_defaults(func=run)


# -- evaluation on held-out test images -------------------------------------------------
def test_accuracy(replayer, state=None, chunk: int = 500, start: int = 0) -> float:
    """Share of the test split from image ``start`` on predicted right, eval mode (running BN statistics)."""
    import torch

    from consensus.data import normalize
    if state is not None:
        replayer.load(state)
    ds, spec = replayer.dataset, replayer.spec
    model = replayer.model
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(start, ds.test_x.shape[0], chunk):
            x = normalize(ds.test_x[i:i + chunk], spec.mean, spec.std).to(replayer.device)
            y = ds.test_y[i:i + chunk].to(torch.int64).to(replayer.device)
            correct += int((model(x).argmax(dim=1) == y).sum())
    return correct / (ds.test_x.shape[0] - start)


def held_out_start(spec, choice: str = "auto") -> int:
    """First test image scored: 0 (full split) or evaluation.size (E excluded; E = test[:size])."""
    e, n = spec.evaluation.size, spec.dataset.test_size
    if choice == "beyond-e" or (choice == "auto" and 10 * e >= n):
        if e >= n:
            raise ValueError(f"no test image outside E ({e} of {n})")
        return e
    return 0


class StepCounter:
    """Counts calls to one Replayer's ``step`` and their CPU seconds (instance attribute shadows the method)."""

    def __init__(self, replayer, start: int = 0):
        self.n = start                  # steps of earlier runs (--datadir); cpu_s counts this run's only
        self.cpu_s = 0.0
        inner = replayer.step

        def step(indices):
            self.n += 1
            c0 = time.process_time()
            try:
                return inner(indices)
            finally:
                self.cpu_s += time.process_time() - c0
        replayer.step = step


def plain_sgd(spec, data, device: str, checkpoints: list[int], seed: int, start: int = 0) -> dict[int, float]:
    """Train from genesis by plain SGD (the canonical step on random batches); accuracy at each checkpoint."""
    from consensus.training import Replayer, genesis_state
    r = Replayer(spec, data, device)
    r.load(genesis_state(spec))
    rng = random.Random(seed)
    n, s = spec.dataset.train_size, spec.training.batch_size
    want = sorted(set(checkpoints))
    out: dict[int, float] = {}
    done = 0
    for target in want:
        while done < target:
            r.step(tuple(rng.sample(range(n), s)))
            done += 1
        out[target] = test_accuracy(r, start=start)     # eval mode: parameters and running statistics untouched
    return out


# -- the benchmark ----------------------------------------------------------------------
def run(args) -> int:
    res = measure_chain(args)
    return common.emit_with_figures(res, args, table, f"chain-{args.preset}", draw)


def measure_chain(args) -> dict:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from consensus.proof import redraw_epoch
    from consensus.training import Replayer, genesis_state
    from miner.search import make_miner, pick_device
    from node.chain import Chain
    from node.keys import load_or_create_key
    from node.mining import mine_on_tip

    spec = common.load_spec(args)
    k_preset = spec.difficulty.initial
    if args.k is not None:
        spec = spec.with_difficulty(args.k)
        common.progress(f"difficulty lowered for this run: k = {args.k} (initial and minimum; the spec says "
                        f"{k_preset}); everything else as {spec.name}")
    start = held_out_start(spec, args.held_out)
    device = pick_device(args.device)
    data, data_note = common.bench_dataset(spec, args.data_dir)
    keep = args.datadir is not None
    root = Path(args.datadir) if keep else Path(tempfile.mkdtemp(prefix="polchain-bench-chain-")) / "chain"
    result = common.result_header("chain", preset=args.preset, arch=spec.model.arch, data=data_note,
                                  data_generated=data_note == common.GENERATED_CIFAR, device=device,
                                  data_label=data_label(spec, data_note),
                                  miner=args.miner, advance_first=not args.first_hit, blocks_requested=args.blocks, lr=spec.training.lr,
                                  batch_size=spec.training.batch_size, eval_size=spec.evaluation.size,
                                  test_size=spec.dataset.test_size, k0=spec.difficulty.initial,
                                  k_spec=k_preset, k_lowered=args.k is not None and args.k < k_preset,
                                  held_out=[start, spec.dataset.test_size], held_out_size=spec.dataset.test_size - start,
                                  redraw_interval_s=spec.proof.redraw_interval_ms / 1000,
                                  max_advance_steps=spec.proof.max_advance_steps,
                                  target_interval_s=spec.difficulty.target_interval_ms / 1000,
                                  machine=common.machine_info(device))
    try:
        chain = Chain(spec, root, data, archival=True)
        rows = earlier_rows(root, chain) if keep else []
        key = load_or_create_key(root / KEY_FILE) if keep else Ed25519PrivateKey.generate()
        miner = make_miner(args.miner, spec, data, device=device, seed=args.seed + len(rows), groups=args.groups,
                           advance_first=not args.first_hit)
        result["groups"] = getattr(miner, "groups", None)
        result["resumed_at"] = len(rows)
        if rows:
            common.progress(f"{root}: {len(rows)} blocks mined by earlier runs; going on from height {len(rows)}")
        steps = StepCounter(miner.replayer, start=rows[-1]["steps"] if rows else 0)
        effective = rows[-1]["effective_steps"] if rows else 0
        deadline = time.monotonic() + 60 * args.minutes if args.minutes else None
        stopped = None
        while len(rows) < args.blocks:
            if deadline is not None and time.monotonic() > deadline:
                stopped = f"--minutes {args.minutes:g}"
                break
            t0 = time.perf_counter()
            tip = chain.tip()
            p0 = miner.progress.snapshot()
            c0, e0, n0 = time.process_time(), steps.cpu_s, steps.n
            try:
                mined = mine_on_tip(chain, miner, key, should_stop=lambda: deadline is not None and
                                    time.monotonic() > deadline)
            except KeyboardInterrupt:
                stopped = "Ctrl-C"
                break
            if mined is None:                       # --minutes ran out during the block: given up
                continue
            block, found = mined
            mine_cpu = time.process_time() - c0
            header = block.header
            mine_s = time.perf_counter() - t0
            out = chain.submit(block)
            if out.status != Verdict.ACCEPTED:
                raise RuntimeError(f"own block rejected: {out.code} {out.detail}")
            wall = time.perf_counter() - t0
            effective += len(header.nonces)
            grew = miner.progress.since(p0)
            r_hits = grew["r_hits"]                         # R hits the accuracy check was run on; the last passed
            interval = (header.timestamp_ms - tip.header.timestamp_ms) / 1000 if tip.height > 0 else wall
            rows.append({"height": header.height, "hash": header.hash, "k": header.difficulty,
                         "attempts": found.attempts, "interval_s": round(interval, 3), "mine_s": round(mine_s, 3),
                         "wall_s": round(wall, 3), "steps": steps.n, "effective_steps": effective,
                         "block_steps": len(header.nonces), "acc_e_parent": tip.header.acc_after,
                         "acc_e_after": header.acc_after, "r_hits": r_hits, "acc_pass_rate": round(1 / r_hits, 4),
                         "acc_floor_failed": grew["acc_floor_failed"],
                         "acc_borderline_failed": grew["acc_borderline_failed"], "restarts": grew["restarts"],
                         "redraw_epoch": redraw_epoch(spec, tip.header.timestamp_ms, header.timestamp_ms),
                         "mine_cpu_s": round(mine_cpu, 3), "exact_steps": steps.n - n0,
                         "exact_cpu_s": round(steps.cpu_s - e0, 3)})
            if keep:
                with open(root / ROWS_FILE, "a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
            common.progress(f"block {header.height} of {args.blocks}: k={header.difficulty} {found.attempts} attempts {wall:.2f} s, "
                            f"{len(header.nonces)} steps in the block, {steps.n} canonical steps so far, acc on E "
                            f"{header.acc_after}/{spec.evaluation.size}, accuracy rule passed 1 of {r_hits} R hits "
                            f"({rows[-1]['acc_floor_failed']} below the floor, {rows[-1]['acc_borderline_failed']} "
                            f"borderline; {rows[-1]['restarts']} restarts)")
        if stopped:
            common.progress(f"mining stopped by {stopped} at {len(rows)} of {args.blocks} blocks")
        if not rows:
            raise RuntimeError(f"no block mined ({stopped}): nothing to evaluate")
        result.update(stopped_by=stopped)

        # the tip model of every block on the held-out test images (after mining: timestamps stay honest)
        common.progress(f"evaluating every block's model on test[{start}:]")
        ev = Replayer(spec, data, device)
        genesis_acc = test_accuracy(ev, genesis_state(spec), start=start)
        for row in rows:
            b = chain.store.get(row["hash"])
            row["test_accuracy"] = round(test_accuracy(ev, chain.states.load(b.header.state_hash), start=start), 4)
        chain.store.close()

        common.progress(f"plain SGD from genesis for {steps.n} steps (lr {spec.training.lr}, "
                        f"batch {spec.training.batch_size})")
        grid = sorted({r["steps"] for r in rows} | {r["effective_steps"] for r in rows}
                      | {round(steps.n * j / args.sgd_points) for j in range(1, args.sgd_points + 1)})
        t0 = time.perf_counter()
        runs = []
        for j in range(max(1, args.sgd_runs)):
            one = plain_sgd(spec, data, device, [g for g in grid if g > 0], args.sgd_seed + j, start)
            one[0] = genesis_acc
            runs.append(one)
        sgd = {g: statistics.fmean(r[g] for r in runs) for g in runs[0]}
        sgd_lo = {g: min(r[g] for r in runs) for g in runs[0]}
        sgd_hi = {g: max(r[g] for r in runs) for g in runs[0]}
        sgd_s = time.perf_counter() - t0
        for row in rows:
            row["sgd_accuracy_same_steps"] = round(sgd[row["steps"]], 4)
            row["sgd_accuracy_effective_steps"] = round(sgd[row["effective_steps"]], 4)
            row["sgd_range_same_steps"] = [round(sgd_lo[row["steps"]], 4), round(sgd_hi[row["steps"]], 4)]

        n = len(rows)
        intervals = [r["interval_s"] for r in rows[1:]] or [rows[0]["interval_s"]]
        result.update(
            blocks=n, duration_s=round(sum(r["wall_s"] for r in rows), 1), sgd_seconds=round(sgd_s, 1),
            start_accuracy=round(genesis_acc, 4), end_accuracy=rows[-1]["test_accuracy"],
            best_accuracy=max(r["test_accuracy"] for r in rows), chance=1 / spec.model.num_classes,
            sgd_end_accuracy=round(sgd[steps.n], 4), sgd_end_accuracy_effective=round(sgd[rows[-1]["effective_steps"]], 4),
            total_steps=steps.n, effective_steps=rows[-1]["effective_steps"],
            total_attempts=sum(r["attempts"] for r in rows),
            # the useful-work fraction: the steps the chain kept over the work done to find them -- per candidate
            # (every batch the miner judged), per exact step computed, and in CPU seconds (search + exact steps +
            # tickets, against the kept steps at the mean CPU cost of an exact step)
            useful_work=useful_work(rows, steps.n),
            interval_s=common.summary(intervals), wall_s=common.summary([r["wall_s"] for r in rows]),
            attempts=common.summary([r["attempts"] for r in rows], 1),
            attempts_over_2k=common.summary([r["attempts"] / 2 ** r["k"] for r in rows]),
            k_final=rows[-1]["k"], k_counts={str(k): sum(1 for r in rows if r["k"] == k) for k in sorted({r["k"] for r in rows})},
            sgd_runs=len(runs), sgd_end_range=[round(sgd_lo[steps.n], 4), round(sgd_hi[steps.n], 4)],
            per_block=rows, sgd_curve=[[s, round(a, 4)] for s, a in sorted(sgd.items())],
            sgd_curve_range=[[s, round(sgd_lo[s], 4), round(sgd_hi[s], 4)] for s in sorted(sgd)],
            r_hits=sum(r["r_hits"] for r in rows), acc_pass_rate=round(n / sum(r["r_hits"] for r in rows), 4),
            acc_floor_failed=sum(r["acc_floor_failed"] for r in rows),
            acc_borderline_failed=sum(r["acc_borderline_failed"] for r in rows),
            restarts=sum(r["restarts"] for r in rows),
            acc_pass_rate_by_height=pass_rate_by_height(rows),
            redraw_blocks=[r["height"] for r in rows if r["redraw_epoch"] > 0 and r["height"] > 1],
            longest_interval=max(rows[1:] or rows, key=lambda r: r["interval_s"])["interval_s"],
            load_average_after=common.load_average())
        return result
    finally:
        if not keep:
            shutil.rmtree(root.parent, ignore_errors=True)


ROWS_FILE = "bench-chain-rows.jsonl"     # --datadir: one JSON object per mined block, appended as it is accepted
KEY_FILE = "bench-miner.key"             # --datadir: the miner's key, so a resumed chain is one miner's


def earlier_rows(root: Path, chain) -> list[dict]:
    """The rows of the blocks an earlier run mined into ``root``, checked against its best chain (a row whose
    block is not the chain's at its height, or a chain with blocks and no rows, is an error)."""
    path = root / ROWS_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    tip = chain.tip().height
    if len(rows) != tip or any(chain.store.hash_at(r["height"]) != r["hash"] for r in rows):
        raise RuntimeError(f"{root}: its chain has {tip} blocks and {path.name} {len(rows)} rows that do not "
                           "match them: give another --datadir")
    return rows


def useful_work(rows: list[dict], exact_steps: int) -> dict:
    """The steps the chain kept over the work done to find them -- per candidate (every batch the miner
    judged), per exact step computed, and in CPU seconds (search + exact steps + tickets, against the kept
    steps at the mean CPU cost of an exact step; over the blocks whose row has the CPU figures)."""
    kept = rows[-1]["effective_steps"]
    timed = [r for r in rows if r.get("mine_cpu_s") is not None and r.get("exact_steps")]
    mining_cpu = sum(r["mine_cpu_s"] for r in timed)
    step_cpu = sum(r["exact_cpu_s"] for r in timed) / sum(r["exact_steps"] for r in timed) if timed else None
    return dict(per_candidate=round(kept / sum(r["attempts"] for r in rows), 5),
                per_exact_step=round(kept / exact_steps, 4) if exact_steps else None,
                cpu=round(sum(r["block_steps"] for r in timed) * step_cpu / mining_cpu, 5) if timed and mining_cpu else None,
                cpu_blocks=len(timed), mining_cpu_s=round(mining_cpu, 1),
                exact_step_cpu_s=round(step_cpu, 5) if step_cpu is not None else None)


def data_label(spec, data_note: str) -> str:
    """What the figure may call the data: never "CIFAR-10" for a sample or for generated images."""
    d = spec.dataset
    if data_note == common.GENERATED_CIFAR:
        return f"generated images, NOT CIFAR-10 ({d.train_size:,} train / {d.test_size:,} test)"
    if d.id == "cifar10" and (d.train_size, d.test_size) != (50000, 10000):
        return f"real CIFAR-10 sample ({d.train_size:,} train / {d.test_size:,} test)"
    return f"{d.id} ({d.train_size:,} train / {d.test_size:,} test)"


def held_out_label(res: dict) -> str:
    a, n = res.get("held_out") or (0, None)
    return "full test split" if a == 0 else f"held-out test[{a}:{n}], E excluded"


def pass_rate_by_height(rows: list[dict], bins: int = 10) -> list[dict]:
    """The accuracy rule's pass rate (blocks / R hits checked) over ``bins`` equal ranges of height."""
    size = max(1, -(-len(rows) // bins))
    out = []
    for i in range(0, len(rows), size):
        part = rows[i:i + size]
        hits = sum(r["r_hits"] for r in part)
        out.append({"heights": [part[0]["height"], part[-1]["height"]], "r_hits": hits, "passed": len(part),
                    "pass_rate": round(len(part) / hits, 4)})
    return out


# -- the figure ------------------------------------------------------------------------------
def draw(res: dict, out_dir: Path) -> list[Path]:
    """chain-<preset>.png and .svg: accuracy over block-interval bars; accuracy vs gradient steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["per_block"]
    h = [0] + [r["height"] for r in rows]
    acc = [100 * res["start_accuracy"]] + [100 * r["test_accuracy"] for r in rows]
    sgd_same = [100 * res["start_accuracy"]] + [100 * r["sgd_accuracy_same_steps"] for r in rows]
    sgd_eff = [100 * res["start_accuracy"]] + [100 * r["sgd_accuracy_effective_steps"] for r in rows]

    fig, (ax1, ax3) = plt.subplots(2, 1, figsize=(9, 8.5), gridspec_kw={"height_ratios": [3, 2]})
    ax2 = ax1.twinx()
    ax2.bar([r["height"] for r in rows], [r["interval_s"] for r in rows], color="#c9d6ea", width=0.8,
            label="block interval (s)")
    ax2.set_ylabel("block interval (s)")
    ax1.set_zorder(ax2.get_zorder() + 1)
    ax1.patch.set_visible(False)
    ax1.plot(h, acc, "o-", color="#1f4e99", ms=3.5, lw=1.8, label=f"chain: tip model ({held_out_label(res)})")
    n_sgd = res.get("sgd_runs", 1)
    ax1.plot(h, sgd_same, "--", color="#d1495b", lw=1.5,
             label=f"plain SGD, same canonical steps (mean of {n_sgd})")
    if all("sgd_range_same_steps" in r for r in rows) and n_sgd > 1:
        lo = [100 * res["start_accuracy"]] + [100 * r["sgd_range_same_steps"][0] for r in rows]
        hi = [100 * res["start_accuracy"]] + [100 * r["sgd_range_same_steps"][1] for r in rows]
        ax1.fill_between(h, lo, hi, color="#d1495b", alpha=0.15, lw=0, label="plain SGD, min..max of the runs")
    ax1.plot(h, sgd_eff, ":", color="#edae49", lw=1.8, label="plain SGD, same effective steps")
    ax1.axhline(100 * res["chance"], color="grey", lw=0.8, ls="-.", label="chance")
    ax1.set_xlabel("block height")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_xlim(-0.5, h[-1] + 0.8)
    ks = sorted({r["k"] for r in rows})
    kk = f"k {ks[0]}..{ks[-1]}" if len(ks) > 1 else f"k={ks[0]}"
    if res.get("k_lowered"):
        kk += f" (lowered for a CPU; spec {res['k_spec']})"
    of = f" of {res['blocks_requested']} (stopped)" if res["blocks"] < res.get("blocks_requested", res["blocks"]) else ""
    title = (f"polchain {res['preset']} ({res['arch']}): {res['blocks']} blocks{of} mined solo in "
             f"{res['duration_s']:.0f} s, {kk}")
    if res.get("data_label"):
        title += "\n" + res["data_label"]
    ax1.set_title(title, fontsize=10)
    lines1, labels1 = ax1.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax1.legend(lines1 + lines2, labels1 + labels2, loc="upper left", fontsize=8, framealpha=0.9)

    curve = res["sgd_curve"]
    ax3.plot([s for s, _ in curve], [100 * a for _, a in curve], "-", color="#d1495b", lw=1.5,
             label=f"plain SGD (random batches, mean of {n_sgd})")
    band = res.get("sgd_curve_range")
    if band and n_sgd > 1:
        ax3.fill_between([b[0] for b in band], [100 * b[1] for b in band], [100 * b[2] for b in band],
                         color="#d1495b", alpha=0.15, lw=0)
    ax3.plot([0] + [r["steps"] for r in rows], acc, "o-", color="#1f4e99", ms=3, lw=1.5,
             label="chain, vs canonical steps computed")
    ax3.plot([0] + [r["effective_steps"] for r in rows], acc, "s-", color="#30a46c", ms=2.5, lw=1,
             alpha=0.8, label="chain, vs steps that stuck")
    ax3.axhline(100 * res["chance"], color="grey", lw=0.8, ls="-.")
    ax3.set_xlabel(f"gradient steps (lr {res['lr']}, batch {res['batch_size']})")
    ax3.set_ylabel("test accuracy (%)")
    ax3.legend(loc="upper left", fontsize=8, framealpha=0.9)
    return common.save_figure(fig, res, out_dir, f"chain-{res['preset']}")


def table(res: dict) -> str:
    rows = [(r["height"], r["k"], r["interval_s"], r["attempts"], r["steps"], r["effective_steps"],
             f"{100 * r['test_accuracy']:.1f}", f"{100 * r['sgd_accuracy_same_steps']:.1f}",
             f"{r['acc_e_after']}/{res['eval_size']}", f"1/{r.get('r_hits', '?')}", r.get("redraw_epoch", ""))
            for r in res["per_block"]]
    lines = [
        f"polchain bench chain: preset {res['preset']} ({res['arch']}), {res['blocks']} blocks mined solo, "
        f"miner {res['miner']} on {res['device']}",
        f"data: {res.get('data_label', res['data'])} from {res['data']}"
        + (" -- NOT CIFAR-10: generated images of the same shape" if res.get("data_generated") else ""),
        *([f"difficulty lowered for this run: k = {res['k0']} (the spec says {res['k_spec']})"]
          if res.get("k_lowered") else []),
        f"machine: {common.machine_line(res['machine'])}",
        "",
        common.format_table(["height", "k", "interval s", "attempts", "steps", "stuck", "test acc %", "SGD acc %",
                             "acc on E", "acc rule", "R epoch"], rows),
        "",
        *([f"mining stopped by {res['stopped_by']} at {res['blocks']} of {res['blocks_requested']} blocks"]
          if res.get("stopped_by") else []),
        *([f"resumed: blocks 1-{res['resumed_at']} were mined by earlier runs into this datadir"]
          if res.get("resumed_at") else []),
        f"duration {res['duration_s']:.1f} s (mining + validating); block interval median {res['interval_s']['median']} s "
        f"(target {res['target_interval_s']:g} s); attempts per block median {res['attempts']['median']:g}, "
        f"attempts / 2^k median {res['attempts_over_2k']['median']}",
        f"test accuracy ({held_out_label(res)}, {res.get('held_out_size', res['test_size'])} images): genesis {100 * res['start_accuracy']:.1f}% -> "
        f"tip {100 * res['end_accuracy']:.1f}% (best {100 * res['best_accuracy']:.1f}%; chance "
        f"{100 * res['chance']:.0f}%)",
        f"plain SGD ({res.get('sgd_runs', 1)} runs), same {res['total_steps']} canonical steps: "
        f"{100 * res['sgd_end_accuracy']:.1f}% mean"
        + (f" ({100 * res['sgd_end_range'][0]:.1f}..{100 * res['sgd_end_range'][1]:.1f})" if res.get("sgd_end_range") else "")
        + "; "
        f"same {res['effective_steps']} effective steps: {100 * res['sgd_end_accuracy_effective']:.1f}%",
    ]
    if res.get("useful_work"):
        u = res["useful_work"]
        lines.append(f"useful work: {res['effective_steps']} steps kept in the chain = {100 * u['per_candidate']:.2f}% of "
                     f"{res['total_attempts']} candidates judged, {100 * (u['per_exact_step'] or 0):.1f}% of "
                     f"{res['total_steps']} exact steps computed, {100 * (u['cpu'] or 0):.2f}% of "
                     f"{u['mining_cpu_s']} CPU-s of mining (search + exact steps + tickets)")
    if "acc_pass_rate" in res:
        lines.append(f"accuracy rule: passed {res['blocks']} of {res['r_hits']} R hits ({100 * res['acc_pass_rate']:.1f}%); "
                     "by height: " + ", ".join(f"{b['heights'][0]}-{b['heights'][1]} {100 * b['pass_rate']:.0f}%"
                                                for b in res["acc_pass_rate_by_height"]))
        if "acc_floor_failed" in res:
            lines.append(f"R hits not published: {res['acc_floor_failed']} below the floor, "
                         f"{res['acc_borderline_failed']} with too many borderline predictions; "
                         f"{res['restarts']} trajectories restarted from the parent's state")
        lines.append(f"longest block interval {res['longest_interval']} s (block 1 excluded when there are others); "
                     f"R re-drawn (epoch > 0, every {res['redraw_interval_s']:g} s after the parent) in blocks: "
                     f"{res['redraw_blocks'] or 'none'} (block 1 not counted: genesis has the spec's fixed timestamp)")
    if res.get("figures"):
        lines.append("figures: " + ", ".join(res["figures"]))
    if res.get("load_average_after"):
        lines.append(f"load average after: {res['load_average_after'][0]} (figures taken under this load)")
    return "\n".join(lines)
