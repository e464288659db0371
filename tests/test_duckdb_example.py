"""examples/duckdb_queries.sql, run as documented against hand-made Parquet outputs.

The tables are written here in the `pipeline.schema` layout; each query's expected rows are
derived below in plain Python from the same hand-chosen values.
"""
from __future__ import annotations

import datetime
import math
import os
import re

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schema

QUERIES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       'examples', 'duckdb_queries.sql')
RUN = 'r1'
AT = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
SLICES = {'Overall': 3900, 'country:US': 1500, 'country:DE': 400, 'country:FR': 2000}
AUC = {'click': {'Overall': 0.81, 'country:US': 0.85, 'country:DE': 0.62, 'country:FR': 0.79},
       'topic': {'Overall': 0.7, 'country:US': 0.75, 'country:DE': float('nan'),
                 'country:FR': 0.66}}
HOURS = [datetime.datetime(2026, 1, 1, h, tzinfo=datetime.timezone.utc) for h in (0, 1, 2)]
WINDOWED_AUC = {'Overall': [0.8, 0.78, 0.75], 'country:US': [0.9, 0.91, 0.85],
                'country:DE': [0.7, 0.6, 0.5]}


def _load_queries() -> tuple[str, dict[str, str]]:
    """The file's set-up statements and its named queries, as a DuckDB user would run them."""
    with open(QUERIES) as f:
        text = f.read()
    parts = re.split(r'^-- name: (\w+)[^\n]*\n', text, flags=re.M)
    setup, rest = parts[0], parts[1:]
    return setup, {rest[i]: rest[i + 1] for i in range(0, len(rest), 2)}


SETUP, NAMED = _load_queries()


def _ids(name, head):
    cols, vals = ('', '') if name == 'Overall' else name.split(':')
    return dict(run_id=RUN, evaluated_at=AT, slice=name, slice_columns=cols, slice_values=vals,
                head=head)


def _metric(name, head, metric, value, **extra):
    return dict(_ids(name, head), model='candidate', metric=metric, value=value,
                lower_bound=None, upper_bound=None, ci_lower=None, ci_upper=None,
                standard_error=None, example_count=SLICES[name],
                weighted_example_count=float(SLICES[name]), **extra)


def _plot(name, head, sub_key, curve, **values):
    row = dict(_ids(name, head), sub_key=sub_key, curve=curve)
    row.update({f.name: values.get(f.name) for f in schema.PLOTS if f.name not in row})
    return row


def _write(out, metrics, plots, windowed=False):
    for kind, rows, base in (('metrics', metrics, schema.METRICS), ('plots', plots, schema.PLOTS)):
        os.makedirs(os.path.join(out, kind), exist_ok=True)
        table = pa.Table.from_pylist(rows, schema=schema.with_extras(base, windowed=windowed))
        pq.write_table(table, os.path.join(out, kind, '%s.parquet' % kind))


ROC = {'click': [(0.0, 1.0, 1.0, 0.4), (0.5, 0.25, 0.75, 0.6667), (1.0, 0.0, 0.0, 0.0)],
       'topic': [(0.2, 0.5, 0.9, 0.5), (0.8, 0.1, 0.3, 0.6)]}
CAL = [(0.0, 0.5, 6.0, 1.0, 1.5), (0.5, 1.0, 0.0, 0.0, 0.0), (0.5, 1.0, 4.0, 3.0, 2.8)]


