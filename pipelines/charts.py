"""Static inline SVG charts for the eval report: no scripts, no external files.

Every function returns one `<svg>` element as text. Marks carry their values in data-*
attributes and a <title> (the browser's tooltip), so tests and readers can check a mark
against its number. Run i is drawn in PALETTE[i % len(PALETTE)].
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PALETTE", "Scale", "bars", "distribution", "pair_scatter", "points"]

# Colour-blind-safe (Okabe-Ito), in the runs' order.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#000000")
_W, _H = 560, 300
_M = (48, 16, 40, 56)  # margins: left, right, top, bottom
_FONT = 'font-family="system-ui,sans-serif" font-size="11"'


@dataclass(frozen=True)
class Scale:
    """Linear map from [lo, hi] to pixels [start, end] (end < start for y)."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo or 1.0
        return self.start + (value - self.lo) / span * (self.end - self.start)


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _nice_max(value: float) -> float:
    """A round upper bound >= value (1, 2 or 5 times a power of ten)."""
    if not value > 0 or math.isinf(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def _svg(label: str, body: list[str], width: int = _W, height: int = _H) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(label)}" {_FONT}>'
        f"<title>{_esc(label)}</title>{''.join(body)}</svg>"
    )


def _axes(x: Scale, y: Scale, x_label: str, y_label: str, x_ticks: Sequence[float]) -> list[str]:
    """Frame, ticks and labels; y gets five ticks over its range."""
    out = [
        f'<line x1="{x.start}" y1="{y.start}" x2="{x.end}" y2="{y.start}" stroke="#444"/>',
        f'<line x1="{x.start}" y1="{y.start}" x2="{x.start}" y2="{y.end}" stroke="#444"/>',
    ]
    for t in x_ticks:
        px = x(t)
        out.append(
            f'<line x1="{px:.1f}" y1="{y.start}" x2="{px:.1f}" y2="{y.start + 4}" stroke="#444"/>'
        )
        out.append(f'<text x="{px:.1f}" y="{y.start + 15}" text-anchor="middle">{t:g}</text>')
    for k in range(5):
        value = y.lo + (y.hi - y.lo) * k / 4
        py = y(value)
        out.append(f'<line x1="{x.start}" y1="{py:.1f}" x2="{x.end}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x.start - 4}" y="{py + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    mid_x, mid_y = (x.start + x.end) / 2, (y.start + y.end) / 2
    out.append(
        f'<text x="{mid_x:.1f}" y="{y.start + 32}" text-anchor="middle">{_esc(x_label)}</text>'
    )
    out.append(
        f'<text x="12" y="{mid_y:.1f}" text-anchor="middle"'
        f' transform="rotate(-90 12 {mid_y:.1f})">{_esc(y_label)}</text>'
    )
    return out


def _legend(names: Sequence[str], x0: float, y0: float) -> list[str]:
    out = []
    for i, name in enumerate(names):
        y = y0 + 14 * i
        out.append(f'<rect x="{x0}" y="{y - 8}" width="10" height="10" fill="{_colour(i)}"/>')
        out.append(f'<text x="{x0 + 14}" y="{y + 1}">{_esc(name)}</text>')
    return out


def _frame() -> tuple[float, float, float, float]:
    left, right, top, bottom = _M
    return left, _W - right, top, _H - bottom


def distribution(
    series: Sequence[tuple[str, Sequence[float]]],
    label: str,
    *,
    lo: float = 0.0,
    hi: float = 1.0,
    bins: int = 20,
) -> str:
    """Per run, the share of images in each of `bins` equal bins over [lo, hi] (values outside
    are clipped into the end bins), as a step line; one <polyline data-run data-counts> each."""
    x0, x1, y0, y1 = _frame()
    counts = []
    for _, values in series:
        c = [0] * bins
        for v in values:
            k = int((min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0) * bins)
            c[min(k, bins - 1)] += 1
        counts.append(c)
    shares = [[n / max(1, sum(c)) for n in c] for c in counts]
    x = Scale(lo, hi, x0, x1)
    y = Scale(0.0, _nice_max(max((s for sh in shares for s in sh), default=0.0)), y1, y0)
    body = _axes(x, y, label, "share of images", [lo + (hi - lo) * k / 5 for k in range(6)])
    for i, ((name, _), share, c) in enumerate(zip(series, shares, counts, strict=True)):
        pts = []
        for k, s in enumerate(share):
            a, b = lo + (hi - lo) * k / bins, lo + (hi - lo) * (k + 1) / bins
            pts += [f"{x(a):.1f},{y(s):.1f}", f"{x(b):.1f},{y(s):.1f}"]
        body.append(
            f'<polyline data-run="{i}" data-counts="{",".join(map(str, c))}" fill="none"'
            f' stroke="{_colour(i)}" stroke-width="2" points="{" ".join(pts)}">'
            f"<title>{_esc(name)}</title></polyline>"
        )
    body += _legend([n for n, _ in series], x0 + 8, y0 + 8)
    return _svg(f"distribution of {label} per run", body)


def bars(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[tuple[float, float, float]]]],
    label: str,
    *,
    lo: float = 0.0,
    hi: float | None = None,
) -> str:
    """Grouped bars: per group, one bar per run of height mean with a whisker from low to
    high (mean, low, high per group and run; NaN draws nothing). Each bar is a
    <rect data-run data-group data-mean data-low data-high>."""
    x0, x1, y0, y1 = _frame()
    top = (
        hi
        if hi is not None
        else _nice_max(
            max(
                (v for _, vals in series for t in vals for v in t if not math.isnan(v)), default=1.0
            )
        )
    )
    y = Scale(lo, top, y1, y0)
    slot = (x1 - x0) / max(1, len(groups))
    width = slot * 0.8 / max(1, len(series))
    body = _axes(Scale(0, 1, x0, x1), y, "", label, [])
    for g, group in enumerate(groups):
        cx = x0 + slot * (g + 0.5)
        body.append(f'<text x="{cx:.1f}" y="{y1 + 15}" text-anchor="middle">{_esc(group)}</text>')
        for i, (name, values) in enumerate(series):
            mean, low, high = values[g]
            if math.isnan(mean):
                continue
            bx = x0 + slot * g + slot * 0.1 + width * i
            top_px = y(max(lo, mean))
            tip = f"{name} · {group}: {mean:.4f} [{low:.4f}, {high:.4f}]"
            body.append(
                f'<rect data-run="{i}" data-group="{_esc(group)}" data-mean="{mean:.6g}"'
                f' data-low="{low:.6g}" data-high="{high:.6g}" x="{bx:.1f}" y="{top_px:.1f}"'
                f' width="{width:.1f}" height="{max(0.0, y1 - top_px):.1f}" fill="{_colour(i)}">'
                f"<title>{_esc(tip)}</title></rect>"
            )
            if not math.isnan(low):
                wx = bx + width / 2
                body.append(
                    f'<line class="ci" x1="{wx:.1f}" y1="{y(low):.1f}" x2="{wx:.1f}"'
                    f' y2="{y(high):.1f}" stroke="#222" stroke-width="1.5"/>'
                )
    body += _legend([n for n, _ in series], x1 - 150, y0 + 8)
    return _svg(f"{label} per group and run, with 95% intervals", body)


