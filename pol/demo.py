"""A small end-to-end demo: a seeded synthetic dataset, an MLP, a recorded training run.

The dataset ("demo-data") and model ("demo-mlp") are fully defined here, so the
CLI can rebuild them from the ids in a manifest. Runs in about a second on 2 CPU cores.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .proof import dataset_hash
from .recorder import ProofRecorder
from .verifier import verify_proof

MODEL_ID = "demo-mlp"
DATASET_ID = "demo-data"
DATA_SEED = 20210524
N, D, C, HIDDEN = 1024, 32, 4, 64
BATCH = 32
STEPS_PER_EPOCH = N // BATCH
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4


def demo_dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """1024 Gaussian points in 32-d, 4 classes given by a random 2-layer teacher (learnable)."""
    g = torch.Generator().manual_seed(DATA_SEED)
    x = torch.randn(N, D, generator=g)
    w1, w2 = torch.randn(D, 16, generator=g), torch.randn(16, C, generator=g)
    y = (torch.tanh(x @ w1) @ w2).argmax(dim=1)
    return x, y


def demo_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(D, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, C),
    )


def train_demo(out_dir, steps: int = 96, checkpoint_every: int = 8, seed: int = 0,
               record: bool = True) -> torch.nn.Module:
    """Plain SGD training loop, with the proof recorder hooked in when `record`."""
    x, y = demo_dataset()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = demo_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    rec = None
    if record:
        rec = ProofRecorder(out_dir, model, opt, dataset_hash=dataset_hash(x, y),
                            checkpoint_every=checkpoint_every, model_id=MODEL_ID, dataset_id=DATASET_ID,
                            hyperparams={"batch_size": BATCH, "steps_per_epoch": STEPS_PER_EPOCH,
                                         "seed": seed, "loss": "cross_entropy", "augmentation": "none"})
        rec.on_train_start()
    order = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    while step < steps:
        for idx in torch.randperm(N, generator=order).split(BATCH):
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            if rec:
                rec.on_step(step, idx)
            step += 1
    if rec:
        rec.on_end()
    return model


def accuracy(model: torch.nn.Module) -> float:
    x, y = demo_dataset()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def run_demo(out_dir, steps: int = 96, checkpoint_every: int = 8, seed: int = 0) -> Path:
    """Train the demo MLP with the recorder; returns the proof directory."""
    train_demo(out_dir, steps, checkpoint_every, seed)
    return Path(out_dir)


def measure_cost(epochs: int = 8, intervals=(4, 16), queries=(1, 2), repeats: int = 5,
                 threads: int | None = 1) -> list[dict]:
    """Verification time as a fraction of (recorded) training time, per (k, Q).

    Median of `repeats` runs each. "replay_fraction" counts replayed steps only
    (Q*k per epoch over steps_per_epoch); "time_fraction" is wall-clock total
    verification (hashing, loading, replay) over wall-clock recorded training;
    "replay_over_plain" is the replay time alone over training without the recorder.
    threads: torch intra-op threads during the measurement (1 by default: this
    tiny model gains nothing from more, and it keeps timings stable on a shared machine).
    """
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        train_demo(None, STEPS_PER_EPOCH, 1, record=False)  # warm-up (lazy imports, allocator)
        return _measure(epochs * STEPS_PER_EPOCH, intervals, queries, repeats)
    finally:
        torch.set_num_threads(saved_threads)


def _measure(steps, intervals, queries, repeats) -> list[dict]:
    data, rows = demo_dataset(), []
    with tempfile.TemporaryDirectory() as tmp:
        t_plain = []
        for r in range(repeats):
            t = time.perf_counter()
            train_demo(None, steps, 1, record=False)
            t_plain.append(time.perf_counter() - t)
        for k in intervals:
            t_train, proof = [], None
            for r in range(repeats):
                proof = Path(tmp) / f"k{k}_{r}"
                t = time.perf_counter()
                train_demo(proof, steps, k)
                t_train.append(time.perf_counter() - t)
            train_s = statistics.median(t_train)
            for q in queries:
                t_ver, t_rep = [], []
                for r in range(repeats):
                    t = time.perf_counter()
                    rep = verify_proof(proof, demo_model, data, queries_per_epoch=q)
                    t_ver.append(time.perf_counter() - t)
                    t_rep.append(rep.timings["replay_s"])
                    if not rep.passed:
                        raise RuntimeError(rep.format())
                replay_steps = sum(min(k, steps - s * k) for s in rep.selected_segments)
                rows.append({
                    "k": k, "Q": q, "steps": steps, "replayed_steps": replay_steps,
                    "replay_fraction": replay_steps / steps,
                    "train_plain_s": statistics.median(t_plain), "train_recorded_s": train_s,
                    "verify_s": statistics.median(t_ver), "replay_s": statistics.median(t_rep),
                    "time_fraction": statistics.median(t_ver) / train_s,
                    "replay_over_plain": statistics.median(t_rep) / statistics.median(t_plain),
                })
    return rows


def format_cost_table(rows: list[dict]) -> str:
    out = ["| k | Q | replayed steps | replay fraction | train (recorded) s | verify s "
           "| of which replay s | verify / train | replay / plain train |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['k']} | {r['Q']} | {r['replayed_steps']}/{r['steps']} | {r['replay_fraction']:.3f} "
                   f"| {r['train_recorded_s']:.3f} | {r['verify_s']:.3f} | {r['replay_s']:.3f} "
                   f"| {r['time_fraction']:.2f} | {r['replay_over_plain']:.2f} |")
    return "\n".join(out)


def print_calibration(intervals=(4, 8, 16), steps: int = 96) -> None:
    """Calibration figures for docs/provenance.md (see pol.calibration)."""
    import os

    from .calibration import calibrate
    from .verifier import DEFAULT_THRESHOLDS
    with tempfile.TemporaryDirectory() as tmp:
        for k in intervals:
            proof = run_demo(os.path.join(tmp, f"k{k}"), steps=steps, checkpoint_every=k)
            r = calibrate(proof, demo_model, demo_dataset(), thread_counts=(1, 2))
            print(f"\n### {MODEL_ID}, {steps} steps, k={k}, {len(r.segments)} segments, threads {r.thread_counts}")
            print(r.format())
            print("suggested:", r.suggest())
            print("defaults separate:", r.check(DEFAULT_THRESHOLDS))


if __name__ == "__main__":  # python -m pol.demo [cost|calibrate]
    import os
    import sys
    what = sys.argv[1] if len(sys.argv) > 1 else "cost"
    if what == "calibrate":
        print_calibration()
    else:
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, measuring with 1 intra-op thread")
        rows = measure_cost()
        print(f"plain training (no recorder): {rows[0]['train_plain_s']:.3f} s")
        print(format_cost_table(rows))
