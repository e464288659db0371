"""report.html from hand-made metrics/plots tables: numbers, labels, curves, and a real browser.

The tables are written here in the `pipeline.schema` layout with values chosen by hand, so every
expectation below is the input itself (or arithmetic on it), never the report code's own output.
The browser checks open the page in headless Chromium (scripts/install_chromium.sh installs it) and
are skipped, saying so, where no Chromium binary exists.
"""
from __future__ import annotations

import datetime
import html.parser
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import report, schema
from pipeline.report import charts, data, labels, template

RUN = 'run-test-1'
AT = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
SLICES = [('Overall', '', '', 10, 10.0), ('country:US', 'country', 'US', 6, 6.0),
          ('country:DE', 'country', 'DE', 4, 4.0)]
# click: a binary head with thresholds 0.3 and 0.5 (as its metric keys say).
CLICK = {
    'Overall': {'auc': 0.8125, 'accuracy': 0.7, 'accuracy/positive_threshold_0.3': 0.6,
                'accuracy/positive_threshold_0.5': 0.7, 'loss': 0.4321},
    'country:US': {'auc': 0.9375, 'accuracy': 0.8333, 'accuracy/positive_threshold_0.3': 0.6667,
                   'accuracy/positive_threshold_0.5': 0.8333, 'loss': 0.3012},
    'country:DE': {'auc': 0.625, 'accuracy': 0.5, 'accuracy/positive_threshold_0.3': 0.5,
                   'accuracy/positive_threshold_0.5': 0.5, 'loss': 0.6789},
}
AUC_BOUNDS = {'Overall': (0.8101, 0.8149), 'country:US': (0.9301, 0.9399),
              'country:DE': (0.6202, 0.6298)}
# buy: a second classification head whose curves are per class (sub_key class0 / class1).
BUY = {
    'Overall': {'accuracy': 0.55, 'auc/class0': 0.7125, 'auc/class1': 0.6875, 'loss': 1.2345},
    'country:US': {'accuracy': 0.6667, 'auc/class0': 0.75, 'auc/class1': 0.7, 'loss': 1.1111},
    'country:DE': {'accuracy': 0.25, 'auc/class0': 0.5, 'auc/class1': float('nan'),
                   'loss': 1.9876},
}
# Confusion rows of click per slice, by threshold: (tp, fp, tn, fn). 4 positives, 6 negatives
# Overall; every curve has 5 thresholds, so 5 ROC points and 5 PR points.
THRESHOLDS = [0.0, 0.3, 0.5, 0.7, 1.0]
CLICK_CONF = {
    'Overall': [(4, 6, 0, 0), (4, 3, 3, 0), (3, 1, 5, 1), (2, 0, 6, 2), (0, 0, 6, 4)],
    'country:US': [(3, 3, 0, 0), (3, 1, 2, 0), (2, 0, 3, 1), (1, 0, 3, 2), (0, 0, 3, 3)],
    'country:DE': [(1, 3, 0, 0), (1, 2, 1, 0), (1, 1, 2, 0), (1, 0, 3, 0), (0, 0, 3, 1)],
}
# Calibration buckets of click (Overall): (lower, upper, Σw, Σw·label, Σw·prediction); the
# empty bucket has no mean, so the curve has 3 points.
CLICK_CAL = [(0.0, 0.25, 4.0, 0.0, 0.4), (0.25, 0.5, 0.0, 0.0, 0.0), (0.5, 0.75, 3.0, 2.0, 1.8),
             (0.75, 1.0, 3.0, 2.0, 2.55)]


def _metric_rows(head, values, windows=None):
    rows = []
    for name, cols, vals, n, w in SLICES:
        for metric, v in values[name].items():
            lo, hi = AUC_BOUNDS[name] if (metric == 'auc' and head == 'click') else (None, None)
            rows.append(dict(run_id=RUN, evaluated_at=AT, slice=name, slice_columns=cols,
                             slice_values=vals, head=head, metric=metric, value=v,
                             lower_bound=lo, upper_bound=hi, example_count=n,
                             weighted_example_count=w))
    return rows


def _plot_row(name, head, sub_key, curve, **values):
    _, cols, vals, _, _ = next(s for s in SLICES if s[0] == name)
    row = dict(run_id=RUN, evaluated_at=AT, slice=name, slice_columns=cols, slice_values=vals,
               head=head, sub_key=sub_key, curve=curve)
    for f in schema.PLOTS:
        if f.name not in row:
            row[f.name] = values.get(f.name)
    return row


