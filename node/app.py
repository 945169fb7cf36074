"""The FastAPI application: one router per resource, the service injected."""
from __future__ import annotations

import json
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from .api import blocks, certificates, docs, errors, explorer, metrics, model, openapi, peers, status
from .service import NodeService


class BodyLimit:
    """Refuse request bodies over a cap before reading them (uvicorn sets none), and read at most
    ``max_large`` bodies over ``large`` bytes (or of unknown length) at once.

    Checks Content-Length first, then counts streamed bytes, answering 413; a large body
    beyond the concurrent bound is answered 503 ``busy`` without being read, so memory held
    by request bodies stays under about ``max_large`` times the cap.
    """

    def __init__(self, app: ASGIApp, default_limit: int, limits: dict[str, int], max_large: int = 4,
                 large: int = 256 << 10):
        self.app, self.default_limit, self.limits = app, default_limit, limits
        self.max_large, self.large = max_large, large
        self.large_in_flight = 0     # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope["path"], self.default_limit)
        declared, chunked = None, False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and declared > limit:
            return await _reply(send, 413, "too-large", f"request body over {limit} bytes")
        big = declared > self.large if declared is not None else chunked
        if big and self.large_in_flight >= self.max_large:
            return await _reply(send, 503, "busy", f"{self.max_large} large request bodies are being read; "
                                                   "retry later", retry_after=1)
        self.large_in_flight += big
        try:
            await self._limited(scope, receive, send, limit)
        finally:
            self.large_in_flight -= big

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, "too-large", f"request body over {limit} bytes")


class _TooLarge(Exception):
    pass


async def _reply(send: Send, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
    body = json.dumps({"error": code, "detail": detail}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(service: NodeService, *, manage_lifecycle: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage_lifecycle:
            service.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                service.stop()

    app = FastAPI(title="polchain node", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="A proof-of-learning (DGG) blockchain node. Errors: {\"error\": code, \"detail\": ...}. "
                              "The explorer (HTML) is at /.")
    app.state.service = service
    errors.install(app)
    openapi.install(app, request_bodies={("/blocks", "post"): blocks.submit_body(service.spec),
                                         ("/certificates", "post"): certificates.REQUEST_BODY})
    docs.install(app)
    for r in (status.router, blocks.router, model.router, peers.router, metrics.router, certificates.router,
              explorer.router):
        app.include_router(r)
    app.add_middleware(BodyLimit, default_limit=64 << 10,
                       limits={"/blocks": blocks_body_cap(service.spec, service.settings.max_body_bytes)},
                       max_large=service.settings.max_large_bodies)
    return app


def blocks_body_cap(spec, max_body_bytes: int) -> int:
    """The ``POST /blocks`` size cap: the largest block (header + the most records, canonical JSON)
    twice over for a client's own JSON spacing and escapes, plus 64 KiB of multipart framing, or
    the operator's ``--max-body-bytes`` when smaller."""
    return min(2 * spec.limits.max_block_bytes + (64 << 10), max_body_bytes)
