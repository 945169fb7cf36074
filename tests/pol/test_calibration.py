import torch

from pol import DEFAULT_THRESHOLDS, calibrate
from pol.demo import demo_model


def test_default_thresholds_separate_honest_from_tampered(demo_proof, data):
    threads = torch.get_num_threads()
    r = calibrate(demo_proof, demo_model, data, thread_counts=(1, 2), segments=[0, 5])
    assert torch.get_num_threads() == threads
    assert r.check(DEFAULT_THRESHOLDS) == dict.fromkeys(("l1", "l2", "linf", "cos"), True), r.format()
    assert all(r.check(r.suggest()).values())
    assert "one sample changed" in r.format()
