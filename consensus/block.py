"""Block headers and blocks: frozen dataclasses, canonical encoding, Ed25519.

``BlockHeader`` is the protocol v4 header (v3's with an admission ticket: consensus.ticket); ``PaperHeader`` the DGG paper's (v1) header, kept
for the ``dgg-paper`` research preset.

Canonical header encoding = canonical JSON (consensus.hashing) of the header's
fields. The signature covers ``"polchain-header/1\\x00" | encoding without the
signature``; the block hash is SHA-256 of the encoding *with* the signature, so
a header with a forged signature never shares a hash with the genuine one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import errors
from .ed25519 import small_order
from .hashing import ZERO_HASH, canonical_json, is_hex_hash, merkle_root, sha256_hex
from .records import Record, parse_record
from . import certificates as _certificates  # noqa: F401  (registers the record type)

SIGN_DOMAIN = b"polchain-header/1\x00"
MAX_U64 = (1 << 64) - 1


class _Header:
    """Encoding, parsing and signing shared by the header versions (fields from the dataclass).

    A subclass lists its integer, hash and integer-list fields; ``from_dict`` checks exactly
    those fields, their types and ranges, so an unknown or missing field is malformed.
    """
    INT_FIELDS: tuple[str, ...] = ()
    HASH_FIELDS: tuple[str, ...] = ()
    LIST_FIELD: str = ""            # the one list-of-integers field
    LIST_MAX: int = 1024
    LIST_ITEM_MAX: int = (1 << 63) - 1

    # -- encodings -------------------------------------------------------
    def to_dict(self, with_signature: bool = True) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d[self.LIST_FIELD] = list(d[self.LIST_FIELD])
        if not with_signature:
            del d["signature"]
        return d

    def encode(self) -> bytes:
        return self._encoded

    def signing_bytes(self) -> bytes:
        return self._signing_bytes

    # computed once per (frozen) header: the size rule, the hash, the signature and the ticket all read them
    @cached_property
    def _encoded(self) -> bytes:
        return canonical_json(self.to_dict())

    @cached_property
    def _signing_bytes(self) -> bytes:
        return SIGN_DOMAIN + canonical_json(self.to_dict(with_signature=False))

    @cached_property
    def hash(self) -> str:
        return sha256_hex(self.encode())

    @classmethod
    def from_dict(cls, d: Any):
        """Strict parse of untrusted input; raises errors.Malformed."""
        if not isinstance(d, dict):
            raise errors.Malformed("header must be a JSON object")
        want = {f.name for f in fields(cls)}
        if set(d) != want:
            raise errors.Malformed(f"header fields differ: missing {sorted(want - set(d))}, "
                                   f"unknown {sorted(set(d) - want)}")
        for name in cls.INT_FIELDS:
            if type(d[name]) is not int or d[name] < 0 or d[name] >= 1 << 63:
                raise errors.Malformed(f"{name} must be a non-negative 63-bit integer")
        for name in cls.HASH_FIELDS:
            if not is_hex_hash(d[name]):
                raise errors.Malformed(f"{name} must be 64 lowercase hex characters")
        if not isinstance(d["miner"], str) or not isinstance(d["signature"], str):
            raise errors.Malformed("miner and signature must be hex strings")
        items = d[cls.LIST_FIELD]
        if (not isinstance(items, list) or len(items) > cls.LIST_MAX
                or any(type(i) is not int or not 0 <= i <= cls.LIST_ITEM_MAX for i in items)):
            raise errors.Malformed(f"{cls.LIST_FIELD} must be a list of at most {cls.LIST_MAX} "
                                   f"integers in [0, {cls.LIST_ITEM_MAX}]")
        return cls(**{**d, cls.LIST_FIELD: tuple(items)})

    @classmethod
    def from_json(cls, data: bytes | str):
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.Malformed(f"header is not JSON: {exc}") from None
        except RecursionError:  # e.g. "[[[[..." nested deeper than the interpreter's stack
            raise errors.Malformed("header is not JSON: nested too deeply") from None
        return cls.from_dict(obj)

    # -- signatures ----------------------------------------------------------
    def signed(self, key: Ed25519PrivateKey):
        pub = public_key_hex(key)
        unsigned = replace(self, miner=pub, signature="")
        return replace(unsigned, signature=key.sign(unsigned.signing_bytes()).hex())

    def signature_valid(self) -> bool:
        """The miner's signature verifies, under a key nobody else can sign for (not a small-order point:
        consensus.ed25519)."""
        try:
            raw = bytes.fromhex(self.miner)
            if small_order(raw):
                return False
            Ed25519PublicKey.from_public_bytes(raw).verify(bytes.fromhex(self.signature), self.signing_bytes())
            return True
        except (ValueError, InvalidSignature):
            return False


@dataclass(frozen=True)
class BlockHeader(_Header):
    """Protocol v4 header. The block carries no weights: W is the parent's post-state advanced
    by the canonical steps of ``nonces[:-1]``, the winning step is ``nonces[-1]``, and the
    header commits to the post-state W' through ``state_hash``."""
    version: int
    chain_id: str
    height: int
    parent: str
    timestamp_ms: int
    difficulty: int                 # k: the number of requirements
    miner: str                      # Ed25519 public key, 32 bytes hex ("" for genesis)
    nonces: tuple[int, ...]         # j advance steps, then the winning step (u64 each)
    state_hash: str                 # weights hash of W', this block's post-state
    acc_after: int                  # claimed correct count of W' on E
    records_root: str               # Merkle root of the block's records
    ticket: int = 0                 # the admission ticket (consensus.ticket), covered by the signature
    signature: str = ""             # Ed25519 over signing_bytes(), 64 bytes hex

    INT_FIELDS = ("version", "height", "timestamp_ms", "difficulty", "acc_after", "ticket")
    HASH_FIELDS = ("chain_id", "parent", "state_hash", "records_root")
    LIST_FIELD = "nonces"
    LIST_MAX = 256
    LIST_ITEM_MAX = MAX_U64


