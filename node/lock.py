"""One process per datadir: an exclusive ``flock`` on DATADIR/LOCK, held until the process exits.

The kernel drops the lock when the process dies (even by kill -9), so a stale LOCK file never
blocks a restart. The file holds the owner's pid, for the error message only.
"""
from __future__ import annotations

import os
from pathlib import Path

LOCK_FILE = "LOCK"


class DatadirBusy(Exception):
    pass


class DatadirLock:
    def __init__(self, datadir: Path):
        self.path = Path(datadir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "DatadirLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DatadirBusy(f"datadir {self.path.parent} is in use by another polchain process (pid {owner}); "
                              "stop it first or use another --datadir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "DatadirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
