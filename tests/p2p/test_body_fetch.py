"""Body downloads (p2p/fetch.py fetch_from_any) against fake peers, no node processes:
a slow peer is dropped and the body comes from the next; a bad body or a pruned one moves on
without a ban; nobody serving it is reported."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from consensus.block import BlockHeader
from consensus.hashing import ZERO_HASH
from consensus.spec import preset
from p2p.client import PeerClient
from p2p.fetch import NoBody, fetch_from_any
from p2p.peers import PeerBook
from .util import FakePeer


@pytest.fixture(scope="module")
def block():
    """A header committing to the tiny genesis weights (only the body commitments matter here)."""
    from consensus.training import genesis_state
    from consensus.weights import encode_state, weights_hash
    spec = preset("tiny")
    state = genesis_state(spec)
    body = encode_state(state)
    header = BlockHeader(version=1, chain_id=spec.chain_id, height=1, parent=ZERO_HASH, timestamp_ms=1,
                         difficulty=8, miner="", batch=(0, 1, 2, 3), weights_hash=weights_hash(state), acc_before=0,
                         acc_after=0, records_root=ZERO_HASH)
    return header, body


@pytest.fixture
def net():
    book = PeerBook("http://127.0.0.1:1")
    client = PeerClient(timeout=2.0, body_deadline=1.0, min_body_rate=1 << 40)   # bodies: 1 s in all
    cap = preset("tiny").limits.max_weights_bytes
    yield SimpleNamespace(book=book, fetch=lambda sources, header, i: fetch_from_any(client, book, sources, header,
                                                                                     i, cap, threading.Event()))
    client.close()


class SlowPeer(FakePeer):
    """Serves the block JSON at once and the weights a few bytes at a time."""

    def __init__(self):
        super().__init__()
        handler = self.server.RequestHandlerClass
        serve = handler._serve
        fake = self

        def slow(self):
            path = self.path.split("?")[0]
            if not path.endswith("/weights"):
                return serve(self)
            fake.requests.append((self.command, path))
            body = fake.routes[path][2]
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            try:
                for i in range(0, len(body), 512):
                    self.wfile.write(body[i:i + 512])
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        handler.do_GET = slow


def test_slow_peer_is_dropped_and_the_next_serves(net, block):
    header, body = block
    with SlowPeer() as slow, FakePeer() as good:
        slow.serve_block(header, body)
        good.serve_block(header, body)
        for p in (slow, good):
            net.book.add(p.url)
        t = time.monotonic()
        src, records, weights = net.fetch([slow.url, good.url], header, 0)
        assert src == good.url and weights == body and records == []
        assert time.monotonic() - t < 5
        assert net.book.get(slow.url).failures == 1 and not net.book.is_banned(slow.url)
        # the slow peer now waits out its backoff: the next body goes to the good peer first
        good.requests.clear()
        slow.requests.clear()
        assert net.fetch([slow.url, good.url], header, 0)[0] == good.url
        assert slow.requests == []


def test_bad_and_pruned_bodies_move_on_without_a_ban(net, block):
    header, body = block
    with FakePeer() as bad, FakePeer() as pruned, FakePeer() as good:
        bad.serve_block(header, body[:-8] + b"\0" * 8)       # does not hash to the header's weights_hash
        pruned.serve_json(f"/blocks/{header.hash}", {"header": header.to_dict(), "records": []})
        pruned.serve_json(f"/blocks/{header.hash}/weights", {"error": "pruned", "detail": ""}, status=404)
        good.serve_block(header, body)
        for p in (bad, pruned, good):
            net.book.add(p.url)
        src, _, weights = net.fetch([bad.url, pruned.url, good.url], header, 0)
        assert src == good.url and weights == body
        assert net.book.get(bad.url).bad_bodies == 1
        assert not any(net.book.is_banned(p.url) for p in (bad, pruned, good))


def test_nobody_has_it(net, block):
    header, body = block
    with FakePeer() as pruned, FakePeer() as empty:
        pruned.serve_json(f"/blocks/{header.hash}", {"header": header.to_dict(), "records": []})
        pruned.serve_json(f"/blocks/{header.hash}/weights", {"error": "pruned", "detail": ""}, status=404)
        with pytest.raises(NoBody) as exc:
            net.fetch([pruned.url, empty.url], header, 0)
        assert exc.value.pruned == [pruned.url] and exc.value.failed == []


def test_records_not_matching_the_root_are_a_bad_body(net, block):
    header, body = block
    with FakePeer() as liar, FakePeer() as good:
        liar.serve_block(header, body, records=[{"type": "model-certificate", "junk": 1}])
        good.serve_block(header, body)
        src, records, _ = net.fetch([liar.url, good.url], header, 0)
        assert src == good.url and records == []
