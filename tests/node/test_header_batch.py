"""Headers-first in batches (Chain.submit_headers) on the real SQLite store.

* Every header of a batch gets the header rules against the ones before it; the good ones are
  stored header-only in one transaction.
* A bad header in the middle stops the batch with its reason: the prefix is kept, the bad
  header is recorded invalid, the headers after it are not looked at.
* A batch is one transaction: a process killed (SIGKILL) while it submits batches leaves every
  batch stored whole or not at all, and the store opens clean.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import Block
from consensus.difficulty import work
from node.chain import Chain
from node.store import HEADER_ONLY, INVALID, Store
from tests.blocks import BlockSmith, cheap_tickets, resign
from tests.chain_spec import TINY_TEST


@pytest.fixture(scope="module")
def batch_spec():
    """tiny with 2-bit tickets: these tests are about the batch path (up to 1,500 headers), not the price
    of a header (tests/adversarial/test_ticket.py)."""
    return cheap_tickets(TINY_TEST)


@pytest.fixture(scope="module")
def headers(batch_spec):
    return BlockSmith(batch_spec, None, Ed25519PrivateKey.generate()).headers(60)


def open_chain(batch_spec, tiny_dataset, datadir: Path, headers) -> Chain:
    return Chain(batch_spec, datadir, tiny_dataset, clock=lambda: headers[-1].timestamp_ms / 1000 + 60)


def test_a_batch_is_checked_and_stored(batch_spec, tiny_dataset, tmp_path, headers):
    chain = open_chain(batch_spec, tiny_dataset, tmp_path, headers)
    outs = chain.submit_headers(headers)
    assert [o.status for o in outs] == ["header-ok"] * len(headers)
    assert chain.store.count_by_status()[HEADER_ONLY] == len(headers)
    last = chain.store.get(headers[-1].hash)
    assert last.status == HEADER_ONLY and last.cumulative_work == chain.store.get(headers[0].hash).cumulative_work \
        + sum(work(h.difficulty) for h in headers[1:])
    assert chain.tip().height == 0                         # headers alone never move the tip
    # the same batch again (and one overlapping it): nothing is stored twice
    assert [o.status for o in chain.submit_headers(headers[40:])] == ["header-ok"] * 20
    assert chain.store.count_by_status()[HEADER_ONLY] == len(headers)


def test_a_bad_header_stops_the_batch_and_keeps_the_prefix(batch_spec, tiny_dataset, tmp_path, headers):
    key = Ed25519PrivateKey.generate()
    bad = resign(headers[30], key, batch_spec, difficulty=headers[30].difficulty + 1)     # k off by one: bad-difficulty
    batch = headers[:30] + [bad] + headers[31:]            # (the rest no longer links, and is not looked at)
    chain = open_chain(batch_spec, tiny_dataset, tmp_path, headers)
    outs = chain.submit_headers(batch)
    assert len(outs) == 31
    assert [o.status for o in outs[:30]] == ["header-ok"] * 30
    assert (outs[30].status, outs[30].code, outs[30].block_hash) == ("invalid", "bad-difficulty", bad.hash)
    assert "retarget" in outs[30].detail
    assert all(chain.store.status(h.hash) == HEADER_ONLY for h in headers[:30])
    stored = chain.store.get(bad.hash)
    assert (stored.status, stored.reason) == (INVALID, "bad-difficulty")
    assert chain.store.count_by_status() == {"valid": 1, HEADER_ONLY: 30, INVALID: 1}
    # a later batch from the good prefix goes on where it stopped
    assert [o.status for o in chain.submit_headers(headers[30:])] == ["header-ok"] * 30


def test_an_unknown_parent_stops_the_batch(batch_spec, tiny_dataset, tmp_path, headers):
    chain = open_chain(batch_spec, tiny_dataset, tmp_path, headers)
    outs = chain.submit_headers(headers[:10] + headers[20:30])
    assert [o.status for o in outs] == ["header-ok"] * 10 + ["orphan"]
    assert outs[-1].code == "unknown-parent"
    assert chain.store.count_by_status()[HEADER_ONLY] == 10


CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from consensus.block import BlockHeader
    from consensus.data import make_synthetic
    from node.chain import Chain
    from tests.blocks import cheap_tickets
    from tests.chain_spec import TINY_TEST
    spec = cheap_tickets(TINY_TEST)
    headers = [BlockHeader.from_dict(d) for d in json.loads(Path(sys.argv[2]).read_text())]
    d = spec.dataset
    chain = Chain(spec, Path(sys.argv[1]), make_synthetic(d.seed, d.train_size, d.test_size),
                  clock=lambda: headers[-1].timestamp_ms / 1000 + 60)
    print("ready", flush=True)
    for i in range(0, len(headers), int(sys.argv[3])):
        chain.submit_headers(headers[i:i + int(sys.argv[3])])
    print("done", flush=True)
""")


@pytest.mark.slow
def test_a_killed_batch_is_stored_whole_or_not_at_all(batch_spec, tmp_path):
    """SIGKILL at spread-out moments while batches of 50 headers are submitted: the header-only rows
    are always a whole number of batches, and each stored header's parent is stored."""
    headers = BlockSmith(batch_spec, None, Ed25519PrivateKey.generate()).headers(1500)
    blob = tmp_path / "headers.json"
    blob.write_text(json.dumps([h.to_dict() for h in headers]))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1")
    counts = []
    for i, delay in enumerate((0.2, 0.5, 0.9, 1.4)):
        datadir = tmp_path / f"d{i}"
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(datadir), str(blob), "50"], env=env,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        store = Store(datadir)
        try:
            assert store.integrity_problem() is None
            n = store.count_by_status().get(HEADER_ONLY, 0)
            counts.append(n)
            assert n % 50 == 0, f"{n} header-only rows after a kill: a batch was stored in part"
            rows = store.best_range(0, 1) + [store.get(h.hash) for h in headers[:n]]
            assert all(r is not None for r in rows)
        finally:
            store.close()
    assert any(0 < n < len(headers) for n in counts), f"every kill fell outside the batches: {counts}"


def test_assumed_blocks_in_one_batch_stop_at_a_bad_body(smith, tmp_path):
    """Snapshot sync's batch (Chain.accept_assumed) over the template chain's blocks: records that do
    not match a header's records_root stop the batch there (bad-body); the blocks before it are valid
    and the tip moved to the last of them in one step; nothing was replayed."""
    blocks = [smith.chain.store.get(h) for h in smith.chain.store.best_hashes()[1:]]
    chain = Chain(smith.spec, tmp_path / "node", smith.chain.dataset)
    try:
        assert all(o.status == "header-ok" for o in chain.submit_headers([b.header for b in blocks]))
        items = [Block(b.header, b.records) for b in blocks]
        items[3] = Block(blocks[3].header, [{"type": "model-certificate", "junk": 1}])
        outs = chain.accept_assumed(items, "http://peer.invalid:1")
        assert [o.status for o in outs] == ["accepted"] * 3 + ["bad-body"]
        assert outs[2].new_tip and not any(o.new_tip for o in outs[:2])
        assert chain.tip().hash == blocks[2].hash and chain.replays == 0
        assert chain.store.status(blocks[3].hash) == HEADER_ONLY
        assert [chain.store.get(b.hash).status for b in blocks[:3]] == ["valid"] * 3
        # the rest, with the right records, goes on from there
        assert [o.status for o in chain.accept_assumed([Block(b.header, b.records) for b in blocks[3:]])] == \
            ["accepted"] * (len(blocks) - 3)
        assert chain.tip().hash == blocks[-1].hash
    finally:
        chain.store.close()
