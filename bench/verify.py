"""`polchain bench verify`: time to fully validate one block, stage by stage, and the mining asymmetry.

One block is mined on genesis with the fast miner (``node.mining.mine_on_tip``), then submitted
to a fresh ``node.chain.Chain`` (temp datadir) ``--runs`` times, after one untimed warm-up
submission; every submission is the node's real pipeline (``Chain.submit``: header rules,
records, the proof replayed from the parent's stored post-state, store). The stages are timed
inside that pipeline through the chain's timing hook (``Chain.stage_timer``, called with each stage's name):

* ``header``: syntax, limits, nonce count, Ed25519 signature, context (``validate_header``)
* ``records``: the records commitment and the records' rules
* ``load_state``: the parent's post-state read from the state store, decoded (safetensors) and
  checked against the parent's state_hash
* ``replay``: load W'_parent, the j advance steps and the winning step on their derived
  batches, R checked with the validators' band (``check_requirements``), on the spec's
  canonical thread count
* ``state_hash``: the replayed post-state copied out, checked finite and hashed against the
  header's state_hash (``check_state_commitment``)
* ``accuracy``: the ONE evaluation of W' on E (the parent's accuracy is its claim)
* ``store``: the post-state written (temp file, fsync, rename), the block recorded, the tip moved
* ``other``: the rest of ``Chain.submit`` (bookkeeping)

``total_seconds`` is the median of the whole ``Chain.submit``. Medians of wall time and of
process CPU time are reported per stage (CPU time is robust to other processes sharing the
cores only with one torch thread: ``--threads 1``). The validating replayer is long-lived, as in
a node; its accuracy cache (by state hash) is emptied before each submission, so every timed
submission evaluates W' as a node does for a block it has not seen.

The asymmetry: expected mining time at the spec's initial difficulty k0 is
``(2^k0 * t_attempt + t_confirm) / p_acc`` -- 2^k0 candidate nonces until one meets R, the
canonical confirmation (one step and one evaluation: a replayed step and the accuracy stage
above) for each R-hit, and 1/p_acc R-hits until one also passes the miner's accuracy policy
against its parent's claim. ``t_attempt`` is measured with the fast miner at k0 (``--seconds``)
on the block as parent, ``p_acc`` by sampling random steps from the block's post-state
(``--acc-samples``), the block's claim as the floor. The ratio of that to ``total_seconds`` is
what makes the scheme work: finding is expensive, checking is a few steps and one evaluation.

``--preset cifar10-resnet18``: CIFAR-10 is never downloaded by a benchmark; without it in
``--data-dir`` the data are GENERATED with CIFAR-10's shapes and sizes (uint8 noise around a
colour per class, so that a model can learn them and a step can improve accuracy), and the
output says so; a step or an evaluation costs the same on any pixel values. The validated block
is mined at ``--k`` (default 2 for resnet18, k0 for tiny) on a copy of the spec whose initial
difficulty is that k, so one can be found on a CPU: validation cost does not depend on k (k
weights are compared after the steps).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from consensus.errors import Verdict
from node.argtypes import fraction, nonneg_int, positive_int

from . import common

STAGES = ("header", "records", "load_state", "replay", "state_hash", "accuracy", "store", "other")


def register(sub) -> None:
    p = sub.add_parser("verify", help="time to validate one block, stage by stage; mining/validation asymmetry",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, preset_default="tiny", seconds_default=10.0, runs_default=5)
    p.add_argument("--k", type=positive_int, default=None,
                   help="difficulty of the validated block (default: k0 for tiny, 2 for cifar10-resnet18)")
    p.add_argument("--acc-samples", type=positive_int, default=None,
                   help="random steps from W sampled for p_acc (default 100 tiny, 4 resnet18)")
    p.add_argument("--p-acc", type=fraction, default=None, help="use this p_acc instead of sampling it")
    p.add_argument("--validate-device", default="cpu",
                   help="device of the validating replayer (default cpu: node/chain.py validates on the CPU)")
    p.add_argument("--groups", type=positive_int, default=None,
                   help="fast miner: candidates per pass (default: per device)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--figures", type=Path, default=None,
                   help="write verify-<preset>.png/.svg here (default: --out, else no figure)")
    p.add_argument("--no-figure", action="store_true")
    p.set_defaults(func=run)


# -- stage timers ------------------------------------------------------------------------
class StageClock:
    """Wall and process-CPU seconds per stage: ``Chain.stage_timer`` (the pipeline's timing hook)."""

    def __init__(self, device: str | None = None):
        self.device = device
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        common.sync_device(self.device)
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            common.sync_device(self.device)
            self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - w0
            self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - c0


# -- the pieces --------------------------------------------------------------------------
LEARNABLE_NOTE = ("generated (CIFAR-10 unavailable): CIFAR-10's shapes and sizes, uint8 noise around a colour "
                  "per class (learnable)")


def learnable_generated(train: int, test: int, seed: int = 0):
    """CIFAR-shaped uint8 images: a random colour per class plus uniform noise; random labels 0..9."""
    import torch

    from consensus.data import Dataset
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(40, 216, (10, 3), generator=g, dtype=torch.int16)

    def split(n: int):
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.empty((n, 3, 32, 32), dtype=torch.uint8)
        for i in range(0, n, 5000):
            j = min(n, i + 5000)
            noise = torch.randint(-60, 61, (j - i, 3, 32, 32), generator=g, dtype=torch.int16)
            x[i:j] = (colours[y[i:j]].view(-1, 3, 1, 1) + noise).clamp_(0, 255).to(torch.uint8)
        return x, y.to(torch.uint8)
    train_x, train_y = split(train)
    test_x, test_y = split(test)
    return Dataset(train_x, train_y, test_x, test_y)


def block_spec(spec, k: int):
    if k == spec.difficulty.initial:
        return spec
    return dataclasses.replace(spec, name=f"{spec.name}-bench-k{k}",
                               difficulty=dataclasses.replace(spec.difficulty, initial=k))


def mine_block(spec, data, device: str, groups: int | None, seed: int, datadir: Path):
    """(block, found, miner): one block on genesis, mined with the fast miner."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from miner.search import make_miner
    from node.chain import Chain
    from node.mining import mine_on_tip
    chain = Chain(spec, datadir, data)
    try:
        miner = make_miner("fast", spec, data, device=device, seed=seed, groups=groups)
        block, found = mine_on_tip(chain, miner, Ed25519PrivateKey.generate())
        return block, found, miner
    finally:
        chain.store.close()


def submit_once(spec, data, replayer, block, root: Path, i: int) -> tuple[float, float, StageClock]:
    """One Chain.submit of the block into a fresh datadir; (wall s, CPU s, stage clock)."""
    clock = StageClock(str(replayer.device))

    def submit(chain):
        chain.replayer = replayer           # a long-lived, warm replayer, as in a running node
        replayer._acc_cache.clear()         # ... that has not evaluated this block's post-state yet
        chain.stage_timer = clock
        return chain.submit(block)

    wall, cpu = _timed_submission(spec, data, root / f"v{i}", submit, str(replayer.device))
    return wall, cpu, clock


def submit_mined_once(spec, data, block, found, root: Path, i: int) -> tuple[float, float]:
    """The miner's own block into a fresh datadir as the node takes it (``Chain.submit_mined``: the
    miner's W' and acc(W') stand in for the replay and the evaluation); (wall s, CPU s)."""
    return _timed_submission(spec, data, root / f"m{i}",
                             lambda chain: chain.submit_mined(block, found.state, found.acc_after), "cpu")


def _timed_submission(spec, data, datadir: Path, submit, device: str) -> tuple[float, float]:
    """``submit(chain)`` on a fresh chain in ``datadir`` (removed after), timed; it must be accepted."""
    from node.chain import Chain
    chain = Chain(spec, datadir, data)
    try:
        common.sync_device(device)
        w0, c0 = time.perf_counter(), time.process_time()
        out = submit(chain)
        common.sync_device(device)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if out.status != Verdict.ACCEPTED:
            raise RuntimeError(f"block not accepted: {out.status} {out.code} {out.detail}")
    finally:
        chain.store.close()
        shutil.rmtree(datadir, ignore_errors=True)
    return wall, cpu


def sample_p_acc(miner, w, parent, samples: int) -> tuple[int, int]:
    """(passing, samples): random canonical steps (random nonces, miner-bound batches) from the
    parent's post-state W that pass the miner's accuracy policy against the parent's claim."""
    from consensus.proof import derive_batch
    from consensus.validation import miner_accuracy_ok

    from .mine import BENCH_MINER
    r = miner.replayer
    ok = 0
    for _ in range(samples):
        r.load(w)
        r.step(derive_batch(miner.spec, parent.hash, BENCH_MINER, 0, miner.random_nonce()))
        if miner_accuracy_ok(r.accuracy(), parent, miner.spec):
            ok += 1
    r.load(w)
    return ok, samples


def attempt_seconds(miner, spec, w, acc_floor: int, seconds: float, device: str) -> tuple[float, float, int]:
    """(wall s per attempt, CPU s per attempt, attempts) of the fast miner at the spec's k0, mining on
    a parent whose post-state is ``w`` and whose claim is ``acc_floor``."""
    from .mine import mine_round, stand_in_job
    k = spec.difficulty.initial
    mine_round(miner, stand_in_job(-1, k, acc_floor), w, min(3.0, seconds), device)      # warm-up
    n, wall, cpu, i = 0, 0.0, 0.0, 0
    while wall < seconds:           # a block may end a round early: go on on the next stand-in parent
        r = mine_round(miner, stand_in_job(i, k, acc_floor), w, seconds - wall, device)
        n, wall, cpu, i = n + r["candidates"], wall + r["wall_s"], cpu + r["cpu_s"], i + 1
    n = max(n, 1)
    return wall / n, cpu / n, n


# -- the benchmark -----------------------------------------------------------------------
def run(args) -> int:
    res = measure_verify(args)
    return common.emit_with_figures(res, args, table, f"verify-{args.preset}", draw)


def measure_verify(args) -> dict:
    from consensus.training import Replayer
    from miner.search import default_groups, pick_device

    base = common.load_spec(args)
    resnet = base.model.arch != "tiny-cnn"
    k_block = args.k or (2 if resnet else base.difficulty.initial)
    spec = block_spec(base, k_block)
    device = pick_device(args.device)
    vdevice = pick_device(args.validate_device)
    data, data_note = common.bench_dataset(spec, args.data_dir)
    if data_note == common.GENERATED_CIFAR:
        # random labels cannot be learnt, so a step that keeps the accuracy on E above the parent's
        # claim (needed for a block beyond height 1) is a coin toss; a class colour makes them learnable
        data = learnable_generated(spec.dataset.train_size, spec.dataset.test_size)
        data_note = LEARNABLE_NOTE
    groups = args.groups or default_groups(spec, device)
    samples = args.acc_samples if args.acc_samples is not None else (4 if resnet else 100)
    root = Path(tempfile.mkdtemp(prefix="polchain-bench-verify-"))
    result = common.result_header(
        "verify", preset=args.preset, arch=spec.model.arch, data=data_note,
        data_generated=data_note == LEARNABLE_NOTE, block_k=k_block, spec_k0=base.difficulty.initial,
        eval_size=spec.evaluation.size, validate_device=vdevice, mine_device=device, groups=groups,
        runs=args.runs, machine=common.machine_info(device))
    if k_block != base.difficulty.initial:
        result["block_note"] = (f"the validated block was mined at k={k_block} on a copy of the spec with that "
                                f"initial difficulty (k0 is {base.difficulty.initial}); validation cost does not "
                                "depend on k")
    try:
        common.progress(f"mining one block at k={k_block} ({spec.model.arch}, {data_note})")
        t0 = time.perf_counter()
        block, found, miner = mine_block(spec, data, device, groups, args.seed, root / "miner")
        header = block.header
        from consensus.block import genesis_header
        from consensus.weights import encode_state
        body = len(header.encode()) + len(json.dumps(block.wire_records))
        state_bytes = len(encode_state(found.state))
        result["block"] = {"height": header.height, "hash": header.hash, "body_bytes": body,
                           "state_bytes": state_bytes, "steps": len(header.nonces),
                           "attempts": found.attempts, "mining_seconds": round(time.perf_counter() - t0, 2),
                           "acc_parent": genesis_header(spec).acc_after, "acc_after": header.acc_after}
        common.progress(f"mined in {found.attempts} attempts, {time.perf_counter() - t0:.1f} s; "
                        f"{len(header.nonces)} steps; block {body} bytes, post-state {state_bytes / 1e6:.1f} MB")

        replayer = Replayer(spec, data, vdevice)
        walls: list[float] = []
        cpus: list[float] = []
        stage_wall: dict[str, list[float]] = {s: [] for s in STAGES}
        stage_cpu: dict[str, list[float]] = {s: [] for s in STAGES}
        for i in range(args.runs + 1):
            wall, cpu, clock = submit_once(spec, data, replayer, block, root, i)
            label = "warm-up" if i == 0 else f"run {i}/{args.runs}"
            common.progress(f"{label}: validated in {wall:.2f} s ({cpu:.2f} CPU s): "
                            + ", ".join(f"{s} {clock.wall.get(s, 0.0):.3f}" for s in STAGES[:-1]))
            if i == 0:
                continue
            walls.append(wall)
            cpus.append(cpu)
            for s in STAGES[:-1]:
                stage_wall[s].append(clock.wall.get(s, 0.0))
                stage_cpu[s].append(clock.cpu.get(s, 0.0))
            stage_wall["other"].append(max(0.0, wall - sum(clock.wall.values())))
            stage_cpu["other"].append(max(0.0, cpu - sum(clock.cpu.values())))
        # microseconds: on tiny the records and state-decode stages take tens of them
        result["stages"] = {s: {"wall_s": common.summary(stage_wall[s], 6), "cpu_s": common.summary(stage_cpu[s], 6)}
                            for s in STAGES}
        result["total"] = {"wall_s": common.summary(walls, 4), "cpu_s": common.summary(cpus, 4)}
        result["total_seconds"] = result["total"]["wall_s"]["median"]
        result["total_cpu_seconds"] = result["total"]["cpu_s"]["median"]

        # -- the miner's own block: what it waited before mining on (issue 31.1) ---------------
        own = [submit_mined_once(spec, data, block, found, root, i) for i in range(args.runs + 1)][1:]
        result["own_block"] = {"wall_s": common.summary([w for w, _ in own], 4),
                               "cpu_s": common.summary([c for _, c in own], 4),
                               "note": "Chain.submit_mined: the node's own block becomes the tip without a replay "
                                       "or an evaluation; before issue 31.1 the miner waited total_seconds"}
        result["own_block_speedup"] = common.ratio(result["total_seconds"], result["own_block"]["wall_s"]["median"], 1)
        common.progress(f"own block: {result['own_block']['wall_s']['median']:.3f} s, against "
                        f"{result['total_seconds']:.2f} s to validate it: {result['own_block_speedup']}x")

        # -- the asymmetry -------------------------------------------------------------
        # the next block: mined on this one, from its post-state W', against its claim
        w = found.state
        common.progress(f"fast miner at k0={base.difficulty.initial}: {args.seconds:g} s timed run")
        t_att, c_att, n_att = attempt_seconds(miner, base, w, header.acc_after, args.seconds, device)
        if args.p_acc is not None:
            p_acc, p_note = args.p_acc, "given (--p-acc)"
            ok = None
        else:
            common.progress(f"sampling p_acc: {samples} random steps from the block's post-state")
            ok, _ = sample_p_acc(miner, w, header, samples) if samples else (0, 0)
            p_acc = (ok + 0.5) / (samples + 1.0)      # never 0 or 1 with few samples (add-half estimate)
            p_note = (f"{ok}/{samples} random steps from the block's post-state passed the miner's accuracy "
                      "policy against its claim")
        # a confirmation is one canonical step (the replay stage holds the block's j + 1) and one evaluation
        per_step = 1 / len(header.nonces)
        confirm_wall = (result["stages"]["replay"]["wall_s"]["median"] * per_step
                        + result["stages"]["accuracy"]["wall_s"]["median"])
        confirm_cpu = (result["stages"]["replay"]["cpu_s"]["median"] * per_step
                       + result["stages"]["accuracy"]["cpu_s"]["median"])
        k0 = base.difficulty.initial
        expected = (2 ** k0 * t_att + confirm_wall) / p_acc
        expected_cpu = (2 ** k0 * c_att + confirm_cpu) / p_acc
        result["mining"] = {
            "k0": k0, "seconds_per_attempt": round(t_att, 5), "cpu_seconds_per_attempt": round(c_att, 5),
            "attempts_timed": n_att, "p_acc": round(p_acc, 4), "p_acc_passing": ok, "p_acc_samples": samples,
            "p_acc_note": p_note, "confirm_seconds": round(confirm_wall, 4),
            "expected_attempts": round(2 ** k0 / p_acc, 1),
            "expected_seconds": round(expected, 2), "expected_cpu_seconds": round(expected_cpu, 2),
            "target_interval_s": base.difficulty.target_interval_ms / 1000,
        }
        result["mining"]["min_seconds"] = round(2 ** k0 * t_att, 2)       # p_acc = 1: R alone
        result["asymmetry"] = common.ratio(expected, result["total_seconds"], 1)
        result["asymmetry_min"] = common.ratio(2 ** k0 * t_att, result["total_seconds"], 1)
        result["asymmetry_cpu"] = common.ratio(expected_cpu, result["total_cpu_seconds"], 1)
        result["load_average_after"] = common.load_average()
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def draw(res: dict, out_dir: Path) -> list[Path]:
    """verify-<preset>.png/.svg: median wall and CPU seconds per stage (horizontal bars)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES]
    wall = [res["stages"][s]["wall_s"]["median"] for s in stages]
    cpu = [res["stages"][s]["cpu_s"]["median"] for s in stages]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    y = list(range(len(stages)))[::-1]
    ax.barh([v + 0.2 for v in y], wall, height=0.4, color="#1f4e99", label="wall s (median)")
    ax.barh([v - 0.2 for v in y], cpu, height=0.4, color="#9db4d8", label="process CPU s (median)")
    ax.set_yticks(y)
    ax.set_yticklabels(stages)
    ax.set_xlabel("seconds")
    for v, w in zip(y, wall):
        ax.text(w, v + 0.2, f" {w:.3g}", va="center", fontsize=7)
    data = "generated CIFAR-shaped data" if res.get("data_generated") else res["data"]
    ax.set_title(f"validate one {res['preset']} block ({res['arch']}, {data}): total {res['total_seconds']:.3g} s "
                 f"wall, {res['total_cpu_seconds']:.3g} s CPU", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    return common.save_figure(fig, res, out_dir, f"verify-{res['preset']}")


def table(res: dict) -> str:
    steps = res["block"].get("steps", 1)
    labels = {"header": "header rules + signature", "records": "records (commitment, rules)",
              "load_state": "parent's post-state (read, decode, hash)",
              "replay": f"replay {steps} step(s) from W'_parent, R with band",
              "state_hash": "post-state finite + hash = state_hash",
              "accuracy": f"accuracy on E (1 x {res['eval_size']} images)",
              "store": "store post-state + block, move tip", "other": "other"}
    rows = []
    for s in STAGES:
        st = res["stages"][s]
        rows.append((labels[s], st["wall_s"]["median"], st["wall_s"]["min"], st["wall_s"]["max"], st["cpu_s"]["median"]))
    t = res["total"]
    rows.append(("TOTAL (Chain.submit)", t["wall_s"]["median"], t["wall_s"]["min"], t["wall_s"]["max"], t["cpu_s"]["median"]))
    m = res["mining"]
    lines = [
        f"polchain bench verify: preset {res['preset']} ({res['arch']}), validation on {res['validate_device']}",
        f"data: {res['data']}" + (" -- NOT CIFAR-10: generated images of the same shape" if res.get("data_generated") else ""),
        f"machine: {common.machine_line(res['machine'])}",
    ]
    if res.get("block_note"):
        lines.append(f"note: {res['block_note']}")
    b = res["block"]
    lines += [
        f"block: height {b['height']}, {steps} step(s), {b['body_bytes']} bytes (header + records; post-state "
        f"{b['state_bytes'] / 1e6:.2f} MB, kept by nodes, not carried), acc {b['acc_parent']}->{b['acc_after']}"
        f"/{res['eval_size']}, mined in {b['attempts']} attempts",
        f"{res['runs']} timed submissions to a fresh chain (after one warm-up); medians, seconds",
        "",
        common.format_table(["stage", "wall s", "min", "max", "CPU s"], rows),
        "",
        f"mining at k0={m['k0']} (fast miner, {res['groups']} candidates per pass, {res['mine_device']}): "
        f"{m['seconds_per_attempt'] * 1000:.2f} ms per attempt ({m['cpu_seconds_per_attempt'] * 1000:.2f} CPU ms); "
        f"p_acc {m['p_acc']} ({m['p_acc_note']})",
        f"expected mining time (2^k0 * t_attempt + t_confirm) / p_acc = {m['expected_seconds']:.1f} s "
        f"({m['expected_attempts']:.0f} attempts; target interval {m['target_interval_s']:g} s)",
        f"asymmetry: expected mining time / validation time = {res['asymmetry']}x "
        f"(CPU time: {res['asymmetry_cpu']}x; with p_acc = 1, i.e. R alone: {res.get('asymmetry_min')}x)",
    ]
    if res.get("figures"):
        lines.append("figures: " + ", ".join(res["figures"]))
    if res.get("load_average_after"):
        lines.append(f"load average after: {res['load_average_after'][0]} (figures taken under this load)")
    return "\n".join(lines)
