"""`polchain bench threads`: canonical step and evaluation time by torch thread count, idle and loaded.

For each thread count in ``--thread-counts`` (default 1..cores) and each load
in ``--busy`` (default 0 and 1: the number of other busy processes, each a
Python loop spinning on one core, started by this benchmark and stopped after),
it times ``--steps`` canonical SGD steps of batch S (``Replayer.step``, after
warm-up steps) and ``--evals`` evaluations of E (``Replayer.accuracy``), and
reports medians and the process CPU time. These are the figures the default
thread counts (``node/threads.py``) were chosen from.
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time

from node.argtypes import positive_int
from node.devices import device_arg

from . import common


def register(sub) -> None:
    p = sub.add_parser("threads", help="step and evaluation time by thread count, idle and with busy processes",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_spec_arguments(p, "tiny")
    p.add_argument("--device", default="cpu", type=device_arg)
    p.add_argument("--thread-counts", default=None, help="comma-separated (default 1..cores)")
    p.add_argument("--busy", default="0,1", help="other busy processes to run alongside, comma-separated (default 0,1)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="timed steps per setting (default 200 tiny, 10 others)")
    p.add_argument("--evals", type=positive_int, default=None,
                   help="timed evaluations of E per setting (default 5 tiny, 2 others)")
    p.add_argument("--dataset-dir", "--data-dir", dest="data_dir", type=common.Path, default=None,
                   help="where the spec's archive lives (--data-dir: the old name)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=common.Path, default=None)
    p.set_defaults(func=run)


class Busy:
    """``n`` processes spinning on a core each, for as long as the ``with`` block lasts."""

    def __init__(self, n: int):
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "Busy":
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(0.5 if self.n else 0)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def time_setting(replayer, steps: int, evals: int, batches: list[list[int]]) -> dict:
    import torch
    state = replayer.state()
    for b in batches[:3]:                      # warm-up: allocator, oneDNN primitives
        replayer.step(b)
    step_s, cpu0 = [], time.process_time()
    for b in batches[3:3 + steps]:
        t = time.perf_counter()
        replayer.step(b)
        step_s.append(time.perf_counter() - t)
    step_cpu = (time.process_time() - cpu0) / max(1, steps)
    replayer.load(state)
    replayer.accuracy()                        # warm-up
    eval_s, cpu0 = [], time.process_time()
    for _ in range(evals):
        t = time.perf_counter()
        replayer.accuracy()
        eval_s.append(time.perf_counter() - t)
    eval_cpu = (time.process_time() - cpu0) / max(1, evals)
    return {"threads": torch.get_num_threads(), "step_s": common.summary(step_s, 4),
            "step_cpu_s": round(step_cpu, 4), "eval_s": common.summary(eval_s, 3), "eval_cpu_s": round(eval_cpu, 3)}


def run(args) -> int:
    import os

    import torch

    from consensus.training import Replayer

    spec = common.load_spec(args)
    data, data_note = common.bench_dataset(spec, args.data_dir)
    tiny = spec.model.arch == "tiny-cnn"
    steps = args.steps or (200 if tiny else 10)
    evals = args.evals or (5 if tiny else 2)
    counts = [int(x) for x in args.thread_counts.split(",")] if args.thread_counts else \
        list(range(1, (os.cpu_count() or 1) + 1))
    busy = [int(x) for x in args.busy.split(",")]
    rng = random.Random(0)
    batches = [rng.sample(range(spec.dataset.train_size), spec.training.batch_size) for _ in range(steps + 3)]
    replayer = Replayer(spec, data, args.device)
    before = torch.get_num_threads()
    result = common.result_header("threads", preset=spec.name, arch=spec.model.arch, data=data_note,
                                  device=args.device, steps=steps, evals=evals, eval_size=spec.evaluation.size,
                                  eval_batch=spec.evaluation.batch, machine=common.machine_info(args.device),
                                  settings=[])
    try:
        for b in busy:
            with Busy(b):
                for n in counts:
                    torch.set_num_threads(n)
                    row = {"busy": b, "load_average": common.load_average(), **time_setting(replayer, steps, evals, batches)}
                    common.progress(f"busy {b}, {n} thread(s): step {row['step_s']['median'] * 1000:.1f} ms, "
                                    f"eval of E {row['eval_s']['median']:.3f} s")
                    result["settings"].append(row)
    finally:
        torch.set_num_threads(before)
    result["best"] = best_counts(result["settings"])
    result["load_average_after"] = common.load_average()
    return common.emit(result, args, table)


def best_counts(rows: list[dict]) -> dict:
    """Per load ("busy N"): the thread count with the fastest median step and evaluation."""
    out = {}
    for b in sorted({r["busy"] for r in rows}):
        mine = [r for r in rows if r["busy"] == b]
        out[f"busy {b}"] = {
            "step": min(mine, key=lambda r: r["step_s"]["median"])["threads"],
            "eval": min(mine, key=lambda r: r["eval_s"]["median"])["threads"],
        }
    return out


def table(res: dict) -> str:
    rows = [(r["busy"], r["threads"], r["step_s"]["median"] * 1000, r["step_cpu_s"] * 1000,
             r["eval_s"]["median"], r["eval_cpu_s"], (r["load_average"] or ["-"])[0]) for r in res["settings"]]
    return "\n".join([
        f"polchain bench threads: {res['preset']} ({res['arch']}) on {res['device']}, batch-S steps and "
        f"evaluations of E ({res['eval_size']} images, batch {res['eval_batch']})",
        f"data: {res['data']}",
        f"machine: {common.machine_line(res['machine'])}",
        "",
        common.format_table(["busy procs", "threads", "step ms", "step CPU ms", "eval s", "eval CPU s", "load"], rows),
        "",
        "fastest: " + "; ".join(f"{k}: step {v['step']} thread(s), eval {v['eval']}" for k, v in res["best"].items()),
    ])
