"""Downloads during sync against fake peers, no node processes.

* Bodies (``Network._fetch_body``): a v2 body is the block's records, checked against the
  header's records_root. A slow peer is dropped and the body comes from the next; records
  not matching the root, or a peer lacking the block (404) or holding only its header, move
  on without a ban; nobody serving it is reported.
* Snapshots (``Network._fetch_state``, assume-valid): the checkpoint's post-state is taken from
  the first peer whose file hashes to the header's state_hash; a peer serving another state,
  an unreadable file, a pruned one or one over the size cap is passed over.
"""
from __future__ import annotations

import time

import pytest

from consensus.block import BlockHeader, records_root
from consensus.hashing import ZERO_HASH
from consensus.spec import preset
from consensus.training import genesis_state
from consensus.weights import encode_state, weights_hash
from p2p.client import PeerClient
from p2p.network import NoBody
from tests.node.conftest import certificate

from .util import FakePeer, offline_network


@pytest.fixture(scope="module")
def state():
    """A post-state (the tiny genesis weights) and its encoding."""
    s = genesis_state(preset("tiny"))
    return s, encode_state(s)


@pytest.fixture(scope="module")
def block(state):
    """A header carrying one certificate and committing to ``state`` (only the commitments matter here)."""
    spec = preset("tiny")
    cert = certificate(3)
    header = BlockHeader(version=spec.header_version, chain_id=spec.chain_id, height=1, parent=ZERO_HASH,
                         timestamp_ms=1, difficulty=8, miner="", nonces=(1,), state_hash=weights_hash(state[0]),
                         acc_after=0, records_root=records_root([cert]))
    return header, [cert.body]


@pytest.fixture
def net(tmp_path):
    # every call 1 s in all (bodies are block JSON; states add size / rate, here nothing)
    n = offline_network(preset("tiny"), tmp_path / "weights",
                        PeerClient(timeout=2.0, deadline=1.0, body_deadline=1.0, min_body_rate=1 << 40))
    yield n
    n.stop()


class SlowPeer(FakePeer):
    """Serves every route a few bytes at a time."""

    def __init__(self):
        super().__init__()
        handler = self.server.RequestHandlerClass
        fake = self

        def slow(self):
            path = self.path.split("?")[0]
            fake.requests.append((self.command, path))
            body = fake.routes[path][2]
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            try:
                for i in range(0, len(body), 64):
                    self.wfile.write(body[i:i + 64])
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        handler.do_GET = slow


def test_slow_peer_is_dropped_and_the_next_serves(net, block):
    header, records = block
    with SlowPeer() as slow, FakePeer() as good:
        slow.serve_block(header, records)
        good.serve_block(header, records)
        for p in (slow, good):
            net.book.add(p.url)
        t = time.monotonic()
        src, got = net._fetch_body([slow.url, good.url], header, 0)
        assert src == good.url and got == records
        assert time.monotonic() - t < 5
        assert net.book.get(slow.url).failures == 1 and not net.book.is_banned(slow.url)
        # the slow peer now waits out its backoff: the next body goes to the good peer first
        good.requests.clear()
        slow.requests.clear()
        assert net._fetch_body([slow.url, good.url], header, 0)[0] == good.url
        assert slow.requests == []


def test_records_not_matching_the_root_are_a_bad_body(net, block):
    header, records = block
    with FakePeer() as swapped, FakePeer() as junk, FakePeer() as empty, FakePeer() as good:
        swapped.serve_block(header, [certificate(4).body])          # a valid record, not the committed one
        junk.serve_block(header, [{"type": "model-certificate", "junk": 1}])
        empty.serve_block(header, [])
        good.serve_block(header, records)
        peers = (swapped, junk, empty, good)
        for p in peers:
            net.book.add(p.url)
        src, got = net._fetch_body([p.url for p in peers], header, 0)
        assert src == good.url and got == records
        assert [net.book.get(p.url).bad_bodies for p in peers] == [1, 1, 1, 0]
        assert not any(net.book.is_banned(p.url) for p in peers)


