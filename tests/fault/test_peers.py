"""Peers that misbehave at the transport level: never answer, trickle, or hang up mid-body.

An upstream node serves a pre-mined chain; a faulty proxy stands between it and the
node under test, which knows only the proxy. The proxy passes the header lists through and
breaks every block download (``GET /blocks/{hash}``: a v2 body is the block's records). While the fault lasts the node must
stay responsive, take no block from a broken body, give up on the transfer within
its deadline, and not ban the peer (slowness proves nothing); once the fault heals
it must sync the whole chain, and its store must verify.
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.nodeproc import REPO, NodeGroup, node_env

from .chainfile import fill_datadir
from tests.chain_spec import TINY_TEST_ARGS


BLOCK_PATH = re.compile(r"^/blocks/[0-9a-f]{64}$")


class FaultyPeer:
    """HTTP proxy to ``upstream``; ``mode`` decides what happens to block downloads."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.mode = "pass"            # pass | never | slow | close-mid-body
        self.release = threading.Event()
        self.body_requests = 0
        self.gave_up: list[float] = []  # seconds a trickled download ran before the client hung up
        self.http = httpx.Client(base_url=upstream, timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self, status: int, body: bytes, ctype="application/json"):
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                self.rfile.read(n)
                if self.path.startswith("/peers"):
                    return self._reply(202, b'{"added": false}')
                return self._reply(409, b'{"error": "duplicate", "detail": ""}')

            def do_GET(self):
                if self.path.startswith("/peers"):
                    return self._reply(200, b"[]")
                if BLOCK_PATH.match(self.path) and proxy.mode != "pass":
                    proxy.body_requests += 1
                    return proxy.fault(self)
                r = proxy.http.get(self.path)
                self._reply(r.status_code, r.content, r.headers.get("content-type", "application/json"))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fault(self, h: BaseHTTPRequestHandler):
        body = self.http.get(h.path).content
        if self.mode == "never":
            self.release.wait(300)
            h.close_connection = True
            return
        h.send_response(200)
        h.send_header("content-type", "application/octet-stream")
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        if self.mode == "close-mid-body":
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        t0 = time.monotonic()  # slow: one byte every 0.25 s (a 1.5 KB block would take 6 minutes)
        try:
            for i in range(len(body)):
                if self.release.is_set():
                    break
                h.wfile.write(body[i:i + 1])
                h.wfile.flush()
                time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):
            self.gave_up.append(time.monotonic() - t0)
        h.close_connection = True

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.http.close()


@pytest.fixture(scope="module")
def upstream(spec, dataset, blocks, tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    fill_datadir(spec, dataset, root / "up", blocks)
    group = NodeGroup(root, (*TINY_TEST_ARGS, "--poll-interval", "0.5", "--no-discover"))
    node = group.add("up")
    node.start()
    yield node
    group.close()


def _peer_state(node, url):
    for p in node.peers():
        if p["url"] == url:
            return p
    return None


@pytest.mark.parametrize("mode,fault_seconds", [("never", 25), ("slow", 40), ("close-mid-body", 15)])
def test_faulty_peer_then_heal(mode, fault_seconds, upstream, nodes, blocks, record):
    proxy = FaultyPeer(upstream.url)
    proxy.mode = mode
    try:
        node = nodes.add("victim", "--no-discover", peers=(proxy.url,))
        node.start()
        lat, heights, states = [], [], set()
        t_end = time.monotonic() + fault_seconds
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            st = node.status()
            lat.append(time.perf_counter() - t0)
            heights.append(st["height"])
            p = _peer_state(node, proxy.url)
            if p:
                states.add(p["state"])
                assert p["state"] != "banned", f"a {mode} peer was banned: {p}"
            time.sleep(0.2)
        lat.sort()
        p99 = lat[int(0.99 * (len(lat) - 1))]
        assert proxy.body_requests >= 1, "the node never asked for a body"
        assert max(heights) == 0, "a block was accepted from a broken body"
        assert "backoff" in states, f"the peer was never put in backoff: {states}"
        assert p99 < 1.0, f"/status p99 {p99:.2f}s during the fault"
        if mode == "slow":
            assert proxy.gave_up, "the node never gave up on a trickled body"
        # heal
        proxy.mode = "pass"
        proxy.release.set()
        t0 = time.monotonic()
        node.wait_height(len(blocks), timeout=240)
        healed_in = time.monotonic() - t0
        node.stop()
        r = subprocess.run([sys.executable, "-m", "node.cli", "verify", "--datadir", str(node.datadir)], cwd=REPO,
                           env=node_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr[-2000:]
    finally:
        proxy.close()
    record(f"peer-{mode}", fault_seconds=fault_seconds, body_requests=proxy.body_requests,
           status_samples=len(lat), status_p99_s=round(p99, 3), status_max_s=round(lat[-1], 3),
           gave_up_after_s=[round(x, 1) for x in proxy.gave_up], peer_states=sorted(states),
           synced_after_heal_s=round(healed_in, 1), final_height=len(blocks), blocks_lost=0)
