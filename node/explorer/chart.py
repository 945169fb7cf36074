"""Inline SVG charts (no script, no library): the learning curve and the difficulty over height."""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

W, H = 720, 250
LEFT, RIGHT, TOP, BOTTOM = 46, 46, 12, 28


@dataclass
class Point:
    height: int
    hash: str
    accuracy: float | None       # share of E the block's post-step model gets right
    interval: float | None       # seconds since the parent block (None at genesis)
    difficulty: int


def _x(height: float, lo: float, hi: float, width: int = W) -> float:
    span = max(hi - lo, 1)
    return LEFT + (height - lo) / span * (width - LEFT - RIGHT)


def _y(value: float, top_value: float, height: int = H, bottom_value: float = 0.0) -> float:
    span = top_value - bottom_value
    return height - BOTTOM - ((value - bottom_value) / span if span else 0) * (height - TOP - BOTTOM)


def int_ticks(lo: int, hi: int, n: int = 6) -> list[int]:
    """Whole-number ticks from ``lo`` to ``hi`` on multiples of a 1, 2 or 5 times 10^m step that cuts
    the range into about ``n`` parts (0, 10, 20, 30 for 0-33; not 0, 11, 22, 33)."""
    step = max(1, int(round(nice_step(hi - lo, n))))
    while True:
        ticks = list(range(-(-lo // step) * step, hi + 1, step))
        if len(ticks) >= 2 or step == 1:
            return ticks or [lo]
        step = step // 2 if str(step)[0] in "12" and step > 1 else step * 2 // 5   # 10 -> 5 -> 2 -> 1


def nice_step(span: float, n: int) -> float:
    """A 1, 2 or 5 times a power of ten step that cuts ``span`` into about ``n`` parts."""
    if span <= 0:
        return 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * 0.999)


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """Round values from ``lo`` up to ``hi`` (inclusive, within rounding), ``nice_step`` apart."""
    step = nice_step(hi - lo, n)
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def decimals_for(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0


def fit_range(values: list[float], lo_bound: float = 0.0, hi_bound: float = 1.0, pad: float = 0.1,
              least_span: float = 0.02) -> tuple[float, float]:
    """An axis range around ``values``: their span plus ``pad`` of it on each side (at least
    ``least_span`` in all), within the bounds, its ends on round values (the ticks are ``nice_ticks``
    inside it)."""
    if not values:
        return lo_bound, hi_bound
    lo, hi = min(values), max(values)
    span = max(hi - lo, least_span)
    mid = (lo + hi) / 2
    lo, hi = max(lo_bound, min(lo, mid - span / 2) - pad * span), min(hi_bound, max(hi, mid + span / 2) + pad * span)
    step = nice_step(hi - lo, 20)     # ends on round values, a twentieth of the range at most beyond the padding
    return max(lo_bound, math.floor(lo / step + 1e-9) * step), min(hi_bound, math.ceil(hi / step - 1e-9) * step)


def _frame(lo: int, hi: int, height: int, left_labels: list[tuple[float, str]], right_labels: list[tuple[float, str]],
           width: int = W, x_lo: float | None = None, x_hi: float | None = None):
    x_lo, x_hi = lo if x_lo is None else x_lo, hi if x_hi is None else x_hi
    out = [f'<line class="axis" x1="{LEFT}" y1="{height - BOTTOM}" x2="{width - RIGHT}" y2="{height - BOTTOM}"/>']
    for y, label in left_labels:
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}"/>'
                   f'<text class="y-left" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for y, label in right_labels:
        out.append(f'<text class="y-right" x="{width - RIGHT + 6}" y="{y + 4:.1f}">{label}</text>')
    for t in int_ticks(lo, hi, 6 if width >= W else 4):
        out.append(f'<text class="x-tick" x="{_x(t, x_lo, x_hi, width):.1f}" y="{height - 8}" '
                   f'text-anchor="middle">{t}</text>')
    return out


def interval_axis(longest: float, n: int = 3) -> tuple[float, list[float], list[str]]:
    """An axis for durations up to ``longest`` seconds: its top and ticks (seconds) and their labels.
    The unit (s under 2 minutes, m under 2 hours, else h) is chosen first, from ``longest``, and the
    ticks are nice numbers in it (0, 1, 2, 3 m; not 0 s, 50 s, 100 s, 2.5 m)."""
    longest = longest if longest > 0 else 1.0
    unit, scale = ("s", 1.0) if longest < 120 else ("m", 60.0) if longest < 7200 else ("h", 3600.0)
    step = nice_step(longest / scale, n)
    top = (math.floor(longest / scale / step + 1e-9) + 1) * step
    ticks = [i * step for i in range(round(top / step) + 1)]
    dec = decimals_for(step)
    return top * scale, [t * scale for t in ticks], [f"{t:.{dec}f}{unit}" for t in ticks]


def learning_curve(points: list[Point]) -> str:
    """Accuracy on E by height (line and one point per block) over the block intervals (bars). The
    accuracy axis is fitted to the data (a ResNet's 10-20 % would be a flat line on 0-100 %); the
    x-axis runs half a block beyond the first and last heights, so every bar lies inside the plot."""
    if not points:
        return '<svg id="acc-chart" data-points="0"></svg>'
    lo, hi = points[0].height, points[-1].height
    x_lo, x_hi = lo - 0.5, hi + 0.5
    intervals = [p.interval for p in points if p.interval]
    top_interval, i_ticks, i_labels = interval_axis(max(intervals, default=1.0))
    known = [p for p in points if p.accuracy is not None]
    a_lo, a_hi = fit_range([p.accuracy for p in known])
    a_ticks = [v for v in nice_ticks(a_lo, a_hi, 5) if a_lo - 1e-9 <= v <= a_hi + 1e-9]
    a_dec = decimals_for(nice_step(a_hi - a_lo, 5) * 100)
    plot_w = W - LEFT - RIGHT
    bar_w = max(1.0, plot_w / (x_hi - x_lo) * 0.7)
    out = [f'<svg id="acc-chart" viewBox="0 0 {W} {H}" role="img" aria-label="accuracy on E by height" '
           f'data-points="{len(points)}" data-first="{lo}" data-last="{hi}" data-acc-lo="{a_lo:.4f}" '
           f'data-acc-hi="{a_hi:.4f}">']
    out += _frame(lo, hi, H, [(_y(v, a_hi, H, a_lo), f"{v * 100:.{a_dec}f}%") for v in a_ticks],
                  [(_y(v, top_interval), label) for v, label in zip(i_ticks, i_labels)],
                  x_lo=x_lo, x_hi=x_hi)
    for p in points:
        if p.interval is not None:
            x, y = _x(p.height, x_lo, x_hi), _y(max(p.interval, 0.0), top_interval)
            out.append(f'<rect class="interval" x="{x - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                       f'height="{H - BOTTOM - y:.1f}"><title>block {p.height}: {p.interval:.1f} s after its '
                       f'parent</title></rect>')
    path = " ".join(f"{_x(p.height, x_lo, x_hi):.1f},{_y(p.accuracy, a_hi, H, a_lo):.1f}" for p in known)
    out.append(f'<polyline class="acc-line" points="{path}"/>')
    for p in known:
        out.append(f'<circle class="point" r="2.6" cx="{_x(p.height, x_lo, x_hi):.1f}" '
                   f'cy="{_y(p.accuracy, a_hi, H, a_lo):.1f}" data-height="{p.height}" data-hash="{escape(p.hash)}">'
                   f'<title>block {p.height}: {p.accuracy * 100:.1f}% on E</title></circle>')
    out.append("</svg>")
    return "".join(out)


def difficulty_chart(points: list[Point]) -> str:
    """Difficulty k by height, as steps."""
    width, height = 360, 250
    if not points:
        return '<svg id="k-chart" data-points="0"></svg>'
    lo, hi = points[0].height, points[-1].height
    k_max = max(p.difficulty for p in points)
    step = max(1, int(round(nice_step(k_max + 1, 3))))
    top = (k_max // step + 1) * step                  # a tick above the highest k: 0, 5, 10, 15 for k = 13
    k_ticks = list(range(0, top + 1, step))
    out = [f'<svg id="k-chart" viewBox="0 0 {width} {height}" role="img" aria-label="difficulty by height" '
           f'data-points="{len(points)}">']
    out += _frame(lo, hi, height, [(_y(v, top, height), str(v)) for v in k_ticks], [], width)
    steps, prev_y = [], None
    for p in points:
        x, y = _x(p.height, lo, hi, width), _y(p.difficulty, top, height)
        if prev_y is not None:
            steps.append(f"{x:.1f},{prev_y:.1f}")
        steps.append(f"{x:.1f},{y:.1f}")
        prev_y = y
    out.append(f'<polyline class="k-line" points="{" ".join(steps)}"/>')
    out += [f'<circle class="k-point" r="2" cx="{_x(p.height, lo, hi, width):.1f}" cy="{_y(p.difficulty, top, height):.1f}">'
            f'<title>block {p.height}: k={p.difficulty}</title></circle>' for p in points]
    out.append("</svg>")
    return "".join(out)
