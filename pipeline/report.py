"""`report.html`: one self-contained page built from a run's Parquet outputs alone.

    headstream report OUTPUT_DIR        (also `python -m pipeline.report OUTPUT_DIR`)

Reads `metrics/*.parquet`, `plots/*.parquet` and `summary.json` (when present) under OUTPUT_DIR
(local or gs://, through Beam's FileSystems) and writes `OUTPUT_DIR/report.html`. The command
refuses a directory without a complete run (a batch output needs a summary.json of ours whose
every listed file is there; see pipeline/writers/publish.py); `write_report` itself does not
check. Every chart is
an inline SVG drawn here in Python, so the page needs no network and renders without JavaScript;
a few lines of inline JavaScript only add table sorting and a slice filter.

Per head the page shows: the headline metrics per slice (a sortable table), a slice comparison
(one metric per slice with its example count, worst slices first), per slice the ROC and PR curves
(from the `confusion` rows), the calibration plot (`calibration` rows) and the confusion matrix at
the head's thresholds, and, for runs with several windows or steps, each metric over time.
Runs with windows or steps show their latest window (step) in everything but the over-time charts.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import html
import json
import math
import os
import re
import sys
import threading
import uuid
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema

REPORT_FILE = 'report.html'
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            'templates', 'report')
if not os.path.isdir(TEMPLATE_DIR):
    # An installed package (a Dataflow or Dask worker, which writes the report at the end of a
    # run) has no source tree: setup.py ships templates/ as the `headstream_templates` package.
    import importlib.util
    _spec = importlib.util.find_spec('headstream_templates')
    if _spec is not None and _spec.submodule_search_locations:
        TEMPLATE_DIR = os.path.join(list(_spec.submodule_search_locations)[0], 'report')
TEMPLATE_NAME = 'report.html.j2'

# A curve of more points than this is thinned (evenly, ends kept): TFMA-sized histograms of
# 10 000 thresholds would otherwise make a 50-slice page weigh tens of megabytes.
MAX_CURVE_POINTS = 1000
# Metrics whose smaller values are better; every other metric is taken as larger-is-better when
# ordering slices worst first.
_LOWER_IS_BETTER = re.compile(r'(^|/)(loss|average_loss|mean_squared_error|'
                              r'mean_absolute_error|root_mean_squared_error)(/|$)')
# The metric a slice comparison ranks by: the first of these a head has, else its first metric.
_PRIMARY_METRICS = ('auc', 'accuracy', 'average_loss', 'loss')
_HEADLINE_ORDER = ('auc', 'auc_precision_recall', 'accuracy', 'average_loss', 'loss')
# Head thresholds as tf.estimator spells them in metric keys ('accuracy/positive_threshold_0.5').
_THRESHOLD_KEY = re.compile(r'_threshold_([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$')
_OVER_TIME_SHOWN = 4      # metrics charted over time before the rest fold away
_OVER_TIME_SLICES = 5     # slices besides Overall drawn in an over-time chart (the worst ones)
_PALETTE = ('#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2',
            '#17becf', '#7f7f7f', '#bcbd22')


# ----------------------------------------------------------------------------------------------
# Reading the outputs


def _join(directory: str, name: str) -> str:
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.join(directory.rstrip('/'), name)


_REQUIRED = {'metrics': ('slice', 'head', 'metric', 'value'),
             'plots': ('slice', 'head', 'sub_key', 'curve')}


def _read_tables(output_dir: str, kind: str) -> pa.Table | None:
    """All `<kind>/*.parquet` files under `output_dir` as one table; None when there are none.

    Raises:
      ValueError: a file cannot be read, or lacks a column the page needs (naming file and
        column).
    """
    from apache_beam.io.filesystem import BeamIOError
    from apache_beam.io.filesystems import FileSystems
    pattern = _join(output_dir, '%s/*.parquet' % kind)
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except BeamIOError as e:
        # Listing failed (a missing bucket, no permission): say so rather than "no files".
        raise FileNotFoundError('headstream report: cannot list %s: %s' % (pattern, e)) from e
    paths = sorted(m.path for m in matches)
    if not paths:
        return None
    tables = []
    for path in paths:
        try:
            with FileSystems.open(path) as f:
                # One file's whole table: ParquetFile reads it as read_table would, without
                # importing pyarrow.dataset (which read_table needs for directories; ~10 ms).
                tables.append(pq.ParquetFile(pa.BufferReader(f.read())).read())
        except Exception as e:
            raise ValueError('headstream report: cannot read %s: %s' % (path, e)) from e
        missing = [c for c in _REQUIRED[kind] if c not in tables[-1].column_names]
        if missing:
            raise ValueError('headstream report: %s lacks column(s) %s (the %s table\'s '
                             'layout is in pipeline/schema.py)'
                             % (path, ', '.join(missing), kind))
    # Files of one run share a schema; files of different runs may differ in the optional
    # window/step columns, which promotion fills with nulls.
    return pa.concat_tables(tables, promote_options='default')


def _read_summary(output_dir: str) -> dict | None:
    from apache_beam.io.filesystems import FileSystems
    path = _join(output_dir, 'summary.json')
    try:
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as f:
            return json.loads(f.read().decode('utf-8'))
    except (ValueError, OSError):
        return None  # a summary is decoration: a broken one must not hide the metrics


def _require(table: pa.Table, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError('headstream report: the %s lacks column(s) %s (its layout is in '
                         'pipeline/schema.py)' % (what, ', '.join(missing)))


def _rows(table: pa.Table | None) -> list[dict[str, Any]]:
    return [] if table is None else table.to_pylist()


# ----------------------------------------------------------------------------------------------
# Numbers and labels


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt(v: Any) -> str:
    """A number as the page shows it: 4 decimals, or 4 significant digits when very large or
    small; '—' for a missing or non-finite value."""
    if v is None:
        return '—'
    if isinstance(v, int) and not isinstance(v, bool):
        return '{:,}'.format(v)
    if not isinstance(v, float):
        return str(v)
    if not math.isfinite(v):
        return '—' if v != v else ('∞' if v > 0 else '−∞')
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return '%.4g' % v
    return '%.4f' % v


def fmt_count(v: Any) -> str:
    """A (weighted) count: whole numbers without decimals ('1,250'), others as `fmt`."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
        return '{:,}'.format(int(v))
    return fmt(v)