@pytest.fixture(scope='module')
def batch_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('batch'))
    metrics = []
    for head, by_slice in AUC.items():
        for name, auc in by_slice.items():
            metrics.append(_metric(name, head, 'auc', auc))
            metrics.append(_metric(name, head, 'loss', 0.5))
    plots = []
    for head, points in ROC.items():
        for t, fpr, rec, prec in points:
            plots.append(_plot('Overall', head, '', 'confusion', threshold=t,
                               false_positive_rate=fpr, recall=rec, precision=prec,
                               tp=1.0, fp=1.0, tn=1.0, fn=1.0))
    # Not part of the pooled Overall curve: a class curve and another slice's curve.
    plots.append(_plot('Overall', 'topic', 'class1', 'confusion', threshold=0.5, recall=0.1))
    plots.append(_plot('country:US', 'click', '', 'confusion', threshold=0.5, recall=0.2))
    for lo, hi, w, wl, wp in CAL:
        plots.append(_plot('Overall', 'click', '', 'calibration', bucket_lower=lo,
                           bucket_upper=hi, weighted_examples=w, weighted_labels=wl,
                           weighted_predictions=wp))
    _write(out, metrics, plots)
    return out


@pytest.fixture(scope='module')
def windowed_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('windowed'))
    metrics = []
    for i, start in enumerate(HOURS):
        for name, values in WINDOWED_AUC.items():
            metrics.append(_metric(name, 'click', 'auc', values[i], window_start=start,
                                   window_end=start + datetime.timedelta(hours=1)))
    _write(out, metrics, [], windowed=True)
    return out


def _run(out, name):
    con = duckdb.connect()
    # As documented: set the run's directory first; the file keeps a variable already set.
    con.execute("SET VARIABLE output = '%s'" % out.replace("'", "''"))
    con.execute(SETUP)
    cur = con.execute(NAMED[name])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _close(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if a is None or b is None:
        return a is b
    return a == pytest.approx(b, abs=1e-12)


def test_file_names_every_query_once():
    assert list(NAMED) == ['overall', 'worst_slices_by_auc', 'slice_size_filter',
                           'auc_over_windows', 'worst_slices_latest_window', 'roc_curve',
                           'calibration', 'comparison']


@pytest.fixture(scope='module')
def compared_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('compared'))
    rows = [_metric('Overall', 'click', 'auc', 0.8),
            dict(_metric('Overall', 'click', 'auc', 0.75), model='baseline'),
            dict(_metric('Overall', 'click', 'auc', 0.05), model='diff', ci_lower=0.01,
                 ci_upper=0.09)]
    _write(out, rows, [])
    return out


def test_comparison_sets_candidate_baseline_and_diff_side_by_side(compared_run):
    rows = _run(compared_run, 'comparison')
    assert [(r['slice'], r['metric'], r['candidate'], r['baseline'], r['diff'], r['ci_lower'],
             r['ci_upper']) for r in rows] == [('Overall', 'auc', 0.8, 0.75, 0.05, 0.01, 0.09)]


def test_the_metrics_view_holds_the_candidates_rows_only(compared_run):
    assert [(r['metric'], r['value']) for r in _run(compared_run, 'overall')] == [('auc', 0.8)]


def test_overall(batch_run):
    rows = _run(batch_run, 'overall')
    expected = sorted((h, m, v) for h in AUC for m, v in (('auc', AUC[h]['Overall']),
                                                          ('loss', 0.5)))
    assert [(r['head'], r['metric'], r['value']) for r in rows] == expected
    assert all(r['example_count'] == 3900 for r in rows)


def test_worst_slices_by_auc(batch_run):
    rows = _run(batch_run, 'worst_slices_by_auc')
    got = [(r['head'], r['slice'], r['auc'], r['example_count'], r['vs_overall']) for r in rows]
    # click: DE 0.62 < FR 0.79 < US 0.85; topic: FR 0.66 < US 0.75, and DE (NaN) last.
    expected = [('click', 'country:DE', 0.62, 400, 0.62 - 0.81),
                ('click', 'country:FR', 0.79, 2000, 0.79 - 0.81),
                ('click', 'country:US', 0.85, 1500, 0.85 - 0.81),
                ('topic', 'country:FR', 0.66, 2000, 0.66 - 0.7),
                ('topic', 'country:US', 0.75, 1500, 0.75 - 0.7),
                ('topic', 'country:DE', float('nan'), 400, float('nan'))]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g[:2] == e[:2] and g[3] == e[3]
        assert _close(g[2], e[2]) and _close(g[4], e[4]), (g, e)


