"""The block explorer: HTML pages at / and /explorer/..., built from the REST API's own handlers
(the same objects /status, /blocks, /tips and /certificates return as JSON). Not in the OpenAPI document."""
from __future__ import annotations

from collections import Counter
from pathlib import Path as FsPath
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

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
MINER_SHARES = 100     # blocks the overview's miner shares are counted over (the latest)
SEARCH_MATCHES = 20    # blocks listed when a hash prefix is not unique


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})


def _newest(service, n: int) -> list[dict]:
    return blocks_api.list_blocks(service, start=None, limit=n, order="desc")["blocks"]


def _overview_live(service) -> str:
    st = service.status()
    chart = list(reversed(_newest(service, CHART_BLOCKS)))
    recent = chart[::-1][:RECENT]
    mined = [b for b in chart[::-1][:MINER_SHARES] if b["height"] > 0]
    miners = Counter(b["header"].get("miner", "") for b in mined).most_common(10)
    return render.overview_live(st, recent, chart, miners, len(mined))


@router.get("/", response_class=HTMLResponse)
def overview(service: Service, part: str | None = Query(None, pattern="^live$")):
    """The first screen; ``?part=live`` is the piece the page's script refreshes in place."""
    live = _overview_live(service)
    if part == "live":
        return _html(live)
    body = f'<h1>Overview</h1><div id="live" data-live="/?part=live">{live}</div>'
    return _html(render.page("overview", body, service.status()))


def _block_and_child(service, ident: str, st: dict) -> tuple[dict, dict | None]:
    b = blocks_api.get_block(ident, service)
    child = None
    if b["in_best_chain"] and b["height"] < st["height"]:
        child = blocks_api.get_block(str(b["height"] + 1), service)
    return b, child


def _class_names(service) -> tuple[str, ...]:
    if service.spec.dataset.id == "cifar10":
        from consensus.cifar10 import CLASS_NAMES
        return CLASS_NAMES
    return ()


@router.get("/explorer/blocks/{ident}", response_class=HTMLResponse)
def block_page(ident: Annotated[str, Path(max_length=64)], service: Service,
               part: str | None = Query(None, pattern="^live$")):
    """A block, its proof (replayed once, cached) and its header; ``?part=live`` is its status part."""
    st = service.status()
    try:
        b, child = _block_and_child(service, ident, st)
    except ApiError as exc:
        if part == "live":
            return _html(f'<div class="banner warn">{render.escape(exc.detail)}</div>', exc.status)
        return _html(render.page("block", f'<h1>Block</h1><div class="banner warn">{render.escape(exc.detail)}</div>',
                                 st), exc.status)
    if part == "live":
        return _html(render.block_facts(b, child))
    proof = service.proofs.describe(blocks_api.find_block(service, b["hash"]))
    return _html(render.page(f"block {b['height']}", render.block_page(b, child, render.proof_section(
        proof, _class_names(service))), st))


@router.get("/explorer/blocks/{ident}/batch/{step}.png", response_class=Response)
def batch_image(ident: Annotated[str, Path(max_length=64)], step: Annotated[int, Path(ge=0, le=1000)],
                service: Service):
    """The train images of one step of a block's proof, side by side (PNG, from the node's dataset)."""
    from node.explorer.png import image_strip
    b = blocks_api.find_block(service, ident)
    steps, images = service.queries.batch_images(b, step)
    if images is None:
        raise ApiError(404, "not-found", f"block {b.hash[:16]} has {steps} steps")
    return Response(image_strip(images), media_type="image/png",
                    headers={"Cache-Control": "max-age=86400, immutable"})


def _best_chain(service, chunk: int = blocks_api.MAX_LIMIT) -> list[dict]:
    """Every block of the best chain, oldest first (read ``chunk`` blocks at a time)."""
    out: list[dict] = []
    start: int | None = 0
    while start is not None:
        page = blocks_api.list_blocks(service, start=start, limit=chunk, order="asc")
        out += page["blocks"]
        start = page["next_start"]
    return out


