"""Threshold calibration: how far apart are honest reproductions, and how far is a lie?

For each segment of an honest proof, calibrate() measures four kinds of distance
between a replayed end state and a recorded one (l1, l2, linf, cosine):

  reproduction   replay with each thread count (torch.set_num_threads) vs the
                 recorded checkpoint, and the replays vs each other   -> max
  rounding       replay from a start state with a 1-ulp (float32) relative
                 perturbation of every weight: a stand-in for another machine's
                 different rounding                                   -> max
  one-sample     replay with ONE index of the first batch changed     -> min
  wrong-segment  replay vs the checkpoint before / two after (the end
                 state of a different segment)                        -> min

Good thresholds sit well above the first two and well below the last two.
Run `python -m pol.demo calibrate` for the demo figures (docs/provenance.md).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from . import proof as P
from .verifier import Thresholds, _Checkpoints, _check_dataset, distances, parse_batches, replay_segment

METRICS = Thresholds.METRICS


@dataclass
class CalibrationResult:
    thread_counts: tuple[int, ...]
    segments: list[int]
    reproduction: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, 0.0))
    rounding: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, 0.0))
    one_sample: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, math.inf))
    wrong_segment: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, math.inf))

    def _merge(self, name: str, d: dict[str, float], fn) -> None:
        cur = getattr(self, name)
        for m in METRICS:
            cur[m] = fn(cur[m], d[m])

    def suggest(self) -> Thresholds:
        """Geometric mean of the largest honest and the smallest dishonest distance."""
        out = {}
        for m in METRICS:
            lo = max(self.reproduction[m], self.rounding[m], 1e-300)
            hi = min(self.one_sample[m], self.wrong_segment[m])
            out[m] = math.sqrt(lo * hi)
        return Thresholds(**out)

    def check(self, t: Thresholds) -> dict[str, bool]:
        """Does each threshold separate honest from dishonest on this data?"""
        return {m: max(self.reproduction[m], self.rounding[m]) < getattr(t, m)
                < min(self.one_sample[m], self.wrong_segment[m]) for m in METRICS}

    def format(self) -> str:
        rows = ["| distance | l1 | l2 | linf | cos |", "|---|---|---|---|---|"]
        for label, name in (("reproduction (max)", "reproduction"), ("1-ulp rounding (max)", "rounding"),
                            ("one sample changed (min)", "one_sample"),
                            ("different segment (min)", "wrong_segment")):
            d = getattr(self, name)
            rows.append(f"| {label} | " + " | ".join(f"{d[m]:.2e}" for m in METRICS) + " |")
        return "\n".join(rows)


def _perturb(tensors: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in tensors.items():
        if k.startswith(P.MODEL_PREFIX) and v.dtype.is_floating_point:
            sign = torch.randint(0, 2, v.shape, generator=g).to(v.dtype) * 2 - 1
            v = v * (1 + sign * torch.finfo(torch.float32).eps)
        out[k] = v
    return out


def calibrate(proof_dir: str | os.PathLike, model_factory: Callable[[], torch.nn.Module],
              dataset: Sequence[torch.Tensor], *, thread_counts: Sequence[int] = (1, 2),
              segments: Optional[Sequence[int]] = None) -> CalibrationResult:
    """Measure reproduction error vs tamper distances on an honest proof (see module doc)."""
    inputs, targets = _check_dataset(dataset)
    m = P.load_manifest(proof_dir)
    bt = P.load_tensors(proof_dir, m.batches_file)
    if P.tensor_hash(bt) != m.batches_sha256:
        raise P.ProofError("bad-batch-hash", "batches file does not match the manifest")
    batches = parse_batches(bt, m, len(inputs))
    store = _Checkpoints(proof_dir, m, P.MAX_FILE_BYTES)
    n_seg = len(m.checkpoints) - 1
    segs = list(range(n_seg)) if segments is None else list(segments)
    res = CalibrationResult(tuple(thread_counts), segs)
    threads = torch.get_num_threads()
    hp = m.hyperparams

    def replay(start, segment_batches, first):
        return replay_segment(model_factory, start, hp, segment_batches, inputs, targets, first_step=first)

    try:
        for i in segs:
            a, b = m.checkpoints[i], m.checkpoints[i + 1]
            start, end = store.load(i), P.model_tensors(store.load(i + 1))
            seg_batches = batches[a.step:b.step]
            reps = []
            for t in thread_counts:
                torch.set_num_threads(t)
                reps.append(replay(start, seg_batches, a.step))
            torch.set_num_threads(threads)
            for r in reps:
                res._merge("reproduction", distances(r, end), max)
                res._merge("reproduction", distances(r, reps[0]), max)
            res._merge("rounding", distances(replay(_perturb(start, i), seg_batches, a.step), end), max)
            changed = [bb.clone() for bb in seg_batches]
            changed[0][0] = (changed[0][0] + 1) % len(inputs)
            res._merge("one_sample", distances(replay(start, changed, a.step), end), min)
            res._merge("wrong_segment", distances(reps[0], P.model_tensors(start)), min)
            if i + 2 < len(m.checkpoints):
                res._merge("wrong_segment", distances(reps[0], P.model_tensors(store.load(i + 2))), min)
    finally:
        torch.set_num_threads(threads)
    return res
