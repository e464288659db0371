"""Confidence intervals in pipeline runs (issue 17): with `confidence:`, every metrics row carries
the interval and standard error its head's interval state gives for the whole slice (or window)
seen as one batch, whatever the sharding; rows of metrics without an interval, and every row of a
run without `confidence:`, hold nulls. The interval formulas themselves are checked against
direct implementations in tests/test_intervals.py.
"""
from __future__ import annotations

import datetime
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import heads
from pipeline import sources
from pipeline.run import evaluate
from _helpers import COUNTRIES, pipeline_data, write_shards  # the tests' rows, in shards
from pipeline.schema import METRICS, with_extras

RUNNER = ['--runner=DirectRunner']
BINARY = {'type': 'BinaryClassHead', 'args': {'name': 'click', 'weight_column': 'w', 'thresholds': [0.5]},
          'logits': 'x', 'labels': 'y'}
REGRESSION = {'type': 'RegressionHead', 'args': {'name': 'spend'}, 'logits': 'r', 'labels': 'ry'}
CI = ('ci_lower', 'ci_upper', 'standard_error')


def _data(n: int = 2400, seed: int = 3) -> pa.Table:
    return pipeline_data(n, seed, ts_max=240)


def _write(table: pa.Table, directory, shards: int) -> str:
    return write_shards(table, directory, shards, row_group_size=300)


def _config(pattern: str, output, **extra) -> dict:
    raw = {'input': {'pattern': pattern}, 'heads': [BINARY, REGRESSION],
           'slices': [[], ['country']], 'output': str(output)}
    raw.update(extra)
    return raw


def _metrics(output) -> pa.Table:
    return pq.read_table(os.path.join(str(output), 'metrics', 'metrics.parquet'))


def _expected(d: dict, mask: np.ndarray, level: float) -> dict:
    """{(head, metric): Estimate | None} of interval states fed the slice's rows as one batch."""
    binary = heads.BinaryClassHead(name='click', weight_column='w', thresholds=[0.5])
    regression = heads.RegressionHead(name='spend')
    out = {}
    b = binary.new_state(intervals=True).update(
        d['y'][mask][:, None], d['x'][mask][:, None], {'w': d['w'][mask]})
    out.update({('click', k[:-len('/click')]): e for k, e in b.interval_estimates(level).items()})
    r = regression.new_state(intervals=True).update(d['ry'][mask][:, None], d['r'][mask][:, None])
    out.update({('spend', k[:-len('/spend')]): e
                for k, e in r.interval_estimates(level).items()})
    return out


def _check_rows(rows: list[dict], expected: dict) -> int:
    """Every row's interval columns against `expected`; returns the rows with an interval."""
    with_interval = 0
    for row in rows:
        e = expected.get((row['head'], row['metric']))
        got = tuple(row[c] for c in CI)
        if e is None:
            assert got == (None, None, None), (row['slice'], row['head'], row['metric'])
            continue
        with_interval += 1
        assert got == pytest.approx(tuple(e), rel=1e-9, abs=1e-12), (row['slice'], row['metric'])
        assert row['ci_lower'] <= row['value'] <= row['ci_upper'] or row['metric'] == 'auc'
    return with_interval


@pytest.fixture(scope='module')
def table():
    return _data()


def test_every_row_carries_its_slices_interval_whatever_the_sharding(tmp_path, table):
    d = {k: np.asarray(v) for k, v in table.to_pydict().items()}
    old = sources.TARGET_ROWS
    sources.TARGET_ROWS = 400  # several batches, bundles and merges
    try:
        pattern = _write(table, tmp_path / 'in', 3)
        evaluate(_config(pattern, tmp_path / 'out', confidence={'level': 0.9}), RUNNER)
    finally:
        sources.TARGET_ROWS = old
    metrics = _metrics(tmp_path / 'out')
    assert metrics.schema == METRICS
    assert METRICS.names[METRICS.names.index('upper_bound') + 1:][:3] == list(CI)
    rows = metrics.to_pylist()
    masks = {'Overall': np.ones(len(d['x']), bool)}
    masks.update({'country:%s' % c: d['country'] == c for c in COUNTRIES})
    counted = 0
    for name, mask in masks.items():
        counted += _check_rows([r for r in rows if r['slice'] == name], _expected(d, mask, 0.9))
    # click: 3 means, accuracy, precision, recall, auc, 3 at the threshold; spend: 3 means.
    assert counted == 4 * (3 + 4 + 3 + 3)
    loss = [r for r in rows if r['metric'] in ('loss', 'auc_precision_recall')]
    assert loss and all(r[c] is None for r in loss for c in CI)


