"""HTTP calls to a peer. Every call has a timeout, a total deadline and a size cap.

httpx timeouts bound each network operation (connect, one read); a peer that
trickles bytes could still hold a request open for ever, so responses are
streamed and the call fails once it passes its total deadline or its byte cap.
"""
from __future__ import annotations

import json
import time

import httpx

from consensus.block import BlockHeader

JSON_CAP = 4 << 20          # block lists and block JSON
SMALL_CAP = 64 << 10        # /status, POST replies
PEERS_CAP = 256 << 10
MIN_BODY_RATE = 1 << 20     # bytes/s a body download must keep up on average


class PeerError(Exception):
    """The peer did not answer usefully (network error, timeout, cap, HTTP error)."""

    def __init__(self, msg: str, status: int | None = None, code: str | None = None):
        super().__init__(msg)
        self.status, self.code = status, code


class TooLarge(PeerError):
    """The answer is larger than the cap for its kind (the caller may ask for less)."""


class NotFound(PeerError):
    """HTTP 404: the peer lacks the block (``code == "pruned"`` on a post-state: it no longer keeps it)."""


class PeerClient:
    def __init__(self, timeout: float = 5.0, connect: float = 3.0, deadline: float = 15.0,
                 body_deadline: float = 20.0, min_body_rate: int = MIN_BODY_RATE):
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=connect), follow_redirects=False,
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        self.deadline = deadline
        self.body_deadline = body_deadline
        self.min_body_rate = min_body_rate

    def close(self) -> None:
        self.http.close()

    # -- transport -------------------------------------------------------------------------
    def request(self, method: str, url: str, cap: int, deadline: float | None = None, *,
                ok: tuple[int, ...] = (200,), **kw) -> tuple[int, bytes]:
        """(status, body) of a call; raises PeerError past ``deadline`` seconds or ``cap`` bytes."""
        deadline = self.deadline if deadline is None else deadline
        t_end = time.monotonic() + deadline
        try:
            with self.http.stream(method, url, **kw) as r:
                declared = r.headers.get("content-length")
                if declared is not None:
                    try:
                        over = int(declared) > cap
                    except ValueError:
                        over = True
                    if over:
                        raise TooLarge(f"{method} {url}: {declared} bytes over the cap {cap}", r.status_code)
                chunks, n = [], 0
                for chunk in r.iter_bytes():
                    n += len(chunk)
                    if n > cap:
                        raise TooLarge(f"{method} {url}: body over the cap {cap}", r.status_code)
                    if time.monotonic() > t_end:
                        raise PeerError(f"{method} {url}: slower than the {deadline:.0f}s deadline", r.status_code)
                    chunks.append(chunk)
                data = b"".join(chunks)
                if r.status_code not in ok:
                    code = _error_code(data)
                    cls = NotFound if r.status_code == 404 else PeerError
                    raise cls(f"{method} {url}: HTTP {r.status_code} {code or ''}".rstrip(), r.status_code, code)
                return r.status_code, data
        except httpx.HTTPError as exc:
            raise PeerError(f"{method} {url}: {type(exc).__name__} {exc}") from None

    def get_json(self, url: str, cap: int = JSON_CAP, deadline: float | None = None, **kw):
        _, data = self.request("GET", url, cap, deadline, **kw)
        try:
            return json.loads(data)
        except ValueError:
            raise PeerError(f"GET {url}: not JSON") from None

    # -- the calls ----------------------------------------------------------------------------
    def status(self, peer: str, timeout: float = 5.0) -> dict:
        out = self.get_json(f"{peer}/status", SMALL_CAP, deadline=timeout,
                            timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)))
        if not isinstance(out, dict):
            raise PeerError(f"{peer}/status: not an object")
        return out

    def block(self, peer: str, block_hash: str) -> dict:
        out = self.get_json(f"{peer}/blocks/{block_hash}", JSON_CAP)
        if not isinstance(out, dict):
            raise PeerError(f"{peer}/blocks/{block_hash[:16]}: not an object")
        return out

    def headers(self, peer: str, start: int, limit: int) -> list[dict]:
        """The peer's best chain from ``start``: a list of block JSON objects (header + records)."""
        out = self.get_json(f"{peer}/blocks?start={int(start)}&limit={int(limit)}", JSON_CAP)
        blocks = out.get("blocks") if isinstance(out, dict) else None
        if not isinstance(blocks, list):
            raise PeerError(f"{peer}/blocks: no block list")
        return blocks

    def state(self, peer: str, block_hash: str, cap: int) -> bytes:
        deadline = self.body_deadline + cap / self.min_body_rate
        return self.request("GET", f"{peer}/blocks/{block_hash}/state", cap, deadline)[1]

    def peers(self, peer: str) -> list[dict]:
        out = self.get_json(f"{peer}/peers", PEERS_CAP)
        return out if isinstance(out, list) else []

    def introduce(self, peer: str, my_url: str) -> None:
        self.request("POST", f"{peer}/peers", SMALL_CAP, 5.0, ok=(200, 202), json={"url": my_url})

    def send_record(self, peer: str, record_body: dict) -> int:
        return self.request("POST", f"{peer}/certificates", SMALL_CAP, 5.0, ok=tuple(range(200, 500)),
                            json=record_body)[0]

    def announce(self, peer: str, header: BlockHeader, my_url: str) -> int:
        """POST the header alone; 202 = the peer will fetch it, 409 = it already has it."""
        return self.request("POST", f"{peer}/blocks", SMALL_CAP, 5.0, ok=(200, 202, 409),
                            content=header.encode(),
                            headers={"content-type": "application/json", "x-polchain-origin": my_url})[0]


def _error_code(data: bytes) -> str | None:
    try:
        obj = json.loads(data[:4096])
    except ValueError:
        return None
    code = obj.get("error") if isinstance(obj, dict) else None
    return code if isinstance(code, str) else None