def _confusion_rows(name, head, sub_key, counts, thresholds=THRESHOLDS):
    rows = []
    for t, (tp, fp, tn, fn) in zip(thresholds, counts):
        rows.append(_plot_row(
            name, head, sub_key, 'confusion', threshold=t, tp=float(tp), fp=float(fp),
            tn=float(tn), fn=float(fn),
            precision=tp / (tp + fp) if tp + fp else 0.0,
            recall=tp / (tp + fn) if tp + fn else 0.0,
            false_positive_rate=fp / (fp + tn) if fp + tn else 0.0))
    return rows


def _plots():
    rows = []
    for name in CLICK_CONF:
        rows += _confusion_rows(name, 'click', '', CLICK_CONF[name])
    for lo, hi, w, wl, wp in CLICK_CAL:
        rows.append(_plot_row('Overall', 'click', '', 'calibration', bucket_lower=lo,
                              bucket_upper=hi, weighted_examples=w, weighted_labels=wl,
                              weighted_predictions=wp))
    # buy: three thresholds per class, only Overall and country:US have curves.
    for name in ('Overall', 'country:US'):
        rows += _confusion_rows(name, 'buy', 'class0', [(5, 5, 0, 0), (3, 1, 4, 2),
                                                        (0, 0, 5, 5)], [0.0, 0.5, 1.0])
        rows += _confusion_rows(name, 'buy', 'class1', [(5, 5, 0, 0), (2, 2, 3, 3),
                                                        (0, 0, 5, 5)], [0.0, 0.5, 1.0])
    return rows


def _write(out, metric_rows, plot_rows, windowed=False, summary=None):
    m_schema = schema.with_extras(schema.METRICS, windowed=windowed)
    p_schema = schema.with_extras(schema.PLOTS, windowed=windowed)
    os.makedirs(os.path.join(out, 'metrics'), exist_ok=True)
    os.makedirs(os.path.join(out, 'plots'), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(metric_rows, schema=m_schema),
                   os.path.join(out, 'metrics', 'metrics.parquet'))
    pq.write_table(pa.Table.from_pylist(plot_rows, schema=p_schema),
                   os.path.join(out, 'plots', 'plots.parquet'))
    if summary is not None:
        with open(os.path.join(out, 'summary.json'), 'w') as f:
            json.dump(summary, f)


class _Page(html.parser.HTMLParser):
    """The page's elements as (tag, attrs, text inside) for the checks below."""

    def __init__(self):
        super().__init__()
        self.elements = []   # [tag, attrs, text]
        self._open = []

    def handle_starttag(self, tag, attrs):
        el = [tag, dict(attrs), '']
        self.elements.append(el)
        if tag not in ('br', 'meta', 'input', 'line', 'rect', 'circle', 'polyline', 'path'):
            self._open.append(el)

    def handle_startendtag(self, tag, attrs):
        self.elements.append([tag, dict(attrs), ''])

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break

    def handle_data(self, data):
        for el in self._open:
            el[2] += data

    def find(self, tag, **attrs):
        return [e for e in self.elements if e[0] == tag
                and all(e[1].get(k.replace('_', '-')) == v for k, v in attrs.items())]


def _parse(path):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    page = _Page()
    page.feed(text)
    return text, page


def _points(polyline_attrs):
    pts = polyline_attrs['points'].split()
    return np.array([[float(c) for c in p.split(',')] for p in pts])


def _assert_affine(pixels, values, increasing):
    """Pixel coordinates are an affine image of the data values (the right column is drawn,
    in order): a least-squares line through them leaves no residual."""
    values = np.asarray(values, dtype=float)
    if np.ptp(values) == 0:
        assert np.ptp(pixels) < 1e-6
        return
    slope, intercept = np.polyfit(values, pixels, 1)
    assert np.max(np.abs(slope * values + intercept - pixels)) < 0.02
    assert (slope > 0) == increasing


@pytest.fixture(scope='module')
def batch_report(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('run'))
    _write(out, _metric_rows('click', CLICK) + _metric_rows('buy', BUY), _plots(),
           summary={'run_id': RUN, 'rows_read': 12, 'bad_rows': 2, 'rows_evaluated': 10,
                    'wall_time_s': 3.5, 'input': {'pattern': 'gs://b/data/*.parquet'}})
    path = report.write_report(out)
    assert path == os.path.join(out, 'report.html')
    return path


