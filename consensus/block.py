"""Block headers and blocks: frozen dataclasses, canonical encoding, Ed25519.

Canonical header encoding = canonical JSON (consensus.hashing) of the header's
fields. The signature covers ``"polchain-header/1\\x00" | encoding without the
signature``; the block hash is SHA-256 of the encoding *with* the signature, so
a header with a forged signature never shares a hash with the genuine one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import errors
from .hashing import ZERO_HASH, canonical_json, is_hex_hash, merkle_root, sha256_hex
from .records import Record, parse_record
from . import certificates as _certificates  # noqa: F401  (registers the record type)

SIGN_DOMAIN = b"polchain-header/1\x00"

_INT_FIELDS = ("version", "height", "timestamp_ms", "difficulty", "acc_before", "acc_after")
_HASH_FIELDS = ("chain_id", "parent", "weights_hash", "records_root")


@dataclass(frozen=True)
class BlockHeader:
    version: int
    chain_id: str
    height: int
    parent: str
    timestamp_ms: int
    difficulty: int                 # k: the number of requirements
    miner: str                      # Ed25519 public key, 32 bytes hex ("" for genesis)
    batch: tuple[int, ...]          # P: indices into the train split
    weights_hash: str               # hash of W, the state before the winning step
    acc_before: int                 # claimed correct count of W on E
    acc_after: int                  # claimed correct count of W' = update(W, P) on E
    records_root: str               # Merkle root of the block's records
    signature: str = ""             # Ed25519 over signing_bytes(), 64 bytes hex

    # -- encodings -------------------------------------------------------
    def to_dict(self, with_signature: bool = True) -> dict[str, Any]:
        d = {
            "version": self.version, "chain_id": self.chain_id, "height": self.height,
            "parent": self.parent, "timestamp_ms": self.timestamp_ms, "difficulty": self.difficulty,
            "miner": self.miner, "batch": list(self.batch), "weights_hash": self.weights_hash,
            "acc_before": self.acc_before, "acc_after": self.acc_after, "records_root": self.records_root,
        }
        if with_signature:
            d["signature"] = self.signature
        return d

    def encode(self) -> bytes:
        return canonical_json(self.to_dict())

    def signing_bytes(self) -> bytes:
        return SIGN_DOMAIN + canonical_json(self.to_dict(with_signature=False))

    @cached_property
    def hash(self) -> str:
        return sha256_hex(self.encode())

    @classmethod
    def from_dict(cls, d: Any) -> "BlockHeader":
        """Strict parse of untrusted input; raises errors.Malformed."""
        if not isinstance(d, dict):
            raise errors.Malformed("header must be a JSON object")
        want = set(cls.__dataclass_fields__)
        if set(d) != want:
            raise errors.Malformed(f"header fields differ: missing {sorted(want - set(d))}, "
                                   f"unknown {sorted(set(d) - want)}")
        for name in _INT_FIELDS:
            if type(d[name]) is not int or d[name] < 0 or d[name] >= 1 << 63:
                raise errors.Malformed(f"{name} must be a non-negative 63-bit integer")
        for name in _HASH_FIELDS:
            if not is_hex_hash(d[name]):
                raise errors.Malformed(f"{name} must be 64 lowercase hex characters")
        if not isinstance(d["miner"], str) or not isinstance(d["signature"], str):
            raise errors.Malformed("miner and signature must be hex strings")
        batch = d["batch"]
        if not isinstance(batch, list) or len(batch) > 1024 or any(type(i) is not int for i in batch):
            raise errors.Malformed("batch must be a list of integers")
        return cls(**{**d, "batch": tuple(batch)})

    @classmethod
    def from_json(cls, data: bytes | str) -> "BlockHeader":
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.Malformed(f"header is not JSON: {exc}") from None
        except RecursionError:  # e.g. "[[[[..." nested deeper than the interpreter's stack
            raise errors.Malformed("header is not JSON: nested too deeply") from None
        return cls.from_dict(obj)

    # -- signatures ----------------------------------------------------------
    def signed(self, key: Ed25519PrivateKey) -> "BlockHeader":
        pub = public_key_hex(key)
        unsigned = replace(self, miner=pub, signature="")
        return replace(unsigned, signature=key.sign(unsigned.signing_bytes()).hex())

    def signature_valid(self) -> bool:
        try:
            pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.miner))
            pub.verify(bytes.fromhex(self.signature), self.signing_bytes())
            return True
        except (ValueError, InvalidSignature):
            return False


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    records: tuple[Record, ...] = field(default=())

    @property
    def hash(self) -> str:
        return self.header.hash


def records_root(records: tuple[Record, ...] | list[Record]) -> str:
    return merkle_root(r.encode() for r in records)


def parse_records(items: Any) -> tuple[Record, ...]:
    if not isinstance(items, list):
        raise errors.BadRecord("records must be a JSON list")
    return tuple(parse_record(item) for item in items)


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def genesis_header(spec) -> BlockHeader:
    """Height 0: no miner, no batch, no signature; W is the genesis weights."""
    return BlockHeader(
        version=spec.header_version, chain_id=spec.chain_id, height=0, parent=ZERO_HASH,
        timestamp_ms=spec.time.genesis_timestamp_ms, difficulty=spec.difficulty.initial, miner="",
        batch=(), weights_hash=spec.model.genesis_weights_sha256, acc_before=0, acc_after=0,
        records_root=ZERO_HASH, signature="",
    )
