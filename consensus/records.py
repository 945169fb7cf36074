"""Records carried in blocks, committed to by the header's ``records_root``.

A record is a JSON object with a ``type`` and a ``version``; its canonical
encoding is its leaf in the Merkle tree. Each type registers a parser that
validates it fully (stateless checks: schema, sizes, signatures). New kinds
are added by registering a type here and listing it in the spec's
``record_types``; the header format and the Merkle commitment do not change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import errors
from .hashing import canonical_json, sha256_hex


@dataclass(frozen=True)
class Record:
    type: str
    body: dict[str, Any]  # the full JSON object, "type" included

    def encode(self) -> bytes:
        return canonical_json(self.body)

    @property
    def id(self) -> str:
        return sha256_hex(self.encode())


_PARSERS: dict[str, Callable[[dict[str, Any]], None]] = {}


def register_record_type(name: str, check: Callable[[dict[str, Any]], None]) -> None:
    """``check(obj)`` raises errors.BadRecord when obj is not a valid record of this type."""
    _PARSERS[name] = check


def parse_record(obj: Any) -> Record:
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise errors.BadRecord("a record must be a JSON object with a string 'type'")
    check = _PARSERS.get(obj["type"])
    if check is None:
        raise errors.BadRecord(f"unknown record type {obj['type']!r}")
    try:
        canonical_json(obj)
    except (TypeError, ValueError) as exc:
        raise errors.BadRecord(f"record is not canonical JSON: {exc}") from None
    except RecursionError:
        raise errors.BadRecord("record is nested too deeply") from None
    check(obj)
    return Record(obj["type"], obj)
