"""Bodies and post-states from peers (p2p/fetch.py) against fake peers, no node processes:
a slow peer is dropped and the body comes from the next; records not matching the root move on
without a ban; a peer holding the block header-only lacks it (no failure); nobody serving it is
reported; a post-state must hash to the header's state_hash."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from consensus.block import Block, BlockHeader
from consensus.hashing import ZERO_HASH
from consensus.spec import preset
from p2p.client import PeerClient
from p2p.fetch import NoBody, fetch_from_any, fetch_state
from p2p.peers import PeerBook
from .util import FakePeer


@pytest.fixture(scope="module")
def block():
    """A v2 header without records whose post-state is the tiny genesis weights."""
    from consensus.training import genesis_state
    from consensus.weights import encode_state, weights_hash
    spec = preset("tiny")
    state = genesis_state(spec)
    header = BlockHeader(version=2, chain_id=spec.chain_id, height=1, parent=ZERO_HASH, timestamp_ms=1,
                         difficulty=8, miner="", nonces=(1,), state_hash=weights_hash(state), acc_after=0,
                         records_root=ZERO_HASH)
    return header, encode_state(state)


def serve(peer: FakePeer, header, records=None, status="valid") -> None:
    h = header.hash
    peer.serve_json(f"/blocks/{h}", {"hash": h, "height": header.height, "status": status,
                                     "header": header.to_dict(), "records": records or []})


@pytest.fixture
def net():
    book = PeerBook("http://127.0.0.1:1")
    client = PeerClient(timeout=2.0, deadline=1.0, body_deadline=1.0, min_body_rate=1 << 40)   # 1 s in all
    stop = threading.Event()
    yield SimpleNamespace(book=book, client=client, stop=stop,
                          fetch=lambda sources, header, i: fetch_from_any(client, book, sources, header, i, stop))
    client.close()


class SlowPeer(FakePeer):
    """Serves every answer a few bytes at a time."""

    def __init__(self):
        super().__init__()
        fake = self

        def slow(handler):
            path = handler.path.split("?")[0]
            fake.requests.append((handler.command, path))
            body = fake.routes.get(path, (404, "", b"{}"))[2]
            handler.send_response(200)
            handler.send_header("content-length", str(len(body)))
            handler.end_headers()
            try:
                for i in range(0, len(body), 16):
                    handler.wfile.write(body[i:i + 16])
                    handler.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        self.server.RequestHandlerClass.do_GET = slow


def test_slow_peer_is_dropped_and_the_next_serves(net, block):
    header, _ = block
    with SlowPeer() as slow, FakePeer() as good:
        serve(slow, header)
        serve(good, header)
        for p in (slow, good):
            net.book.add(p.url)
        t = time.monotonic()
        src, got = net.fetch([slow.url, good.url], header, 0)
        assert src == good.url and got == Block(header, [])
        assert time.monotonic() - t < 5
        assert net.book.get(slow.url).failures == 1 and not net.book.is_banned(slow.url)
        # the slow peer now waits out its backoff: the next body goes to the good peer first
        good.requests.clear()
        slow.requests.clear()
        assert net.fetch([slow.url, good.url], header, 0)[0] == good.url
        assert slow.requests == []


def test_bad_and_lacking_bodies_move_on_without_a_ban(net, block):
    header, _ = block
    with FakePeer() as liar, FakePeer() as lacking, FakePeer() as good:
        serve(liar, header, records=[{"type": "model-certificate", "junk": 1}])
        serve(lacking, header, status="header-only")
        serve(good, header)
        for p in (liar, lacking, good):
            net.book.add(p.url)
        src, got = net.fetch([liar.url, lacking.url, good.url], header, 0)
        assert src == good.url and got == Block(header, [])
        assert net.book.get(liar.url).bad_bodies == 1
        assert net.book.get(lacking.url).failures == 0          # lacking the body is no failure
        assert not any(net.book.is_banned(p.url) for p in (liar, lacking, good))


def test_nobody_has_it(net, block):
    header, _ = block
    with FakePeer() as lacking, FakePeer() as empty:
        serve(lacking, header, status="header-only")
        with pytest.raises(NoBody) as exc:
            net.fetch([lacking.url, empty.url], header, 0)
        assert exc.value.pruned == [] and exc.value.failed == []


def test_post_state_must_match_the_header(net, block):
    header, state = block
    kept: dict[str, bytes] = {}
    node = SimpleNamespace(has_state=lambda h: h in kept, put_state=kept.__setitem__)
    with FakePeer() as bad, FakePeer() as good:
        bad.serve_bytes(f"/blocks/{header.hash}/state", state[:-8] + b"\0" * 8)
        good.serve_bytes(f"/blocks/{header.hash}/state", state)
        for p in (bad, good):
            net.book.add(p.url)
        assert not fetch_state(net.client, net.book, node, [bad.url], header, 1 << 20, net.stop)
        assert net.book.get(bad.url).bad_bodies == 1 and kept == {}
        assert fetch_state(net.client, net.book, node, [bad.url, good.url], header, 1 << 20, net.stop)
        assert kept == {header.state_hash: state}
        good.requests.clear()
        assert fetch_state(net.client, net.book, node, [good.url], header, 1 << 20, net.stop)   # kept already
        assert good.requests == []
