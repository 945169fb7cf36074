"""``StoreHealth``: whether the store takes writes -- the last failed write, the probe and its backoff."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from sqlalchemy.exc import OperationalError

from .store import Store

log = logging.getLogger("polchain.chain")

STORE_FAILURES = (OSError, OperationalError)   # disk full, read-only, I/O errors (SQLite or the state files)
STORE_LOG_EVERY_S = 60.0  # a failing store is logged once, then once a minute with the count, never per block
STORE_PROBE_FIRST_S = 2.0  # a failing store is probed again after 2 s, the pause doubling up to STORE_PROBE_MAX_S
STORE_PROBE_MAX_S = 8.0   # a probe writes one block's worth: cheap; a longer pause kept /health 503 after space returned


class StoreHealth:
    """A write that fails (ENOSPC, read-only) is recorded, logged once a minute and reported on /health,
    never raised as a traceback; ``probe`` tells when the store writes again (2 s, doubling to 8 s between
    probes). Not thread-safe: the chain calls it under its lock."""

    def __init__(self, store: Store):
        self.store = store
        self.error: str | None = None        # why the last write failed; None while the store writes
        self.since: float | None = None
        self.failures, self._logged = 0, 0.0
        self.pause, self._next_probe = STORE_PROBE_FIRST_S, 0.0   # backoff of the probe (monotonic)
        self._fault_dir: Path | None = None   # the state directory the failed write went to, if a block's
        self.on_recovered: list[Callable[[], None]] = []   # called once the store writes again (sync at once)

    def failed(self, exc: BaseException, state_hash: str | None = None) -> str:
        """Record a failed write (nothing of the block was stored); returns the one-line reason.
        ``state_hash``: the block's post-state, whose directory the probe then writes to."""
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        now = time.monotonic()
        if self.error is None:
            self.since = time.time()
            self.pause, self._next_probe = STORE_PROBE_FIRST_S, now + STORE_PROBE_FIRST_S
        if state_hash is not None:
            self._fault_dir = self.store.weights.path(state_hash).parent
        self.error = why
        self.failures += 1
        if now - self._logged >= STORE_LOG_EVERY_S:
            log.error("cannot write the store (%s): blocks are not stored until it writes again "
                      "(%d failed writes so far); /health answers 503", why, self.failures)
            self._logged = now
        return why

    def ok(self) -> None:
        """A write went through; the first after a failure calls ``on_recovered``."""
        recovered = self.error is not None
        if recovered:
            log.info("the store writes again (after %.0f s, %d failed writes)",
                     time.time() - (self.since or time.time()), self.failures)
        self.error, self.since, self.failures, self._logged = None, None, 0, 0.0
        self.pause, self._next_probe, self._fault_dir = STORE_PROBE_FIRST_S, 0.0, None
        for fn in list(self.on_recovered) if recovered else ():
            try:
                fn()
            except Exception:  # a listener must never break the store's bookkeeping
                log.exception("store-recovered listener failed")

    def retry_in(self) -> float:
        """Seconds until the store may be probed again (0 when it writes)."""
        return max(0.0, self._next_probe - time.monotonic()) if self.error is not None else 0.0

    def report(self) -> dict:
        """What /status shows of the store: ok, why not, since when, failed writes, seconds to the next probe."""
        failing = self.error is not None
        return {"ok": not failing, "error": self.error, "since": self.since, "failed_writes": self.failures,
                "retry_in_s": round(self.retry_in(), 1) if failing else None,
                "retry_pause_s": self.pause if failing else None}

    def probe(self, size: int, force: bool = False) -> bool:
        """Whether the store takes writes now. While a failure is recorded, the probe runs at most when its
        backoff allows (2 s doubling to 8 s; ``force``: now): what a block writes, ``size`` bytes, in the
        place the failed block's went (its post-state directory, else the state root), synced and removed,
        and a meta row in the database. Clears the error when both go through; False otherwise, without
        touching the disk when the backoff says not yet."""
        if self.error is not None and not force and time.monotonic() < self._next_probe:
            return False
        try:
            self.store.weights.probe(self._fault_dir, size)
            self.store.set_meta("write_probe", "0" * min(size, 16384))
            self.store.set_meta("write_probe", "")
        except STORE_FAILURES as exc:
            self.failed(exc)
            self.pause = min(2 * self.pause, STORE_PROBE_MAX_S)
            self._next_probe = time.monotonic() + self.pause
            return False
        self.ok()
        return True
