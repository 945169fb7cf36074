"""`polchain bench step`: the v3 exact step against v2's fp32 step, in one run, as ratios.

For each preset in ``--presets`` (default tiny and cifar10-resnet18) and each thread count in
``--thread-counts`` (default 1 and 2), it times ``--steps`` exact steps (``CanonicalStep.step``),
as many fp32 steps of the v2 rule (PyTorch's kernels and autograd: ``w' = w - lr * g``, the same
batches), and ``--evals`` evaluations of E, all interleaved in one process so that the ratios see
the same load. From the medians it derives one block's validation, J+1 steps plus one evaluation:

* v2, as v2 ran it: J+1 fp32 steps on ONE thread (its replay rule) plus the evaluation on the
  thread count of the row;
* v3: J+1 exact steps plus the evaluation, both on the thread count of the row.

The issue's goals: v3 / v2 at most 1.5 on one thread, below 1 on two. ResNet-18 uses generated
CIFAR-shaped data (the cost of a step does not depend on pixel values; the run says so).

The floor: every exact sum runs as an fp64 GEMM of integers. The run counts the GEMM work of one
step (2 x the multiply-adds of each conv and linear layer, times 3 for forward, input gradient and
weight gradient; the first layer has no input gradient) and times an fp64 and an fp32 GEMM of the
ResNet-18 layer-3 shape (256 x 2304 @ 2304 x 256, integer values) on the row's threads: the GEMM
work at the fp64 rate is what no implementation of the exact step by fp64 GEMMs can go below on
this machine, and the fp32 rate says what v2's step is made of.
"""
from __future__ import annotations

import argparse
import random
import time

from node.argtypes import positive_int
from node.devices import device_arg

from . import common


