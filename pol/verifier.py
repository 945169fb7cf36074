"""verify_proof: the verifier's side.

Order of checks (each one becomes a Check in the report):

  manifest        strict schema validation                      bad-manifest
  merkle-root     recomputed from the manifest                   bad-merkle-root
  dataset-hash    pol.dataset_hash(inputs, targets)              bad-data-hash
  augmentation    "none", or an `augment` function was given     unsupported-augmentation
  batches         file digest, then every index in range         bad-batch-hash / bad-batch-index
  checkpoint[i]   file digest, tensor names/shapes vs the model  bad-checkpoint-hash / bad-checkpoint
  final-model     final checkpoint's model hash == model_hash    bad-checkpoint-hash
  replay[i]       segment i -> i+1 replayed, distances vs        replay-distance-exceeded
                  thresholds (l1, l2, linf, cos; each checked    (replay-error if the replay
                  on its own, all must pass)                      itself raised)

(missing-file / bad-file: a file is absent, not a regular file, too large or not
parseable as safetensors.) Replays run only if every integrity check passed.
Segments are grouped by the epoch of their first step; in each epoch the Q
segments with the largest update ||w_{i+1} - w_i||_2 are replayed (all if Q is None).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from . import proof as P


@dataclass(frozen=True)
class Thresholds:
    """Acceptance thresholds; a replay passes only if every distance is below its threshold.

    Defaults come from calibration on the demo model (docs/provenance.md):
    far above the measured reproduction error, far below a one-sample change of
    the data order. Absolute l1/l2 grow with model size: calibrate other models
    with pol.calibrate().
    """
    l1: float = 5e-3
    l2: float = 1e-4
    linf: float = 1e-5
    cos: float = 1e-10

    METRICS = ("l1", "l2", "linf", "cos")

    def check(self, d: dict[str, float]) -> dict[str, bool]:
        return {m: bool(d[m] < getattr(self, m)) for m in self.METRICS}  # NaN fails


DEFAULT_THRESHOLDS = Thresholds()


@dataclass
class Check:
    name: str
    passed: bool
    reason: Optional[str] = None       # reason code when failed
    detail: str = ""
    distances: Optional[dict[str, float]] = None   # replay checks: l1, l2, linf, cos
    metrics: Optional[dict[str, bool]] = None      # replay checks: per-threshold pass/fail


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


@dataclass
class VerificationReport:
    proof_dir: str
    thresholds: Thresholds
    queries_per_epoch: Optional[int]
    checks: list[Check] = field(default_factory=list)
    selected_segments: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, name, passed, reason=None, detail="", **kw) -> Check:
        c = Check(name, bool(passed), None if passed else reason, detail, **kw)
        self.checks.append(c)
        return c

    @property
    def replays(self) -> list[Check]:
        return [c for c in self.checks if c.name.startswith("replay[")]

    @property
    def passed(self) -> bool:
        return bool(self.replays) and all(c.passed for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return sorted({c.reason for c in self.checks if not c.passed and c.reason})

    def to_dict(self) -> dict:
        """JSON-ready (non-finite distances become the strings "nan" / "inf")."""
        return _json_safe({"proof_dir": self.proof_dir, "passed": self.passed, "reasons": self.reasons,
                           "thresholds": asdict(self.thresholds), "queries_per_epoch": self.queries_per_epoch,
                           "selected_segments": self.selected_segments, "timings": self.timings,
                           "checks": [asdict(c) for c in self.checks]})

    def format(self) -> str:
        lines = [f"proof-of-learning verification: {self.proof_dir}"]
        for c in self.checks:
            tag = "PASS" if c.passed else "FAIL"
            line = f"  [{tag}] {c.name}"
            if c.reason:
                line += f" ({c.reason})"
            if c.detail:
                line += f": {c.detail}"
            if c.distances is not None:
                line += "  " + " ".join(
                    f"{m}={c.distances[m]:.3e}{'' if c.metrics[m] else '!'}" for m in Thresholds.METRICS)
            lines.append(line)
        if not self.replays and all(c.passed for c in self.checks):
            lines.append("  no segment was replayed")
        t = self.thresholds
        lines.append(f"thresholds: l1<{t.l1:g} l2<{t.l2:g} linf<{t.linf:g} cos<{t.cos:g}; "
                     f"Q={self.queries_per_epoch if self.queries_per_epoch else 'all'}")
        lines.append("RESULT: " + ("VALID" if self.passed else "INVALID " + ",".join(self.reasons)))
        return "\n".join(lines)


# --------------------------------------------------------------------------- replay

def loss_fn(name: str) -> Callable:
    if name == "cross_entropy":
        return F.cross_entropy
    if name == "mse":
        return F.mse_loss
    raise ValueError(f"unsupported loss {name!r}")


def make_optimizer(model: torch.nn.Module, hp: P.Hyperparams) -> torch.optim.SGD:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=hp.lr,
                           momentum=hp.momentum, dampening=hp.dampening,
                           weight_decay=hp.weight_decay, nesterov=hp.nesterov)


def load_checkpoint_into(model: torch.nn.Module, optimizer: torch.optim.SGD,
                         ckpt: dict[str, torch.Tensor]) -> None:
    """Restore the model state_dict and the SGD momentum buffers from checkpoint tensors."""
    model.load_state_dict(P.model_tensors(ckpt), strict=True)
    for name, p in model.named_parameters():
        buf = ckpt.get(P.OPTIM_PREFIX + name + P.MOMENTUM_SUFFIX)
        if buf is not None:
            optimizer.state[p]["momentum_buffer"] = buf.clone()


def replay_segment(model_factory: Callable[[], torch.nn.Module], start: dict[str, torch.Tensor],
                   hp: P.Hyperparams, batches: Sequence[torch.Tensor], inputs: torch.Tensor,
                   targets: torch.Tensor, *, first_step: int = 0,
                   augment: Optional[Callable] = None) -> dict[str, torch.Tensor]:
    """Run len(batches) SGD steps from checkpoint tensors `start`; returns the model state_dict."""
    model = model_factory()
    opt = make_optimizer(model, hp)
    load_checkpoint_into(model, opt, start)
    model.train()
    criterion = loss_fn(hp.loss)
    for step, idx in enumerate(batches, start=first_step):
        x, y = inputs[idx], targets[idx]
        if augment is not None:
            x = augment(x, step=step, description=hp.augmentation)
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _float_vector(state: dict[str, torch.Tensor]) -> torch.Tensor:
    names = sorted((k for k, v in state.items() if v.dtype.is_floating_point),
                   key=lambda s: s.encode("utf-8"))
    if not names:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([state[k].detach().reshape(-1).to(torch.float64) for k in names])


def distances(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """l1, l2, linf of a-b and cosine distance 1 - <a,b>/(|a||b|) over the floating-point
    tensors of two state dicts (flattened in name order, float64)."""
    va, vb = _float_vector(a), _float_vector(b)
    if va.shape != vb.shape:
        raise ValueError("state dicts hold different floating-point tensors")
    diff = va - vb
    l2 = diff.norm().item()
    na, nb = va.norm().item(), vb.norm().item()
    if na == 0.0 and nb == 0.0:
        cos = 0.0
    elif na == 0.0 or nb == 0.0:
        cos = 1.0
    else:
        # 1 - <a,b>/(|a||b|) == (|a-b|^2 - (|a|-|b|)^2) / (2|a||b|): same value, but exact
        # (0) for identical vectors instead of ~1e-15 of cancellation noise.
        cos = (l2 * l2 - (na - nb) ** 2) / (2.0 * na * nb)
        cos = min(2.0, max(0.0, cos)) if math.isfinite(cos) else math.nan
    return {"l1": diff.abs().sum().item(), "l2": l2,
            "linf": diff.abs().max().item() if diff.numel() else 0.0, "cos": cos}


# --------------------------------------------------------------------------- checks

def _check_dataset(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    if (not isinstance(dataset, (tuple, list)) or len(dataset) != 2
            or not all(isinstance(t, torch.Tensor) for t in dataset)):
        raise TypeError("dataset must be a pair of tensors (inputs, targets)")
    x, y = dataset
    if x.dim() < 1 or y.dim() < 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError("inputs and targets must be non-empty with the same first dimension")
    return x, y


def parse_batches(tensors: dict[str, torch.Tensor], m: P.Manifest, n: int) -> list[torch.Tensor]:
    """Split the recorded data order into per-step index tensors; ProofError("bad-batch-index")."""
    def bad(msg):
        raise P.ProofError("bad-batch-index", msg)
    if set(tensors) != {"indices", "lengths"}:
        bad(f"expected tensors 'indices' and 'lengths', got {sorted(tensors)}")
    idx, lengths = tensors["indices"], tensors["lengths"]
    for k, t in (("indices", idx), ("lengths", lengths)):
        if t.dtype != torch.int64 or t.dim() != 1:
            bad(f"{k}: expected a 1-D int64 tensor")
    if len(lengths) != m.num_steps:
        bad(f"{len(lengths)} batches recorded for {m.num_steps} steps")
    if len(lengths) and (lengths.min() < 1 or lengths.max() > m.hyperparams.batch_size):
        bad(f"batch sizes must be in [1, {m.hyperparams.batch_size}]")
    if int(lengths.sum()) != len(idx):
        bad("lengths do not add up to the number of indices")
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        pos = int(((idx < 0) | (idx >= n)).nonzero()[0])
        step = int((torch.cumsum(lengths, 0) <= pos).sum())
        bad(f"index {int(idx[pos])} at step {step} is outside the dataset (size {n})")
    return list(torch.split(idx, lengths.tolist()))


def _check_structure(ckpt: dict[str, torch.Tensor], template: dict[str, torch.Tensor],
                     params: dict[str, torch.Tensor], momentum: bool) -> Optional[str]:
    """Tensor names, shapes and dtypes must match the model; returns a problem or None."""
    model = P.model_tensors(ckpt)
    if set(model) != set(template):
        return f"model tensors differ from the model's state_dict: {sorted(set(model) ^ set(template))[:5]}"
    for k, t in template.items():
        if model[k].shape != t.shape or model[k].dtype != t.dtype:
            return f"{k}: {model[k].dtype}{list(model[k].shape)} != model's {t.dtype}{list(t.shape)}"
    for k, t in ckpt.items():
        if k.startswith(P.MODEL_PREFIX):
            continue
        name = k[len(P.OPTIM_PREFIX):-len(P.MOMENTUM_SUFFIX)]
        if (not k.startswith(P.OPTIM_PREFIX) or not k.endswith(P.MOMENTUM_SUFFIX)
                or name not in params):
            return f"unexpected tensor {k!r}"
        if not momentum:
            return f"{k}: momentum buffer recorded but momentum is 0"
        if t.shape != params[name].shape or t.dtype != params[name].dtype:
            return f"{k}: shape/dtype does not match parameter {name!r}"
    return None


class _Checkpoints:
    """Loads checkpoints on demand, checking the committed digest on every load."""

    def __init__(self, proof_dir, m: P.Manifest, max_bytes: int):
        self.proof_dir, self.m, self.max_bytes = proof_dir, m, max_bytes

    def load(self, i: int) -> dict[str, torch.Tensor]:
        ref = self.m.checkpoints[i]
        tensors = P.load_tensors(self.proof_dir, ref.file, self.max_bytes)
        if P.tensor_hash(tensors) != ref.sha256:
            raise P.ProofError("bad-checkpoint-hash",
                               f"{ref.file}: contents do not match the committed sha256")
        return tensors


def verify_proof(proof_dir: str | os.PathLike, model_factory: Callable[[], torch.nn.Module],
                 dataset: Sequence[torch.Tensor], *, queries_per_epoch: Optional[int] = None,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS, augment: Optional[Callable] = None,
                 max_file_bytes: int = P.MAX_FILE_BYTES) -> VerificationReport:
    """Verify a proof directory.

    model_factory() must build the trained architecture (its initial weights are
    overwritten from the checkpoints); dataset is (inputs, targets) exactly as
    hashed by the prover; queries_per_epoch = Q largest updates per epoch to
    replay (None: every segment); augment(x, step=, description=) must be given
    when the proof records a seeded augmentation.
    """
    if queries_per_epoch is not None and (type(queries_per_epoch) is not int or queries_per_epoch < 1):
        raise ValueError("queries_per_epoch must be a positive integer or None")
    inputs, targets = _check_dataset(dataset)
    report = VerificationReport(os.fspath(proof_dir), thresholds, queries_per_epoch)
    t0 = time.perf_counter()

    try:
        obj = P.load_manifest_obj(proof_dir)
        m = P.parse_manifest(obj)
    except P.ProofError as e:
        report.add("manifest", False, e.reason, str(e))
        return report
    report.add("manifest", True, detail=f"{m.model_id} on {m.dataset_id}, {m.num_steps} steps, "
                                        f"{len(m.checkpoints)} checkpoints every {m.checkpoint_every}")

    root = P.compute_merkle_root(obj)
    report.add("merkle-root", root == m.merkle_root, "bad-merkle-root",
               m.merkle_root if root == m.merkle_root else f"recomputed {root} != recorded {m.merkle_root}")

    dh = P.dataset_hash(inputs, targets)
    report.add("dataset-hash", dh == m.dataset_hash, "bad-data-hash",
               dh if dh == m.dataset_hash else f"data hashes to {dh}, proof says {m.dataset_hash}")

    if m.hyperparams.augmentation != "none":
        report.add("augmentation", augment is not None, "unsupported-augmentation",
                   f"{m.hyperparams.augmentation['name']} (seed {m.hyperparams.augmentation['seed']})"
                   + ("" if augment is not None else ": no augment function given"))

    batches = None
    try:
        bt = P.load_tensors(proof_dir, m.batches_file, max_file_bytes)
        if P.tensor_hash(bt) != m.batches_sha256:
            raise P.ProofError("bad-batch-hash", f"{m.batches_file}: contents do not match the committed sha256")
        batches = parse_batches(bt, m, len(inputs))
        report.add("batches", True, detail=f"{m.num_steps} batches, {sum(len(b) for b in batches)} indices")
    except P.ProofError as e:
        report.add("batches", False, e.reason, str(e))

    template_model = model_factory()
    template = {k: v.detach() for k, v in template_model.state_dict().items()}
    params = dict(template_model.named_parameters())
    store = _Checkpoints(proof_dir, m, max_file_bytes)
    updates: dict[int, float] = {}
    prev = None
    for i, ref in enumerate(m.checkpoints):
        try:
            ck = store.load(i)
        except P.ProofError as e:
            report.add(f"checkpoint[{i}]", False, e.reason, f"step {ref.step}: {e}")
            prev = None
            continue
        problem = _check_structure(ck, template, params, m.hyperparams.momentum > 0)
        report.add(f"checkpoint[{i}]", problem is None, "bad-checkpoint",
                   f"step {ref.step}, {ref.file}" + (f": {problem}" if problem else ""))
        if problem:
            prev = None
            continue
        vec = P.model_tensors(ck)
        if prev is not None:
            updates[i - 1] = distances(vec, prev)["l2"]
        prev = vec
        if i == len(m.checkpoints) - 1:
            mh = P.model_hash(vec)
            report.add("final-model", mh == m.model_hash, "bad-checkpoint-hash",
                       mh if mh == m.model_hash else f"final model hashes to {mh}, proof says {m.model_hash}")
    report.timings["integrity_s"] = time.perf_counter() - t0

    if not all(c.passed for c in report.checks):
        return report  # replaying against unverified inputs proves nothing

    # choose segments: per epoch, the Q largest updates
    by_epoch: dict[int, list[int]] = {}
    for i in range(len(m.checkpoints) - 1):
        by_epoch.setdefault(m.epoch_of(m.checkpoints[i].step), []).append(i)
    selected = []
    for seg in by_epoch.values():
        seg = sorted(seg, key=lambda i: (-updates[i], i))
        selected += seg if queries_per_epoch is None else seg[:queries_per_epoch]
    report.selected_segments = sorted(selected)

    t1 = time.perf_counter()
    for i in report.selected_segments:
        a, b = m.checkpoints[i], m.checkpoints[i + 1]
        try:
            start, end = store.load(i), store.load(i + 1)
        except P.ProofError as e:  # changed on disk since it was checked
            report.add(f"replay[{i}]", False, e.reason, str(e))
            continue
        try:
            got = replay_segment(model_factory, start, m.hyperparams, batches[a.step:b.step],
                                 inputs, targets, first_step=a.step, augment=augment)
        except Exception as e:  # e.g. a recorded loss that does not fit the model's outputs
            report.add(f"replay[{i}]", False, "replay-error", f"{type(e).__name__}: {e}")
            continue
        want = P.model_tensors(end)
        d = distances(got, want)
        ok = thresholds.check(d)
        exact = all(torch.equal(got[k], want[k]) for k in want if not want[k].dtype.is_floating_point)
        detail = f"steps {a.step}->{b.step} (epoch {m.epoch_of(a.step)}, update l2={updates[i]:.3e})"
        if not exact:
            detail += "; non-float buffers differ"
        report.add(f"replay[{i}]", all(ok.values()) and exact, "replay-distance-exceeded", detail,
                   distances=d, metrics=ok)
    report.timings["replay_s"] = time.perf_counter() - t1
    report.timings["total_s"] = time.perf_counter() - t0
    return report
