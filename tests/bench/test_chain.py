from __future__ import annotations

import pytest

from consensus.spec import preset
from consensus.validation import lowest_floor


def test_chain_tiny_json(bench_json, shared_data, tmp_path):
    res = bench_json("chain", "--preset", "tiny", "--blocks", "3", "--sgd-runs", "2", "--k", "5", "--no-figure",
                     "--out", str(tmp_path))
    assert res["benchmark"] == "chain" and res["blocks"] == 3
    rows = res["per_block"]
    # --k lowers the difficulty for the run, and the result says so
    assert res["k_lowered"] and res["k0"] == 5 and res["k_spec"] == 10 and all(r["k"] >= 5 for r in rows)
    # E (test[:500]) is a quarter of tiny's test split: the blocks are scored on test[500:] only
    assert res["held_out"] == [500, 2000] and res["held_out_size"] == 1500
    # the accuracy rule's pass rate: each block passed once, after r_hits checks
    assert all(r["r_hits"] >= 1 and r["acc_pass_rate"] == round(1 / r["r_hits"], 4) for r in rows)
    assert res["r_hits"] == sum(r["r_hits"] for r in rows) and res["acc_pass_rate"] == round(3 / res["r_hits"], 4)
    assert sum(b["passed"] for b in res["acc_pass_rate_by_height"]) == 3
    assert rows[0]["redraw_epoch"] > 0          # block 1: genesis has the spec's fixed (old) timestamp
    assert res["redraw_blocks"] == [r["height"] for r in rows[1:] if r["redraw_epoch"] > 0]
    assert [r["height"] for r in rows] == [1, 2, 3]
    for key in ("interval_s", "k", "test_accuracy", "attempts", "wall_s", "steps", "effective_steps",
                "sgd_accuracy_same_steps"):
        assert all(key in r for r in rows), key
    steps = [r["steps"] for r in rows]
    assert steps == sorted(steps) and steps[-1] == res["total_steps"] > 0
    assert all(r["effective_steps"] <= r["steps"] for r in rows)
    # v2: the steps that stuck are the blocks' own; the default miner fills its J = 8 advance steps first
    assert res["advance_first"] and all(r["block_steps"] == 9 for r in rows)
    # every R hit the miner did not publish has a reason, and the totals add up
    for key in ("acc_floor_failed", "acc_borderline_failed", "restarts"):
        assert res[key] == sum(r[key] for r in rows) >= 0, key
    assert all(r["acc_floor_failed"] + r["acc_borderline_failed"] == r["r_hits"] - 1 for r in rows)
    assert [r["effective_steps"] for r in rows] == [sum(q["block_steps"] for q in rows[:i + 1]) for i in range(3)]
    spec = preset("tiny")                   # the accuracy floor, relaxed per redraw epoch down to half of chance
    assert all(r["acc_e_after"] >= max(lowest_floor(spec), r["acc_e_parent"] + spec.proof.min_improvement
                                        - spec.proof.floor_relax * r["redraw_epoch"]) for r in rows)
    assert all(0 <= r["test_accuracy"] <= 1 for r in rows)
    assert 0 <= res["start_accuracy"] <= 1 and res["end_accuracy"] == rows[-1]["test_accuracy"]
    assert res["sgd_curve"][0][0] == 0 and res["sgd_curve"][-1][0] == res["total_steps"]
    assert res["sgd_runs"] == 2 and res["sgd_end_range"][0] <= res["sgd_end_accuracy"] <= res["sgd_end_range"][1]
    assert res["duration_s"] > 0 and res["machine"]["torch"]
    assert (tmp_path / "chain-tiny.json").exists()
    # the useful-work fraction: steps kept over candidates judged, exact steps computed, and mining CPU
    u = res["useful_work"]
    assert u["per_candidate"] == round(res["effective_steps"] / res["total_attempts"], 5)
    assert 0 < u["per_candidate"] <= u["per_exact_step"] <= 1 and 0 < u["cpu"] <= 1


def test_chain_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.chain import draw
    rows = [{"height": h, "k": 8, "interval_s": 1.0 + h, "attempts": 100, "steps": 10 * h, "effective_steps": 9 * h,
             "test_accuracy": 0.1 + 0.05 * h, "sgd_accuracy_same_steps": 0.1 + 0.06 * h,
             "sgd_accuracy_effective_steps": 0.1 + 0.055 * h, "sgd_range_same_steps": [0.1, 0.2]} for h in (1, 2, 3)]
    res = {"preset": "tiny", "arch": "tiny-cnn", "blocks": 3, "duration_s": 9.0, "start_accuracy": 0.1, "chance": 0.1,
           "per_block": rows, "sgd_curve": [[0, 0.1], [15, 0.2], [30, 0.28]], "sgd_runs": 2,
           "sgd_curve_range": [[0, 0.1, 0.1], [15, 0.15, 0.25], [30, 0.25, 0.3]], "lr": "0.01", "batch_size": 4,
           "machine": {"cpu": "x", "cores": 2, "torch_threads": 1, "torch": "2"}, "started": "now",
           "load_average_after": [1.0, 1.0, 1.0]}
    paths = draw(res, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".svg"}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_held_out_excludes_e_on_small_test_splits():
    import dataclasses

    from bench.chain import held_out_start
    from consensus.spec import preset
    full = preset("cifar10-resnet18")
    sample = dataclasses.replace(full, dataset=dataclasses.replace(full.dataset, train_size=5085, test_size=1017))
    assert held_out_start(sample) == 500                 # the real CIFAR-10 sample: test[500:1017]
    assert held_out_start(full) == 0                     # 10,000 test images: E is 5 % of them
    assert held_out_start(full, "beyond-e") == 500 and held_out_start(sample, "full") == 0
    tiny_e = dataclasses.replace(sample, dataset=dataclasses.replace(sample.dataset, test_size=500))
    with pytest.raises(ValueError):
        held_out_start(tiny_e)                           # nothing outside E to score on
    low = full.with_difficulty(4)
    assert (low.difficulty.initial, low.difficulty.minimum, low.difficulty.maximum) == (4, 4, full.difficulty.maximum)
    assert low.chain_id != full.chain_id
    with pytest.raises(ValueError):
        full.with_difficulty(0)


def test_chain_resumes_in_its_datadir_and_stops_on_time(bench_json, tmp_path):
    """--datadir keeps the chain, the miner's key and a row per block; a second run goes on from the tip,
    and --minutes stops mining and still reports the blocks so far (a ResNet-18 run spans sessions)."""
    from bench.chain import ROWS_FILE
    d = tmp_path / "run"
    common = ("chain", "--preset", "tiny", "--k", "4", "--sgd-runs", "1", "--sgd-points", "1", "--no-figure",
              "--datadir", str(d))
    first = bench_json(*common, "--blocks", "2")
    assert first["blocks"] == 2 and first["resumed_at"] == 0 and not first["stopped_by"]
    second = bench_json(*common, "--blocks", "3")
    assert second["resumed_at"] == 2 and [r["height"] for r in second["per_block"]] == [1, 2, 3]
    assert [r["hash"] for r in second["per_block"][:2]] == [r["hash"] for r in first["per_block"]]
    assert second["per_block"][2]["steps"] > first["per_block"][1]["steps"]          # the counts go on
    assert len((d / ROWS_FILE).read_text().splitlines()) == 3
    assert second["useful_work"]["cpu_blocks"] == 3
    late = bench_json(*common, "--blocks", "50", "--minutes", "0.0001")
    assert late["stopped_by"] == "--minutes 0.0001" and late["blocks"] == 3 and late["blocks_requested"] == 50
