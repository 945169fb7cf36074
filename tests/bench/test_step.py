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
        assert 0 < r["exact_gemm_floor_s"] and r["gemm_gflops_fp64"] > 0 and r["gemm_gflops_fp32"] > 0
        # the floor is the step's GEMM work at the fp64 GEMM rate (fields rounded to 6 places, a rate above 1 GFLOP/s)
        assert abs(r["exact_gemm_floor_s"] - r["step_gemm_gflop"] / r["gemm_gflops_fp64"]) <= 2e-6


def test_step_gemm_flops_of_resnet18():
    """The GEMM work the floor is computed from, against a count by hand: CIFAR ResNet-18's forward
    multiply-adds per image (stem; layer 1; layers 2-4 each a stride-2 conv, three full convs and a
    1x1 shortcut; the head: 555,422,720, the published 0.56 G), done three times in a step at batch
    4 (forward, input gradient, weight gradient) less the stem's input gradient, 2 FLOPs each."""
    from bench.step import step_gemm_flops
    from consensus.spec import preset
    stem = 32 * 32 * 64 * 27
    layer1 = 4 * 32 * 32 * 64 * 576
    stage = 18_874_368 + 3 * 37_748_736 + 2_097_152        # the same for layers 2, 3 and 4
    per_image = stem + layer1 + 3 * stage + 512 * 10
    assert per_image == 555_422_720
    assert step_gemm_flops(preset("cifar10-resnet18")) == 2 * (3 * 4 * per_image - 4 * stem)
