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


def test_learning_curve_downloads(static_node):
    """GET /explorer/learning-curve.csv and .json: the chart's data, every block of the best chain, each
    figure as /blocks has it (issue 31.10)."""
    import csv
    import io
    chain = static_node.best_chain()
    page = static_node.get("/").text
    assert 'href="/explorer/learning-curve.csv"' in page and 'href="/explorer/learning-curve.json"' in page
    j = static_node.get("/explorer/learning-curve.json")
    assert j.status_code == 200 and j.headers["content-type"].startswith("application/json")
    data = j.json()
    st = static_node.status()
    assert (data["chain_id"], data["tip"], data["height"]) == (st["chain_id"], st["tip"], st["height"])
    rows = data["blocks"]
    assert [r["height"] for r in rows] == [b["height"] for b in chain] == list(range(TEMPLATE_BLOCKS + 1))
    for r, b in zip(rows, chain):
        hd = b["header"]
        assert (r["hash"], r["timestamp_ms"], r["difficulty"]) == (b["hash"], hd["timestamp_ms"], hd["difficulty"])
        assert r["steps"] == (len(hd["nonces"]) if b["height"] else 0)
        assert (r["claimed_correct"], r["measured_correct"], r["of"]) == (
            hd["acc_after"], b["accuracy"]["measured_after"], b["accuracy"]["of"])
        shown = r["measured_correct"] if r["measured_correct"] is not None else r["claimed_correct"]
        assert abs(r["accuracy"] - shown / r["of"]) < 1e-6
    assert rows[0]["interval_s"] is None and rows[1]["interval_s"] is None
    assert rows[3]["interval_s"] == (chain[3]["header"]["timestamp_ms"] - chain[2]["header"]["timestamp_ms"]) / 1000
    c = static_node.get("/explorer/learning-curve.csv")
    assert c.status_code == 200 and c.headers["content-type"].startswith("text/csv")
    assert "learning-curve.csv" in c.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(c.text)))
    assert [int(t["height"]) for t in table] == [r["height"] for r in rows]
    assert all(t["hash"] == r["hash"] and float(t["accuracy"]) == r["accuracy"] for t, r in zip(table, rows))
    assert static_node.get("/explorer/learning-curve.xml").status_code in (404, 422)


def test_overview_figures_follow_from_the_api(static_node):
    """Every figure on the overview's cards is one a user can compute from /status and /blocks."""
    import statistics
    html = static_node.get("/").text
    chain = static_node.best_chain()
    by_hash = {b["hash"]: b for b in chain}
    mined = [b for b in chain if b["height"] > 0]
    # block time: the median of the intervals of the latest blocks (block 1's parent is genesis: none)
    ivs = [(b["header"]["timestamp_ms"] - by_hash[b["header"]["parent"]]["header"]["timestamp_ms"]) / 1000
           for b in mined if b["height"] > 1][-20:]
    shown = re.search(r'id="block-time">([^<]*)<', html).group(1)
    median = statistics.median(ivs)
    assert shown == (f"{median:.1f} s" if median < 10 else f"{median:.0f} s"), (shown, ivs)
    assert f"median of the {len(ivs)} intervals" in html
    # useful work: the steps the blocks carry over the sum of 2^k
    steps = sum(len(b["header"]["nonces"]) for b in mined)
    expected = sum(2 ** b["header"]["difficulty"] for b in mined)
    assert re.search(r'id="useful-work">%.1f%%<' % (100 * steps / expected), html)
    assert f"{steps:,} steps in blocks 1–{TEMPLATE_BLOCKS}" in html and f"{expected:,} expected attempts" in html
    # accuracy: the tip's, in percent, as the table's first row shows it
    tip = chain[-1]
    correct = tip["accuracy"]["measured_after"]
    correct = correct if correct is not None else tip["header"]["acc_after"]
    pct = f'{100 * correct / tip["accuracy"]["of"]:.1f}%'
    assert re.search(r'id="tip-accuracy">%s<' % re.escape(pct), html)
    first_row = re.search(r'<tr data-height="%d">.*?</tr>' % tip["height"], html).group(0)
    assert f">{pct}</td>" in first_row
    k = static_node.status()["difficulty"]
    assert f"2^{k} = {2 ** k:,} attempts expected" in html
