"""The peer book on disk: ``DATADIR/peers.json``, written atomically, read at start.

A restarted node dials the peers it knew (and keeps its bans) instead of waiting
for someone to dial in. The file is written to a temporary name, fsynced and
renamed over the old one, so a crash leaves either the old or the new file. A
damaged or foreign file is logged and ignored (the node starts with its
``--peer`` seeds only); what it names is re-checked like any other entry.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from .peers import PeerBook

log = logging.getLogger("polchain.p2p")
FILE = "peers.json"
MAX_BYTES = 1 << 20
VERSION = 1


def save(book: PeerBook, datadir: Path) -> None:
    path = Path(datadir) / FILE
    doc = {"version": VERSION, "saved_at": time.time(), "peers": book.entries(),
           "bans": [{"key": k, "until": until, "reason": reason} for k, until, reason in book.bans.items()]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(book: PeerBook, datadir: Path) -> int:
    """Put the saved peers and bans into ``book``; returns how many peers were added."""
    path = Path(datadir) / FILE
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ValueError(f"over {MAX_BYTES} bytes")
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise ValueError("not a peer book of this version")
        peers, bans = doc.get("peers"), doc.get("bans")
        if not isinstance(peers, list) or not isinstance(bans, list):
            raise ValueError("no peer or ban list")
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        log.warning("ignoring the saved peer book %s: %s", path, exc)
        return 0
    for b in bans:
        if isinstance(b, dict) and isinstance(b.get("until"), (int, float)) and b["until"] > time.time():
            book.bans.ban(str(b.get("key")), str(b.get("reason"))[:64], until=float(b["until"]))
    n = 0
    for p in peers:
        if not isinstance(p, dict):
            continue
        source = "learned" if p.get("source") == "configured" else p.get("source")   # seeds come from --peer
        if source not in ("learned", "introduced", "announced"):
            continue
        if book.add(p.get("url"), source):
            n += 1
    book.changed.clear()
    return n
