"""GET /blocks/{hash}/proof and the block page's proof section, over real HTTP against a real node on the
template chain; the figures are checked against the chain's own post-states, loaded in-process."""
from __future__ import annotations

import re
import struct
import zlib

import pytest
import torch

from consensus.proof import derive_batch, redraw_epoch
from consensus.validation import accuracy_floor

from .conftest import TEMPLATE_BLOCKS
from tests.chain_spec import TINY_TEST_ARGS


def _flat_value(state, param: str, offset: int) -> float:
    return float(state[param].reshape(-1)[offset])


def test_proof_lays_out_r_the_steps_and_the_floor(static_node, smith):
    b = static_node.block("3")
    r = static_node.get(f"/blocks/{b['hash']}/proof")
    assert r.status_code == 200, r.text
    p = r.json()
    hd = b["header"]
    parent = smith.chain.store.get(hd["parent"]).header
    assert p["hash"] == b["hash"] and p["difficulty"] == hd["difficulty"]
    assert len(p["requirements"]) == hd["difficulty"]
    assert p["replay"]["status"] == "done" and p["replay"]["state_matches"] is True
    # the achieved changes: w' is the block's stored post-state at each required coordinate
    w_after = smith.chain.load_weights(hd["state_hash"])
    band = p["band"]
    assert band["ulps"] == smith.spec.requirements.band_ulps
    for q in p["requirements"]:
        assert q["parameter"] in w_after and q["direction"] in ("increase", "decrease")
        assert q["after"] == _flat_value(w_after, q["parameter"], q["offset"])
        assert q["change"] == q["after"] - q["before"]
        signed = q["change"] if q["direction"] == "increase" else -q["change"]
        band_abs = torch.tensor(float(smith.spec.requirements.band_abs), dtype=torch.float32).item()
        assert signed >= q["least"] * (1 - 1e-6) and q["least"] >= band_abs and q["met"] is True
    # the steps: one per nonce, the batches the nonces derive, the last one wins
    assert [s["nonce"] for s in p["steps"]] == hd["nonces"]
    assert [s["winning"] for s in p["steps"]] == [False] * (len(hd["nonces"]) - 1) + [True]
    epoch = redraw_epoch(smith.spec, parent.timestamp_ms, hd["timestamp_ms"])
    for s in p["steps"]:
        want = derive_batch(smith.spec, hd["parent"], hd["miner"], epoch, s["nonce"])
        assert s["batch"] == list(want)
        assert s["labels"] == [int(smith.chain.dataset.train_y[i]) for i in want]
    # acc(W') against the floor
    acc = p["accuracy"]
    assert acc["floor"] == accuracy_floor(smith.spec, parent, hd["timestamp_ms"])
    assert acc["measured"] == b["accuracy"]["measured_after"] and acc["measured"] >= acc["floor"]
    assert acc["claimed"] == hd["acc_after"] and acc["parent_claim"] == parent.acc_after
    # the replay is cached per block
    again = static_node.get(f"/blocks/{b['hash']}/proof").json()
    assert again["replay"]["cached"] is True and again["requirements"] == p["requirements"]
    assert static_node.get("/blocks/3/proof").json()["hash"] == b["hash"]          # by height too


def test_proof_errors(static_node):
    r = static_node.get("/blocks/" + "ab" * 32 + "/proof")
    assert r.status_code == 404 and r.json()["error"] == "not-found"
    g = static_node.get("/blocks/0/proof")
    assert g.status_code == 404 and "genesis" in g.json()["detail"]
    assert static_node.get("/blocks/xyz/proof").status_code == 422
    assert "/blocks/{ident}/proof" in static_node.get("/openapi.json").json()["paths"]


@pytest.mark.slow
def test_proof_without_the_parent_state_says_so(node_factory, smith, tmp_path):
    """A pruned parent state: R, the steps and the floor are still shown; the changes are not."""
    d = smith.copy_datadir(tmp_path / "pruned")
    parent = smith.chain.store.get(smith.chain.store.hash_at(2)).header
    path = next(d.rglob(f"{parent.state_hash}*"))
    path.unlink()
    node = node_factory(d, *TINY_TEST_ARGS)
    p = node.get("/blocks/3/proof").json()
    assert p["replay"]["status"] == "state-unavailable" and "pruned" in p["replay"]["detail"]
    assert len(p["requirements"]) == p["difficulty"]
    assert all(q["change"] is None and q["met"] is None for q in p["requirements"])
    assert p["accuracy"]["floor"] is not None and len(p["steps"]) >= 1
    html = node.get("/explorer/blocks/3").text
    assert 'id="proof-replay"' in html and "pruned" in html


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    raw = zlib.decompress(idat)
    rows = [raw[y * (w * 3 + 1) + 1:(y + 1) * (w * 3 + 1)] for y in range(h)]
    return w, h, b"".join(rows)


