"""The store's global row caps, on the real SQLite store through the real Chain (issue #13 §4).

* Header-only rows stay within ``header_cap`` when headers arrive one at a time
  (``Chain.submit_header``, announcements), not only after a batch or a tip change.
* Invalid rows stay within ``invalid_cap``: past it the oldest are evicted, down to 90 % of the
  cap; an evicted block that comes back is validated (and rejected) again, not a duplicate.
"""
from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import genesis_header
from node.chain import Chain
from node.store import HEADER_ONLY, INVALID
from tests.blocks import BlockSmith


def test_single_headers_stay_within_the_header_cap(tiny_spec, tiny_dataset, tmp_path):
    smith, g = BlockSmith(tiny_spec, tiny_dataset, Ed25519PrivateKey.generate()), genesis_header(tiny_spec)
    # an announcement flood: 60 distinct headers on genesis, each alone (no batch, no tip change)
    headers = [smith.header(g, salt=f"s{i}") for i in range(60)]
    chain = Chain(tiny_spec, tmp_path, tiny_dataset, header_cap=20,
                  clock=lambda: headers[0].timestamp_ms / 1000 + 60)
    seen = []
    for h in headers:
        assert chain.submit_header(h, "http://peer.invalid:1").status == "header-ok"
        seen.append(chain.store.count_status(HEADER_ONLY))
    assert max(seen) == 20                          # reached, never passed (60 without the cap)
    assert chain.tip().height == 0
    # at 21 rows the cap trims to 18 (90 %), the latest seen first among equal work
    assert [chain.store.status(h.hash) for h in headers] == [HEADER_ONLY] * 18 + [None] * 42
    chain.store.close()


def test_invalid_rows_stay_within_the_invalid_cap(tiny_spec, tiny_dataset, tmp_path):
    smith, g = BlockSmith(tiny_spec, tiny_dataset, Ed25519PrivateKey.generate()), genesis_header(tiny_spec)
    # 30 distinct headers on genesis, each with a difficulty the retarget rule does not give
    bad = [smith.header(g, salt=f"s{i}", k=g.difficulty + 1) for i in range(30)]
    chain = Chain(tiny_spec, tmp_path, tiny_dataset, invalid_cap=10,
                  clock=lambda: bad[0].timestamp_ms / 1000 + 60)
    seen = []
    for h in bad:
        out = chain.submit_header(h, "http://peer.invalid:1")
        assert (out.status, out.code) == ("invalid", "bad-difficulty")
        seen.append(chain.store.count_status(INVALID))
    assert max(seen) == 10                          # 30 without the cap
    # the oldest went first: the latest ones are still answered from the store
    assert chain.store.status(bad[-1].hash) == INVALID
    assert chain.submit_header(bad[-1]).status == "duplicate"
    assert chain.store.status(bad[0].hash) is None
    # an evicted block that comes back is checked again, and rejected again
    out = chain.submit_header(bad[0])
    assert (out.status, out.code) == ("invalid", "bad-difficulty")
    assert chain.store.status(bad[0].hash) == INVALID
    assert chain.store.count_status(INVALID) <= 10
    chain.store.close()