def register(sub) -> None:
    p = sub.add_parser("step", help="the exact step against the fp32 step, and one validation, as ratios",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,cifar10-resnet18", help="comma-separated presets")
    p.add_argument("--thread-counts", default="1,2", help="comma-separated (default 1,2)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="timed steps of each kind (default 40 tiny, 4 others)")
    p.add_argument("--evals", type=positive_int, default=None, help="timed evaluations of E (default 5 tiny, 2 others)")
    p.add_argument("--device", default="cpu", type=device_arg)
    common.add_output_arguments(p)
    p.set_defaults(func=run)


def _fp32_stepper(spec, data, device):
    import torch
    import torch.nn.functional as F

    from consensus.data import normalize
    from consensus.model import genesis_model
    model = genesis_model(spec.model.arch, spec.model.init_seed, spec.model.num_classes).to(device).train()
    params = list(model.parameters())
    lr = torch.tensor(spec.lr, dtype=torch.float32, device=device)

    def step(batch):
        idx = torch.tensor(batch)
        x = normalize(data.train_x[idx], spec.mean, spec.std).to(device)
        loss = F.cross_entropy(model(x), data.train_y[idx].long().to(device))
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(g * lr)
    return step


def step_gemm_flops(spec) -> int:
    """FLOPs of the products of one training step: forward, input gradient (not the first layer's)
    and weight gradient of each conv and linear layer, 2 per multiply-add, at the spec's batch."""
    import torch
    from torch import nn

    from consensus.model import genesis_model
    model = genesis_model(spec.model.arch, spec.model.init_seed, spec.model.num_classes)
    macs = []

    def hook(mod, inp, out):
        k = mod.weight[0].numel() if isinstance(mod, nn.Conv2d) else mod.in_features
        macs.append(out.numel() * k)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model.train()(torch.zeros(spec.training.batch_size, 3, 32, 32))
    return 2 * (3 * sum(macs) - macs[0])


def gemm_gflops(dtype, device: str, m: int = 256, k: int = 2304, n: int = 256, reps: int = 7) -> float:
    """The rate of one GEMM of integer-valued operands (|q| <= 2^15), median of ``reps``, in GFLOP/s."""
    import torch
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-2 ** 15, 2 ** 15, (m, k), generator=g).to(dtype).to(device)
    b = torch.randint(-2 ** 15, 2 ** 15, (k, n), generator=g).to(dtype).to(device)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        common.sync_device(device)
        times.append(time.perf_counter() - t)
    return 2 * m * k * n / sorted(times)[reps // 2] / 1e9


def measure(spec, data, device: str, steps: int, evals: int, threads: int) -> dict:
    import torch

    from consensus.training import canonical_step, genesis_state
    torch.set_num_threads(threads)
    rng = random.Random(0)
    batches = [rng.sample(range(spec.dataset.train_size), spec.training.batch_size) for _ in range(steps + 1)]
    exact = canonical_step(spec, data, device)
    exact.load(genesis_state(spec))
    fp32 = _fp32_stepper(spec, data, device)
    exact.step(batches[0])
    fp32(batches[0])                                   # warm-up
    t_exact, t_fp32 = [], []
    for b in batches[1:]:                              # interleaved: both see the same load
        t = time.perf_counter()
        exact.step(b)
        common.sync_device(device)
        t_exact.append(time.perf_counter() - t)
        t = time.perf_counter()
        fp32(b)
        common.sync_device(device)
        t_fp32.append(time.perf_counter() - t)
    from consensus.proof import derive_batch
    t_derive = []
    for i in range(steps):                             # v3: each replayed step's batch costs a scrypt seed
        t = time.process_time()
        derive_batch(spec, "00" * 32, "11" * 32, 0, i)
        t_derive.append(time.process_time() - t)
    exact.accuracy()
    t_eval = []
    for _ in range(evals):
        t = time.perf_counter()
        exact.accuracy()
        t_eval.append(time.perf_counter() - t)
    rate64, rate32 = gemm_gflops(torch.float64, device), gemm_gflops(torch.float32, device)
    return {"threads": threads, "exact_step_s": common.summary(t_exact, 4), "fp32_step_s": common.summary(t_fp32, 4),
            "derive_s": common.summary(t_derive, 5), "eval_s": common.summary(t_eval, 3),
            "gemm_gflops_fp64": round(rate64, 1), "gemm_gflops_fp32": round(rate32, 1),
            "load_average": common.load_average()}


def run(args) -> int:
    import torch

    from consensus.spec import preset
    before = torch.get_num_threads()
    result = common.result_header("step", machine=common.machine_info(args.device), device=args.device, rows=[])
    try:
        for name in args.presets.split(","):
            spec = preset(name)
            data, note = common.bench_dataset(spec)
            tiny = spec.model.arch == "tiny-cnn"
            steps, evals = args.steps or (40 if tiny else 4), args.evals or (5 if tiny else 2)
            rows, gflop = {}, step_gemm_flops(spec) / 1e9
            for n in [int(x) for x in args.thread_counts.split(",")]:
                rows[n] = measure(spec, data, args.device, steps, evals, n)
                common.progress(f"{name}, {n} thread(s): exact {rows[n]['exact_step_s']['median']:.4f} s, fp32 "
                                f"{rows[n]['fp32_step_s']['median']:.4f} s, eval {rows[n]['eval_s']['median']:.3f} s")
            one = rows.get(1)
            for n, row in rows.items():
                j1 = spec.proof.max_advance_steps + 1
                fp32_1t = (one or row)["fp32_step_s"]["median"]
                v2 = j1 * fp32_1t + row["eval_s"]["median"]
                v3 = j1 * (row["exact_step_s"]["median"] + row["derive_s"]["median"]) + row["eval_s"]["median"]
                row.update(preset=name, data=note, steps_per_block=j1, step_gemm_gflop=round(gflop, 6),
                           exact_gemm_floor_s=round(gflop / row["gemm_gflops_fp64"], 6),
                           fp32_gemm_floor_s=round(gflop / row["gemm_gflops_fp32"], 6),
                           step_ratio=common.ratio(row["exact_step_s"]["median"], row["fp32_step_s"]["median"]),
                           validation_v2_s=round(v2, 3), validation_v3_s=round(v3, 3),
                           validation_ratio=common.ratio(v3, v2))
                result["rows"].append(row)
    finally:
        torch.set_num_threads(before)
    return common.emit(result, args, table, name="step")


def table(res: dict) -> str:
    rows = [(r["preset"], r["threads"], r["exact_step_s"]["median"] * 1000, r["fp32_step_s"]["median"] * 1000,
             f"{r['step_ratio']}x", r["eval_s"]["median"], r["validation_v2_s"], r["validation_v3_s"],
             f"{r['validation_ratio']}x", r["exact_gemm_floor_s"] * 1000,
             f"{round(r['gemm_gflops_fp32'] / r['gemm_gflops_fp64'], 2)}x", (r["load_average"] or ["-"])[0])
            for r in res["rows"]]
    notes = sorted({f"{r['preset']}: {r['data']}" for r in res["rows"]})
    return "\n".join([
        f"polchain bench step on {res['device']}: the exact step (v3) against the fp32 step (v2), one process, "
        "interleaved",
        f"machine: {common.machine_line(res['machine'])}", *("data " + n for n in notes), "",
        common.format_table(["preset", "threads", "exact ms", "fp32 ms", "exact/fp32", "eval s",
                             "v2 validation s", "v3 validation s", "v3/v2", "exact floor ms", "fp32/fp64 GEMM rate",
                             "load"], rows), "",
        "validation = J+1 steps + one evaluation of E; v2 replayed on one thread whatever the row's count "
        "(its rule), v3 on the row's count.",
        "exact floor = the step's GEMM work at the row's fp64 GEMM rate: no exact step by fp64 GEMMs runs faster here.",
    ])
