from __future__ import annotations


def test_labels_tiny_json(bench_json, tmp_path):
    """`polchain bench labels` on tiny: one row per parameter tensor, the excluded ones marked out of R, and
    the head's update signs (which the labels fix) predicted far better than any tensor left in R."""
    res = bench_json("labels", "--preset", "tiny", "--batches", "240", "--coords", "16", "--out", str(tmp_path))
    rows = {r["tensor"]: r for r in res["rows"]}
    assert res["benchmark"] == "labels" and "linear.bias" in rows and "conv1.weight" in rows
    assert {n for n, r in rows.items() if not r["in_r"]} == {n for n in rows if n.startswith(("linear.", "bn3."))}
    assert rows["linear.bias"]["label_fit"] > 0.9
    in_r = [r["gain"] for r in rows.values() if r["in_r"]]
    assert rows["linear.bias"]["gain"] > max(in_r) + 0.1, rows
    assert (tmp_path / "labels-tiny.json").exists()
