"""Bodies and post-states from peers (p2p/fetch.py) against fake peers, no node processes:
a slow peer is dropped and the body comes from the next; records not matching the root move on
without a ban; a peer holding the block header-only lacks it (no failure); nobody serving it is
reported; a post-state must hash to the header's state_hash. Snapshot sync (p2p/bodies.py) over a
real chain: the checkpoint is accepted assumed only when a peer serves its post-state, and is
validated (replayed) when none does."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from consensus.block import Block, BlockHeader
from consensus.hashing import ZERO_HASH
from p2p import fetch as fetch_mod
from p2p import peers as peers_mod
from p2p.client import PeerClient
from p2p.fetch import NoBody, fetch_from_any, fetch_state
from p2p.peers import PeerBook

from .util import FakePeer
from tests.chain_spec import TINY_TEST


@pytest.fixture(scope="module")
def block():
    """A v2 header without records whose post-state is the tiny genesis weights."""
    from consensus.training import genesis_state
    from consensus.weights import encode_state, weights_hash
    spec = TINY_TEST
    state = genesis_state(spec)
    header = BlockHeader(version=spec.header_version, chain_id=spec.chain_id, height=1, parent=ZERO_HASH, timestamp_ms=1,
                         difficulty=8, miner="", nonces=(1,), state_hash=weights_hash(state), acc_after=0,
                         records_root=ZERO_HASH)
    return header, encode_state(state)


def serve(peer: FakePeer, header, records=None, status="valid") -> None:
    h = header.hash
    peer.serve_json(f"/blocks/{h}", {"hash": h, "height": header.height, "status": status,
                                     "header": header.to_dict(), "records": records or []})


DEADLINE = 10.0        # an honest peer answers well within it on a busy machine; SlowPeer takes longer


@pytest.fixture
def net():
    book = PeerBook("http://127.0.0.1:1")
    client = PeerClient(timeout=DEADLINE, deadline=DEADLINE, body_deadline=DEADLINE, min_body_rate=1 << 40)
    stop = threading.Event()
    yield SimpleNamespace(book=book, client=client, stop=stop,
                          fetch=lambda sources, header, i: fetch_from_any(client, book, sources, header, i, stop))
    client.close()


class SlowPeer(FakePeer):
    """Serves every answer a few bytes at a time: 16 a second, far past DEADLINE for a block's JSON."""

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
                    time.sleep(1.0)
            except OSError:
                pass
        self.server.RequestHandlerClass.do_GET = slow


@pytest.mark.slow
def test_slow_peer_is_dropped_and_the_next_serves(net, block, monkeypatch):
    header, _ = block
    now = time.time()
    clock = SimpleNamespace(time=lambda: now)      # frozen: the slow peer's backoff cannot run out mid-test
    monkeypatch.setattr(peers_mod, "time", clock)
    monkeypatch.setattr(fetch_mod, "time", clock)
    with SlowPeer() as slow, FakePeer() as good:
        serve(slow, header)
        serve(good, header)
        for p in (slow, good):
            net.book.add(p.url)
        t = time.monotonic()
        src, got = net.fetch([slow.url, good.url], header, 0)
        assert src == good.url and got == Block(header, [])
        assert time.monotonic() - t < DEADLINE + 10    # dropped at its deadline, not served in full
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


def test_a_header_only_peer_is_passed_over(net, block):
    """The block has no records, so the header-only peer's empty list would match its records_root:
    the peer is still passed over (it has not validated the block) and is not marked."""
    header, _ = block
    assert header.records_root == ZERO_HASH
    with FakePeer() as header_only, FakePeer() as good:
        serve(header_only, header, status="header-only")
        serve(good, header)
        for p in (header_only, good):
            net.book.add(p.url)
        src, got = net.fetch([header_only.url, good.url], header, 0)
        assert (src, got) == (good.url, Block(header, []))
        assert header_only.fetched(header.hash) == 1
        assert net.book.get(header_only.url).failures == 0 and net.book.get(header_only.url).bad_bodies == 0


def test_nobody_has_it(net, block):
    header, _ = block
    with FakePeer() as lacking, FakePeer() as empty:
        serve(lacking, header, status="header-only")
        with pytest.raises(NoBody) as exc:
            net.fetch([lacking.url, empty.url], header, 0)
        assert exc.value.failed == []


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


# -- snapshot sync fallback (p2p/bodies.py) over a real chain -----------------------------------------
class ChainLink:
    """p2p.node_link.NodeLink over a real Chain (what node/p2p_link.py does over the service)."""

    def __init__(self, chain):
        self.chain, self.spec = chain, chain.spec

    def accept_assumed(self, blocks, peer):
        return self.chain.accept_assumed(blocks, peer)

    def submit(self, block, peer, *, assumed=False):
        return self.chain.submit(block, peer, assumed=assumed)

    def status(self, block_hash):
        return self.chain.store.status(block_hash)

    def has_state(self, state_hash):
        return self.chain.store.weights.has(state_hash)

    def put_state(self, state_hash, data):
        self.chain.store.weights.put(state_hash, data)


@pytest.mark.parametrize("state_served", [False, True])
def test_assume_valid_falls_back_to_validation_without_the_checkpoint_state(tmp_path, tiny_spec, tiny_dataset,
                                                                           tiny_block, state_served):
    """--assume-valid at block 1: when no peer serves block 1's post-state, block 1 is validated
    (its proof replayed from genesis) and the node says so; when a peer serves it, block 1 is
    accepted on its header checks with that state installed, nothing replayed."""
    from consensus.weights import encode_state
    from node.chain import Chain
    from p2p.bodies import Bodies
    from p2p.context import Ctx
    from p2p.node_link import NetConfig
    chain = Chain(tiny_spec, tmp_path / "node", tiny_dataset)
    header = tiny_block.header
    assert chain.submit_headers([header])[0].status == "header-ok"
    book = PeerBook("http://127.0.0.1:1")
    client = PeerClient(timeout=10.0, deadline=10.0, body_deadline=10.0)
    ctx = Ctx(ChainLink(chain), NetConfig(url="http://127.0.0.1:1", assume_valid=header.hash), book, client)
    announced = []
    bodies = Bodies(ctx, announced.append, SimpleNamespace(progress={}))
    try:
        with FakePeer() as peer:
            peer.serve_block(header, tiny_block.records, state=encode_state(tiny_block.state) if state_served
                             else None)
            book.add(peer.url)
            accepted, go_on = bodies.fetch(peer.url, [Block(header, tiny_block.records)], 1, time.monotonic(), 0)
    finally:
        bodies.stop()
        client.close()
    assert (accepted, go_on) == (1, True)
    assert chain.tip().hash == header.hash
    stored = chain.store.get(header.hash)
    if state_served:
        assert chain.replays == 0 and stored.acc_after is None and announced == [header]
        assert bodies.assume_valid == header.hash
    else:
        assert chain.replays == 1 and stored.acc_after is not None     # replayed from genesis
        assert bodies.assume_valid is None                              # nothing assumed from now on
    assert chain.store.weights.has(header.state_hash)
    chain.store.close()
