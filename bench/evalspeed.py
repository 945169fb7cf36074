"""`polchain bench eval`: the fastest fp32 way to evaluate E that keeps the verdict.

Validation of a ResNet-18 block is almost all evaluation of E (two passes over
500 images). This benchmark evaluates the same states in several ways and
reports, per variant, the time of one evaluation of E and how its results
compare with the canonical evaluation (``Replayer.accuracy``: ``torch.no_grad``,
contiguous NCHW, the spec's evaluation batch, here on 1 thread):

* ``mode``: ``no_grad`` or ``inference_mode``;
* ``layout``: ``nchw`` or ``channels_last`` (a copy of the model and the
  inputs in channels_last memory format);
* ``batch``: images per forward pass (the spec says 100 for cifar10-resnet18);
* ``threads``: torch CPU threads.

The states are pairs (W, W' = one canonical step from W) at genesis and after
``--pretrain`` plain canonical steps, so each pair also gives a verdict
(acc(W') > acc(W)). For every variant and state: the correct count, the
borderline count, and the number of predictions that differ from the canonical
evaluation; a variant keeps the verdict when every count is within the spec's
claim_tolerance of the canonical one and every pair's verdict is the same.
Variants are written ``mode/layout/batch/threads``, e.g. ``inference_mode/channels_last/250/1``.
"""
from __future__ import annotations

import argparse
import copy
import random
import time

from node.argtypes import nonneg_int

from . import common

DEFAULT_VARIANTS = ("no_grad/nchw/{b}/1", "inference_mode/nchw/{b}/1", "no_grad/channels_last/{b}/1",
                    "no_grad/nchw/250/1", "no_grad/nchw/500/1", "no_grad/nchw/{b}/2",
                    "inference_mode/channels_last/250/1", "inference_mode/channels_last/{b}/2")


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluation of E: inference_mode, channels_last, batch, threads; "
                                    "time and agreement with the canonical evaluation",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_spec_arguments(p, "cifar10-resnet18")
    p.add_argument("--dataset-dir", "--data-dir", dest="data_dir", type=common.Path, default=None,
                   help="where the spec's archive lives (--data-dir: the old name)")
    p.add_argument("--variants", default=None,
                   help="comma-separated mode/layout/batch/threads (default: the canonical one, then one change "
                        "at a time, then combinations)")
    p.add_argument("--pretrain", type=nonneg_int, default=100, help="canonical steps before the second (W, W') pair")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=common.Path, default=None)
    p.set_defaults(func=run)


def parse_variant(text: str) -> dict:
    mode, layout, batch, threads = text.split("/")
    if mode not in ("no_grad", "inference_mode") or layout not in ("nchw", "channels_last"):
        raise ValueError(f"bad variant {text!r}: mode no_grad|inference_mode, layout nchw|channels_last")
    return {"name": text, "mode": mode, "layout": layout, "batch": int(batch), "threads": int(threads)}


def evaluate(model, x, y, batch: int, mode: str, margin: float):
    """(correct, borderline, predictions) of ``model`` (eval mode) on x, as Replayer.accuracy computes them."""
    import torch
    ctx = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
    preds, borderline = [], 0
    with ctx:
        for i in range(0, x.shape[0], batch):
            logits = model(x[i:i + batch]).float()
            top2 = logits.topk(2, dim=1).values
            preds.append(logits.argmax(dim=1))
            borderline += int(((top2[:, 0] - top2[:, 1]) < margin).sum())
    pred = torch.cat(preds)
    return int((pred == y).sum()), borderline, pred


def make_states(replayer, spec, pretrain: int) -> list[tuple[str, dict]]:
    """[(label, state)]: W0, W0', W_n, W_n' (n = pretrain canonical steps from genesis on random batches)."""
    from consensus.training import genesis_state
    rng = random.Random(0)

    def batch():
        return rng.sample(range(spec.dataset.train_size), spec.training.batch_size)
    w0 = genesis_state(spec)
    states = [("genesis W", w0), ("genesis W'", replayer.update(w0, batch()))]
    replayer.load(w0)
    for _ in range(pretrain):
        replayer.step(batch())
    wn = replayer.state()
    states += [(f"W after {pretrain} steps", wn), (f"W' after {pretrain} steps", replayer.update(wn, batch()))]
    return states


