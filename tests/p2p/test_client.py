"""PeerClient: every call is bounded in time and size (a local misbehaving HTTP server, no nodes)."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from p2p.client import NotFound, PeerClient, PeerError
from tests.nodeproc import free_port


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):  # noqa: N802
        if self.path == "/big":                 # declares its size
            body = b"x" * (2 << 20)
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/endless":           # no length: streams until the client gives up
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"y" * 65536)
            except OSError:
                pass
        elif self.path == "/trickle":           # a byte at a time: never idle long enough for a read timeout
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        elif self.path == "/silent":            # longer than any read timeout below + 10 s
            time.sleep(30)
        elif self.path.startswith("/blocks/"):
            body = b'{"error":"pruned","detail":"gone"}'
            self.send_response(404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    port = free_port()
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{port}"
    srv.shutdown()
    srv.server_close()


def test_size_cap_declared_and_streamed(server):
    c = PeerClient()
    with pytest.raises(PeerError, match="over the cap"):
        c.request("GET", f"{server}/big", cap=1 << 20)
    with pytest.raises(PeerError, match="over the cap"):
        c.request("GET", f"{server}/endless", cap=1 << 20)
    assert c.get_json(f"{server}/status", 1024) == {"ok": True}


def test_total_deadline_beats_a_trickling_peer(server):
    c = PeerClient(timeout=5)
    t = time.monotonic()
    with pytest.raises(PeerError, match="deadline"):
        c.request("GET", f"{server}/trickle", cap=1 << 20, deadline=1.0)
    assert time.monotonic() - t < 1.0 + 10


def test_read_timeout(server):
    c = PeerClient(timeout=0.5)
    t = time.monotonic()
    with pytest.raises(PeerError):
        c.request("GET", f"{server}/silent", cap=1024)
    assert time.monotonic() - t < 0.5 + 10


def test_pruned_is_a_not_found(server):
    c = PeerClient()
    with pytest.raises(NotFound) as exc:
        c.state(server, "ab" * 32, 1 << 20)
    assert exc.value.code == "pruned" and exc.value.status == 404


def test_unreachable_peer():
    c = PeerClient(connect=0.5)
    with pytest.raises(PeerError):
        c.status(f"http://127.0.0.1:{free_port()}")
