"""Each threshold is checked on its own; all must pass."""
import math

import pytest
import torch

from pol import DEFAULT_THRESHOLDS, Thresholds
from pol.verifier import distances

from .util import edit_tensors, noise_like, replay_checks, reseal

INF = math.inf


def _forge_end_of_segment_0(proof_dir, fn):
    edit_tensors(proof_dir, "ckpt_000008.safetensors", fn)
    reseal(proof_dir)


def test_only_cosine_fails(proof_copy, verify):
    _forge_end_of_segment_0(proof_copy, lambda t: t["model.0.weight"].add_(noise_like(t["model.0.weight"], 1e-3)))
    r = verify(proof_copy, thresholds=Thresholds(l1=INF, l2=INF, linf=INF, cos=1e-10))
    c = replay_checks(r)["replay[0]"]
    assert c.metrics == {"l1": True, "l2": True, "linf": True, "cos": False}
    assert not c.passed and c.reason == "replay-distance-exceeded"
    assert r.reasons == ["replay-distance-exceeded"] and not r.passed
    assert "cos=" in r.format() and "!" in r.format()


def test_only_linf_fails(proof_copy, verify):
    # a single weight moved: tiny l1/l2/cos, large linf
    _forge_end_of_segment_0(proof_copy, lambda t: t["model.0.weight"][0].__setitem__(0, t["model.0.weight"][0, 0] + 1e-3))
    r = verify(proof_copy, thresholds=Thresholds(l1=INF, l2=INF, linf=1e-5, cos=INF))
    c = replay_checks(r)["replay[0]"]
    assert c.metrics == {"l1": True, "l2": True, "linf": False, "cos": True}
    assert not r.passed


@pytest.mark.parametrize("metric", ["l1", "l2", "linf", "cos"])
def test_each_metric_alone_can_reject(proof_copy, verify, metric):
    _forge_end_of_segment_0(proof_copy, lambda t: t["model.2.weight"].add_(noise_like(t["model.2.weight"], 1e-3)))
    kw = {m: INF for m in Thresholds.METRICS}
    kw[metric] = getattr(DEFAULT_THRESHOLDS, metric)
    c = replay_checks(verify(proof_copy, thresholds=Thresholds(**kw)))["replay[0]"]
    assert c.metrics == {m: m != metric for m in Thresholds.METRICS}
    assert not c.passed


def test_scaled_weights_fail_norms_but_not_cosine(proof_copy, verify):
    def scale(t):
        for k, v in t.items():
            if k.startswith("model."):
                v.mul_(1 + 1e-3)
    _forge_end_of_segment_0(proof_copy, scale)
    c = replay_checks(verify(proof_copy))["replay[0]"]
    assert c.metrics == {"l1": False, "l2": False, "linf": False, "cos": True}


def test_all_pass_with_defaults_on_honest_proof(demo_proof, verify):
    for c in verify(demo_proof).replays:
        assert c.metrics == dict.fromkeys(Thresholds.METRICS, True)


def test_nan_distance_fails():
    assert Thresholds().check({"l1": math.nan, "l2": 0.0, "linf": 0.0, "cos": 0.0})["l1"] is False
    a = {"w": torch.tensor([1.0, math.nan])}
    d = distances(a, {"w": torch.tensor([1.0, 2.0])})
    assert all(math.isnan(v) for v in d.values())
    assert not any(Thresholds().check(d).values())


def test_cosine_distance_compares_both_vectors():
    # the reference code divided by |w1|*|w1|: for w2 = 2*w1 it reported -1 instead of 0
    a = {"w": torch.tensor([1.0, 2.0, 3.0])}
    assert distances(a, {"w": 2 * a["w"]})["cos"] == pytest.approx(0.0, abs=1e-15)
    assert distances(a, {"w": -a["w"]})["cos"] == pytest.approx(2.0)
    assert distances({"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 1.0])})["cos"] == pytest.approx(1.0)
    assert distances(a, a)["cos"] == 0.0
    d = distances(a, {"w": torch.tensor([1.0, 2.0, 4.0])})
    assert d["l1"] == 1.0 and d["l2"] == 1.0 and d["linf"] == 1.0
    a64 = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    b64 = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    assert d["cos"] == pytest.approx(1 - float(a64 @ b64 / (a64.norm() * b64.norm())), rel=1e-9)
