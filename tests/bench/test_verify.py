from __future__ import annotations

import json

import pytest

from bench.verify import STAGES


def test_verify_tiny_json(bench_json, shared_data, tmp_path):
    res = bench_json("verify", "--preset", "tiny", "--k", "3", "--runs", "2", "--seconds", "0.5",
                     "--acc-samples", "3", "--threads", "1", "--no-figure", "--out", str(tmp_path))
    assert res["benchmark"] == "verify" and res["preset"] == "tiny"
    assert res["total_seconds"] > 0 and res["total_cpu_seconds"] > 0
    assert set(res["stages"]) == set(STAGES)
    for s in STAGES:
        assert len(res["stages"][s]["wall_s"]["runs"]) == 2
    # the stages that do the work were really timed inside Chain.submit
    for s in ("header", "load_state", "replay", "state_hash", "accuracy", "store"):
        assert res["stages"][s]["wall_s"]["median"] > 0, s
    # v2: the block is its header and records; its post-state is kept by nodes, not carried
    b = res["block"]
    assert 1 <= b["steps"] <= 9 and b["body_bytes"] < 2000 and b["state_bytes"] > 20_000
    assert sum(res["stages"][s]["wall_s"]["median"] for s in STAGES) <= res["total"]["wall_s"]["max"] * 1.5
    m = res["mining"]
    assert m["k0"] == 10 and m["seconds_per_attempt"] > 0 and 0 < m["p_acc"] < 1
    assert m["expected_seconds"] > 0 and res["asymmetry"] > 0
    assert res["block"]["height"] == 1 and res["block_k"] == 3
    assert "block_note" in res                       # mined at k=3, not k0: said so
    assert res["machine"]["torch"] and res["machine"]["cores"]
    # the miner's own block (Chain.submit_mined) skips the replay and the evaluation
    assert len(res["own_block"]["wall_s"]["runs"]) == 2 and res["own_block"]["wall_s"]["median"] > 0
    assert res["own_block_speedup"] == round(res["total_seconds"] / res["own_block"]["wall_s"]["median"], 1)
    assert json.loads((tmp_path / "verify-tiny.json").read_text())["total_seconds"] == res["total_seconds"]


def fake_result() -> dict:
    stage = {"wall_s": {"median": 1.0, "min": 1.0, "max": 1.0, "runs": [1.0]},
             "cpu_s": {"median": 1.0, "min": 1.0, "max": 1.0, "runs": [1.0]}}
    res = {"preset": "cifar10-resnet18", "arch": "resnet18-cifar", "validate_device": "cpu",
           "data": "generated (CIFAR-10 unavailable)", "data_generated": True, "eval_size": 500, "runs": 1,
           "machine": {"cpu": "x", "cores": 2, "torch_threads": 1, "memory_gib": 1, "gpu": None, "torch": "2",
                       "python": "3"},
           "block": {"height": 1, "steps": 5, "body_bytes": 1_000, "state_bytes": 44_745_128, "acc_parent": 0,
                     "acc_after": 2, "attempts": 3},
           "stages": {s: stage for s in STAGES}, "total": stage, "groups": 16, "mine_device": "cpu",
           "mining": {"k0": 10, "seconds_per_attempt": 0.1, "cpu_seconds_per_attempt": 0.1, "p_acc": 0.5,
                      "p_acc_note": "n", "expected_seconds": 200.0, "expected_attempts": 2048.0,
                      "target_interval_s": 60},
           "asymmetry": 25.0, "asymmetry_cpu": 25.0, "total_seconds": 1.0, "total_cpu_seconds": 1.0,
           "started": "now", "load_average_after": [1.0, 1.0, 1.0]}
    return res


def test_verify_table_says_generated_data():
    from bench.verify import table
    text = table(fake_result())
    assert "NOT CIFAR-10" in text and "accuracy on E (1 x 500" in text and "25.0x" in text
    assert "replay 5 step(s)" in text and "44.75 MB" in text


def test_verify_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.verify import draw
    paths = draw(fake_result(), tmp_path)
    assert sorted(p.name for p in paths) == ["verify-cifar10-resnet18.png", "verify-cifar10-resnet18.svg"]
