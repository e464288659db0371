"""The report page's content: per head its metrics table, slice comparison, curves per slice and
metrics over time (`_head_view`), rendered through the page template (`build_page`).
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Sequence

import pyarrow as pa

from pipeline import schema
from pipeline.report.compare import comparison_rows, verdict_fact
from pipeline.report.charts import PALETTE, Series, bar_chart, line_chart, time_ticks, value_range
from pipeline.report.data import (REQUIRED, calibration_points, confusion_at, curve_points,
                                  curves_by_sub_key, head_thresholds, lower_is_better, period,
                                  period_sort_key, rank_slices, require, table_rows, time_axis_of)
from pipeline.report.labels import finite, fmt, fmt_count, fmt_tick, period_label, slug, time_label
from pipeline.metrics_table import candidate_rows
from pipeline.report.template import page_template

# The metric a slice comparison ranks by: the first of these a head has, else its first metric.
_PRIMARY_METRICS = ('auc', 'accuracy', 'average_loss', 'loss')
_HEADLINE_ORDER = ('auc', 'auc_precision_recall', 'accuracy', 'average_loss', 'loss')
_OVER_TIME_SHOWN = 4      # metrics charted over time before the rest fold away
_OVER_TIME_SLICES = 5     # slices besides Overall drawn in an over-time chart (the worst ones)


def _sub_label(sub_key: str) -> str:
    return sub_key or '(pooled)'


def _slice_curves(plot_rows: list[dict], thresholds: list[float], head: str,
                  slice_label: str) -> dict:
    """The ROC, PR and calibration SVGs and the confusion matrices of one (head, slice)."""
    curves = curves_by_sub_key(plot_rows)
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
                m = confusion_at(conf, t)
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
        rng = (0.0, 1.0) if all(0 <= v <= 1 for v in vals) else value_range(vals, (0.0, 1.0))
        charts.append(line_chart(cal, title='Calibration · ' + what,
                                 x_label='mean prediction', y_label='mean label',
                                 x_range=rng, y_range=rng, diagonal=True, chart='calibration'))
    return {'charts': charts, 'matrices': matrices}


@dataclasses.dataclass
class _HeadView:
    """One head's part of the page, as the template reads it."""
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
    compared: list[dict] = dataclasses.field(default_factory=list)  # compare.comparison_rows


def _head_view(head: str, metric_rows: list[dict], plot_rows: list[dict], time_axis: str | None,
               index: int) -> _HeadView:
    """One head's part of the page, from its metrics and plots rows (all periods)."""
    periods = sorted({period(r) for r in metric_rows}, key=period_sort_key)
    latest = periods[-1] if periods else (None, None)
    current = [r for r in metric_rows if period(r) == latest]
    metrics = list(dict.fromkeys(r['metric'] for r in current))
    # The headline metrics come first in the table, so the first screen shows them without
    # scrolling.
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
    rows = _metric_table(slices, metrics, cell, counts)

    primary = next((m for m in _PRIMARY_METRICS if m in metrics), metrics[0] if metrics else None)
    comparison, not_ranked = '', []
    if primary is not None:
        comparison, not_ranked = _comparison(slices, cell, counts, primary)

    thresholds = head_thresholds(metrics)
    slice_views = _slice_views(head, index, [r for r in plot_rows if period(r) == latest],
                               slices, thresholds)
    over_time, more = [], []
    if time_axis is not None and len(periods) > 1:
        charts = _over_time(head, metric_rows, metrics, slices, cell, time_axis)
        over_time, more = charts[:_OVER_TIME_SHOWN], charts[_OVER_TIME_SHOWN:]
    note = ''
    if len(periods) > 1:
        note = 'Showing the latest %s of %d (%s).' % (
            'window' if latest[0] is not None else 'step', len(periods), period_label(latest))
    elif latest != (None, None):
        note = period_label(latest).capitalize() + '.'
    return _HeadView(head, 'head-%d-%s' % (index, slug(head)), metrics, rows, primary,
                     comparison, not_ranked, slice_views, over_time, more, note, thresholds)


def _metric_table(slices: list[str], metrics: list[str], cell: dict[tuple[str, str], dict],
                  counts: dict[str, dict]) -> list[dict]:
    """The metrics table's rows: per slice its cells (value, sort key, bounds) and counts."""
    rows = []
    for s in slices:
        cells = []
        for m in metrics:
            r = cell.get((s, m))
            v = None if r is None else r.get('value')
            lo = None if r is None else r.get('lower_bound')
            hi = None if r is None else r.get('upper_bound')
            ci_lo = None if r is None else r.get('ci_lower')
            ci_hi = None if r is None else r.get('ci_upper')
            label = ''
            if finite(ci_lo) and finite(ci_hi):  # a confidence interval: shown before a bound
                lo, hi, label = ci_lo, ci_hi, 'CI '
            cells.append({'metric': m, 'value': v, 'text': fmt(v),
                          'sort': repr(float(v)) if finite(v) else '',
                          'full': '' if v is None else repr(v),
                          'bounds': ('%s[%s, %s]' % (label, fmt(lo), fmt(hi))
                                     if finite(lo) and finite(hi) else '')})
        c = counts[s]
        rows.append({'label': s, 'cells': cells,
                     'note': 'no weight' if c.get('weighted_example_count') == 0 else '',
                     'example_count': c.get('example_count'),
                     'example_count_text': fmt(c.get('example_count')),
                     'weighted': c.get('weighted_example_count'),
                     'weighted_text': fmt_count(c.get('weighted_example_count'))})
    return rows


