"""Body cheats: weights that do not match, hostile safetensors, pickles, NaN, records.

A body that does not match its header is a *bad body* (the header stays
unjudged: the genuine body may still come, and does in these tests). A header
that commits to weights which cannot be the model's (wrong layout, NaN) is
*invalid*: the signer vouched for them.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from consensus import errors
from consensus.certificates import make_certificate
from consensus.hashing import ZERO_HASH
from consensus.validation import decode_weights
from consensus.weights import clone_state, decode_state, weights_hash

from .conftest import snapshot
from .forge import HONEST_KEY, THIEF_KEY, encode, raw_safetensors, safetensors_bytes, signed

ROOT = Path(__file__).resolve().parents[2]


def _accepts_genuine_after(chain, block):
    """The header was left unjudged: the genuine body is still accepted."""
    assert chain.store.status(block.header.hash) is None
    out = chain.submit(block.header, [], block.body, "http://honest.invalid:1")
    assert out.status == "accepted" and out.new_tip, out


# -- weights that do not match the header ------------------------------------------------
def test_other_weights_under_honest_header(chain, honest, attack):
    nxt = honest.next
    attack(nxt.header, honest.blocks[-1].body, "weights-mismatch", errors.BadBody)
    _accepts_genuine_after(chain, nxt)


def test_same_header_one_bit_flipped_in_body(chain, honest, attack):
    """Same block hash, mutated body: one bit of one weight flipped."""
    nxt = honest.next
    data = bytearray(nxt.body)
    data[-5] ^= 0x01
    attack(nxt.header, bytes(data), "weights-mismatch", errors.BadBody)
    _accepts_genuine_after(chain, nxt)


def test_same_tensors_other_container_is_the_same_body(chain, honest):
    """The weights hash covers tensors, not the file: a re-serialised body with metadata and
    another tensor order is the same W and is accepted (nothing to exploit: W is identical)."""
    nxt = honest.next
    w = nxt.w
    other = safetensors_bytes(dict(reversed(list(w.items()))), metadata={"note": "re-encoded"})
    assert other != nxt.body and weights_hash(decode_state(other)) == nxt.header.weights_hash
    assert chain.submit(nxt.header, [], other).status == "accepted"


def test_extra_tensor_under_honest_header(chain, honest, attack):
    nxt = honest.next
    w = dict(nxt.w, extra=torch.zeros(3))
    attack(nxt.header, encode(w), "weights-mismatch", errors.BadBody)
    _accepts_genuine_after(chain, nxt)


# -- weights the header commits to but that cannot be the model -------------------------------
def _committed(chain, forge, honest, w):
    """The cheater signs a header committing to ``w`` (claims copied, no accuracy evaluation)."""
    nxt = honest.next.header
    return signed(nxt, THIEF_KEY, weights_hash=weights_hash(w))


@pytest.mark.parametrize("case", ["extra", "missing", "mis-shaped", "int-dtype"])
def test_committed_weights_with_wrong_layout(case, chain, forge, honest, attack):
    w = clone_state(honest.next.w)
    if case == "extra":
        w["linear.extra"] = torch.zeros(10)
    elif case == "missing":
        del w["bn2.running_var"]
    elif case == "mis-shaped":
        w["linear.weight"] = w["linear.weight"].reshape(32, 10).contiguous()
    else:
        w["linear.bias"] = torch.zeros(10, dtype=torch.int64)
    attack(_committed(chain, forge, honest, w), encode(w), "malformed", errors.InvalidBlock)


def test_unsupported_dtype_is_malformed_weights(chain, honest, attack):
    """float64 has no canonical weights hash: the body cannot match any header."""
    w = dict(honest.next.w)
    w["linear.bias"] = w["linear.bias"].double()
    attack(honest.next.header, encode(w), "malformed-weights", errors.BadBody)


@pytest.mark.parametrize("where,value", [("linear.weight", float("nan")), ("conv1.weight", float("inf")),
                                         ("bn3.running_var", float("-inf")), ("bn1.running_mean", float("nan"))])
def test_committed_non_finite_weights(where, value, chain, forge, honest, attack):
    w = clone_state(honest.next.w)
    w[where].view(-1)[0] = value
    attack(_committed(chain, forge, honest, w), encode(w), "non-finite-weights", errors.InvalidBlock)


# -- hostile files -------------------------------------------------------------------------------
def _hostile_files(body: bytes) -> dict[str, bytes]:
    n = struct.unpack("<Q", body[:8])[0]
    header = json.loads(body[8:8 + n])
    name = next(k for k, v in header.items()   # a tensor with data before it and a real shape
                if k != "__metadata__" and v["data_offsets"][0] > 0 and v["shape"])
    start, end = header[name]["data_offsets"]
    overlap = dict(header)
    overlap[name] = dict(header[name], data_offsets=[0, end])
    beyond = dict(header)
    beyond[name] = dict(header[name], data_offsets=[start, end + 10 ** 9])
    wrong_len = dict(header)
    wrong_len[name] = dict(header[name], shape=[int(x) * 2 for x in header[name]["shape"]])
    bad_dtype = dict(header)
    bad_dtype[name] = dict(header[name], dtype="Q99")
    payload = body[8 + n:]
    files = {
        "empty": b"", "four-bytes": b"\x00\x01\x02\x03", "only-length": body[:8],
        "truncated-half": body[: len(body) // 2], "truncated-last-byte": body[:-1],
        "length-beyond-file": struct.pack("<Q", len(body) * 4) + body[8:],
        "length-2^64-1": b"\xff" * 8 + body[8:],
        "header-not-json": raw_safetensors(b"{not json" + b" " * 10, payload),
        "header-json-list": raw_safetensors(b"[1,2,3]", payload),
        "header-utf16": raw_safetensors(json.dumps(header).encode("utf-16"), payload),
        "offsets-overlap": raw_safetensors(overlap, payload),
        "offsets-beyond-data": raw_safetensors(beyond, payload),
        "shape-larger-than-data": raw_safetensors(wrong_len, payload),
        "unknown-dtype": raw_safetensors(bad_dtype, payload),
        "trailing-garbage-in-header": raw_safetensors(json.dumps(header).encode() + b"\x00garbage", payload),
    }
    assert sorted(files) == sorted(HOSTILE)
    return files


HOSTILE = ["empty", "four-bytes", "only-length", "truncated-half", "truncated-last-byte", "length-beyond-file",
           "length-2^64-1", "header-not-json", "header-json-list", "header-utf16", "offsets-overlap",
           "offsets-beyond-data", "shape-larger-than-data", "unknown-dtype", "trailing-garbage-in-header"]


@pytest.mark.parametrize("case", HOSTILE)
def test_malformed_safetensors(case, chain, honest, attack):
    data = _hostile_files(honest.next.body)[case]
    attack(honest.next.header, data, "malformed-weights", errors.BadBody)


class _Evil:
    """Unpickling this runs ``open(marker, 'w')``: a stand-in for arbitrary code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickles(marker: Path) -> dict[str, bytes]:
    raw = pickle.dumps({"linear.weight": _Evil(str(marker))}, protocol=2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:   # the layout of torch.save: a zip with data.pkl inside
        z.writestr("archive/data.pkl", pickle.dumps(_Evil(str(marker)), protocol=2))
        z.writestr("archive/version", "3\n")
    return {"pickle": raw, "torch-save-zip": buf.getvalue(),
            "pickle-behind-safetensors-length": struct.pack("<Q", len(raw)) + raw}


@pytest.mark.parametrize("kind", ["pickle", "torch-save-zip", "pickle-behind-safetensors-length"])
def test_pickle_posted_as_weights_is_never_unpickled(kind, chain, honest, attack, tmp_path):
    marker = tmp_path / "pwned"
    data = _pickles(marker)[kind]
    with pytest.raises(FileNotFoundError):          # the payload does work when unpickled...
        pickle.loads(pickle.dumps(_Evil(str(tmp_path / "nodir" / "x"))))
    attack(honest.next.header, data, "malformed-weights", errors.BadBody)
    assert not marker.exists(), "the node unpickled a peer's file"


def test_pickle_over_http_is_never_unpickled(node, honest, tmp_path):
    marker = tmp_path / "pwned-http"
    for data in _pickles(marker).values():
        r = node.client.post("/blocks", files={"header": (None, honest.next.header.encode()),
                                               "weights": ("w.pt", data, "application/octet-stream")})
        assert r.status_code == 400 and r.json()["error"] == "malformed-weights", r.text
    assert not marker.exists()


def test_no_unpickling_anywhere_in_the_node():
    """Static guard: nothing that handles peer data may call a pickle-based loader."""
    pattern = re.compile(r"\b(pickle\.loads?|torch\.load|numpy\.load|np\.load|cPickle|dill|joblib\.load)\b")
    hits = []
    for pkg in ("consensus", "node", "p2p", "miner"):
        for path in (ROOT / pkg).rglob("*.py"):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if pattern.search(code) and not code.strip().startswith(('"', "'")):
                    hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, hits


# -- sizes -------------------------------------------------------------------------------------
def test_oversized_weights_rejected_by_consensus(chain, honest, attack):
    """Over spec.limits.max_weights_bytes: malformed-weights before any decoding."""
    cap = chain.spec.limits.max_weights_bytes
    big = safetensors_bytes(dict(honest.next.w), metadata={"pad": "x" * cap})
    assert len(big) > cap
    attack(honest.next.header, big, "malformed-weights", errors.BadBody)


def test_oversized_header_rejected_by_consensus(chain, honest, attack):
    """Over spec.limits.max_header_bytes (here via a long miner field): malformed, and the row
    is not stored (an oversized header must not cost its size in the store)."""
    h = honest.next.header
    big = signed(h, HONEST_KEY)
    from dataclasses import replace
    big = replace(big, miner="00" * 5000)
    assert len(big.encode()) > chain.spec.limits.max_header_bytes
    attack(big, honest.next.body, "malformed", errors.InvalidBlock)
    assert chain.store.get(big.hash) is None


def test_oversized_requests_get_413(node, honest):
    c = node.client
    limit = min(node.service.spec.limits.max_weights_bytes + (1 << 20), node.service.settings.max_body_bytes)
    # declared length over the /blocks cap
    r = c.post("/blocks", content=b"{" + b" " * (limit + 10) + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too-large"
    # multipart weights over the cap
    r = c.post("/blocks", files={"header": (None, honest.next.header.encode()),
                                 "weights": ("w", b"\0" * (limit + 1), "application/octet-stream")})
    assert r.status_code == 413
    # streamed (chunked, no content-length) over the cap
    def gen():
        for _ in range(limit // (1 << 16) + 2):
            yield b" " * (1 << 16)
    r = c.post("/blocks", content=gen(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    # other routes have the small default cap
    r = c.post("/peers", content=b"{" + b" " * (100 << 10) + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert node.service.chain.tip().height == len(honest.blocks)


def test_header_only_json_over_header_cap_is_422_and_not_stored(node, honest):
    """Under the HTTP cap but over max_header_bytes: rejected as malformed, nothing stored."""
    from dataclasses import replace
    big = replace(honest.next.header, miner="00" * 5000)
    r = node.client.post("/blocks", content=big.encode(), headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["error"] == "malformed", r.text
    assert node.service.chain.store.get(big.hash) is None


# -- records -------------------------------------------------------------------------------------
def test_junk_records_under_honest_header_are_a_bad_body(chain, honest, attack):
    """A relay swaps the records of a genuine block for junk (a list with a bad record, or not a
    list at all). The header commits to its records by root: that is a bad body, and the
    genuine block must still be accepted afterwards."""
    nxt = honest.next
    for junk in ([{"type": "nonsense"}], [{"type": "model-certificate"}], {"not": "a list"}, [1.5],
                 ["x" * 10]):
        attack(nxt.header, nxt.body, "records-mismatch", errors.BadBody, records=junk)
    _accepts_genuine_after(chain, nxt)


def test_committed_bad_record_is_invalid(chain, honest, forge, attack):
    """The header's records_root commits to a record that is not valid: bad-record, invalid."""
    from consensus.block import records_root
    from consensus.records import Record
    cert = make_certificate(THIEF_KEY, "ab" * 32, "cd" * 32, {}, 1)
    body = dict(cert.body, signature="00" * 64)          # signature no longer verifies
    bad = Record(body["type"], body)
    nxt = honest.next
    h = signed(nxt.header, HONEST_KEY, records_root=records_root([bad]))
    attack(h, nxt.body, "bad-record", errors.InvalidBlock, records=[body])
    assert h.records_root != ZERO_HASH


def test_deeply_nested_records_over_http_is_422(node, honest):
    """A records part nested 100,000 deep: 422 malformed, not a 500 from a RecursionError."""
    nested = "[" * 100_000 + "]" * 100_000
    r = node.client.post("/blocks", files={"header": (None, honest.next.header.encode()),
                                           "records": ("r.json", nested.encode(), "application/json"),
                                           "weights": ("w", honest.next.body, "application/octet-stream")})
    assert r.status_code == 422 and r.json()["error"] == "malformed", r.text
    assert node.service.chain.store.status(honest.next.header.hash) is None
