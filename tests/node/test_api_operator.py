"""What an operator reads from the API (issue 15, first hour): /status, /metrics, /model/info,
/blocks newest first, errors without Python reprs, an OpenAPI document that matches the answers,
and /docs that works offline. Over real HTTP against a `polchain node` process."""
from __future__ import annotations

import re
import time

import pytest

from .conftest import TEMPLATE_BLOCKS
from .test_api import assert_error

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def test_status_has_age_key_and_sync(static_node, smith):
    st = static_node.status()
    tip = smith.chain.tip()
    want_age = time.time() - tip.header.timestamp_ms / 1000
    assert abs(st["last_block_age_s"] - want_age) < 30
    assert HEX64.match(st["miner_key"])
    assert st["sync"] == {"height": None, "target": None, "peer": None, "best_peer_height": None}
    assert st["mining"]["current"] is None       # not mining


def test_blocks_newest_first(static_node, smith):
    body = static_node.get("/blocks", params={"order": "desc", "limit": 3}).json()
    assert [b["height"] for b in body["blocks"]] == [TEMPLATE_BLOCKS, TEMPLATE_BLOCKS - 1, TEMPLATE_BLOCKS - 2]
    assert body["blocks"][0]["hash"] == smith.chain.tip().hash
    seen, start = [], None
    while True:                                   # paging down to genesis
        page = static_node.get("/blocks", params={"order": "desc", "limit": 4,
                                                  **({"start": start} if start is not None else {})}).json()
        seen += [b["height"] for b in page["blocks"]]
        start = page["next_start"]
        if start is None:
            break
    assert seen == list(range(TEMPLATE_BLOCKS, -1, -1))
    assert [b["height"] for b in static_node.get("/blocks", params={"order": "desc", "start": 2}).json()["blocks"]] \
        == [2, 1, 0]
    assert_error(static_node.get("/blocks", params={"order": "sideways"}), 422, "malformed")


def test_validation_errors_are_sentences_not_reprs(static_node):
    body = assert_error(static_node.get("/blocks", params={"start": -5}), 422, "malformed")
    assert body["detail"] == "query.start: Input should be greater than or equal to 0"
    for bad in (static_node.get("/blocks", params={"limit": "x"}), static_node.get("/blocks/not-a-block"),
                static_node.post("/peers", json={"url": 5})):
        detail = assert_error(bad, 422, "malformed")["detail"]
        assert "{'" not in detail and "('" not in detail and "[{" not in detail, detail


@pytest.mark.parametrize("content,ctype", [(b"hello", "text/plain"), (b"{bad", "application/json"),
                                           (b'{"url":"\xff"}', "application/json")])
def test_non_json_post_peers_is_malformed(static_node, content, ctype):
    assert_error(static_node.post("/peers", content=content, headers={"content-type": ctype}), 422, "malformed")


def test_path_parameters_are_typed(static_node):
    doc = static_node.get("/openapi.json").json()
    ident = doc["paths"]["/blocks/{ident}"]["get"]["parameters"][0]
    assert ident["in"] == "path" and re.fullmatch(ident["schema"]["pattern"], "12")
    assert re.fullmatch(ident["schema"]["pattern"], "ab" * 32) and not re.fullmatch(ident["schema"]["pattern"], "x1")
    cert = doc["paths"]["/certificates/{model_hash}"]["get"]["parameters"][0]
    assert cert["schema"]["pattern"] == "^[0-9a-f]{64}$"
    assert_error(static_node.get("/certificates/" + "AB" * 32), 422, "malformed")
    assert_error(static_node.get("/blocks/" + "0" * 19), 422, "malformed")


def test_openapi_error_schema_matches_answers(static_node):
    doc = static_node.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and set(schemas["ErrorOut"]["properties"]) == {"error", "detail"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("description") or op.get("summary"), (method, path)
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}
    # the 422 the document promises is the 422 the node sends
    body = static_node.get("/blocks", params={"limit": 0}).json()
    assert set(body) == set(schemas["ErrorOut"]["properties"])
    cert_body = doc["paths"]["/certificates"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"owner", "model_hash", "proof_root", "signature"} <= set(cert_body["required"])


def test_docs_work_offline(static_node):
    html = static_node.get("/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/") for a in assets), assets       # nothing from a CDN
    for a in assets:
        r = static_node.get(a)
        assert r.status_code == 200 and len(r.content) > 1000, a
    assert "cdn" not in html.lower()
    redoc = static_node.get("/redoc").text
    assert "fonts.googleapis" not in redoc and "cdn" not in redoc.lower()


def test_model_info(static_node, smith):
    info = static_node.get("/model/info").json()
    tip = smith.chain.tip()
    assert info["height"] == tip.height and info["block"] == tip.hash
    assert info["chain_id"] == smith.spec.chain_id and info["architecture"] == smith.spec.model.arch
    assert info["format"] == "safetensors" and "load_state_dict" in info["load"]
    r = static_node.get("/model")
    assert r.headers["x-polchain-chain-id"] == smith.spec.chain_id
    assert r.headers["x-polchain-architecture"] == info["architecture"]
    # the line it gives loads the served file into the architecture it names
    from safetensors.torch import load as st_load

    from consensus.model import build_model
    model = build_model(info["architecture"], info["num_classes"])
    model.load_state_dict(st_load(r.content))
    assert {k: list(v.shape) for k, v in st_load(r.content).items()} == info["tensors"]


def test_metrics_gauges(static_node, smith):
    text = static_node.get("/metrics").text
    values = dict(line.split() for line in text.splitlines() if line and not line.startswith("#"))
    tip = smith.chain.tip()
    assert float(values["polchain_tip_correct"]) == tip.header.acc_after
    assert abs(float(values["polchain_tip_accuracy"]) - tip.header.acc_after / smith.spec.evaluation.size) < 1e-6
    assert int(values["polchain_difficulty"]) == static_node.status()["difficulty"]
    assert values["polchain_syncing"] == "0"
    assert int(values["polchain_sync_target_height"]) == tip.height
    assert float(values["polchain_last_block_age_seconds"]) > 0
    assert "# TYPE polchain_tip_accuracy gauge" in text
