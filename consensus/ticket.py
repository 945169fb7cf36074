"""The admission ticket (protocol v4; docs/protocol.md §1.3): every header pays for the work it asks of a node.

A header's ticket is an integer ``ticket`` in [0, 2^63) such that

    H = scrypt(password = SHA-256("polchain-ticket/4" | canonical JSON of the header without
               ``signature`` and ``ticket``), salt = "polchain-ticket/4" | ticket (u64 BE),
               N = 2^ticket_work, r = 8, p = 1, 32 bytes)

starts with ``ticket_bits`` zero bits. The puzzle input is everything the header says (parent, miner key,
nonces, state, claim, time...), so a ticket cannot be moved to another header, and the signature covers
the ticket, so nobody but the miner can attach one. Finding a ticket takes 2^ticket_bits evaluations on
average, checking one takes one: memory-hard (128 · r · N bytes per evaluation), checked right after the
signature, before any replay, store write or header-only branch.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import replace
from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .block import BlockHeader, public_key_hex
from .hashing import canonical_json
from .spec import ChainSpec

TICKET_DOMAIN = b"polchain-ticket/4"
SCRYPT_R, SCRYPT_P = 8, 1
MAX_TICKET = (1 << 63) - 1


def puzzle_input(header: BlockHeader) -> bytes:
    """What a ticket is bound to: the header without its signature and ticket."""
    d = header.to_dict(with_signature=False)
    del d["ticket"]
    return hashlib.sha256(TICKET_DOMAIN + canonical_json(d)).digest()


def ticket_hash(spec: ChainSpec, puzzle: bytes, ticket: int) -> bytes:
    w = spec.proof.ticket_work
    return hashlib.scrypt(puzzle, salt=TICKET_DOMAIN + struct.pack(">Q", ticket), n=1 << w, r=SCRYPT_R,
                          p=SCRYPT_P, maxmem=128 * SCRYPT_R * (1 << w) + (1 << 20), dklen=32)


def meets_target(digest: bytes, bits: int) -> bool:
    """The digest starts with ``bits`` zero bits."""
    return int.from_bytes(digest, "big") >> (256 - bits) == 0 if bits > 0 else True


def ticket_holds(spec: ChainSpec, header: BlockHeader) -> bool:
    """One scrypt evaluation (none when the spec asks for 0 bits)."""
    bits = spec.proof.ticket_bits
    if bits == 0:
        return True
    return meets_target(ticket_hash(spec, puzzle_input(header), header.ticket), bits)


def solve_ticket(spec: ChainSpec, header: BlockHeader, start: int = 0,
                 should_stop: Callable[[], bool] | None = None) -> BlockHeader | None:
    """The header with the first ticket from ``start`` that holds (2^ticket_bits evaluations on average);
    None when ``should_stop()`` says so (asked every 64 evaluations)."""
    bits = spec.proof.ticket_bits
    if bits == 0:
        return replace(header, ticket=start)
    puzzle = puzzle_input(header)
    ticket = start
    while not meets_target(ticket_hash(spec, puzzle, ticket), bits):
        ticket = (ticket + 1) & MAX_TICKET
        if should_stop is not None and ticket % 64 == 0 and should_stop():
            return None
    return replace(header, ticket=ticket)


def sign_with_ticket(spec: ChainSpec, header: BlockHeader, key: Ed25519PrivateKey,
                     should_stop: Callable[[], bool] | None = None) -> BlockHeader | None:
    """A miner's last step: the key goes into the header, the ticket is solved for it, then it is signed."""
    solved = solve_ticket(spec, replace(header, miner=public_key_hex(key), signature=""), should_stop=should_stop)
    return solved.signed(key) if solved is not None else None
