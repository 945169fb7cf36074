"""Ed25519 public keys that OpenSSL accepts and the chain does not: the small-order points.

OpenSSL (under the cryptography package) verifies RFC 8032 signatures without refusing a public key A
of small order (one of the eight points of the curve's 8-torsion, whose multiples cycle among
themselves). For such an A the check [S]B = R + [h]A holds for one fixed signature (R, S) whenever
h = H(R | A | M) falls in one residue class, so whoever names such a key signs for it: the all-zero key
with the all-zero signature "verifies" about a quarter of all messages (tests/adversarial/test_weak_keys.py).
libsodium refuses these keys; so does the chain, for a header's miner and a certificate's owner, by the
y-coordinate of the encoding reduced modulo p (which also catches the non-canonical encodings of 0 and 1).
"""
from __future__ import annotations

P = 2 ** 255 - 19
# y of the order-8 points (those of order 1, 2 and 4 have y = 1, p - 1 and 0); checked by point
# arithmetic in the test
Y_ORDER_8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
SMALL_ORDER_Y = frozenset({0, 1, P - 1, Y_ORDER_8, P - Y_ORDER_8})


def small_order(public_key: bytes) -> bool:
    """The 32-byte encoding names a point of order 1, 2, 4 or 8 (the sign bit of x does not matter)."""
    y = int.from_bytes(public_key, "little") & ((1 << 255) - 1)
    return y % P in SMALL_ORDER_Y
