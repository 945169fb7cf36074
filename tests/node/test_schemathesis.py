"""Property-based fuzzing of the node's REST API from its own OpenAPI document.

schemathesis (the dev extra) generates requests for every operation in /openapi.json
(boundary values, then random ones, then stateful sequences) and sends them to a
live `polchain node` process. Every check runs (no 5xx, status codes and bodies as documented, schema-
valid requests accepted, invalid ones refused, Allow headers), and one of ours: ``refusal_is_content``
(tests/node/fuzz_checks.py) reads the error code of every refusal of a schema-valid request and fails
unless it is something no schema can say (a signature that does not verify, an integer written
``1.0``). CONFIG tells schemathesis's own check which statuses those refusals have. The run is bounded by a
number of examples per operation (POLCHAIN_TEST_FUZZ_EXAMPLES, default 25) and a
fixed seed (POLCHAIN_TEST_FUZZ_SEED), so it is reproducible; raise the examples
to hunt wider.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("schemathesis")

from tests.nodeproc import REPO, patient  # noqa: E402

from .conftest import NodeProc  # noqa: E402

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`

EXAMPLES = int(os.environ.get("POLCHAIN_TEST_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("POLCHAIN_TEST_FUZZ_SEED", "20261123"))


@pytest.fixture(scope="module")
def fuzz_node(smith, tmp_path_factory):
    node = NodeProc(smith.copy_datadir(tmp_path_factory.mktemp("fuzz") / "data")).start()
    yield node
    assert node.stop() == 0, node.log_text()[-2000:]


# A block whose signature does not verify is schema-valid and refused with its reason (400; 422 for an
# integer written 1.0, which JSON Schema counts as an integer); a certificate whose signature does not
# verify is 400 (and one with an integer written 1.0). refusal_is_content holds each to its error code.
# A peer URL matching the documented pattern is taken (issue 30.5: http://0/x was 422).
CONFIG = """
[[operations]]
include-path = "/blocks"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "403", "409", "422", "429", "503"]

[[operations]]
include-path = "/certificates"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400", "403", "409", "429"]

[[operations]]
include-path = "/peers"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2XX", "403", "429"]
"""


def test_api_conforms_to_its_document(fuzz_node, smith, tmp_path):
    """Issue 20: 15 mismatches (405 without Allow, schema-valid requests refused, an undocumented 422).
    Issue 30.5: 4 more (an empty multipart header part 422, a header at height 0 400 bad-height, a
    certificate at timestamp 2^63 + 191 400 bad-record, POST /peers http://0/x 422)."""
    before = fuzz_node.status()
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    cmd = [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()", "--no-color",
           "run", f"{fuzz_node.url}/openapi.json", "--checks", "all",
           "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "2", "--request-timeout", "20"]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": "tests.node.fuzz_checks",
           "POLCHAIN_FUZZ_CHECK_RAN": str(tmp_path / "refusal_is_content.ran"),
           "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=patient(240), cwd=tmp_path, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "Server error" not in out, out[-6000:]
    assert "Custom check failed" not in out, out[-6000:]
    assert (tmp_path / "refusal_is_content.ran").exists(), "the check of tests/node/fuzz_checks.py never ran"
    # every operation in the document was exercised
    selected = re.search(r"Selected: (\d+)/(\d+)", out)
    tested = re.search(r"Tested: (\d+)", out)
    assert selected and tested, out[-3000:]
    assert int(tested.group(1)) == int(selected.group(1)) == int(selected.group(2)) >= 12, out[-3000:]

    # the node survived it all: still healthy, best chain untouched, no traceback in its log
    assert fuzz_node.get("/health").status_code == 200
    after = fuzz_node.status()
    assert (after["height"], after["tip"]) == (before["height"], before["tip"]) == (smith.chain.tip().height,
                                                                                    smith.chain.tip().hash)
    assert "Traceback" not in fuzz_node.log_text(), fuzz_node.log_text()[-4000:]


def test_document_bounds_are_exact(fuzz_node):
    """FastAPI's OpenAPI model reads bounds as floats (2^63 - 1 was published as 9.223372036854776e+18);
    the request bodies are published as the node enforces them."""
    doc = fuzz_node.get("/openapi.json").json()
    cert = doc["paths"]["/certificates"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert cert["properties"]["timestamp_ms"]["maximum"] == (1 << 63) - 1
    header = doc["paths"]["/blocks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert header["properties"]["height"]["minimum"] == 1
    assert header["properties"]["nonces"]["items"]["maximum"] == (1 << 64) - 1
    st = fuzz_node.status()
    assert header["properties"]["chain_id"]["const"] == st["chain_id"]
    multipart = doc["paths"]["/blocks"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert multipart["schema"]["properties"]["header"]["properties"] == header["properties"]
    assert multipart["encoding"]["header"]["contentType"] == "application/json"
