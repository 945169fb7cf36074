"""The FastAPI application: one router per resource, the service injected."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from .api import blocks, certificates, docs, errors, explorer, metrics, model, openapi, peers, status
from .service import NodeService


class BodyLimit:
    """Refuse request bodies over a cap before reading them (uvicorn sets none).

    Checks Content-Length first, then counts streamed bytes, answering 413.
    """

    def __init__(self, app: ASGIApp, default_limit: int, limits: dict[str, int]):
        self.app, self.default_limit, self.limits = app, default_limit, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope["path"], self.default_limit)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = True
                if too_big:
                    return await _reply_413(send, limit)
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
                await _reply_413(send, limit)


class _TooLarge(Exception):
    pass


async def _reply_413(send: Send, limit: int) -> None:
    body = ('{"error":"too-large","detail":"request body over %d bytes"}' % limit).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
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
    openapi.install(app)
    docs.install(app)
    for r in (status.router, blocks.router, model.router, peers.router, metrics.router, certificates.router,
              explorer.router):
        app.include_router(r)
    cap = service.spec.limits.max_weights_bytes + (1 << 20)
    app.add_middleware(BodyLimit, default_limit=64 << 10, limits={"/blocks": min(cap, service.settings.max_body_bytes)})
    return app