def test_headline_numbers_and_labels(batch_report):
    text, page = _parse(batch_report)
    for head, values in (('click', CLICK), ('buy', BUY)):
        table = page.find('table', data_head=head)
        assert len(table) == 1
        headers = [e[2].strip() for e in page.elements if e[0] == 'th'
                   and e[1].get('data-metric') in values['Overall']]
        assert set(values['Overall']) <= set(headers)
        for name, _, _, n, _ in SLICES:
            rows = page.find('tr', data_slice=name)
            assert rows, name
            for metric, v in values[name].items():
                cells = [e for e in page.find('td', data_metric=metric)
                         if e[1]['title'].startswith(metric + ' = ')
                         and e[1]['data-v'] == (repr(v) if v == v else '')]
                assert cells, (head, name, metric)
                expected = '—' if v != v else '%.4f' % v
                assert any(c[2].startswith(expected) for c in cells), (head, name, metric)
    # The headline metrics come first (auc, accuracy, loss), the others follow in the table's order.
    order = [e[1]['data-metric'] for e in page.elements if e[0] == 'th' and 'data-metric' in e[1]]
    assert order[:5] == ['auc', 'accuracy', 'loss', 'accuracy/positive_threshold_0.3',
                         'accuracy/positive_threshold_0.5']
    # auc bounds next to the value; counts from the tables; the run summary in the header.
    assert '0.8125<span class="bounds">[0.8101, 0.8149]</span>' in text
    assert '>6</td>' in text and '>4</td>' in text
    assert 'run <b>run-test-1</b>' in text and 'bad rows <b>2</b>' in text
    assert 'gs://b/data/*.parquet' in text
    # A self-contained page: nothing fetched from the network.
    assert not re.search(r'(src|href)="(https?:)?//', text)


def test_roc_pr_curves_per_slice(batch_report):
    _, page = _parse(batch_report)
    for name in CLICK_CONF:
        # A curve section in click and in buy, except that buy has no curves for country:DE.
        assert len(page.find('details', data_slice=name)) == (1 if name == 'country:DE' else 2)
    rocs = [e for e in page.find('polyline', data_kind='roc')]
    prs = [e for e in page.find('polyline', data_kind='pr')]
    # click: one pooled curve per slice (3); buy: class0 + class1 for Overall and US (4).
    assert len(rocs) == 3 + 4 and len(prs) == 3 + 4
    click_rocs = [e for e in rocs if e[1]['data-points'] == '5']
    assert len(click_rocs) == 3
    for name, order in zip(CLICK_CONF, range(3)):
        tp, fp, tn, fn = np.array(CLICK_CONF[name], dtype=float).T
        fpr, recall = fp / (fp + tn), tp / (tp + fn)
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        pts = _points(click_rocs[order][1])
        assert pts.shape == (5, 2)
        _assert_affine(pts[:, 0], fpr, increasing=True)
        _assert_affine(pts[:, 1], recall, increasing=False)   # SVG's y axis points down
        pr = _points([e for e in prs if e[1]['data-points'] == '5'][order][1])
        _assert_affine(pr[:, 0], recall, increasing=True)
        _assert_affine(pr[:, 1], precision, increasing=False)
    buy = [e for e in rocs if e[1]['data-points'] == '3']
    assert sorted(e[1]['data-series'] for e in buy) == ['class0', 'class0', 'class1', 'class1']


def test_calibration_curve(batch_report):
    _, page = _parse(batch_report)
    cal = page.find('polyline', data_kind='calibration')
    assert len(cal) == 1
    pts = _points(cal[0][1])
    assert pts.shape == (3, 2)   # the empty bucket is left out
    mean_pred = [0.4 / 4.0, 1.8 / 3.0, 2.55 / 3.0]
    mean_label = [0.0 / 4.0, 2.0 / 3.0, 2.0 / 3.0]
    _assert_affine(pts[:, 0], mean_pred, increasing=True)
    _assert_affine(pts[:, 1], mean_label, increasing=False)