def _period_label(period: tuple) -> str:
    window, step = period
    parts = []
    if window is not None:
        parts.append('window %s' % _time_label(window))
    if step is not None:
        parts.append('step %d' % step)
    return ', '.join(parts)


def _time_label(t: Any) -> str:
    if isinstance(t, datetime.datetime):
        t = t.astimezone(datetime.timezone.utc)
        return t.strftime('%Y-%m-%d %H:%M:%S').replace(' 00:00:00', '') + 'Z'
    return str(t)


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is better (losses and errors)."""
    return bool(_LOWER_IS_BETTER.search(metric))


def head_thresholds(metric_keys: Iterable[str]) -> list[float]:
    """The classification thresholds named in a head's metric keys, ascending."""
    found = set()
    for key in metric_keys:
        m = _THRESHOLD_KEY.search(key)
        if m:
            found.add(float(m.group(1)))
    return sorted(found)


def not_ranked_reason(row: dict | None) -> str | None:
    """Why a metrics-table row's value says nothing about its slice (it is a 0/0 the head reports
    as tf.estimator does, 0), or None: the slice has no weight (`weighted_example_count` 0), or it
    is an auc row of 0 without bounds (its exact AUC is undefined: one class only; a table
    written by other means may have no bounds at all, and its auc rows are ranked)."""
    if row is None:
        return None
    if row.get('weighted_example_count') == 0:
        return 'no weight'
    if (row['metric'].split('/')[0] == 'auc' and row.get('lower_bound') is None
            and row.get('value') == 0):
        return 'auc undefined: one class only'
    return None