@dataclass(frozen=True)
class PaperHeader(_Header):
    """The DGG paper's header (research preset ``dgg-paper`` only): free W in the body."""
    version: int
    chain_id: str
    height: int
    parent: str
    timestamp_ms: int
    difficulty: int
    miner: str
    batch: tuple[int, ...]          # P: indices into the train split, chosen by the miner
    weights_hash: str               # hash of W, the state before the winning step (the body)
    acc_before: int
    acc_after: int
    records_root: str
    signature: str = ""

    INT_FIELDS = ("version", "height", "timestamp_ms", "difficulty", "acc_before", "acc_after")
    HASH_FIELDS = ("chain_id", "parent", "weights_hash", "records_root")
    LIST_FIELD = "batch"


@dataclass(frozen=True)
class Block:
    """One block as it crosses the layers: the header and its records.

    ``records_json`` are the records exactly as committed (the JSON objects whose canonical
    encodings the header's ``records_root`` is the Merkle root of); ``records`` are the same,
    parsed. Parsing is deferred to the records stage of the pipeline
    (consensus.validation.validate_block), after the header rules and the commitment: records
    that match the root but do not parse make the *block* invalid (``BadRecord``), never the
    sender's body bad. Build one from untrusted wire JSON with ``Block.from_wire``; ``Block.of``
    from parsed records (a miner's template); ``Block(header, records_json)`` leaves the commitment to
    the pipeline, which checks it after the header rules.
    """
    header: BlockHeader
    records_json: tuple = field(default=())

    def __post_init__(self):
        # a list becomes a tuple; anything else (junk from the wire) is kept for the commitment check
        # of the pipeline to refuse
        if isinstance(self.records_json, list):
            object.__setattr__(self, "records_json", tuple(self.records_json))

    @classmethod
    def from_wire(cls, header: BlockHeader, items: Any) -> "Block":
        """The block from a header and a peer's records JSON. The commitment is checked on the raw
        JSON, before anything is parsed: ``errors.RecordsMismatch`` (a bad body: the records are not
        the committed ones, the genuine ones may still come from someone else)."""
        check_records_commitment(header, items)
        return cls(header, tuple(items))

    @classmethod
    def of(cls, header: BlockHeader, records: tuple[Record, ...] | list[Record] = ()) -> "Block":
        return cls(header, tuple(r.body for r in records))

    @property
    def hash(self) -> str:
        return self.header.hash

    @cached_property
    def records(self) -> tuple[Record, ...]:
        """The parsed records (raises ``errors.BadRecord``); check the commitment first."""
        return parse_records(list(self.records_json))

    @property
    def wire_records(self) -> list:
        return list(self.records_json) if isinstance(self.records_json, tuple) else []


def check_records_commitment(header, items: Any) -> None:
    """Raw records (JSON from a peer) against the header's records_root, before any parsing.

    Records the header does not commit to say nothing about the header: a relay may have
    swapped them, and the genuine ones may still come. So a mismatch -- including items
    that are not a list or have no canonical encoding -- is a bad body, and only records
    that *do* match the root can make the block invalid (bad-record, when parsed).
    """
    if not isinstance(items, (list, tuple)):
        raise errors.RecordsMismatch("records must be a JSON list")
    try:
        root = merkle_root(canonical_json(item) for item in items)
    except (TypeError, ValueError, RecursionError):
        raise errors.RecordsMismatch("a record has no canonical encoding") from None
    if root != header.records_root:
        raise errors.RecordsMismatch("records do not match the header's records_root")


def records_root(records: tuple[Record, ...] | list[Record]) -> str:
    return merkle_root(r.encode() for r in records)


def parse_records(items: Any) -> tuple[Record, ...]:
    if not isinstance(items, list):
        raise errors.BadRecord("records must be a JSON list")
    return tuple(parse_record(item) for item in items)


def public_key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def header_class(spec):
    """The header type of a chain: BlockHeader (v3), PaperHeader for the dgg-paper research preset."""
    return PaperHeader if spec.is_paper else BlockHeader


def genesis_header(spec):
    """Height 0: no miner, no nonces, no ticket, no signature; the post-state is the genesis weights and
    its claim is the genesis model's pinned accuracy on E (v4: block 1's floor; docs/protocol.md §6)."""
    common = dict(version=spec.header_version, chain_id=spec.chain_id, height=0, parent=ZERO_HASH,
                  timestamp_ms=spec.time.genesis_timestamp_ms, difficulty=spec.difficulty.initial, miner="",
                  acc_after=0 if spec.is_paper else spec.evaluation.genesis_correct, records_root=ZERO_HASH,
                  signature="")
    if spec.is_paper:
        return PaperHeader(batch=(), weights_hash=spec.model.genesis_weights_sha256, acc_before=0, **common)
    return BlockHeader(nonces=(), state_hash=spec.model.genesis_weights_sha256, **common)
