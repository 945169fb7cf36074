"""The miner inside the node: a thread that mines on the current tip.

It abandons its search as soon as the tip changes (the chain's tip listener
sets a flag that ``should_stop`` reads on every attempt or pass) and starts
again from the new tip's post-state W'.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

from typing import Callable

from consensus import errors
from consensus.block import Block, public_key_hex
from consensus.difficulty import next_difficulty
from consensus.errors import Verdict
from miner.reference import Found, make_job
from miner.search import make_miner
from miner.template import build_block

log = logging.getLogger("polchain.miner")
STORE_RETRY_S = 2.0   # pause after an unexpected error while storing a mined block (a refusing store pauses
                      # mining until the chain's probe says it writes: _wait_for_store)
REPORT_EVERY_S = 30.0  # a search that runs longer says so in the log this often
STOP_WAIT_S = 300.0   # how long a shutdown waits for the miner's current step (ResNet-18 on a slow CPU)
STOP_REPORT_S = 10.0  # ... saying so in the log this often


def mine_on_tip(chain, miner, key, *, records: Callable[[], list] = list, should_stop=lambda: False,
                now_ms: Callable[[], int] | None = None,
                max_attempts: int | None = None) -> tuple[Block, Found] | None:
    """Search a block on the chain's current tip; the block (signed header and records) and what was
    found, or None when stopped. ``records`` is asked for once a proof is found."""
    tip, w_prime = chain.tip_model()
    k = next_difficulty(chain.spec, tip.header, chain.view)
    job = make_job(chain.spec, tip.header, k, public_key_hex(key), chain.view, now_ms)
    found = miner.mine(job, w_prime, should_stop=should_stop, max_attempts=max_attempts)
    if found is None:
        return None
    block = build_block(chain.spec, job, found, key, tuple(records()), should_stop)
    return (block, found) if block is not None else None


class RateMeter:
    """Attempts per second over the last ``window`` seconds (at least ``min_span``), from a counter read
    whenever someone asks. The fast miner counts a pass of G candidates at once, seconds apart on
    ResNet-18, so a 2 s window read 0.0 most of the time (issue 21.5); the window starts when the
    miner does, so the first figure is already a mean."""

    def __init__(self, now: float, count: int = 0, window: float = 60.0, min_span: float = 5.0):
        self.window, self.min_span = window, min_span
        self.samples: deque[tuple[float, int]] = deque([(now, count)])
        self._lock = threading.Lock()      # /status, /metrics and the explorer read it from several threads

    def rate(self, now: float, count: int) -> float:
        with self._lock:
            self.samples.append((now, count))
            while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
                self.samples.popleft()          # keep one sample at least `window` old
            t0, n0 = self.samples[0]
        span = now - t0
        return (count - n0) / span if span >= self.min_span or (span > 0 and count > n0) else 0.0


def progress_line(cur: dict, rate: float) -> str:
    """One short line on the search in progress (``MinerWorker.current_search``) at ``rate`` attempts/s."""
    head = f"mining height {cur['height']} k={cur['difficulty']}: "
    if cur["attempts"] == 0:
        line = head + f"{cur['seconds']:.0f} s, first pass of candidates still running (counted a pass at a time)"
    else:
        per_block = f", ~{_duration(cur['expected_attempts'] / rate)} per block" if rate > 0 else ""
        line = head + (f"{cur['attempts']} attempts in {cur['seconds']:.0f} s ({rate:.1f}/s; "
                       f"{cur['expected_attempts']} expected{per_block})")
    if cur["r_hits"]:
        line += (f"; {cur['r_hits']} R hits not published ({cur['acc_floor_failed']} below the floor, "
                 f"{cur['acc_borderline_failed']} borderline)")
    return line


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 \
        else f"{seconds / 3600:.1f} h"


class MinerWorker:
    def __init__(self, service, device: str = "auto", kind: str = "fast"):
        self.service = service
        chain = service.chain
        self.miner = make_miner(kind, chain.spec, chain.dataset, device=device)
        self.device = self.miner.device
        self.blocks_found = 0
        self._tip_changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="miner", daemon=True)
        self._reporter = threading.Thread(target=self._report, name="miner-progress", daemon=True)
        self._explained = False       # the borderline explanation is logged once per process
        chain.tip_listeners.append(lambda tip, reorg: self._tip_changed.set())
        self._meter = RateMeter(time.perf_counter(), self.miner.progress.attempts)
        self._search: dict | None = None   # the search on the current tip: height, k, start time and count

    def start(self) -> None:
        self._thread.start()
        self._reporter.start()

    def stop(self, timeout: float = STOP_WAIT_S) -> bool:
        """Stop the search and wait until the thread has ended (it checks ``should_stop`` between passes,
        hit confirmations and advance steps: a ResNet-18 step on a CPU takes seconds). Whether it ended
        within ``timeout``; a thread left running inside torch when the interpreter exits aborts it
        ("terminate called without an active exception", issue 21.12)."""
        self._stop.set()
        self._tip_changed.set()
        if not self._thread.is_alive():
            return True
        t0 = time.monotonic()
        while self._thread.is_alive() and time.monotonic() - t0 < timeout:
            self._thread.join(timeout=min(STOP_REPORT_S, max(0.0, timeout - (time.monotonic() - t0))))
            if self._thread.is_alive() and time.monotonic() - t0 < timeout:
                log.info("waiting for the miner on %s to finish its current step (%.0f s so far)", self.device,
                         time.monotonic() - t0)
        if self._thread.is_alive():
            log.error("the miner on %s did not stop within %.0f s", self.device, timeout)
            return False
        log.info("miner on %s stopped", self.device)
        return True

    def attempts_per_second(self) -> float:
        return self._meter.rate(time.perf_counter(), self.miner.progress.attempts)

    def current_search(self) -> dict | None:
        """The block being searched for now: its height, difficulty k, attempts and seconds so far."""
        s = self._search
        if s is None:
            return None
        return {"height": s["height"], "difficulty": s["k"], "seconds": round(time.monotonic() - s["t0"], 1),
                "expected_attempts": 2 ** s["k"], **self.miner.progress.since(s["p0"])}

    def _report(self) -> None:
        """A short progress line every REPORT_EVERY_S while a search runs, on its own thread (a pass of
        candidates on ResNet-18 takes tens of seconds on a CPU: the search cannot be asked in between)."""
        while not self._stop.wait(REPORT_EVERY_S):
            cur = self.current_search()
            if cur is None or cur["seconds"] < REPORT_EVERY_S / 2:
                continue
            log.info("%s", progress_line(cur, self.attempts_per_second()))
            if cur["acc_borderline_failed"] and not self._explained:
                self._explained = True
                log.info("(borderline: W' had more predictions near a tie than the claim tolerance, so another "
                         "machine's fp32 evaluation could count them otherwise; such a block is never published)")

    def _should_stop(self) -> bool:
        return (self._stop.is_set() or self._tip_changed.is_set()
                or self.service.chain.health.error is not None    # a block found now could not be kept
                or self.service.network.behind() is not None)     # ... or would be beaten: sync first

    def _wait_for_sync(self, peer: str) -> None:
        """Mining pauses while a peer claims more work than our tip (a block found on it would be
        orphaned): one log line when it pauses and one when it resumes."""
        log.info("mining paused: %s claims more work than our tip; syncing first", peer)
        t0 = time.monotonic()
        while not self._stop.is_set() and self.service.network.behind() is not None:
            self._stop.wait(0.5)
        log.info("mining resumes: synced (paused %.0f s)", time.monotonic() - t0)

    def _wait_for_store(self) -> None:
        """Mining pauses while the store cannot be written (a block found now could not be kept): the
        chain probes it with backoff (2 s doubling to 8 s, node/store_health.py); go on once it writes again.
        One log line when mining pauses and one when it resumes, whatever the number of probes."""
        chain = self.service.chain
        log.warning("mining paused: the store cannot be written (%s); probing it with backoff", chain.health.error)
        t0 = time.monotonic()
        while not self._stop.is_set():
            if chain.health.error is None or chain.probe_store():
                log.info("mining resumes: the store writes again (paused %.0f s)", time.monotonic() - t0)
                return
            self._stop.wait(max(0.1, chain.health.retry_in()))

    def _submit_held(self, block: Block, found: Found) -> bool:
        """A block mined while the store refused writes, submitted again if the tip is still its parent.
        Whether it went in."""
        if self.service.chain.tip().hash != block.header.parent:
            return False
        out = self.service.submit_mined(block, found.state, found.acc_after)
        if out.status == Verdict.ACCEPTED:
            self.blocks_found += 1
            return True
        return False

    def _run(self) -> None:
        chain = self.service.chain
        held: tuple[Block, Found] | None = None
        while not self._stop.is_set():
            if chain.health.error is not None:
                self._wait_for_store()
                continue
            if held is not None:
                self._submit_held(*held)
                held = None
                continue
            ahead = self.service.network.behind()
            if ahead is not None:
                self._wait_for_sync(ahead)
                continue
            self._tip_changed.clear()
            try:
                tip = chain.tip()
                now = time.monotonic()
                self._search = {"height": tip.height + 1, "k": next_difficulty(chain.spec, tip.header, chain.view),
                                "t0": now, "p0": self.miner.progress.snapshot()}
                mined = mine_on_tip(chain, self.miner, self.service.key, records=self.service.pending_records,
                                    should_stop=self._should_stop)
            except Exception:
                log.exception("miner failed; retrying in 1 s")
                time.sleep(1)
                continue
            if mined is None:
                continue
            block, found = mined
            header = block.header
            log.info("mined block %s height %d after %d attempts (%.1fs), %d steps", header.hash[:16],
                     header.height, found.attempts, found.seconds, len(found.nonces))
            try:
                out = self.service.submit_mined(block, found.state, found.acc_after)
            except Exception as exc:  # disk full, I/O error: nothing was stored; the thread must live on
                log.error("could not store mined block %s height %d (%s: %s); mining again in %.0f s",
                          header.hash[:16], header.height, type(exc).__name__, exc, STORE_RETRY_S)
                self._stop.wait(STORE_RETRY_S)
                continue
            if out.status == Verdict.ACCEPTED:
                self.blocks_found += 1
            elif out.code == errors.StoreUnavailable.code:
                held = block, found   # kept in memory; submitted again once the store writes
            else:
                log.error("own block rejected: %s %s", out.code, out.detail)


class MinerGroup:
    """One MinerWorker per device (``--device cuda:0,cuda:1`` or ``cuda:all``), all on the same tip.

    Each worker draws its own random 64-bit nonces, so their searches do not overlap in practice;
    batches are bound to the node's one key, so any worker's block is the node's. The first block
    found moves the tip and every worker starts again from it (the tip listener of each)."""

    def __init__(self, service, devices: list[str], kind: str = "fast"):
        self.workers = [MinerWorker(service, d, kind) for d in devices]

    @property
    def device(self) -> str:
        return ",".join(w.device for w in self.workers)

    @property
    def blocks_found(self) -> int:
        return sum(w.blocks_found for w in self.workers)

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self, timeout: float = STOP_WAIT_S) -> bool:
        for w in self.workers:
            w._stop.set()
            w._tip_changed.set()
        return all([w.stop(timeout) for w in self.workers])

    def attempts_per_second(self) -> float:
        return sum(w.attempts_per_second() for w in self.workers)

    def current_search(self) -> dict | None:
        return self.workers[0].current_search()
