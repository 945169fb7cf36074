from __future__ import annotations


def test_ticket_tiny_json(bench_json, tmp_path):
    """`polchain bench ticket` at a toy size: a ticket costs its maker more than rejecting a ticketed junk
    block costs the node, and an honest block pays a few percent of its work for it (ratios in one run)."""
    res = bench_json("ticket", "--presets", "tiny", "--checks", "50", "--solves", "2", "--junk", "2",
                     "--out", str(tmp_path))
    row, = res["rows"]
    assert row["preset"] == "tiny" and row["ticket_bits"] == 8 and row["solved"] == 2
    assert row["ticket_over_junk"] >= 1
    assert row["overhead_at_target_pct"] <= 5
    assert row["check_ms"] < 4 * row["eval_ms"]           # a check is about one scrypt evaluation
    assert (tmp_path / "ticket.json").exists()
