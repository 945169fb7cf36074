"""Model certificates: the first record type carried in blocks.

A certificate says "the holder of this Ed25519 key trained the model with
this weights hash, and this is the Merkle root of its proof-of-learning"
(Jia et al., see pol/). It is signed by the owner, so nobody else can
register a claim in the owner's name; the chain orders claims, so the
earliest certificate for a model hash on the best chain is the original
registration.

    {"type": "model-certificate", "version": 1, "owner": <32-byte key hex>,
     "model_hash": <64 hex>, "proof_root": <64 hex>, "metadata": {str: str},
     "timestamp_ms": int, "signature": <64-byte signature hex>}

The signature covers ``"polchain-certificate/1\\x00" | canonical JSON of every
field but the signature``.
"""
from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import errors
from .ed25519 import small_order
from .hashing import canonical_json, is_hex_hash
from .records import Record, parse_record, register_record_type

TYPE = "model-certificate"
VERSION = 1
DOMAIN = b"polchain-certificate/1\x00"
FIELDS = {"type", "version", "owner", "model_hash", "proof_root", "metadata", "timestamp_ms", "signature"}
MAX_METADATA_ITEMS = 16
MAX_METADATA_TEXT = 256


def _signing_bytes(obj: dict[str, Any]) -> bytes:
    return DOMAIN + canonical_json({k: v for k, v in obj.items() if k != "signature"})


def check_certificate(obj: dict[str, Any]) -> None:
    if set(obj) != FIELDS:
        raise errors.BadRecord(f"certificate fields differ: missing {sorted(FIELDS - set(obj))}, "
                               f"unknown {sorted(set(obj) - FIELDS)}")
    if obj["version"] != VERSION:
        raise errors.BadRecord(f"certificate version {obj['version']!r} unsupported")
    for name in ("model_hash", "proof_root"):
        if not is_hex_hash(obj[name]):
            raise errors.BadRecord(f"{name} must be 64 lowercase hex characters")
    if type(obj["timestamp_ms"]) is not int or not 0 <= obj["timestamp_ms"] < 1 << 63:
        raise errors.BadRecord("timestamp_ms must be a non-negative integer")
    meta = obj["metadata"]
    if (not isinstance(meta, dict) or len(meta) > MAX_METADATA_ITEMS
            or any(not isinstance(k, str) or not isinstance(v, str) or len(k) > 64 or len(v) > MAX_METADATA_TEXT
                   for k, v in meta.items())):
        raise errors.BadRecord(f"metadata must be at most {MAX_METADATA_ITEMS} short string pairs")
    try:
        raw = bytes.fromhex(obj["owner"])
        key = Ed25519PublicKey.from_public_bytes(raw)
        key.verify(bytes.fromhex(obj["signature"]), _signing_bytes(obj))
    except (ValueError, TypeError, InvalidSignature):
        raise errors.BadRecord("certificate signature does not verify") from None
    if small_order(raw):
        raise errors.BadRecord("certificate owner key is a small-order point: anyone can sign for it")


register_record_type(TYPE, check_certificate)


def make_certificate(key: Ed25519PrivateKey, model_hash: str, proof_root: str, metadata: dict[str, str],
                     timestamp_ms: int) -> Record:
    from .block import public_key_hex
    obj: dict[str, Any] = {"type": TYPE, "version": VERSION, "owner": public_key_hex(key),
                           "model_hash": model_hash, "proof_root": proof_root, "metadata": dict(metadata),
                           "timestamp_ms": timestamp_ms}
    obj["signature"] = key.sign(_signing_bytes(obj)).hex()
    return parse_record(obj)