def test_confusion_matrix_at_head_thresholds(batch_report):
    _, page = _parse(batch_report)
    click = [e for e in page.elements if e[0] == 'section' and e[1].get('data-head') == 'click']
    assert click
    tables = page.find('table', data_threshold='0.5', data_sub_key='(pooled)')
    tables += page.find('table', data_threshold='0.3', data_sub_key='(pooled)')
    # click's thresholds 0.3 and 0.5 in 3 slices.
    assert len(tables) == 6
    # Overall at 0.5: tp=3, fn=1, fp=1, tn=5; the page lists tp, fn, fp, tn in that order.
    overall = tables[0][2]
    assert re.search(r'actual \+\s*3\s*1\s*actual −\s*1\s*5', overall), overall
    # buy has no threshold metric keys: its matrices are at 0.5, per class.
    assert len(page.find('table', data_threshold='0.5', data_sub_key='class1')) == 2


def test_slice_comparison_worst_first(batch_report):
    _, page = _parse(batch_report)
    bars = page.find('svg', data_chart='slices')
    assert len(bars) == 2
    groups = [e for e in page.elements if e[0] == 'g' and 'data-slice' in e[1]]
    # click ranks by auc (higher is better): DE 0.625 before US 0.9375, each with its count.
    click_groups = groups[:2]
    assert [g[1]['data-slice'] for g in click_groups] == ['country:DE', 'country:US']
    assert '0.6250  (n=4)' in click_groups[0][2] and '0.9375  (n=6)' in click_groups[1][2]
    # buy has no plain auc: it ranks by accuracy, DE (0.25) first.
    assert [g[1]['data-slice'] for g in groups[2:4]] == ['country:DE', 'country:US']


def _windowed(out):
    """3 hourly windows; auc of country:DE drops, and country:US has no value in window 2."""
    starts = [datetime.datetime(2026, 1, 1, h, tzinfo=datetime.timezone.utc) for h in (0, 1, 2)]
    auc = {'Overall': [0.8, 0.78, 0.75], 'country:US': [0.9, float('nan'), 0.85],
           'country:DE': [0.7, 0.6, 0.5]}
    rows, plots = [], []
    for i, start in enumerate(starts):
        for name, cols, vals, n, w in SLICES:
            for metric, v in (('auc', auc[name][i]), ('loss', 0.5 + 0.1 * i)):
                rows.append(dict(run_id=RUN, evaluated_at=AT, slice=name, slice_columns=cols,
                                 slice_values=vals, head='click', metric=metric, value=v,
                                 lower_bound=None, upper_bound=None, example_count=n + i,
                                 weighted_example_count=float(n + i), window_start=start,
                                 window_end=start + datetime.timedelta(hours=1)))
        for r in _confusion_rows('Overall', 'click', '', CLICK_CONF['Overall'][:4 - i],
                                 THRESHOLDS[:4 - i]):
            r.update(window_start=start, window_end=start + datetime.timedelta(hours=1))
            plots.append(r)
    _write(out, rows, plots, windowed=True)
    return auc


