"""Cross-device agreement of the canonical step: steps on one device (a GPU) replayed on the CPU.

Used by scripts/gpu_check.py. Canonical steps run on ``device`` from a W that keeps training, with
random batches and random requirements R (``consensus.requirements.derive_requirements`` over the
replayer's R index space, from random seeds, k small so that many steps qualify), until ``target``
of them have required changes that clear the **miner margin** -- the steps a miner would publish.
Each of those is replayed from the same W on the CPU, canonically (``canonical_threads``: the
spec's replay thread count), by a pool of one-thread worker processes, and the **validator's
verdict** (``requirements_hold`` with the spec's band) is compared. For the first ``acc_checks``
of them acc(W) and acc(W') on E are computed on both devices too. Nothing here reads a header.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import random
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

_WORKER: dict = {}


def random_seed(rng: random.Random) -> str:
    return hashlib.sha256(rng.randbytes(32)).hexdigest()


def _worker_init(spec_json: str, data) -> None:
    import torch

    from consensus.spec import ChainSpec
    from consensus.training import Replayer
    torch.set_num_threads(1)
    _WORKER["r"] = Replayer(ChainSpec.from_json(spec_json), data, "cpu")


def cpu_replay(w_cpu: dict, jobs: list) -> list[tuple[list[float], list[float]]]:
    """(values before, values after) at R of each (batch, reqs) replayed canonically from W on the CPU."""
    r = _WORKER["r"]
    out = []
    for batch, reqs in jobs:
        r.load(w_cpu)
        before = r.index.gather(reqs)
        r.step(batch)
        out.append((before.tolist(), r.index.gather(reqs).tolist()))
    return out


def _space(replayer):
    return getattr(replayer, "r_space", None) or replayer.index.total


def agreement(spec, data, device, *, target: int, k: int = 2, budget_s: float = 240.0, acc_checks: int = 10,
              per_w: int = 32, workers: int = 2) -> dict:
    import torch

    from consensus.requirements import derive_requirements, requirements_hold, requirements_hold_with_margin
    from consensus.training import Replayer
    dev_r, cpu_r = Replayer(spec, data, device), Replayer(spec, data, "cpu")
    rng = random.Random(4)
    n_train, s = spec.dataset.train_size, spec.training.batch_size
    margin = (spec.requirements.margin_ulps, float(spec.requirements.margin_abs))
    band = (getattr(spec.requirements, "band_ulps", 0), float(getattr(spec.requirements, "band_abs", 0)))
    res = {"k": k, "device": str(device), "workers": workers, "device_steps": 0, "cleared_margin": 0,
           "cpu_agrees": 0, "cpu_agrees_with_margin": 0, "disagreements": [], "max_relative_change_difference": 0.0,
           "w_versions": 0, "accuracy_checks": [], "accuracy_agree": 0, "band": list(band), "margin": list(margin)}
    pending: dict[Future, list] = {}

    def collect(done) -> None:
        for fut in done:
            for (batch, reqs, dg), (before, after) in zip(pending.pop(fut), fut.result()):
                b, a = torch.tensor(before), torch.tensor(after)
                ok = requirements_hold(b, a, reqs, *band)
                res["cpu_agrees"] += ok
                res["cpu_agrees_with_margin"] += requirements_hold_with_margin(b, a, reqs, *margin)
                dc = a - b
                rel = float(((dg - dc).abs() / dc.abs().clamp_min(1e-30)).max())
                res["max_relative_change_difference"] = max(res["max_relative_change_difference"], rel)
                if not ok and len(res["disagreements"]) < 20:
                    res["disagreements"].append({"batch": batch, "reqs": [(q.index, q.direction) for q in reqs],
                                                 "device_changes": dg.tolist(), "cpu_changes": dc.tolist()})

    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")  # never fork a process that holds a CUDA context
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(spec.to_json(), data)) as pool:
        w_dev = {name: v.clone() for name, v in dev_r.model.state_dict().items()}
        while res["cleared_margin"] < target and time.perf_counter() - t0 < budget_s:
            w_cpu = {name: v.detach().to("cpu").clone() for name, v in w_dev.items()}
            res["w_versions"] += 1
            jobs = []
            for _ in range(per_w):
                if res["cleared_margin"] >= target or time.perf_counter() - t0 >= budget_s:
                    break
                reqs = derive_requirements(random_seed(rng), k, _space(dev_r))
                batch = rng.sample(range(n_train), s)
                dev_r.load(w_dev)
                before = dev_r.index.gather(reqs)
                dev_r.step(batch)
                after = dev_r.index.gather(reqs)
                res["device_steps"] += 1
                if not requirements_hold_with_margin(before, after, reqs, *margin):
                    continue
                res["cleared_margin"] += 1
                jobs.append((batch, reqs, after - before))
                if len(res["accuracy_checks"]) < acc_checks:
                    check = accuracy_check(dev_r, cpu_r, w_dev, w_cpu, batch, spec)
                    res["accuracy_checks"].append(check)
                    res["accuracy_agree"] += check["agree"]
            if jobs:
                pending[pool.submit(cpu_replay, w_cpu, [(b, q) for b, q, _ in jobs])] = jobs
            while len(pending) > 2 * workers:  # bound the W copies in flight
                collect(wait(pending, return_when=FIRST_COMPLETED).done)
            dev_r.load(w_dev)  # W moves on: one canonical step on a random batch, as a miner trains
            dev_r.step(rng.sample(range(n_train), s))
            w_dev = {name: v.clone() for name, v in dev_r.model.state_dict().items()}
        res["device_seconds"] = round(time.perf_counter() - t0, 1)
        collect(wait(pending).done)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["agreement"] = round(res["cpu_agrees"] / res["cleared_margin"], 6) if res["cleared_margin"] else None
    res["target_reached"] = res["cleared_margin"] >= target
    return res


def accuracy_check(dev_r, cpu_r, w_dev: dict, w_cpu: dict, batch, spec) -> dict:
    """acc(W) and acc(W') on E on both devices (dev_r holds W' on entry); claims within tolerance, same verdict."""
    cpu_r.load(w_cpu)
    cpu_r.step(batch)
    d_after, c_after = dev_r.accuracy().correct, cpu_r.accuracy().correct
    d_before, c_before = dev_r.accuracy(w_dev).correct, cpu_r.accuracy(w_cpu).correct
    tol = spec.evaluation.claim_tolerance
    agree = abs(d_after - c_after) <= tol and abs(d_before - c_before) <= tol and \
        (d_after > d_before) == (c_after > c_before)
    return {"device": [d_before, d_after], "cpu": [c_before, c_after], "agree": bool(agree)}
