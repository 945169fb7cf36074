"""The miner inside the node: a thread that mines on the current tip.

It abandons its search as soon as the tip changes (the chain's tip listener
sets a flag that ``should_stop`` reads on every attempt or pass) and starts
again from the new tip's post-state W'.
"""
from __future__ import annotations

import logging
import threading
import time

from typing import Callable

from consensus.block import BlockHeader, public_key_hex
from consensus.difficulty import next_difficulty
from miner.reference import Found, make_job
from miner.search import make_miner
from miner.template import build_block

log = logging.getLogger("polchain.miner")
STORE_RETRY_S = 2.0   # pause after a block could not be stored (disk full...) before mining again


def mine_on_tip(chain, miner, key, *, records: Callable[[], list] = list, should_stop=lambda: False,
                now_ms: Callable[[], int] | None = None,
                max_attempts: int | None = None) -> tuple[BlockHeader, list, Found] | None:
    """Search a block on the chain's current tip; the signed header, its records (the JSON objects)
    and what was found, or None when stopped. ``records`` is asked for once a proof is found."""
    tip, w_prime = chain.tip_model()
    k = next_difficulty(chain.spec, tip.header, chain.view)
    job = make_job(chain.spec, tip.header, k, public_key_hex(key), chain.view, now_ms)
    found = miner.mine(job, w_prime, should_stop=should_stop, max_attempts=max_attempts)
    if found is None:
        return None
    recs = tuple(records())
    return build_block(chain.spec, job, found, key, recs), [r.body for r in recs], found


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
        chain.tip_listeners.append(lambda tip, reorg: self._tip_changed.set())
        self._last_rate = (time.perf_counter(), 0)
        self.rate = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._tip_changed.set()
        self._thread.join(timeout=10)

    def attempts_per_second(self) -> float:
        t, n = time.perf_counter(), self.miner.progress.attempts
        t0, n0 = self._last_rate
        if t - t0 >= 2.0:
            self.rate = (n - n0) / (t - t0)
            self._last_rate = (t, n)
        return self.rate

    def _should_stop(self) -> bool:
        return self._stop.is_set() or self._tip_changed.is_set()

    def _run(self) -> None:
        chain = self.service.chain
        while not self._stop.is_set():
            self._tip_changed.clear()
            try:
                mined = mine_on_tip(chain, self.miner, self.service.key, records=self.service.pending_records,
                                    should_stop=self._should_stop)
            except Exception:
                log.exception("miner failed; retrying in 1 s")
                time.sleep(1)
                continue
            if mined is None:
                continue
            header, records, found = mined
            log.info("mined block %s height %d after %d attempts (%.1fs), %d steps", header.hash[:16],
                     header.height, found.attempts, found.seconds, len(found.nonces))
            try:
                out = self.service.submit_local(header, records)
            except Exception as exc:  # disk full, I/O error: nothing was stored; the thread must live on
                log.error("could not store mined block %s height %d (%s: %s); mining again in %.0f s",
                          header.hash[:16], header.height, type(exc).__name__, exc, STORE_RETRY_S)
                self._stop.wait(STORE_RETRY_S)
                continue
            if out.status == "accepted":
                self.blocks_found += 1
            else:
                log.error("own block rejected: %s %s", out.code, out.detail)
