"""REST API contract, over real HTTP against a `polchain node` process on a real SQLite file.

The node (``static_node``) serves a copy of the template chain and does not mine,
so every answer can be checked against the in-process chain it was copied from.
"""
from __future__ import annotations

import json
import re
import socket

import httpx
import pytest
from safetensors.torch import load as st_load

from consensus.block import BlockHeader
from consensus.training import genesis_state
from consensus.weights import encode_state, weights_hash
from node.app import blocks_body_cap

from .conftest import TEMPLATE_BLOCKS, post_block

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) >= {"error", "detail"}, body
    assert isinstance(body["error"], str) and isinstance(body["detail"], str)
    if code is not None:
        assert body["error"] == code, body
    return body


# -- status, health, spec ---------------------------------------------------------------
def test_status(static_node, smith):
    st = static_node.status()
    tip = smith.chain.tip()
    assert st["chain_id"] == smith.spec.chain_id
    assert st["height"] == TEMPLATE_BLOCKS == tip.height
    assert st["tip"] == tip.hash
    assert st["cumulative_work"] == tip.cumulative_work
    assert isinstance(st["difficulty"], int) and st["difficulty"] >= smith.spec.difficulty.minimum
    assert st["peers"] == 0 and st["syncing"] is False
    assert st["mining"] == {"enabled": False, "device": None, "attempts_per_second": 0.0, "blocks_found": 0,
                            "current": None}
    assert isinstance(st["version"], str) and st["version"]


def test_health(static_node):
    r = static_node.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["height"] == TEMPLATE_BLOCKS


def test_spec(static_node, smith):
    r = static_node.get("/spec")
    assert r.status_code == 200
    assert r.json() == smith.spec.to_dict()


# -- blocks --------------------------------------------------------------------------------
def test_blocks_list(static_node, smith):
    r = static_node.get("/blocks")
    assert r.status_code == 200
    body = r.json()
    assert [b["height"] for b in body["blocks"]] == list(range(TEMPLATE_BLOCKS + 1))
    assert [b["hash"] for b in body["blocks"]] == smith.chain.store.best_hashes()
    assert body["next_start"] is None
    assert all(b["in_best_chain"] and b["status"] == "valid" for b in body["blocks"])


def test_blocks_list_paging(static_node):
    seen, start = [], 0
    while start is not None:
        body = static_node.get("/blocks", params={"start": start, "limit": 2}).json()
        assert len(body["blocks"]) <= 2
        seen += [b["height"] for b in body["blocks"]]
        start = body["next_start"]
    assert seen == list(range(TEMPLATE_BLOCKS + 1))
    assert static_node.get("/blocks", params={"start": 10_000}).json() == {"blocks": [], "next_start": None}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"limit": 10**9}, {"start": -1},
                                    {"start": "x"}, {"limit": "1.5"}])
def test_blocks_list_bounds(static_node, params):
    assert_error(static_node.get("/blocks", params=params), 422, "malformed")


def test_block_by_height_and_hash(static_node, smith):
    for height in (0, 1, TEMPLATE_BLOCKS):
        want = smith.chain.store.get(smith.chain.store.hash_at(height))
        by_height = static_node.get(f"/blocks/{height}")
        by_hash = static_node.get(f"/blocks/{want.hash}")
        assert by_height.status_code == by_hash.status_code == 200
        assert by_height.json() == by_hash.json()
        b = by_hash.json()
        assert b["hash"] == want.hash and b["height"] == height and b["status"] == "valid"
        assert b["header"] == want.header.to_dict()
        assert set(b["header"]) >= {"nonces", "state_hash", "acc_after"}
        assert not set(b["header"]) & {"batch", "weights_hash", "acc_before"}     # the v1 fields are gone
        assert set(b["accuracy"]) == {"claimed_after", "measured_after", "of"}
        assert b["accuracy"]["claimed_after"] == want.header.acc_after
        assert b["accuracy"]["measured_after"] == want.acc_after
        assert b["accuracy"]["of"] == smith.spec.evaluation.size
        assert isinstance(b["received_at"], float)
        assert b["cumulative_work"] == want.cumulative_work
        # the header is exactly what POST /blocks takes back
        assert BlockHeader.from_dict(b["header"]).hash == want.hash


