"""Block bodies from peers: the one place that downloads a body and checks it against its header.

A body is what the header commits to besides itself: the records (``records_root``)
and the weights W (``weights_hash``). ``fetch_body`` downloads them from one peer
and checks only those commitments, on the raw bytes, before anything is parsed:
a mismatch is the peer's fault (``consensus.errors.BadBody``: a failure, never a
ban, never held against the header), while records that *do* match the root are
judged by the node (an invalid committed record makes the block invalid).
``fetch_from_any`` asks several peers in turn (announcements, sync).
"""
from __future__ import annotations

import logging
import threading
import time

from consensus import errors
from consensus.block import BlockHeader
from consensus.validation import check_records_commitment
from consensus.weights import decode_state, weights_hash

from .client import NotFound, PeerClient, PeerError
from .peers import PeerBook

log = logging.getLogger("polchain.p2p")


class NoBody(Exception):
    def __init__(self, block_hash: str, pruned: list[str], failed: list[str]):
        super().__init__(f"no peer served the body of {block_hash[:16]} (pruned at {pruned or 'none'}, "
                         f"failed at {failed or 'none'})")
        self.pruned, self.failed = pruned, failed


def fetch_body(client: PeerClient, src: str, header: BlockHeader, cap: int,
               block_json: dict | None = None) -> tuple[list, bytes]:
    """(records, weights) of ``header`` from ``src``, matching the header's commitments.

    ``block_json``: the peer's ``GET /blocks/{hash}`` answer when already fetched. Raises
    ``errors.BadBody`` (a body not matching the header), ``NotFound`` or ``PeerError``."""
    info = client.block(src, header.hash) if block_json is None else block_json
    records = info.get("records")
    check_records_commitment(header, records)
    weights = client.weights(src, header.hash, cap)
    if weights_hash(decode_state(weights)) != header.weights_hash:
        raise errors.WeightsMismatch("weights do not hash to the header's weights_hash")
    return records, weights


def fetch_from_any(client: PeerClient, book: PeerBook, sources: list[str], header: BlockHeader, index: int,
                   cap: int, stop: threading.Event) -> tuple[str, list, bytes]:
    """(source, records, weights) from the first of ``sources`` (rotated by ``index``, peers in backoff
    last) that serves a body matching ``header``; raises NoBody when none does."""
    n = len(sources)
    order = sources[index % n:] + sources[:index % n]
    now = time.time()
    fresh = [s for s in order if (p := book.get(s)) is None or p.next_try <= now]
    order = fresh + [s for s in order if s not in fresh]
    pruned, failed = [], []
    for src in order:
        if stop.is_set():
            break
        if book.is_banned(src):
            continue
        try:
            records, weights = fetch_body(client, src, header, cap)
            return src, records, weights
        except errors.BadBody as exc:
            log.info("bad body for %s from %s: %s", header.hash[:16], src, exc.code)
            book.bad_body(src)
            failed.append(src)
        except NotFound as exc:
            if exc.pruned:
                pruned.append(src)
        except PeerError as exc:
            # slow, unreachable or over a cap: drop it for a while, the next peer gets the work
            log.info("body %s from %s: %s", header.hash[:16], src, exc)
            book.failed(src)
            failed.append(src)
    raise NoBody(header.hash, pruned, failed)