def test_windowed_run_metrics_over_time(tmp_path):
    auc = _windowed(str(tmp_path))
    text, page = _parse(report.write_report(str(tmp_path)))
    # The headline is the latest window (02:00): its values and counts, not earlier ones.
    assert 'latest window of 3 (window 2026-01-01 02:00:00Z)' in text
    assert page.find('td', data_metric='auc', data_v=repr(0.5))
    assert not page.find('td', data_metric='auc', data_v=repr(0.6))
    assert '>12</td>' in text   # Overall's example_count in window 2: 10 + 2
    series = page.find('polyline', data_kind='time')
    # One chart per metric (auc, loss), each with Overall and the 2 slices.
    assert len(series) == 6
    by = {(s[1]['data-series'], i // 3): s for i, s in enumerate(series)}
    for name, values in auc.items():
        finite = [v for v in values if v == v]
        pts = _points(by[(name, 0)][1])
        assert len(pts) == len(finite)   # US has no point in window 1
        _assert_affine(pts[:, 1], finite, increasing=False)
    # Window starts one hour apart: the x coordinates are evenly spaced for Overall.
    xs = _points(by[('Overall', 0)][1])[:, 0]
    assert np.allclose(np.diff(xs), np.diff(xs)[0])
    # Curves of the latest window only: 4 - 2 = 2 thresholds.
    roc = page.find('polyline', data_kind='roc')
    assert [r[1]['data-points'] for r in roc] == ['2']


def test_degenerate_tables(tmp_path):
    # A regression head: metrics only, no plots; an empty plots table.
    rows = [dict(run_id=RUN, evaluated_at=AT, slice='Overall', slice_columns='',
                 slice_values='', head='spend', metric=m, value=v, lower_bound=None,
                 upper_bound=None, example_count=0, weighted_example_count=0.0)
            for m, v in (('average_loss', float('nan')), ('loss', 0.0))]
    _write(str(tmp_path), rows, [])
    text, page = _parse(report.write_report(str(tmp_path)))
    assert page.find('table', data_head='spend')
    assert not page.find('polyline')
    assert '—' in text   # NaN shown as missing
    # An empty metrics table still makes a page.
    _write(str(tmp_path / 'empty'), [], [])
    text, _ = _parse(report.write_report(str(tmp_path / 'empty')))
    assert 'The metrics table has no rows.' in text


def test_missing_outputs_and_cli(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match='no metrics/'):
        report.write_report(str(tmp_path / 'nothing'))
    assert report.main([str(tmp_path / 'nothing')]) == 1  # the command wants a complete run
    assert 'nothing holds no complete run' in capsys.readouterr().err
    _write(str(tmp_path / 'ok'), _metric_rows('click', CLICK), [])
    # The command refuses a directory without a complete run (no summary.json of ours) ...
    assert report.main([str(tmp_path / 'ok')]) == 1
    assert 'no complete run' in capsys.readouterr().err
    # ... and accepts it once a summary lists the files written.
    written = sorted(os.path.relpath(os.path.join(r, f), str(tmp_path / 'ok'))
                     for r, _, fs in os.walk(str(tmp_path / 'ok')) for f in fs)
    with open(str(tmp_path / 'ok' / 'summary.json'), 'w') as f:
        json.dump({'run_id': RUN, 'files': written}, f)
    assert report.main([str(tmp_path / 'ok')]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / 'ok' / 'report.html')
    # Sharded tables: every metrics/*.parquet file is read.
    shard = tmp_path / 'ok' / 'metrics' / 'part-2.parquet'
    pq.write_table(pa.Table.from_pylist(_metric_rows('buy', BUY), schema=schema.METRICS),
                   str(shard))
    _, page = _parse(report.write_report(str(tmp_path / 'ok')))
    assert page.find('table', data_head='click') and page.find('table', data_head='buy')
    # A table without the schema's columns is named in the error.
    os.makedirs(tmp_path / 'bad' / 'metrics')
    pq.write_table(pa.table({'slice': ['Overall'], 'value': [1.0]}),
                   str(tmp_path / 'bad' / 'metrics' / 'm.parquet'))
    with pytest.raises(ValueError, match=r'm\.parquet lacks column\(s\) head, metric '):
        report.write_report(str(tmp_path / 'bad'))


def test_fifty_slices_five_heads_stay_readable(tmp_path):
    rows, plots = [], []
    names = ['Overall'] + ['country:C%02d' % i for i in range(49)]
    for h in range(5):
        for i, name in enumerate(names):
            cols, vals = ('', '') if i == 0 else ('country', name.split(':')[1])
            for metric in ('auc', 'accuracy', 'loss'):
                rows.append(dict(run_id=RUN, evaluated_at=AT, slice=name, slice_columns=cols,
                                 slice_values=vals, head='h%d' % h, metric=metric,
                                 value=0.5 + i / 200.0, lower_bound=None, upper_bound=None,
                                 example_count=100 + i, weighted_example_count=100.0 + i))
            for t in np.linspace(0, 1, 201):
                plots.append(dict(run_id=RUN, evaluated_at=AT, slice=name, slice_columns=cols,
                                  slice_values=vals, head='h%d' % h, sub_key='',
                                  curve='confusion', threshold=float(t), tp=1.0, fp=1.0,
                                  tn=1.0, fn=1.0, precision=1 - t, recall=1 - t,
                                  false_positive_rate=(1 - t) ** 2))
    _write(str(tmp_path), rows, plots)
    text, page = _parse(report.write_report(str(tmp_path)))
    # Only each head's Overall curves start open; the other 49 slices are collapsed.
    details = page.find('details')
    slices = [d for d in details if 'data-slice' in d[1]]
    assert len(slices) == 5 * 50
    assert sum('open' in d[1] for d in slices) == 5
    # Worst first: the comparison of h0 starts at the lowest auc (C00 = 0.5 + 1/200).
    first_bar = next(e for e in page.elements if e[0] == 'g' and 'data-slice' in e[1])
    assert first_bar[1]['data-slice'] == 'country:C00'
    assert len(text) < 8_000_000


# ----------------------------------------------------------------------------------------------
# In a real browser


def _chromium():
    for name in (os.environ.get('CHROMIUM'), 'chromium', 'chromium-browser', 'google-chrome',
                 'google-chrome-stable'):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason='no chromium binary on PATH (run scripts/install_chromium.sh, or set CHROMIUM=...)')


def _browse(path):
    """Loads the page in headless Chromium; returns (DOM after scripts ran, console lines)."""
    proc = subprocess.run(
        [CHROMIUM, '--headless', '--disable-gpu', '--no-sandbox', '--no-first-run',
         '--disable-extensions', '--enable-logging=stderr', '--v=0', '--dump-dom',
         'file://' + os.path.abspath(path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ':CONSOLE' in line]
    return proc.stdout, console


@needs_chromium
def test_chromium_renders_without_console_errors(batch_report):
    dom, console = _browse(batch_report)
    assert console == []
    _, page = _parse(batch_report)
    served = _Page()
    served.feed(dom)
    lines = [e for e in served.elements if e[0] == 'polyline']
    assert len(lines) == len([e for e in page.elements if e[0] == 'polyline']) > 0
    assert all(e[1]['points'].strip() for e in lines)
    assert len(served.find('svg', data_chart='roc')) == 5


@needs_chromium
def test_chromium_sorts_the_metrics_table(batch_report, tmp_path):
    # Click click's auc header twice (ascending, then descending) and record the slice order.
    with open(batch_report, encoding='utf-8') as f:
        text = f.read()
    probe = ("<script>var th = document.querySelector('table[data-head=click] "
             "th[data-metric=auc]'); th.click(); var a = []; "
             "document.querySelectorAll('table[data-head=click] tbody tr').forEach("
             "function (r) { a.push(r.getAttribute('data-slice')); }); th.click(); var d = []; "
             "document.querySelectorAll('table[data-head=click] tbody tr').forEach("
             "function (r) { d.push(r.getAttribute('data-slice')); }); "
             "document.body.setAttribute('data-asc', a.join('|')); "
             "document.body.setAttribute('data-desc', d.join('|')); "
             # Then type 'us' into the slice filter: every country:DE row and chart hides.
             "var f = document.getElementById('slice-filter'); f.value = 'us'; "
             "f.dispatchEvent(new Event('input')); var h = []; "
             "document.querySelectorAll('.hidden').forEach(function (e) { "
             "h.push(e.tagName.toLowerCase() + '=' + e.getAttribute('data-slice')); }); "
             "document.body.setAttribute('data-hidden', h.join('|'));</script></body>")
    probed = tmp_path / 'probe.html'
    probed.write_text(text.replace('</body>', probe), encoding='utf-8')
    dom, console = _browse(str(probed))
    assert console == []
    assert 'data-asc="country:DE|Overall|country:US"' in dom      # 0.625 < 0.8125 < 0.9375
    assert 'data-desc="country:US|Overall|country:DE"' in dom
    # Hidden: the row in both tables, click's curves section, both comparison rows.
    hidden = re.search(r'data-hidden="([^"]*)"', dom).group(1).split('|')
    assert sorted(hidden) == ['details=country:DE', 'g=country:DE', 'g=country:DE',
                              'tr=country:DE', 'tr=country:DE']


# ----------------------------------------------------------------------------------------------
# The pieces


def test_number_formats():
    assert labels.fmt(0.8125) == '0.8125'
    assert labels.fmt(2 / 3) == '0.6667'
    assert labels.fmt(123456.0) == '1.235e+05'
    assert labels.fmt(0.000123) == '0.000123'
    assert labels.fmt(0.0) == '0.0000'
    assert labels.fmt(float('nan')) == labels.fmt(None) == '—'
    assert labels.fmt(12345) == '12,345'
    assert labels.fmt_count(20046.0) == '20,046'
    assert labels.fmt_count(20046.82) == '20046.8200'


def test_ticks():
    assert charts.nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert charts.nice_ticks(0.83, 0.87) == [0.83, 0.84, 0.85, 0.86, 0.87]
    # 3 hours from 00:10 UTC: ticks on whole hours (1 h = 3600 s).
    t0 = datetime.datetime(2026, 1, 1, 0, 10, tzinfo=datetime.timezone.utc).timestamp()
    ticks = charts.time_ticks(t0, t0 + 3 * 3600)
    assert all(t % 3600 == 0 for t in ticks) and len(ticks) == 3
    # 400 days: ticks a round number of days apart.
    ticks = charts.time_ticks(0.0, 400 * 86400.0)
    assert {(b - a) / 86400 for a, b in zip(ticks, ticks[1:])} == {100.0}


def test_long_curves_are_thinned_keeping_their_ends(tmp_path):
    n = 2500
    recall = [1 - i / (n - 1) for i in range(n)]
    plots = [_plot_row('Overall', 'click', '', 'confusion', threshold=i / (n - 1), tp=1.0,
                       fp=1.0, tn=1.0, fn=1.0, precision=0.5, recall=r, false_positive_rate=r * r)
             for i, r in enumerate(recall)]
    _write(str(tmp_path), _metric_rows('click', CLICK), plots)
    _, page = _parse(report.write_report(str(tmp_path)))
    roc = page.find('polyline', data_kind='roc')[0]
    pts = _points(roc[1])
    assert len(pts) == int(roc[1]['data-points']) <= data.MAX_CURVE_POINTS
    assert len(pts) > data.MAX_CURVE_POINTS // 2
    kept = data.thin(n)
    assert kept[0] == 0 and kept[-1] == n - 1 and kept == sorted(set(kept))
    _assert_affine(pts[:, 1], [recall[i] for i in kept], increasing=False)


class _MemoryFiles:
    """Files of the `memhs://` filesystem below, shared by its instances (Beam makes one per
    call)."""
    files: dict[str, bytes] = {}


def _memory_filesystem():
    """A Beam FileSystem under a non-local scheme: the report must reach its files only through
    Beam's FileSystems, as it does for gs://."""
    import io

    from apache_beam.io.filesystem import FileMetadata, FileSystem

    class _Writer(io.BytesIO):
        def __init__(self, path):
            super().__init__()
            self._path = path

        def close(self):
            _MemoryFiles.files[self._path] = self.getvalue()
            super().close()

    class MemoryFileSystem(FileSystem):
        @classmethod
        def scheme(cls):
            return 'memhs'

        def join(self, basepath, *paths):
            return '/'.join([basepath.rstrip('/')] + [p.strip('/') for p in paths])

        def split(self, path):
            return tuple(path.rsplit('/', 1))

        def mkdirs(self, path):
            pass

        def has_dirs(self):
            return False

        def _list(self, prefix):
            for path, data in list(_MemoryFiles.files.items()):
                if path.startswith(prefix):
                    yield FileMetadata(path, len(data))

        def create(self, path, mime_type=None, compression_type=None):
            return _Writer(path)

        def open(self, path, mime_type=None, compression_type=None):
            return io.BytesIO(_MemoryFiles.files[path])

        def copy(self, sources, destinations):
            for s, d in zip(sources, destinations):
                _MemoryFiles.files[d] = _MemoryFiles.files[s]

        def rename(self, sources, destinations):
            for s, d in zip(sources, destinations):
                _MemoryFiles.files[d] = _MemoryFiles.files.pop(s)

        def exists(self, path):
            return path in _MemoryFiles.files

        def size(self, path):
            return len(_MemoryFiles.files[path])

        def last_updated(self, path):
            return 0.0

        def checksum(self, path):
            return str(len(_MemoryFiles.files[path]))

        def metadata(self, path):
            return FileMetadata(path, len(_MemoryFiles.files[path]))

        def delete(self, paths):
            for p in paths:
                del _MemoryFiles.files[p]

    return MemoryFileSystem


def test_reads_and_writes_through_beam_filesystems(tmp_path):
    # Defining the subclass registers its scheme with Beam, which holds subclasses weakly:
    # keep a reference for the test's length.
    filesystem = _memory_filesystem()
    local = str(tmp_path)
    _write(local, _metric_rows('click', CLICK), _plots(), summary={'rows_read': 77})
    for name in ('metrics/metrics.parquet', 'plots/plots.parquet', 'summary.json'):
        with open(os.path.join(local, name), 'rb') as f:
            _MemoryFiles.files['memhs://bucket/run/' + name] = f.read()
    path = report.write_report('memhs://bucket/run')
    assert path == 'memhs://bucket/run/report.html'
    text = _MemoryFiles.files[path].decode('utf-8')
    assert 'rows read <b>77</b>' in text and '0.8125' in text
    # The page was written under a temporary name, then renamed: nothing else is left behind.
    assert filesystem.scheme() == 'memhs'
    assert sorted(_MemoryFiles.files) == sorted(
        'memhs://bucket/run/' + n for n in ('metrics/metrics.parquet', 'plots/plots.parquet',
                                            'summary.json', 'report.html'))


def test_several_steps_chart_over_steps(tmp_path):
    # Two checkpoints (steps 1000 and 2000) of one head: the headline is step 2000.
    rows = []
    for step, auc in ((1000, 0.7), (2000, 0.75)):
        for r in _metric_rows('click', CLICK):
            if r['metric'] == 'auc':
                r.update(step=step, value=auc if r['slice'] == 'Overall' else r['value'])
                rows.append(r)
    out = str(tmp_path)
    os.makedirs(os.path.join(out, 'metrics'))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.with_extras(schema.METRICS,
                                                                         stepped=True)),
                   os.path.join(out, 'metrics', 'metrics.parquet'))
    text, page = _parse(report.write_report(out))
    assert 'latest step of 2 (step 2000)' in text
    assert page.find('td', data_metric='auc', data_v=repr(0.75))
    assert not page.find('td', data_metric='auc', data_v=repr(0.7))
    overall = [e for e in page.find('polyline', data_kind='time')
               if e[1]['data-series'] == 'Overall']
    assert len(overall) == 1 and overall[0][1]['data-points'] == '2'
    pts = _points(overall[0][1])
    _assert_affine(pts[:, 0], [1000, 2000], increasing=True)
    _assert_affine(pts[:, 1], [0.7, 0.75], increasing=False)


def test_the_page_template_is_compiled_once_and_can_be_prepared_in_the_background(monkeypatch):
    monkeypatch.setattr(template, '_template', None)
    template.prepare_in_background().join(timeout=30)
    compiled = template._template
    assert compiled is not None and template.page_template() is compiled
    # A broken install: the writer names the missing file; the background step stays quiet.
    monkeypatch.setattr(template, '_template', None)
    monkeypatch.setattr(template, 'TEMPLATE_DIR', '/nonexistent/templates')
    template.prepare_in_background().join(timeout=30)
    with pytest.raises(FileNotFoundError, match='/nonexistent/templates/report.html.j2'):
        template.page_template()


def test_confidence_intervals_are_error_bars_in_the_slice_comparison(tmp_path):
    """A run with `confidence:`: each slice's interval is an error bar (capped line) drawn on the
    same axis as its dot, and the metrics table shows it; slices without one have none."""
    rows = _metric_rows('click', CLICK)
    ci = {'Overall': (0.70, 0.90), 'country:DE': (0.40, 0.85)}  # country:US: none (null)
    for r in rows:
        if r['metric'] == 'auc' and r['slice'] in ci:
            r.update(ci_lower=ci[r['slice']][0], ci_upper=ci[r['slice']][1], standard_error=0.05)
    out = str(tmp_path)
    _write(out, rows, _plots())
    text, page = _parse(report.write_report(out))
    (chart,) = page.find('svg', data_chart='slices')
    assert 'bars: confidence interval' in chart[2]
    groups = {e[1]['data-slice']: e for e in page.elements
              if e[0] == 'g' and 'data-slice' in e[1]}
    assert 'interval [0.4000, 0.8500]' in groups['country:DE'][2]
    assert 'interval' not in groups['country:US'][2]
    # The bar's ends and the dots share the axis: pixel = a·value + b for all of them.
    bars = re.findall(r'<g class="ci"><title>[^<]*</title><line x1="([\d.]+)" y1="\d+" '
                      r'x2="([\d.]+)"', text)
    assert len(bars) == 1  # Overall is the dashed reference line, not a ranked row
    dots = [float(x) for x in re.findall(r'<circle class="dot" cx="([\d.]+)"', chart_svg(text))]
    pixels = np.array(dots + [float(bars[0][0]), float(bars[0][1])])
    values = np.array([0.625, 0.9375, 0.40, 0.85])
    slope, intercept = np.polyfit(values, pixels, 1)
    assert slope > 0 and np.max(np.abs(slope * values + intercept - pixels)) < 0.1  # %.1f px
    assert 'CI [0.7000, 0.9000]' in text  # the metrics table's cells
    assert 'CI [0.4000, 0.8500]' in text


def chart_svg(text: str) -> str:
    """The slice comparison's SVG source."""
    start = text.index('data-chart="slices"')
    return text[start:text.index('</svg>', start)]
