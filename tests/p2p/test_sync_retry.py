"""A peer that brought nothing is synced from again once our poll finds it claiming more work, not only
when its backoff (2 s doubling to a minute) runs out (issue 20.2). After a partition heals, the next
hop asks a node that is still replaying the heavier branch: its best chain has not moved yet, so the
sync brings nothing and backs off; when that node's tip moves, the next poll must start the sync.

A real Chain and PeerBook, the Syncer's own rounds, and a real HTTP peer (FakePeer) whose best chain
holds nothing we lack; each sync attempt is one GET /blocks at it."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from p2p.client import PeerClient
from p2p.context import Ctx
from p2p.node_link import NetConfig, Tip
from p2p.peers import PeerBook
from p2p.sync import Syncer

from .test_body_fetch import ChainLink
from .util import FakePeer


class SyncLink(ChainLink):
    """What the syncer asks of the node, over a real Chain (node/p2p_link.py does it over the service)."""

    def tip(self):
        t = self.chain.tip()
        return Tip(t.height, t.hash, t.cumulative_work)

    def work(self, block_hash):
        b = self.chain.store.get(block_hash)
        return b.cumulative_work if b is not None else None

    def submit_headers(self, headers, peer):
        return self.chain.submit_headers(headers, peer)


@pytest.fixture
def rig(tmp_path, tiny_spec, tiny_dataset):
    """A real Chain and PeerBook, the Syncer, and a FakePeer in the book whose best chain holds nothing
    we lack (each sync attempt is one GET /blocks at it)."""
    from node.chain import Chain
    chain = Chain(tiny_spec, tmp_path / "node", tiny_dataset)
    book = PeerBook("http://127.0.0.1:1")
    client = PeerClient(timeout=10.0, deadline=10.0, body_deadline=10.0)
    syncer = Syncer(Ctx(SyncLink(chain), NetConfig(url="http://127.0.0.1:1"), book, client), lambda *a: None)
    try:
        with FakePeer() as peer:
            peer.serve_json("/blocks", {"blocks": [], "next_start": None})
            book.add(peer.url)
            yield SimpleNamespace(chain=chain, book=book, syncer=syncer, peer=peer, mine=chain.tip().cumulative_work)
    finally:
        syncer.bodies.stop()
        client.close()
        chain.store.close()


def test_a_peer_in_backoff_is_synced_from_when_it_claims_more_work(rig):
    book, syncer, peer, mine = rig.book, rig.syncer, rig.peer, rig.mine

    def attempts() -> int:
        return sum(1 for _, path in peer.requests if path == "/blocks")

    book.ok(peer.url, height=5, work=mine + 100, tip="aa" * 32)     # what our poll of its /status says
    syncer._round()
    assert attempts() == 1                     # tried, brought nothing: now in backoff
    syncer._round()
    syncer.ctx.request_sync(peer.url, 5)       # an announcement of the same claim
    syncer._round()
    assert attempts() == 1, "a peer that brought nothing was asked again at once"

    book.ok(peer.url, height=6, work=mine + 200, tip="bb" * 32)     # its tip moved: more work
    syncer._round()
    assert attempts() == 2, "the peer's new claim waited out the backoff"
    syncer._round()
    assert attempts() == 2                     # and that claim brought nothing either: backoff again


def test_a_peer_claiming_more_work_stops_mining_until_a_sync_finds_nothing(rig):
    """Syncer.behind (issue 30): a peer two blocks up stops our miner at once, one block up only after
    BEHIND_GRACE_S; a claim that a sync found empty stops nothing while its backoff runs, however it grows
    (a false claim costs our miner one sync attempt per backoff); the store recovering resets that."""
    book, syncer, peer, mine = rig.book, rig.syncer, rig.peer, rig.mine
    book.ok(peer.url, height=1, work=mine + 1, tip="aa" * 32)
    assert syncer.behind() is None                     # one block up: in flight, for now
    syncer._ahead_since[peer.url] -= 10                # ... but for 10 s already
    assert syncer.behind() == peer.url
    book.ok(peer.url, height=2, work=mine + 2, tip="bb" * 32)
    assert syncer.behind() == peer.url                 # two blocks up: at once
    syncer._round()                                    # the sync brings nothing
    assert syncer.behind() is None
    book.ok(peer.url, height=50, work=mine + 10**6, tip="cc" * 32)
    assert syncer.behind() is None                     # a growing claim, in backoff: nothing stops
    syncer.reset_backoff()                             # our store wrote again: the failures were ours
    assert syncer.behind() == peer.url
