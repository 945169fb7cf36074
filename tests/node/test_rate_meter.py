"""node.mining: RateMeter (the miner's attempts/s as /status, /metrics and the explorer show it) and the progress line."""
from __future__ import annotations

from node.mining import RateMeter


def test_passes_seconds_apart_never_read_as_zero():
    """ResNet-18's fast miner counts 16 candidates per pass, one pass every 4 s; /status read each
    second showed 0.0 in 9 of 10 samples with the old 2 s window (issue 21.5)."""
    meter = RateMeter(now=0.0)
    count, rates = 0, []
    for t in range(1, 121):
        if t % 4 == 0:
            count += 16
        rates.append(meter.rate(float(t), count))
    steady = rates[20:]
    assert all(3.0 <= r <= 4.5 for r in steady), steady
    assert abs(rates[-1] - 4.0) < 0.3


def test_a_stopped_miner_reads_zero_after_the_window():
    meter = RateMeter(now=0.0, window=60.0)
    for t in range(1, 61):
        meter.rate(float(t), 10 * t)
    assert meter.rate(60.0, 600) == 10.0
    for t in range(61, 200):
        r = meter.rate(float(t), 600)
    assert r == 0.0


def test_nothing_counted_yet_is_zero_not_a_division():
    meter = RateMeter(now=5.0, count=7)
    assert meter.rate(5.0, 7) == 0.0 and meter.rate(6.0, 7) == 0.0
    assert meter.rate(6.5, 23) == 16 / 1.5


# -- the progress line (issue 31.8) -------------------------------------------------------------------
def _search(**kw) -> dict:
    cur = {"height": 7, "difficulty": 6, "seconds": 63.0, "expected_attempts": 64, "attempts": 0, "r_hits": 0,
           "acc_floor_failed": 0, "acc_borderline_failed": 0, "restarts": 0}
    cur.update(kw)
    return cur


def test_progress_line_before_the_first_pass_ends_says_so():
    from node.mining import progress_line
    line = progress_line(_search(), 0.0)
    assert "first pass of candidates still running" in line and "0 attempts" not in line and len(line) < 120


def test_progress_line_is_short_and_gives_the_rate_and_time_per_block():
    from node.mining import progress_line
    line = progress_line(_search(attempts=128, seconds=60.0), 2.0)
    assert line == "mining height 7 k=6: 128 attempts in 60 s (2.0/s; 64 expected, ~32 s per block)"
    line = progress_line(_search(attempts=128, r_hits=3, acc_floor_failed=2, acc_borderline_failed=1), 0.01)
    assert "~107 min per block" in line and line.endswith("3 R hits not published (2 below the floor, 1 borderline)")
    assert len(line) < 160 and "tie" not in line        # the borderline explanation is logged once, elsewhere
