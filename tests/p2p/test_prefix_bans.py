"""Bans by network (issue 19: a /64 is 2^64 identities, 12 ports on one IP were 12 fresh peers)."""
from __future__ import annotations

import time

from p2p.addresses import network_prefix
from p2p.bans import PREFIX_STRIKES, Bans


def test_network_prefixes():
    assert network_prefix("203.0.113.77") == "net:203.0.113.0/24"
    assert network_prefix("http://203.0.113.77:8001/x") == "net:203.0.113.0/24"
    assert network_prefix("2001:db8:1:2::5") == "net:2001:db8:1::/48"
    assert network_prefix("http://[2001:db8:1:ffff::1]:80") == "net:2001:db8:1::/48"
    assert network_prefix("::ffff:198.51.100.9") == "net:198.51.100.0/24"      # IPv4-mapped: IPv4
    assert network_prefix("http://node.example:80") is None and network_prefix("testclient") is None


def test_the_third_banned_address_bans_its_network():
    bans = Bans()
    for i in range(PREFIX_STRIKES - 1):
        bans.ban(f"203.0.113.{i + 1}", "bad-signature")
    assert not bans.is_banned("203.0.113.200")                  # two strikes: the rest of the /24 is free
    bans.ban("http://203.0.113.9:8000", "requirements-not-met")  # a peer URL on that network: the third
    for who in ("203.0.113.200", "http://203.0.113.201:9", "::ffff:203.0.113.5"):
        assert bans.is_banned(who), who
    assert not bans.is_banned("203.0.114.1")                    # the next /24 is another network
    assert "3 addresses of the network banned" in bans.reason("203.0.113.250")
    assert any(k == "net:203.0.113.0/24" for k, _, _ in bans.items())


def test_ports_of_one_host_are_one_address_and_rotating_ipv6_is_one_network():
    bans = Bans()
    bans.ban("http://198.51.100.7:1", "bad-signature")
    assert bans.is_banned("http://198.51.100.7:12") and bans.is_banned("198.51.100.7")   # every port of it
    for port in range(2, 13):
        bans.ban(f"http://198.51.100.7:{port}", "bad-signature")
    assert not bans.is_banned("198.51.100.8")                    # 12 ports: one host, one strike ...
    for i in range(PREFIX_STRIKES):
        bans.ban(f"2001:db8:aa:{i}::1", "bad-signature")          # ... while 3 addresses of a /48 ban it
    assert bans.is_banned("2001:db8:aa:ffff::1234")


def test_local_networks_are_never_banned_whole():
    """A testnet on one host, a compose network: their nodes share a /24 and must not go down together."""
    bans = Bans()
    for i in range(5):
        bans.ban(f"http://127.0.0.1:{8000 + i}", "bad-signature")
        bans.ban(f"10.1.2.{i}", "bad-signature")
    assert not bans.is_banned("http://127.0.0.1:9000") and not bans.is_banned("10.1.2.99")


def test_prefix_bans_survive_the_peer_store_round_trip_and_expire():
    bans = Bans()
    until = time.time() + 60
    assert bans.ban("net:203.0.113.0/24", "reloaded", until=until) == "net:203.0.113.0/24"
    assert bans.is_banned("203.0.113.4")
    assert bans.ban("net:127.0.0.0/24", "reloaded") is None and bans.ban("net:junk", "x") is None
    # a wide network (/16, /32: many of its networks were banned) comes back as one too
    assert bans.ban("net:2001:db8::/32", "reloaded", until=until) == "net:2001:db8::/32"
    assert bans.is_banned("2001:db8:5:6::7") and not bans.is_banned("2001:db9::1")
    assert bans.ban("net:10.1.0.0/16", "reloaded") is None and bans.ban("net:198.0.0.0/8", "x") is None
    bans.ban("net:198.51.100.0/24", "short", until=time.time() - 1)
    assert not bans.is_banned("198.51.100.1")
