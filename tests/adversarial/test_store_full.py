"""The datadir stops taking writes (disk full, read-only) under a running node (issue 20): the block is
not judged and nothing of it is stored (503 store-unavailable, Retry-After), /health answers 503 with
the reason and /status shows it, the failure is logged once, not per block; while it lasts a block is
refused before its replay (fail fast), and the store probe, which writes what a block writes where the
failed block's went, says no with a backoff (2 s doubling); once the store writes again (a probe, as the
paused miner makes) the same block goes in and /health is 200 again.

tests/fault/test_store_refuses.py runs the same on a real mining `polchain node` whose datadir fills up.

The fault is a real filesystem error, not a mock: the directory the block's post-state goes to is
replaced by a file, so the first write of the block (its post-state, before its row) fails with
NotADirectoryError/FileExistsError, as ENOSPC or EROFS fail there (tests/fault/test_disk_full.py runs
the same on a full tmpfs, where the suite may mount one)."""
from __future__ import annotations

import json
import logging
import shutil

from .conftest import assert_unharmed, snapshot


def _post(node, block):
    return node.client.post("/blocks", files={"header": (None, block.header.encode()),
                                              "records": ("r.json", json.dumps(block.records).encode(),
                                                          "application/json")})


def test_a_store_that_refuses_writes_is_reported_and_nothing_is_lost(node, honest, caplog):
    chain = node.service.chain
    block = honest.next
    target = chain.store.weights.path(block.header.state_hash).parent
    parent_dir = chain.store.weights.path(honest.blocks[-1].header.state_hash).parent
    assert target != parent_dir, "the test needs the parent's state readable"
    aside = target.with_name(target.name + ".aside")
    if target.exists():
        target.rename(aside)
    target.write_bytes(b"")                               # the directory is now a file: writes fail
    before = snapshot(chain)
    assert node.client.get("/health").status_code == 200

    replays = chain.replays
    with caplog.at_level(logging.ERROR, logger="polchain.chain"):
        for i in range(3):
            r = _post(node, block)
            assert r.status_code == 503 and r.json()["error"] == "store-unavailable", r.text
            assert r.headers.get("retry-after")
            # the first is replayed, then fails at its first write; the next are refused before any replay
            assert chain.replays == replays + 1, (i, chain.replays, replays)
    assert len([rec for rec in caplog.records if "cannot write the store" in rec.getMessage()]) == 1
    assert chain.store.status(block.header.hash) is None                   # nothing stored, not judged
    assert_unharmed(chain, before)
    health = node.client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "store-error", health.text
    assert "Error" in health.json()["detail"]
    status = node.client.get("/status").json()
    assert status["store"]["ok"] is False and status["store"]["error"] and status["store"]["since"]
    assert status["store"]["failed_writes"] == 1 and status["store"]["retry_pause_s"] == 2.0

    # the probe writes where the block's post-state goes: it says no while the fault is there, and backs off
    failed = chain.health.report()["failed_writes"]
    for pause in (4.0, 8.0, 8.0):                         # doubling, capped at 8 s
        assert chain.probe_store(force=True) is False
        assert chain.health.report()["retry_pause_s"] == pause
    assert chain.health.report()["failed_writes"] == failed + 3
    assert chain.probe_store() is False                   # not due yet: the disk is not touched
    assert chain.health.report()["failed_writes"] == failed + 3
    assert node.client.get("/health").status_code == 503
    assert not list(chain.store.weights.root.glob("**/.tmp-probe-*")), "a probe left its file"

    target.unlink()                                       # space is back
    if aside.exists():
        aside.rename(target)
    r = _post(node, block)                                # the probe is not due: still refused, not replayed
    assert r.status_code == 503 and chain.replays == replays + 1, r.text
    assert chain.probe_store(force=True) is True          # what the paused miner's probe finds when due
    assert node.client.get("/health").status_code == 200
    r = _post(node, block)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    assert chain.tip().hash == block.header.hash
    assert node.client.get("/health").status_code == 200
    assert node.client.get("/status").json()["store"] == {"ok": True, "error": None, "since": None,
                                                          "failed_writes": 0, "retry_in_s": None,
                                                          "retry_pause_s": None}
    shutil.rmtree(aside, ignore_errors=True)
