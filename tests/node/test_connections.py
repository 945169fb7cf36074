"""node/connections.py: the gate's caps and reserves, the file limit, then the node's uvicorn server
(node/cli_node.py ``NodeServer``: the accept loop and the request deadlines) in a thread on a tiny app,
with deadlines of tenths of a second. (tests/adversarial/test_connections.py attacks a real node.)"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest
import uvicorn

from node.cli_node import _server_class, bind_port
from node.connections import ConnectionGate, ConnectionLimits, Kind, busy_response, fit_to_files
from tests.nodeproc import patient

LIMITS = ConnectionLimits(max_connections=16, per_network=4, per_address=3, trusted=2)


def gate(known=(), cap_local=False, limits=LIMITS) -> ConnectionGate:
    return ConnectionGate(limits, ["127.0.0.1"], lambda host: host in known, cap_local_networks=cap_local)


def fill(g: ConnectionGate, address: str, n: int) -> int:
    """Take up to ``n`` slots for ``address``; how many were taken."""
    taken = 0
    for _ in range(n):
        slot = g.slot_for(address)
        if g.refusal(slot) is None:
            g.take(slot)
            taken += 1
    return taken


def test_per_address_and_per_network_caps():
    g = gate()
    assert fill(g, "203.0.113.1", 5) == 3                       # per address
    assert fill(g, "203.0.113.2", 5) == 1                       # the /24 holds 4
    assert "203.0.113.0/24" in g.refusal(g.slot_for("203.0.113.9"))
    assert fill(g, "198.51.100.1", 1) == 1                      # another network is not affected
    assert fill(g, "2001:db8:1:2::1", 3) + fill(g, "2001:db8:1:3::1", 3) == 4   # one /48


def test_local_networks_count_per_address_unless_capped():
    g = gate()
    assert sum(fill(g, f"127.0.3.{i}", 3) for i in range(1, 5)) == 12        # 4 addresses x 3
    g = gate(cap_local=True)
    assert sum(fill(g, f"127.0.3.{i}", 3) for i in range(1, 5)) == 4         # one /24


def test_known_senders_have_a_reserve_and_trusted_clients_a_pool():
    g = gate(known={"192.0.2.7"})
    assert LIMITS.known_reserve == 2
    strangers = sum(fill(g, f"10.{n}.0.1", 3) for n in range(10))
    assert strangers == LIMITS.max_connections - LIMITS.known_reserve          # 14: the reserve is left
    assert "kept for known senders" in g.refusal(g.slot_for("203.0.113.5"))
    assert fill(g, "192.0.2.7", 3) == 2                                       # the reserve is the known's
    assert fill(g, "127.0.0.1", 3) == 2 and g.open[Kind.TRUSTED] == 2         # trusted: their own pool


def test_a_slot_given_back_is_free_again_and_counters_stay_bounded():
    g = gate()
    slots = []
    for i in range(3):
        s = g.slot_for(f"203.0.113.{i}")
        g.take(s)
        slots.append(s)
    for s in slots:
        g.give_back(s)
    assert not g.by_address and not g.by_network and sum(g.open.values()) == 0
    assert fill(g, "203.0.113.0", 4) == 3


def test_limits_fit_the_file_limit():
    big = ConnectionLimits()
    assert big.files_needed() == 512 + 128 + 256
    assert fit_to_files(big, 1024) is big                      # the usual soft limit is enough
    small = fit_to_files(big, 600)
    assert (small.max_connections, small.trusted, small.files_needed()) == (258, 86, 600)
    assert (small.per_network, small.per_address) == (big.per_network, big.per_address)


def test_busy_response_is_http():
    raw = busy_response('12 connections from net:1.2.3.0/24 are "open"')
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and f"content-length: {len(body)}".encode() in head
    assert body.startswith(b'{"error":"busy"')


# -- the server ---------------------------------------------------------------------------------------
FAST = ConnectionLimits(max_connections=16, per_network=4, per_address=3, trusted=2, first_byte_s=0.3,
                        headers_s=0.6, request_s=1.0)


async def echo_app(scope, receive, send):
    """Answers every request with the number of body bytes it read."""
    if scope["type"] != "http":
        return
    n, more = 0, True
    while more:
        message = await receive()
        n += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(n).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serving():
    """The node's server (its accept loop and gate) on a free port with ``echo_app``, up once it says it has
    started; (port, gate)."""
    gate = ConnectionGate(FAST, ["127.0.0.1"], lambda host: False, cap_local_networks=True)
    sock = bind_port("127.0.0.1", 0)
    config = uvicorn.Config(echo_app, log_level="warning", lifespan="off", timeout_keep_alive=5)
    srv = _server_class()(config, gate)
    t = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + patient(10)
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1], gate
    finally:
        srv.should_exit = True
        t.join(patient(10))


@pytest.fixture
def server():
    with serving() as s:
        yield s


def test_the_server_says_started_only_once_it_listens(monkeypatch):
    """``started`` comes after the acceptors listen. uvicorn set it before they existed, and the fixture above,
    which waits for it, once connected in between and was refused (a loaded machine; here the acceptors'
    start is slowed down to widen that window)."""
    from node import connections
    start = connections.Acceptor.start

    def slow_start(self):
        time.sleep(0.5)
        start(self)
    monkeypatch.setattr(connections.Acceptor, "start", slow_start)
    with serving() as (port, _):
        s = connect(port)          # refused before the fix
        s.close()


def connect(port: int, ip: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((ip, 0))
    s.connect(("127.0.0.1", port))
    s.settimeout(patient(5))
    return s


def closed_after(s: socket.socket, t0: float) -> tuple[float, bytes]:
    """Seconds from ``t0`` until the server closed ``s``, and what it sent first."""
    got = b""
    while True:
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        if not data:
            return time.monotonic() - t0, got
        got += data


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def response(s: socket.socket) -> tuple[bytes, bytes]:
    """One response's status line and body (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += s.recv(4096)
    return head.split(b"\r\n")[0], body


