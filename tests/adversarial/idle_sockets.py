"""A child process holding many TCP connections to a node that never complete a request (issue 30.1).

    python -m tests.adversarial.idle_sockets HOST PORT --ips 127.0.3.1-250 --count 1000 --seconds 15

Opens ``--count`` connections to HOST:PORT, each bound to one of ``--ips`` in turn (so one /24 can hold
more than one address's share), and holds them for ``--seconds``:

* idle (the default): nothing is sent; every ``--reopen`` seconds the connections the node closed are
  opened again from the same address, so the node faces ``--count`` of them all along;
* ``--trickle S``: slowloris: one byte of a request whose headers never end is sent on each connection
  every S seconds; nothing is reopened, and it ends early once the node closed them all.

At the end it prints one JSON object: how many connections it opened in all, how many the node closed and
after how long (``held``: seconds from connect to the node's close, with the bytes sent meanwhile), and
the ages of those still open. It raises its own soft file limit as far as the hard one allows and holds
fewer connections if even that is short (``count`` says how many).

It runs in a child process so that its loop does not share the GIL with the test's own client.
"""
from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time

REQUEST_HEAD = b"GET /status HTTP/1.1\r\nHost: polchain\r\nX-Slow: " + b"a" * 4000
FD_SPARE = 64


def address_range(spec: str) -> list[str]:
    """``127.0.3.1-250`` -> 127.0.3.1 ... 127.0.3.250; a comma-separated list of such ranges or addresses."""
    out: list[str] = []
    for part in spec.split(","):
        head, _, last = part.rpartition(".")
        lo, _, hi = last.partition("-")
        out += [f"{head}.{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def raise_fd_limit(want: int) -> int:
    """The soft limit on open files raised towards ``want`` (never past the hard limit); the limit now."""
    try:
        import resource
    except ImportError:       # pragma: no cover - not POSIX
        return want
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class Conn:
    __slots__ = ("sock", "ip", "opened", "sent")

    def __init__(self, sock: socket.socket, ip: str, opened: float):
        self.sock, self.ip, self.opened, self.sent = sock, ip, opened, 0


def open_conn(host: str, port: int, ip: str) -> Conn | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, 0))
        s.settimeout(2.0)
        s.connect((host, port))
    except OSError:
        s.close()
        return None
    s.setblocking(False)
    return Conn(s, ip, time.monotonic())


def run(host: str, port: int, ips: list[str], count: int, seconds: float, reopen: float,
        trickle: float | None) -> dict:
    count = min(count, raise_fd_limit(count + FD_SPARE) - FD_SPARE)
    sel = selectors.DefaultSelector()
    closed: list[dict] = []
    opened = connect_errors = 0
    t0 = time.monotonic()
    end = t0 + seconds

    def add(ip: str) -> None:
        nonlocal opened, connect_errors
        c = open_conn(host, port, ip)
        if c is None:
            connect_errors += 1
            return
        opened += 1
        sel.register(c.sock, selectors.EVENT_READ, c)

    for i in range(count):
        add(ips[i % len(ips)])
    next_reopen = time.monotonic() + reopen
    next_byte = time.monotonic() + (trickle or 0)
    gone: list[str] = []
    while (now := time.monotonic()) < end:
        if trickle is not None and not sel.get_map():        # slowloris: every one closed, nothing to wait for
            break
        wake = min(end, next_reopen if trickle is None else next_byte)
        for key, _ in sel.select(timeout=max(0.0, wake - now)):
            c: Conn = key.data
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:                 # the node answered (a refusal); its close comes next
                continue
            sel.unregister(c.sock)
            c.sock.close()
            closed.append({"held": round(time.monotonic() - c.opened, 3), "sent": c.sent,
                           "at": round(c.opened - t0, 3)})
            gone.append(c.ip)
        now = time.monotonic()
        if trickle is not None and now >= next_byte:
            for key in list(sel.get_map().values()):
                c = key.data
                try:
                    c.sock.send(REQUEST_HEAD[c.sent % len(REQUEST_HEAD):][:1])
                    c.sent += 1
                except OSError:
                    pass
            next_byte += trickle
        if trickle is None and now >= next_reopen:
            for ip in gone:
                add(ip)
            gone.clear()
            next_reopen = now + reopen
    now = time.monotonic()
    still = [round(now - key.data.opened, 3) for key in sel.get_map().values()]
    for key in list(sel.get_map().values()):
        key.data.sock.close()
    return {"count": count, "opened": opened, "connect_errors": connect_errors, "closed": closed,
            "open_ages": still, "seconds": round(now - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--ips", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--reopen", type=float, default=1.0)
    p.add_argument("--trickle", type=float, default=None)
    a = p.parse_args(argv)
    out = run(a.host, a.port, address_range(a.ips), a.count, a.seconds, a.reopen, a.trickle)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
