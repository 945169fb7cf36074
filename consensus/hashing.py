"""Hashing primitives: SHA-256, canonical JSON, Merkle roots.

Everything consensus hashes goes through these few functions, so the encoding
rules live in one place (docs/protocol.md, "Encodings").
"""
from __future__ import annotations

import hashlib
import json
import struct
from typing import Any, Iterable, Iterator

HASH_SIZE = 32
ZERO_HASH = "00" * HASH_SIZE


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8, no floats allowed.

    Floats are refused because their text form is not canonical across
    implementations; consensus objects carry integers, strings and lists only.
    """
    _reject_floats(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _reject_floats(obj: Any) -> None:
    if isinstance(obj, float):
        raise TypeError("floats are not allowed in canonical JSON")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError("canonical JSON keys must be strings")
            _reject_floats(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _reject_floats(v)


def merkle_root(leaves: Iterable[bytes]) -> str:
    """Merkle root (hex) over leaf byte strings.

    Leaves are hashed as H(0x00 || leaf), inner nodes as H(0x01 || left || right)
    (domain separation, so a leaf can never pose as an inner node). An odd node
    at the end of a level is promoted unchanged (no duplication, so no
    CVE-2012-2459-style ambiguity). The root of the empty list is 32 zero bytes.
    """
    level = [sha256(b"\x00" + leaf) for leaf in leaves]
    if not level:
        return ZERO_HASH
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def is_hex_hash(value: Any) -> bool:
    return (isinstance(value, str) and len(value) == 2 * HASH_SIZE
            and all(c in "0123456789abcdef" for c in value))


def uniform_draws(prefix: bytes, n: int, counter_format: str) -> Iterator[int]:
    """Endless uniform integers in ``[0, n)``: ``SHA-256(prefix || counter)`` for counter = 0, 1, ...
    (packed with ``counter_format``), each digest cut into four big-endian u64 ``d``; ``d`` is
    rejected when ``d >= 2^64 - (2^64 mod n)`` (no modulo bias), else ``d mod n`` is drawn."""
    limit = (1 << 64) - ((1 << 64) % n)
    counter = 0
    while True:
        digest = hashlib.sha256(prefix + struct.pack(counter_format, counter)).digest()
        counter += 1
        for (d,) in struct.iter_unpack(">Q", digest):
            if d < limit:
                yield d % n
