"""Model certificates: register (mempool, then a block) and look up by model hash."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from consensus import errors
from consensus.records import parse_record

from .deps import Service
from .errors import ApiError, error_response
from .guard import REFUSALS, write_guard
from .schemas import HASH, CertificateAccepted, CertificateIn, CertificateList

router = APIRouter(tags=["certificates"])
ModelHash = Annotated[str, Path(pattern=HASH, description="the model's hash (64 lowercase hex)")]

REQUEST_BODY = {"required": True, "content": {"application/json": {"schema": CertificateIn.model_json_schema()}}}


@router.post("/certificates", status_code=202, response_model=CertificateAccepted,
             responses={**REFUSALS, 400: {"description": "not a valid certificate (error: the reason code)"},
                        409: {"description": "this owner already registered this proof for this model"},
                        422: {"description": "`malformed`: the body is not a JSON object"}},
             openapi_extra={"requestBody": REQUEST_BODY}, dependencies=[write_guard("certificates")])
async def submit_certificate(request: Request, service: Service):
    """Submit a signed model certificate; miners include it in a coming block. The same owner, model
    and proof are registered once: a second certificate for them is refused (409 duplicate)."""
    try:
        record = parse_record(await request.json())
    except errors.BadRecord as exc:
        raise ApiError(400, exc.code, exc.detail) from None
    except ValueError as exc:
        raise ApiError(422, "malformed", str(exc)) from None
    if record.type not in service.spec.record_types:
        raise ApiError(400, "bad-record", f"record type {record.type!r} not enabled on this chain")
    status, rid = service.submit_certificate(record)
    if status == "duplicate":
        return error_response(409, "duplicate", "this owner already registered this proof for this model", id=rid)
    return {"status": status, "id": rid}


@router.get("/certificates/{model_hash}", response_model=CertificateList,
            responses={404: {"description": "no certificate for this model"}})
def get_certificates(model_hash: ModelHash, service: Service):
    """Certificates for a model on the best chain; the first is the original registration."""
    out = service.queries.certificates(model_hash)
    if out is None:
        raise ApiError(404, "not-found", "no certificate for this model")
    return out
