"""Inline SVG charts (no script, no library): the learning curve and the difficulty over height."""
from __future__ import annotations

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


def _x(height: int, lo: int, hi: int, width: int = W) -> float:
    span = max(hi - lo, 1)
    return LEFT + (height - lo) / span * (width - LEFT - RIGHT)


def _y(value: float, top_value: float, height: int = H) -> float:
    return height - BOTTOM - (value / top_value if top_value else 0) * (height - TOP - BOTTOM)


def _ticks(lo: int, hi: int, n: int = 6) -> list[int]:
    step = max(1, -(-(hi - lo) // n))
    return list(range(lo, hi + 1, step))


def _frame(lo: int, hi: int, height: int, left_labels: list[tuple[float, str]], right_labels: list[tuple[float, str]],
           width: int = W):
    out = [f'<line class="axis" x1="{LEFT}" y1="{height - BOTTOM}" x2="{width - RIGHT}" y2="{height - BOTTOM}"/>']
    for y, label in left_labels:
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for y, label in right_labels:
        out.append(f'<text x="{width - RIGHT + 6}" y="{y + 4:.1f}">{label}</text>')
    for t in _ticks(lo, hi, 6 if width >= W else 4):
        out.append(f'<text x="{_x(t, lo, hi, width):.1f}" y="{height - 8}" text-anchor="middle">{t}</text>')
    return out


def _seconds(v: float) -> str:
    return f"{v:.0f}s" if v < 120 else f"{v / 60:.0f}m" if v < 7200 else f"{v / 3600:.0f}h"


def learning_curve(points: list[Point]) -> str:
    """Accuracy on E by height (line and one point per block) over the block intervals (bars)."""
    if not points:
        return '<svg id="acc-chart" data-points="0"></svg>'
    lo, hi = points[0].height, points[-1].height
    top_interval = max((p.interval for p in points if p.interval), default=1.0) * 1.1
    bar_w = max(1.0, (W - LEFT - RIGHT) / max(len(points), 1) * 0.7)
    out = [f'<svg id="acc-chart" viewBox="0 0 {W} {H}" role="img" aria-label="accuracy on E by height" '
           f'data-points="{len(points)}" data-first="{lo}" data-last="{hi}">']
    out += _frame(lo, hi, H, [(_y(v, 1.0), f"{int(v * 100)}%") for v in (0, .25, .5, .75, 1)],
                  [(_y(v, top_interval), _seconds(v)) for v in (0, top_interval / 2, top_interval / 1.1)])
    for p in points:
        if p.interval is not None:
            x, y = _x(p.height, lo, hi), _y(max(p.interval, 0.0), top_interval)
            out.append(f'<rect class="interval" x="{x - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                       f'height="{H - BOTTOM - y:.1f}"><title>block {p.height}: {p.interval:.1f} s after its '
                       f'parent</title></rect>')
    known = [p for p in points if p.accuracy is not None]
    path = " ".join(f"{_x(p.height, lo, hi):.1f},{_y(p.accuracy, 1.0):.1f}" for p in known)
    out.append(f'<polyline class="acc-line" points="{path}"/>')
    for p in known:
        out.append(f'<circle class="point" r="2.6" cx="{_x(p.height, lo, hi):.1f}" cy="{_y(p.accuracy, 1.0):.1f}" '
                   f'data-height="{p.height}" data-hash="{escape(p.hash)}"><title>block {p.height}: '
                   f'{p.accuracy * 100:.1f}% on E</title></circle>')
    out.append("</svg>")
    return "".join(out)


def difficulty_chart(points: list[Point]) -> str:
    """Difficulty k by height, as steps."""
    width, height = 360, 250
    if not points:
        return '<svg id="k-chart" data-points="0"></svg>'
    lo, hi = points[0].height, points[-1].height
    top = max(p.difficulty for p in points) + 1
    out = [f'<svg id="k-chart" viewBox="0 0 {width} {height}" role="img" aria-label="difficulty by height" '
           f'data-points="{len(points)}">']
    out += _frame(lo, hi, height, [(_y(v, top, height), str(v)) for v in sorted({0, top // 2, top - 1})], [], width)
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
