"""Body cheats under protocol v2: records, post-state commitments, hostile state files, pickles.

A v2 block carries no weights: its body is its records, committed by records_root. Records
that do not match the root are a *bad body* (the header stays unjudged: the genuine records
may still come, and do in these tests). What the signer vouched for is judged: a record the
root commits to that is not valid (``bad-record``), and a state_hash that the replay does not
reproduce (``state-mismatch``) make the block *invalid*.

Weights still arrive from the network in one place: a snapshot (``--assume-valid``) fetches a
checkpoint's post-state from peers. Hostile files there -- truncated or lying safetensors,
pickles -- are refused without being unpickled, and nothing is stored.
"""
from __future__ import annotations

import io
import json
import pickle
import re
import struct
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import save as st_save

from consensus import errors
from consensus.block import Block, records_root
from consensus.certificates import make_certificate
from consensus.hashing import ZERO_HASH
from consensus.records import Record
from consensus.weights import decode_state, encode_state, weights_hash
from node.app import blocks_body_cap
from tests.nodeproc import patient

from .conftest import CHEATER_KEY, HONEST_KEY, owner_certificate, signed

ROOT = Path(__file__).resolve().parents[2]


def _accepts_genuine_after(chain, block):
    """The header was left unjudged: the genuine block is still accepted."""
    assert chain.store.status(block.header.hash) is None
    out = chain.submit(Block(block.header, block.records), "http://honest.invalid:1")
    assert out.status == "accepted" and out.new_tip, out


# -- records that do not match the header -------------------------------------------------------
def test_junk_records_under_honest_header_are_a_bad_body(chain, honest, attack):
    """A relay swaps the records of a genuine block for junk (a list with a bad record, or not a
    list at all). The header commits to its records by root: that is a bad body, and the
    genuine block must still be accepted afterwards."""
    nxt = honest.next
    for junk in ([{"type": "nonsense"}], [{"type": "model-certificate"}], {"not": "a list"}, [1.5],
                 ["x" * 10], "[]"):
        attack(nxt.header, junk, "records-mismatch", errors.BadBody)
    _accepts_genuine_after(chain, nxt)


def test_records_changed_dropped_added_or_reordered(chain, honest, attack):
    """Valid records, but not the committed ones: another certificate, none, one more, the same
    twice, or the committed one with one field changed (its signature then fails too, but the
    root is checked first)."""
    nxt = honest.next
    (cert,) = nxt.records
    other = owner_certificate(1).body
    edited = dict(cert, metadata={"n": "edited"})
    for records in ([other], [], [cert, other], [other, cert], [cert, cert], [edited]):
        attack(nxt.header, records, "records-mismatch", errors.BadBody)
    _accepts_genuine_after(chain, nxt)


def test_committed_bad_record_is_invalid(chain, honest, attack):
    """The header's records_root commits to a record that is not valid: bad-record, invalid."""
    cert = make_certificate(CHEATER_KEY, "ab" * 32, "cd" * 32, {}, 1)
    body = dict(cert.body, signature="00" * 64)          # signature no longer verifies
    bad = Record(body["type"], body)
    h = signed(honest.next.header, HONEST_KEY, records_root=records_root([bad]))
    attack(h, [body], "bad-record", errors.InvalidBlock)
    assert h.records_root != ZERO_HASH


def test_committed_duplicate_records_are_invalid(chain, honest, attack):
    (cert,) = honest.next.records
    rec = Record(cert["type"], cert)
    h = signed(honest.next.header, HONEST_KEY, records_root=records_root([rec, rec]))
    attack(h, [cert, cert], "bad-record", errors.InvalidBlock)


# -- the post-state commitment ----------------------------------------------------------------------
@pytest.mark.parametrize("which", ["random", "parent-state", "other-block-state", "one-bit"])
def test_wrong_state_hash_is_invalid(which, chain, honest, attack):
    """The honest proof, re-signed by its own miner with another state_hash: the replay reproduces
    the true W', which does not hash to the claim. Invalid (the signer vouched for it); the genuine
    block, a different header, is still accepted."""
    nxt = honest.next
    true = nxt.header.state_hash
    claim = {"random": "5a" * 32, "parent-state": honest.blocks[-1].header.state_hash,
             "other-block-state": honest.blocks[3].header.state_hash,
             "one-bit": f"{int(true, 16) ^ 1:064x}"}[which]
    assert claim != true
    attack(signed(nxt.header, HONEST_KEY, state_hash=claim), nxt.records, "state-mismatch", errors.InvalidBlock)
    _accepts_genuine_after(chain, nxt)


def test_wrong_state_hash_invalidates_descendants(chain, honest):
    """A child of a block whose state claim is false is bad-parent: nobody builds on a state that
    is not what the proof produces."""
    nxt, an = honest.next, honest.after_next
    bad = signed(nxt.header, HONEST_KEY, state_hash="5a" * 32)
    assert chain.submit(Block(bad, nxt.records)).code == "state-mismatch"
    child = signed(an.header, HONEST_KEY, parent=bad.hash)
    out = chain.submit(Block(child, an.records))
    assert (out.status, out.code) == ("invalid", "bad-parent"), out


# -- hostile state files (snapshot sync) --------------------------------------------------------------
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


def raw_safetensors(header: dict | bytes, payload: bytes = b"") -> bytes:
    """A hand-built safetensors container: u64 LE header length | JSON header | data."""
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(hb)) + hb + payload


HOSTILE = ["empty", "four-bytes", "only-length", "truncated-half", "truncated-last-byte", "length-beyond-file",
           "length-2^64-1", "header-not-json", "header-json-list", "header-utf16", "offsets-overlap",
           "offsets-beyond-data", "shape-larger-than-data", "unknown-dtype", "trailing-garbage-in-header"]


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


