"""A progress bar for long work, drawn only on a terminal.

    bar = Progress(total=n, label="verify")
    for i in ...: bar.update(i + 1)
    bar.close()

On a TTY it redraws one line (``label [#####.....] 45/100  12.3/s  eta 5s``; under one item a
second the rate is shown as seconds per item, ``8.4 s/block``, never ``0.0/s``) at most every
``interval`` seconds. When the stream is not a terminal (a log file, a pipe, CI) the same line is
written as a log line at most every ``log_interval`` seconds, so long work is never silent and short
work prints nothing extra.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int | None, label: str, *, stream: TextIO | None = None, width: int = 30,
                 interval: float = 0.2, enabled: bool | None = None, log_interval: float = 10.0,
                 clock=time.monotonic, unit: str = "block"):
        self.total, self.label, self.width, self.interval = total, label, width, interval
        self.unit = unit
        self.log_interval = log_interval
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_tty(self.stream) if enabled is None else enabled
        self.done = 0
        self._clock = clock
        self._t0 = clock()
        self._drawn = 0.0
        self._logged = self._t0
        self._shown = False

    def update(self, done: int, note: str = "") -> None:
        self.done = done
        now = self._clock()
        finished = self.total is not None and done >= self.total
        if not self.enabled:
            if now - self._logged >= self.log_interval and not finished:
                self._logged = now
                self.stream.write(self.line(now, note) + "\n")
                self.stream.flush()
            return
        if finished or now - self._drawn >= self.interval:
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
        elapsed = max((now or self._clock()) - self._t0, 1e-9)
        rate = self.done / elapsed
        speed = self.speed(rate, elapsed)
        if self.total:
            filled = min(self.width, int(self.width * self.done / self.total))
            bar = "#" * filled + "." * (self.width - filled)
            eta = f"  eta {max(0.0, (self.total - self.done) / rate):.0f}s" if rate > 0 else ""
            text = f"{self.label} [{bar}] {self.done}/{self.total}  {speed}{eta}"
        else:
            text = f"{self.label} {self.done}  {speed}"
        return f"{text}  {note}" if note else text

    def speed(self, rate: float, elapsed: float) -> str:
        """Items per second, or seconds per item under one a second (a ResNet-18 block takes seconds:
        its rate rounded to "0.0/s"); "-" before the first item."""
        if self.done <= 0:
            return f"- s/{self.unit}"
        if rate >= 1:
            return f"{rate:.1f}/s"
        per = elapsed / self.done
        return f"{per:.1f} s/{self.unit}" if per < 100 else f"{per:.0f} s/{self.unit}"

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
