"""bans hold: a ban lasts its term, whatever else is banned meanwhile, in bounded memory (issue 30.3).

The network-ban list was an LRU of 1,024: after 1,025 IPv6 /48s (three junk blocks from each: three
banned addresses ban the /48) the first /48 was free again, and one /32 holds 65,536 /48s. Now each
level (addresses, networks, wide networks: IPv4 /16, IPv6 /32) is a bounded table that never drops a
ban in force; when one is full the ban goes a level up, and many banned networks of one /32 (or /16)
ban it whole. On ``p2p.bans.Bans`` itself, as ``Network.penalize`` feeds it (one ``ban`` per invalid
block's sender), with the node's sizes unless a test says otherwise.
"""
from __future__ import annotations

import json
import time

from p2p.bans import MAX_BANS, MAX_PREFIX_BANS, MAX_WIDE_BANS, PREFIX_STRIKES, WIDE_STRIKES, Bans

CAPS = MAX_BANS + MAX_PREFIX_BANS + MAX_WIDE_BANS


def junk_from(bans: Bans, network_of: str, n: int = PREFIX_STRIKES) -> None:
    """``n`` junk blocks from addresses of one /48 (``network_of`` ends in ``::``-less groups)."""
    for j in range(n):
        bans.ban(f"{network_of}::{j + 1}", "requirements-not-met")


def test_a_48_stays_banned_after_1025_others_of_other_providers():
    """1,100 /48s, each of its own /32 (no aggregation helps): every one is still banned."""
    bans = Bans()
    nets = [f"2a01:{i + 1:x}:7" for i in range(1100)]
    for net in nets:
        junk_from(bans, net)
    free = [net for net in nets if not bans.is_banned(f"{net}:ffff::1")]
    print("FIGURES", json.dumps({"test": "bans-hold-distinct-32s", "networks": len(nets), "free_again": len(free),
                                 "bans_held": bans.held(), "cap": CAPS}))
    assert not free, f"{len(free)} banned /48s free again, the first: {free[:3]}"
    assert bans.is_banned("2a01:1:7::1")                  # the very first junk sender too
    assert not bans.is_banned("2a02:1:7::1")              # no one else
    assert bans.held() <= CAPS


def test_the_finding_1025_48s_of_one_32():
    """The reported case: 1,025 /48s of one /32, three junk blocks each."""
    bans = Bans()
    for i in range(1025):
        junk_from(bans, f"2001:db8:{i + 1:x}")
    assert bans.is_banned("2001:db8:1::99") and bans.is_banned("2001:db8:1::1")
    assert bans.is_banned("2001:db8:ffff::1")             # the /32 itself, after WIDE_STRIKES /48s
    assert not bans.is_banned("2001:db9::1")
    assert bans.held() <= CAPS


def test_many_bad_48s_ban_their_32_and_many_bad_24s_their_16():
    bans = Bans()
    for i in range(WIDE_STRIKES - 1):
        junk_from(bans, f"2001:db8:{i + 1:x}")
        for j in range(PREFIX_STRIKES):
            bans.ban(f"203.0.{i + 1}.{j + 1}", "bad-signature")
    assert not bans.is_banned("2001:db8:9999::1") and not bans.is_banned("203.0.200.1")   # not yet
    junk_from(bans, f"2001:db8:{WIDE_STRIKES:x}")
    for j in range(PREFIX_STRIKES):
        bans.ban(f"203.0.{WIDE_STRIKES}.{j + 1}", "bad-signature")
    assert bans.is_banned("2001:db8:9999::1") and bans.is_banned("http://[2001:db8:abcd::5]:8000")
    assert bans.is_banned("203.0.200.1") and bans.is_banned("http://203.0.7.7:9")
    assert not bans.is_banned("2001:db9::1") and not bans.is_banned("203.1.0.1")
    assert f"{WIDE_STRIKES} networks of it banned" in bans.reason("203.0.250.1")
    keys = {k for k, _, _ in bans.items()}
    assert {"net:2001:db8::/32", "net:203.0.0.0/16"} <= keys


def test_a_full_list_bans_a_level_up_and_never_drops_a_ban_in_force():
    bans = Bans(max_bans=4, max_prefix_bans=2, max_wide_bans=2)
    for i in range(4):
        bans.ban(f"198.51.{i}.1", "bad-signature")          # four addresses of four /24s (and /16s... one)
    bans.ban("198.51.9.1", "bad-signature")                 # the fifth: its /24 instead
    assert all(bans.is_banned(f"198.51.{i}.1") for i in range(4)) and bans.is_banned("198.51.9.200")
    bans.ban("198.51.10.1", "bad-signature")                # the sixth: /24 number two
    bans.ban("10.9.8.7", "bad-signature")                   # a local address: nowhere to go up, turned away
    assert not bans.is_banned("10.9.8.7")
    bans.ban("198.60.0.1", "bad-signature")                 # networks full too: its /16
    assert bans.is_banned("198.60.77.1")
    bans.ban("198.61.0.1", "bad-signature")                 # the second /16
    assert bans.ban("198.62.0.1", "bad-signature") is None  # every table full of bans in force: turned away
    held = ["198.51.0.1", "198.51.3.1", "198.51.9.2", "198.51.10.2", "198.60.0.2", "198.61.0.2"]
    assert all(bans.is_banned(a) for a in held) and bans.held() <= 4 + 2 + 2
    # expired bans make room
    later = Bans(max_bans=1, max_prefix_bans=1, max_wide_bans=1)
    later.ban("10.0.0.1", "x", until=time.time() + 0.2)
    time.sleep(0.3)
    assert later.ban("10.0.0.2", "x") == "10.0.0.2" and later.is_banned("10.0.0.2")
