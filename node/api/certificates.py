"""Model certificates: register (mempool, then a block) and look up by model hash."""
from __future__ import annotations

from fastapi import APIRouter, Request

from consensus import errors
from consensus.hashing import is_hex_hash
from consensus.records import parse_record

from .deps import Service
from .errors import ApiError
from .guard import REFUSALS, write_guard

router = APIRouter(tags=["certificates"])


@router.post("/certificates", status_code=202, responses=REFUSALS, dependencies=[write_guard("certificates")])
async def submit_certificate(request: Request, service: Service):
    """Submit a signed model certificate; miners include it in a coming block."""
    try:
        obj = await request.json()
        record = parse_record(obj)
    except errors.BadRecord as exc:
        raise ApiError(400, exc.code, exc.detail) from None
    except ValueError as exc:
        raise ApiError(422, "malformed", str(exc)) from None
    if record.type not in service.spec.record_types:
        raise ApiError(400, "bad-record", f"record type {record.type!r} not enabled on this chain")
    if service.chain.store.has_record(record.id):
        return {"status": "included", "id": record.id}
    if service.add_record(record):
        service.network.relay_record(record)
    return {"status": "pending", "id": record.id}


@router.get("/certificates/{model_hash}")
def get_certificates(model_hash: str, service: Service):
    """Certificates for a model on the best chain; the first is the original registration."""
    if not is_hex_hash(model_hash):
        raise ApiError(422, "malformed", "model hash must be 64 lowercase hex characters")
    certs = service.chain.store.certificates_for(model_hash)
    pending = [r.body for r in service.pending_records() if r.body.get("model_hash") == model_hash]
    if not certs and not pending:
        raise ApiError(404, "not-found", "no certificate for this model")
    return {"model_hash": model_hash, "certificates": certs, "pending": pending}
