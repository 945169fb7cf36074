"""Smoke tests of `polchain bench threads` and `polchain bench eval` on tiny (toy sizes, fields checked)."""
from __future__ import annotations


def test_bench_threads(bench_json, shared_data):
    res = bench_json("threads", "--preset", "tiny", "--thread-counts", "1,2", "--busy", "0,1", "--steps", "3",
                     "--evals", "1")
    assert [(r["busy"], r["threads"]) for r in res["settings"]] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert all(r["step_s"]["median"] > 0 and r["eval_s"]["median"] > 0 for r in res["settings"])
    assert set(res["best"]) == {"busy 0", "busy 1"} and res["best"]["busy 1"]["step"] in (1, 2)


def test_bench_eval(bench_json, shared_data):
    res = bench_json("eval", "--preset", "tiny", "--pretrain", "3",
                     "--variants", "no_grad/nchw/250/1,inference_mode/channels_last/500/1,no_grad/nchw/7/1")
    assert [v["variant"] for v in res["variants"]] == ["no_grad/nchw/250/1", "inference_mode/channels_last/500/1",
                                                       "no_grad/nchw/7/1"]
    canonical = res["variants"][0]
    assert canonical["differing_predictions"] == [0, 0, 0, 0] and canonical["verdict_kept"]
    assert len(res["states"]) == 4 and all(len(v["correct"]) == 4 for v in res["variants"])
    # tiny-cnn's fp32 logits do not depend on the layout or the batch split: the same predictions
    assert all(v["correct"] == canonical["correct"] for v in res["variants"])
    assert res["fastest_kept"] in [v["variant"] for v in res["variants"]]
