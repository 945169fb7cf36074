"""Wiring: the chain, the node's key, the miner, the network and metrics."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable

from consensus.block import Block, BlockHeader
from consensus import errors
from consensus.errors import BlockStatus, Verdict
from consensus.records import Record
from consensus.spec import ChainSpec
from consensus.training import Accuracy
from consensus.weights import State
from p2p.addresses import network_prefix
from p2p.punishment import Punishment, punishment
from p2p.relay import Announcement

from . import __version__
from .admission import Admission, GaveWay, Lane, LaneQueue
from .chain import Chain
from .chain_queries import ChainQueries
from .outcome import Outcome
from .keys import load_or_create_key
from .metrics import Metrics
from .settings import Settings
from .setup import open_chain, resolve_spec
from .threads import apply_threads

log = logging.getLogger("polchain.node")


class NodeService:
    def __init__(self, settings: Settings, spec: ChainSpec | None = None):
        """``spec``: the chain's spec when the caller has resolved it already (``polchain node`` does, before
        torch loads); else resolved here from the settings."""
        self.settings = settings
        datadir = Path(settings.datadir)
        self.spec = spec if spec is not None else resolve_spec(datadir, settings.preset, settings.spec_file)
        log.info("%s", apply_threads(settings.threads, self.spec.model.arch, settings.device))
        t0 = time.perf_counter()
        log.info("start-up: loading the dataset and opening the chain in %s", datadir)
        self.chain: Chain = open_chain(datadir, self.spec, data_dir=settings.dataset_dir,
                                       keep_weights=settings.keep_weights, archival=settings.archival)
        log.info("start-up: chain open at height %d (%.1f s)", self.chain.tip().height, time.perf_counter() - t0)
        self.key = load_or_create_key(settings.key_file or datadir / "node.key")
        from .block_proof import BlockProofs
        self.proofs = BlockProofs(self.chain)         # GET /blocks/{hash}/proof and the block page
        self.metrics = Metrics()
        self.validator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validator")
        self.validation = LaneQueue(settings.validation_queue)   # blocks from outside: known senders first
        self.mempool: list[Record] = []
        self.mempool_lock = threading.Lock()
        self.miner = None
        self.validation_seconds: OrderedDict[str, float] = OrderedDict()   # block hash -> seconds (recent)
        self.queries = ChainQueries(self.chain, self.validation_seconds, self.pending_records)   # the API's reads
        from p2p.network import Network  # late import: p2p reaches the node only through ServiceLink

        from .p2p_link import ServiceLink, net_config
        self.network = Network(ServiceLink(self), net_config(settings))
        self.chain.work_checked_listeners.append(self._relay_early)
        self.chain.health.on_recovered.append(self.network.sync_now)    # the syncs that failed were ours
        self.admission = Admission(settings.rate_limit, settings.rate_burst, settings.trusted_clients,
                                   self.network.book.bans.until, configured=settings.peers)

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        tip = self.chain.tip()
        log.info("node up: chain %s (%s) height %d tip %s datadir %s api %s", self.spec.chain_id[:16],
                 self.spec.name, tip.height, tip.hash[:16], self.settings.datadir, self.settings.url)
        self.network.start()
        if self.settings.mine:
            from .devices import expand_devices
            from .mining import REPORT_EVERY_S, MinerGroup, MinerWorker
            devices = expand_devices(self.settings.device)
            t0 = time.perf_counter()
            log.info("start-up: preparing the %s miner on %s", self.settings.miner, ", ".join(devices))
            self.miner = (MinerWorker(self, devices[0], self.settings.miner) if len(devices) == 1
                          else MinerGroup(self, devices, self.settings.miner))
            log.info("mining on %s with the %s miner (ready in %.1f s; a progress line every %.0f s)",
                     self.miner.device, self.settings.miner, time.perf_counter() - t0, REPORT_EVERY_S)
            self.miner.start()

    def stop(self) -> bool:
        """Stop every part; whether all of them ended (the log says "stopped cleanly" only then)."""
        miner_stopped = self.miner.stop() if self.miner else True
        self.network.stop()
        self.validation.shutdown()
        self.validator.shutdown(wait=True, cancel_futures=True)
        self.chain.store.close()
        if miner_stopped:
            log.info("node stopped cleanly")
        else:
            log.error("node stopped, but the miner thread is still running (see above)")
        return miner_stopped

    # -- blocks ---------------------------------------------------------------------
    async def post_block(self, block: Block, client: str | None, announced_by: str | None = None) -> Outcome:
        """A block POSTed by API client ``client`` (the connection's host), or a header announced by the peer
        ``announced_by`` (fetched from it by the relay, then ``admit``). A block waits for the validator in
        its sender's lane (``_queue``); one the queue cannot take is ignored ``busy``."""
        known = self.chain.store.status(block.hash)
        if known in (BlockStatus.VALID, BlockStatus.INVALID):
            return Outcome(Verdict.DUPLICATE, errors.Duplicate.code, f"already {known}", block.hash)
        if announced_by:
            if self.network.on_announcement(block.header, announced_by):
                return Outcome(Verdict.IGNORED, Announcement.FETCHING, "", block.hash)
            return Outcome(Verdict.IGNORED, Announcement.NOT_FETCHED, "not fetched: the origin is not a known peer, "
                           "or it is busy", block.hash)
        unpaid = await asyncio.to_thread(self.chain.unpaid, block.header)     # before any lane
        if unpaid is not None:
            self._judged(unpaid, client)
            return unpaid
        try:
            return await asyncio.wrap_future(self._queue(block, client))
        except GaveWay as exc:
            return _busy(block, str(exc))

    def admit(self, block: Block, origin: str) -> Outcome:
        """A block the relay fetched from the peer ``origin`` (an announcement, or a missing ancestor of one):
        it waits for the validator in its origin's lane, as a POSTed block does (``_queue``); one the queue
        cannot take is ignored ``busy`` (sync or the next announcement brings it again). Blocks the caller's
        thread until the verdict."""
        if self.chain.store.status(block.hash) in (BlockStatus.VALID, BlockStatus.INVALID):
            return Outcome(Verdict.DUPLICATE, errors.Duplicate.code, "already judged", block.hash)
        try:
            return self._queue(block, origin).result()
        except GaveWay as exc:
            return _busy(block, str(exc))
        except CancelledError:
            return _busy(block, "the node is stopping")

    def _queue(self, block: Block, sender: str | None) -> Future:
        """One admission path for every block from outside: ``block`` waits for the validator in its sender's
        lane (node/admission.py: known senders first, strangers one per network, the network served longest
        ago first; a stranger's replay gives way to a known block that will be judged now). The future of
        its verdict: the ``busy`` outcome at once when the queue has no room for it; ``GaveWay`` when a
        block of a network served longer ago took its place."""
        lane = self.admission.lane(sender)
        network = sender_network(sender)
        should_stop = self.validation.known_waiting if lane == Lane.STRANGER else None
        fut = self.validation.try_submit(partial(self.submit_remote, should_stop=should_stop), block, sender,
                                         lane=lane, prefix=network, preempts=self._judged_now(block))
        if fut is None:
            why = self.validation.refusal(lane, network) or "the validation queue is full"
            fut = Future()
            fut.set_result(_busy(block, f"{why}; retry later"))
        return fut

    def _judged_now(self, block: Block) -> bool:
        """Whether ``block`` will be replayed as soon as the validator takes it: its parent is valid here
        (not an orphan; both callers of ``_queue`` have answered a duplicate already). Only such a block may
        make a stranger's replay give way: a cheap orphan must not (issue 30.3)."""
        return self.chain.store.status(block.header.parent) == BlockStatus.VALID

    def submit_mined(self, block: Block, state: State, after: Accuracy) -> Outcome:
        """The node's own block, with the W' and acc(W') its miner computed (``Chain.submit_mined``)."""
        return self._applied(block, None, self.chain.submit_mined(block, state, after), time.perf_counter())

    def submit_remote(self, block: Block, peer: str | None, *, assumed: bool = False,
                      should_stop: Callable[[], bool] | None = None) -> Outcome:
        """One block through the chain and the effects of its verdict (``peer``: a peer URL or an API
        client's host). Runs on the caller's thread: the validator's for blocks from outside (``_queue``),
        the syncer's for the bodies of a sync (a peer this node chose). ``should_stop``: see ``Chain.submit``."""
        t0 = time.perf_counter()
        return self._applied(block, peer, self.chain.submit(block, peer, assumed=assumed, should_stop=should_stop), t0)

    def submit_header(self, header: BlockHeader, peer: str | None) -> Outcome:
        """A header alone (an invalid announced header to record, with its sender's ban)."""
        out = self.chain.submit_header(header, peer)
        self._judged(out, peer)
        return out

    def submit_headers(self, headers: list[BlockHeader], peer: str | None) -> list[Outcome]:
        """Headers-first sync: a batch of headers from ``peer``, stored header-only in one transaction."""
        return self._batch_done(self.chain.submit_headers(headers, peer), peer)

    def accept_assumed(self, blocks: list[Block], peer: str | None) -> list[Outcome]:
        """Snapshot sync: blocks up to the checkpoint, accepted on their checks in one transaction."""
        return self._batch_done(self.chain.accept_assumed(blocks, peer), peer)

    def _batch_done(self, outs: list[Outcome], peer: str | None) -> list[Outcome]:
        if outs:
            self._judged(outs[-1], peer)
        return outs

    def _relay_early(self, block: Block, peer: str | None) -> None:
        """Fast relay (the chain's work-checked event): the replayed steps met R, the 2^k work is checked;
        peers hear of the block while this node evaluates its accuracy (docs/p2p.md)."""
        self.network.announce(block.header, exclude=peer)

    def _applied(self, block: Block, peer: str | None, out: Outcome, t0: float) -> Outcome:
        """The effects of a verdict outside the chain: metrics, the known lane, the mempool, the relay of
        the block and of the orphans it connected, and the sender's punishment."""
        if out.status in (Verdict.ACCEPTED, Verdict.INVALID, Verdict.BAD_BODY):
            self._note_validation(block.hash, time.perf_counter() - t0)
        if out.status == Verdict.ACCEPTED:
            self.admission.vouch(peer)          # a sender with a record: the known lane from now on
            self.metrics.block_accepted(time.perf_counter() - t0)
            self._drop_included_records(block)
            if not out.relayed_early:
                self.network.announce(block.header, exclude=peer)
            for h in out.connected:
                b = self.chain.store.get(h)
                if b is not None:
                    self.network.announce(b.header, exclude=None)
        self._judged(out, peer)
        return out

    def _judged(self, out: Outcome, peer) -> None:
        """Rejections: metrics, the log, and the sender's punishment (p2p/punishment.py)."""
        if out.status not in (Verdict.INVALID, Verdict.BAD_BODY):
            return
        self.metrics.block_rejected(out.code)
        log.warning("rejected block %s from %s: %s (%s)", out.block_hash[:16], peer or "local", out.code,
                    out.detail)
        if punishment(out.status, out.stage, self.admission.sender(peer)) is Punishment.BAN:
            self.admission.unvouch(peer)        # trust is earned by valid blocks and lost with a ban
            self.network.penalize(peer, out.code)

    def _note_validation(self, block_hash: str, seconds: float, keep: int = 1000) -> None:
        """How long this node took to check a block with its body (in memory, the last ``keep``)."""
        self.validation_seconds[block_hash] = round(seconds, 4)
        while len(self.validation_seconds) > keep:
            self.validation_seconds.popitem(last=False)

    # -- records (mempool) ------------------------------------------------------------
    def add_record(self, record: Record) -> bool:
        with self.mempool_lock:
            if any(r.id == record.id for r in self.mempool):
                return False
            self.mempool.append(record)
            return True

    def submit_certificate(self, record: Record) -> tuple[str, str]:
        """A record (of a type this chain takes) from an API client: ("included", its id) when a block of the
        best chain has it, ("pending", its id) once in the mempool (relayed to peers when new), ("duplicate",
        the id of the first) when this owner already registered this proof for this model."""
        if self.chain.store.has_record(record.id):
            return "included", record.id
        if not any(r.id == record.id for r in self.pending_records()):
            same = self.queries.same_claim(record.body)
            if same is not None:
                return "duplicate", same["id"]
        if self.add_record(record):
            self.network.relay_record(record)
        return "pending", record.id

    def pending_records(self) -> list[Record]:
        """Mempool records not yet on the best chain (at most one block's worth)."""
        with self.mempool_lock:
            self.mempool = [r for r in self.mempool if not self.chain.store.has_record(r.id)]
            return list(self.mempool[: self.spec.limits.max_records])

    def _drop_included_records(self, block: Block) -> None:
        if not block.records_json:
            return
        ids = {r.id for r in block.records}
        with self.mempool_lock:
            self.mempool = [r for r in self.mempool if r.id not in ids]

    # -- status -------------------------------------------------------------------------
    def health(self) -> tuple[int, dict]:
        """``GET /health``: (200, ok and the height) while the node serves its chain and stores new blocks;
        (503, why) while it cannot write its store (the error, since when, the height) or syncs from a peer."""
        store = self.chain.health
        if store.error is not None:
            return 503, {"status": "store-error", "detail": store.error, "since": store.since,
                         "height": self.chain.tip().height}
        if self.network.syncing() or self.network.behind() is not None:
            return 503, {"status": "syncing"}
        return 200, {"status": "ok", "height": self.chain.tip().height}

    def status(self) -> dict:
        tip = self.chain.tip()
        from consensus.block import public_key_hex
        from consensus.difficulty import next_difficulty
        heights = [p.get("height") for p in self.network.peer_list() if p.get("height") is not None]
        progress = dict(getattr(self.network, "sync_progress", None) or {})
        return {
            "chain_id": self.spec.chain_id, "preset": self.spec.name, "height": tip.height, "tip": tip.hash,
            "cumulative_work": tip.cumulative_work,
            "difficulty": next_difficulty(self.spec, tip.header, self.chain.view),
            "peers": self.network.peer_count(),
            "peers_known": sum(1 for p in self.network.peer_list() if p.get("state") != "banned"),
            "syncing": self.network.syncing(),
            "tip_accuracy": {"correct": tip.header.acc_after, "of": self.spec.evaluation.size},
            "mining": {
                "enabled": self.miner is not None,
                "device": self.miner.device if self.miner else None,
                "attempts_per_second": round(self.miner.attempts_per_second(), 2) if self.miner else 0.0,
                "blocks_found": self.miner.blocks_found if self.miner else 0,
                "current": self.miner.current_search() if self.miner else None,
            },
            "version": __version__,
            "last_block_age_s": (round(time.time() - tip.header.timestamp_ms / 1000, 1) if tip.height > 0
                                 else None),
            "miner_key": public_key_hex(self.key),
            "sync": {"height": progress.get("height"), "target": progress.get("target"),
                     "peer": progress.get("peer"), "best_peer_height": max(heights, default=None)},
            "store": self.chain.health.report(),
        }


NAMED = "names"     # the one stranger network of every sender without an IP address


def sender_network(sender: str | None) -> str | None:
    """The network a sender's blocks count against in the stranger lane: its IPv4 /24 or IPv6 /48; every
    sender named by a DNS name (a peer URL: one wildcard record gives any number of names) shares one;
    None for this node."""
    if not sender:
        return None
    return network_prefix(sender) or NAMED


def _busy(block: Block, why: str) -> Outcome:
    """Not judged: no room in the sender's lane now, or its place was given up (503 ``busy``, send it again)."""
    return Outcome(Verdict.IGNORED, errors.ReplayStopped.code, why, block.hash)
