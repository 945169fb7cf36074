from __future__ import annotations


def test_give_way_tiny_json(bench_json, tmp_path):
    """`polchain bench give-way` at a toy size: every junk block judged in full fails R, a replay that
    gave way did so before its last step, and (v4) the sender pays about what the node does for a junk block:
    its admission ticket (v3: the node paid 140-370x the sender's signature)."""
    res = bench_json("give-way", "--preset", "tiny", "--runs", "4", "--out", str(tmp_path))
    assert res["benchmark"] == "give-way" and res["preset"] == "tiny" and res["steps_per_junk_block"] == 9
    assert len(res["junk_replay_s"]["runs"]) == 4 and res["junk_replay_s"]["median"] > 0
    assert 0 <= res["gave_way"] <= 4 and len(res["steps_done_before_giving_way"]) == res["gave_way"]
    assert all(0 <= n < 9 for n in res["steps_done_before_giving_way"])
    if res["gave_way"]:
        assert len(res["wait_with_give_way_s"]["runs"]) == len(res["wait_without_s"]["runs"]) == res["gave_way"]
    assert 0 < res["node_over_sender"] < 10
    assert (tmp_path / "give-way-tiny.json").exists()
