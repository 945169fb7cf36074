from __future__ import annotations


def test_floor_tiny_json(bench_json, tmp_path):
    """`polchain bench floor` at a toy size: the attacker claims its best trajectory + the tolerance, and
    the share of honest children clearing the floor never falls as redraw epochs lower it."""
    res = bench_json("floor", "--preset", "tiny", "--trials", "4", "--children", "6", "--runs", "2",
                     "--warm-steps", "5", "--epochs", "2", "--out", str(tmp_path))
    assert res["benchmark"] == "floor" and len(res["runs"]) == 2 and res["floor_relax"] > 0
    for run in res["runs"]:
        assert run["attacker_claim"] == run["best_of_n_acc"] + res["claim_tolerance"]
        for key in ("honest_clear_share_by_epoch", "attacked_clear_share_by_epoch"):
            shares = run[key]
            assert len(shares) == 3 and all(0 <= s <= 1 for s in shares)
            assert shares == sorted(shares), shares          # the floor only drops with the epochs
    assert (tmp_path / "floor-tiny.json").exists()