def test_windows_carry_their_own_intervals(tmp_path, table):
    d = {k: np.asarray(v) for k, v in table.to_pydict().items()}
    pattern = _write(table, tmp_path / 'in', 2)
    evaluate(_config(pattern, tmp_path / 'out', slices=[[]], confidence={'level': 0.95},
                     window={'column': 'ts', 'size': 120}), RUNNER)
    metrics = _metrics(tmp_path / 'out')
    assert metrics.schema == with_extras(METRICS, windowed=True)
    rows = metrics.to_pylist()
    for start in (0, 120):
        ws = datetime.datetime.fromtimestamp(start, datetime.timezone.utc)
        mask = (d['ts'] >= start) & (d['ts'] < start + 120)
        window_rows = [r for r in rows if r['window_start'] == ws]
        assert window_rows
        assert _check_rows(window_rows, _expected(d, mask, 0.95)) == 13


def test_a_run_without_confidence_has_null_interval_columns(tmp_path, table):
    pattern = _write(table.slice(0, 500), tmp_path / 'in', 1)
    evaluate(_config(pattern, tmp_path / 'out'), RUNNER)
    metrics = _metrics(tmp_path / 'out')
    assert metrics.schema == METRICS
    for c in CI:
        assert metrics.column(c).null_count == metrics.num_rows


def test_a_one_row_slice_has_null_intervals_not_nan(tmp_path, table):
    one = table.slice(0, 1)
    pattern = _write(one, tmp_path / 'in', 1)
    evaluate(_config(pattern, tmp_path / 'out', confidence={'level': 0.95}), RUNNER)
    for row in _metrics(tmp_path / 'out').to_pylist():
        for c in CI:
            assert row[c] is None or math.isfinite(row[c]), (row['metric'], c)
        if row['metric'] in ('auc', 'label/mean', 'average_loss'):
            assert row['ci_lower'] is None, row['metric']


def test_bootstrap_rows_are_the_replicates_of_each_file_row_whatever_the_batching(tmp_path,
                                                                                   table):
    """`method: bootstrap`: each row's counts come from (file, row number), so runs batching the
    same files differently give the same intervals — those of a `BootstrapState` fed the slice
    as one batch with those row identities."""
    from heads.array.bootstrap import ROW_ID, BootstrapState, row_ids
    small = table.slice(0, 900)
    pattern = _write(small, tmp_path / 'in', 2)
    old = sources.TARGET_ROWS
    outs = []
    try:
        for target in (150, 100_000):
            sources.TARGET_ROWS = target
            out = tmp_path / ('out%d' % target)
            evaluate(_config(pattern, out, slices=[[]],
                             confidence={'level': 0.95, 'method': 'bootstrap'}), RUNNER)
            outs.append(_metrics(out).to_pylist())
    finally:
        sources.TARGET_ROWS = old
    a, b = ({(r['head'], r['metric']): tuple(r[c] for c in CI) for r in rows} for rows in outs)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k][0] is None) == (b[k][0] is None), k
        if a[k][0] is not None:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
    d = {k: np.asarray(v) for k, v in small.to_pydict().items()}
    ids = np.concatenate([row_ids(os.path.join(str(tmp_path / 'in'), 'part-%03d.parquet' % i),
                                  np.arange(450)) for i in range(2)])
    head = heads.BinaryClassHead(name='click', weight_column='w', thresholds=[0.5])
    want = BootstrapState(head.new_state()).update(
        d['y'][:, None], d['x'][:, None], {'w': d['w'], ROW_ID: ids}).interval_estimates()
    for key, e in want.items():
        got = a[('click', key[:-len('/click')])]
        if e is None:
            assert got == (None, None, None), key
        else:
            assert got == pytest.approx(tuple(e), rel=1e-9, abs=1e-12), key
    assert a[('click', 'auc_precision_recall')][0] is not None  # every metric has one