def points(marks: Sequence[tuple[str, float, float]], x_label: str, y_label: str) -> str:
    """One labelled point per run at (x, y), e.g. seconds per image against mean iou; axes
    from 0 to a round bound above the largest value. Each is a <circle data-x data-y>."""
    x0, x1, y0, y1 = _frame()
    finite = [(n, a, b) for n, a, b in marks if math.isfinite(a) and math.isfinite(b)]
    x = Scale(0.0, _nice_max(max((a for _, a, _ in finite), default=1.0) * 1.1), x0, x1)
    y = Scale(0.0, _nice_max(max((b for _, _, b in finite), default=1.0)), y1, y0)
    body = _axes(x, y, x_label, y_label, [x.hi * k / 5 for k in range(6)])
    for i, (name, a, b) in enumerate(marks):
        if (name, a, b) not in finite:
            continue
        body.append(
            f'<circle data-run="{i}" data-x="{a:.6g}" data-y="{b:.6g}" cx="{x(a):.1f}"'
            f' cy="{y(b):.1f}" r="6" fill="{_colour(i)}"><title>{_esc(name)}: {b:.4f}'
            f" at {a:.3f}</title></circle>"
            f'<text x="{x(a) + 9:.1f}" y="{y(b) + 4:.1f}">{_esc(name)}</text>'
        )
    return _svg(f"{y_label} against {x_label}, one point per run", body)


def pair_scatter(
    name_a: str, name_b: str, marks: Sequence[tuple[str, float, float]], label: str
) -> str:
    """Per image (id, value of run A, value of run B) on [0, 1] x [0, 1] with the diagonal:
    points above it are images where B scored higher. Each is a <circle data-id data-a data-b>."""
    side = 320
    left, top = 48, 16
    x = Scale(0.0, 1.0, left, left + side - 64)
    y = Scale(0.0, 1.0, top + side - 64, top)
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    body = _axes(x, y, f"{label}: {name_a}", f"{label}: {name_b}", ticks)
    body.append(
        f'<line x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(1):.1f}" y2="{y(1):.1f}"'
        ' stroke="#999" stroke-dasharray="4 3"/>'
    )
    for sample_id, a, b in marks:
        body.append(
            f'<circle data-id="{_esc(sample_id)}" data-a="{a:.6g}" data-b="{b:.6g}"'
            f' cx="{x(a):.1f}" cy="{y(b):.1f}" r="3.5" fill="{_colour(0)}" fill-opacity="0.6">'
            f"<title>{_esc(sample_id)}: {a:.4f} vs {b:.4f}</title></circle>"
        )
    return _svg(f"{label} per image: {name_a} against {name_b}", body, side, side)
