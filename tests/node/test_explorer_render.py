"""The explorer's HTML and SVG pieces on hand-made API objects (no node): the learning curve's axes
(issue 21.9), the state banner and the current-block card (issue 21.5)."""
from __future__ import annotations

import re

from node.explorer import render
from node.explorer.chart import LEFT, RIGHT, TOP, BOTTOM, H, W, Point, learning_curve


def _curve(accuracies, intervals):
    pts = [Point(h, f"{h:064x}", a, i, 3) for h, (a, i) in enumerate(zip(accuracies, intervals))]
    return learning_curve(pts)


def _labels(svg: str, cls: str) -> list[str]:
    return re.findall(r'<text class="%s"[^>]*>([^<]*)</text>' % cls, svg)


def test_interval_ticks_are_distinct_and_precise():
    svg = _curve([0.1] * 6, [None, None, 0.4, 0.9, 1.3, 0.6])
    right = _labels(svg, "y-right")
    assert len(right) >= 2 and len(set(right)) == len(right), right       # was 1s/1s/0s
    assert right[0] in ("0s", "0.0s")
    short = _labels(_curve([0.1] * 4, [None, None, 0.12, 0.31]), "y-right")
    assert len(set(short)) == len(short) and all(re.fullmatch(r"\d\.\ds", s) for s in short), short
    minutes = _labels(_curve([0.1] * 4, [None, None, 300, 700]), "y-right")
    assert len(set(minutes)) == len(minutes) and all(s.endswith("m") for s in minutes[1:]), minutes


def test_accuracy_axis_is_fitted_to_the_data():
    acc = [0.10, 0.11, 0.13, 0.12, 0.16, 0.18]
    svg = _curve(acc, [None, None, 1, 1, 1, 1])
    ys = [float(y) for y in re.findall(r'<circle class="point"[^>]*cy="([\d.]+)"', svg)]
    plot = H - TOP - BOTTOM
    assert max(ys) - min(ys) > 0.6 * plot                 # on 0-100 % the line spanned 8 % of the height
    assert all(TOP - 0.01 <= y <= H - BOTTOM + 0.01 for y in ys)
    left = _labels(svg, "y-left")
    values = [float(s.rstrip("%")) for s in left]
    assert values == sorted(values) and len(set(left)) == len(left) >= 3
    assert values[0] <= 10 and values[-1] >= 18 and values[-1] - values[0] <= 20, left
    # a single point (genesis alone) still gets a range around it
    one = learning_curve([Point(0, "0" * 64, 0.1, None, 3)])
    assert 'class="point"' in one and "nan" not in one.lower()


def test_every_bar_lies_inside_the_plot():
    svg = _curve([0.1 + 0.01 * i for i in range(5)], [None, None, 2.0, 3.0, 4.0])
    for x, w in re.findall(r'<rect class="interval" x="([-\d.]+)" y="[-\d.]+" width="([\d.]+)"', svg):
        assert LEFT <= float(x) and float(x) + float(w) <= W - RIGHT, (x, w)
    many = _curve([0.1] * 200, [None, None] + [1.0] * 198)
    for x, w in re.findall(r'<rect class="interval" x="([-\d.]+)" y="[-\d.]+" width="([\d.]+)"', many):
        assert LEFT <= float(x) and float(x) + float(w) <= W - RIGHT


def _status(height=0, mining=None):
    return {"height": height, "syncing": False, "mining": mining or {"enabled": False}}


def test_banner_at_genesis_knows_the_node_mines():
    mining = {"enabled": True, "attempts_per_second": 2.0,
              "current": {"height": 1, "difficulty": 6, "attempts": 10, "seconds": 5, "expected_attempts": 64}}
    text = render.state_banner(_status(0, mining))
    assert "No blocks yet" in text and "polchain node --mine" not in text and "mining block 1" in text
    assert "polchain node --mine" in render.state_banner(_status(0))


def test_current_block_card():
    cur = {"height": 8, "difficulty": 6, "attempts": 96, "seconds": 40.0, "expected_attempts": 64, "r_hits": 2,
           "acc_floor_failed": 1, "acc_borderline_failed": 1, "restarts": 0}
    html = render.current_block(_status(7, {"enabled": True, "attempts_per_second": 2.0, "current": cur}))
    assert 'id="current-block"' in html and "height 8 at k=6" in html
    assert re.search(r'id="current-attempts">96<', html) and "64 expected (150%)" in html
    assert "40 s on it" in html and re.search(r'id="current-held">2<', html)
    assert "1 below the accuracy floor, 1 borderline" in html
    assert "about 32 s per block at 2.0 attempts/s" in html
    assert render.current_block(_status(7)) == ""                    # not mining: no card
    idle = render.current_block(_status(7, {"enabled": True, "attempts_per_second": 0.0, "current": None}))
    assert "starting" in idle