@router.get("/explorer/learning-curve.{fmt}")
def learning_curve_data(fmt: Annotated[Literal["csv", "json"], Path()], service: Service):
    """The learning curve behind the overview's chart, every block of the best chain: height, hash,
    timestamp, interval, k, steps, correct predictions on E (claimed, measured) and the accuracy drawn."""
    rows = render.curve_rows(_best_chain(service))
    st = service.status()
    name = f'polchain-{st["chain_id"][:16]}-learning-curve.{fmt}'
    headers = {"Cache-Control": "no-store", "Content-Disposition": f'inline; filename="{name}"'}
    if fmt == "csv":
        return Response(render.curve_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)
    return JSONResponse({"chain_id": st["chain_id"], "tip": st["tip"], "height": st["height"],
                         "columns": {
                             "interval_s": "seconds since the parent's timestamp (none for block 1: genesis has "
                                           "the spec's timestamp)",
                             "steps": "training steps the proof replays: the block's nonces",
                             "claimed_correct": "correct predictions on E claimed in the header (acc_after)",
                             "measured_correct": "correct predictions on E measured by this node (null if it has "
                                                 "not replayed the block)",
                             "of": "the size of E",
                             "accuracy": "measured_correct / of, else claimed_correct / of (what the chart draws)"},
                         "blocks": rows}, headers=headers)


@router.get("/explorer/search", response_class=HTMLResponse)
def search(service: Service, q: str = Query("", max_length=200)):
    """A height, a full block hash or a unique prefix of one: its block page; otherwise a page that says
    what was not found."""
    text = q.strip().lower()
    st = service.status()

    def not_found(why: str, matches=()) -> HTMLResponse:
        return _html(render.page("search", render.search_not_found(text, why, matches), st), 404)
    if not text:
        return not_found("type a block height, a block hash or the first characters of one")
    if text.isascii() and text.isdigit():
        b = service.queries.block(int(text)) if len(text) <= 18 else None
        if b is None:
            return not_found(f"no block at height {text}: the best chain's tip is at height {st['height']}")
        return RedirectResponse(f"/explorer/blocks/{b.hash}", status_code=303)
    if not all(c in "0123456789abcdef" for c in text) or len(text) > 64:
        return not_found(f"not found: {q.strip()[:80]!r} is neither a height nor a block hash (hex)")
    if len(text) < 4:
        return not_found("give at least 4 hex characters of a block hash")
    found = service.queries.with_prefix(text, SEARCH_MATCHES + 1)     # a full hash in flight: validating
    if len(found) == 1:
        return RedirectResponse(f"/explorer/blocks/{found[0].hash}", status_code=303)
    if not found:
        return not_found(f"not found: no block hash starts with {text}")
    matches = [service.queries.block_out(b) for b in found[:SEARCH_MATCHES]]
    more = "more than " if len(found) > SEARCH_MATCHES else ""
    return not_found(f"{more}{len(matches)} blocks start with {text}: give more characters", matches)


@router.get("/explorer/miners/{key}", response_class=HTMLResponse)
def miner_page(key: Annotated[str, Path(max_length=64)], service: Service,
               part: str | None = Query(None, pattern="^live$")):
    scanned = _newest(service, MINER_SCAN)
    mined = [b for b in scanned if b["height"] > 0 and b["header"].get("miner") == key]
    if part == "live":
        return _html(render.miner_live(mined, scanned))
    return _html(render.page("miner", render.miner_page(key, mined, scanned), service.status()))


@router.get("/explorer/tips", response_class=HTMLResponse)
def tips_page(service: Service, part: str | None = Query(None, pattern="^live$")):
    tips = blocks_api.tips(service, blocks_api.TIPS_DEPTH)
    if part == "live":
        return _html(render.tips_table(tips))
    return _html(render.page("tips", render.tips_page(tips, blocks_api.TIPS_DEPTH), service.status()))


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
