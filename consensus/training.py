"""The canonical step behind one narrow interface, and the accuracy function.

``CanonicalStep`` is the interface the node (``node/chain.py``), ``polchain verify`` and the miners
use, and the only one: load W, take canonical steps on batches, read W (whole, or at R's
coordinates), evaluate it on E. ``canonical_step(spec, dataset, device)`` is the factory.

The step (protocol v3) is ``consensus.exact_step.exact_sgd_step``: exact integer sums in fp64 and
single IEEE operations, the same bits on every machine, thread count and device (docs/protocol.md
§5). Nothing about it depends on ``torch.get_num_threads()`` or the CPU's kernels, so validators
replay on all their cores; the v2 rule of one canonical thread is gone.

``accuracy``: eval mode (running statistics), argmax of the logits (first maximum on ties), the
number of correct predictions on E, plus the number of *borderline* predictions whose top-2 logit
gap is below a margin (miners publish only verdicts that one flipped prediction cannot change).
It stays fp32 (any kernels): the claim tolerance absorbs the differences between machines
(docs/protocol.md §6).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset, normalize
from .exact_step import Rule, exact_sgd_step, normalisation_table
from .model import genesis_model
from .requirements import IndexSpace, ParamIndex, Requirement
from .spec import ChainSpec, unsupported_training
from .weights import State, clone_state


@dataclass(frozen=True)
class Accuracy:
    correct: int
    borderline: int


class CanonicalStep(Protocol):
    """What the node, ``verify`` and the miners may ask of the canonical model (one per thread)."""
    spec: ChainSpec
    dataset: Dataset
    device: torch.device
    r_space: IndexSpace                 # R's index space over the learnable parameters
    n_params: int                       # |W|: the learnable parameters, flattened in definition order

    def load(self, state: State) -> None: ...                    # W := state
    def step(self, indices: Sequence[int]) -> None: ...          # W := update(W, batch)
    def state(self) -> State: ...                                # a CPU copy of W
    def values(self, reqs: Sequence[Requirement]) -> torch.Tensor: ...   # W at R's coordinates (CPU fp32)
    def locate(self, index: int) -> tuple[str, int]: ...         # flat parameter index -> (name, offset)
    def copy_parameters_to(self, module: nn.Module) -> None: ...  # W's learnable tensors into a module
    def accuracy(self, state: State | None = None) -> "Accuracy": ...
    def cached_accuracy(self, state_hash: str, state: State | None = None) -> "Accuracy": ...


def canonical_step(spec: ChainSpec, dataset: Dataset, device: str | torch.device = "cpu") -> CanonicalStep:
    """The canonical step for ``spec`` on ``device`` (any device with fp64: CPU, CUDA)."""
    return Replayer(spec, dataset, device)


class Replayer:
    """The implementation of ``CanonicalStep``: one model instance holds W; ``step`` runs the exact
    step on it. Not thread-safe: one Replayer per thread."""

    def __init__(self, spec: ChainSpec, dataset: Dataset, device: str | torch.device = "cpu"):
        problem = unsupported_training(spec)
        if problem:
            raise ValueError(problem)
        self.spec = spec
        self.dataset = dataset
        self.device = torch.device(device)
        self.model = genesis_model(spec.model.arch, spec.model.init_seed, spec.model.num_classes).to(self.device)
        named = list(self.model.named_parameters())
        self.params = [p for _, p in named]
        self.index = ParamIndex(self.params)
        self.r_space = r_index_space(named, spec.proof.r_excluded)
        self._acc_cache: OrderedDict[str, Accuracy] = OrderedDict()
        self._eval_model: nn.Module | None = None
        self.param_names = tuple(n for n, _ in named)
        self.n_params = self.index.total
        self.rule = Rule(spec.training.exact_bits, float(torch.tensor(spec.lr, dtype=torch.float32)),
                         normalisation_table(spec.training.mean, spec.training.std))
        self._live = dict(self.model.state_dict())     # name -> the model's own tensor (no copy)
        m = spec.evaluation.size
        self.eval_x = normalize(dataset.test_x[:m], spec.mean, spec.std).to(self.device)
        self.eval_y = dataset.test_y[:m].to(torch.int64).to(self.device)
        self.logit_margin = float(spec.evaluation.miner_logit_margin)

    # -- state ---------------------------------------------------------------
    def load(self, state: State) -> None:
        self.model.load_state_dict(state, strict=True)

    def state(self) -> State:
        return {k: v.detach().to("cpu").clone() for k, v in self.model.state_dict().items()}

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        x = normalize(self.dataset.train_x[idx], self.spec.mean, self.spec.std)
        y = self.dataset.train_y[idx].to(torch.int64)
        return x.to(self.device), y.to(self.device)

    def values(self, reqs: Sequence[Requirement]) -> torch.Tensor:
        return self.index.gather(reqs)

    def locate(self, index: int) -> tuple[str, int]:
        i, off = self.index.locate(index)
        return self.param_names[i], off

    @torch.no_grad()
    def copy_parameters_to(self, module: nn.Module) -> None:
        mine = dict(module.named_parameters())
        for name in self.param_names:
            mine[name].copy_(self._live[name])

    # -- the canonical step ----------------------------------------------------
    def step(self, indices: Sequence[int]) -> None:
        """One canonical (exact) SGD step, in place on the loaded model."""
        if self.spec.training.step == "fp32":
            return self._fp32_step(indices)
        self._exact_step(indices)

    def _fp32_step(self, indices: Sequence[int]) -> None:
        """The dgg-paper preset's step: PyTorch's fp32 kernels and autograd, ``w' = w - (lr * g)``. Its bits
        depend on the CPU's kernels and the thread count (the v1 thread-split attack relies on it)."""
        x, y = self.batch(indices)
        self.model.train()
        loss = F.cross_entropy(self.model(x), y)
        grads = torch.autograd.grad(loss, self.params)
        lr = torch.tensor(self.spec.lr, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            for p, g in zip(self.params, grads):
                p.sub_(g * lr)

    @torch.no_grad()
    def _exact_step(self, indices: Sequence[int]) -> None:
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        images = self.dataset.train_x[idx].to(self.device)
        labels = self.dataset.train_y[idx].to(torch.int64).to(self.device)
        new = exact_sgd_step(self.spec.model.arch, self._live, images, labels, self.rule, self.param_names)
        for name, t in new.items():
            if t is not self._live[name]:
                self._live[name].copy_(t)

    def update(self, state: State, indices: Sequence[int]) -> State:
        """W' = update(W, P) as a fresh state (W is not modified)."""
        self.load(state)
        self.step(indices)
        return self.state()

    # -- accuracy on E -----------------------------------------------------------
    def _eval_copy(self) -> nn.Module:
        """The loaded state in a second model instance in channels_last layout, for evaluation only
        (26% less CPU on ResNet-18 than NCHW, the same predictions on every state measured:
        docs/benchmarks.md). The canonical model's layout, which the canonical step depends on,
        is never touched."""
        if self._eval_model is None:
            self._eval_model = genesis_model(self.spec.model.arch, self.spec.model.init_seed,
                                             self.spec.model.num_classes).to(self.device)
            self._eval_model = self._eval_model.to(memory_format=torch.channels_last).eval()
            self._eval_x = self.eval_x.contiguous(memory_format=torch.channels_last)
        dst = self._eval_model.state_dict()
        for name, t in self.model.state_dict().items():
            dst[name].copy_(t)
        return self._eval_model

    @torch.inference_mode()
    def accuracy(self, state: State | None = None) -> Accuracy:
        """Correct and borderline counts on E of ``state`` (or the loaded model), in eval mode."""
        if state is not None:
            self.load(state)
        model = self._eval_copy()
        correct = borderline = 0
        step = self.spec.evaluation.batch
        for i in range(0, self._eval_x.shape[0], step):
            logits = model(self._eval_x[i:i + step]).float()
            top2 = logits.topk(2, dim=1).values
            correct += int((logits.argmax(dim=1) == self.eval_y[i:i + step]).sum())
            borderline += int(((top2[:, 0] - top2[:, 1]) < self.logit_margin).sum())
        return Accuracy(correct, borderline)

    def cached_accuracy(self, state_hash: str, state: State | None = None) -> Accuracy:
        """acc on E of the state with this hash, evaluated once (``state``, or the loaded model)."""
        acc = self._acc_cache.get(state_hash)
        if acc is None:
            acc = self.accuracy(state)
            self._acc_cache[state_hash] = acc
            while len(self._acc_cache) > 256:
                self._acc_cache.popitem(last=False)
        return acc


def r_index_space(named_params, excluded: Sequence[str]) -> IndexSpace:
    """R's index space: the flat ranges of the parameters whose names start with none of ``excluded``."""
    segments, start = [], 0
    for name, p in named_params:
        if not any(name.startswith(prefix) for prefix in excluded):
            segments.append((start, p.numel()))
        start += p.numel()
    return IndexSpace(tuple(segments))


def genesis_state(spec: ChainSpec) -> State:
    m = genesis_model(spec.model.arch, spec.model.init_seed, spec.model.num_classes, spec.model.init)
    return clone_state(m.state_dict())