def run(args) -> int:
    import torch

    from consensus.training import Replayer

    spec = common.load_spec(args)
    data, data_note = common.bench_dataset(spec, args.data_dir)
    b = spec.evaluation.batch
    names = args.variants.split(",") if args.variants else [v.format(b=b) for v in DEFAULT_VARIANTS]
    variants = [parse_variant(v) for v in dict.fromkeys(names)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    replayer = Replayer(spec, data, "cpu")
    common.progress(f"preparing states: genesis and {args.pretrain} canonical steps")
    states = make_states(replayer, spec, args.pretrain)
    x, y, margin = replayer.eval_x, replayer.eval_y, replayer.logit_margin
    result = common.result_header("eval", preset=spec.name, arch=spec.model.arch, data=data_note,
                                  eval_size=spec.evaluation.size, spec_batch=b,
                                  claim_tolerance=spec.evaluation.claim_tolerance,
                                  states=[label for label, _ in states], machine=common.machine_info("cpu"),
                                  variants=[])
    canonical = None
    try:
        for v in variants:
            torch.set_num_threads(v["threads"])
            rows = []
            for label, state in states:
                replayer.load(state)
                model = replayer.model.eval()
                xv = x
                if v["layout"] == "channels_last":
                    model = copy.deepcopy(model).to(memory_format=torch.channels_last)
                    xv = x.contiguous(memory_format=torch.channels_last)
                evaluate(model, xv[:v["batch"]], y[:v["batch"]], v["batch"], v["mode"], margin)  # warm-up
                t0, c0 = time.perf_counter(), time.process_time()
                correct, borderline, pred = evaluate(model, xv, y, v["batch"], v["mode"], margin)
                rows.append({"state": label, "seconds": time.perf_counter() - t0,
                             "cpu_seconds": time.process_time() - c0, "correct": correct,
                             "borderline": borderline, "pred": pred})
            canonical = canonical or rows
            entry = compare(v, rows, canonical, spec.evaluation.claim_tolerance)
            entry["load_average"] = common.load_average()
            common.progress(f"{v['name']}: {entry['seconds']['median']:.2f} s per evaluation of E "
                            f"({entry['cpu_seconds']['median']:.2f} CPU s), correct "
                            f"{entry['correct']}, differing predictions {entry['differing_predictions']}, "
                            f"verdict kept: {entry['verdict_kept']}")
            result["variants"].append(entry)
    finally:
        torch.set_num_threads(before)
    base = result["variants"][0]["seconds"]["median"]
    for e in result["variants"]:
        e["speedup"] = common.ratio(base, e["seconds"]["median"], 2)
    kept = [e for e in result["variants"] if e["verdict_kept"]]
    result["fastest_kept"] = min(kept, key=lambda e: e["seconds"]["median"])["variant"]
    result["load_average_after"] = common.load_average()
    return common.emit(result, args, table)


def compare(v: dict, rows: list[dict], canonical: list[dict], tolerance: int) -> dict:
    correct = [r["correct"] for r in rows]
    diffs = [abs(r["correct"] - c["correct"]) for r, c in zip(rows, canonical)]
    verdicts = [correct[i + 1] > correct[i] for i in range(0, len(rows), 2)]
    canon_verdicts = [canonical[i + 1]["correct"] > canonical[i]["correct"] for i in range(0, len(rows), 2)]
    return {"variant": v["name"], **{k: v[k] for k in ("mode", "layout", "batch", "threads")},
            "seconds": common.summary([r["seconds"] for r in rows], 3),
            "cpu_seconds": common.summary([r["cpu_seconds"] for r in rows], 3),
            "correct": correct, "borderline": [r["borderline"] for r in rows],
            "differing_predictions": [int((r["pred"] != c["pred"]).sum()) for r, c in zip(rows, canonical)],
            "max_count_difference": max(diffs), "verdicts": verdicts,
            "verdict_kept": max(diffs) <= tolerance and verdicts == canon_verdicts,
            "counts_identical": max(diffs) == 0}


def table(res: dict) -> str:
    rows = [(e["variant"], e["seconds"]["median"], e["cpu_seconds"]["median"], e["speedup"], " ".join(map(str, e["correct"])),
             " ".join(map(str, e["differing_predictions"])), "yes" if e["verdict_kept"] else "NO",
             (e["load_average"] or ["-"])[0]) for e in res["variants"]]
    return "\n".join([
        f"polchain bench eval: {res['preset']} ({res['arch']}), one evaluation of E ({res['eval_size']} images); "
        f"the first variant is the canonical one",
        f"data: {res['data']}",
        f"states: {', '.join(res['states'])}",
        f"machine: {common.machine_line(res['machine'])}",
        "",
        common.format_table(["variant (mode/layout/batch/threads)", "s (median)", "CPU s", "speed-up", "correct per state",
                             "predictions differing", "verdict kept", "load"], rows),
        "",
        f"fastest that keeps the verdict (counts within claim_tolerance {res['claim_tolerance']}, same verdicts): "
        f"{res['fastest_kept']}",
    ])

