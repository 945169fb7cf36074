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
    assert re.search(r'id="current-attempts">96<', html) and "attempts = 1.5 × 2^6" in html
    assert "40 s on it" in html and re.search(r'id="current-held">2<', html)
    assert "1 below the accuracy floor, 1 borderline" in html
    assert "2.0 attempts/s on this node" in html and "per block" not in html      # no 2^k / rate estimate
    assert render.current_block(_status(7)) == ""                    # not mining: no card
    idle = render.current_block(_status(7, {"enabled": True, "attempts_per_second": 0.0, "current": None}))
    assert "starting" in idle


# -- issue 31.10: nice ticks, figures a user can check ---------------------------------------------
def _is_nice(step: float) -> bool:
    """1, 2 or 5 times a power of ten."""
    import math
    mag = 10 ** math.floor(math.log10(step) + 1e-9)
    return any(abs(step - m * mag) < 1e-9 * mag for m in (1, 2, 5, 10))


def _nice_sequence(values: list[float]) -> bool:
    if len(values) < 2:
        return False
    steps = {round(b - a, 9) for a, b in zip(values, values[1:])}
    if len(steps) != 1:
        return False
    step = steps.pop()
    return _is_nice(step) and all(abs(v / step - round(v / step)) < 1e-6 for v in values)


def test_int_ticks_are_nice_numbers():
    from node.explorer.chart import int_ticks
    assert int_ticks(0, 66, 6) == [0, 20, 40, 60]                      # was 0, 11, 22, ...
    assert int_ticks(0, 33, 4) == [0, 10, 20, 30]
    assert int_ticks(0, 2, 6) == [0, 1, 2]
    assert int_ticks(5, 5, 6) == [5]
    for lo in (0, 1, 3, 17, 466):
        for span in (1, 2, 3, 7, 12, 13, 33, 66, 99, 250, 499, 1234):
            for n in (3, 4, 6):
                t = int_ticks(lo, lo + span, n)
                assert t[0] >= lo and t[-1] <= lo + span and _nice_sequence(t), (lo, span, n, t)
                assert 2 <= len(t) <= 2 * n + 1, (lo, span, n, t)


def test_chart_axes_carry_nice_ticks():
    from node.explorer.chart import difficulty_chart
    pts = [Point(h, f"{h:064x}", 0.1, 1.0 if h > 1 else None, 13 if h > 20 else 7) for h in range(67)]
    svg = learning_curve(pts)
    assert _nice_sequence([float(t) for t in _labels(svg, "x-tick")]), _labels(svg, "x-tick")
    k = difficulty_chart(pts)
    assert _nice_sequence([float(t) for t in _labels(k, "x-tick")]), _labels(k, "x-tick")
    ks = [float(t) for t in _labels(k, "y-left")]
    assert _nice_sequence(ks) and ks[0] == 0 and ks[-1] >= 13, ks                    # was 0, 7, 13


def test_interval_axis_keeps_one_unit_and_nice_steps():
    for longest, unit in ((1.3, "s"), (87.0, "s"), (140.0, "m"), (700.0, "m"), (9000.0, "h")):
        svg = _curve([0.1] * 4, [None, None, longest / 2, longest])
        right = _labels(svg, "y-right")
        assert all(s.endswith(unit) for s in right), (longest, right)         # 140 s: 0s 50s 100s 2.5m
        values = [float(s[:-1]) for s in right]
        assert _nice_sequence(values) and values[0] == 0 and values[-1] * {"s": 1, "m": 60, "h": 3600}[unit] >= longest


def _block(height, *, ts, k=6, nonces=3, claim=50, measured=None, of=500, parent=None):
    return {"hash": f"{height:064x}", "height": height,
            "header": {"parent": parent if parent is not None else (f"{height - 1:064x}" if height else ""),
                       "timestamp_ms": ts, "difficulty": k, "nonces": list(range(nonces)) if height else [],
                       "acc_before": claim - 1, "acc_after": claim, "miner": "ab" * 32 if height else ""},
            "accuracy": {"claimed_after": claim, "measured_after": measured, "of": of}, "records": []}


def _chain(intervals_s, k=6, nonces=3):
    out, ts = [_block(0, ts=1_000)], 5_000_000
    for h, iv in enumerate(intervals_s, start=1):
        ts += int(iv * 1000)
        out.append(_block(h, ts=ts, k=k, nonces=nonces, claim=50 + h))
    return out


def test_block_time_is_the_median_of_the_intervals_shown():
    chain = _chain([999, 60, 53, 87, 70, 61])     # block 1's "interval" is from genesis: not an interval
    newest = chain[::-1]
    bt = render.block_times(newest[:5], chain)      # the table's rows (heights 6..2) and their parents
    assert bt["intervals"] == 5 and bt["median_s"] == 61 and abs(bt["mean_s"] - 66.2) < 1e-9
    assert (bt["first"], bt["last"]) == (2, 6)
    assert render.block_times(newest[-2:], chain) is None            # block 1 and genesis: no interval
    html = render.overview_live(_overview_status(6), newest[:20], chain, [])
    assert re.search(r'id="block-time">61 s<', html)
    assert "median of the 5 intervals" in html and "mean 66 s" in html


