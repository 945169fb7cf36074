"""The fast search: many candidate batches per forward/backward pass.

At one W, G candidate batches of S samples go through the network together.
BatchNorm normalises each group of S with its own statistics ("ghost
batches"), so the groups are independent and one backward pass of the summed
group losses yields every group's gradient signal at once. Only the k
required coordinates are computed per group, from the saved layer inputs and
the gradients at the layer outputs; no weight gradient is materialised (the
autograd engine skips weight-gradient kernels when only activation gradients
are asked for, and the backward pass stops at the earliest layer holding a
requirement).

The search model is a second instance of the architecture with its own copy
of the parameters, refreshed from the canonical model before every pass, so
it may use another memory layout (``channels_last``, off by default: no gain
measured on the 2-core CPU, docs/mining.md) without touching the canonical
model. Neither the layout of the canonical model nor the process-wide backend
settings are ever changed by the search: the node validates blocks in other
threads under the same settings.

A candidate whose predicted change ``-lr * g`` meets R is *confirmed* with the
canonical (exact) step before it is published: the search is fp32 on any kernels, thread count
and device, and only approximates the exact step; the confirmation decides. The search reaches
the canonical model only through ``consensus.training.CanonicalStep``.
When no candidate is confirmed and the block may still hold advance steps (j < J),
the model takes one canonical SGD step on the first candidate's batch, which becomes
an advance step of the block (docs/mining.md); from W_J on, passes stay at W_J.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from consensus.data import normalize
from consensus.model import genesis_model
from consensus.requirements import Requirement, ulp
from consensus.spec import ChainSpec
from consensus.training import CanonicalStep
from consensus.validation import miner_requirements_ok
from consensus.weights import State

from .reference import Found, Job, ReferenceMiner


class GhostBatchNorm(nn.Module):
    """BatchNorm2d in train mode, statistics per group of ``group`` samples.

    Uses the search model's own copies of weight and bias; never touches running
    statistics (the search must not change W). The statistics are biased
    (population) mean and variance over (samples of the group, H, W), as the
    canonical BatchNorm in train mode uses for normalisation; they are computed
    with contiguous two-pass reductions (``Tensor.var`` over a 5-d view was the
    slowest op of the pass on CPU).
    """

    def __init__(self, bn: nn.BatchNorm2d, group: int):
        super().__init__()
        self.weight, self.bias, self.eps, self.group = bn.weight, bn.bias, bn.eps, group
        self.saved_xhat: torch.Tensor | None = None

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.group
        g, m = n // s, s * h * w
        mean = x.sum(dim=(2, 3)).view(g, s, c).sum(dim=1).div(m)            # [g, c]
        d = x.view(g, s, c, h, w) - mean.view(g, 1, c, 1, 1)
        var = (d * d).sum(dim=(3, 4)).sum(dim=1).div(m)                     # [g, c], biased
        xhat = (d * torch.rsqrt(var + self.eps).view(g, 1, c, 1, 1)).reshape(n, c, h, w)
        self.saved_xhat = xhat.detach()
        return xhat * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


@dataclass(frozen=True)
class Target:
    """Where one requirement lives: module, parameter kind, coordinates."""
    req: Requirement
    module: str
    kind: str            # conv | linear-w | linear-b | bn-w | bn-b
    coord: tuple[int, ...]


def build_search_model(spec: ChainSpec, device: torch.device, *, channels_last: bool = False) -> nn.Module:
    """A second instance of the architecture with its own copies of the parameters.

    The copies are refreshed from the canonical model before every pass
    (``FastSearch.sync``); keeping them separate lets the search use another
    memory format (channels_last) without touching the canonical model, whose
    layout is part of what makes the canonical step reproducible.
    """
    search = genesis_model(spec.model.arch, spec.model.init_seed, spec.model.num_classes)
    for name, mod in list(search.named_modules()):
        if isinstance(mod, nn.BatchNorm2d):
            parent_name, _, attr = name.rpartition(".")
            parent = search.get_submodule(parent_name) if parent_name else search
            setattr(parent, attr, GhostBatchNorm(mod, spec.training.batch_size))
    search = search.to(device)
    if channels_last:
        search = search.to(memory_format=torch.channels_last)
    for p in search.parameters():
        p.requires_grad_(False)   # only activation gradients are ever asked for
    return search


def _unravel(offset: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major coordinates of a flat offset (torch.unravel_index imports sympy: ~4 s on first use)."""
    coord = []
    for dim in reversed(shape):
        offset, c = divmod(offset, dim)
        coord.append(c)
    return tuple(reversed(coord))


def locate_targets(model: nn.Module, reqs: tuple[Requirement, ...], step: CanonicalStep) -> list[Target]:
    """Where each requirement lives in ``model`` (the search model: same names as the canonical one)."""
    modules, params = dict(model.named_modules()), dict(model.named_parameters())
    out = []
    for r in reqs:
        name, off = step.locate(r.index)
        mname, _, pname = name.rpartition(".")
        mod = modules[mname]
        coord = _unravel(off, tuple(params[name].shape))
        if isinstance(mod, nn.Conv2d):
            kind = "conv"
        elif isinstance(mod, nn.Linear):
            kind = "linear-w" if pname == "weight" else "linear-b"
        else:
            kind = "bn-w" if pname == "weight" else "bn-b"
        out.append(Target(r, mname, kind, coord))
    return out


