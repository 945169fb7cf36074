"""Blocks: read the chain, fetch post-states, submit blocks."""
from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from consensus import errors
from consensus.block import Block, BlockHeader
from consensus.errors import Verdict
from consensus.hashing import is_hex_hash
from node.outcome import Outcome
from node.store import StoredBlock
from p2p.relay import Announcement

from .deps import Service
from .errors import ApiError, error_response
from .guard import REFUSALS, busy, write_guard
from .schemas import BlockList, BlockOut, BlockProof, SubmitResult, TipOut, submit_header_schema

router = APIRouter(tags=["blocks"])
MAX_LIMIT = 500
TIPS_DEPTH = 20       # /tips: stale forks more than this many blocks below the active tip are left out
BlockId = Annotated[str, Path(pattern=r"^([0-9]{1,18}|[0-9a-f]{64})$",
                              description="a height on the best chain, or a block hash (64 lowercase hex)")]


def block_key(ident: str) -> int | str:
    """A path's block id: a height (an int) or a block hash; 422 for anything else."""
    if ident.isascii() and ident.isdigit() and len(ident) < 19:  # str.isdigit() also takes '³', '٣'
        return int(ident)
    if is_hex_hash(ident):
        return ident
    raise ApiError(422, "malformed", "give a height or a 64-hex block hash")


def find_block(service, ident: str) -> StoredBlock:
    """The block a path names (``ChainQueries.block``: the one in flight is served as ``validating``)."""
    b = service.queries.block(block_key(ident))
    if b is None:
        raise ApiError(404, "not-found", f"no block {ident}")
    return b


@router.get("/blocks", response_model=BlockList)
def list_blocks(service: Service,
                start: int | None = Query(None, ge=0, le=1 << 62, description="first height (default: genesis "
                                          "for order=asc, the tip for order=desc)"),
                limit: int = Query(100, ge=1, le=MAX_LIMIT),
                order: Literal["asc", "desc"] = Query("asc", description="asc: oldest first; desc: newest first")):
    """Blocks of the best chain from ``start``, oldest first (or newest first with ``order=desc``);
    ``next_start`` continues the listing (null at the end)."""
    return service.queries.blocks(start, limit, order)


@router.get("/tips", response_model=list[TipOut])
def tips(service: Service, depth: Annotated[int, Query(ge=0, le=10**9, description=(
        "list only branches whose tip lies at most this many blocks below the active tip (0: every "
        "known tip, at most 100); tips above it are always listed"))] = TIPS_DEPTH):
    """Known chain tips, the active one first: active, valid-fork, headers-only, invalid (at most 100).
    Stale forks deeper than ``depth`` below the active tip are left out (getchaintips lists them all;
    a long-running node knows hundreds)."""
    return service.queries.tips(depth)


@router.get("/blocks/{ident}", response_model=BlockOut, responses={404: {"description": "no such block"}})
def get_block(ident: BlockId, service: Service):
    """One block (any branch, valid or not) by hash, or the best chain's block at a height."""
    return service.queries.block_out(find_block(service, ident))


@router.get("/blocks/{ident}/proof", response_model=BlockProof,
            responses={404: {"description": "no such block, or genesis (it has no proof)"}})
def get_proof(ident: BlockId, service: Service):
    """The block's proof laid out: R's k requirements (parameter, flat index, direction), the
    achieved change of each in the winning step against the validators' band (a replay of the block's
    steps from its parent's post-state: one at a time, cached per block; `replay.status` says when the
    parent's state is not kept here), the j+1 steps with their nonces and batches, and acc(W') against
    the floor."""
    out = service.proofs.describe(find_block(service, ident))
    if out is None:
        raise ApiError(404, "not-found", "the genesis block has no proof")
    return out


@router.get("/blocks/{block_hash}/state", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"description": "pruned"}})
def get_state(block_hash: BlockId, service: Service):
    """The block's post-state W' as safetensors (snapshot sync; it hashes to the header's state_hash)."""
    b = find_block(service, block_hash)
    path = service.queries.state_file(b)
    if path is None:
        raise ApiError(404, "pruned", "this node does not keep that block's post-state")
    return FileResponse(path, media_type="application/octet-stream",
                        filename=f"{b.header.state_hash}.safetensors")


SUBMIT_STATUS = {Verdict.ACCEPTED: 200, Verdict.HEADER_OK: 202, Verdict.ORPHAN: 202, Verdict.IGNORED: 202,
                 Verdict.DUPLICATE: 409, Verdict.INVALID: 400, Verdict.BAD_BODY: 400}


