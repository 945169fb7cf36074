"""POST /blocks against a real node: tampered blocks are refused with the right reason
code and leave the node's tip and best chain as they were; valid blocks are accepted.

Blocks are built in-process on the same chain (``BlockSmith``: the fast miner through
``node.mining.mine_on_tip``), tampered with, and re-signed with the smith's key. A v2 block
is its header and records: records that do not match the header's records_root are a bad
body (the header stays unjudged), everything the signer vouched for is judged.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import httpx
import pytest

from consensus.weights import weights_hash
from safetensors.torch import load as st_load

from tests.nodeproc import patient

from .conftest import TEMPLATE_BLOCKS, certificate, post_block
from .test_api import assert_error


@pytest.fixture(scope="module")
def candidate(smith):
    """A valid block at height TEMPLATE_BLOCKS + 1 (no records) that the static node has never seen."""
    return smith.next_block(submit=False)


@pytest.fixture(scope="module")
def candidate_cases(smith, candidate):
    return {c[0]: c[1:] for c in tampered_cases(smith, candidate.header)}


def snapshot(node) -> tuple:
    st = node.status()
    listing = node.get("/blocks").json()
    return st["height"], st["tip"], st["cumulative_work"], [(b["hash"], b["status"]) for b in listing["blocks"]]


def resign(smith, header, **changes):
    return smith.resign(header, **changes)


def failing_nonces(smith, header) -> tuple[int, ...]:
    """The header's nonces with the winning one replaced so that R fails (checked locally: about
    2^-k of all nonces derive a batch that meets R, so an arbitrary one could still be a proof)."""
    from consensus import errors
    from consensus.validation import check_requirements

    parent = smith.chain.store.get(header.parent).header
    parent_state = smith.chain.load_weights(parent.state_hash)
    for nonce in range(1000):
        nonces = (*header.nonces[:-1], nonce)
        if nonces == header.nonces:
            continue
        try:
            check_requirements(replace(header, nonces=nonces), parent, parent_state, smith.chain.replayer, smith.spec)
        except errors.RequirementsNotMet:
            return nonces
    raise AssertionError("no failing nonce found")


def tampered_cases(smith, header):
    """(name, header, records, expected HTTP status, accepted reason codes)."""
    wrong_k = header.difficulty + 1 if header.difficulty < smith.spec.difficulty.maximum else header.difficulty - 1
    sig = bytearray(bytes.fromhex(header.signature))
    sig[0] ^= 1
    most = smith.spec.proof.max_advance_steps + 1
    return [
        # proof rules: re-signed headers whose proof no longer holds
        ("winning-nonce", resign(smith, header, nonces=failing_nonces(smith, header)), [], 400,
         {"requirements-not-met"}),
        ("state-hash", resign(smith, header, state_hash="33" * 32), [], 400, {"state-mismatch"}),
        ("accuracy-claim", resign(smith, header, acc_after=min(header.acc_after + 40, smith.spec.evaluation.size)),
         [], 400, {"bad-accuracy-claim"}),
        ("no-nonces", resign(smith, header, nonces=()), [], 400, {"bad-nonces"}),
        ("too-many-nonces", resign(smith, header, nonces=tuple(range(most + 1))), [], 400, {"bad-nonces"}),
        # body: records that do not match the header's records_root (header stays unjudged)
        ("records-swapped", header, [certificate(0).body], 400, {"records-mismatch"}),
        ("records-junk", header, [{"type": "junk"}], 400, {"records-mismatch"}),
        ("records-root", resign(smith, header, records_root="11" * 32), [], 400, {"records-mismatch"}),
        # header rules
        ("signature", replace(header, signature=bytes(sig).hex()), [], 400, {"bad-signature"}),
        ("unsigned-change", replace(header, acc_after=max(header.acc_after - 1, 0)), [], 400, {"bad-signature"}),
        ("unsigned-nonces", replace(header, nonces=(*header.nonces[:-1], header.nonces[-1] ^ 1)), [], 400,
         {"bad-signature"}),
        ("foreign-key", replace(header, miner="00" * 32), [], 400, {"bad-signature"}),
        ("short-key", replace(header, miner="zz"), [], 400, {"bad-signature"}),
        ("no-signature", replace(header, signature=""), [], 400, {"bad-signature"}),
        ("difficulty", resign(smith, header, difficulty=wrong_k), [], 400, {"bad-difficulty"}),
        ("height", resign(smith, header, height=header.height + 1), [], 400, {"bad-height"}),
        ("chain-id", resign(smith, header, chain_id="ab" * 32), [], 400, {"bad-chain-id"}),
        ("version", resign(smith, header, version=header.version + 1), [], 400, {"bad-version"}),
        ("version-1", resign(smith, header, version=1), [], 400, {"bad-version"}),
        ("time-too-old", resign(smith, header, timestamp_ms=smith.spec.time.genesis_timestamp_ms), [], 400,
         {"time-too-old"}),
        # not judged yet: 202
        ("time-too-new", resign(smith, header, timestamp_ms=int(time.time() * 1000) + 3_600_000), [], 202,
         {"ignored"}),
        ("unknown-parent", resign(smith, header, parent="22" * 32), [], 202, {"orphan"}),
    ]


CASES = ["winning-nonce", "state-hash", "accuracy-claim", "no-nonces", "too-many-nonces", "records-swapped",
         "records-junk", "records-root", "signature", "unsigned-change", "unsigned-nonces", "foreign-key",
         "short-key", "no-signature", "difficulty", "height", "chain-id", "version", "version-1", "time-too-old",
         "time-too-new", "unknown-parent"]
BAD_BODY = ("records-mismatch",)
UNPAID = ("bad-signature", "bad-ticket")     # refused before any lane: nothing of them is stored (v4)


def test_cases_cover_the_list(candidate_cases):
    assert sorted(candidate_cases) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_tampered_block_refused(static_node, candidate, candidate_cases, case):
    header = candidate.header
    bad_header, records, status, codes = candidate_cases[case]
    before = snapshot(static_node)
    r = post_block(static_node, bad_header, records)
    assert r.status_code == status, (case, r.status_code, r.text)
    got = r.json()
    if status >= 400:
        assert got["error"] in codes, (case, got)
        assert got["hash"] == bad_header.hash
    else:
        assert got["status"] in codes, (case, got)
        assert got["code"] == case, (case, got)          # 202: the machine-readable reason (here: the case)
    assert snapshot(static_node) == before, case
    # a provably invalid block is stored as such, with its reason; a bad body leaves the header unjudged
    stored = static_node.get(f"/blocks/{bad_header.hash}")
    if status == 400 and got["error"] in UNPAID:
        assert stored.status_code == 404
    elif status == 400 and got["error"] not in BAD_BODY:
        assert stored.status_code == 200
        assert stored.json()["status"] == "invalid" and stored.json()["reason"] == got["error"]
        assert stored.json()["in_best_chain"] is False
        assert_error(static_node.get(f"/blocks/{bad_header.hash}/state"), 404, "pruned")   # no state served
    else:
        assert_error(stored, 404, "not-found")
    # and the genuine block was never marked invalid by any of this
    genuine = static_node.get(f"/blocks/{header.hash}")
    assert genuine.status_code == 404 or genuine.json()["status"] != "invalid"


def test_rejections_counted_in_metrics_and_tips(static_node, smith, candidate):
    bad = resign(smith, candidate.header, acc_after=min(candidate.header.acc_after + 41, smith.spec.evaluation.size))
    assert post_block(static_node, bad, []).status_code == 400
    text = static_node.get("/metrics").text
    assert 'polchain_blocks_rejected_total{reason="bad-accuracy-claim"}' in text
    tips = static_node.get("/tips").json()
    assert any(t["hash"] == bad.hash and t["status"] == "invalid" for t in tips)
    assert [t["status"] for t in tips].count("active") == 1


def test_garbage_records_do_not_condemn_a_valid_header(static_node, candidate):
    """Records that do not parse are a bad body: the header (which commits only to their root)
    must not be marked invalid, or anyone could kill a block by relaying it with junk records."""
    header = candidate.header
    r = post_block(static_node, header, [{"type": "junk"}])
    assert_error(r, 400, "records-mismatch")
    stored = static_node.get(f"/blocks/{header.hash}")
    assert stored.status_code == 404 or stored.json()["status"] != "invalid", stored.json()


# -- the accepting path, on a node of its own ---------------------------------------------------
@pytest.fixture(scope="module")
def side(smith, tmp_path_factory):
    """A private continuation of the template chain, mined in-process block by block."""
    s = smith.fork(tmp_path_factory.mktemp("side") / "chain", seed=5)
    yield s
    s.chain.store.close()


@pytest.fixture(scope="module")
def submit_node(smith, tmp_path_factory):
    from .conftest import NodeProc

    node = NodeProc(smith.copy_datadir(tmp_path_factory.mktemp("submit") / "data")).start()
    yield node
    assert node.stop() == 0


def test_accept_flow(submit_node, side):
    """A block carrying a certificate: without its records, or with other records, it is a bad body
    and nothing is stored; with its records it is validated from the parent's post-state, becomes the
    tip, and its post-state and certificate are served."""
    node = submit_node
    height = node.status()["height"]
    assert side.chain.tip().height == height
    cert = certificate(1)
    built = side.next_block(submit=True, records=(cert,))
    header = built.header
    assert built.records == [cert.body] and header.height == height + 1
    before = snapshot(node)

    # the header alone is this block without its records: a bad body, the header stays unjudged
    assert_error(post_block(node, header), 400, "records-mismatch")
    assert_error(post_block(node, header, [certificate(2).body]), 400, "records-mismatch")
    assert_error(node.get(f"/blocks/{header.hash}"), 404, "not-found")
    assert snapshot(node) == before

    # the real records: accepted, new tip
    r = post_block(node, header, built.records)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    st = node.status()
    assert st["height"] == height + 1 and st["tip"] == header.hash
    got = node.get(f"/blocks/{header.hash}").json()
    assert got["status"] == "valid" and got["in_best_chain"] and got["header"] == header.to_dict()
    assert got["records"] == built.records
    assert got["accuracy"]["measured_after"] == header.acc_after      # one canonical evaluation of W'
    assert got["peer"] == "127.0.0.1"
    state = node.get(f"/blocks/{header.hash}/state")
    assert state.status_code == 200 and weights_hash(st_load(state.content)) == header.state_hash
    assert weights_hash(built.state) == header.state_hash
    certs = node.get(f"/certificates/{cert.body['model_hash']}").json()["certificates"]
    assert [(c["block"], c["record"]) for c in certs] == [(header.hash, cert.body)]
    assert [t["status"] for t in node.get("/tips").json()] == ["active"]
    assert "polchain_blocks_accepted_total 1" in node.get("/metrics").text

    # again: 409 known, with or without records
    assert_error(post_block(node, header, built.records), 409, "duplicate")
    assert_error(post_block(node, header), 409, "duplicate")


def test_orphan_connects_when_parent_arrives(submit_node, side):
    node = submit_node
    height = node.status()["height"]
    a, b = side.block_at(height + 1), side.block_at(height + 2)
    r = post_block(node, b.header, b.records)
    assert r.status_code == 202 and r.json()["status"] == "orphan", r.text
    assert r.json()["code"] == "unknown-parent", r.text
    assert node.status()["height"] == height
    r = post_block(node, a.header, a.records)
    assert r.status_code == 200, r.text
    st = node.status()
    assert st["height"] == height + 2 and st["tip"] == b.header.hash


def test_invalid_parent_propagates(submit_node, side):
    """A child of an invalid block is refused as bad-parent."""
    node = submit_node
    height = node.status()["height"]
    a, b = side.block_at(height + 1), side.block_at(height + 2)
    bad_a = resign(side, a.header, acc_after=min(a.header.acc_after + 40, side.spec.evaluation.size))
    assert_error(post_block(node, bad_a, a.records), 400, "bad-accuracy-claim")
    bad_b = resign(side, b.header, parent=bad_a.hash)
    assert_error(post_block(node, bad_b, b.records), 400, "bad-parent")
    assert node.status()["height"] == height
    assert node.get(f"/blocks/{bad_b.hash}").json()["reason"] == "bad-parent"
    # the genuine blocks still go in
    assert post_block(node, a.header, a.records).status_code == 200
    assert post_block(node, b.header, b.records).status_code == 200
    assert node.status()["tip"] == b.header.hash


# -- validation runs off the event loop -------------------------------------------------------------
def test_api_answers_while_a_block_validates(smith, tmp_path, candidate, monkeypatch):
    """A real uvicorn server (in this process, so validation can be held): /status answers while
    POST /blocks is busy validating. The validation is held until the test has its three answers, so the
    claim does not depend on how fast a loaded machine answers (it once was a 6 s sleep and a 4 s bound)."""
    import uvicorn

    from node.app import create_app
    from node.service import NodeService
    from node.settings import Settings

    from .conftest import free_port

    port = free_port()
    datadir = smith.copy_datadir(tmp_path / "data")
    monkeypatch.setattr("consensus.data.load_dataset", lambda *a, **kw: smith.chain.dataset)   # open_chain's
    service = NodeService(Settings(datadir=datadir, port=port, threads=1))
    real_submit = service.chain.submit
    validating, release = threading.Event(), threading.Event()

    def slow_submit(*a, **kw):
        validating.set()
        release.wait(patient(120))       # held until /status has answered three times (bounded)
        return real_submit(*a, **kw)

    service.chain.submit = slow_submit
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + patient(60)
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        result = {}

        def post():
            with httpx.Client(base_url=url, timeout=patient(60)) as c:
                result["r"] = post_block(c, candidate.header, candidate.records)

        poster = threading.Thread(target=post)
        poster.start()
        assert validating.wait(patient(60))
        latencies = []
        for _ in range(3):
            t0 = time.monotonic()
            r = httpx.get(url + "/status", timeout=patient(30))
            latencies.append(time.monotonic() - t0)
            assert r.status_code == 200 and r.json()["height"] == TEMPLATE_BLOCKS
        # answered while the validation was held: the event loop is not blocked behind it
        assert not release.is_set() and poster.is_alive(), "the submission should still be validating"
        release.set()
        print(f"FIGURES /status answered in {max(latencies):.3f} s at most while a block validated")
        poster.join(patient(60))
        assert result["r"].status_code == 200, result["r"].text
        assert httpx.get(url + "/status").json()["height"] == TEMPLATE_BLOCKS + 1
    finally:
        release.set()
        server.should_exit = True
        t.join(15)