class StateStore:
    """The part of the node a snapshot download writes into (p2p.node_link.NodeLink: has_state,
    put_state), over the node's real content-addressed store."""

    def __init__(self, root: Path):
        from node.store import WeightsStore
        self.store = WeightsStore(root)

    def has_state(self, state_hash: str) -> bool:
        return self.store.has(state_hash)

    def put_state(self, state_hash: str, data: bytes) -> None:
        self.store.put(state_hash, data)


@pytest.fixture
def snapshot_net(tmp_path):
    return StateStore(tmp_path / "states")


def _offer_state(net: StateStore, header, data: bytes) -> bool:
    """A peer serves ``data`` as ``header``'s post-state; whether the snapshot (p2p.fetch.fetch_state) took it."""
    import threading

    from p2p.client import PeerClient
    from p2p.fetch import fetch_state
    from p2p.peers import PeerBook
    from tests.p2p.util import FakePeer
    with FakePeer() as peer:
        peer.serve_block(header, state=data)
        book = PeerBook("http://127.0.0.1:1")
        return fetch_state(PeerClient(timeout=patient(2.0), deadline=patient(2.0), body_deadline=patient(2.0)), book,
                           net, [peer.url], header,
                           64 << 20, threading.Event())


@pytest.mark.parametrize("case", HOSTILE)
def test_malformed_snapshot_state_is_refused(case, honest, snapshot_net):
    data = _hostile_files(encode_state(honest.next.state))[case]
    with pytest.raises(errors.MalformedWeights):
        decode_state(data)
    assert not _offer_state(snapshot_net, honest.next.header, data)
    assert not list(snapshot_net.store.root.rglob("*.safetensors"))


def test_snapshot_state_is_the_tensors_not_the_file(honest, snapshot_net):
    """The weights hash covers tensors, not the container: a re-serialised W' (another tensor order,
    metadata) is the same state and is taken; one more tensor, or one value changed, is not."""
    w = honest.next.state
    header = honest.next.header
    other = st_save({k: v.contiguous() for k, v in reversed(list(w.items()))}, metadata={"note": "re-encoded"})
    assert other != encode_state(w) and weights_hash(decode_state(other)) == header.state_hash
    extra = dict(w)
    extra["extra"] = w["linear.bias"] * 0
    nudged = dict(w)
    nudged["linear.bias"] = w["linear.bias"] + 1e-3
    assert not _offer_state(snapshot_net, header, encode_state(extra))
    assert not _offer_state(snapshot_net, header, encode_state(nudged))
    assert _offer_state(snapshot_net, header, other)
    assert weights_hash(decode_state(snapshot_net.store.get(header.state_hash))) == header.state_hash


@pytest.mark.parametrize("kind", ["pickle", "torch-save-zip", "pickle-behind-safetensors-length"])
def test_pickle_served_as_a_state_is_never_unpickled(kind, honest, snapshot_net, tmp_path):
    marker = tmp_path / "pwned"
    data = _pickles(marker)[kind]
    with pytest.raises(FileNotFoundError):          # the payload does work when unpickled...
        pickle.loads(pickle.dumps(_Evil(str(tmp_path / "nodir" / "x"))))
    with pytest.raises(errors.MalformedWeights):
        decode_state(data)
    assert not _offer_state(snapshot_net, honest.next.header, data)
    assert not marker.exists(), "the node unpickled a peer's file"


def test_pickle_posted_with_a_block_is_never_read(node, honest, tmp_path):
    """A v1-style multipart with a `weights` part holding a pickle: v2 blocks have no weights part,
    so the part is never read; the block is judged on its header and records and accepted."""
    marker = tmp_path / "pwned-http"
    nxt = honest.next
    for data in _pickles(marker).values():
        r = node.client.post("/blocks", files={"header": (None, nxt.header.encode()),
                                               "records": (None, json.dumps(nxt.records)),
                                               "weights": ("w.pt", data, "application/octet-stream")})
        assert r.status_code in (200, 409), r.text
    assert node.service.chain.tip().hash == nxt.header.hash
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
def test_oversized_header_rejected_by_consensus(chain, honest, attack):
    """Over spec.limits.max_header_bytes (here via a long miner field): malformed, and the row
    is not stored (an oversized header must not cost its size in the store)."""
    big = replace(signed(honest.next.header, HONEST_KEY), miner="00" * 5000)
    assert len(big.encode()) > chain.spec.limits.max_header_bytes
    attack(big, honest.next.records, "malformed", errors.InvalidBlock)
    assert chain.store.get(big.hash) is None


def test_oversized_requests_get_413(node, honest):
    c = node.client
    limit = blocks_body_cap(node.service.spec, node.service.settings.max_body_bytes)
    # declared length over the /blocks cap
    r = c.post("/blocks", content=b"{" + b" " * (limit + 10) + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too-large"
    # multipart records over the cap
    r = c.post("/blocks", files={"header": (None, honest.next.header.encode()),
                                 "records": ("r.json", b" " * (limit + 1), "application/json")})
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
    big = replace(honest.next.header, miner="00" * 5000)
    r = node.client.post("/blocks", content=big.encode(), headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["error"] == "malformed", r.text
    assert node.service.chain.store.get(big.hash) is None


def test_deeply_nested_records_over_http_is_422(node, honest):
    """A records part nested 100,000 deep: 422 malformed, not a 500 from a RecursionError."""
    nested = "[" * 100_000 + "]" * 100_000
    r = node.client.post("/blocks", files={"header": (None, honest.next.header.encode()),
                                           "records": ("r.json", nested.encode(), "application/json")})
    assert r.status_code == 422 and r.json()["error"] == "malformed", r.text
    assert node.service.chain.store.status(honest.next.header.hash) is None