def submit_body(spec=None) -> dict:
    """The ``POST /blocks`` request body: multipart (the header part a JSON header, the records part a JSON
    list of at most the spec's ``max_records`` objects) or the header alone as JSON. With this node's
    ``spec`` the header schema also says what the chain fixes (``submit_header_schema``); node/app.py
    publishes that one."""
    header = submit_header_schema(spec)
    records = {"type": "array", "items": {"type": "object"}, "description": "the block's records"}
    if spec is not None:
        records["maxItems"] = spec.limits.max_records
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["header"], "additionalProperties": False,
                           "properties": {"header": {**header, "description": "the header as JSON"},
                                          "records": {**records, "description": "the block's records as a JSON "
                                                                                "list"}}},
                "encoding": {"header": {"contentType": "application/json"},
                             "records": {"contentType": "application/json"}}},
            "application/json": {"schema": header},
        },
    }


@router.post("/blocks", response_model=SubmitResult,
             responses={202: {"description": "not judged yet: held as an orphan (`code` unknown-parent, rebuild-deferred or "
                                              "parent-not-validated), ignored for now (`code` e.g. time-too-new, "
                                              "state-unavailable), or an announcement (`code` fetching or "
                                              "not-fetched)"},
                        400: {"description": "invalid block or bad body; `error` is the reason code"},
                        409: {"description": "already known"}, 413: {"description": "body over the size cap"},
                        422: {"description": "malformed request"}, **REFUSALS,
                        503: {"description": "`busy`: the validation queue is full, or a sender without a record here "
                                              "gave way to a known sender's block mid-replay (send it again); `store-unavailable`: this "
                                              "node cannot write its store (disk full, read-only); see Retry-After"}},
             openapi_extra={"requestBody": submit_body()}, dependencies=[write_guard("blocks")])
async def post_block(request: Request, service: Service):
    """Submit a block: multipart (`header` JSON, optional `records` JSON list), or the header alone as
    JSON: an announcement when `X-Polchain-Origin` names the peer to fetch the block from, else a block
    without records."""
    try:
        block, announced_by = await _parse_submission(request)
    except errors.Malformed as exc:
        return error_response(422, exc.code, exc.detail)
    except (ValueError, RecursionError) as exc:  # RecursionError: records JSON nested too deeply
        return error_response(422, "malformed", str(exc)[:200])
    # X-Polchain-Origin is only a claim: a block posted here is attributed to the connection's address,
    # so nobody can get an honest peer banned by naming it
    out = await service.post_block(block, request.client.host if request.client else None, announced_by)
    return _submit_response(out)


async def _parse_submission(request: Request) -> tuple[Block, str | None]:
    """(the block, the origin of an announcement or None). The pipeline checks the header first, then
    the commitment on the raw JSON, then parses the records: records that are not the committed ones
    are a bad body (400 records-mismatch, the header unjudged)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return Block(BlockHeader.from_json(await request.body())), request.headers.get("x-polchain-origin")
    form = await request.form(max_files=2, max_fields=4, max_part_size=1 << 20)
    header_raw, records_raw = form.get("header"), form.get("records")
    if header_raw is None:
        raise errors.Malformed("multipart needs a 'header' part")
    header_raw = await header_raw.read() if hasattr(header_raw, "read") else header_raw
    records_raw = await records_raw.read() if hasattr(records_raw, "read") else records_raw
    records = json.loads(records_raw) if records_raw is not None else []
    return Block(BlockHeader.from_json(header_raw), records), None


def _submit_response(out: Outcome) -> JSONResponse:
    if out.code in (Announcement.FETCHING, Announcement.NOT_FETCHED):
        return JSONResponse({"status": out.code if out.code == Announcement.FETCHING else Verdict.IGNORED,
                             "hash": out.block_hash, "code": out.code, "detail": out.detail}, status_code=202)
    if out.code == errors.ReplayStopped.code:        # the queue was full, or it gave way to a known block
        raise busy(out.detail)
    if out.code == errors.StoreUnavailable.code:
        return error_response(503, out.code, out.detail, hash=out.block_hash, headers={"Retry-After": "30"})
    code = SUBMIT_STATUS.get(out.status, 400)
    if code >= 400:
        return error_response(code, out.code or out.status, out.detail, hash=out.block_hash)
    return JSONResponse({"status": out.status, "hash": out.block_hash, "code": out.code, "detail": out.detail},
                        status_code=code)
