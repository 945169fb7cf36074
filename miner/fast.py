"""The fast search: many candidate batches per forward/backward pass.

At one W, G candidate batches of S samples go through the network together.
BatchNorm normalises each group of S with its own statistics ("ghost
batches"), so the groups are independent and one backward pass of the summed
group losses yields every group's gradient signal at once. Only the k
required coordinates are computed per group, from the saved layer inputs and
the gradients at the layer outputs; no weight gradient is materialised (the
autograd engine skips weight-gradient kernels when only activation gradients
are asked for).

A candidate whose predicted change ``-lr * g`` meets R is *confirmed* with the
canonical fp32 ``update`` before it is published. When no candidate is
confirmed, the model takes one canonical SGD step on the first candidate batch
(docs/mining.md explains the choice) so training goes on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from consensus.block import BlockHeader
from consensus.data import normalize
from consensus.model import genesis_model
from consensus.requirements import Requirement, derive_requirements, ulp
from consensus.spec import ChainSpec
from consensus.training import Replayer
from consensus.validation import miner_accuracy_ok, miner_requirements_ok
from consensus.weights import State

from .reference import Found, ReferenceMiner


class GhostBatchNorm(nn.Module):
    """BatchNorm2d in train mode, statistics per group of ``group`` samples.

    Shares weight and bias with the canonical module; never touches running
    statistics (the search must not change W).
    """

    def __init__(self, bn: nn.BatchNorm2d, group: int):
        super().__init__()
        self.weight, self.bias, self.eps, self.group = bn.weight, bn.bias, bn.eps, group
        self.saved_xhat: torch.Tensor | None = None

    def forward(self, x):
        n, c, h, w = x.shape
        xg = x.view(n // self.group, self.group, c, h, w)
        mean = xg.mean(dim=(1, 3, 4), keepdim=True)
        var = xg.var(dim=(1, 3, 4), unbiased=False, keepdim=True)
        xhat = ((xg - mean) * torch.rsqrt(var + self.eps)).view(n, c, h, w)
        self.saved_xhat = xhat.detach()
        return xhat * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


@dataclass(frozen=True)
class Target:
    """Where one requirement lives: module, parameter kind, coordinates."""
    req: Requirement
    module: str
    kind: str            # conv | linear-w | linear-b | bn-w | bn-b
    coord: tuple[int, ...]


def build_search_model(canonical: nn.Module, spec: ChainSpec) -> nn.Module:
    """A second instance of the architecture sharing the canonical parameters."""
    search = genesis_model(spec.model.arch, spec.model.init_seed, spec.model.num_classes)
    canon = dict(canonical.named_modules())
    for name, mod in list(search.named_modules()):
        src = canon[name]
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            mod.weight = src.weight
            if mod.bias is not None:
                mod.bias = src.bias
        elif isinstance(mod, nn.BatchNorm2d):
            parent_name, _, attr = name.rpartition(".")
            parent = search.get_submodule(parent_name) if parent_name else search
            setattr(parent, attr, GhostBatchNorm(src, spec.training.batch_size))
    return search.to(next(canonical.parameters()).device)


def locate_targets(model: nn.Module, reqs: tuple[Requirement, ...], index) -> list[Target]:
    owner = {}
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            owner[id(p)] = (mname, mod, pname)
    out = []
    for r in reqs:
        i, off = index.locate(r.index)
        mname, mod, pname = owner[id(index.params[i])]
        coord = tuple(int(c) for c in torch.unravel_index(torch.tensor(off), index.params[i].shape))
        if isinstance(mod, nn.Conv2d):
            kind = "conv"
        elif isinstance(mod, nn.Linear):
            kind = "linear-w" if pname == "weight" else "linear-b"
        else:
            kind = "bn-w" if pname == "weight" else "bn-b"
        out.append(Target(r, mname, kind, coord))
    return out


class FastSearch:
    """Evaluates G candidate batches at the current W; returns per-group gradients at R."""

    def __init__(self, replayer: Replayer, groups: int):
        self.r = replayer
        self.spec = replayer.spec
        self.groups = groups
        self.model = build_search_model(replayer.model, self.spec)
        self.modules = dict(self.model.named_modules())

    def group_gradients(self, batches: list[tuple[int, ...]], targets: list[Target]) -> torch.Tensor:
        """[G, k] gradients dL_g/dw at each required coordinate (fp32, approximate)."""
        s = self.spec.training.batch_size
        idx = torch.tensor([i for b in batches for i in b], dtype=torch.int64)
        x = normalize(self.r.dataset.train_x[idx], self.spec.mean, self.spec.std).to(self.r.device)
        y = self.r.dataset.train_y[idx].to(torch.int64).to(self.r.device)
        saved: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        names = {t.module for t in targets}
        hooks = [self.modules[n].register_forward_hook(
            lambda mod, inp, out, n=n: saved.__setitem__(n, (inp[0].detach(), out))) for n in names]
        try:
            self.model.train()
            logits = self.model(x)
        finally:
            for h in hooks:
                h.remove()
        loss = F.cross_entropy(logits, y, reduction="sum") / s   # = sum over groups of group-mean losses
        order = sorted(names)
        gouts = dict(zip(order, torch.autograd.grad(loss, [saved[n][1] for n in order])))
        g = len(batches)
        cols = []
        for t in targets:
            inp, gout = saved[t.module][0], gouts[t.module]
            cols.append(_per_sample_grad(t, self.modules[t.module], inp, gout).view(g, s).sum(1))
        return torch.stack(cols, dim=1).float().cpu()


def _per_sample_grad(t: Target, mod: nn.Module, inp: torch.Tensor, gout: torch.Tensor) -> torch.Tensor:
    if t.kind == "conv":
        o, c, kh, kw = t.coord
        (sh, sw), (ph, pw) = mod.stride, mod.padding
        ho, wo = gout.shape[2], gout.shape[3]
        xp = F.pad(inp[:, c], (pw, pw, ph, ph))
        patch = xp[:, kh: kh + sh * (ho - 1) + 1: sh, kw: kw + sw * (wo - 1) + 1: sw]
        return (gout[:, o] * patch).sum(dim=(1, 2))
    if t.kind == "linear-w":
        o, i = t.coord
        return gout[:, o] * inp[:, i]
    if t.kind == "linear-b":
        return gout[:, t.coord[0]]
    if t.kind == "bn-w":
        c = t.coord[0]
        return (gout[:, c] * mod.saved_xhat[:, c]).sum(dim=(1, 2))
    return gout[:, t.coord[0]].sum(dim=(1, 2))  # bn-b


class FastMiner(ReferenceMiner):
    """Same contract as ReferenceMiner.mine; G candidates per pass."""

    def __init__(self, spec: ChainSpec, replayer: Replayer, groups: int = 16, seed: int | None = None):
        super().__init__(spec, replayer, seed)
        self.search = FastSearch(replayer, groups)
        self.groups = groups

    def predicted_hits(self, grads: torch.Tensor, values: torch.Tensor, reqs) -> list[int]:
        """Groups whose predicted change -lr*g meets every requirement with half the margin."""
        lr = float(self.spec.lr)
        dirs = torch.tensor([r.direction for r in reqs], dtype=torch.float32)
        signed = -lr * grads * dirs                               # [G, k], > 0 = right way
        need = torch.clamp(ulp(values) * self.spec.requirements.margin_ulps,
                           min=float(self.spec.requirements.margin_abs)) * 0.5
        ok = (signed >= need).all(dim=1)
        return [int(i) for i in ok.nonzero().flatten()]

    def confirm(self, batch: tuple[int, ...], reqs, parent: BlockHeader) -> Found | None:
        """Canonical fp32 step from the loaded W; restores W unless it returns a block."""
        r = self.replayer
        w_before = r.state()
        before = r.index.gather(reqs)
        r.step(batch)
        after = r.index.gather(reqs)
        found = None
        if miner_requirements_ok(before, after, reqs, self.spec):
            self.progress.r_hits += 1
            acc_after = r.accuracy()
            acc_before = r.accuracy(w_before)
            if miner_accuracy_ok(acc_before, acc_after, parent, self.spec):
                found = Found(w_before, batch, acc_before, acc_after, 0, 0.0)
        r.load(w_before)
        return found

    def mine(self, parent: BlockHeader, k: int, w: State, *, should_stop: Callable[[], bool] = lambda: False,
             max_attempts: int | None = None) -> Found | None:
        r = self.replayer
        reqs = derive_requirements(parent.hash, k, r.index.total)
        targets = locate_targets(r.model, reqs, r.index)
        r.load(w)
        t0, attempts = time.perf_counter(), 0
        while not should_stop() and (max_attempts is None or attempts < max_attempts):
            batches = [self.random_batch() for _ in range(self.groups)]
            grads = self.search.group_gradients(batches, targets)
            attempts += len(batches)
            self.progress.attempts += len(batches)
            for i in self.predicted_hits(grads, r.index.gather(reqs), reqs):
                found = self.confirm(batches[i], reqs, parent)
                if found is not None:
                    found.attempts, found.seconds = attempts, time.perf_counter() - t0
                    return found
            r.step(batches[0])  # no block: keep training with one canonical step
        return None
