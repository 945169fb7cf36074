"""Per-peer lanes on a shared thread pool: one task at a time per peer, never one peer for all.

A peer that accepts connections and never answers can only hold up its own lane
(until the client's deadline); every other peer's polls, announcements and
fetches go on. A lane keeps at most ``max_pending`` waiting tasks (more are
refused, so the caller can drop them); ``coalesce`` replaces what waits with the
newest task (a newer announcement makes an older one pointless).
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

log = logging.getLogger("polchain.p2p")


class Lanes:
    def __init__(self, name: str, workers: int, max_pending: int = 8):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self.max_pending = max_pending
        self._lanes: dict[str, deque] = {}     # key present: a task of that lane is queued or running
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, key: str, fn: Callable[[], object], *, coalesce: bool = False) -> bool:
        """Run ``fn`` in ``key``'s lane; False when the lane is full or the pool is shut down."""
        with self._lock:
            if self._closed:
                return False
            waiting = self._lanes.get(key)
            if waiting is not None:
                if coalesce:
                    waiting.clear()
                elif len(waiting) >= self.max_pending:
                    return False
                waiting.append(fn)
                return True
            self._lanes[key] = deque()
        try:
            self.pool.submit(self._run, key, fn)
        except RuntimeError:
            with self._lock:
                self._lanes.pop(key, None)
            return False
        return True

    def busy(self, key: str) -> bool:
        with self._lock:
            return key in self._lanes

    def _run(self, key: str, fn: Callable[[], object]) -> None:
        while True:
            try:
                fn()
            except Exception:
                if not self._closed:
                    log.exception("p2p task for %s failed", key)
            with self._lock:
                waiting = self._lanes.get(key)
                if self._closed or not waiting:
                    self._lanes.pop(key, None)
                    return
                fn = waiting.popleft()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lanes.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
