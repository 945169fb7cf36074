"""A schemathesis check the API fuzz test loads (``SCHEMATHESIS_HOOKS=tests.node.fuzz_checks``).

``refusal_is_content``: a schema-valid request may be refused only for what no JSON schema can say about
it. Every 422 of a schema-valid request is a mismatch (the document should have described that shape),
and so is every 400 except:

* a signature that does not verify, or (v4) an admission ticket that does not hold (``CONTENT``): what the
  document cannot describe about a well-formed block or certificate, and the first rules a fuzzer's block or
  certificate meets (a fuzzer's all-zero key and signature verify for about one message in four: the
  all-zero key is a point of small order, which Ed25519 as OpenSSL implements it does not refuse);
* a body holding an integral float (``1.0``): JSON Schema counts it as an integer, the node takes
  integers written as integers only (canonical JSON: hashes and signatures are over it).

The node's state (403 banned, 404 unknown, 409 known, 429, 503 busy) is never a mismatch, and neither
is a body the document's schema does not take when read exactly (``schema_valid``: schemathesis loads
the document's integers as floats, so its "near the maximum" of 2^63 - 1 is 2^63 - 1 + 192).
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import httpx
import jsonschema_rs
import schemathesis

# (method, path) -> {(status, error code, detail)}
CONTENT = {
    ("POST", "/blocks"): {(400, "bad-signature", "Ed25519 signature does not verify"),
                          (400, "bad-ticket", "the ticket does not give 8 leading zero bits")},
    ("POST", "/certificates"): {(400, "bad-record", "certificate signature does not verify")},
}


def has_integral_float(value) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(has_integral_float(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_integral_float(v) for v in value)
    return False


@functools.cache
def document(base_url: str) -> dict:
    """The node's OpenAPI document, its integers read as integers."""
    return httpx.get(base_url.rstrip("/") + "/openapi.json", timeout=30).raise_for_status().json()


def schema_valid(case) -> bool:
    """Whether ``case.body`` is valid for its operation's request body schema, read exactly; True when the
    operation has no request body."""
    doc = document(case.operation.base_url)
    op = doc["paths"][case.operation.path][case.method.lower()]
    body = op.get("requestBody", {}).get("content", {}).get(case.media_type)
    if body is None:
        return True
    return jsonschema_rs.validator_for({**body["schema"], "components": doc.get("components", {})}).is_valid(
        case.body)


@schemathesis.check
def refusal_is_content(ctx, response, case) -> None:
    if os.environ.get("POLCHAIN_FUZZ_CHECK_RAN"):          # the test asks whether this check was loaded
        Path(os.environ["POLCHAIN_FUZZ_CHECK_RAN"]).touch()
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        body = {}
    got = (response.status_code, body.get("error"), body.get("detail"))
    if got in CONTENT.get((case.method.upper(), case.operation.path), set()) or has_integral_float(case.body):
        return
    if not schema_valid(case):
        return
    raise AssertionError(f"schema-valid request refused for something the document could say: "
                         f"{got[0]} {got[1]}: {got[2]}")
