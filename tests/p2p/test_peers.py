"""The peer book: bounds, backoff, drops, bans (no processes)."""
from __future__ import annotations

import time

from p2p import peers as peers_mod
from p2p.peers import PeerBook, normalize_url


def test_normalize_url():
    assert normalize_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert normalize_url("https://node.example") == "https://node.example"
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
    book.touch("http://p:1")                            # it called us: alive again
    assert book.peers["http://p:1"].failures == 0


def test_backoff_grows_and_learned_peers_are_dropped():
    book = PeerBook("http://me:1")
    book.add("http://conf:1", source="configured")
    book.add("http://learned:1")
    delays = []
    for _ in range(peers_mod.DROP_AFTER):
        t = time.time()
        book.failed("http://conf:1")
        delays.append(round(book.peers["http://conf:1"].next_try - t, 1))
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
    book.ban("http://c:1", "x")                          # bounded: the oldest ban goes
    assert not book.is_banned("http://a:1")
    book.ban("http://c:1", "x", seconds=-1)              # expired
    assert not book.is_banned("http://c:1")


def test_bad_body_is_a_failure_not_a_ban():
    book = PeerBook("http://me:1")
    book.add("http://p:1")
    book.bad_body("http://p:1")
    p = book.peers["http://p:1"]
    assert p.bad_bodies == 1 and p.failures == 1 and not book.is_banned("http://p:1")
