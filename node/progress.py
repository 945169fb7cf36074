"""A progress bar for long work, drawn only on a terminal.

    bar = Progress(total=n, label="verify")
    for i in ...: bar.update(i + 1)
    bar.close()

On a TTY it redraws one line (``label [#####.....] 45/100  12.3/s  eta 5s``) at most every
``interval`` seconds; when the stream is not a terminal (a log file, a pipe, CI) it prints nothing.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int | None, label: str, *, stream: TextIO | None = None, width: int = 30,
                 interval: float = 0.2, enabled: bool | None = None):
        self.total, self.label, self.width, self.interval = total, label, width, interval
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self.stream) if enabled is None else enabled
        self.done = 0
        self._t0 = time.monotonic()
        self._drawn = 0.0
        self._shown = False

    def update(self, done: int, note: str = "") -> None:
        self.done = done
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if self.enabled and (finished or now - self._drawn >= self.interval):
            self._drawn = now
            self.stream.write("\r" + self.line(now, note) + "\x1b[K")
            self.stream.flush()
            self._shown = True

    def print(self, text: str, note: str = "") -> None:
        """One line of log above the bar: the bar is cleared, the line written, the bar redrawn."""
        if self._shown:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        if self._shown:
            self.stream.write(self.line(note=note) + "\x1b[K")
            self.stream.flush()

    def line(self, now: float | None = None, note: str = "") -> str:
        elapsed = max((now or time.monotonic()) - self._t0, 1e-9)
        rate = self.done / elapsed
        if self.total:
            filled = min(self.width, int(self.width * self.done / self.total))
            bar = "#" * filled + "." * (self.width - filled)
            eta = f"  eta {max(0.0, (self.total - self.done) / rate):.0f}s" if rate > 0 else ""
            text = f"{self.label} [{bar}] {self.done}/{self.total}  {rate:.1f}/s{eta}"
        else:
            text = f"{self.label} {self.done}  {rate:.1f}/s"
        return f"{text}  {note}" if note else text

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
