"""Small-order Ed25519 keys: OpenSSL verifies a signature under a public key of small order without
refusing the key, so one fixed signature "verifies" a share of all messages and anyone can sign as that
key -- a block's miner nobody holds, a model certificate owned by nobody. The chain refuses those keys
(consensus.ed25519, as libsodium does); here: the attack under OpenSSL alone, and the chain's refusal."""
from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consensus import errors
from consensus.block import genesis_header
from consensus.certificates import TYPE, VERSION, _signing_bytes, check_certificate
from consensus.ed25519 import P, SMALL_ORDER_Y, Y_ORDER_8, small_order
from consensus.spec import preset
from consensus.validation import validate_signature

ZERO_KEY, ZERO_SIG = "00" * 32, "00" * 64


def openssl_verifies(key_hex: str, sig_hex: str, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).verify(bytes.fromhex(sig_hex), message)
        return True
    except InvalidSignature:
        return False


def _edwards():
    """Affine point arithmetic on edwards25519, enough to check the small-order list by multiplication."""
    d = (-121665 * pow(121666, -1, P)) % P
    sqrt_m1 = pow(2, (P - 1) // 4, P)

    def x_of(y):
        xx = (y * y - 1) * pow(d * y * y + 1, -1, P) % P
        x = pow(xx, (P + 3) // 8, P)
        if (x * x - xx) % P:
            x = x * sqrt_m1 % P
        assert (x * x - xx) % P == 0, "not on the curve"
        return x

    def add(a, b):
        (x1, y1), (x2, y2) = a, b
        t = d * x1 * x2 * y1 * y2
        return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P)
    return x_of, add


def test_the_listed_points_are_exactly_of_small_order():
    x_of, add = _edwards()
    orders = {}
    for y in SMALL_ORDER_Y:
        pt, acc, n = (x_of(y), y), (0, 1), 0
        while True:
            acc, n = add(acc, pt), n + 1
            if acc == (0, 1):
                break
        orders[y] = n
    assert sorted(orders.values()) == [1, 2, 4, 8, 8] and orders[Y_ORDER_8] == 8
    for y in SMALL_ORDER_Y:                               # both signs of x, and the non-canonical p, p + 1
        enc = y.to_bytes(32, "little")
        assert small_order(enc) and small_order(enc[:31] + bytes([enc[31] | 0x80]))
    assert small_order(P.to_bytes(32, "little")) and small_order((P + 1).to_bytes(32, "little"))
    real = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key().public_bytes_raw()
    assert not small_order(real)


def headers_openssl_accepts_for_the_zero_key(n: int):
    spec = preset("tiny")
    g = genesis_header(spec)
    out = []
    for height in range(1, 200):
        h = replace(g, height=height, parent=g.hash, miner=ZERO_KEY, signature=ZERO_SIG)
        if openssl_verifies(ZERO_KEY, ZERO_SIG, h.signing_bytes()):
            out.append(h)
            if len(out) == n:
                return out, height
    pytest.fail("OpenSSL verified no header under the zero key: the attack below has no subject")


def test_a_header_signed_by_nobody_is_refused():
    forged, tried = headers_openssl_accepts_for_the_zero_key(3)
    assert len(forged) == 3 and tried < 60            # about one message in four verifies
    for h in forged:
        assert not h.signature_valid()
        with pytest.raises(errors.BadSignature):
            validate_signature(h)


def test_a_certificate_owned_by_nobody_is_refused():
    for n in range(200):
        obj = {"type": TYPE, "version": VERSION, "owner": ZERO_KEY, "model_hash": f"{n:064x}",
               "proof_root": "cd" * 32, "metadata": {}, "timestamp_ms": 1, "signature": ZERO_SIG}
        if openssl_verifies(ZERO_KEY, ZERO_SIG, _signing_bytes(obj)):
            break
    else:
        pytest.fail("OpenSSL verified no certificate under the zero key: the test has no subject")
    with pytest.raises(errors.BadRecord, match="small-order"):
        check_certificate(obj)
