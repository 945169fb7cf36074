"""`polchain bench floor`: what a best-of-N over-claim costs the next honest miner (issue 19.3).

A block may claim up to ``claim_tolerance`` more correct answers on E than its W' gets, and a miner
may publish the best of many trajectories; the next block's floor is the parent's claim +
``min_improvement``, lowered by ``floor_relax`` per redraw epoch since the parent (v3). This measures
the honest child's chance of clearing that floor after such a parent, against after an honest one.

From W (genesis, then ``--warm-steps`` canonical steps on random batches), per run:

* the honest parent: one trajectory of J+1 canonical steps on random batches, claiming its true
  acc(W') on E;
* the attacker's parent: the best of ``--trials`` such trajectories by acc(W'), claiming
  acc + ``claim_tolerance``;
* after each, ``--children`` honest children (J+1 random steps from the parent's W'): the share whose
  acc clears the floor at redraw epoch 0, 1, 2, ... -- an honest miner's candidates per block scale
  as 1 / that share (the requirements R are met independently of the floor).

The steps are the chain's canonical (exact) steps; the accuracy is the validators' evaluation of E.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from node.argtypes import nonneg_int, positive_int
from node.threads import threads_arg

from . import common


def register(sub) -> None:
    p = sub.add_parser("floor", help="a best-of-N over-claim against the next honest block's floor",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_spec_arguments(p, "tiny")
    p.add_argument("--trials", type=positive_int, default=300, help="trajectories the attacker picks the best of")
    p.add_argument("--children", type=positive_int, default=100, help="honest children sampled after each parent")
    p.add_argument("--runs", type=positive_int, default=3)
    p.add_argument("--warm-steps", type=nonneg_int, default=300, help="canonical steps from genesis to W")
    p.add_argument("--epochs", type=nonneg_int, default=3, help="redraw epochs reported (0 .. this)")
    p.add_argument("--threads", type=threads_arg, default=1)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--dataset-dir", "--data-dir", dest="data_dir", type=Path, default=None,
                   help="where CIFAR-10 lives, if it does (never downloaded)")
    common.add_output_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    spec, data, note, r, rng = common.canonical_run(args)
    n, bs, j1 = spec.dataset.train_size, spec.training.batch_size, spec.proof.max_advance_steps + 1
    tol, raise_, relax = spec.evaluation.claim_tolerance, spec.proof.min_improvement, spec.proof.floor_relax

    def trajectory(w):
        """(W', acc(W').correct) after J+1 canonical steps on random batches from w."""
        r.load(w)
        for _ in range(j1):
            r.step(rng.sample(range(n), bs))
        return r.state(), r.accuracy().correct

    w = common.warm_state(r, args.warm_steps, rng)
    start_acc = r.accuracy().correct
    common.progress(f"W after {args.warm_steps} steps: {start_acc} / {spec.evaluation.size} on E")

    def clear_shares(parent_w, claim) -> list[float]:
        accs = [trajectory(parent_w)[1] for _ in range(args.children)]
        return [sum(a >= max(0, claim + raise_ - relax * e) for a in accs) / len(accs)
                for e in range(args.epochs + 1)]

    runs = []
    for i in range(args.runs):
        hw, hacc = trajectory(w)
        best = max((trajectory(w) for _ in range(args.trials)), key=lambda t: t[1])
        honest, attacked = clear_shares(hw, hacc), clear_shares(best[0], best[1] + tol)
        runs.append({"honest_parent_acc": hacc, "best_of_n_acc": best[1], "attacker_claim": best[1] + tol,
                     "honest_clear_share_by_epoch": honest, "attacked_clear_share_by_epoch": attacked})
        common.progress(f"run {i + 1}/{args.runs}: honest parent {hacc} -> children clear at epoch 0: "
                        f"{honest[0]:.2f}; best of {args.trials} {best[1]} claiming {best[1] + tol} -> "
                        f"{attacked[0]:.2f} (epoch 1: {attacked[1]:.2f})")

    def mean(key, e):
        return round(statistics.mean(x[key][e] for x in runs), 3)

    result = common.result_header(
        "floor", preset=spec.name, data=note, machine=common.machine_info("cpu"), trials=args.trials,
        children=args.children, warm_steps=args.warm_steps, start_acc=start_acc, steps_per_block=j1,
        claim_tolerance=tol, min_improvement=raise_, floor_relax=relax, runs=runs,
        honest_clear_share=[mean("honest_clear_share_by_epoch", e) for e in range(args.epochs + 1)],
        attacked_clear_share=[mean("attacked_clear_share_by_epoch", e) for e in range(args.epochs + 1)],
        load_average=common.load_average())
    return common.emit(result, args, table, name=f"floor-{spec.name}")


def table(res: dict) -> str:
    h, a = res["honest_clear_share"], res["attacked_clear_share"]
    rows = [(e, h[e], a[e], common.ratio(h[0], a[e], 2) if a[e] else "-") for e in range(len(h))]
    return "\n".join([
        f"polchain bench floor: {res['preset']}, best of {res['trials']} claiming +{res['claim_tolerance']}, "
        f"{res['children']} honest children per parent, {len(res['runs'])} runs (means); data: {res['data']}",
        f"machine: {common.machine_line(res['machine'])}",
        f"W: {res['start_acc']} correct on E after {res['warm_steps']} steps; floor = claim {res['min_improvement']:+d}"
        f" - {res['floor_relax']} per redraw epoch", "",
        common.format_table(["redraw epoch", "clear after honest parent", "clear after best-of-N",
                             "candidates x (vs honest, epoch 0)"], rows),
    ])