class FastSearch:
    """Evaluates G candidate batches at the current W; returns per-group gradients at R.

    ``channels_last`` applies to the search model's own parameter copies and
    inputs only; the canonical model is never touched. Off by default: on the
    2-core CPU it gained nothing measurable, and in the canonical (NCHW) layout
    the per-group gradients agree with the canonical step's to ~1e-6 relative
    (up to 2e-3 in channels_last at ill-conditioned coordinates).
    """

    def __init__(self, replayer: CanonicalStep, groups: int, channels_last: bool = False):
        self.r = replayer
        self.spec = replayer.spec
        self.groups = groups
        self.channels_last = channels_last
        self.model = build_search_model(self.spec, replayer.device, channels_last=self.channels_last)
        self.modules = dict(self.model.named_modules())

    def sync(self) -> None:
        """Copy the canonical parameters (W, as loaded in the canonical step) into the search model."""
        self.r.copy_parameters_to(self.model)

    def inputs(self, batches: list[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.tensor([i for b in batches for i in b], dtype=torch.int64)
        x = normalize(self.r.dataset.train_x[idx], self.spec.mean, self.spec.std).to(self.r.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.r.dataset.train_y[idx].to(torch.int64).to(self.r.device)
        return x, y

    def group_gradients(self, batches: list[tuple[int, ...]], targets: list[Target]) -> torch.Tensor:
        """[G, k] gradients dL_g/dw at each required coordinate (fp32, approximate).

        L_g is group g's mean cross-entropy, as in the canonical step on that
        batch alone; the model's current parameters (the replayer's W) are used.
        """
        s = self.spec.training.batch_size
        self.sync()
        x, y = self.inputs(batches)
        saved: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        names = {t.module for t in targets}

        def keep(name: str, inp, out: torch.Tensor) -> None:
            # Neither the input nor the parameter copies require grad, so autograd records
            # nothing before the first target: the graph starts at a target's output. An
            # output that does not require grad here depends on no earlier target; it
            # becomes a leaf of the graph. Activations before the earliest target are
            # freed as the forward pass goes on.
            if not out.requires_grad:
                out.requires_grad_(True)
            saved[name] = (inp[0].detach(), out)

        hooks = [self.modules[n].register_forward_hook(lambda mod, inp, out, n=n: keep(n, inp, out))
                 for n in names]
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
        with torch.no_grad():
            cols = [_per_sample_grad(t, self.modules[t.module], saved[t.module][0], gouts[t.module]).view(g, s).sum(1)
                    for t in targets]
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
    """Same contract as ReferenceMiner.mine; G candidate nonces per pass at one W."""

    def __init__(self, spec: ChainSpec, replayer: CanonicalStep, groups: int = 16, seed: int | None = None,
                 channels_last: bool = False, min_advance: int = 0):
        super().__init__(spec, replayer, seed, min_advance)
        self.search = FastSearch(replayer, groups, channels_last)
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

    def search_pass(self, batches: list[tuple[int, ...]], reqs, targets: list[Target]) -> list[int]:
        """Indices of the candidate batches predicted to meet R at the loaded W."""
        grads = self.search.group_gradients(batches, targets)
        return self.predicted_hits(grads, self.replayer.values(reqs), reqs)

    def requirements_confirmed(self, batch: tuple[int, ...], reqs) -> bool:
        """The canonical (exact) step from the loaded W meets R with the miner's margin. The model
        holds the stepped state afterwards."""
        r = self.replayer
        before = r.values(reqs)
        r.step(batch)
        return miner_requirements_ok(before, r.values(reqs), reqs, self.spec)

    def mine(self, job: Job, parent_state: State, *, should_stop: Callable[[], bool] = lambda: False,
             max_attempts: int | None = None) -> Found | None:
        r, J = self.replayer, self.spec.proof.max_advance_steps
        path: list[int] = []
        w_j = parent_state
        r.load(w_j)
        t0, attempts, epoch = time.perf_counter(), 0, None
        while not should_stop() and (max_attempts is None or attempts < max_attempts):
            ts = job.timestamp()
            if job.epoch(self.spec, ts) != epoch:
                if epoch is not None:           # new batches: the path so far is not this epoch's (v4)
                    path, w_j = self.new_epoch(parent_state)
                epoch, reqs = job.epoch(self.spec, ts), self.requirements(job, ts)
                targets = locate_targets(self.search.model, reqs, r)
            if len(path) < self.min_advance:      # advance steps first: no search before them
                nonce = self.random_nonce()
                self.advance(job, epoch, nonce)
                attempts += 1                     # a step, if not a search: it counts against max_attempts
                path.append(nonce)
                path, w_j = self.after_advance(job, path, parent_state, w_j)
                continue
            nonces = [self.random_nonce() for _ in range(self.groups)]
            c0 = time.process_time()
            batches = [self.batch(job, epoch, n) for n in nonces]
            hits = self.search_pass(batches, reqs, targets)
            self.progress.search_cpu_s += time.process_time() - c0
            attempts += len(batches)
            self.progress.attempts += len(batches)
            for i in hits:
                if should_stop():
                    return None
                if self.requirements_confirmed(batches[i], reqs):
                    found = self.accept(job, path + [nonces[i]], ts, attempts, t0)
                    if found is not None:
                        return found
                r.load(w_j)
            if len(path) < J and not should_stop():   # no block at W_j: one canonical step, an advance step
                self.advance(job, epoch, nonces[0])
                path.append(nonces[0])
                path, w_j = self.after_advance(job, path, parent_state, w_j)
        return None

    def returns_to(self, j: int) -> bool:
        """Every searched W_j is reloaded after a confirmation step; none before ``min_advance``."""
        return j >= self.min_advance

    def advance(self, job: Job, epoch: int, nonce: int) -> None:
        self.replayer.step(self.batch(job, epoch, nonce))

