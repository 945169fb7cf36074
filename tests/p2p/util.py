"""Helpers for the P2P tests: node keys, chain comparisons, a fake peer serving a bad block, a silent peer."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from consensus.ticket import sign_with_ticket
from tests.nodeproc import NodeProc, free_port
from tests.chain_spec import TINY_TEST


def miner_key(node: NodeProc) -> str:
    """The node's Ed25519 public key (hex), as it appears in header.miner of the blocks it mines."""
    from consensus.block import public_key_hex
    from node.keys import load_or_create_key
    path = Path(node.datadir) / "node.key"
    assert path.exists(), f"{node.name} has no key yet"
    return public_key_hex(load_or_create_key(path))


def tips(*nodes: NodeProc) -> set[str]:
    return {n.status()["tip"] for n in nodes}


def same_tip(*nodes: NodeProc) -> str | None:
    t = tips(*nodes)
    return t.pop() if len(t) == 1 else None


class FakePeer:
    """A tiny HTTP server standing in for a peer: serves fixed routes, records every request. ``host``:
    the loopback address it listens on (127.0.0.1 unless another network is played)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, bytes]] = []       # (path, body) of every request with a body
        self.host = host
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                path = self.path.split("?")[0]
                fake.requests.append((self.command, path))
                n = int(self.headers.get("content-length") or 0)
                if n:
                    fake.bodies.append((path, self.rfile.read(n)))
                status, ctype, body = fake.routes.get(path, (404, "application/json",
                                                             b'{"error":"not-found","detail":""}'))
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakePeer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve_json(self, path: str, obj, status: int = 200) -> None:
        self.routes[path] = (status, "application/json", json.dumps(obj).encode())

    def serve_bytes(self, path: str, data: bytes) -> None:
        self.routes[path] = (200, "application/octet-stream", data)

    def serve_block(self, header, records: list | None = None, state: bytes | None = None) -> None:
        """GET /blocks/{hash} (header and records) and, when given, GET /blocks/{hash}/state."""
        h = header.hash
        self.serve_json(f"/blocks/{h}", {"hash": h, "height": header.height, "status": "valid",
                                         "header": header.to_dict(), "records": records or []})
        if state is not None:
            self.serve_bytes(f"/blocks/{h}/state", state)

    def fetched(self, block_hash: str) -> int:
        return sum(1 for _, p in self.requests if p.startswith(f"/blocks/{block_hash}"))


def tampered_block(node: NodeProc, height: int):
    """A sibling of the node's block at ``height`` claiming another post-state, re-signed with a fresh key.
    Every header rule passes (same parent, difficulty, timestamp); the proof does not (R is bound to the
    miner's key, and the post-state is wrong)."""
    from dataclasses import replace

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from consensus.block import BlockHeader
    from consensus.hashing import sha256_hex

    header = BlockHeader.from_dict(node.block(str(height))["header"])
    return sign_with_ticket(TINY_TEST, replace(header, state_hash=sha256_hex(header.state_hash.encode())),
                            Ed25519PrivateKey.generate())


class SilentPeer:
    """Accepts TCP connections and never answers (nor closes) until stopped."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self.conns.append(c)

    def close(self):
        self._stop.set()
        self._t.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()

    def __enter__(self) -> "SilentPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
