"""The peer book: bounds, backoff, drops, bans (no processes)."""
from __future__ import annotations

import time
from types import SimpleNamespace

from p2p import peers as peers_mod
from p2p.peers import PeerBook, normalize_url


def test_normalize_url():
    assert normalize_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert normalize_url("https://node.example") == "https://node.example:443"
    for bad in ("ftp://x", "http://", "127.0.0.1:8000", "http://a b", "http://x:99999", None, 5,
                "http://x/?q=1", "http://" + "a" * 300):
        assert normalize_url(bad) is None, bad


def test_book_is_bounded_and_skips_self():
    book = PeerBook("http://127.0.0.1:1", max_peers=3)
    assert not book.add("http://127.0.0.1:1/")
    assert book.add("http://127.0.0.1:2", source="configured")
    assert book.add("http://127.0.0.1:3")
    assert book.add("http://127.0.0.1:4")
    assert not book.add("http://127.0.0.1:3")          # known
    assert not book.add("http://127.0.0.1:5")          # full, nobody failing
    for _ in range(3):
        book.failed("http://127.0.0.1:4")
    assert book.add("http://127.0.0.1:5")              # takes the failing learned peer's place
    assert set(book.peers) == {"http://127.0.0.1:2", "http://127.0.0.1:3", "http://127.0.0.1:5"}


def test_backoff_then_reconnect():
    book = PeerBook("http://me:1")
    book.add("http://p:1")
    book.failed("http://p:1")
    assert book.usable() == [] and book.peers["http://p:1"].state(time.time()) == "backoff"
    book.peers["http://p:1"].next_try = 0               # backoff over
    assert [p.url for p in book.usable()] == ["http://p:1"]
    book.ok("http://p:1", 5, 100, "ab" * 32)
    assert [p.url for p in book.connected()] == ["http://p:1"] and book.peers["http://p:1"].height == 5
    book.failed("http://p:1")
    book.ok("http://p:1")                               # it answered: alive again
    assert book.peers["http://p:1"].failures == 0


def test_backoff_grows_and_learned_peers_are_dropped(monkeypatch):
    now = 1_700_000_000.0
    monkeypatch.setattr(peers_mod, "time", SimpleNamespace(time=lambda: now))    # a fixed clock: exact delays
    book = PeerBook("http://me:1")
    book.add("http://conf:1", source="configured")
    book.add("http://learned:1")
    delays = []
    for _ in range(peers_mod.DROP_AFTER):
        book.failed("http://conf:1")
        delays.append(book.peers["http://conf:1"].next_try - now)
        book.failed("http://learned:1")
    assert delays == sorted(delays) and delays[-1] <= peers_mod.MAX_BACKOFF + 0.1
    assert "http://learned:1" not in book.peers       # forgotten
    assert "http://conf:1" in book.peers              # configured peers are kept


def test_bans_outlive_the_list_and_expire():
    book = PeerBook("http://me:1", max_peers=1, max_bans=2)
    book.add("http://a:1")
    book.ban("http://a:1", "bad-signature")
    book.ban("http://stranger:1", "requirements-not-met")   # never in the list
    assert book.is_banned("http://a:1") and book.is_banned("http://stranger:1/")
    assert book.usable() == []
    assert not book.add("http://stranger:1")
    snap = {p["url"]: p for p in book.snapshot()}
    assert snap["http://a:1"]["state"] == "banned" and snap["http://stranger:1"]["state"] == "banned"
    assert snap["http://stranger:1"]["ban_reason"] == "requirements-not-met"
    # bounded, and a ban in force holds (issue 30.3): a DNS name has no network to ban instead, so it is
    # turned away while the list is full; an address's network is banned instead (p2p/bans.py)
    assert book.ban("http://c:1", "x") is None
    assert book.is_banned("http://a:1") and not book.is_banned("http://c:1")
    assert book.ban("http://198.51.100.7:1", "x") == "http://198.51.100.7:1"
    assert book.is_banned("http://198.51.100.8:2") and book.bans.held() <= 2 + 1
    book.ban("http://d:1", "x", seconds=-1)              # expired
    assert not book.is_banned("http://d:1")