def test_useful_work_is_steps_over_expected_attempts():
    chain = _chain([10] * 4, k=6, nonces=3) + []
    chain += [_block(5, ts=chain[-1]["header"]["timestamp_ms"] + 10_000, k=7, nonces=5)]
    uw = render.useful_work(chain)
    assert (uw["steps"], uw["expected"], uw["blocks"]) == (4 * 3 + 5, 4 * 64 + 128, 5)
    assert abs(uw["fraction"] - 17 / 384) < 1e-12 and (uw["first"], uw["last"]) == (1, 5)
    assert render.useful_work(chain[:1]) is None                      # genesis alone: nothing mined
    html = render.overview_live(_overview_status(5), chain[::-1], chain, [])
    assert re.search(r'id="useful-work">4\.4%<', html)
    assert "17 steps" in html and "384" in html and "estimate" in html


def _overview_status(height, mining=None, peers=0):
    return {"height": height, "tip": f"{height:064x}", "syncing": False, "peers": peers, "peers_known": 0,
            "cumulative_work": 999, "difficulty": 6, "tip_accuracy": {"correct": 50 + height, "of": 500},
            "last_block_age_s": 3.0, "sync": {"best_peer_height": None},
            "mining": mining or {"enabled": False}}


def test_overview_has_six_cards_and_no_rate_estimate():
    chain = _chain([60, 53, 87])
    mining = {"enabled": True, "attempts_per_second": 327.3,
              "current": {"height": 4, "difficulty": 6, "attempts": 256, "seconds": 30.0, "expected_attempts": 64,
                          "r_hits": 2, "acc_floor_failed": 1, "acc_borderline_failed": 0, "restarts": 0}}
    html = render.overview_live(_overview_status(3, mining), chain[::-1], chain, [])
    assert html.count('<div class="card"') == 6
    assert "per block at" not in html and "400%" not in html and "(400" not in html


def test_current_block_held_back_adds_up():
    cur = {"height": 8, "difficulty": 6, "attempts": 256, "seconds": 40.0, "expected_attempts": 64, "r_hits": 2,
           "acc_floor_failed": 1, "acc_borderline_failed": 0, "restarts": 0}
    html = render.current_block(_status(7, {"enabled": True, "attempts_per_second": 2.0, "current": cur}))
    text = re.sub(r"<[^>]+>", "", html)
    assert "held back: 2 (1 + 0)" not in text
    # every hit is accounted for: held back (floor + borderline) and passed (the block being published)
    assert re.search(r"R met 2 times: 1 held back \(1 below the accuracy floor, 0 borderline\), 1 passed", text), text
    assert "256 attempts = 4.0 × 2^6" in text and "%" not in text
    cur.update(r_hits=3, acc_floor_failed=2, acc_borderline_failed=1)
    text = re.sub(r"<[^>]+>", "", render.current_block(_status(7, {"enabled": True, "attempts_per_second": 2.0,
                                                                  "current": cur})))
    assert "R met 3 times: 3 held back (2 below the accuracy floor, 1 borderline)" in text and "passed" not in text


def test_blocks_table_shows_accuracy_in_percent_with_the_count():
    chain = _chain([60, 53])
    html = render.blocks_table(chain[::-1], chain)
    row = re.search(r'<tr data-height="2">.*?</tr>', html).group(0)
    assert "10.4%" in row and 'title="claimed in the header: 51 → 52 of 500' in row
    assert "accuracy on E" in html and "accuracy claim</th>" not in html


def test_learning_curve_rows_and_csv():
    chain = _chain([60, 53])
    chain[2]["accuracy"]["measured_after"] = 52
    rows = render.curve_rows(chain)
    assert [r["height"] for r in rows] == [0, 1, 2]
    assert rows[2] == {"height": 2, "hash": chain[2]["hash"], "timestamp_ms": chain[2]["header"]["timestamp_ms"],
                       "interval_s": 53.0, "difficulty": 6, "steps": 3, "claimed_correct": 52,
                       "measured_correct": 52, "of": 500, "accuracy": 0.104}
    assert rows[1]["interval_s"] is None and rows[1]["measured_correct"] is None and rows[1]["accuracy"] == 0.102
    assert rows[0]["steps"] == 0
    csv_text = render.curve_csv(rows)
    lines = csv_text.splitlines()
    assert lines[0] == "height,hash,timestamp_ms,interval_s,difficulty,steps,claimed_correct,measured_correct,of,accuracy"
    assert lines[3].startswith(f"2,{chain[2]['hash']},") and lines[3].endswith(",53.0,6,3,52,52,500,0.104")
    assert lines[2].split(",")[3] == "" and len(lines) == 4


def test_miner_shares_are_of_the_blocks_counted():
    """The ten most frequent miners of 100 blocks: each share is of the 100 blocks, not of the ten's sum."""
    miners = [(f"{i:02x}" * 32, 5) for i in range(10)]             # 50 of 100 blocks; 50 more by others
    html = render.miners_section(miners, 100)
    assert "Miners of the latest 100 blocks" in html
    assert html.count(">5%</td>") == 10 and "10%" not in html