def _comparison(slices: list[str], cell: dict[tuple[str, str], dict], counts: dict[str, dict],
                primary: str) -> tuple[str, list[str]]:
    """The slice comparison's SVG (worst first by `primary`) and the slices left out of it as
    'slice (reason)'."""
    worse_high = lower_is_better(primary)
    ranked, left_out = rank_slices(slices, cell, primary)
    not_ranked = ['%s (%s)' % pair for pair in left_out]
    ordered = ranked or [s for s in slices if s == schema.OVERALL]
    ref = cell.get((schema.OVERALL, primary), {}).get('value')
    intervals = [(cell.get((s, primary), {}).get('ci_lower'),
                  cell.get((s, primary), {}).get('ci_upper')) for s in ordered]
    has_ci = any(finite(lo) and finite(hi) for lo, hi in intervals)
    comparison = bar_chart(
        ordered, [cell.get((s, primary), {}).get('value') for s in ordered],
        [counts[s].get('example_count') for s in ordered],
        title='%s by slice, worst first (%s is better; dashed line: Overall%s)'
              % (primary, 'lower' if worse_high else 'higher',
                 '; bars: confidence interval' if has_ci else ''),
        reference=ref if ranked else None,
        bounds=[(cell.get((s, primary), {}).get('lower_bound'),
                 cell.get((s, primary), {}).get('upper_bound')) for s in ordered],
        intervals=intervals if has_ci else None)
    return comparison, not_ranked


def _slice_views(head: str, index: int, plots_now: list[dict], slices: list[str],
                 thresholds: list[float]) -> list[dict]:
    """Per slice with curves (table order), its charts and matrices; the first one open."""
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
    return slice_views


def _over_time(head: str, metric_rows: list[dict], metrics: list[str], slices: list[str],
               current: dict, time_axis: str) -> list[str]:
    """One chart per metric: its value per window (step) for Overall and the worst slices."""
    by_key: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in metric_rows:
        v, t = r.get('value'), r.get(time_axis)
        if not finite(v) or t is None:
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
    colors = {schema.OVERALL: PALETTE[0]}
    colors.update({s: PALETTE[1 + i % (len(PALETTE) - 1)] for i, s in enumerate(others_all)})
    charts = []
    for m in metrics:
        others = [s for s in rank_slices(slices, current, m)[0]
                  if finite(current.get((s, m), {}).get('value'))]
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


def build_page(metrics: pa.Table | None, plots: pa.Table | None, summary: dict | None,
               source: str = '', verdict: dict | None = None, notes: Sequence[str] = ()) -> str:
    """The report page's HTML from the metrics and plots tables (`pipeline.schema` layout), the
    run's validation verdict (validation.json), if any, and notes on what it leaves out."""
    import markupsafe
    compared: dict[str, list[dict]] = {}
    if metrics is not None:
        require(metrics, REQUIRED['metrics'], 'metrics table')
        if 'model' in metrics.column_names:
            compared = comparison_rows(table_rows(metrics), verdict)
        metrics = candidate_rows(metrics)  # the baseline's and diff rows: their table
    if plots is not None and plots.num_rows:
        require(plots, REQUIRED['plots'], 'plots table')
    metric_rows, plot_rows = table_rows(metrics), table_rows(plots)
    time_axis = time_axis_of(metric_rows)
    heads = list(dict.fromkeys(r['head'] for r in metric_rows))
    by_head: dict[str, list[dict]] = {h: [] for h in heads}
    for r in metric_rows:
        by_head[r['head']].append(r)
    plots_by_head: dict[str, list[dict]] = {}
    for r in plot_rows:
        plots_by_head.setdefault(r['head'], []).append(r)
    views = [_head_view(h, by_head[h], plots_by_head.get(h, []), time_axis, i)
             for i, h in enumerate(heads)]
    for v in views:
        v.compared = compared.get(v.name, [])
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
    if verdict_fact(verdict):
        facts.append(verdict_fact(verdict))
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
        evaluated_at=[time_label(t) for t in evaluated[-1:]],
        facts=facts, n_slices=n_slices, source=source, time_axis=time_axis,
        fmt=fmt, fmt_count=fmt_count, generated=time_label(now), slice_notes=list(notes))