def test_bad_body_is_a_failure_not_a_ban():
    book = PeerBook("http://me:1")
    book.add("http://p:1")
    book.bad_body("http://p:1")
    p = book.peers["http://p:1"]
    assert p.bad_bodies == 1 and p.failures == 1 and not book.is_banned("http://p:1")


def test_one_peer_per_scheme_host_port():
    from p2p.addresses import peer_key
    same = ["http://Node.Example:80/a", "http://node.example/b/", "HTTP://node.example:80", "http://node.example."]
    assert {peer_key(u) for u in same} == {"http://node.example:80"}
    assert peer_key("https://node.example") == "https://node.example:443"
    assert peer_key("http://[::1]:8000/x") == "http://[::1]:8000"
    book = PeerBook("http://me:1")
    assert book.add("http://x:1/a") and not book.add("http://x:1/b") and not book.add("http://X:1")
    assert [p["url"] for p in book.snapshot()] == ["http://x:1/a"]
    book.ban("http://x:1/other-path", "bad-signature")          # a ban covers every path
    assert book.is_banned("http://x:1/a") and book.is_banned("http://x:1")


def test_junk_hosts_are_refused():
    for junk in ("http://Å", "http://-Infinity", "http://999", "http://1.2.3.999", "http://a..b", "http://a_b:1",
                 "http://u:p@host:1", "http://host:0", "http://host:1/a b", "http://host:1/%2e%2e", "http://ho st",
                 "http://" + "a" * 64 + ".com", "javascript://x", "http://host:1/\u00e9",
                 "http://xn--", "http://xn--a", "http://xn--zz.example"):           # A-labels that do not decode
        assert normalize_url(junk) is None, junk
    for ok in ("http://10.0.0.1:8000", "http://node-1.example.org:8000/polchain", "https://xn--bcher-kva.example"):
        assert normalize_url(ok) is not None, ok


def test_inbound_entries_cannot_take_the_outbound_share():
    book = PeerBook("http://me:1", max_peers=8, reserved=2)
    for i in range(10):
        book.add(f"http://10.0.0.{i}:1", source="introduced")
    assert sum(1 for p in book.peers.values() if not p.outbound) == 6      # max_peers - reserved
    assert book.add("http://seed:1", source="learned") and book.add("http://seed:2", source="learned")
    assert len(book.peers) == 8
    assert not book.add("http://10.0.0.99:1", source="announced")          # full, everyone healthy, all hosts distinct


def test_one_host_cannot_hold_every_inbound_slot():
    book = PeerBook("http://me:1", max_peers=8, reserved=2)
    for port in range(1, 7):
        assert book.add(f"http://attacker:{port}", source="introduced")
    assert not book.add("http://attacker:99", source="introduced")         # no gain in diversity
    assert book.add("http://honest:1", source="introduced")                 # takes the newest attacker entry
    assert "http://honest:1" in book.peers and "http://attacker:6" not in book.peers
    book.served_block("http://attacker:5")                                  # a useful peer is kept
    assert book.add("http://honest2:1", source="introduced")
    assert "http://attacker:5" in book.peers and "http://attacker:4" not in book.peers


def test_peer_book_is_saved_and_loaded(tmp_path):
    from p2p import peerstore
    book = PeerBook("http://me:1")
    book.add("http://seed:1", source="configured")
    book.add("http://a:1/x", source="introduced", height=3, work=10, tip="ab" * 32)
    book.add("http://never-answered:1", source="learned")                   # not worth keeping
    book.ban("http://bad:1", "bad-signature")
    peerstore.save(book, tmp_path)
    assert not (tmp_path / "peers.json.tmp").exists()
    again = PeerBook("http://me:1")
    assert peerstore.load(again, tmp_path) == 2
    assert {p.url: p.source for p in again.peers.values()} == {"http://seed:1": "learned", "http://a:1/x": "introduced"}
    assert all(p.last_seen is None for p in again.peers.values())          # polled again before use
    assert again.is_banned("http://bad:1")
    for junk in (b"{", b"[]", b'{"version": 1, "peers": 5, "bans": []}', b"\xff" * 10):
        (tmp_path / "peers.json").write_bytes(junk)
        assert peerstore.load(PeerBook("http://me:1"), tmp_path) == 0