def test_slice_size_filter(batch_run):
    rows = _run(batch_run, 'slice_size_filter')
    # DE (400 examples) is too small; FR and US have at least 1000.
    assert [(r['head'], r['slice']) for r in rows] == [
        ('click', 'country:FR'), ('click', 'country:US'),
        ('topic', 'country:FR'), ('topic', 'country:US')]


def test_auc_over_windows(windowed_run):
    rows = _run(windowed_run, 'auc_over_windows')
    got = [(r['slice'], r['window_start'], r['auc'], r['change']) for r in rows]
    expected = []
    for name in sorted(WINDOWED_AUC):   # ORDER BY head, slice, window_start
        v = WINDOWED_AUC[name]
        expected += [(name, HOURS[0], v[0], None), (name, HOURS[1], v[1], v[1] - v[0]),
                     (name, HOURS[2], v[2], v[2] - v[1])]
    assert len(got) == 9
    for g, e in zip(got, expected):
        assert g[0] == e[0] and g[1] == e[1]
        assert _close(g[2], e[2]) and _close(g[3], e[3]), (g, e)
    # country:DE falls 0.1 per window: (0.6 - 0.7), (0.5 - 0.6).
    de = [r['change'] for r in rows if r['slice'] == 'country:DE']
    assert de[1] == pytest.approx(-0.1) and de[2] == pytest.approx(-0.1)


def test_worst_slices_latest_window(windowed_run):
    rows = _run(windowed_run, 'worst_slices_latest_window')
    assert [(r['slice'], r['window_start'], r['auc']) for r in rows] == [
        ('country:DE', HOURS[2], 0.5), ('country:US', HOURS[2], 0.85)]


def test_roc_curve(batch_run):
    rows = _run(batch_run, 'roc_curve')
    got = [(r['head'], r['threshold'], r['false_positive_rate'], r['recall'], r['precision'])
           for r in rows]
    assert got == [(h, *p) for h in sorted(ROC) for p in ROC[h]]


def test_calibration(batch_run):
    rows = _run(batch_run, 'calibration')
    # The empty bucket is left out; means are Σw·p / Σw and Σw·y / Σw.
    assert [(r['bucket_lower'], r['weighted_examples']) for r in rows] == [(0.0, 6.0),
                                                                          (0.5, 4.0)]
    assert rows[0]['mean_prediction'] == pytest.approx(1.5 / 6.0)
    assert rows[0]['mean_label'] == pytest.approx(1.0 / 6.0)
    assert rows[1]['mean_prediction'] == pytest.approx(2.8 / 4.0)
    assert rows[1]['mean_label'] == pytest.approx(3.0 / 4.0)


def test_default_output_is_the_demo_directory():
    # Without a variable set, the file reads the demo's outputs (documented in its header).
    assert re.search(r"COALESCE\(getvariable\('output'\), 'demo_out/example'\)", SETUP)


def test_queries_shown_in_docs_run(batch_run, windowed_run):
    docs = os.path.join(os.path.dirname(QUERIES), os.pardir, 'docs', 'tables.md')
    with open(docs) as f:
        sql = re.findall(r'```sql\n(.*?)```', f.read(), flags=re.S)[0]
    worst, over_windows = [s for s in sql.split(';') if s.strip()]
    rows = duckdb.sql(worst.replace('out/run1', batch_run)).fetchall()
    assert [r[:2] for r in rows[:3]] == [('click', 'country:DE'), ('click', 'country:FR'),
                                         ('click', 'country:US')]
    rows = duckdb.sql(over_windows.replace('out/run1', windowed_run)).fetchall()
    assert len(rows) == 9 and rows[0][1:4] == ('Overall', HOURS[0], 0.8)
