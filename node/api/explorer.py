"""The block explorer: HTML pages at / and /explorer/..., built from the REST API's own handlers
(the same objects /status, /blocks, /tips and /certificates return as JSON). Not in the OpenAPI document."""
from __future__ import annotations

from collections import Counter
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, HTMLResponse

from node.explorer import render

from . import blocks as blocks_api
from .deps import Service
from .errors import ApiError

router = APIRouter(include_in_schema=False)
STATIC = FsPath(__file__).resolve().parents[1] / "explorer" / "static"
STATIC_FILES = {"explorer.js": "text/javascript", "explorer.css": "text/css"}
RECENT = 20            # rows in "latest blocks"
CHART_BLOCKS = 500     # blocks in the charts (the latest)
MINER_SCAN = 1000      # blocks a miner page looks through (the latest)


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})


def _newest(service, n: int) -> list[dict]:
    return blocks_api.list_blocks(service, start=None, limit=n, order="desc")["blocks"]


def _overview_live(service) -> str:
    st = service.status()
    chart = list(reversed(_newest(service, CHART_BLOCKS)))
    recent = chart[::-1][:RECENT]
    miners = Counter(b["header"].get("miner", "") for b in chart[::-1][:100] if b["height"] > 0).most_common(10)
    return render.overview_live(st, recent, chart, miners)


@router.get("/", response_class=HTMLResponse)
def overview(service: Service, part: str | None = Query(None, pattern="^live$")):
    """The first screen; ``?part=live`` is the piece the page's script refreshes in place."""
    live = _overview_live(service)
    if part == "live":
        return _html(live)
    body = f'<h1>Overview</h1><div id="live" data-live="/?part=live">{live}</div>'
    return _html(render.page("overview", body, service.status()))


@router.get("/explorer/blocks/{ident}", response_class=HTMLResponse)
def block_page(ident: Annotated[str, Path(max_length=64)], service: Service):
    st = service.status()
    try:
        b = blocks_api.block_out(service, blocks_api.find_block(service, ident))
    except ApiError as exc:
        return _html(render.page("block", f'<h1>Block</h1><div class="banner warn">{render.escape(exc.detail)}</div>',
                                 st), exc.status)
    child = None
    if b["in_best_chain"] and b["height"] < st["height"]:
        child = blocks_api.get_block(str(b["height"] + 1), service)
    return _html(render.page(f"block {b['height']}", render.block_page(b, child), st, refresh=0))


@router.get("/explorer/miners/{key}", response_class=HTMLResponse)
def miner_page(key: Annotated[str, Path(max_length=64)], service: Service):
    scanned = [b for b in _newest(service, MINER_SCAN) if b["height"] > 0]
    mined = [b for b in scanned if b["header"].get("miner") == key]
    return _html(render.page("miner", render.miner_page(key, mined, len(scanned)), service.status(), refresh=0))


@router.get("/explorer/tips", response_class=HTMLResponse)
def tips_page(service: Service):
    return _html(render.page("tips", render.tips_page(blocks_api.tips(service, blocks_api.TIPS_DEPTH), blocks_api.TIPS_DEPTH), service.status(), refresh=0))


@router.get("/explorer/certificates", response_class=HTMLResponse)
def certificates_page(service: Service, model_hash: str = Query("", max_length=200)):
    from consensus.hashing import is_hex_hash

    from .certificates import get_certificates
    mh = model_hash.strip().lower()
    result, problem = None, ""
    if mh and not is_hex_hash(mh):
        problem = "a model hash is 64 hex characters"
    elif mh:
        try:
            result = get_certificates(mh, service)
        except ApiError as exc:
            problem = exc.detail
    return _html(render.page("certificates", render.certificates_page(mh, result, problem), service.status(),
                             refresh=0))


@router.get("/explorer/static/{name}")
def static(name: str):
    if name not in STATIC_FILES:
        raise ApiError(404, "not-found", "no such file")
    return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "max-age=60"})
