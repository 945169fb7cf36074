"""The explorer in a real browser against a real mining node (tiny preset)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.nodeproc import NodeProc, wait_for
from tests.chain_spec import TINY_TEST_ARGS

pytestmark = pytest.mark.slow      # node processes or long mining: in the full suite, not in `-m "not slow"`

TIP = "#tip-height"


def shown_height(page) -> int:
    return int(page.inner_text(TIP).strip())


def test_page_loads_and_shows_the_tip_height(page, mining_node):
    page.goto(mining_node.url + "/")
    assert "polchain explorer" in page.title()
    assert "tiny" in page.inner_text("#chain-name")
    shown = shown_height(page)
    st = mining_node.status()
    assert st["height"] - 3 <= shown <= st["height"]        # the node mines on while we look
    assert page.inner_text("#difficulty").strip().isdigit()


def test_tip_height_rises_without_reload(page, mining_node):
    page.goto(mining_node.url + "/")
    first = shown_height(page)
    page.evaluate("window.__sameDocument = true")
    page.wait_for_function(f"parseInt(document.querySelector('{TIP}').textContent) > {first}", timeout=180_000)
    assert page.evaluate("window.__sameDocument === true")      # no navigation happened
    assert page.evaluate("window.polchainExplorer.refreshes") >= 1
    assert shown_height(page) > first


def test_block_link_opens_its_page(page, mining_node):
    page.goto(mining_node.url + "/")
    link = page.locator("#blocks tbody tr").first.locator("a[href^='/explorer/blocks/']").first
    block_hash = link.get_attribute("title")
    link.click()
    page.wait_for_url(f"**/explorer/blocks/{block_hash}")
    block = mining_node.block(block_hash)
    assert page.inner_text("h1") == f"Block {block['height']}"
    assert block_hash in page.inner_text("#block-facts")
    assert page.locator("#header-fields tr").count() == len(block["header"])
    page.locator("#header-fields a[href^='/explorer/blocks/']").first.click()     # the parent
    page.wait_for_url(f"**/explorer/blocks/{block['header']['parent']}")
    assert page.inner_text("h1") == f"Block {block['height'] - 1}"


def test_chart_has_one_point_per_block(page, mining_node):
    page.goto(mining_node.url + "/")
    # one snapshot of the document: the points and the tip height shown with them. A block mined while
    # the server renders the page can put the tip one past the chart until the next refresh: take
    # snapshots until one shows them together
    def snapshot():
        snap = page.evaluate("""() => ({
            heights: [...document.querySelectorAll('#acc-chart circle.point')].map(c => +c.dataset.height),
            tip: parseInt(document.querySelector('#tip-height').textContent),
            bars: document.querySelectorAll('#acc-chart rect.interval').length,
            kpoints: document.querySelectorAll('#k-chart circle').length })""")
        return snap if snap["heights"] == list(range(snap["tip"] + 1)) else None

    snap = wait_for(snapshot, timeout=60, interval=0.5, what="chart points from genesis to the tip shown")
    assert snap["heights"] == list(range(snap["tip"] + 1))       # genesis to the tip, one point each
    assert snap["kpoints"] == snap["tip"] + 1
    assert snap["bars"] == max(snap["tip"] - 1, 0)               # an interval for each block after block 1
    chain = mining_node.best_chain()
    assert [b["height"] for b in chain[: snap["tip"] + 1]] == snap["heights"]


def test_nothing_is_fetched_from_elsewhere_and_docs_work_offline(page, mining_node):
    outside: list[str] = []

    def gate(route):
        if route.request.url.startswith(mining_node.url) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", gate)
    page.goto(mining_node.url + "/")
    page.wait_for_selector("#acc-chart circle.point")
    page.goto(mining_node.url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=60_000)
    assert "polchain node" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".opblock").count() >= 12                # every operation is listed
    assert outside == []


def test_empty_chain_then_unreachable_api(page, tmp_path):
    node = NodeProc(tmp_path / "empty", *TINY_TEST_ARGS).start()
    try:
        page.goto(node.url + "/")
        assert "No blocks yet" in page.inner_text("#state-empty")
        assert shown_height(page) == 0
        assert page.locator("#acc-chart circle.point").count() == 1          # genesis alone
        assert not page.is_visible("#unreachable")
    finally:
        assert node.stop() == 0
    page.wait_for_selector("#unreachable", state="visible", timeout=30_000)
    assert "unreachable" in page.inner_text("#unreachable")
    assert shown_height(page) == 0                                            # the last data stay


def test_screenshot(page, mining_node, tmp_path):
    """Writes docs/figures/explorer.png when POLCHAIN_E2E_SCREENSHOT names the file."""
    out = Path(os.environ.get("POLCHAIN_E2E_SCREENSHOT") or tmp_path / "explorer.png")
    mining_node.wait_height(15, timeout=300)
    page.set_viewport_size({"width": 1280, "height": 1357})          # the README's picture keeps its size
    page.goto(mining_node.url + "/")
    time.sleep(0.5)
    page.screenshot(path=str(out))
    assert out.stat().st_size > 20_000


def test_block_page_shows_the_proof(page, mining_node):
    block = mining_node.block("2")
    proof = mining_node.get(f"/blocks/{block['hash']}/proof").json()
    page.goto(f"{mining_node.url}/explorer/blocks/{block['hash']}")
    rows = page.locator("#proof-requirements tbody tr")
    assert rows.count() == block["header"]["difficulty"] == len(proof["requirements"])
    assert page.locator("#proof-requirements .ok").count() == rows.count()          # every change met
    first = proof["requirements"][0]
    assert f'{first["parameter"]}[{first["offset"]}]' in rows.first.inner_text()
    steps = page.locator("#proof-steps tbody tr")
    assert steps.count() == len(block["header"]["nonces"])
    assert "winning" in steps.last.inner_text()
    # every batch thumbnail loads: the strip of the batch's images, 32 px high
    page.wait_for_function("[...document.querySelectorAll('#proof-steps img.batch')].every(i => i.complete)")
    sizes = page.evaluate("[...document.querySelectorAll('#proof-steps img.batch')]"
                          ".map(i => [i.naturalWidth, i.naturalHeight])")
    n = len(proof["steps"][0]["batch"])
    assert sizes == [[n * 32 + (n - 1) * 2, 32]] * steps.count()
    assert page.inner_text("#proof-floor").strip() == str(proof["accuracy"]["floor"])
    assert page.inner_text("#proof-measured").strip() == str(proof["accuracy"]["measured"])
    # the status part refreshes in place
    page.wait_for_function("window.polchainExplorer.refreshes >= 1", timeout=30_000)
    assert "valid" in page.inner_text("#block-status")


def test_search_box_finds_heights_and_hashes(page, mining_node):
    page.goto(mining_node.url + "/")
    one = mining_node.block("1")
    page.fill("#search", "1")
    page.press("#search", "Enter")
    page.wait_for_url(f"**/explorer/blocks/{one['hash']}")
    assert page.inner_text("h1") == "Block 1"
    two = mining_node.block("2")
    page.fill("#search", two["hash"][:12])
    page.press("#search", "Enter")
    page.wait_for_url(f"**/explorer/blocks/{two['hash']}")
    assert page.inner_text("h1") == "Block 2"
    page.fill("#search", "not-a-block")
    page.press("#search", "Enter")
    page.wait_for_url("**/explorer/search?q=not-a-block")
    assert "not found" in page.inner_text("#search-result")


def test_learning_curve_axis_is_fitted(page, mining_node):
    mining_node.wait_height(4, timeout=180)
    page.goto(mining_node.url + "/")
    page.wait_for_selector("#acc-chart circle.point")
    snap = page.evaluate("""() => {
        const svg = document.querySelector('#acc-chart');
        const axis = svg.querySelector('line.axis');
        const pts = [...svg.querySelectorAll('circle.point')].map(c => +c.getAttribute('cy'));
        const heights = [...svg.querySelectorAll('circle.point')].map(c => +c.dataset.height);
        const bars = [...svg.querySelectorAll('rect.interval')].map(r => r.getBBox()).map(b => [b.x, b.x + b.width]);
        const left = [...svg.querySelectorAll('text.y-left')].map(t => parseFloat(t.textContent));
        const right = [...svg.querySelectorAll('text.y-right')].map(t => t.textContent);
        return {x1: +axis.getAttribute('x1'), x2: +axis.getAttribute('x2'), base: +axis.getAttribute('y1'),
                pts, heights, bars, left, right, lo: +svg.dataset.accLo, hi: +svg.dataset.accHi};
    }""")
    by_height = {b["height"]: b for b in mining_node.best_chain()}
    accs = [by_height[h]["accuracy"]["measured_after"] / by_height[h]["accuracy"]["of"] for h in snap["heights"]]
    # the axis spans the data (at least 2 points of percentage, plus padding), not 0-100 %
    span = max(accs) - min(accs)
    assert snap["lo"] <= min(accs) + 1e-9 and snap["hi"] >= max(accs) - 1e-9
    assert snap["hi"] - snap["lo"] <= 1.4 * max(span, 0.02), (snap["lo"], snap["hi"], accs)
    plot = snap["base"] - 12
    assert abs((max(snap["pts"]) - min(snap["pts"])) - span / (snap["hi"] - snap["lo"]) * plot) < 1.0
    assert snap["left"] == sorted(snap["left"]) and len(set(snap["left"])) == len(snap["left"]) >= 2
    assert len(set(snap["right"])) == len(snap["right"])                         # distinct interval ticks
    for a, b in snap["bars"]:
        assert snap["x1"] <= a and b <= snap["x2"] + 0.01                        # every bar inside the plot
    assert "Current block" in page.inner_text("#current-block")                  # the node mines


LAYOUT = """() => {
    const clipped = [];
    for (const el of document.querySelectorAll('.cards .card, .cards .card *')) {
        if (el.scrollWidth > el.clientWidth) clipped.push([el.className || el.tagName, el.textContent.trim(),
                                                           el.scrollWidth, el.clientWidth]);
    }
    const rows = {};
    for (const c of document.querySelectorAll('.cards .card')) {
        const top = Math.round(c.getBoundingClientRect().top);
        rows[top] = (rows[top] || 0) + 1;
    }
    return {scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth, clipped,
            rows: Object.keys(rows).sort((a, b) => a - b).map(t => rows[t])};
}"""


def _layout(page, url: str, width: int) -> dict:
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(url)
    page.wait_for_load_state("load")
    return page.evaluate(LAYOUT)


def test_cards_show_their_text_and_wrap_evenly(page, mining_node):
    """Issue 31.10: no card cuts its text ("alone: no pe…", "this node: 327.3 attempt…"); the six cards
    sit on one row at desktop width and wrap into even rows when narrower (no card alone on a row)."""
    for width, rows in ((1280, [6]), (900, [3, 3]), (420, [2, 2, 2])):
        got = _layout(page, mining_node.url + "/", width)
        assert got["clipped"] == [], (width, got["clipped"])
        assert got["rows"] == rows, (width, got["rows"])


def test_no_sideways_scroll_on_a_phone(page, mining_node):
    """Issue 31.10: at 420 px the page is as wide as the window (wide tables scroll inside their box)."""
    block = mining_node.block("2")
    miner = block["header"]["miner"]
    for path in ("/", f"/explorer/blocks/{block['hash']}", f"/explorer/miners/{miner}", "/explorer/tips",
                 "/explorer/certificates?model_hash=" + "cd" * 32, "/explorer/search?q=abcd"):
        got = _layout(page, mining_node.url + path, 420)
        assert got["scroll"] <= got["inner"], (path, got["scroll"], got["inner"])