def test_requests_and_kept_alive_connections_are_served(server):
    port, gate = server
    s = connect(port, "127.0.3.1")
    for _ in range(3):                                  # three requests on one kept-alive connection
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert response(s) == (b"HTTP/1.1 200 OK", b"5")
        time.sleep(FAST.first_byte_s + 0.1)             # idle between requests: the keep-alive's 5 s
    s.close()


def test_over_the_network_cap_is_refused_at_once_and_trusted_get_in(server):
    port, gate = server
    held = [connect(port, f"127.0.3.{i}") for i in range(1, 5)]          # the /24's 4
    t0 = time.monotonic()
    took, answer = closed_after(connect(port, "127.0.3.9"), t0)
    # refused with an answer (a connection closed at the deadline gets none), long before the deadline
    assert answer.startswith(b"HTTP/1.1 503 ") and b"net:127.0.3.0/24" in answer and took < patient(0.25)
    other = connect(port, "127.0.4.1")                                   # another network
    other.sendall(GET)
    assert response(other) == (b"HTTP/1.1 200 OK", b"0")
    trusted = connect(port)
    trusted.sendall(GET)
    assert response(trusted) == (b"HTTP/1.1 200 OK", b"0")
    for s in held + [other, trusted]:
        s.close()


def test_deadlines_close_silent_slow_and_stalled_requests(server):
    port, gate = server
    t0 = time.monotonic()
    silent = connect(port, "127.0.5.1")
    took, answer = closed_after(silent, t0)
    assert FAST.first_byte_s - 0.05 <= took <= FAST.first_byte_s + patient(0.3) and answer == b""

    slow = connect(port, "127.0.5.2")                   # slowloris: a header byte every 0.1 s
    t0 = time.monotonic()
    sent = 0
    try:
        for byte in GET[:-4] + b"X-Slow: " + b"a" * 100:
            slow.send(bytes([byte]))
            sent += 1
            time.sleep(0.1)
    except OSError:
        pass
    took, _ = closed_after(slow, t0)
    assert FAST.headers_s - 0.05 <= took <= FAST.headers_s + patient(0.3) and sent >= 4

    stalled = connect(port, "127.0.5.3")                # headers in, then half the body
    t0 = time.monotonic()
    stalled.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
    took, answer = closed_after(stalled, t0)
    assert FAST.request_s - 0.05 <= took <= FAST.request_s + patient(0.3) and answer == b""
    deadline = time.monotonic() + patient(2)
    while sum(gate.open.values()) and time.monotonic() < deadline:      # every slot given back
        time.sleep(0.01)
    assert sum(gate.open.values()) == 0 and not gate.by_address and not gate.by_network
