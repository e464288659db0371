"""The report's charts, inline SVG drawn in Python (the page needs no network nor JavaScript to
show them): `line_chart` (ROC, PR, calibration, metrics over time), `bar_chart` (the slice
comparison), and their round ticks and ranges.
"""
from __future__ import annotations

import dataclasses
import html
import math
from typing import Any, Callable, Sequence

from pipeline.report.labels import finite, fmt, fmt_count, fmt_tick

PALETTE = ('#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2',
           '#17becf', '#7f7f7f', '#bcbd22')


@dataclasses.dataclass
class Series:
    """One line of a chart: its legend label and its points (None-free, finite)."""
    label: str
    xs: list[float]
    ys: list[float]
    kind: str = 'curve'           # data-kind of the polyline, for tests and styling
    markers: bool = False
    color: str | None = None      # None: the palette's colour for the series' position
    strong: bool = False          # drawn thicker (Overall among slices)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    step = _nice_step((hi - lo) / max(n - 1, 1))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `raw` (> 0)."""
    mag = 10 ** math.floor(math.log10(raw))
    return next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw * (1 - 1e-12))


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600,
               6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400)


def time_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` tick times (epoch seconds) on round UTC seconds, minutes, hours or days."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    step = next((s for s in _TIME_STEPS if s >= raw), None)
    if step is None:  # beyond four weeks apart: round numbers of days
        step = 86400 * _nice_step(raw / 86400)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) // step) + 1)]


def value_range(values: Sequence[float], default: tuple[float, float]) -> tuple[float, float]:
    if not values:
        return default
    lo, hi = min(values), max(values)
    if lo == hi:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.04
    return lo - pad, hi + pad


@dataclasses.dataclass
class _Plot:
    """A line chart's plotting area in pixels and the data ranges it spans."""
    left: int
    top: int
    pw: int
    ph: int
    x0: float
    x1: float
    y0: float
    y1: float

    def sx(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.pw

    def sy(self, y: float) -> float:
        return self.top + self.ph - (y - self.y0) / (self.y1 - self.y0) * self.ph


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
               x_range: tuple[float, float] | None = None,
               y_range: tuple[float, float] | None = None, diagonal: bool = False,
               x_format: Callable[[float], str] | None = None,
               x_ticks: Callable[[float, float], list[float]] | None = None,
               chart: str = 'curve', width: int = 340,
               height: int = 260) -> str:
    """An inline SVG line chart; each series one `<polyline>` carrying its points in data space
    order (`data-points` = its number of points)."""
    left, right, top, bottom = 52, 26, 24, 40
    pw, ph = width - left - right, height - top - bottom
    # The legend goes under the plot, so that it never hides a line.
    legend = [s.label or '(pooled)' for s in series] if (
        len(series) > 1 or (series and series[0].label)) else []
    per_row = max(pw // 110, 1)
    height += 14 * math.ceil(len(legend) / per_row) + (4 if legend else 0)
    all_x = [x for s in series for x in s.xs]
    all_y = [y for s in series for y in s.ys]
    x0, x1 = x_range or value_range(all_x, (0.0, 1.0))
    y0, y1 = y_range or value_range(all_y, (0.0, 1.0))
    fx = x_format or fmt_tick
    p = _Plot(left, top, pw, ph, x0, x1, y0, y1)

    out = ['<svg class="chart" data-chart="%s" viewBox="0 0 %d %d" width="%d" height="%d" '
           'role="img" xmlns="http://www.w3.org/2000/svg">'
           % (_e(chart), width, height, width, height),
           '<title>%s</title>' % _e(title),
           '<text class="ctitle" x="%d" y="15">%s</text>' % (left, _e(title))]
    out += _axes(p, x_ticks or nice_ticks, fx, x_label, y_label, bottom)
    if diagonal:
        lo, hi = max(x0, y0), min(x1, y1)
        if hi > lo:
            out.append('<line class="diag" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>'
                       % (p.sx(lo), p.sy(lo), p.sx(hi), p.sy(hi)))
    if not any(s.xs for s in series):
        out.append('<text class="empty" x="%.1f" y="%.1f" text-anchor="middle">no data</text>'
                   % (left + pw / 2, top + ph / 2))
    out += _lines(p, series, fx)
    for i, label in enumerate(legend):
        x = left + 110 * (i % per_row)
        y = top + ph + bottom + 10 + 14 * (i // per_row)
        out.append('<rect x="%d" y="%d" width="8" height="8" fill="%s"/>'
                   % (x, y - 7, series[i].color or PALETTE[i % len(PALETTE)]))
        out.append('<text class="legend" x="%d" y="%d">%s<title>%s</title></text>'
                   % (x + 11, y, _e(_short(label, 16)), _e(label)))
    out.append('</svg>')
    return ''.join(out)


def _axes(p: _Plot, x_ticks: Callable[[float, float], list[float]],
          fx: Callable[[float], str], x_label: str, y_label: str, bottom: int) -> list[str]:
    """The grid lines and tick labels of both axes, the frame and the axis titles."""
    out = []
    for t in x_ticks(p.x0, p.x1):
        if p.x0 <= t <= p.x1:
            out.append('<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>'
                       % (p.sx(t), p.top, p.sx(t), p.top + p.ph))
            out.append('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>'
                       % (p.sx(t), p.top + p.ph + 13, _e(fx(t))))
    for t in nice_ticks(p.y0, p.y1):
        if p.y0 <= t <= p.y1:
            out.append('<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>'
                       % (p.left, p.sy(t), p.left + p.pw, p.sy(t)))
            out.append('<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>'
                       % (p.left - 4, p.sy(t) + 3, _e(fmt_tick(t))))
    out.append('<rect class="frame" x="%d" y="%d" width="%d" height="%d"/>'
               % (p.left, p.top, p.pw, p.ph))
    out.append('<text class="axis" x="%.1f" y="%d" text-anchor="middle">%s</text>'
               % (p.left + p.pw / 2, p.top + p.ph + bottom - 6, _e(x_label)))
    out.append('<text class="axis" transform="translate(12,%.1f) rotate(-90)" '
               'text-anchor="middle">%s</text>' % (p.top + p.ph / 2, _e(y_label)))
    return out


def _lines(p: _Plot, series: Sequence[Series], fx: Callable[[float], str]) -> list[str]:
    """Each series with points as a polyline, with its points marked when asked (or alone)."""
    out = []
    for i, s in enumerate(series):
        if not s.xs:
            continue  # nothing to draw; the legend still lists it
        color = s.color or PALETTE[i % len(PALETTE)]
        pts = ' '.join('%.2f,%.2f' % (p.sx(x), p.sy(y)) for x, y in zip(s.xs, s.ys))
        out.append('<polyline class="series%s" data-kind="%s" data-series="%s" '
                   'data-points="%d" fill="none" stroke="%s" points="%s"><title>%s</title>'
                   '</polyline>' % (' strong' if s.strong else '', _e(s.kind), _e(s.label),
                                    len(s.xs), color, pts, _e(s.label)))
        if s.markers or len(s.xs) == 1:
            for x, y in zip(s.xs, s.ys):
                out.append('<circle cx="%.2f" cy="%.2f" r="2.5" fill="%s"><title>%s: %s, %s'
                           '</title></circle>' % (p.sx(x), p.sy(y), color, _e(s.label),
                                                  _e(fx(x)), _e(fmt(y))))
    return out


def _bar_row(i: int, label: str, v: float | None, n: int | None, sx: Any, y: int, row: int,
             left: int, pw: int, width: int, bound: tuple | None, interval: tuple | None
             ) -> list[str]:
    """One row of `bar_chart`: its band, label, whisker, error bar, dot and value text."""
    out = ['<g class="bar" data-slice="%s">' % _e(label)]
    if i % 2 == 0:
        out.append('<rect class="band" x="0" y="%d" width="%d" height="%d"/>' % (y, width, row))
    out.append('<text class="tick" x="%d" y="%d" text-anchor="end">%s<title>%s</title>'
               '</text>' % (left - 8, y + 12, _e(_short(label, 34)), _e(label)))
    if finite(v):
        if bound and finite(bound[0]) and finite(bound[1]):
            out.append('<line class="whisker" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>'
                       % (sx(bound[0]), y + 9, sx(bound[1]), y + 9))
        if interval and finite(interval[0]) and finite(interval[1]):
            out.append(_error_bar(sx(interval[0]), sx(interval[1]), y + 9,
                                  '%s: interval [%s, %s]' % (label, fmt(interval[0]),
                                                             fmt(interval[1]))))
        out.append('<circle class="dot" cx="%.1f" cy="%d" r="4"><title>%s: %s</title>'
                   '</circle>' % (sx(v), y + 9, _e(label), _e(fmt(v))))
    out.append('<text class="tick" x="%d" y="%d">%s  (n=%s)</text>'
               % (left + pw + 8, y + 12, _e(fmt(v)), _e(fmt_count(n))))
    out.append('</g>')
    return out


def bar_chart(labels: Sequence[str], values: Sequence[float | None],
              counts: Sequence[int | None], *, title: str,
              reference: float | None = None,
              bounds: Sequence[tuple[float | None, float | None]] | None = None,
              intervals: Sequence[tuple[float | None, float | None]] | None = None,
              width: int = 660) -> str:
    """An inline SVG dot plot, one row per label in the order given: the value as a dot (with
    its bounds as a whisker when given, and its confidence interval from `intervals` as an error
    bar with end caps), `reference` (the Overall value) as a dashed line.

    Dots rather than bars: slices of one head differ by little (auc 0.83 against 0.87), and an
    axis fitted to the values shows that difference where bars from zero would hide it."""
    row = 18
    left, right, top = 200, 130, 34
    height = top + row * len(labels) + 8
    pw = width - left - right
    known = [v for v in values if finite(v)]
    for lo, hi in list(bounds or []) + list(intervals or []):
        known += [b for b in (lo, hi) if finite(b)]
    if reference is not None and finite(reference):
        known.append(reference)
    lo_v, hi_v = value_range(known, (0.0, 1.0))

    def sx(v: float) -> float:
        return left + (v - lo_v) / (hi_v - lo_v) * pw

    out = ['<svg class="chart bars" data-chart="slices" viewBox="0 0 %d %d" width="%d" '
           'height="%d" role="img" xmlns="http://www.w3.org/2000/svg">'
           % (width, height, width, height),
           '<title>%s</title>' % _e(title),
           '<text class="ctitle" x="4" y="13">%s</text>' % _e(title)]
    for t in nice_ticks(lo_v, hi_v, 6):
        if lo_v <= t <= hi_v:
            out.append('<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>'
                       % (sx(t), top - 4, sx(t), top + row * len(labels)))
            out.append('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>'
                       % (sx(t), top - 7, _e(fmt_tick(t))))
    for i, (label, v, n) in enumerate(zip(labels, values, counts)):
        out += _bar_row(i, label, v, n, sx, top + i * row, row, left, pw, width,
                        bounds[i] if bounds else None, intervals[i] if intervals else None)
    if reference is not None and finite(reference):
        out.append('<line class="ref" x1="%.1f" y1="%d" x2="%.1f" y2="%d"><title>Overall %s'
                   '</title></line>' % (sx(reference), top - 4, sx(reference),
                                        top + row * len(labels), _e(fmt(reference))))
    out.append('</svg>')
    return ''.join(out)


def _error_bar(x0: float, x1: float, y: int, title: str) -> str:
    """A horizontal error bar from x0 to x1 at height y, with end caps."""
    return ('<g class="ci"><title>%s</title><line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>'
            '<line x1="%.1f" y1="%d" x2="%.1f" y2="%d"/><line x1="%.1f" y1="%d" x2="%.1f" '
            'y2="%d"/></g>' % (_e(title), x0, y, x1, y, x0, y - 4, x0, y + 4, x1, y - 4, x1,
                               y + 4))


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + '…'
