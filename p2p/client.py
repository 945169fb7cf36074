"""HTTP calls to a peer: every call has a timeout and a response-size cap."""
from __future__ import annotations

import json

import httpx

from consensus.block import BlockHeader

JSON_CAP = 4 << 20


class PeerError(Exception):
    pass


class PeerClient:
    def __init__(self, timeout: float = 10.0, body_timeout: float = 120.0):
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=3.0), follow_redirects=False)
        self.body_timeout = body_timeout

    def close(self) -> None:
        self.http.close()

    def _get_bytes(self, url: str, cap: int, timeout: float | None = None) -> bytes:
        try:
            with self.http.stream("GET", url, timeout=timeout or self.http.timeout) as r:
                if r.status_code != 200:
                    raise PeerError(f"GET {url}: HTTP {r.status_code}")
                declared = r.headers.get("content-length")
                if declared and int(declared) > cap:
                    raise PeerError(f"GET {url}: {declared} bytes over the cap {cap}")
                chunks, n = [], 0
                for chunk in r.iter_bytes():
                    n += len(chunk)
                    if n > cap:
                        raise PeerError(f"GET {url}: body over the cap {cap}")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise PeerError(f"GET {url}: {type(exc).__name__} {exc}") from None

    def get_json(self, url: str, cap: int = JSON_CAP):
        data = self._get_bytes(url, cap)
        try:
            return json.loads(data)
        except ValueError:
            raise PeerError(f"GET {url}: not JSON") from None

    def status(self, peer: str) -> dict:
        return self.get_json(f"{peer}/status", 64 << 10)

    def block(self, peer: str, block_hash: str) -> dict:
        return self.get_json(f"{peer}/blocks/{block_hash}")

    def headers(self, peer: str, start: int, limit: int) -> list[dict]:
        return self.get_json(f"{peer}/blocks?start={start}&limit={limit}").get("blocks", [])

    def weights(self, peer: str, block_hash: str, cap: int) -> bytes:
        return self._get_bytes(f"{peer}/blocks/{block_hash}/weights", cap, self.body_timeout)

    def peers(self, peer: str) -> list[dict]:
        out = self.get_json(f"{peer}/peers", 256 << 10)
        return out if isinstance(out, list) else []

    def introduce(self, peer: str, my_url: str) -> None:
        try:
            self.http.post(f"{peer}/peers", json={"url": my_url})
        except httpx.HTTPError as exc:
            raise PeerError(str(exc)) from None

    def send_record(self, peer: str, record_body: dict) -> int:
        try:
            return self.http.post(f"{peer}/certificates", json=record_body).status_code
        except httpx.HTTPError as exc:
            raise PeerError(str(exc)) from None

    def announce(self, peer: str, header: BlockHeader, my_url: str) -> int:
        try:
            r = self.http.post(f"{peer}/blocks", content=header.encode(),
                               headers={"content-type": "application/json", "x-polchain-origin": my_url})
            return r.status_code
        except httpx.HTTPError as exc:
            raise PeerError(str(exc)) from None
