"""GPU check for the cifar10-resnet18 rules; run through scripts/gpu-check.sh (docs/benchmarks.md, "GPU").

Measures, on the first CUDA device, with the canonical fp32 settings (TF32 off, deterministic cuDNN):

1. attempts/s of both miners' inner loops for ResNet-18, batch S = 4:
   * reference (Algorithm 1): one canonical step (``Replayer.step``) per attempt, R read before and
     after (``ParamIndex.gather``) and checked with the miner margin, training on from W';
   * fast search: ``miner.fast.FastSearch.group_gradients`` on G candidate batches per pass, the
     predicted-hit test, one canonical step per pass (measured for each G in --groups);
2. the share of the GPU's fp32 peak that is: FLOPs per attempt counted by
   ``torch.utils.flop_counter.FlopCounterMode`` times attempts/s (for the fast search a lower
   bound: its forward pass and canonical step, not its partial backward), over (a) the datasheet peak
   (multiprocessors x fp32 lanes per multiprocessor x 2 x max SM clock) and (b) a measured fp32
   matrix product (8192^3, TF32 off);
3. validation time of one block on the GPU (load W, the canonical step, R, two evaluations of E),
   and on this machine's CPU for comparison;
4. GPU -> CPU agreement (``bench/agreement.py``): canonical steps on the GPU from evolving W with
   random batches and random R (``consensus.requirements.derive_requirements`` from random seeds
   over R's index space, k = --agreement-k) until --agreement steps have required changes that
   clear the miner margin; each such step is replayed canonically from the same W on the CPU (a
   pool of one-thread processes) and the validator's verdict (``requirements_hold`` with the
   spec's band) compared (target: 100 %). For the first --acc-checks of them, acc(W') and acc(W)
   on E are also computed on both and compared (|difference| <= claim_tolerance, same verdict).

It uses ``consensus.training.Replayer`` and ``consensus.requirements`` directly, never a block
header, so it does not depend on the header format. Data: the real CIFAR-10 sample if one is
found (--sample-dir, $POLCHAIN_CIFAR10_SAMPLE, ../shared/data/cifar10-sample), else generated
CIFAR-shaped data (a step costs the same; the JSON says which). Without CUDA it exits 3 at once.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.agreement import agreement, random_seed  # noqa: E402  (needs REPO on the path)

# fp32 lanes per multiprocessor by compute capability (CUDA C Programming Guide, throughput table)
FP32_LANES = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128, (9, 0): 128,
              (10, 0): 128, (12, 0): 128}


def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- data ----------------------------------------------------------------------------------
def find_sample(arg: str | None) -> Path | None:
    for d in (arg, os.environ.get("POLCHAIN_CIFAR10_SAMPLE"), REPO.parent / "shared/data/cifar10-sample",
              REPO / ".gpu-data"):
        if d and Path(d).is_dir() and any(Path(d).glob("*.tar.gz")):
            return Path(d)
    return None


def spec_and_data(sample_dir: Path | None):
    from consensus.spec import preset
    base = preset("cifar10-resnet18")
    if sample_dir is not None:
        from consensus.data import load_dataset
        from node.dataset import spec_for_archive
        archive = sorted(sample_dir.glob("*.tar.gz"))[0]
        spec = spec_for_archive(base, archive)
        return spec, load_dataset(spec.dataset, sample_dir), f"real CIFAR-10 sample {archive.name}"
    from bench.verify import learnable_generated
    d = base.dataset
    return base, learnable_generated(d.train_size, d.test_size), "generated CIFAR-shaped data (no sample found)"


# -- peak ----------------------------------------------------------------------------------
def fp32_peak(dev) -> dict:
    import torch
    p = torch.cuda.get_device_properties(dev)
    cc = (p.major, p.minor)
    clock_mhz = None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-i", str(dev.index or 0), "--query-gpu=clocks.max.sm",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
            clock_mhz = float(out.stdout.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            clock_mhz = None
    lanes = FP32_LANES.get(cc)
    sheet = (p.multi_processor_count * lanes * 2 * clock_mhz * 1e6) if lanes and clock_mhz else None
    n = 8192
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize(dev)
    measured = 10 * 2 * n ** 3 / (time.perf_counter() - t0)
    return {"gpu": p.name, "compute_capability": f"{cc[0]}.{cc[1]}", "multiprocessors": p.multi_processor_count,
            "fp32_lanes_per_mp": lanes, "max_sm_clock_mhz": clock_mhz,
            "datasheet_fp32_tflops": round(sheet / 1e12, 1) if sheet else None,
            "measured_sgemm_tflops": round(measured / 1e12, 1), "memory_gib": round(p.total_memory / 2**30, 1),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "torch": torch.__version__}


def sync(dev) -> None:
    import torch
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# -- miners' inner loops ---------------------------------------------------------------------
def space(r):
    """R's index space: the replayer's (v2 excludes some parameters), else every parameter."""
    return getattr(r, "r_space", None) or r.index.total


def reference_rate(spec, data, dev, seconds: float, k: int) -> dict:
    from consensus.requirements import derive_requirements
    from consensus.training import Replayer
    from consensus.validation import miner_requirements_ok
    r = Replayer(spec, data, dev)
    rng = random.Random(1)
    reqs = derive_requirements(random_seed(rng), k, space(r))
    n_train, s = spec.dataset.train_size, spec.training.batch_size

    def attempt():
        before = r.values(reqs)
        r.step(rng.sample(range(n_train), s))
        return miner_requirements_ok(before, r.values(reqs), reqs, spec)
    for _ in range(20):
        attempt()
    flops = count_flops(lambda: r.step(rng.sample(range(n_train), s)))
    sync(dev)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        attempt()
        n += 1
    sync(dev)
    rate = n / (time.perf_counter() - t0)
    return {"attempts_per_s": round(rate, 2), "flops_per_attempt": flops, "achieved_tflops": rate * flops / 1e12}


def fast_rate(spec, data, dev, seconds: float, k: int, groups: int) -> dict:
    import torch

    from consensus.requirements import derive_requirements, ulp
    from consensus.training import Replayer
    from miner.fast import FastSearch, locate_targets
    r = Replayer(spec, data, dev)
    search = FastSearch(r, groups)
    rng = random.Random(2)
    reqs = derive_requirements(random_seed(rng), k, space(r))
    targets = locate_targets(search.model, reqs, r)
    n_train, s, lr = spec.dataset.train_size, spec.training.batch_size, float(spec.lr)
    dirs = torch.tensor([q.direction for q in reqs], dtype=torch.float32)

    def one_pass() -> int:
        batches = [tuple(rng.sample(range(n_train), s)) for _ in range(groups)]
        grads = search.group_gradients(batches, targets)
        need = torch.clamp(ulp(r.values(reqs)) * spec.requirements.margin_ulps,
                           min=float(spec.requirements.margin_abs)) * 0.5
        hits = int(((-lr * grads * dirs) >= need).all(dim=1).sum())
        r.step(batches[0])
        return hits
    for _ in range(3):
        one_pass()
    # FlopCounterMode cannot follow the search's autograd.grad from hooked outputs, so a pass is
    # counted as its forward pass over the G x S images plus its canonical step: a lower bound
    # (the partial backward down to the earliest required layer is left out).
    x = search.inputs([tuple(rng.sample(range(n_train), s)) for _ in range(groups)])[0]

    def forward():
        with torch.no_grad():
            r.model.eval()
            r.model(x)
    flops = count_flops(forward) + count_flops(lambda: r.step(rng.sample(range(n_train), s)))
    sync(dev)
    passes, hits, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        hits += one_pass()
        passes += 1
    sync(dev)
    dt = time.perf_counter() - t0
    rate = passes * groups / dt
    return {"groups": groups, "attempts_per_s": round(rate, 2), "passes": passes, "predicted_hits": hits,
            "flops_per_pass_lower_bound": flops, "achieved_tflops": passes * flops / dt / 1e12}


# -- validation ------------------------------------------------------------------------------
def validation_time(spec, data, dev, runs: int, k: int) -> dict:
    import torch

    from consensus.requirements import derive_requirements, requirements_hold
    from consensus.training import Replayer, genesis_state
    r = Replayer(spec, data, dev)
    band = (getattr(spec.requirements, "band_ulps", 0), float(getattr(spec.requirements, "band_abs", 0)))
    rng = random.Random(3)
    w = genesis_state(spec)
    reqs = derive_requirements(random_seed(rng), k, space(r))
    times, evals = [], []
    for i in range(runs + 1):
        sync(dev)
        t0 = time.perf_counter()
        r.load(w)
        before = r.values(reqs)
        r.step(rng.sample(range(spec.dataset.train_size), spec.training.batch_size))
        requirements_hold(before, r.values(reqs), reqs, *band)
        te = time.perf_counter()
        r.accuracy()
        r.accuracy(w)
        sync(dev)
        if i:  # the first run warms up
            times.append(time.perf_counter() - t0)
            evals.append(time.perf_counter() - te)
    return {"device": str(dev), "runs": runs, "seconds_median": round(statistics.median(times), 4),
            "seconds_min": round(min(times), 4), "two_evaluations_median": round(statistics.median(evals), 4),
            "torch_threads": torch.get_num_threads()}


# -- main ------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--sample-dir", default=None)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each attempts/s run")
    p.add_argument("--k", type=int, default=10, help="difficulty for the attempts/s runs (the preset's k0)")
    p.add_argument("--groups", default="64,128,256", help="fast search G values")
    p.add_argument("--validation-runs", type=int, default=5)
    p.add_argument("--agreement", type=int, default=1000, help="GPU steps clearing the margin to replay on CPU")
    p.add_argument("--agreement-k", type=int, default=2)
    p.add_argument("--agreement-budget", type=float, default=240.0, help="seconds for the agreement part")
    p.add_argument("--acc-checks", type=int, default=10)
    p.add_argument("--per-w", type=int, default=32, help="agreement: candidates tried per W before W moves on")
    p.add_argument("--workers", type=int, default=None,
                   help="agreement: one-thread CPU replay processes (default: cores - 2, at least 1)")
    p.add_argument("--cpu-threads", type=int, default=None, help="torch threads for the CPU side (default: cores, at most 16)")
    p.add_argument("--out", default=None, help="write the JSON here (file)")
    args = p.parse_args(argv)

    import torch
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device visible to torch (torch.cuda.is_available() is False); nothing measured",
              file=sys.stderr)
        return 3
    torch.set_num_threads(args.cpu_threads or min(16, os.cpu_count() or 1))
    dev = torch.device(args.device)
    torch.cuda.set_device(dev)
    sample = find_sample(args.sample_dir)
    spec, data, note = spec_and_data(sample)
    out = {"spec": spec.name, "chain_id": spec.chain_id, "data": note, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "cpu": {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}, "args": vars(args)}
    t_all = time.perf_counter()
    log(f"{note}; measuring the fp32 peak")
    out["peak"] = fp32_peak(dev)
    log(f"peak: {out['peak']}")
    out["reference"] = reference_rate(spec, data, dev, args.seconds, args.k)
    log(f"reference: {out['reference']}")
    out["fast"] = []
    for g in (int(x) for x in args.groups.split(",")):
        try:
            out["fast"].append(fast_rate(spec, data, dev, args.seconds, args.k, g))
        except ImportError as exc:  # the miner's API moved on: say so, measure the rest
            out["fast"].append({"groups": g, "error": f"miner.fast not usable here: {exc!r}"})
        log(f"fast: {out['fast'][-1]}")
    for entry in [out["reference"], *out["fast"]]:
        if "achieved_tflops" in entry:
            tf = entry["achieved_tflops"]
            entry["achieved_tflops"] = round(tf, 3)
            sheet = out["peak"]["datasheet_fp32_tflops"]
            entry["share_of_datasheet_peak"] = round(tf / sheet, 4) if sheet else None
            entry["share_of_measured_sgemm"] = round(tf / out["peak"]["measured_sgemm_tflops"], 4)
    out["validation_gpu"] = validation_time(spec, data, dev, args.validation_runs, args.k)
    log(f"validation on the GPU: {out['validation_gpu']}")
    out["validation_cpu"] = validation_time(spec, data, torch.device("cpu"), 1, args.k)
    log(f"validation on the CPU: {out['validation_cpu']}")
    out["agreement"] = agreement(spec, data, dev, target=args.agreement, k=args.agreement_k,
                                 budget_s=args.agreement_budget, acc_checks=args.acc_checks, per_w=args.per_w,
                                 workers=args.workers or max(1, (os.cpu_count() or 1) - 2))
    a = out["agreement"]
    log(f"agreement: {a['cpu_agrees']}/{a['cleared_margin']} CPU replays accept ({a['device_steps']} GPU steps, "
        f"{a['seconds']} s); accuracy checks {a['accuracy_agree']}/{len(a['accuracy_checks'])}")
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    text = json.dumps(out, indent=2, sort_keys=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    ok = a["target_reached"] and a["agreement"] == 1.0 and a["accuracy_agree"] == len(a["accuracy_checks"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
