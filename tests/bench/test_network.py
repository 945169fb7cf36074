"""Smoke tests of the benchmarks that start real node processes: propagate (gossip along a line) and
sync (full replay and snapshot catch-up). Toy sizes; the JSON fields checked, not the timings."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow      # 3-4 node processes on a shared machine: 1-3 minutes


def test_propagate_tiny(bench_json):
    res = bench_json("propagate", "--preset", "tiny", "--nodes", "2", "--blocks", "1", "--timeout", "300")
    assert res["benchmark"] == "propagate" and res["nodes"] == 2 and res["blocks"] == 1
    (b,) = res["per_block"]
    assert b["height"] == 1 and len(b["accepted_at_s"]) == 2 and len(b["hops_s"]) == 1
    assert 0 < b["accepted_at_s"][0] <= b["end_to_end_s"]
    assert 0 < res["body_bytes"] < 2000               # v2: header and records, no weights


def test_sync_tiny(bench_json):
    res = bench_json("sync", "--preset", "tiny", "--blocks", "3", "--timeout", "300", "--headers", "60")
    assert res["benchmark"] == "sync" and res["source_height"] == 3
    assert res["state_bytes"] > 20_000                # the tip's post-state, served for snapshot sync
    for mode in ("replay", "snapshot"):
        assert res[mode]["blocks_per_s"]["median"] > 0 and len(res[mode]["seconds"]["runs"]) == 1
    assert res["snapshot_checkpoint_height"] == 1          # 3 blocks: the checkpoint is 2 below the tip
    h = res["headers"]
    assert h["headers"] == 60 and all(h[k]["seconds"] > 0 for k in ("one_commit_per_header", "batched",
                                                                     "checks_alone"))
