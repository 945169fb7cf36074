"""Model certificates end to end: a proof registered at a non-mining node ends up
in a block on every node of a 3-node line (only the far end mines)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pol.proof import proof_summary
from tests.nodeproc import REPO, NodeGroup, node_env, wait_for
from tests.chain_spec import TINY_TEST_ARGS

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`


@pytest.fixture
def group(tmp_path):
    g = NodeGroup(tmp_path / "nodes", (*TINY_TEST_ARGS, "--poll-interval", "0.5"))
    yield g
    g.close()


def test_registered_certificate_reaches_every_node(tmp_path, group):
    proof = tmp_path / "proof"
    subprocess.run([sys.executable, "-m", "node.cli", "pol", "demo", "--out", str(proof), "--steps", "16",
                    "--every", "4"], check=True, cwd=REPO, env=node_env(), capture_output=True, timeout=120)
    model_hash = proof_summary(proof)["model_hash"]

    a = group.add("a", "--mine")
    b = group.add("b", peers=(a,))
    c = group.add("c", peers=(b,))
    group.start_all([a, b, c])
    a.wait_height(1, timeout=90)

    reg = subprocess.run([sys.executable, "-m", "node.cli", "pol", "register", str(proof), "--node", c.url,
                          "--key", str(tmp_path / "owner.key"), "--create-key", "--meta", "name=demo"],
                         cwd=REPO, env=node_env(), capture_output=True, text=True, timeout=60)
    assert reg.returncode == 0, reg.stderr
    info = json.loads(reg.stdout.strip().splitlines()[-1])
    assert info["model_hash"] == model_hash

    def on_chain(node):
        r = node.get(f"/certificates/{model_hash}")
        return r.status_code == 200 and r.json()["certificates"]

    for node in (a, b, c):
        wait_for(lambda: on_chain(node), timeout=120, what=f"certificate on {node}")
    certs = [node.get(f"/certificates/{model_hash}").json()["certificates"] for node in (a, b, c)]
    assert certs[0] == certs[1] == certs[2]
    rec = certs[0][0]["record"]
    assert rec["owner"] == info["owner"] and rec["proof_root"] == info["proof_root"]
    assert rec["metadata"]["name"] == "demo"
    block = a.block(certs[0][0]["block"])
    assert rec in block["records"]

    # a forged certificate (owner's signature over other fields) is refused with its reason
    forged = dict(rec, model_hash="ab" * 32)
    r = c.post("/certificates", json=forged)
    assert r.status_code == 400 and r.json()["error"] == "bad-record"
    assert c.get("/certificates/" + "ab" * 32).status_code == 404


def _register(proof, node, key, *extra):
    return subprocess.run([sys.executable, "-m", "node.cli", "pol", "register", str(proof), "--node", node.url,
                           "--key", str(key), "--create-key", *extra], cwd=REPO, env=node_env(), capture_output=True, text=True,
                          timeout=120)


def test_register_refuses_rejected_proofs_and_registers_once(tmp_path, group):
    """Issue 15: `pol register` certified a proof `pol verify` rejects, and the same proof and key
    registered again added a certificate each time."""
    import shutil

    import torch

    from consensus.certificates import make_certificate
    from node.keys import load_key
    from tests.pol.util import edit_tensors, reseal

    proof = tmp_path / "proof"
    subprocess.run([sys.executable, "-m", "node.cli", "pol", "demo", "--out", str(proof), "--steps", "16",
                    "--every", "4"], check=True, cwd=REPO, env=node_env(), capture_output=True, timeout=120)
    node = group.start("solo")
    key = tmp_path / "owner.key"

    tampered = tmp_path / "tampered"
    shutil.copytree(proof, tampered)
    name = "ckpt_000008.safetensors"
    edit_tensors(tampered, name, lambda t: [v.add_(torch.full_like(v, 0.05)) for k, v in t.items()
                                            if k.startswith("model.") and v.is_floating_point()])
    bad_hash = reseal(tampered)["model_hash"]
    verify = subprocess.run([sys.executable, "-m", "node.cli", "pol", "verify", str(tampered)], cwd=REPO,
                            env=node_env(), capture_output=True, text=True, timeout=120)
    assert verify.returncode == 1, verify.stdout
    r = _register(tampered, node, key)
    assert r.returncode == 1 and "`pol verify` rejects this proof" in r.stderr, r.stderr
    assert node.get(f"/certificates/{bad_hash}").status_code == 404

    first = _register(proof, node, key)
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout.strip().splitlines()[-1])
    again = _register(proof, node, key)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["node_status"] == "already-registered" and second["id"] == info["id"]
    # issue 21.10: at the default INFO level httpx printed a line per request, "404 Not Found" among them
    assert "HTTP Request" not in first.stderr + again.stderr, first.stderr
    listed = node.get(f"/certificates/{info['model_hash']}").json()
    assert len(listed["pending"]) + len(listed["certificates"]) == 1

    # the node itself refuses a second certificate for the same owner, model and proof (new signature)
    cert = make_certificate(load_key(key), info["model_hash"], info["proof_root"], {}, 12345)
    r = node.post("/certificates", json=cert.body)
    assert r.status_code == 409 and r.json()["error"] == "duplicate" and r.json()["id"] == info["id"]
    listed = node.get(f"/certificates/{info['model_hash']}").json()
    assert len(listed["pending"]) + len(listed["certificates"]) == 1