def test_block_header_round_trip(static_node, smith):
    """GET /blocks/{h} posted back, the header alone and with its records: 409 known."""
    b = static_node.get(f"/blocks/{TEMPLATE_BLOCKS}").json()
    assert_error(post_block(static_node, b["header"]), 409, "duplicate")
    assert_error(post_block(static_node, b["header"], b["records"]), 409, "duplicate")


@pytest.mark.parametrize("ident,status,code", [
    ("999999", 404, "not-found"),
    ("0" * 64, 404, "not-found"),
    ("ab" * 31, 422, "malformed"),
    ("AB" * 32, 422, "malformed"),
    ("-1", 422, "malformed"),
    ("1.0", 422, "malformed"),
    ("\u00b3", 422, "malformed"),        # str.isdigit() is true for a superscript three
    ("\u0663", 422, "malformed"),        # Arabic-Indic three
    ("9" * 30, 422, "malformed"),
])
def test_block_errors(static_node, ident, status, code):
    assert_error(static_node.get(f"/blocks/{ident}"), status, code)
    assert_error(static_node.get(f"/blocks/{ident}/state"), status, code)


def test_block_state(static_node, smith):
    """GET /blocks/{h}/state: the block's post-state W', hashing to the header's state_hash (the
    genesis weights at height 0); every height of the archival template chain has one."""
    for height in range(TEMPLATE_BLOCKS + 1):
        b = smith.chain.store.get(smith.chain.store.hash_at(height))
        r = static_node.get(f"/blocks/{b.hash}/state")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/octet-stream"
        assert weights_hash(st_load(r.content)) == b.header.state_hash
        assert static_node.get(f"/blocks/{height}/state").content == r.content
    assert static_node.get("/blocks/0/state").content == encode_state(genesis_state(smith.spec))


def test_v1_weights_route_is_gone(static_node):
    """Blocks carry no weights under v2: the v1 route answers 404 (not a file)."""
    assert_error(static_node.get(f"/blocks/{TEMPLATE_BLOCKS}/weights"), 404, "not-found")


def test_model_is_tip_w_prime(static_node, smith):
    r = static_node.get("/model")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    tip, w_prime = smith.chain.tip_model()
    assert r.headers["x-polchain-height"] == str(TEMPLATE_BLOCKS)
    assert r.headers["x-polchain-block"] == tip.hash
    assert weights_hash(st_load(r.content)) == weights_hash(w_prime)


