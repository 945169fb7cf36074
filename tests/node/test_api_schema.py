"""The published request schemas say what the handlers enforce (issue 30.5), checked without a node:
every URL the ``POST /peers`` pattern takes is one the handler takes, and the header schema of
``POST /blocks`` carries what the chain spec fixes. (tests/node/test_schemathesis.py fuzzes a live node.)"""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consensus.spec import preset
from node.api.blocks import submit_body
from node.api.peers import usable_peer_url
from node.api.schemas import PEER_URL, PeerAnnounce, submit_header_schema
from p2p.addresses import normalize_url

jsonschema_rs = pytest.importorskip("jsonschema_rs")      # comes with schemathesis (the dev extra)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.from_regex(PEER_URL, fullmatch=True).filter(lambda u: len(u) <= 256))
def test_every_url_the_pattern_takes_the_handler_takes(url):
    assert usable_peer_url(url) and normalize_url(url) is not None, url


@pytest.mark.parametrize("url, taken", [
    ("http://0/x", False),                  # issue 30.5: matched the pattern, 422 from the handler
    ("http://a.0", False), ("http://1.2.3", False), ("http://1.2.3.256", False), ("http://01.2.3.4", False),
    ("http://xn--abc", False), ("http://XN--bcher-kva.de", False), ("http://[:::]", False),
    ("http://a:0", False), ("http://a:65536", False), ("http://a:080", False), ("HTTP://a", False),
    ("http://10.0.0.2:8000", True), ("https://[::1]:8000/x/", True), ("http://[2001:db8::1]", True),
    ("http://node-a.example.:65535/p.q", True), ("http://1.2.3.4a", True), ("http://ab--cd", True),
])
def test_peer_url_pattern(url, taken):
    assert bool(re.match(PEER_URL, url)) is taken
    if taken:
        PeerAnnounce.model_validate({"url": url})
        assert usable_peer_url(url) and normalize_url(url)
    else:
        with pytest.raises(ValidationError):
            PeerAnnounce.model_validate({"url": url})


def test_header_schema_says_what_the_spec_fixes():
    spec = preset("tiny")
    schema = submit_header_schema(spec)
    props = schema["properties"]
    assert props["version"]["const"] == spec.header_version and props["chain_id"]["const"] == spec.chain_id
    assert props["height"]["minimum"] == 1                     # issue 30.5: height 0 was 400 bad-height
    assert (props["difficulty"]["minimum"], props["difficulty"]["maximum"]) == (spec.difficulty.minimum,
                                                                               spec.difficulty.maximum)
    assert props["acc_after"]["maximum"] == spec.evaluation.size
    assert (props["nonces"]["minItems"], props["nonces"]["maxItems"]) == (1, spec.proof.max_advance_steps + 1)
    assert props["nonces"]["items"] == {"type": "integer", "minimum": 0, "maximum": (1 << 64) - 1}
    assert schema["additionalProperties"] is False
    header = {"version": spec.header_version, "chain_id": spec.chain_id, "height": 1, "parent": "0" * 64,
              "timestamp_ms": 1, "difficulty": spec.difficulty.minimum, "miner": "a" * 64, "nonces": [0],
              "state_hash": "0" * 64, "acc_after": 0, "records_root": "0" * 64, "ticket": 0, "signature": "b" * 128}
    valid = jsonschema_rs.validator_for(schema).is_valid
    assert valid(header)
    assert not valid({**header, "height": 0}) and not valid({**header, "nonces": []})
    assert not valid({**header, "extra": 1}) and not valid({**header, "version": spec.header_version + 1})


def test_multipart_header_part_is_a_json_header():
    """Issue 30.5: an empty ``header`` part was schema-valid (a string) and 422 at the node."""
    body = submit_body(preset("tiny"))["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["header"]["type"] == "object"
    assert body["encoding"]["header"]["contentType"] == "application/json"
    assert body["schema"]["additionalProperties"] is False