def test_batch_thumbnails_are_the_batch_images(static_node, smith):
    b = static_node.block("2")
    p = static_node.get(f"/blocks/{b['hash']}/proof").json()
    last = p["steps"][-1]
    r = static_node.get(f"/explorer/blocks/{b['hash']}/batch/{last['step']}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    w, h, rgb = _png_pixels(r.content)
    n = len(last["batch"])
    assert (w, h) == (n * 32 + (n - 1) * 2, 32)
    img = torch.frombuffer(bytearray(rgb), dtype=torch.uint8).view(h, w, 3)
    for i, idx in enumerate(last["batch"]):
        want = smith.chain.dataset.train_x[idx].permute(1, 2, 0)
        assert torch.equal(img[:, i * 34:i * 34 + 32], want)
    assert static_node.get(f"/explorer/blocks/{b['hash']}/batch/99.png").status_code == 404


def test_block_page_shows_the_proof(static_node, smith):
    b = static_node.block("4")
    p = static_node.get(f"/blocks/{b['hash']}/proof").json()
    html = static_node.get(f"/explorer/blocks/{b['hash']}").text
    rows = re.findall(r'<tr data-index="(\d+)">', html)
    assert [int(i) for i in rows] == [q["index"] for q in p["requirements"]]
    assert html.count("✓ met") == len(p["requirements"])
    steps = re.findall(r'<tr class="(advance|winning)" data-step="(\d+)">', html)
    assert [int(s) for _, s in steps] == list(range(len(p["steps"]))) and steps[-1][0] == "winning"
    for s in p["steps"]:
        assert f'/explorer/blocks/{b["hash"]}/batch/{s["step"]}.png' in html and str(s["nonce"]) in html
    assert re.search(r'id="proof-floor">%d<' % p["accuracy"]["floor"], html)
    assert re.search(r'id="proof-measured">%d<' % p["accuracy"]["measured"], html)
    genesis = static_node.get("/explorer/blocks/0").text
    assert "genesis block has no proof" in genesis


def test_search_finds_heights_hashes_and_prefixes(static_node, smith):
    b = static_node.block("5")
    for q in ("5", b["hash"], b["hash"][:10], " " + b["hash"][:10].upper() + " "):
        r = static_node.get("/explorer/search", params={"q": q})
        assert r.status_code == 303 and r.headers["location"] == f"/explorer/blocks/{b['hash']}", q
    for q, why in ((str(TEMPLATE_BLOCKS + 100), "no block at height"), ("zz-top", "neither a height"),
                   ("ffff" * 16, "no block hash starts with"), ("ab", "at least 4")):
        r = static_node.get("/explorer/search", params={"q": q})
        assert r.status_code == 404 and why in r.text and 'id="search-result"' in r.text, q
    assert 'action="/explorer/search"' in static_node.get("/").text


def test_block_miner_and_tips_pages_update_live(static_node, smith):
    b = static_node.block("3")
    page = static_node.get(f"/explorer/blocks/{b['hash']}").text
    assert f'data-live="/explorer/blocks/{b["hash"]}?part=live"' in page
    live = static_node.get(f"/explorer/blocks/{b['hash']}", params={"part": "live"})
    assert live.status_code == 200 and "<html" not in live.text and 'id="block-status">valid' in live.text
    miner = b["header"]["miner"]
    assert 'data-live="/explorer/miners/' in static_node.get(f"/explorer/miners/{miner}").text
    ml = static_node.get(f"/explorer/miners/{miner}", params={"part": "live"}).text
    assert "<html" not in ml and 'id="miner-blocks"' in ml
    tl = static_node.get("/explorer/tips", params={"part": "live"}).text
    assert "<html" not in tl and smith.chain.tip().hash in tl


def test_miner_page_shows_every_interval(static_node, smith):
    """Each mined block's interval is shown (its parent is among the blocks scanned), from block 2 on
    (block 1's parent is genesis, whose timestamp is the spec's)."""
    miner = static_node.block("1")["header"]["miner"]
    html = static_node.get(f"/explorer/miners/{miner}").text
    rows = re.findall(r'<tr data-height="(\d+)">(.*?)</tr>', html)
    assert rows
    for height, row in rows:
        cells = re.findall(r'<td class="num">([^<]*)</td>', row)
        interval = cells[2]          # height, k, interval s, ...
        assert (interval != "") == (int(height) >= 2), (height, cells)


def test_an_invalid_proof_shows_what_failed(static_node, smith):
    """A block whose winning nonce does not meet R: posted, judged invalid, and its proof page says
    which requirement fell short (the best chain is left as found)."""
    from .conftest import post_block
    from .test_submit import failing_nonces, resign

    tip = smith.chain.tip().hash
    good = smith.next_block().header
    bad = resign(smith, good, nonces=failing_nonces(smith, good))
    r = post_block(static_node, bad)
    assert r.status_code == 400 and r.json()["error"] == "requirements-not-met"
    p = static_node.get(f"/blocks/{bad.hash}/proof").json()
    assert p["status"] == "invalid" and p["replay"]["status"] == "done"
    assert p["replay"]["state_matches"] is False
    assert any(q["met"] is False for q in p["requirements"])
    html = static_node.get(f"/explorer/blocks/{bad.hash}").text
    assert "✗ not met" in html and "does not match" in html
    assert static_node.status()["tip"] == tip