def test_model_info_says_how_to_normalise_an_image(static_node, smith):
    """/model/info alone is enough to classify an image (issue 31.14): with the served weights and the
    per-channel mean and std it gives, uint8 RGB images become the model's input, and the evaluation
    set's first images are classified as the tip's accuracy claim says (within the claim tolerance)."""
    info = static_node.get("/model/info").json()
    norm = info["normalization"]
    assert norm["mean"] == list(smith.spec.mean) and norm["std"] == list(smith.spec.std)
    assert "255" in norm["formula"] and "mean" in norm["formula"] and "std" in norm["formula"]
    import torch

    from consensus.model import build_model
    model = build_model(info["architecture"], info["num_classes"])
    model.load_state_dict(st_load(static_node.get("/model").content))
    model.eval()
    m = info["accuracy"]["of"]
    images, labels = smith.chain.dataset.test_x[:m], smith.chain.dataset.test_y[:m]     # uint8 N x 3 x H x W
    mean = torch.tensor(norm["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(norm["std"], dtype=torch.float32).view(1, -1, 1, 1)
    with torch.no_grad():
        predicted = model((images.to(torch.float32) / 255 - mean) / std).argmax(1)
    correct = int((predicted == labels).sum())
    assert abs(correct - info["accuracy"]["correct"]) <= smith.spec.evaluation.claim_tolerance


def test_tips(static_node, smith):
    r = static_node.get("/tips")
    assert r.status_code == 200
    tips = r.json()
    active = [t for t in tips if t["status"] == "active"]
    assert len(active) == 1 and active[0]["hash"] == smith.chain.tip().hash
    assert active[0]["height"] == TEMPLATE_BLOCKS
    assert {t["status"] for t in tips} <= {"active", "valid-fork", "headers-only", "invalid"}


def test_peers(static_node):
    r = static_node.get("/peers")
    assert r.status_code == 200
    assert r.json() == []
    for url in ("ftp://x", "http://", "http://\u00f1\u00a8x", "http://a b", "http://h:99999", "http://u:p@h",
                "http://h/?q=1", "x" * 300, "http://xn--", "http://xn--a", "http://xn--zz.example"):
        assert_error(static_node.post("/peers", json={"url": url}), 422, "malformed")      # xn--: was a 500
    assert_error(static_node.post("/peers", json={"nope": 1}), 422, "malformed")


def test_metrics(static_node):
    r = static_node.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples["polchain_height"] == TEMPLATE_BLOCKS
    assert samples["polchain_peers"] == 0
    assert samples["polchain_mining_attempts_per_second"] == 0
    for name in ("polchain_blocks_accepted_total", "polchain_validation_seconds_sum",
                 "polchain_validation_seconds_count"):
        assert name in samples
    assert "# TYPE polchain_blocks_rejected_total counter" in r.text


def test_openapi(static_node):
    r = static_node.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for p in ("/status", "/health", "/spec", "/blocks", "/blocks/{ident}", "/blocks/{block_hash}/state",
              "/model", "/tips", "/peers", "/metrics"):
        assert p in paths, p
    assert "/blocks/{block_hash}/weights" not in paths
    multipart = paths["/blocks"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(multipart["properties"]) == {"header", "records"}          # no weights part
    assert set(paths["/blocks"]["post"]["requestBody"]["content"]) == {"multipart/form-data", "application/json"}


def test_unknown_route_and_method(static_node):
    assert_error(static_node.get("/nope"), 404, "not-found")
    r = static_node.client.delete("/blocks")
    assert_error(r, 405, "method-not-allowed")
    assert "GET" in r.headers.get("allow", "")            # RFC 9110: a 405 names the methods (was missing)
    assert "GET" in static_node.client.request("TRACE", "/status").headers.get("allow", "")
    # every method of the path, not only the first route's (schemathesis: OPTIONS /blocks said `Allow: GET`)
    for path, methods in (("/blocks", {"GET", "POST"}), ("/peers", {"GET", "POST"}),
                          ("/status", {"GET"})):
        r = static_node.client.request("OPTIONS", path)
        assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == methods, (path, r.headers)


# -- malformed and oversized requests ------------------------------------------------------------
@pytest.mark.parametrize("content", [b"{", b"", b"[]", b"null", b"\xff\xfe", b'{"height": 1}',
                                     json.dumps({"a": 1}).encode()])
def test_post_block_malformed_json(static_node, content):
    r = static_node.post("/blocks", content=content, headers={"content-type": "application/json"})
    assert_error(r, 422, "malformed")


def test_post_block_malformed_header_fields(static_node):
    h = static_node.get(f"/blocks/{TEMPLATE_BLOCKS}").json()["header"]
    nonces = {k: v for k, v in h.items() if k != "nonces"}
    v1 = {**nonces, "batch": [1, 2, 3, 4], "weights_hash": h["state_hash"], "acc_before": 0}   # a v1 header
    del v1["state_hash"]
    for bad in ({**h, "height": -1}, {**h, "height": "7"}, {**h, "parent": "xyz"}, {**h, "nonces": "1,2"},
                {**h, "height": 1 << 70}, {**h, "extra": 1}, {**h, "nonces": [1.5]}, {**h, "nonces": [-1]},
                {**h, "nonces": [1 << 64]}, {**h, "nonces": [0] * 257}, {**h, "state_hash": "AB" * 32},
                {**h, "miner": 5}, nonces, v1):
        assert_error(post_block(static_node, bad), 422, "malformed")


def test_post_block_malformed_multipart(static_node):
    h = static_node.get(f"/blocks/{TEMPLATE_BLOCKS}").json()["header"]
    # no header part
    r = static_node.post("/blocks", files={"records": (None, "[]")})
    assert_error(r, 422, "malformed")
    # header part not JSON
    r = static_node.post("/blocks", files={"header": (None, "{not json"), "records": (None, "[]")})
    assert_error(r, 422, "malformed")
    # records part not JSON
    r = static_node.post("/blocks", files={"header": (None, json.dumps(h)), "records": (None, "[")})
    assert_error(r, 422, "malformed")
    # a broken multipart body
    r = static_node.post("/blocks", content=b"--xx\r\ngarbage",
                         headers={"content-type": "multipart/form-data; boundary=xx"})
    assert 400 <= r.status_code < 500, r.text


def test_post_block_too_large_declared(static_node, smith):
    """413 on Content-Length alone: the body is never read (the client sends only the headers)."""
    cap = blocks_body_cap(smith.spec, 1 << 20)
    # httpx fixes Content-Length up from the real body: state the size over a raw socket instead
    with socket.create_connection(("127.0.0.1", static_node.port), timeout=10) as s:
        s.sendall(b"POST /blocks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (cap + 1))
        reply = b""
        while b'"}' not in reply:           # the status line, headers and JSON body may come in pieces
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert '"error":"too-large"' in reply


def test_post_block_too_large_streamed(static_node, smith):
    """A chunked body (no Content-Length) is cut off at the cap."""
    cap = blocks_body_cap(smith.spec, 1 << 20)

    def chunks():
        sent = 0
        while sent <= cap + (1 << 20):
            yield b"x" * (256 << 10)
            sent += 256 << 10

    r = static_node.post("/blocks", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "too-large")


def test_post_block_too_large_multipart(static_node, smith):
    h = static_node.get(f"/blocks/{TEMPLATE_BLOCKS}").json()["header"]
    big = [{"pad": "x" * blocks_body_cap(smith.spec, 1 << 20)}]
    assert_error(post_block(static_node, h, big), 413, "too-large")


def test_the_largest_block_fits_under_the_cap(static_node, smith):
    """The cap is sized for a v2 block (header + the most records, no weights): a body as large as
    the largest block is read and judged (its records do not match the header: a bad body), not 413."""
    limits = smith.spec.limits
    cap = blocks_body_cap(smith.spec, 1 << 20)
    assert limits.max_block_bytes < cap < 4 * limits.max_block_bytes
    h = static_node.get(f"/blocks/{TEMPLATE_BLOCKS}").json()["header"]
    pad = (limits.max_block_bytes - len(json.dumps(h))) // limits.max_records - 30
    records = [{"type": "model-certificate", "pad": "x" * pad}] * limits.max_records
    assert len(json.dumps(records)) + len(json.dumps(h)) >= limits.max_block_bytes
    r = post_block(static_node, h, records)
    assert r.status_code != 413, r.text
    assert r.json()["error"] != "too-large"


def test_small_cap_on_other_routes(static_node):
    assert_error(static_node.post("/peers", json={"url": "http://" + "a" * (100 << 10)}), 413, "too-large")


def test_node_still_unchanged(static_node, smith):
    """None of the requests above touched the best chain."""
    assert static_node.status()["tip"] == smith.chain.tip().hash
    body = static_node.get("/blocks").json()
    assert [b["hash"] for b in body["blocks"]] == smith.chain.store.best_hashes()
