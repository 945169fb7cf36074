"""Gossip and sync over HTTP.

* Announce: a node that accepts a block POSTs its header to its peers with
  ``X-Polchain-Origin: <its URL>``. A peer lacking the block fetches header and
  records (``GET /blocks/{hash}``) from the origin, checks the header rules, then
  fetches the block (header and records), validates it from the parent's post-state, and relays
  only what validated. Known blocks answer 409 before any work; a block already
  being fetched is not fetched twice. Announcements are coalesced: when several
  blocks are accepted in a row only the one with most work is announced (a peer
  missing its ancestors catches up by headers-first sync).
* Poll: every ``poll_interval`` seconds each peer's ``/status``; a node that only
  dials out still learns new tips this way, and a peer with more work wakes the
  syncer. Peers introduce themselves (``POST /peers``) and, unless discovery is
  off, exchange peer lists (bounded).
* Sync, headers first: from a peer with more work, find where its best chain
  leaves ours, fetch its headers in bounded batches and run the header rules on
  each (linkage, signature, difficulty, timestamps; cumulative work follows) --
  they are stored header-only -- then fetch the bodies from several peers in
  parallel within a bounded window and validate them in order. A peer that is
  slow or lacks a body (404, or 404 "pruned") hands that body to the next peer.
* Assume-valid (``--assume-valid HASH``): blocks up to and including HASH on a
  header chain that passed the header rules are accepted without their bodies
  and without replaying their proofs; the node logs that it did so.
* Misbehaviour: a provably invalid block or header bans the peer that served it
  for a while (it is not dialled and its announcements are dropped). Ignore-type
  outcomes (duplicate, future timestamp, unknown parent) cost nothing; a body
  not matching its header counts as a failure of the peer that served it, never
  against the header.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from consensus import errors
from consensus.block import BlockHeader, parse_records, records_root
from consensus.validation import validate_header, validate_header_standalone
from consensus.weights import decode_state, weights_hash

from .client import NotFound, PeerClient, PeerError
from .peers import PeerBook, normalize_url

log = logging.getLogger("polchain.p2p")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise

HEADER_BATCH = 100          # headers per GET /blocks request (halved when a reply passes the size cap)
MAX_SYNC_HEADERS = 500      # headers checked per round before their bodies are fetched
MAX_ASSUME_HEADERS = 20000  # ... while looking for the assume-valid block
BODY_WINDOW = 8             # bodies downloaded ahead of the validator
BODY_WORKERS = 4            # parallel body downloads
SYNC_GAP = 3                # blocks behind before /status says "syncing"
MAX_INFLIGHT = 256          # announced blocks being fetched at once
PROGRESS_EVERY = 2.0        # seconds between sync progress lines
SYNC_RETRY_MAX = 60.0       # longest pause before syncing again from a peer that brought nothing

VALID, INVALID, HEADER_ONLY = "valid", "invalid", "header-only"


class NoBody(Exception):
    def __init__(self, block_hash: str, pruned: list[str], failed: list[str]):
        super().__init__(f"no peer served the body of {block_hash[:16]} (pruned at {pruned or 'none'}, "
                         f"failed at {failed or 'none'})")
        self.pruned, self.failed = pruned, failed


class Network:
    def __init__(self, service):
        self.service = service
        self.chain = service.chain
        self.spec = service.spec
        s = service.settings
        self.my_url = s.url
        self.discover = getattr(s, "discover", True)
        av = getattr(s, "assume_valid", None)
        self.assume_valid: str | None = av.lower() if av else None
        self.book = PeerBook(self.my_url, s.max_peers)
        for url in s.peers:
            if not self.book.add(url, source="configured"):
                log.warning("ignoring peer %r (malformed, ourselves, or a duplicate)", url)
        self.client = PeerClient()
        self.poll_interval = s.poll_interval
        self._stop = threading.Event()
        self._announce_q: queue.Queue = queue.Queue(maxsize=1000)
        self._fetchers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fetch")
        self._bodies = ThreadPoolExecutor(max_workers=BODY_WORKERS, thread_name_prefix="body")
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="p2p-io")
        self._inflight: set[str] = set()
        self._inflight_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._sync_event = threading.Event()
        self._sync_hints: dict[str, int] = {}
        self._hints_lock = threading.Lock()
        self._syncing = False
        self._sync_retry: dict[str, tuple[float, float]] = {}   # peer -> (not before, last delay)
        self.sync_progress: dict = {}
        self._threads = [threading.Thread(target=self._announcer, name="announcer", daemon=True),
                         threading.Thread(target=self._poller, name="poller", daemon=True),
                         threading.Thread(target=self._syncer, name="syncer", daemon=True)]

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        if self.assume_valid:
            log.warning("assume-valid %s: blocks up to it are accepted on header checks alone, "
                        "without replaying their proofs", self.assume_valid[:16])
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._sync_event.set()
        try:
            self._announce_q.put_nowait(None)
        except queue.Full:
            pass
        for pool in (self._fetchers, self._bodies, self._io):
            pool.shutdown(wait=False, cancel_futures=True)
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5)
        self.client.close()

    # -- queries --------------------------------------------------------------------
    def peer_count(self) -> int:
        return len(self.book.connected())

    def peer_list(self) -> list[dict]:
        return self.book.snapshot()

    def syncing(self) -> bool:
        return self._syncing

    def learn_peer(self, url: str) -> bool:
        """A peer introduced itself (POST /peers) or was named by the operator."""
        url = normalize_url(url)
        if url is None:
            return False
        self.book.touch(url)
        return self.book.add(url, source="introduced")

    def penalize(self, peer: str, code: str) -> None:
        """A provably invalid block or header came from ``peer``: ban it for a while."""
        peer = (peer or "").rstrip("/")
        if not peer or peer == self.my_url:
            return
        if not self.book.is_banned(peer):
            log.warning("banning peer %s for %s", peer, code)
        self.book.ban(peer, code)

    # -- announce ---------------------------------------------------------------------
    def announce(self, header: BlockHeader, exclude: str | None = None) -> None:
        try:
            self._announce_q.put_nowait((header, exclude))
        except queue.Full:
            log.warning("announce queue full; dropping announcement of %s", header.hash[:16])

    def _announcer(self) -> None:
        while not self._stop.is_set():
            item = self._announce_q.get()
            batch = [item]
            while True:
                try:
                    batch.append(self._announce_q.get_nowait())
                except queue.Empty:
                    break
            if any(b is None for b in batch) or self._stop.is_set():
                return
            header, exclude = max(batch, key=self._announce_rank)
            try:
                self._announce_to_all(header, exclude)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("announcing %s failed", header.hash[:16])

    def _announce_rank(self, item) -> tuple[int, int]:
        b = self.chain.store.get(item[0].hash)
        return (b.cumulative_work if b else 0, item[0].height)

    def _announce_to_all(self, header: BlockHeader, exclude: str | None) -> None:
        targets = [p for p in self.book.usable() if p.url != exclude and p.tip != header.hash]
        if not targets:
            return

        def one(url: str) -> None:
            try:
                self.client.announce(url, header, self.my_url)
                self.book.ok(url)
            except PeerError as exc:
                log.debug("announce to %s failed: %s", url, exc)
                self.book.failed(url)

        list(self._io.map(one, [p.url for p in targets]))
        log.debug("announced %s height %d to %d peers", header.hash[:16], header.height, len(targets))

    def relay_record(self, record) -> None:
        """Pass a new mempool record (certificate) on to every peer, off the caller's thread."""
        def send():
            for p in self.book.usable():
                try:
                    self.client.send_record(p.url, record.body)
                except PeerError:
                    self.book.failed(p.url)
        try:
            self._fetchers.submit(send)
        except RuntimeError:
            pass

    # -- receiving announcements ---------------------------------------------------------
    def on_announcement(self, header: BlockHeader, origin: str) -> None:
        """A peer announced a header we lack (called on the API's event loop: must not block)."""
        origin = normalize_url(origin)
        if origin is None or origin == self.my_url or self.book.is_banned(origin):
            return
        self.book.touch(origin)
        self._fetch_async(header.hash, [origin], header)

    def _claim(self, block_hash: str) -> bool:
        with self._inflight_lock:
            if block_hash in self._inflight or len(self._inflight) >= MAX_INFLIGHT:
                return False
            self._inflight.add(block_hash)
            return True

    def _release(self, block_hash: str) -> None:
        with self._inflight_lock:
            self._inflight.discard(block_hash)

    def _fetch_async(self, block_hash: str, sources: list[str], announced: BlockHeader | None = None) -> bool:
        if not self._claim(block_hash):
            return False
        try:
            self._fetchers.submit(self._fetch_block, block_hash, sources, announced)
        except RuntimeError:  # shutting down
            self._release(block_hash)
            return False
        return True

    def _fetch_block(self, block_hash: str, sources: list[str], announced: BlockHeader | None) -> None:
        try:
            if announced is not None:
                # a cheap look at the announced header before dialling anyone; it is not attributed to
                # the origin (anyone can POST it), so a bad one is dropped, never penalised
                try:
                    validate_header_standalone(announced, self.spec, _now_ms())
                except errors.BlockError as exc:
                    log.info("dropping announcement of %s: %s", block_hash[:16], exc)
                    return
                self.book.add(sources[0], source="announced")
            for src in sources:
                if self._stop.is_set() or self.chain.store.status(block_hash) in (VALID, INVALID):
                    return
                if self.book.is_banned(src):
                    continue
                try:
                    result = self._fetch_from(src, block_hash)
                except NotFound:
                    continue
                except PeerError as exc:
                    log.info("fetching %s from %s failed: %s", block_hash[:16], src, exc)
                    self.book.failed(src)
                    continue
                if result != "retry":
                    return
        except Exception:
            log.exception("fetching %s failed", block_hash[:16])
        finally:
            self._release(block_hash)

    def _fetch_from(self, src: str, block_hash: str) -> str:
        """Header, then body, from one peer. Returns done | invalid | sync | retry (try another peer)."""
        info = self.client.block(src, block_hash)
        try:
            header = BlockHeader.from_dict(info.get("header"))
        except errors.Malformed as exc:
            self.penalize(src, exc.code)
            return "invalid"
        if header.hash != block_hash:
            self.penalize(src, "wrong-block")
            return "invalid"
        records = info.get("records")
        records = records if isinstance(records, list) else []
        if self.chain.store.status(block_hash) in (VALID, INVALID):
            return "done"
        try:
            validate_header(header, self.spec, self.chain.view, _now_ms())
        except errors.UnknownParent:
            # the peer is ahead of us by more than this block: catch up headers first
            self.request_sync(src, header.height)
            return "sync"
        except errors.Ignored as exc:
            log.info("ignoring %s from %s for now: %s", block_hash[:16], src, exc.code)
            return "done"
        except errors.InvalidBlock:
            self.service.submit_remote(header, None, src)  # records the verdict, bans src
            return "invalid"
        except LookupError:
            self.request_sync(src, header.height)
            return "sync"
        self.book.add(src, source="announced")
        self.book.ok(src)
        out = self.service.submit_remote(header, records, src)
        if out.status == "bad-body":
            log.info("bad body for %s from %s: %s", block_hash[:16], src, out.code)
            self.book.bad_body(src)
            return "retry"
        if out.status == "orphan":   # its parent's body is not validated yet
            self.request_sync(src, header.height)
            return "sync"
        return "done"

    # -- polling ---------------------------------------------------------------------
    def _poller(self) -> None:
        """Poll each peer every ``poll_interval``; a peer never reached, or whose backoff has just
        run out, is tried on the next tick (so a late-starting peer is reached quickly)."""
        tick = min(0.5, self.poll_interval)
        rounds, last_round = 0, 0.0
        while not self._stop.wait(0 if rounds == 0 else tick):
            now = time.time()
            full = now - last_round >= self.poll_interval
            if full:
                rounds, last_round = rounds + 1, now
            try:
                due = [p for p in self.book.usable()
                       if full or p.failures or p.last_seen is None]
                for p in due:
                    p.last_polled = now
                if due:
                    list(self._io.map(lambda p: self._poll(p, rounds if full else -1), due))
                if full:
                    self._request_orphan_parents()
            except RuntimeError:   # pools shut down
                return
            except Exception:
                log.exception("poll round failed")

    def _poll(self, peer, rounds: int) -> None:
        first = peer.last_seen is None
        try:
            st = self.client.status(peer.url)
            if st.get("chain_id") != self.spec.chain_id:
                self.book.ban(peer.url, "other-chain", 3600)
                log.warning("peer %s runs another chain (%s); banned", peer.url, str(st.get("chain_id"))[:16])
                return
            height, work, tip = int(st.get("height", 0)), int(st.get("cumulative_work", 0)), st.get("tip")
            self.book.ok(peer.url, height, work, tip if isinstance(tip, str) else None)
        except (PeerError, ValueError, TypeError) as exc:
            log.debug("status of %s failed: %s", peer.url, exc)
            self.book.failed(peer.url)
            return
        if first or rounds % 10 == 0:
            self._exchange_peers(peer.url)
        if work > self.chain.tip().cumulative_work:
            self.request_sync(peer.url, height)

    def _exchange_peers(self, url: str) -> None:
        try:
            self.client.introduce(url, self.my_url)
            if not self.discover:
                return
            for info in self.client.peers(url)[:64]:
                u = info.get("url") if isinstance(info, dict) else None
                if isinstance(u, str) and info.get("state") != "banned":
                    self.book.add(u, source="learned")
        except PeerError as exc:
            log.debug("peer exchange with %s failed: %s", url, exc)

    def _request_orphan_parents(self) -> None:
        peers = [p.url for p in self.book.connected()]
        if not peers:
            return
        for parent in self.chain.missing_orphan_parents()[:8]:
            self._fetch_async(parent, peers)

    # -- sync ----------------------------------------------------------------------------
    def request_sync(self, peer: str, target: int) -> None:
        with self._hints_lock:
            self._sync_hints[peer] = max(target, self._sync_hints.get(peer, 0))
        self._sync_event.set()

    def _syncer(self) -> None:
        while not self._stop.is_set():
            self._sync_event.wait(self.poll_interval)
            self._sync_event.clear()
            if self._stop.is_set():
                return
            try:
                self._sync_round()
            except Exception:
                log.exception("sync round failed")

    def _sync_round(self) -> None:
        with self._hints_lock:
            hints, self._sync_hints = self._sync_hints, {}
        now = time.monotonic()
        tried = set()
        for url, target in sorted(hints.items(), key=lambda kv: -kv[1]):
            if not self.book.is_banned(url) and self._sync_retry.get(url, (0, 0))[0] <= now:
                tried.add(url)
                self._sync_with_retry(url, target)
        mine = self.chain.tip().cumulative_work
        for p in sorted((p for p in self.book.usable() if p.work and p.work > mine and p.url not in tried
                         and self._sync_retry.get(p.url, (0, 0))[0] <= now), key=lambda p: -p.work)[:3]:
            self._sync_with_retry(p.url, p.height or 0)
            if self.chain.tip().cumulative_work >= p.work:
                break

    def _sync_with_retry(self, url: str, target: int) -> None:
        """A sync that brings nothing (no bodies, a stale claim) is not retried with that peer at once:
        2 s, 4 s, ... up to a minute, so an unhelpful peer cannot keep us busy."""
        before = self.chain.tip().cumulative_work
        self.sync_from(url, target)
        after = self.chain.tip().cumulative_work
        peer = self.book.get(url)
        if after > before or (peer is not None and peer.work is not None and after >= peer.work):
            self._sync_retry.pop(url, None)     # progress, or nothing left to get from it
        else:
            delay = min(SYNC_RETRY_MAX, 2 * self._sync_retry.get(url, (0, 1.0))[1])
            self._sync_retry[url] = (time.monotonic() + delay, delay)
            if len(self._sync_retry) > 1024:
                self._sync_retry.clear()

    def sync_from(self, peer: str, target: int) -> int:
        """Catch up from ``peer`` (headers first). Returns the number of blocks accepted."""
        if not self._sync_lock.acquire(blocking=False):
            return 0
        try:
            return self._sync(peer, target)
        except PeerError as exc:
            log.info("sync from %s interrupted: %s", peer, exc)
            self.book.failed(peer)
            return 0
        finally:
            self._syncing = False
            self.sync_progress = {}
            self._sync_lock.release()

    def _sync(self, peer: str, target: int) -> int:
        chain = self.chain
        tip = chain.tip()
        t0 = time.monotonic()
        if target - tip.height >= SYNC_GAP:
            self._syncing = True
            log.info("sync: from %s, our height %d, peer's height %d; headers first", peer, tip.height, target)
        self.sync_progress = {"peer": peer, "height": tip.height, "target": target, "start": tip.height}
        self._batch = HEADER_BATCH
        start, batch = self._find_fork(peer, tip.height, target)
        accepted = 0
        while not self._stop.is_set():
            got = self._collect_headers(peer, start, batch)
            if got is None:
                break
            pending, more = got
            if not pending:
                break
            last = chain.store.get(pending[-1][0].hash)
            if not more and last is not None and last.cumulative_work <= chain.tip().cumulative_work:
                log.info("sync: %s's headers up to height %d carry no more work than our tip", peer,
                         pending[-1][0].height)
                break
            target = max(target, pending[-1][0].height)
            log.info("sync: %d headers checked from %s (heights %d..%d); fetching bodies", len(pending), peer,
                     pending[0][0].height, pending[-1][0].height)
            n, ok = self._fetch_bodies(peer, pending, target, t0, accepted)
            accepted += n
            if not ok or not more:
                break
            start, batch = pending[-1][0].height + 1, None
        if accepted:
            dt = time.monotonic() - t0
            tip = chain.tip()
            log.info("sync: done at height %d target %d, %d blocks in %.1fs (%.1f blocks/s) from %s",
                     tip.height, target, accepted, dt, accepted / max(dt, 1e-6), peer)
        return accepted

    def _headers(self, peer: str, start: int) -> list[dict]:
        while True:
            try:
                return self.client.headers(peer, start, self._batch)
            except PeerError as exc:
                if "over the cap" in str(exc) and self._batch > 10:
                    self._batch //= 2
                    continue
                raise

    def _parse(self, peer: str, item) -> BlockHeader | None:
        try:
            return BlockHeader.from_dict(item.get("header") if isinstance(item, dict) else None)
        except errors.Malformed as exc:
            self.penalize(peer, exc.code)
            return None

    def _find_fork(self, peer: str, tip_height: int, target: int) -> tuple[int, list[dict]]:
        """The first height of the peer's best chain whose parent we know, and the batch from there."""
        store = self.chain.store
        top = max(1, min(tip_height, target) - 6)
        back = 0
        for _ in range(32):
            start = max(1, top - back)
            batch = self._headers(peer, start)
            if not batch:
                return start, []
            first = self._parse(peer, batch[0])
            if first is None:
                raise PeerError("malformed header")
            if store.status(first.parent) is not None:
                return start, batch
            if start == 1:
                raise PeerError("the peer's chain does not start at our genesis")
            back = max(8, back * 4)
        raise PeerError("could not find where the peer's chain leaves ours")

    def _collect_headers(self, peer: str, start: int, batch: list[dict] | None):
        """Check the peer's headers from ``start``; (pending [(header, records)], more?) or None (banned)."""
        chain, store = self.chain, self.chain.store
        pending: list[tuple[BlockHeader, list]] = []
        prev: str | None = None
        limit = MAX_SYNC_HEADERS
        if self.assume_valid and store.status(self.assume_valid) != VALID:
            limit = MAX_ASSUME_HEADERS
        while True:
            if batch is None:
                batch = self._headers(peer, start)
            for i, item in enumerate(batch):
                header = self._parse(peer, item)
                if header is None:
                    return None
                if header.height != start + i or (prev is not None and header.parent != prev):
                    log.info("sync: %s's chain changed under us at height %d; retrying later", peer, start + i)
                    return pending, False
                records = item.get("records")
                records = records if isinstance(records, list) else []
                prev = header.hash
                st = store.status(header.hash)
                if st == VALID:
                    continue
                if st == INVALID:
                    self.penalize(peer, "invalid-chain")
                    return None
                if st is None:
                    out = chain.submit(header, None, peer)
                    if out.status == "duplicate":     # arrived meanwhile (an announcement)
                        st = store.status(header.hash)
                        if st == VALID:
                            continue
                        self.penalize(peer, "invalid-chain")
                        return None
                    if out.status == "invalid":
                        self.penalize(peer, out.code)
                        return None
                    if out.status != "header-ok":
                        log.info("sync: header %d from %s not usable now: %s %s", header.height, peer, out.code,
                                 out.detail)
                        return pending, False
                pending.append((header, records))
            more = len(batch) >= self._batch
            if not more or len(pending) >= limit:
                return pending, more
            start, batch = start + len(batch), None

    def _body_sources(self, peer: str) -> list[str]:
        others = [p.url for p in self.book.connected() if p.url != peer]
        return [peer] + others

    def _fetch_bodies(self, peer: str, pending: list, target: int, t0: float, done_before: int) -> tuple[int, bool]:
        """Bodies for ``pending`` (in chain order), downloaded ahead within a window, validated in order."""
        accepted = 0
        sources = self._body_sources(peer)
        hashes = [h.hash for h, _ in pending]
        if self.assume_valid and self.assume_valid in hashes:
            cut = hashes.index(self.assume_valid) + 1
            if self._fetch_state(sources, pending[cut - 1][0]):
                n, ok = self._accept_assumed(peer, pending[:cut])
                accepted += n
                if not ok:
                    return accepted, False
                pending = pending[cut:]
            else:
                # nothing was assumed yet: every block, the checkpoint's included, gets validated
                log.warning("snapshot: no peer served the post-state of checkpoint %s; validating from genesis "
                            "instead", self.assume_valid[:16])
                self.assume_valid = None
        window: deque = deque()
        todo = iter(enumerate(pending))
        last_log = time.monotonic()

        def fill() -> None:
            while len(window) < BODY_WINDOW:
                try:
                    i, (h, _) = next(todo)
                except StopIteration:
                    return
                window.append((h, self._bodies.submit(self._fetch_body, sources, h, i)))

        try:
            fill()
            while window and not self._stop.is_set():
                header, fut = window.popleft()
                try:
                    src, records = fut.result()
                except NoBody as exc:
                    if exc.pruned and not exc.failed:
                        log.warning("sync: every peer asked has pruned the body of block %s height %d (%s); "
                                    "cannot validate past height %d (see --assume-valid)", header.hash[:16],
                                    header.height, ", ".join(exc.pruned), header.height - 1)
                    else:
                        log.info("sync: %s", exc)
                    return accepted, False
                out = self.service.submit_remote(header, records, src)
                if out.status == "invalid":
                    if src != peer:
                        self.penalize(peer, out.code)
                    return accepted, False
                if out.status not in ("accepted", "duplicate"):
                    log.info("sync: block %d (%s) from %s: %s %s", header.height, header.hash[:16], src,
                             out.status, out.code)
                    return accepted, False
                accepted += 1
                now = time.monotonic()
                self.sync_progress.update(height=header.height, target=target)
                if now - last_log >= PROGRESS_EVERY or not window:
                    last_log = now
                    rate = (done_before + accepted) / max(now - t0, 1e-6)
                    log.info("sync: height %d target %d (%.1f blocks/s)", header.height, target, rate)
                fill()
            return accepted, not self._stop.is_set()
        finally:
            for _, fut in window:
                fut.cancel()

    def _fetch_body(self, sources: list[str], header: BlockHeader, index: int) -> tuple[str, list]:
        """(source, records) for ``header`` from the first peer that serves records matching its root."""
        n = len(sources)
        order = sources[index % n:] + sources[:index % n]
        now = time.time()
        fresh = [s for s in order if (p := self.book.get(s)) is None or p.next_try <= now]
        order = fresh + [s for s in order if s not in fresh]   # peers in backoff last
        pruned, failed = [], []
        for src in order:
            if self._stop.is_set():
                break
            if self.book.is_banned(src):
                continue
            try:
                info = self.client.block(src, header.hash)
                records = info.get("records")
                records = records if isinstance(records, list) else []
                try:
                    ok = records_root(list(parse_records(records))) == header.records_root
                except (errors.BlockError, ValueError, TypeError, KeyError):
                    ok = False
                if not ok and info.get("status") == HEADER_ONLY:
                    continue    # it has the header only (its own sync is behind): lacking, not lying
                if not ok:
                    self.book.bad_body(src)
                    failed.append(src)
                    continue
                return src, records
            except NotFound as exc:
                if exc.pruned:
                    pruned.append(src)
            except PeerError as exc:
                # slow, unreachable or over a cap: drop it for a while, the next peer gets the work
                log.info("body %s from %s: %s", header.hash[:16], src, exc)
                self.book.failed(src)
                failed.append(src)
        raise NoBody(header.hash, pruned, failed)

    def _fetch_state(self, sources: list[str], header: BlockHeader) -> bool:
        """Snapshot: the checkpoint's post-state from the first peer whose file hashes to the header's
        state_hash (the header chain above it was checked first), stored so children can be validated."""
        if self.chain.store.weights.has(header.state_hash):
            return True
        for src in sources:
            if self._stop.is_set() or self.book.is_banned(src):
                continue
            try:
                data = self.client.state(src, header.hash, self.spec.limits.max_weights_bytes)
                ok = weights_hash(decode_state(data)) == header.state_hash
            except (PeerError, errors.BlockError) as exc:
                log.info("state of %s from %s: %s", header.hash[:16], src, exc)
                continue
            if not ok:
                log.info("state of %s from %s does not hash to the header's state_hash", header.hash[:16], src)
                self.book.bad_body(src)
                continue
            self.chain.store.weights.put(header.state_hash, data)
            log.info("snapshot: post-state of block %d (%s) from %s", header.height, header.hash[:16], src)
            return True
        return False

    def _accept_assumed(self, peer: str, items: list) -> tuple[int, bool]:
        """assume-valid (snapshot sync): blocks up to the checkpoint, accepted on their (already checked)
        headers, once the checkpoint's post-state is stored (fetched and checked against its state_hash)."""
        n = 0
        for header, records in items:
            out = self.chain.submit(header, records, peer, assumed=True)
            if out.status not in ("accepted", "duplicate"):
                log.warning("assume-valid: block %d (%s) not accepted: %s %s", header.height, header.hash[:16],
                            out.code, out.detail)
                return n, False
            n += 1
        if items:
            log.warning("assume-valid: accepted %d blocks (heights %d..%d, checkpoint %s) on header checks "
                        "alone; their proofs were not replayed", n, items[0][0].height, items[-1][0].height,
                        self.assume_valid[:16])
            self.announce(items[-1][0])
        return n, True


def _now_ms() -> int:
    return int(time.time() * 1000)
