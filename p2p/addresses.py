"""Peer addresses: one peer is one scheme + host + port, whatever path a URL names.

``peer_url`` turns what a peer or a client wrote into ``(key, url)``: the key
``scheme://host:port`` (lower case, default port made explicit, IPv6 in
brackets) identifies the peer in the book and in the ban list, so changing the
path, the case or writing ``:80`` makes no new peer and evades no ban; the URL
(key plus a normalized path) is what we dial. Junk is refused: hosts that are
neither an IP address nor a DNS name of letters, digits and hyphens
(``http://Å``, ``http://-Infinity``, ``http://999``), credentials, queries,
fragments, odd characters, bad ports.
"""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

MAX_URL = 256
DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")


def valid_host(host: str) -> bool:
    """An IP address, or a DNS name of LDH labels whose last label is not all digits."""
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if len(host) > 253 or not host.isascii():
        return False
    labels = host.split(".")
    return (all(_LABEL.match(label) and _a_label_ok(label) for label in labels)
            and not labels[-1].isdigit())


def _a_label_ok(label: str) -> bool:
    """An ``xn--`` label must be Punycode that decodes (``http://xn--`` is no host: httpx refuses it)."""
    if not label.startswith("xn--"):
        return True
    try:
        label.encode("ascii").decode("idna")
    except UnicodeError:
        return False
    return True


def peer_url(url) -> tuple[str, str] | None:
    """``(key, url)`` of a usable peer URL, or None."""
    if not isinstance(url, str) or len(url) > MAX_URL or not url.isprintable() or any(c.isspace() for c in url):
        return None
    try:
        parts = urlsplit(url.rstrip("/"))
        port = parts.port
        host = parts.hostname
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or parts.username is not None or parts.password is not None:
        return None
    if parts.query or parts.fragment or "?" in url or "#" in url or host is None:
        return None
    host = host.rstrip(".")
    if not valid_host(host) or not _PATH.match(parts.path):
        return None
    port = DEFAULT_PORTS[scheme] if port is None else port
    if not 0 < port < 65536:
        return None
    shown = f"[{host}]" if ":" in host else host
    key = f"{scheme}://{shown}:{port}"
    return key, key + parts.path


def peer_key(url) -> str | None:
    """The book's and the ban list's key for a peer URL (None when it is not one)."""
    p = peer_url(url)
    return p[0] if p else None


def normalize_url(url) -> str | None:
    """The URL to dial for ``url`` (None when it is not a usable peer URL)."""
    p = peer_url(url)
    return p[1] if p else None


PREFIX_V4, PREFIX_V6 = 24, 48     # one site: what an attacker gets as cheaply as one address
WIDE_V4, WIDE_V6 = 16, 32         # one provider: many sites (a /32 holds 65,536 /48s)
_LOCAL_NETS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                                      "fc00::/7"))


def host_of(who) -> str | None:
    """The host of a client address (as given) or of a usable peer URL (lower case, IPv6 without
    brackets); None for anything else."""
    if not isinstance(who, str) or not who:
        return None
    if "://" not in who:
        return who
    p = peer_url(who)
    return urlsplit(p[0]).hostname if p is not None else None


def network_prefix(who) -> str | None:
    """The network ``who`` (a client address or a peer URL) belongs to for bans and quotas: ``net:`` and
    its IPv4 /24 or IPv6 /48 (an IPv4-mapped IPv6 address counts as IPv4); None for a DNS name or junk."""
    host = host_of(who)
    if host is None:
        return None
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = PREFIX_V4 if ip.version == 4 else PREFIX_V6
    return f"net:{ipaddress.ip_network(f'{ip}/{bits}', strict=False)}"


def wide_network(prefix: str) -> str | None:
    """The wide network (IPv4 /16, IPv6 /32) holding the ``net:`` network ``prefix`` (a /24 or /48);
    None for a prefix as wide or wider, or junk."""
    try:
        net = ipaddress.ip_network(prefix.removeprefix("net:"))
    except ValueError:
        return None
    bits = WIDE_V4 if net.version == 4 else WIDE_V6
    return f"net:{net.supernet(new_prefix=bits)}" if net.prefixlen > bits else None


def is_local_network(prefix: str) -> bool:
    """Loopback, link-local and RFC 1918 / ULA networks: an operator's own machines (a testnet on one
    host, a compose network), never banned as a whole."""
    net = ipaddress.ip_network(prefix.removeprefix("net:"))
    addr = net.network_address
    return addr.is_loopback or addr.is_link_local or any(net.subnet_of(n) for n in _LOCAL_NETS
                                                          if n.version == net.version)


def ban_key(who: str) -> str | None:
    """A peer URL's key, or an API client's host (an IP address as the server saw it)."""
    key = peer_key(who)
    if key is not None:
        return key
    if isinstance(who, str):
        try:
            return str(ipaddress.ip_address(who))
        except ValueError:
            return None
    return None
