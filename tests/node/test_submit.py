"""POST /blocks against a real node: tampered blocks are refused with the right reason
code and leave the node's tip and best chain as they were; valid blocks are accepted.

Blocks are built in-process on the same chain (``BlockSmith``: the fast miner, then
``miner.template.build_block``), tampered with, and re-signed with the smith's key.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import httpx
import pytest
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .conftest import TEMPLATE_BLOCKS, post_block
from .test_api import assert_error


@pytest.fixture(scope="module")
def candidate(smith):
    """A valid block at height TEMPLATE_BLOCKS + 1 that the static node has never seen."""
    return smith.next_block(submit=False)


@pytest.fixture(scope="module")
def candidate_cases(smith, candidate):
    return {c[0]: c[1:] for c in tampered_cases(smith, *candidate)}


def snapshot(node) -> tuple:
    st = node.status()
    listing = node.get("/blocks").json()
    return st["height"], st["tip"], st["cumulative_work"], [(b["hash"], b["status"]) for b in listing["blocks"]]


def flip_one_weight(body: bytes) -> bytes:
    state = st_load(body)
    name = next(n for n, t in state.items() if t.is_floating_point() and t.numel())
    t = state[name].clone()
    t.view(-1)[0] += 0.125
    state[name] = t
    return st_save(state)


def resign(smith, header, **changes):
    return replace(header, **changes).signed(smith.key)


def failing_batch(smith, header, body) -> tuple[int, ...]:
    """P with one index replaced so that R fails (checked locally: about 2^-k of all
    batches meet R, so an arbitrary replacement could still be a valid proof)."""
    from consensus import errors
    from consensus.validation import check_requirements
    from consensus.weights import decode_state

    parent = smith.chain.store.get(header.parent).header
    w = decode_state(body)
    p = list(header.batch)
    for other in range(smith.spec.dataset.train_size):
        if other in p:
            continue
        batch = (other, *p[1:])
        try:
            check_requirements(replace(header, batch=batch), parent, smith.chain.replayer, w)
        except errors.RequirementsNotMet:
            return batch
    raise AssertionError("no failing batch found")


def tampered_cases(smith, header, body):
    """(name, header, body, expected HTTP status, accepted reason codes)."""
    p = list(header.batch)
    wrong_k = header.difficulty + 1 if header.difficulty < smith.spec.difficulty.maximum else header.difficulty - 1
    sig = bytearray(bytes.fromhex(header.signature))
    sig[0] ^= 1
    return [
        # proof rules: a re-signed header whose batch no longer moves W the required way
        ("batch-index", resign(smith, header, batch=failing_batch(smith, header, body)), body, 400,
         {"requirements-not-met"}),
        ("accuracy-claim", resign(smith, header, acc_after=min(header.acc_after + 40, smith.spec.evaluation.size)),
         body, 400, {"bad-accuracy-claim"}),
        # body: weights that do not hash to the header's weights_hash (header stays unjudged)
        ("weights", header, flip_one_weight(body), 400, {"weights-mismatch"}),
        ("weights-truncated", header, body[: len(body) // 2], 400, {"malformed-weights"}),
        ("weights-garbage", header, b"\x00" * 64, 400, {"malformed-weights"}),
        # header rules
        ("signature", replace(header, signature=bytes(sig).hex()), body, 400, {"bad-signature"}),
        ("unsigned-change", replace(header, acc_before=max(header.acc_before - 1, 0)), body, 400, {"bad-signature"}),
        ("foreign-key", replace(header, miner="00" * 32), body, 400, {"bad-signature"}),
        ("short-key", replace(header, miner="zz"), body, 400, {"bad-signature"}),
        ("no-signature", replace(header, signature=""), body, 400, {"bad-signature"}),
        ("difficulty", resign(smith, header, difficulty=wrong_k), body, 400, {"bad-difficulty"}),
        ("height", resign(smith, header, height=header.height + 1), body, 400, {"bad-height"}),
        ("chain-id", resign(smith, header, chain_id="ab" * 32), body, 400, {"bad-chain-id"}),
        ("version", resign(smith, header, version=header.version + 1), body, 400, {"bad-version"}),
        ("repeat-index", resign(smith, header, batch=(p[0], p[0], *p[2:])), body, 400, {"bad-batch-indices"}),
        ("index-range", resign(smith, header, batch=(smith.spec.dataset.train_size, *p[1:])), body, 400,
         {"bad-batch-indices"}),
        ("batch-size", resign(smith, header, batch=tuple(p[:-1])), body, 400, {"bad-batch-indices"}),
        ("time-too-old", resign(smith, header, timestamp_ms=smith.spec.time.genesis_timestamp_ms), body, 400,
         {"time-too-old"}),
        ("records-root", resign(smith, header, records_root="11" * 32), body, 400, {"records-mismatch"}),
        # not judged yet: 202
        ("time-too-new", resign(smith, header, timestamp_ms=int(time.time() * 1000) + 3_600_000), body, 202,
         {"ignored"}),
        ("unknown-parent", resign(smith, header, parent="22" * 32), body, 202, {"orphan"}),
    ]


CASES = ["batch-index", "accuracy-claim", "weights", "weights-truncated", "weights-garbage", "signature",
         "unsigned-change", "foreign-key", "short-key", "no-signature", "difficulty", "height", "chain-id", "version",
         "repeat-index", "index-range", "batch-size", "time-too-old", "records-root", "time-too-new",
         "unknown-parent"]


@pytest.mark.parametrize("case", CASES)
def test_tampered_block_refused(static_node, candidate, candidate_cases, case):
    header, body = candidate
    bad_header, bad_body, status, codes = candidate_cases[case]
    before = snapshot(static_node)
    r = post_block(static_node, bad_header, bad_body)
    assert r.status_code == status, (case, r.status_code, r.text)
    got = r.json()
    if status >= 400:
        assert got["error"] in codes, (case, got)
        assert got["hash"] == bad_header.hash
    else:
        assert got["status"] in codes, (case, got)
    assert snapshot(static_node) == before, case
    # a provably invalid block is stored as such, with its reason; a bad body leaves the header unjudged
    stored = static_node.get(f"/blocks/{bad_header.hash}")
    if status == 400 and got["error"] not in ("weights-mismatch", "malformed-weights", "records-mismatch"):
        assert stored.status_code == 200
        assert stored.json()["status"] == "invalid" and stored.json()["reason"] == got["error"]
        assert stored.json()["in_best_chain"] is False
    else:
        assert_error(stored, 404, "not-found")
    # and the genuine block was never marked invalid by any of this
    genuine = static_node.get(f"/blocks/{header.hash}")
    assert genuine.status_code == 404 or genuine.json()["status"] != "invalid"


def test_rejections_counted_in_metrics_and_tips(static_node, smith, candidate):
    header, body = candidate
    bad = resign(smith, header, acc_after=min(header.acc_after + 41, smith.spec.evaluation.size))
    assert post_block(static_node, bad, body).status_code == 400
    text = static_node.get("/metrics").text
    assert 'polchain_blocks_rejected_total{reason="bad-accuracy-claim"}' in text
    tips = static_node.get("/tips").json()
    assert any(t["hash"] == bad.hash and t["status"] == "invalid" for t in tips)
    assert [t["status"] for t in tips].count("active") == 1


def test_garbage_records_do_not_condemn_a_valid_header(static_node, candidate):
    """Records that do not parse are a bad body: the header (which commits only to their root)
    must not be marked invalid, or anyone could kill a block by relaying it with junk records."""
    header, body = candidate
    r = post_block(static_node, header, body, records=[{"type": "junk"}])
    assert r.status_code == 400, r.text
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
    node = submit_node
    height = node.status()["height"]
    header, body = side.block_at(height + 1)
    before = snapshot(node)

    # header alone: checked and kept as header-only, body awaited
    r = post_block(node, header)
    assert r.status_code == 202 and r.json()["status"] == "header-ok", r.text
    assert node.get(f"/blocks/{header.hash}").json()["status"] == "header-only"
    assert any(t["hash"] == header.hash and t["status"] == "headers-only" for t in node.get("/tips").json())
    assert snapshot(node) == before
    assert_error(node.get(f"/blocks/{header.hash}/weights"), 404, "pruned")

    # a wrong body for it: refused, the header stays unjudged
    assert_error(post_block(node, header, flip_one_weight(body)), 400, "weights-mismatch")
    assert node.get(f"/blocks/{header.hash}").json()["status"] == "header-only"

    # the real body: accepted, new tip
    r = post_block(node, header, body)
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    st = node.status()
    assert st["height"] == height + 1 and st["tip"] == header.hash
    got = node.get(f"/blocks/{header.hash}").json()
    assert got["status"] == "valid" and got["in_best_chain"] and got["header"] == header.to_dict()
    assert got["accuracy"]["measured_after"] is not None
    assert got["peer"] == "127.0.0.1"
    assert node.get(f"/blocks/{header.hash}/weights").content == body
    assert [t["status"] for t in node.get("/tips").json()] == ["active"]
    assert "polchain_blocks_accepted_total 1" in node.get("/metrics").text

    # again: 409 known, header-only or full
    assert_error(post_block(node, header, body), 409, "duplicate")
    assert_error(post_block(node, header), 409, "duplicate")


def test_orphan_connects_when_parent_arrives(submit_node, side):
    node = submit_node
    height = node.status()["height"]
    a_header, a_body = side.block_at(height + 1)
    b_header, b_body = side.block_at(height + 2)
    r = post_block(node, b_header, b_body)
    assert r.status_code == 202 and r.json()["status"] == "orphan", r.text
    assert node.status()["height"] == height
    r = post_block(node, a_header, a_body)
    assert r.status_code == 200, r.text
    st = node.status()
    assert st["height"] == height + 2 and st["tip"] == b_header.hash


def test_invalid_parent_propagates(submit_node, side):
    """A child of an invalid block is refused as bad-parent."""
    node = submit_node
    height = node.status()["height"]
    a_header, a_body = side.block_at(height + 1)
    b_header, b_body = side.block_at(height + 2)
    bad_a = resign(side, a_header, acc_after=min(a_header.acc_after + 40, side.spec.evaluation.size))
    assert_error(post_block(node, bad_a, a_body), 400, "bad-accuracy-claim")
    bad_b = resign(side, b_header, parent=bad_a.hash)
    assert_error(post_block(node, bad_b, b_body), 400, "bad-parent")
    assert node.status()["height"] == height
    assert node.get(f"/blocks/{bad_b.hash}").json()["reason"] == "bad-parent"
    # the genuine blocks still go in
    assert post_block(node, a_header, a_body).status_code == 200
    assert post_block(node, b_header, b_body).status_code == 200
    assert node.status()["tip"] == b_header.hash


# -- validation runs off the event loop -------------------------------------------------------------
def test_api_answers_while_a_block_validates(smith, tmp_path, candidate, monkeypatch):
    """A real uvicorn server (in this process, so validation can be slowed down): /status answers
    promptly while POST /blocks is busy validating for 6 s."""
    import uvicorn

    from node.app import create_app
    from node.service import NodeService
    from node.settings import Settings

    from .conftest import free_port

    port = free_port()
    datadir = smith.copy_datadir(tmp_path / "data")
    monkeypatch.setattr("node.setup.load_dataset", lambda *a, **kw: smith.chain.dataset)
    service = NodeService(Settings(datadir=datadir, port=port, threads=1))
    real_submit = service.chain.submit
    validating = threading.Event()

    def slow_submit(*a, **kw):
        validating.set()
        time.sleep(6)
        return real_submit(*a, **kw)

    service.chain.submit = slow_submit
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        header, body = candidate
        result = {}

        def post():
            with httpx.Client(base_url=url, timeout=30) as c:
                result["r"] = post_block(c, header, body)

        poster = threading.Thread(target=post)
        poster.start()
        assert validating.wait(10)
        latencies = []
        for _ in range(3):
            t0 = time.monotonic()
            r = httpx.get(url + "/status", timeout=5)
            latencies.append(time.monotonic() - t0)
            assert r.status_code == 200 and r.json()["height"] == TEMPLATE_BLOCKS
        assert poster.is_alive(), "the submission should still be validating"
        assert max(latencies) < 1.5, latencies   # not blocked behind the 6 s validation
        poster.join(30)
        assert result["r"].status_code == 200, result["r"].text
        assert httpx.get(url + "/status").json()["height"] == TEMPLATE_BLOCKS + 1
    finally:
        server.should_exit = True
        t.join(15)