def rank_slices(slices: Sequence[str], cell: dict[tuple[str, str], dict], metric: str
                ) -> tuple[list[str], list[tuple[str, str]]]:
    """The slices other than Overall ranked worst first by `metric` (slices without a finite
    value last), and the (slice, reason) of those left out of the ranking: their value is a 0/0
    (`not_ranked_reason`) and would otherwise pass for the worst."""
    worse_high = lower_is_better(metric)
    ranked, left_out = [], []
    for s in slices:
        if s == schema.OVERALL:
            continue
        reason = not_ranked_reason(cell.get((s, metric)))
        if reason is None:
            ranked.append(s)
        else:
            left_out.append((s, reason))

    def key(s: str) -> tuple:
        v = cell.get((s, metric), {}).get('value')
        if not _finite(v):
            return (1, 0.0, s)
        return (0, -v if worse_high else v, s)
    return sorted(ranked, key=key), left_out


def _slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_-]+', '-', text).strip('-') or 'x'


# ----------------------------------------------------------------------------------------------
# SVG charts


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


def _range(values: Sequence[float], default: tuple[float, float]) -> tuple[float, float]:
    if not values:
        return default
    lo, hi = min(values), max(values)
    if lo == hi:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.04
    return lo - pad, hi + pad


def thin(n: int, limit: int = MAX_CURVE_POINTS) -> list[int]:
    """Indices of at most `limit` of `n` points, evenly spread, first and last kept."""
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
               x_range: tuple[float, float] | None = None,
               y_range: tuple[float, float] | None = None, diagonal: bool = False,
               x_format=None, x_ticks=None, chart: str = 'curve', width: int = 340,
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
    x0, x1 = x_range or _range(all_x, (0.0, 1.0))
    y0, y1 = y_range or _range(all_y, (0.0, 1.0))
    fx = x_format or fmt_tick

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    out = ['<svg class="chart" data-chart="%s" viewBox="0 0 %d %d" width="%d" height="%d" '
           'role="img" xmlns="http://www.w3.org/2000/svg">' % (_e(chart), width, height, width,
                                                                height),
           '<title>%s</title>' % _e(title),
           '<text class="ctitle" x="%d" y="15">%s</text>' % (left, _e(title))]
    for t in (x_ticks or nice_ticks)(x0, x1):
        if x0 <= t <= x1:
            out.append('<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>'
                       % (sx(t), top, sx(t), top + ph))
            out.append('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>'
                       % (sx(t), top + ph + 13, _e(fx(t))))
    for t in nice_ticks(y0, y1):
        if y0 <= t <= y1:
            out.append('<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>'
                       % (left, sy(t), left + pw, sy(t)))
            out.append('<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>'
                       % (left - 4, sy(t) + 3, _e(fmt_tick(t))))
    out.append('<rect class="frame" x="%d" y="%d" width="%d" height="%d"/>'
               % (left, top, pw, ph))
    out.append('<text class="axis" x="%.1f" y="%d" text-anchor="middle">%s</text>'
               % (left + pw / 2, top + ph + bottom - 6, _e(x_label)))
    out.append('<text class="axis" transform="translate(12,%.1f) rotate(-90)" '
               'text-anchor="middle">%s</text>' % (top + ph / 2, _e(y_label)))
    if diagonal:
        lo, hi = max(x0, y0), min(x1, y1)
        if hi > lo:
            out.append('<line class="diag" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>'
                       % (sx(lo), sy(lo), sx(hi), sy(hi)))
    if not any(s.xs for s in series):
        out.append('<text class="empty" x="%.1f" y="%.1f" text-anchor="middle">no data</text>'
                   % (left + pw / 2, top + ph / 2))
    for i, s in enumerate(series):
        if not s.xs:
            continue  # nothing to draw; the legend still lists it
        color = s.color or _PALETTE[i % len(_PALETTE)]
        pts = ' '.join('%.2f,%.2f' % (sx(x), sy(y)) for x, y in zip(s.xs, s.ys))
        out.append('<polyline class="series%s" data-kind="%s" data-series="%s" '
                   'data-points="%d" fill="none" stroke="%s" points="%s"><title>%s</title>'
                   '</polyline>' % (' strong' if s.strong else '', _e(s.kind), _e(s.label),
                                    len(s.xs), color, pts, _e(s.label)))
        if s.markers or len(s.xs) == 1:
            for x, y in zip(s.xs, s.ys):
                out.append('<circle cx="%.2f" cy="%.2f" r="2.5" fill="%s"><title>%s: %s, %s'
                           '</title></circle>' % (sx(x), sy(y), color, _e(s.label),
                                                  _e(fx(x)), _e(fmt(y))))
    for i, label in enumerate(legend):
        x = left + 110 * (i % per_row)
        y = top + ph + bottom + 10 + 14 * (i // per_row)
        out.append('<rect x="%d" y="%d" width="8" height="8" fill="%s"/>'
                   % (x, y - 7, series[i].color or _PALETTE[i % len(_PALETTE)]))
        out.append('<text class="legend" x="%d" y="%d">%s<title>%s</title></text>'
                   % (x + 11, y, _e(_short(label, 16)), _e(label)))
    out.append('</svg>')
    return ''.join(out)


def bar_chart(labels: Sequence[str], values: Sequence[float | None],
              counts: Sequence[int | None], *, title: str,
              reference: float | None = None,
              bounds: Sequence[tuple[float | None, float | None]] | None = None,
              width: int = 660) -> str:
    """An inline SVG dot plot, one row per label in the order given: the value as a dot (with
    its bounds as a whisker when given), `reference` (the Overall value) as a dashed line.

    Dots rather than bars: slices of one head differ by little (auc 0.83 against 0.87), and an
    axis fitted to the values shows that difference where bars from zero would hide it."""
    row = 18
    left, right, top = 200, 130, 34
    height = top + row * len(labels) + 8
    pw = width - left - right
    finite = [v for v in values if _finite(v)]
    for lo, hi in bounds or []:
        finite += [b for b in (lo, hi) if _finite(b)]
    if reference is not None and _finite(reference):
        finite.append(reference)
    lo_v, hi_v = _range(finite, (0.0, 1.0))

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
        y = top + i * row
        out.append('<g class="bar" data-slice="%s">' % _e(label))
        if i % 2 == 0:
            out.append('<rect class="band" x="0" y="%d" width="%d" height="%d"/>'
                       % (y, width, row))
        out.append('<text class="tick" x="%d" y="%d" text-anchor="end">%s<title>%s</title>'
                   '</text>' % (left - 8, y + 12, _e(_short(label, 34)), _e(label)))
        if _finite(v):
            if bounds and _finite(bounds[i][0]) and _finite(bounds[i][1]):
                out.append('<line class="whisker" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>'
                           % (sx(bounds[i][0]), y + 9, sx(bounds[i][1]), y + 9))
            out.append('<circle class="dot" cx="%.1f" cy="%d" r="4"><title>%s: %s</title>'
                       '</circle>' % (sx(v), y + 9, _e(label), _e(fmt(v))))
        out.append('<text class="tick" x="%d" y="%d">%s  (n=%s)</text>'
                   % (left + pw + 8, y + 12, _e(fmt(v)), _e(fmt_count(n))))
        out.append('</g>')
    if reference is not None and _finite(reference):
        out.append('<line class="ref" x1="%.1f" y1="%d" x2="%.1f" y2="%d"><title>Overall %s'
                   '</title></line>' % (sx(reference), top - 4, sx(reference),
                                        top + row * len(labels), _e(fmt(reference))))
    out.append('</svg>')
    return ''.join(out)


def fmt_tick(v: float) -> str:
    """A tick label: as few digits as the tick needs."""
    if v == 0:
        return '0'
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return '%.3g' % v
    return ('%.4f' % v).rstrip('0').rstrip('.')


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + '…'


# ----------------------------------------------------------------------------------------------
# The page's content


def _period(row: dict) -> tuple:
    return (row.get('window_start'), row.get('step'))


def _period_sort_key(period: tuple) -> tuple:
    window, step = period
    earliest = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    return (window is not None, window or earliest, step is not None, step or 0)


def _curves(rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """Plot rows → {sub_key: {'confusion': rows by threshold, 'calibration': rows by bucket}}."""
    out: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        out.setdefault(r.get('sub_key') or '', {}).setdefault(r.get('curve') or '', []).append(r)
    for by_curve in out.values():
        if 'confusion' in by_curve:
            by_curve['confusion'].sort(key=lambda r: (r.get('threshold') is None,
                                                      r.get('threshold') or 0.0))
        if 'calibration' in by_curve:
            by_curve['calibration'].sort(key=lambda r: (r.get('bucket_lower') is None,
                                                        r.get('bucket_lower') or 0.0))
    return out


def _sub_label(sub_key: str) -> str:
    return sub_key or '(pooled)'


def curve_points(rows: list[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    """The (x, y) columns of confusion rows with both values finite, thinned to
    MAX_CURVE_POINTS."""
    pts = [(r[x], r[y]) for r in rows if _finite(r.get(x)) and _finite(r.get(y))]
    keep = thin(len(pts))
    return [pts[i][0] for i in keep], [pts[i][1] for i in keep]


def calibration_points(rows: list[dict]) -> tuple[list[float], list[float]]:
    """(mean prediction, mean label) of every calibration bucket with positive weight."""
    xs, ys = [], []
    for r in rows:
        w = r.get('weighted_examples')
        if not _finite(w) or w <= 0:
            continue  # an empty bucket has no mean
        p, lab = r.get('weighted_predictions'), r.get('weighted_labels')
        if _finite(p) and _finite(lab):
            xs.append(p / w)
            ys.append(lab / w)
    keep = thin(len(xs))
    return [xs[i] for i in keep], [ys[i] for i in keep]


def _confusion_at(rows: list[dict], threshold: float) -> dict | None:
    """The confusion row at `threshold`, else the nearest one (marked `nearest`)."""
    candidates = [r for r in rows if _finite(r.get('threshold'))]
    if not candidates:
        return None
    best = min(candidates, key=lambda r: abs(r['threshold'] - threshold))
    out = dict(best)
    out['wanted'] = threshold
    out['nearest'] = abs(best['threshold'] - threshold) > 1e-9
    return out


def _slice_curves(plot_rows: list[dict], thresholds: list[float], head: str,
                  slice_label: str) -> dict:
    """The ROC, PR and calibration SVGs and the confusion matrices of one (head, slice)."""
    curves = _curves(plot_rows)
    roc, pr, cal = [], [], []
    matrices = []
    for sub_key, by_curve in curves.items():
        conf = by_curve.get('confusion', [])
        if conf:
            xs, ys = curve_points(conf, 'false_positive_rate', 'recall')
            roc.append(Series(_sub_label(sub_key), xs, ys, kind='roc'))
            xs, ys = curve_points(conf, 'recall', 'precision')
            pr.append(Series(_sub_label(sub_key), xs, ys, kind='pr'))
            for t in thresholds or [0.5]:
                m = _confusion_at(conf, t)
                if m is not None:
                    m['sub_key'] = _sub_label(sub_key)
                    matrices.append(m)
        cal_rows = by_curve.get('calibration', [])
        if cal_rows:
            xs, ys = calibration_points(cal_rows)
            cal.append(Series(_sub_label(sub_key), xs, ys, kind='calibration', markers=True))
    if len(roc) == 1 and roc[0].label == '(pooled)':
        roc[0].label = pr[0].label = ''
    if len(cal) == 1 and cal[0].label == '(pooled)':
        cal[0].label = ''
    charts = []
    what = '%s · %s' % (head, slice_label)
    if roc:
        charts.append(line_chart(roc, title='ROC · ' + what, x_label='false_positive_rate',
                                 y_label='recall', x_range=(0, 1), y_range=(0, 1),
                                 diagonal=True, chart='roc'))
        charts.append(line_chart(pr, title='PR · ' + what, x_label='recall',
                                 y_label='precision', x_range=(0, 1), y_range=(0, 1),
                                 chart='pr'))
    if cal:
        vals = [v for s in cal for v in s.xs + s.ys]
        rng = (0.0, 1.0) if all(0 <= v <= 1 for v in vals) else _range(vals, (0.0, 1.0))
        charts.append(line_chart(cal, title='Calibration · ' + what,
                                 x_label='mean prediction', y_label='mean label',
                                 x_range=rng, y_range=rng, diagonal=True, chart='calibration'))
    return {'charts': charts, 'matrices': matrices}


@dataclasses.dataclass
class _HeadView:
    name: str
    anchor: str
    metrics: list[str]
    rows: list[dict]             # per slice: label, cells, example_count, weighted_example_count
    primary: str | None
    comparison: str              # SVG
    not_ranked: list[str]        # 'slice (reason)' of the slices left out of the comparison
    slices: list[dict]           # per slice: label, anchor, charts, matrices
    over_time: list[str]         # SVGs shown
    over_time_more: list[str]    # SVGs folded away
    period_note: str
    thresholds: list[float]


def _head_view(head: str, metric_rows: list[dict], plot_rows: list[dict], time_axis: str | None,
               index: int) -> _HeadView:
    periods = sorted({_period(r) for r in metric_rows}, key=_period_sort_key)
    latest = periods[-1] if periods else (None, None)
    current = [r for r in metric_rows if _period(r) == latest]
    metrics = list(dict.fromkeys(r['metric'] for r in current))
    # The headline metrics come first in the table, so the first screen shows them without scrolling.
    metrics.sort(key=lambda m: _HEADLINE_ORDER.index(m) if m in _HEADLINE_ORDER
                 else len(_HEADLINE_ORDER))
    slices = list(dict.fromkeys(r['slice'] for r in current))
    if schema.OVERALL in slices:  # Overall first, the rest as the table has them
        slices.remove(schema.OVERALL)
        slices.insert(0, schema.OVERALL)
    cell: dict[tuple[str, str], dict] = {(r['slice'], r['metric']): r for r in current}
    counts: dict[str, dict] = {}
    for r in current:
        counts.setdefault(r['slice'], r)
    rows = []
    for s in slices:
        cells = []
        for m in metrics:
            r = cell.get((s, m))
            v = None if r is None else r.get('value')
            lo = None if r is None else r.get('lower_bound')
            hi = None if r is None else r.get('upper_bound')
            cells.append({'metric': m, 'value': v, 'text': fmt(v),
                          'sort': repr(float(v)) if _finite(v) else '',
                          'full': '' if v is None else repr(v),
                          'bounds': ('[%s, %s]' % (fmt(lo), fmt(hi))
                                     if _finite(lo) and _finite(hi) else '')})
        c = counts[s]
        rows.append({'label': s, 'cells': cells,
                     'note': 'no weight' if c.get('weighted_example_count') == 0 else '',
                     'example_count': c.get('example_count'),
                     'example_count_text': fmt(c.get('example_count')),
                     'weighted': c.get('weighted_example_count'),
                     'weighted_text': fmt_count(c.get('weighted_example_count'))})

    primary = next((m for m in _PRIMARY_METRICS if m in metrics), metrics[0] if metrics else None)
    comparison, not_ranked = '', []
    if primary is not None:
        worse_high = lower_is_better(primary)
        ranked, left_out = rank_slices(slices, cell, primary)
        not_ranked = ['%s (%s)' % pair for pair in left_out]
        ordered = ranked or [s for s in slices if s == schema.OVERALL]
        ref = cell.get((schema.OVERALL, primary), {}).get('value')
        comparison = bar_chart(
            ordered, [cell.get((s, primary), {}).get('value') for s in ordered],
            [counts[s].get('example_count') for s in ordered],
            title='%s by slice, worst first (%s is better; dashed line: Overall)'
                  % (primary, 'lower' if worse_high else 'higher'),
            reference=ref if ranked else None,
            bounds=[(cell.get((s, primary), {}).get('lower_bound'),
                     cell.get((s, primary), {}).get('upper_bound')) for s in ordered])

    thresholds = head_thresholds(metrics)
    plots_now = [r for r in plot_rows if _period(r) == latest]
    plots_by_slice: dict[str, list[dict]] = {}
    for r in plots_now:
        plots_by_slice.setdefault(r['slice'], []).append(r)
    slice_views = []
    for i, s in enumerate(slices):
        if s not in plots_by_slice:
            continue
        view = _slice_curves(plots_by_slice[s], thresholds, head, s)
        view.update(label=s, anchor='h%d-s%d' % (index, i), open=(i == 0))
        slice_views.append(view)

    over_time, more = [], []
    if time_axis is not None and len(periods) > 1:
        charts = _over_time(head, metric_rows, metrics, slices, cell, time_axis)
        over_time, more = charts[:_OVER_TIME_SHOWN], charts[_OVER_TIME_SHOWN:]
    note = ''
    if len(periods) > 1:
        note = 'Showing the latest %s of %d (%s).' % (
            'window' if latest[0] is not None else 'step', len(periods), _period_label(latest))
    elif latest != (None, None):
        note = _period_label(latest).capitalize() + '.'
    return _HeadView(head, 'head-%d-%s' % (index, _slug(head)), metrics, rows, primary,
                     comparison, not_ranked, slice_views, over_time, more, note, thresholds)


def _over_time(head: str, metric_rows: list[dict], metrics: list[str], slices: list[str],
               current: dict, time_axis: str) -> list[str]:
    """One chart per metric: its value per window (step) for Overall and the worst slices."""
    by_key: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in metric_rows:
        v, t = r.get('value'), r.get(time_axis)
        if not _finite(v) or t is None:
            continue
        x = t.timestamp() if isinstance(t, datetime.datetime) else float(t)
        by_key.setdefault((r['slice'], r['metric']), []).append((x, v))
    if time_axis == 'window_start':
        def x_format(x: float) -> str:
            return datetime.datetime.fromtimestamp(x, datetime.timezone.utc).strftime(
                '%m-%d %H:%M')
        x_label, x_ticks = 'window_start (UTC)', time_ticks
    else:
        x_format, x_label, x_ticks = fmt_tick, 'step', None
    # One colour per slice across the head's charts: Overall the first, the others in turn.
    others_all = [s for s in slices if s != schema.OVERALL]
    colors = {schema.OVERALL: _PALETTE[0]}
    colors.update({s: _PALETTE[1 + i % (len(_PALETTE) - 1)] for i, s in enumerate(others_all)})
    charts = []
    for m in metrics:
        others = [s for s in rank_slices(slices, current, m)[0]
                  if _finite(current.get((s, m), {}).get('value'))]
        chosen = ([schema.OVERALL] if schema.OVERALL in slices else []) + \
            others[:_OVER_TIME_SLICES]
        series = []
        for s in chosen:
            pts = sorted(by_key.get((s, m), []))
            series.append(Series(s, [p[0] for p in pts], [p[1] for p in pts], kind='time',
                                 markers=len(pts) <= 60, color=colors[s],
                                 strong=(s == schema.OVERALL)))
        charts.append(line_chart(series, title='%s over time · %s' % (m, head),
                                 x_label=x_label, y_label=m, x_format=x_format,
                                 x_ticks=x_ticks, chart='time', width=460))
    return charts


def _time_axis(rows: list[dict]) -> str | None:
    if any(r.get('window_start') is not None for r in rows):
        return 'window_start'
    if len({r.get('step') for r in rows if r.get('step') is not None}) > 1:
        return 'step'
    return None


_template: Any = None
_template_lock = threading.Lock()


def page_template() -> Any:
    """The page's Jinja template, compiled once per process.

    Raises:
      FileNotFoundError: the template file is missing (a broken install).
    """
    global _template
    with _template_lock:
        if _template is None:
            import jinja2
            env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                                     autoescape=jinja2.select_autoescape(['html', 'j2']),
                                     undefined=jinja2.StrictUndefined)
            try:
                _template = env.get_template(TEMPLATE_NAME)
            except jinja2.TemplateNotFound as e:
                raise FileNotFoundError('headstream report: page template %s not found'
                                        % os.path.join(TEMPLATE_DIR, TEMPLATE_NAME)) from e
        return _template


def prepare_in_background() -> threading.Thread:
    """Compiles the page template (and imports Jinja) on a background thread, while a local run
    evaluates, so the report costs less at the run's end. Errors are left for the report writer
    to raise."""
    def compile_quietly() -> None:
        try:
            page_template()
        except Exception:  # noqa: BLE001 -- write_report raises it where it belongs
            pass
    thread = threading.Thread(target=compile_quietly, name='headstream-report-template',
                              daemon=True)
    thread.start()
    return thread


def build_page(metrics: pa.Table | None, plots: pa.Table | None, summary: dict | None,
               source: str = '') -> str:
    """The report page's HTML from the metrics and plots tables (`pipeline.schema` layout)."""
    import markupsafe
    if metrics is not None:
        _require(metrics, _REQUIRED['metrics'], 'metrics table')
    if plots is not None and plots.num_rows:
        _require(plots, _REQUIRED['plots'], 'plots table')
    metric_rows, plot_rows = _rows(metrics), _rows(plots)
    time_axis = _time_axis(metric_rows)
    heads = list(dict.fromkeys(r['head'] for r in metric_rows))
    by_head: dict[str, list[dict]] = {h: [] for h in heads}
    for r in metric_rows:
        by_head[r['head']].append(r)
    plots_by_head: dict[str, list[dict]] = {}
    for r in plot_rows:
        plots_by_head.setdefault(r['head'], []).append(r)
    views = [_head_view(h, by_head[h], plots_by_head.get(h, []), time_axis, i)
             for i, h in enumerate(heads)]
    run_ids = list(dict.fromkeys(r['run_id'] for r in metric_rows if r.get('run_id')))
    evaluated = sorted({r['evaluated_at'] for r in metric_rows if r.get('evaluated_at')})
    facts = []
    if summary:
        for key, label in (('rows_read', 'rows read'), ('bad_rows', 'bad rows'),
                           ('rows_evaluated', 'rows evaluated'), ('wall_time_s', 'wall time (s)')):
            if summary.get(key) is not None:
                facts.append((label, fmt(summary[key])))
        pattern = (summary.get('input') or {}).get('pattern')
        if pattern:
            facts.append(('input', str(pattern)))
    n_slices = len({r['slice'] for r in metric_rows})
    template = page_template()
    safe = markupsafe.Markup
    for v in views:
        v.comparison = safe(v.comparison)
        v.over_time = [safe(c) for c in v.over_time]
        v.over_time_more = [safe(c) for c in v.over_time_more]
        for s in v.slices:
            s['charts'] = [safe(c) for c in s['charts']]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return template.render(
        heads=views, run_ids=run_ids,
        evaluated_at=[_time_label(t) for t in evaluated[-1:]],
        facts=facts, n_slices=n_slices, source=source, time_axis=time_axis,
        fmt=fmt, fmt_count=fmt_count, generated=_time_label(now))


def write_report(output_dir: str, source: str | None = None) -> str:
    """Builds `<output_dir>/report.html` from the run's Parquet outputs; returns its path.

    `source` is the directory the page names as its origin (default `output_dir`): a run builds
    its report in a staging directory that is then moved to `source`.

    Raises:
      FileNotFoundError: `output_dir` holds no metrics/*.parquet.
      ValueError: a table lacks a required column (the message names it and the file kind).
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    metrics = _read_tables(output_dir, 'metrics')
    if metrics is None:
        raise FileNotFoundError('headstream report: no metrics/*.parquet under %s' % output_dir)
    plots = _read_tables(output_dir, 'plots')
    page = build_page(metrics, plots, _read_summary(output_dir), source=source or output_dir)
    path = _join(output_dir, REPORT_FILE)
    # Written under a temporary name and renamed, so a reader never sees half a page.
    tmp = '%s.tmp-%s' % (path, uuid.uuid4().hex[:12])
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(page.encode('utf-8'))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`headstream report OUTPUT_DIR`: prints the written page's path; 1 on failure, also for a
    directory without a complete run (`publish.check_complete`)."""
    parser = argparse.ArgumentParser(
        prog='headstream report',
        description="Rebuild report.html from a run's Parquet outputs.")
    parser.add_argument('output_dir', help="a run's output directory (local or gs://)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from pipeline.writers.publish import IncompleteRunError, check_complete
    try:
        check_complete(args.output_dir)
        path = write_report(args.output_dir)
    except IncompleteRunError as e:
        print('headstream report: %s' % e, file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(str(e), file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
