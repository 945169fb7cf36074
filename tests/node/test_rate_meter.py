"""node.mining.RateMeter: the miner's attempts/s as /status, /metrics and the explorer show it."""
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
