"""Operator commands: `polchain status` (a node's state at a glance) and `polchain keys new|show`."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DEFAULT_NODE = "http://127.0.0.1:8000"
DEFAULT_PORT = 8000


def node_url(text: str) -> str:
    """A ``--node`` value as the URL of a node's API: ``http(s)://HOST[:PORT]`` as given, and for
    ``HOST:PORT`` or a bare ``HOST`` (what `polchain node` prints and what people type) http:// in
    front, with the default port 8000 when there is none. An argparse type: a value that names no
    host is a one-line usage error."""
    import argparse
    from urllib.parse import urlsplit

    t = text.strip()
    bad = argparse.ArgumentTypeError(f"{text!r} is not a node address: give HOST[:PORT] (port {DEFAULT_PORT} "
                                     f"by default) or http(s)://HOST[:PORT]")
    if not t or any(c.isspace() for c in t):
        raise bad
    if "://" not in t:
        t = "http://" + t
        try:
            u = urlsplit(t)
            if u.hostname and u.port is None:
                t = u._replace(netloc=f"{u.netloc}:{DEFAULT_PORT}").geturl()
        except ValueError:
            raise bad from None
    try:
        u = urlsplit(t)
        u.port                              # ValueError for a port out of range or not a number
    except ValueError:
        raise bad from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise bad
    return t.rstrip("/")


def add_commands(sub) -> None:
    s = sub.add_parser("status", help="a running node's state in a few lines (height, sync, peers, mining)",
                       description="Ask a node's REST API (/status, /peers) and print a human summary.")
    s.add_argument("--node", default=os.environ.get("POLCHAIN_NODE", DEFAULT_NODE), metavar="URL", type=node_url,
                   help=f"the node's API: http(s)://HOST:PORT, HOST:PORT or HOST (port {DEFAULT_PORT}) "
                        f"(default {DEFAULT_NODE}; env POLCHAIN_NODE)")
    s.add_argument("--json", action="store_true", help="print /status as JSON instead")
    s.set_defaults(func=cmd_status)

    k = sub.add_parser("keys", help="the node's Ed25519 key (mining and certificates): new, show",
                       description="Keys are PEM files readable by their owner only (0600). Without --key the "
                                   "node's key DATADIR/node.key is meant (the one `polchain node` mines with).")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="{new,show}")
    for name, help_ in (("new", "create a key (refuses to overwrite one)"), ("show", "print a key's public half")):
        c = ksub.add_parser(name, help=help_)
        c.add_argument("--datadir", "--data-dir", dest="datadir", default=None, metavar="DIR",
                       help="the node's directory (default ./polchain-data; env POLCHAIN_DATADIR)")
        c.add_argument("--key", type=Path, default=None, metavar="FILE",
                       help="the key file (default DATADIR/node.key; env POLCHAIN_KEY)")
        c.add_argument("--json", action="store_true", help="print JSON")
        c.set_defaults(func=cmd_keys_new if name == "new" else cmd_keys_show)


# -- status ---------------------------------------------------------------------------------
def cmd_status(args) -> int:
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    url = args.node.rstrip("/")
    try:
        r = httpx.get(f"{url}/status", timeout=5)
        r.raise_for_status()
        st = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"error: cannot reach a node at {url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    try:   # the peer book says why peers are missing (banned, and for what); an older node may lack it
        r = httpx.get(f"{url}/peers", timeout=5)
        peers = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        peers = None
    print(format_status(url, st, peers if isinstance(peers, list) else None))
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "no blocks yet"
    s = int(seconds)
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


BAN_REASONS = {"other-chain": "other chain"}


def bans_text(peers: list[dict] | None) -> str | None:
    """The peers GET /peers lists as banned, and why: "1 peer banned: other chain (http://h:8001)"."""
    banned = [p for p in peers or [] if isinstance(p, dict) and p.get("state") == "banned"]
    if not banned:
        return None
    reasons: dict[str, list[str]] = {}
    for p in banned:
        why = p.get("ban_reason") or "reason not given"
        reasons.setdefault(BAN_REASONS.get(why, why), []).append(str(p.get("url", "?")))
    parts = [f"{why} ({', '.join(urls[:3])}{', ...' if len(urls) > 3 else ''})" for why, urls in reasons.items()]
    return f"{len(banned)} peer{'s' if len(banned) != 1 else ''} banned: " + "; ".join(parts)


def sync_text(st: dict, peers: list[dict] | None = None) -> str:
    """Where the node stands against its peers: "in sync" only when some peer answers and none is ahead;
    with no peer, why (none known, none answering, banned)."""
    best = (st.get("sync") or {}).get("best_peer_height")
    if st.get("peers", 0) == 0:
        known = st.get("peers_known", 0)
        text = f"no peer reachable ({known} known, none answering)" if known else "alone: no peers"
        bans = bans_text(peers)
        return f"{text}; {bans}" if bans else text
    return "in sync" if best is None or best <= st["height"] else f"behind: best peer at {best}"


def format_status(url: str, st: dict, peers: list[dict] | None = None) -> str:
    acc = st.get("tip_accuracy") or {}
    of = acc.get("of") or 1
    mining = st.get("mining") or {}
    sync = st.get("sync") or {}
    if st.get("syncing"):
        sync_line = f"syncing: height {sync.get('height', st['height'])} of {sync.get('target', '?')}"
        if sync.get("peer"):
            sync_line += f" from {sync['peer']}"
    else:
        sync_line = sync_text(st, peers)
    rows = [
        ("node", f"{url}  (polchain {st.get('version', '?')})"),
        ("chain", f"{st.get('preset', '?')}  {st.get('chain_id', '')[:16]}"),
        ("height", f"{st['height']}  tip {st['tip'][:16]}  last block {_age(st.get('last_block_age_s'))}"),
        ("sync", sync_line),
        ("peers", str(st.get("peers", 0)) + (f"  ({bans_text(peers)})" if bans_text(peers) else "")),
        ("difficulty", f"k={st.get('difficulty')} for the next block (about 2^k attempts)"),
        ("accuracy", f"{acc.get('correct', '?')}/{of} on E ({100 * acc.get('correct', 0) / of:.1f}%)"),
    ]
    if mining.get("enabled"):
        line = (f"on {mining.get('device')}: {mining.get('attempts_per_second', 0):.1f} attempts/s, "
                f"{mining.get('blocks_found', 0)} blocks found")
        cur = mining.get("current") or {}
        if cur:
            line += (f"; this block: {cur.get('attempts', 0):,} attempts in {cur.get('seconds', 0):.0f} s "
                     f"at k={cur.get('difficulty')}")
        rows.append(("mining", line))
    else:
        rows.append(("mining", "off"))
    if st.get("miner_key"):
        rows.append(("miner key", st["miner_key"]))
    return "\n".join(f"{k:<11} {v}" for k, v in rows)


# -- keys -----------------------------------------------------------------------------------
def _key_path(args) -> Path:
    if args.key is not None:
        return args.key
    if os.environ.get("POLCHAIN_KEY"):
        return Path(os.environ["POLCHAIN_KEY"])
    datadir = args.datadir or os.environ.get("POLCHAIN_DATADIR") or "./polchain-data"
    return Path(datadir) / "node.key"


def _describe_key(path: Path, pub: str, as_json: bool, created: bool) -> str:
    mode = path.stat().st_mode & 0o777
    if as_json:
        return json.dumps({"public_key": pub, "file": str(path), "mode": f"{mode:04o}", "created": created})
    lines = [f"public key  {pub}", f"file        {path}  (mode {mode:04o})"]
    if mode & 0o077:
        lines.append(f"warning: {path} is readable by others; chmod 600 {path}")
    return "\n".join(lines)


def cmd_keys_new(args) -> int:
    from consensus.block import public_key_hex

    from .keys import load_key, load_or_create_key
    path = _key_path(args)
    if path.exists():
        try:
            pub = public_key_hex(load_key(path))
        except ValueError as exc:
            print(f"error: {path} exists and is not a key we can read ({exc})", file=sys.stderr)
            return 2
        print(f"error: {path} already exists (public key {pub}); it is kept: move it away first to replace it",
              file=sys.stderr)
        return 2
    pub = public_key_hex(load_or_create_key(path))
    print(_describe_key(path, pub, args.json, created=True))
    return 0


def cmd_keys_show(args) -> int:
    from consensus.block import public_key_hex

    from .keys import load_key
    path = _key_path(args)
    if not path.exists():
        print(f"error: no key at {path}; create one with `polchain keys new --key {path}` (a node creates "
              "DATADIR/node.key on its first start)", file=sys.stderr)
        return 2
    try:
        pub = public_key_hex(load_key(path))
    except ValueError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    print(_describe_key(path, pub, args.json, created=False))
    return 0
