from __future__ import annotations


def test_step_tiny_json(bench_json, shared_data, tmp_path):
    """`polchain bench step` at a toy size: one row per thread count, every figure present and positive,
    v3's validation counted as J+1 exact steps with their batch derivations plus one evaluation."""
    res = bench_json("step", "--presets", "tiny", "--thread-counts", "1,2", "--steps", "2", "--evals", "1",
                     "--out", str(tmp_path))
    assert res["benchmark"] == "step" and [r["threads"] for r in res["rows"]] == [1, 2]
    for r in res["rows"]:
        assert r["preset"] == "tiny" and r["steps_per_block"] == 9
        for key in ("exact_step_s", "fp32_step_s", "derive_s", "eval_s"):
            assert r[key]["median"] > 0, key
        want = 9 * (r["exact_step_s"]["median"] + r["derive_s"]["median"]) + r["eval_s"]["median"]
        assert abs(r["validation_v3_s"] - want) < 2e-3
        assert r["step_ratio"] > 0 and r["validation_ratio"] > 0
