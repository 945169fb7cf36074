"""The explorer's server-rendered pages over real HTTP (the browser tests are in tests/e2e):
what each page shows is checked against the node's own JSON API."""
from __future__ import annotations

import re

from .conftest import TEMPLATE_BLOCKS


def test_overview_names_the_chain_and_shows_the_tip(static_node, smith):
    r = static_node.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    st = static_node.status()
    html = r.text
    assert smith.spec.name in html and st["chain_id"][:16] in html
    assert re.search(r'id="tip-height">\s*%d\s*<' % st["height"], html)
    # one chart point per block, each at its height
    heights = [int(h) for h in re.findall(r'<circle class="point"[^>]*data-height="(\d+)"', html)]
    assert heights == list(range(TEMPLATE_BLOCKS + 1))
    # every asset is served by the node itself
    for src in re.findall(r'(?:src|href)="(/[^"]*\.(?:js|css))"', html):
        assert static_node.get(src).status_code == 200
    assert "http://" not in html.replace(static_node.url, "") and "https://" not in html
    live = static_node.get("/", params={"part": "live"})
    assert live.status_code == 200 and "<html" not in live.text and 'id="tip-height"' in live.text


def test_block_page_renders_every_header_field(static_node, smith):
    b = static_node.block("3")
    html = static_node.get(f"/explorer/blocks/{b['hash']}").text
    assert f"Block {b['height']}" in html and b["hash"] in html
    for name in b["header"]:
        assert f'<th class="mono">{name}</th>' in html, name
    assert f'href="/explorer/blocks/{b["header"]["parent"]}"' in html
    assert f'href="/explorer/miners/{b["header"]["miner"]}"' in html
    assert 'id="block-status">valid' in html and "best chain" in html
    assert f'href="/explorer/blocks/{static_node.block("4")["hash"]}"' in html   # the next block
    missing = static_node.get("/explorer/blocks/" + "ab" * 32)
    assert missing.status_code == 404 and "no block" in missing.text


def test_miner_tips_and_certificate_pages(static_node, smith):
    miner = static_node.block("1")["header"]["miner"]
    html = static_node.get(f"/explorer/miners/{miner}").text
    mined = sum(1 for b in static_node.best_chain() if b["header"]["miner"] == miner)
    assert re.search(r'id="miner-blocks">%d<' % mined, html)
    tips = static_node.get("/explorer/tips").text
    assert smith.chain.tip().hash in tips and "active" in tips
    certs = static_node.get("/explorer/certificates", params={"model_hash": "cd" * 32}).text
    assert "no certificate for this model" in certs
    assert "64 hex" in static_node.get("/explorer/certificates", params={"model_hash": "xyz"}).text
    assert static_node.get("/explorer/static/../app.py").status_code == 404
    assert static_node.get("/explorer/static/settings.py").status_code == 404


def test_explorer_is_not_in_the_api_document(static_node):
    paths = static_node.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/explorer") for p in paths)