def test_missing_blocks_move_on_without_a_mark(net, block):
    """A peer that lacks the block (404) or knows only its header (headers-first, no records yet) has
    done nothing wrong: the next peer serves the body and neither is marked."""
    header, records = block
    with FakePeer() as lacking, FakePeer() as header_only, FakePeer() as good:
        header_only.serve_block(header, [], status="header-only")
        good.serve_block(header, records)
        peers = (lacking, header_only, good)
        for p in peers:
            net.book.add(p.url)
        src, got = net._fetch_body([p.url for p in peers], header, 0)
        assert src == good.url and got == records
        assert lacking.fetched(header.hash) == 1 and header_only.fetched(header.hash) == 1
        for p in (lacking, header_only):
            assert net.book.get(p.url).bad_bodies == 0 and net.book.get(p.url).failures == 0, p.url


def test_nobody_has_it(net, block):
    header, _ = block
    with FakePeer() as lacking, FakePeer() as header_only:
        header_only.serve_block(header, [], status="header-only")
        with pytest.raises(NoBody) as exc:
            net._fetch_body([lacking.url, header_only.url], header, 0)
        assert exc.value.pruned == [] and exc.value.failed == []


def test_block_without_records_needs_no_body(net, state):
    """A header whose records_root is empty: an empty list from any peer that has the block is its body."""
    spec = preset("tiny")
    header = BlockHeader(version=spec.header_version, chain_id=spec.chain_id, height=1, parent=ZERO_HASH,
                         timestamp_ms=1, difficulty=8, miner="", nonces=(1,), state_hash=weights_hash(state[0]),
                         acc_after=0, records_root=ZERO_HASH)
    with FakePeer() as good:
        good.serve_block(header, [])
        assert net._fetch_body([good.url], header, 0) == (good.url, [])


# -- snapshots ------------------------------------------------------------------------------------
def test_snapshot_state_is_checked_against_the_header(net, block, state):
    header, records = block
    other = encode_state({k: v + 1 if v.is_floating_point() else v for k, v in state[0].items()})
    big = b"\0" * (net.spec.limits.max_weights_bytes + 1)
    with FakePeer() as liar, FakePeer() as garbage, FakePeer() as pruned, FakePeer() as huge, \
            FakePeer() as good:
        liar.serve_block(header, records, state=other)               # a real state, not the committed one
        garbage.serve_block(header, records, state=state[1][:-100])
        pruned.serve_block(header, records)
        pruned.serve_json(f"/blocks/{header.hash}/state", {"error": "pruned", "detail": ""}, status=404)
        huge.serve_block(header, records, state=big)
        good.serve_block(header, records, state=state[1])
        peers = (liar, garbage, pruned, huge, good)
        for p in peers:
            net.book.add(p.url)
        weights = net.chain.store.weights
        assert not weights.has(header.state_hash)
        assert net._fetch_state([p.url for p in peers], header)
        assert weights.get(header.state_hash) == state[1]
        assert [p.fetched(header.hash) for p in peers] == [1, 1, 1, 1, 1]
        assert net.book.get(liar.url).bad_bodies == 1
        assert not any(net.book.is_banned(p.url) for p in peers)
        # stored: asked again, nobody is dialled
        assert net._fetch_state([liar.url], header) and liar.fetched(header.hash) == 1


def test_snapshot_nobody_serves_the_state(net, block, state):
    header, records = block
    other = encode_state({k: v * 2 if v.is_floating_point() else v for k, v in state[0].items()})
    with FakePeer() as liar, FakePeer() as lacking:
        liar.serve_block(header, records, state=other)
        assert not net._fetch_state([liar.url, lacking.url], header)
    assert not net.chain.store.weights.has(header.state_hash)
    assert not list(net.chain.store.weights.root.rglob("*.safetensors"))
