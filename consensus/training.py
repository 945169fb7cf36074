"""The canonical update step and the accuracy function.

``update(W, P)``: load W, model in train mode (BatchNorm uses batch statistics
and updates its running statistics), cross-entropy (mean over the S samples),
gradients by backprop, then for every learnable parameter, in fp32,
``w' = w - (lr * g)`` -- two rounded operations, no fused multiply-add, no
momentum, no weight decay. No data augmentation.

``correct_counts``: eval mode (running statistics), argmax of the logits (first
maximum on ties), the number of correct predictions on E, plus the number of
*borderline* predictions whose top-2 logit gap is below a margin (miners use
that to publish only verdicts that one flipped prediction cannot change).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset, normalize
from .model import genesis_model
from .requirements import IndexSpace, ParamIndex
from .spec import ChainSpec
from .weights import State, clone_state


def set_deterministic() -> None:
    """Settings for canonical steps: no TF32, deterministic cuDNN, no autotuning."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


_CANONICAL = threading.RLock()


@contextmanager
def canonical_threads(spec: ChainSpec) -> Iterator[None]:
    """Run the enclosed canonical steps on the spec's intra-op thread count, whatever the
    node's ``--threads`` says (PyTorch's CPU kernels reduce in a thread-count-dependent order,
    so the same step can round differently on 1 and 2 threads). PyTorch's thread count is
    process-wide: canonical sections are serialised by one lock, and other work (a miner's
    search pass) runs on the same count meanwhile, which costs speed, never a verdict."""
    with _CANONICAL:
        before = torch.get_num_threads()
        if before != spec.proof.replay_threads:
            torch.set_num_threads(spec.proof.replay_threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)


@dataclass(frozen=True)
class Accuracy:
    correct: int
    borderline: int


class Replayer:
    """Holds one model instance and the data for a spec; runs canonical steps.

    Not thread-safe: one Replayer per thread.
    """

    def __init__(self, spec: ChainSpec, dataset: Dataset, device: str | torch.device = "cpu"):
        self.spec = spec
        self.dataset = dataset
        self.device = torch.device(device)
        self.model = genesis_model(spec.model.arch, spec.model.init_seed, spec.model.num_classes).to(self.device)
        named = list(self.model.named_parameters())
        self.params = [p for _, p in named]
        self.index = ParamIndex(self.params)
        self.r_space = r_index_space(named, spec.proof.r_excluded)
        self._acc_cache: OrderedDict[str, Accuracy] = OrderedDict()
        self.lr = torch.tensor(spec.lr, dtype=torch.float32, device=self.device)
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

    # -- the canonical step ----------------------------------------------------
    def step(self, indices: Sequence[int]) -> None:
        """One canonical SGD step, in place on the loaded model."""
        x, y = self.batch(indices)
        self.model.train()
        loss = F.cross_entropy(self.model(x), y)
        grads = torch.autograd.grad(loss, self.params)
        with torch.no_grad():
            for p, g in zip(self.params, grads):
                p.sub_(g * self.lr)

    def update(self, state: State, indices: Sequence[int]) -> State:
        """W' = update(W, P) as a fresh state (W is not modified)."""
        self.load(state)
        with canonical_threads(self.spec):
            self.step(indices)
        return self.state()

    # -- accuracy on E -----------------------------------------------------------
    @torch.no_grad()
    def accuracy(self, state: State | None = None) -> Accuracy:
        if state is not None:
            self.load(state)
        self.model.eval()
        correct = borderline = 0
        step = self.spec.evaluation.batch
        for i in range(0, self.eval_x.shape[0], step):
            logits = self.model(self.eval_x[i:i + step]).float()
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
    m = genesis_model(spec.model.arch, spec.model.init_seed, spec.model.num_classes)
    return clone_state(m.state_dict())


def state_template(spec: ChainSpec) -> State:
    """Names, shapes and dtypes of the architecture's state (values unused)."""
    return genesis_state(spec)


def parameter_sizes(model: nn.Module) -> list[int]:
    return [p.numel() for p in model.parameters()]