def test_token_buckets_and_the_validation_lanes():
    import threading

    from node.admission import Admission, LaneQueue, TokenBuckets
    b = TokenBuckets(rate=10, burst=5)
    assert [b.take("c") == 0 for _ in range(6)] == [True] * 5 + [False]
    assert 0 < b.take("c") <= 0.1 and b.take("other") == 0
    adm = Admission(10, 40, ("127.0.0.1",), lambda c: time.time() + 60 if c == "10.0.0.9" else None)
    assert adm.refuse("10.0.0.9", "blocks")[:2] == (403, "banned")
    refusals = [adm.refuse("10.0.0.8", "peers") for _ in range(5)]
    assert refusals[:4] == [None] * 4 and refusals[4][:2] == (429, "rate-limited")
    assert all(adm.refuse("127.0.0.1", "peers") is None for _ in range(100))
    # one network's quota: two addresses of a /24 share one bucket (outside local networks)
    assert [adm.refuse(f"203.0.113.{i}", "peers") is None for i in range(5)] == [True] * 4 + [False]
    assert adm.lane("127.0.0.1") == "known" and adm.lane("203.0.113.7") == "stranger"
    adm.vouch("http://203.0.113.7:8000")
    assert adm.lane("203.0.113.7") == "known" and adm.lane("http://203.0.113.7:9") == "known"
    adm.unvouch("203.0.113.7")                                   # banned: the record is gone
    assert adm.lane("203.0.113.7") == "stranger"
    # configuration: the hosts of --peer seeds are known (a connected peer is not: see test_trust.py)
    seeded = Admission(10, 40, (), lambda c: None, configured=["http://198.51.100.4:8000/x"])
    assert seeded.lane("http://198.51.100.4:8001") == "known" and seeded.lane("198.51.100.4") == "known"
    assert seeded.lane("http://198.51.100.5:8000") == "stranger" and seeded.lane(None) == "known"

    gate, order = threading.Event(), []
    q = LaneQueue(4, stranger_limit=2)
    try:
        running = q.try_submit(gate.wait, 5)                                   # holds the thread
        s1 = q.try_submit(order.append, "stranger-a", lane="stranger", prefix="net:203.0.113.0/24")
        assert q.try_submit(order.append, "x", lane="stranger", prefix="net:203.0.113.0/24") is None  # one per network
        assert "one block at a time per network" in q.refusal("stranger", "net:203.0.113.0/24")
        s2 = q.try_submit(order.append, "stranger-b", lane="stranger", prefix="net:198.51.100.0/24")
        assert q.try_submit(order.append, "x", lane="stranger", prefix="net:192.0.2.0/24") is None    # lane full
        k = q.try_submit(order.append, "known")
        assert q.depth == 4 and q.try_submit(order.append, "y") is None                              # the bound
        gate.set()
        for f in (running, s1, s2, k):
            f.result(timeout=10)
        assert order == ["known", "stranger-a", "stranger-b"]            # queued last, validated first
        assert not q.known_waiting()

        # a stranger's job that polls known_waiting (the replays do, between steps) sees a known block
        # that will be judged now (``preempts``) queued while it runs, and may stop for it; a known
        # orphan or duplicate (no ``preempts``) does not count
        started, seen = threading.Event(), []

        def stranger_job() -> str:
            started.set()
            for _ in range(10_000):
                if q.known_waiting():
                    return "gave way"
                time.sleep(0.01)
            return "ran to the end"

        s = q.try_submit(stranger_job, lane="stranger", prefix="net:203.0.113.0/24")
        assert started.wait(30)
        orphan = q.try_submit(seen.append, "orphan")
        assert not q.known_waiting()
        k = q.try_submit(seen.append, "known", preempts=True)
        assert s.result(timeout=120) == "gave way"
        orphan.result(timeout=30)
        k.result(timeout=30)
        assert seen == ["orphan", "known"] and not q.known_waiting()
        assert q.depth == 0 and q.try_submit(lambda: 1).result(timeout=10) == 1
    finally:
        q.shutdown()
