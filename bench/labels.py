"""`polchain bench labels`: how well a batch's labels predict each layer's update signs (issue 19.4).

A miner who can choose batches could pick them by their labels alone when a layer's update sign
follows from the labels (the head's does: the bias gradient of class c is negative when c is in the
batch). Such layers are kept out of R's index space (``proof.r_excluded``); this measures, per
parameter tensor, what the labels predict.

For ``--batches`` random batches (the spec's batch size, uniform train indices, as nonces derive
them) the fp32 gradient at W (genesis, after ``--train-steps`` plain SGD steps when given) is taken
in train mode; for up to ``--coords`` random coordinates of each tensor the sign of the update
(-gradient) is recorded with the batch's label histogram. Per coordinate, a least-squares fit of the
sign on the histogram (and a constant) over the first half of the batches predicts the second half;
the table gives, per tensor, the mean accuracy of that prediction against always guessing the first
half's majority sign, and whether the tensor is in R's index space. A coordinate whose update is 0
counts as missed by both.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from node.argtypes import nonneg_int, positive_int
from node.threads import threads_arg

from . import common


def register(sub) -> None:
    p = sub.add_parser("labels", help="per layer: how well the batch's labels predict the update signs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_spec_arguments(p, "tiny")
    p.add_argument("--batches", type=positive_int, default=None, help="random batches (default 800 tiny, 400 others)")
    p.add_argument("--coords", type=positive_int, default=64, help="coordinates sampled per tensor (default 64)")
    p.add_argument("--train-steps", type=nonneg_int, default=0, help="plain fp32 SGD steps from genesis first")
    p.add_argument("--threads", type=threads_arg, default=1)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--dataset-dir", "--data-dir", dest="data_dir", type=Path, default=None,
                   help="where CIFAR-10 lives, if it does (never downloaded)")
    common.add_output_arguments(p)
    p.set_defaults(func=run)


def predictability(signs, hist):
    """(label-fit accuracy, majority accuracy), each per coordinate: signs [N, M] in {-1, 0, 1},
    hist [N, C] label counts; fit on the first half, scored on the second."""
    import torch
    n = signs.shape[0] // 2
    x = torch.cat([hist, torch.ones(hist.shape[0], 1, dtype=hist.dtype)], dim=1)
    fit = torch.linalg.lstsq(x[:n], signs[:n]).solution                 # [C+1, M]
    pred = torch.where(x[n:] @ fit >= 0, 1.0, -1.0)
    label_acc = (pred == signs[n:]).to(torch.float64).mean(dim=0)
    majority = torch.where(signs[:n].sum(dim=0) >= 0, 1.0, -1.0)
    major_acc = (signs[n:] == majority).to(torch.float64).mean(dim=0)
    return label_acc, major_acc


def run(args) -> int:
    import torch
    import torch.nn.functional as F

    from consensus.data import normalize
    from consensus.model import genesis_model
    from consensus.training import r_index_space
    spec = common.load_spec(args)
    data, note = common.bench_dataset(spec, args.data_dir)
    batches = args.batches or (800 if spec.model.arch == "tiny-cnn" else 400)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    model = genesis_model(spec.model.arch, spec.model.init_seed, spec.model.num_classes).train()
    named = list(model.named_parameters())
    params = [p for _, p in named]
    lr = float(spec.lr)
    n_train, bs, classes = spec.dataset.train_size, spec.training.batch_size, spec.model.num_classes

    def grads(idx):
        i = torch.tensor(idx)
        x = normalize(data.train_x[i], spec.mean, spec.std)
        loss = F.cross_entropy(model(x), data.train_y[i].long())
        return torch.autograd.grad(loss, params)

    for _ in range(args.train_steps):
        gs = grads(rng.sample(range(n_train), bs))
        with torch.no_grad():
            for p, g in zip(params, gs):
                p.sub_(g * lr)
    if args.train_steps:
        common.progress(f"{args.train_steps} plain SGD steps from genesis")
    picks = [torch.tensor(sorted(rng.sample(range(p.numel()), min(args.coords, p.numel())))) for p in params]
    signs = [torch.empty(batches, len(c)) for c in picks]
    hist = torch.zeros(batches, classes)
    for b in range(batches):
        idx = rng.sample(range(n_train), bs)
        hist[b] = torch.bincount(data.train_y[torch.tensor(idx)].long(), minlength=classes).float()
        for s, c, g in zip(signs, picks, grads(idx)):
            s[b] = torch.sign(-g.detach().flatten()[c])
        if (b + 1) % 100 == 0:
            common.progress(f"{b + 1}/{batches} batches")
    space = r_index_space(named, spec.proof.r_excluded)
    excluded = spec.proof.r_excluded
    rows = []
    for (name, p), s in zip(named, signs):
        label_acc, major_acc = predictability(s, hist)
        rows.append({"tensor": name, "numel": p.numel(), "in_r": not name.startswith(tuple(excluded)),
                     "label_fit": round(float(label_acc.mean()), 4), "majority": round(float(major_acc.mean()), 4),
                     "gain": round(float((label_acc - major_acc).mean()), 4),
                     "zero_share": round(float((s == 0).float().mean()), 4)})
    result = common.result_header("labels", preset=spec.name, data=note, machine=common.machine_info("cpu"),
                                  batches=batches, coords=args.coords, train_steps=args.train_steps,
                                  r_excluded=list(excluded), r_space_size=space.size, rows=rows,
                                  load_average=common.load_average())
    return common.emit(result, args, table, name=f"labels-{spec.name}")


def table(res: dict) -> str:
    rows = [(r["tensor"], r["numel"], "yes" if r["in_r"] else "no", r["label_fit"], r["majority"], r["gain"],
             r["zero_share"]) for r in sorted(res["rows"], key=lambda r: -r["gain"])]
    return "\n".join([
        f"polchain bench labels: {res['preset']}, {res['batches']} batches, {res['coords']} coordinates per tensor, "
        f"after {res['train_steps']} SGD steps; data: {res['data']}",
        f"machine: {common.machine_line(res['machine'])}", "",
        common.format_table(["tensor", "weights", "in R", "label fit", "majority", "gain", "zero"], rows), "",
        "label fit: share of held-out batches whose update sign a least-squares fit on the label histogram "
        "predicts; majority: always the commoner sign; gain = label fit - majority (mean over coordinates).",
    ])
