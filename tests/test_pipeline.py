"""End-to-end pipeline runs on the DirectRunner, checked against references written in this file.

Two groups of Beam runs (each a few seconds):

- With `FakeHead`, a small head written here that implements the array-face contract, the
  pipeline's own plumbing: slices and crosses, sharding invariance, the MultiHead loss rows,
  bounds and plots, dead-lettered rows and predictions, a failing bad record, an empty input.
- With the real heads: the binary head against the formulas of tf.estimator on 4 shards and 1
  file, the MultiHead with head_weights, multi-class and multi-label heads (multi-hot, id and name
  lists), CSV and TFRecord input, degenerate slices, windows by step, and `make demo`. Expected values come from formulas
  written here, sklearn, or the head's own state fed the whole slice as one batch.
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

import heads
from pipeline import cli, sources
from pipeline import evaluate as evaluate_lib
from pipeline.combine import HeadStateCombineFn
from pipeline.config import ConfigError, HeadSpec, parse_config
from pipeline.elements import BadRecordError, HeadArrays, SubBatch
from pipeline.run import evaluate, prepare
from pipeline.schema import ERRORS, METRICS, PLOTS, TIMESTAMP, with_extras
from _helpers import COUNTRIES, pipeline_data, write_shards  # the tests' rows, in shards

RUNNER = ['--runner=DirectRunner']


# -------------------------------------------------------------------------------------------------
# Data and slow references.
# -------------------------------------------------------------------------------------------------

def _data(n: int = 3000, seed: int = 7) -> pa.Table:
    return pipeline_data(n, seed)


def _write(table: pa.Table, directory, shards: int, row_group_size: int = 400) -> str:
    return write_shards(table, directory, shards, row_group_size)


def _sigmoid32(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _bucketed_auc(p32: np.ndarray, pos: np.ndarray, w: np.ndarray, n: int = 200) -> float:
    """tf.keras AUC(num_thresholds=200, ROC, interpolation), written out from its definition."""
    bucket = np.maximum(np.ceil(p32 * np.float32(n - 1)).astype(np.int64) - 1, 0)
    tp = np.array([np.sum(w * pos * (bucket >= i)) for i in range(n)])
    fp = np.array([np.sum(w * (1 - pos) * (bucket >= i)) for i in range(n)])
    tp[n - 1] = fp[n - 1] = 0.0
    fn, tn = np.sum(w * pos) - tp, np.sum(w * (1 - pos)) - fp
    r, f = tp / (tp + fn), fp / (fp + tn)
    return float(np.sum((f[:-1] - f[1:]) * (r[:-1] + r[1:]) / 2))


def _reference_binary(x, y, w, threshold=0.5) -> dict:
    """tf.estimator BinaryClassHead's numbers from the formulas (sigmoid cross-entropy,
    Keras 2 weighted means, class 1 iff logit > 0)."""
    x64, z = x.astype(np.float64), y.astype(np.float64)
    u = np.maximum(x64, 0) - x64 * z + np.log1p(np.exp(-np.abs(x64)))
    p = _sigmoid32(x)
    c = (x > 0).astype(np.float64)
    label_mean = np.sum(w * z) / np.sum(w)
    tp, fp = np.sum(w * z * c), np.sum(w * (1 - z) * c)
    fn = np.sum(w * z * (1 - c))
    return {
        'loss': np.sum(w * u) / len(x),                   # sum_over_batch_size: Σ w·U / n
        'average_loss': np.sum(w * u) / np.sum(w),        # weighted mean
        'accuracy': np.sum(w * (z == c)) / np.sum(w),
        'precision': tp / (tp + fp),
        'recall': tp / (tp + fn),
        'label/mean': label_mean,
        'prediction/mean': np.sum(w * p) / np.sum(w),
        'accuracy_baseline': max(label_mean, 1 - label_mean),
        'auc': _bucketed_auc(p, z, w),
        'accuracy/positive_threshold_%g' % threshold:
            np.sum(w * (z == (p > threshold))) / np.sum(w),
        '_exact_auc': roc_auc_score(z, x64, sample_weight=w),
        '_count': len(x),
        '_weighted': np.sum(w.astype(np.float64)),
    }


def _metrics(output) -> pa.Table:
    return pq.read_table(os.path.join(str(output), 'metrics', 'metrics.parquet'))


def _plots(output) -> pa.Table:
    return pq.read_table(os.path.join(str(output), 'plots', 'plots.parquet'))


def _lookup(table: pa.Table) -> dict:
    return {(r['slice'], r['head'], r['metric']) + tuple(
        r[k] for k in ('window_start', 'step') if k in r): r for r in table.to_pylist()}


def _metrics_and_rows(output) -> tuple[pa.Table, dict]:
    """The unwindowed metrics table and its rows by (slice, head, metric), each key once."""
    metrics = _metrics(output)
    assert metrics.schema == METRICS
    rows = _lookup(metrics)
    assert len(rows) == metrics.num_rows  # each (slice, head, metric) once
    return metrics, rows


def _assert_same_metrics(output_a, output_b) -> None:
    """The two runs' metrics tables hold the same rows with the same values and counts (up to
    float rounding from a different summation order)."""
    a_rows, b_rows = _lookup(_metrics(output_a)), _lookup(_metrics(output_b))
    assert a_rows.keys() == b_rows.keys()
    for key in a_rows:
        for col in ('value', 'lower_bound', 'upper_bound', 'example_count',
                    'weighted_example_count'):
            a, b = a_rows[key][col], b_rows[key][col]
            assert (a is None) == (b is None), (key, col)
            if a is not None:
                assert a == pytest.approx(b, rel=1e-9, abs=1e-12), (key, col)


BINARY = {'type': 'BinaryClassHead',
          'args': {'name': 'click', 'weight_column': 'w', 'thresholds': [0.5]},
          'logits': 'x', 'labels': 'y'}


def _config(pattern: str, output, **extra) -> dict:
    raw = {'input': {'pattern': pattern}, 'heads': [BINARY], 'slices': [[], ['country']],
           'output': str(output)}
    raw.update(extra)
    return raw


# -------------------------------------------------------------------------------------------------
# A small head implementing the array-face contract (docs/design.md), so the pipeline's plumbing
# is checked on its own: weighted means of labels and logits, a squared-error loss reduced
# 'sum_over_batch_size', min/max bounds and a two-threshold confusion curve.
# -------------------------------------------------------------------------------------------------

FAKE_THRESHOLDS = np.array([0.0, 1.0])


class FakeState:
    """Mergeable sums over the rows seen (float64)."""

    def __init__(self, name: str | None, weight_column: str | None):
        self.name = name
        self.weight_column = weight_column
        self.n = 0
        self.sums = np.zeros(4)            # Σw, Σw·label, Σw·logit, Σw·(logit − label)²
        self.lo, self.hi = np.inf, -np.inf  # range of the logits seen
        self.conf = np.zeros((4, 2))       # tp, fp, tn, fn at FAKE_THRESHOLDS

    def _key(self, k: str) -> str:
        return k + '/' + self.name if self.name else k

    def update(self, labels, logits, features=None) -> 'FakeState':
        y = np.asarray(labels, np.float64).reshape(-1)
        x = np.asarray(logits, np.float64).reshape(y.size, -1).mean(axis=1)
        w = (np.asarray(features[self.weight_column], np.float64).reshape(-1)
             if self.weight_column else np.ones_like(x))
        self.n += x.size
        self.sums += [w.sum(), (w * y).sum(), (w * x).sum(), (w * (x - y) ** 2).sum()]
        if x.size:
            self.lo, self.hi = min(self.lo, x.min()), max(self.hi, x.max())
        pos = y > 0
        for j, t in enumerate(FAKE_THRESHOLDS):
            pred = x > t
            self.conf[:, j] += [(w * (pos & pred)).sum(), (w * (~pos & pred)).sum(),
                                (w * (~pos & ~pred)).sum(), (w * (pos & ~pred)).sum()]
        return self

    def merge(self, other: 'FakeState') -> 'FakeState':
        self.n += other.n
        self.sums = self.sums + other.sums
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)
        self.conf = self.conf + other.conf
        return self

    def result(self) -> dict:
        sw = self.sums[0]
        return {self._key('label/mean'): self.sums[1] / sw if sw else 0.0,
                self._key('prediction/mean'): self.sums[2] / sw if sw else 0.0}

    def loss(self) -> float:
        return self.sums[3] / self.n if self.n else 0.0

    def counts(self) -> tuple:
        return self.n, float(self.sums[0])

    def bounds(self) -> dict:
        return {self._key('prediction/mean'): (self.lo, self.hi)}

    def plots(self) -> dict:
        tp, fp, tn, fn = self.conf
        nan = np.full(2, np.nan)
        return {'sub_key': np.array(['', ''], object),
                'curve': np.array(['confusion', 'confusion'], object),
                'threshold': FAKE_THRESHOLDS.copy(), 'tp': tp, 'fp': fp, 'tn': tn, 'fn': fn,
                'precision': nan, 'recall': nan, 'false_positive_rate': nan,
                'bucket_lower': nan, 'bucket_upper': nan, 'weighted_examples': nan,
                'weighted_labels': nan, 'weighted_predictions': nan}


class FakeHead:
    """The array face of a head whose metrics are the weighted label and logit means (with
    `n_classes` > 2 logits per row, the fake's "logit" is their row mean)."""

    loss_reduction = 'sum_over_batch_size'

    def __init__(self, name: str | None = None, weight_column: str | None = None,
                 n_classes: int = 2, **_):
        self.name = name
        self.weight_column = weight_column
        self.logits_dimension = n_classes if n_classes > 2 else 1

    def new_state(self) -> FakeState:
        return FakeState(self.name, self.weight_column)

    def array_predictions(self, logits, keys=None) -> dict:
        return {'predictions': np.asarray(logits, np.float32)}

    def array_loss(self, labels, logits, features=None) -> np.ndarray:
        x = np.asarray(logits, np.float64).mean(axis=1, keepdims=True)
        w = (np.asarray(features[self.weight_column], np.float64).reshape(-1, 1)
             if self.weight_column else 1.0)
        return w * (x - np.asarray(labels, np.float64)) ** 2

    def invalid_rows(self, labels, logits, features=None) -> list:
        out = [('logits', 'non-finite logit', ~np.isfinite(np.asarray(logits, np.float64)))]
        out.append(('labels', 'non-finite label', ~np.isfinite(np.asarray(labels, np.float64))))
        if self.weight_column:
            w = np.asarray(features[self.weight_column], np.float64)
            out.append((self.weight_column, 'negative weight', w < 0))
        return [(role, reason, np.asarray(m).reshape(len(m), -1).any(axis=1))
                for role, reason, m in out if np.asarray(m).any()]


@pytest.fixture
def fake_heads(monkeypatch):
    """Every configured head is a FakeHead (in this process, where the DirectRunner runs)."""
    monkeypatch.setattr(HeadSpec, 'build', lambda spec: FakeHead(**dict(spec.args)))


def _fake_reference(x, y, w) -> dict:
    """The fake head's numbers over a slice, straight from the rows."""
    x, y, w = (np.asarray(v, np.float64) for v in (x, y, w))
    return {'label/mean': np.sum(w * y) / np.sum(w), 'prediction/mean': np.sum(w * x) / np.sum(w),
            'loss': np.sum(w * (x - y) ** 2) / len(x), '_count': len(x), '_weighted': np.sum(w),
            '_lo': x.min(), '_hi': x.max()}


FAKE = {'type': 'RegressionHead', 'args': {'name': 'click', 'weight_column': 'w'},
        'logits': 'x', 'labels': 'y'}
FAKE2 = {'type': 'RegressionHead', 'args': {'name': 'watch'}, 'logits': 'r', 'labels': 'ry'}


def _slices(d: dict) -> dict:
    """Slice name → row mask for slices [[], [country], [country, gs]]."""
    n = len(d['x'])
    out = {'Overall': np.ones(n, bool)}
    for c in COUNTRIES:
        out['country:%s' % c] = d['country'] == c
        for g in (100, 200):
            out['country_X_gs:%s_X_%d' % (c, g)] = (d['country'] == c) & (d['gs'] == g)
    return {k: m for k, m in out.items() if m.any()}


@pytest.fixture(scope='module')
def fake_runs(tmp_path_factory):
    """The same 2,000 rows in 4 shards and in 1 file, two fake heads with head_weights."""
    root = tmp_path_factory.mktemp('fake')
    table = _data(n=2000, seed=17)
    runs = {}
    old = sources.TARGET_ROWS
    sources.TARGET_ROWS = 300  # many batches and work items even on small data
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HeadSpec, 'build', lambda spec: FakeHead(**dict(spec.args)))
        try:
            for shards in (4, 1):
                # One file: also hand partial states on after every batch (the bounded-memory
                # path of a bundle with many keys), so merges happen in yet another grouping.
                mp.setattr(evaluate_lib, 'MAX_BUNDLE_KEYS', 20000 if shards == 4 else 1)
                pattern = _write(table, root / ('in%d' % shards), shards, row_group_size=250)
                raw = _config(pattern, root / ('out%d' % shards), heads=[FAKE, FAKE2],
                              head_weights=[1.0, 0.5], slices=[[], ['country'], ['country', 'gs']])
                summary = evaluate(raw, RUNNER, run_id='fake-%d' % shards)
                runs[shards] = (summary, root / ('out%d' % shards))
        finally:
            sources.TARGET_ROWS = old
    return {k: np.asarray(v) for k, v in table.to_pydict().items()}, runs


def test_fake_heads_per_slice_and_multi_head_loss(fake_runs):
    d, runs = fake_runs
    summary, out = runs[4]
    metrics, rows = _metrics_and_rows(out)
    slices = _slices(d)
    assert {k[0] for k in rows} == set(slices)
    expected_keys = set()
    for name, mask in slices.items():
        click = _fake_reference(d['x'][mask], d['y'][mask], d['w'][mask])
        watch = _fake_reference(d['r'][mask], d['ry'][mask], np.ones(mask.sum()))
        for head, ref in (('click', click), ('watch', watch)):
            for metric in ('label/mean', 'prediction/mean', 'loss'):
                r = rows[(name, head, metric)]
                assert r['value'] == pytest.approx(ref[metric], rel=1e-9), (name, head, metric)
                assert r['example_count'] == ref['_count']
                assert r['weighted_example_count'] == pytest.approx(ref['_weighted'], rel=1e-9)
                expected_keys.add((name, head, metric))
            bounded = rows[(name, head, 'prediction/mean')]
            assert (bounded['lower_bound'], bounded['upper_bound']) == pytest.approx(
                (ref['_lo'], ref['_hi']))
            assert rows[(name, head, 'loss')]['lower_bound'] is None
        # MultiHead.loss = 1.0 · click loss + 0.5 · watch loss, under the joined name, alone.
        multi = rows[(name, 'click_watch', 'loss')]
        assert multi['value'] == pytest.approx(1.0 * click['loss'] + 0.5 * watch['loss'],
                                               rel=1e-9)
        assert multi['example_count'] == mask.sum()
        assert multi['weighted_example_count'] is None  # click is weighted, watch is not
        expected_keys.add((name, 'click_watch', 'loss'))
    assert set(rows) == expected_keys
    assert rows[('country_X_gs:US_X_100', 'click', 'loss')]['slice_columns'] == 'country_X_gs'
    assert rows[('country_X_gs:US_X_100', 'click', 'loss')]['slice_values'] == 'US_X_100'
    assert set(metrics.column('run_id').to_pylist()) == {'fake-4'}
    # Rows come Overall first, then slices in config order.
    assert metrics.column('slice').to_pylist()[0] == 'Overall'

    plots = _plots(out)
    assert plots.schema == PLOTS
    prow = {(r['slice'], r['head'], r['threshold']): r for r in plots.to_pylist()}
    assert len(prow) == plots.num_rows == 2 * 2 * len(slices)  # no plots for the MultiHead
    for name, mask in slices.items():
        x, y, w = d['x'][mask], d['y'][mask], d['w'][mask].astype(np.float64)
        for t in FAKE_THRESHOLDS:
            r = prow[(name, 'click', t)]
            assert (r['tp'], r['fp'], r['tn'], r['fn']) == pytest.approx((
                np.sum(w * ((y > 0) & (x > t))), np.sum(w * ((y <= 0) & (x > t))),
                np.sum(w * ((y <= 0) & (x <= t))), np.sum(w * ((y > 0) & (x <= t)))), rel=1e-9)
            assert r['precision'] is None and r['curve'] == 'confusion' and r['sub_key'] == ''

    assert summary['rows_read'] == len(d['x']) and summary['bad_rows'] == 0
    assert summary['input']['files'] == 4 and summary['wall_time_s'] > 0
    with open(os.path.join(str(out), 'summary.json')) as f:
        on_disk = json.load(f)
    assert (on_disk['run_id'], on_disk['rows_read'], on_disk['bad_rows']) == (
        'fake-4', len(d['x']), 0)
    assert on_disk['metrics_rows'] == metrics.num_rows
    # Wall time covers every writer; the tables' share is kept apart.
    assert on_disk['wall_time_s'] >= on_disk['tables_written_s'] > 0
    assert on_disk == summary


def test_fake_heads_do_not_depend_on_sharding(fake_runs):
    _, runs = fake_runs
    _assert_same_metrics(runs[4][1], runs[1][1])
    m4, m1 = _metrics(runs[4][1]), _metrics(runs[1][1])
    ids = ['slice', 'head', 'metric']
    assert m4.select(ids).equals(m1.select(ids))  # same rows in the same order
    p4 = _plots(runs[4][1])
    p1 = _plots(runs[1][1])
    assert p4.select(ids[:2] + ['threshold']).equals(p1.select(ids[:2] + ['threshold']))
    np.testing.assert_allclose(p4.column('tp').to_numpy(), p1.column('tp').to_numpy(), rtol=1e-9)


def test_fake_heads_dead_letter_and_predictions(tmp_path, fake_heads):
    table = _data(n=1200, seed=11)
    d = {k: np.asarray(v) for k, v in table.to_pydict().items()}
    y_null = np.zeros(len(d['y']), bool)
    y_null[5] = True                      # a null label (found while reading the column)
    d['ry'] = d['ry'].copy()
    d['ry'][700] = np.nan                 # a NaN label of the second head
    d['x'][900] = np.inf                  # a non-finite logit
    d['w'][1000] = -1.0                   # a negative weight
    columns = dict(d)
    columns['y'] = pa.array(d['y'], mask=y_null)
    pattern = _write(pa.table(columns), tmp_path / 'in', 2)
    raw = _config(pattern, tmp_path / 'out', heads=[FAKE, FAKE2], head_weights=[2.0, 1.0],
                  slices=[[], ['country']])
    assert cli.main(['evaluate', '--config', json.dumps(raw), '--bad_records', 'dead_letter',
                     '--write_predictions', '--run_id=dl'] + RUNNER) == 0

    errors = pq.read_table(str(tmp_path / 'out' / 'errors' / 'errors.parquet'))
    assert errors.schema == ERRORS
    got = [(os.path.basename(r['file']), r['row'], r['column'], r['reason'])
           for r in errors.to_pylist()]
    # 1200 rows in two files of 600: rows 700, 900 and 1000 are rows 100, 300, 400 of the second.
    assert got == [('part-000.parquet', 5, 'y', 'null value'),
                   ('part-001.parquet', 100, 'ry', 'non-finite label'),
                   ('part-001.parquet', 300, 'x', 'non-finite logit'),
                   ('part-001.parquet', 400, 'w', 'negative weight')]
    assert set(errors.column('run_id').to_pylist()) == {'dl'}
    assert json.loads(errors.to_pylist()[3]['values'])['w'] == -1.0

    good = np.ones(len(d['x']), bool)
    good[[5, 700, 900, 1000]] = False     # dropped for every head
    rows = _lookup(_metrics(tmp_path / 'out'))
    for name, mask in [('Overall', good)] + [('country:%s' % c, good & (d['country'] == c))
                                              for c in COUNTRIES]:
        click = _fake_reference(d['x'][mask], d['y'][mask], d['w'][mask])
        watch = _fake_reference(d['r'][mask], d['ry'][mask], np.ones(mask.sum()))
        assert rows[(name, 'click', 'loss')]['value'] == pytest.approx(click['loss'], rel=1e-9)
        assert rows[(name, 'watch', 'label/mean')]['value'] == pytest.approx(
            watch['label/mean'], rel=1e-9)
        assert rows[(name, 'click_watch', 'loss')]['value'] == pytest.approx(
            2.0 * click['loss'] + 1.0 * watch['loss'], rel=1e-9)
        for head in ('click', 'watch', 'click_watch'):
            assert rows[(name, head, 'loss')]['example_count'] == mask.sum()

    with open(str(tmp_path / 'out' / 'summary.json')) as f:
        summary = json.load(f)
    assert (summary['rows_read'], summary['bad_rows'], summary['rows_evaluated']) == (
        1200, 4, 1196)
    preds = pq.read_table(str(tmp_path / 'out' / 'predictions')).sort_by(
        [('_row', 'ascending')])
    assert preds.num_rows == good.sum()
    assert {'_file', '_row', 'country', 'y', 'ry', 'w', 'ts', 'gs', 'click/predictions',
            'click/loss',
            'watch/predictions', 'watch/loss'} == set(preds.column_names)  # no logit columns
    p = {k: np.asarray(v) for k, v in preds.to_pydict().items()}
    # `_file` and `_row` (0-based within the file) locate each row in the dataset.
    index = np.array([600 * int(os.path.basename(f) == 'part-001.parquet') for f in p['_file']]
                     ) + p['_row']
    np.testing.assert_array_equal(np.sort(index), np.flatnonzero(good))
    np.testing.assert_array_equal(p['country'], d['country'][index])
    np.testing.assert_array_equal(p['gs'], d['gs'][index])
    np.testing.assert_allclose(p['click/predictions'], d['x'][index])
    x, y, w = (d[c][index].astype(np.float64) for c in ('x', 'y', 'w'))
    np.testing.assert_allclose(p['click/loss'], w * (x - y) ** 2, rtol=1e-6)
    np.testing.assert_allclose(p['watch/loss'], (d['r'][index].astype(np.float64)
                                                 - d['ry'][index]) ** 2, rtol=1e-6)


def test_fake_heads_first_bad_record_fails_the_run(tmp_path, capsys, fake_heads):
    table = _data(n=300, seed=3)
    x = np.asarray(table.column('x')).copy()
    x[123] = np.nan
    x[200] = np.nan
    pattern = _write(table.set_column(table.schema.get_field_index('x'), 'x', pa.array(x)),
                     tmp_path / 'in', 1)
    raw = _config(pattern, tmp_path / 'out', heads=[FAKE])
    assert cli.main(['evaluate', '--config', json.dumps(raw)] + RUNNER) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if 'bad record' in ln]
    assert len(lines) == 1, err
    assert lines[0].endswith('part-000.parquet, row 123, column x: non-finite logit'), lines[0]
    assert not os.path.exists(str(tmp_path / 'out' / 'metrics'))
    assert not os.path.exists(str(tmp_path / 'out' / 'summary.json'))


def test_fake_head_empty_input_writes_empty_tables(tmp_path, fake_heads):
    pattern = _write(_data(n=10).slice(0, 0), tmp_path / 'in', 1)
    summary = evaluate(_config(pattern, tmp_path / 'out', heads=[FAKE]), RUNNER)
    assert (summary['rows_read'], summary['bad_rows'], summary['metrics_rows']) == (0, 0, 0)
    metrics = _metrics(tmp_path / 'out')
    assert metrics.num_rows == 0 and metrics.schema == METRICS
    plots = _plots(tmp_path / 'out')
    assert plots.num_rows == 0 and plots.schema == PLOTS


def test_a_pattern_matching_no_file_is_an_error_naming_it(tmp_path, fake_heads):
    pattern = str(tmp_path / 'nothing' / 'part-*.parquet')
    with pytest.raises(ConfigError, match=re.escape(pattern)):
        prepare(_config(pattern, tmp_path / 'out', heads=[FAKE]))
    assert not os.path.exists(str(tmp_path / 'out'))


def _window_step_slices(d: dict):
    """(window start in s, step, slice name, row mask) of every non-empty selection of `_data(n)`
    columns `d` by a 120 s window sliding by 60 s, a step (`gs`) and a slice (Overall, country)."""
    for start in range(-60, 600, 60):
        for step in (100, 200):
            for name, mask in [('Overall', np.ones(len(d['x']), bool))] + [
                    ('country:%s' % c, d['country'] == c) for c in COUNTRIES]:
                sel = mask & (d['gs'] == step) & (d['ts'] >= start) & (d['ts'] < start + 120)
                if sel.any():
                    yield start, step, name, sel


def test_fake_head_sliding_windows_by_step(tmp_path, fake_heads):
    table = _data(n=1500, seed=5)
    pattern = _write(table, tmp_path / 'in', 3)
    raw = _config(pattern, tmp_path / 'out', heads=[FAKE],
                  window={'column': 'ts', 'size': 120, 'period': 60},
                  tensorboard={'step': 'gs', 'dir': str(tmp_path / 'tb')},
                  slices=[[], ['country']])
    evaluate(raw, RUNNER)
    metrics = _metrics(tmp_path / 'out')
    assert metrics.schema == with_extras(METRICS, windowed=True, stepped=True)
    assert metrics.schema.field('window_start').type == TIMESTAMP
    rows = _lookup(metrics)
    assert len(rows) == metrics.num_rows  # each (slice, head, metric, window, step) once
    d = {k: np.asarray(v) for k, v in table.to_pydict().items()}
    expected = set()
    for start, step, name, sel in _window_step_slices(d):  # [start, start + 120)
        ref = _fake_reference(d['x'][sel], d['y'][sel], d['w'][sel])
        ws = datetime.datetime.fromtimestamp(start, datetime.timezone.utc)
        for metric in ('loss', 'label/mean', 'prediction/mean'):
            r = rows[(name, 'click', metric, ws, step)]
            assert r['value'] == pytest.approx(ref[metric], rel=1e-9), (name, start, step)
            assert r['example_count'] == ref['_count']
            assert r['window_end'] - r['window_start'] == datetime.timedelta(seconds=120)
            expected.add((name, 'click', metric, ws, step))
    assert set(rows) == expected


def test_combine_fn_merges_in_any_order_without_touching_inputs(fake_heads):
    config = parse_config(_config('x.parquet', 'o', heads=[FAKE]))
    head = config.build_heads()[0]
    d = {k: np.asarray(v) for k, v in _data(n=900, seed=9).to_pydict().items()}
    shards = [slice(0, 200), slice(200, 650), slice(650, 900)]

    def state(s):
        return head.new_state().update(d['y'][s].reshape(-1, 1), d['x'][s].reshape(-1, 1),
                                       {'w': d['w'][s]})

    one_shot = _fake_reference(d['x'], d['y'], d['w'])
    fn = HeadStateCombineFn(config)
    fn.setup()
    partials = [state(s) for s in shards]
    before = [copy.deepcopy(p.result()) for p in partials]
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        accs = [fn.add_input(fn.create_accumulator(), partials[i]) for i in order]
        merged = fn.extract_output(fn.merge_accumulators(
            [fn.merge_accumulators(accs[:2]), accs[2]]))
        assert merged.loss() == pytest.approx(one_shot['loss'], rel=1e-12)
        assert merged.result()['label/mean/click'] == pytest.approx(one_shot['label/mean'],
                                                                    rel=1e-12)
        assert merged.counts() == (900, pytest.approx(one_shot['_weighted'], rel=1e-12))
    assert [p.result() for p in partials] == before  # inputs unchanged
    # Without the pre-combine, the CombineFn receives numpy sub-batches and updates itself.
    for order in ([0, 1, 2], [2, 1, 0]):
        acc = fn.create_accumulator()
        for i in order:
            s = shards[i]
            acc = fn.add_input(acc, SubBatch(0, HeadArrays(
                d['y'][s].reshape(-1, 1), d['x'][s].reshape(-1, 1), {'w': d['w'][s]})))
        assert fn.extract_output(acc).loss() == pytest.approx(one_shot['loss'], rel=1e-12)
        assert fn.extract_output(acc).counts()[0] == 900

# -------------------------------------------------------------------------------------------------
# Binary head, weights, slices: four shards and one file.
# -------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def binary_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('binary')
    table = _data()
    runs = {}
    old = sources.TARGET_ROWS
    sources.TARGET_ROWS = 500  # many batches and work items even on small data
    try:
        for shards in (4, 1):
            pattern = _write(table, root / ('in%d' % shards), shards)
            summary = evaluate(_config(pattern, root / ('out%d' % shards)), RUNNER,
                               run_id='run-%d' % shards)
            runs[shards] = (summary, root / ('out%d' % shards))
    finally:
        sources.TARGET_ROWS = old
    return table, runs


def test_binary_head_matches_the_reference_per_slice(binary_runs):
    table, runs = binary_runs
    summary, out = runs[4]
    metrics, rows = _metrics_and_rows(out)
    d = table.to_pydict()
    x, y = np.asarray(d['x']), np.asarray(d['y'])
    w = np.asarray(d['w']).astype(np.float64)
    country = np.asarray(d['country'])
    slices = {'Overall': np.ones(len(x), bool)}
    slices.update({'country:%s' % c: country == c for c in COUNTRIES})
    assert {k[0] for k in rows} == set(slices)
    for name, mask in slices.items():
        ref = _reference_binary(x[mask], y[mask], w[mask])
        for metric, expected in ref.items():
            if metric.startswith('_'):
                continue
            got = rows[(name, 'click', metric)]['value']
            assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), (name, metric)
        auc = rows[(name, 'click', 'auc')]
        assert auc['lower_bound'] <= ref['_exact_auc'] <= auc['upper_bound'], name
        for metric in ('loss', 'auc', 'accuracy'):
            r = rows[(name, 'click', metric)]
            assert r['example_count'] == ref['_count']
            assert r['weighted_example_count'] == pytest.approx(ref['_weighted'], rel=1e-6)
        assert rows[(name, 'click', 'loss')]['lower_bound'] is None
    assert set(metrics.column('run_id').to_pylist()) == {'run-4'}
    assert rows[('country:US', 'click', 'auc')]['slice_columns'] == 'country'
    assert rows[('country:US', 'click', 'auc')]['slice_values'] == 'US'
    assert summary['rows_read'] == len(x) and summary['bad_rows'] == 0
    assert summary['input']['files'] == 4
    with open(os.path.join(str(out), 'summary.json')) as f:
        assert json.load(f)['run_id'] == 'run-4'
    plots = _plots(out)
    assert plots.schema == PLOTS
    assert plots.num_rows > 0 and set(plots.column('slice').to_pylist()) == set(slices)


def test_results_do_not_depend_on_sharding(binary_runs):
    _, runs = binary_runs
    _assert_same_metrics(runs[4][1], runs[1][1])
    p4 = _plots(runs[4][1])
    p1 = _plots(runs[1][1])
    ids = ['slice', 'slice_columns', 'slice_values', 'head', 'sub_key', 'curve']
    assert p4.select(ids).equals(p1.select(ids))  # same rows in the same order
    for col in p4.column_names:
        if col not in ids + ['run_id', 'evaluated_at']:
            a, b = p4.column(col).to_numpy(), p1.column(col).to_numpy()
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=col)


# -------------------------------------------------------------------------------------------------
# MultiHead with head_weights; dead-lettered rows; predictions.
# -------------------------------------------------------------------------------------------------

def test_multi_head_with_dead_letter_and_predictions(tmp_path):
    table = _data(n=1200, seed=11)
    d = {k: np.asarray(v) for k, v in table.to_pydict().items()}
    d['y'][5] = 3            # out of range for the binary head
    d['ry'][700] = np.nan    # a NaN regression label
    d['x'][900] = np.inf     # a non-finite logit
    pattern = _write(pa.table(d), tmp_path / 'in', 2)
    regression = {'type': 'RegressionHead', 'args': {'name': 'watch', 'weight_column': 'w'},
                  'logits': 'r', 'labels': 'ry'}
    raw = _config(pattern, tmp_path / 'out', heads=[BINARY, regression], head_weights=[1.0, 0.5],
                  slices=[[]])
    assert cli.main(['evaluate', '--config', json.dumps(raw), '--bad_records=dead_letter',
                     '--write_predictions', '--run_id', 'mh'] + RUNNER) == 0

    errors = pq.read_table(str(tmp_path / 'out' / 'errors' / 'errors.parquet'))
    assert errors.schema == ERRORS
    got = [(os.path.basename(r['file']), r['row'], r['column']) for r in errors.to_pylist()]
    # 1200 rows in two files of 600: rows 700 and 900 are rows 100 and 300 of the second file.
    assert got == [('part-000.parquet', 5, 'y'), ('part-001.parquet', 100, 'ry'),
                   ('part-001.parquet', 300, 'x')]
    assert json.loads(errors.to_pylist()[0]['values'])['y'] == 3

    good = np.ones(len(d['x']), bool)
    good[[5, 700, 900]] = False          # dropped for every head
    w = d['w'][good].astype(np.float64)
    click = _reference_binary(d['x'][good], d['y'][good], w)
    diff = d['r'][good].astype(np.float64) - d['ry'][good].astype(np.float64)
    watch_loss = np.sum(w * diff ** 2) / good.sum()   # sum_over_batch_size, label_dimension 1
    rows = _lookup(_metrics(tmp_path / 'out'))
    assert rows[('Overall', 'click', 'loss')]['value'] == pytest.approx(click['loss'], rel=1e-6)
    assert rows[('Overall', 'watch', 'loss')]['value'] == pytest.approx(watch_loss, rel=1e-5)
    assert rows[('Overall', 'watch', 'average_loss')]['value'] == pytest.approx(
        np.sum(w * diff ** 2) / np.sum(w), rel=1e-5)
    # MultiHead.loss = Σ head_weight · head loss, under the joined name.
    assert rows[('Overall', 'click_watch', 'loss')]['value'] == pytest.approx(
        1.0 * click['loss'] + 0.5 * watch_loss, rel=1e-5)
    assert {k[1] for k in rows} == {'click', 'watch', 'click_watch'}
    assert [k for k in rows if k[1] == 'click_watch'] == [('Overall', 'click_watch', 'loss')]
    for head in ('click', 'watch', 'click_watch'):
        assert rows[('Overall', head, 'loss')]['example_count'] == good.sum()

    with open(str(tmp_path / 'out' / 'summary.json')) as f:
        summary = json.load(f)
    assert (summary['rows_read'], summary['bad_rows']) == (1200, 3)
    preds = pq.read_table(str(tmp_path / 'out' / 'predictions'))
    assert preds.num_rows == good.sum()
    assert {'_row', 'country', 'y', 'click/logistic', 'click/loss', 'watch/predictions',
            'watch/loss'} <= set(preds.column_names)
    assert 'x' not in preds.column_names  # logits are not copied
    first = preds.sort_by([('_row', 'ascending')]).slice(0, 1).to_pylist()[0]
    assert first['click/logistic'] == pytest.approx(float(_sigmoid32(d['x'][:1])[0]), rel=1e-6)


def test_a_bad_record_fails_the_run_naming_file_row_and_column(tmp_path, capsys):
    table = _data(n=300, seed=3)
    y = np.asarray(table.column('y')).copy()
    y[123] = -1
    pattern = _write(table.set_column(3, 'y', pa.array(y)), tmp_path / 'in', 1)
    raw = _config(pattern, tmp_path / 'out')
    assert cli.main(['evaluate', '--config', json.dumps(raw)] + RUNNER) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if 'bad record' in ln]
    assert len(lines) == 1, err
    assert 'part-000.parquet, row 123, column y:' in lines[0]
    assert not os.path.exists(str(tmp_path / 'out' / 'metrics'))


# -------------------------------------------------------------------------------------------------
# Windows and steps.
# -------------------------------------------------------------------------------------------------

def test_sliding_windows_by_step_equal_separate_evaluations(tmp_path):
    table = _data(n=1500, seed=5)
    pattern = _write(table, tmp_path / 'in', 3)
    raw = _config(pattern, tmp_path / 'out', window={'column': 'ts', 'size': 120, 'period': 60},
                  tensorboard={'step': 'gs'}, slices=[[], ['country']])
    evaluate(raw, RUNNER)
    metrics = _metrics(tmp_path / 'out')
    assert metrics.schema == with_extras(METRICS, windowed=True, stepped=True)
    assert metrics.schema.field('window_start').type == TIMESTAMP
    rows = _lookup(metrics)

    d = {k: np.asarray(v) for k, v in table.to_pydict().items()}
    head = heads.BinaryClassHead(name='click', weight_column='w', thresholds=[0.5])
    expected_keys = set()
    for start, step, name, sel in _window_step_slices(d):  # [start, start + 120)
        state = head.new_state().update(d['y'][sel].reshape(-1, 1),
                                        d['x'][sel].reshape(-1, 1), {'w': d['w'][sel]})
        ws = np.datetime64(start * 1_000_000, 'us').astype(object)
        for metric, value in [('loss', state.loss()), ('auc', state.result()['auc/click'])]:
            key = (name, 'click', metric)
            got = [r for k, r in rows.items() if k[:3] == key and k[4] == step
                   and k[3].replace(tzinfo=None) == ws]
            assert len(got) == 1, (key, start, step)
            assert got[0]['value'] == pytest.approx(value, rel=1e-9, abs=1e-12)
            assert got[0]['example_count'] == sel.sum()
            assert (got[0]['window_end'] - got[0]['window_start']).total_seconds() == 120
        expected_keys.add((name, start, step))
    got_keys = {(k[0], int(k[3].timestamp()), k[4]) for k in rows}
    assert got_keys == expected_keys


# -------------------------------------------------------------------------------------------------
# MultiClassHead (vocabulary labels), MultiLabelHead (multi-hot, ids, names), their MultiHead.
# -------------------------------------------------------------------------------------------------

TOPICS = ['news', 'sport', 'tech']
TAGS = ['a', 'b', 'c']


def _multi_data(n: int = 900, seed: int = 23) -> pa.Table:
    rng = np.random.default_rng(seed)
    topic_logits = rng.normal(0.0, 1.5, (n, 3)).astype(np.float32)
    topic = np.argmax(topic_logits + rng.gumbel(size=(n, 3)), axis=1)
    tag_logits = rng.normal(0.0, 1.5, (n, 3)).astype(np.float32)
    hot = (rng.random((n, 3)) < 1.0 / (1.0 + np.exp(-tag_logits))).astype(np.float32)
    ids = [np.flatnonzero(row).tolist() for row in hot]
    return pa.table({
        'country': rng.choice(COUNTRIES, n),
        'w': rng.uniform(0.5, 1.5, n).astype(np.float32),
        'topic_logits': pa.array(list(topic_logits)),
        'topic': pa.array([TOPICS[t] for t in topic]),
        'tag_logits': pa.array(list(tag_logits)),
        'tags': pa.array(list(hot)),
        'tag_ids': pa.array(ids, pa.list_(pa.int64())),
        'tag_names': pa.array([[TAGS[i] for i in row] for row in ids], pa.list_(pa.string())),
    })


MULTI_HEADS = [
    {'type': 'MultiClassHead', 'args': {'name': 'topic', 'n_classes': 3, 'weight_column': 'w',
                                        'label_vocabulary': TOPICS},
     'logits': 'topic_logits', 'labels': 'topic'},
    {'type': 'MultiLabelHead', 'args': {'name': 'tags', 'n_classes': 3, 'weight_column': 'w',
                                        'classes_for_class_based_metrics': [0, 2]},
     'logits': 'tag_logits', 'labels': 'tags'},
    {'type': 'MultiLabelHead', 'args': {'name': 'tagids', 'n_classes': 3, 'weight_column': 'w'},
     'logits': 'tag_logits', 'labels': 'tag_ids', 'label_format': 'ids'},
    {'type': 'MultiLabelHead', 'args': {'name': 'tagnames', 'n_classes': 3, 'weight_column': 'w',
                                        'label_vocabulary': TAGS},
     'logits': 'tag_logits', 'labels': 'tag_names', 'label_format': 'ids'},
]
MULTI_WEIGHTS = [1.0, 0.5, 2.0, 0.25]


def test_multi_class_and_multi_label_heads_per_slice(tmp_path):
    table = _multi_data()
    old = sources.TARGET_ROWS
    sources.TARGET_ROWS = 200
    try:
        pattern = _write(table, tmp_path / 'in', 3, row_group_size=150)
        evaluate(_config(pattern, tmp_path / 'out', heads=MULTI_HEADS, head_weights=MULTI_WEIGHTS),
                 RUNNER, write_predictions=True)
    finally:
        sources.TARGET_ROWS = old
    metrics = _metrics(tmp_path / 'out')
    rows = _lookup(metrics)
    assert len(rows) == metrics.num_rows
    d = table.to_pydict()
    country = np.asarray(d['country'])
    w = np.asarray(d['w'])
    topic_logits = np.asarray(d['topic_logits'], np.float32)
    topic = np.asarray(d['topic'], object).reshape(-1, 1)
    tag_logits = np.asarray(d['tag_logits'], np.float32)
    hot = np.asarray(d['tags'], np.float32)
    built = {spec['args']['name']: getattr(heads, spec['type'])(**spec['args'])
             for spec in MULTI_HEADS}
    names = [spec['args']['name'] for spec in MULTI_HEADS]
    for name, mask in [('Overall', np.ones(len(w), bool))] + [
            ('country:%s' % c, country == c) for c in COUNTRIES]:
        idx = np.flatnonzero(mask)
        feats = {'w': w[idx]}
        inputs = {
            'topic': (topic[idx], topic_logits[idx]),
            'tags': (hot[idx], tag_logits[idx]),
            'tagids': ([d['tag_ids'][i] for i in idx], tag_logits[idx]),
            'tagnames': ([d['tag_names'][i] for i in idx], tag_logits[idx]),
        }
        losses = {}
        for head_name in names:
            labels, logits = inputs[head_name]
            # The slice as one batch through the head's own state (not through the pipeline).
            state = built[head_name].new_state().update(labels, logits, feats)
            losses[head_name] = state.loss()
            expected = {k[:-len(head_name) - 1]: v for k, v in state.result().items()}
            expected['loss'] = state.loss()
            got = {k[2]: r['value'] for k, r in rows.items() if k[:2] == (name, head_name)}
            assert got.keys() == expected.keys(), (name, head_name)
            for metric, value in expected.items():
                assert got[metric] == pytest.approx(value, rel=1e-9, abs=1e-12), (
                    name, head_name, metric)
            assert rows[(name, head_name, 'loss')]['example_count'] == idx.size
        # Softmax / sigmoid cross-entropy, reduced as sum_over_batch_size: Σ w·U / n.
        x = topic_logits[idx].astype(np.float64)
        label_ids = np.array([TOPICS.index(t) for t in topic[idx, 0]])
        lse = np.log(np.sum(np.exp(x - x.max(axis=1, keepdims=True)), axis=1)) + x.max(axis=1)
        ce = lse - x[np.arange(idx.size), label_ids]
        ww = w[idx].astype(np.float64)
        assert losses['topic'] == pytest.approx(np.sum(ww * ce) / idx.size, rel=1e-5)
        assert rows[(name, 'topic', 'accuracy')]['value'] == pytest.approx(
            np.sum(ww * (np.argmax(x, axis=1) == label_ids)) / np.sum(ww), rel=1e-9)
        z, t = hot[idx].astype(np.float64), tag_logits[idx].astype(np.float64)
        sce = np.maximum(t, 0) - t * z + np.log1p(np.exp(-np.abs(t)))
        assert losses['tags'] == pytest.approx(np.sum(ww * sce.mean(axis=1)) / idx.size,
                                               rel=1e-5)
        # Multi-hot, id lists and name lists are the same labels.
        for metric in ('loss', 'auc', 'average_loss'):
            assert rows[(name, 'tagids', metric)]['value'] == pytest.approx(
                rows[(name, 'tags', metric)]['value'], rel=1e-9)
            assert rows[(name, 'tagnames', metric)]['value'] == pytest.approx(
                rows[(name, 'tags', metric)]['value'], rel=1e-9)
        multi = rows[(name, '_'.join(names), 'loss')]
        assert multi['value'] == pytest.approx(
            sum(wt * losses[h] for wt, h in zip(MULTI_WEIGHTS, names)), rel=1e-9)
        # The same through the MultiHead's own state, the slice as one batch.
        multi_head = heads.MultiHead([built[h] for h in names], head_weights=MULTI_WEIGHTS)
        multi_state = multi_head.new_state().update(
            {h: inputs[h][0] for h in names}, {h: inputs[h][1] for h in names}, feats)
        assert multi['value'] == pytest.approx(multi_state.loss(), rel=1e-9)
        assert multi['example_count'] == idx.size
        assert multi['weighted_example_count'] == pytest.approx(np.sum(ww), rel=1e-9)
    plots = _plots(tmp_path / 'out')
    assert plots.schema == PLOTS
    assert {'tags', 'tagids', 'tagnames'} <= set(plots.column('head').to_pylist())

    # Predictions: 900 rows in three files of 300; list-valued predictions as list columns.
    preds = pq.read_table(str(tmp_path / 'out' / 'predictions')).to_pydict()
    index = np.array([300 * int(os.path.basename(f)[5:8]) for f in preds['_file']]
                     ) + np.asarray(preds['_row'])
    np.testing.assert_array_equal(np.sort(index), np.arange(900))
    x = topic_logits[index].astype(np.float64)
    softmax = np.exp(x - x.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(preds['topic/probabilities']), softmax, rtol=1e-5)
    # [rows, 1] predictions become scalar columns.
    assert preds['topic/classes'] == [TOPICS[i] for i in np.argmax(x, axis=1)]
    assert preds['topic/class_ids'] == np.argmax(x, axis=1).tolist()
    assert preds['tagnames/classes'][0] == TAGS
    z, t = hot[index].astype(np.float64), tag_logits[index].astype(np.float64)
    sce = np.maximum(t, 0) - t * z + np.log1p(np.exp(-np.abs(t)))
    for head_name in ('tags', 'tagids', 'tagnames'):   # per-example loss: w · mean_c(sce)
        np.testing.assert_allclose(np.asarray(preds[head_name + '/loss']),
                                   w[index] * sce.mean(axis=1), rtol=1e-5)
    assert not {'topic_logits', 'tag_logits'} & set(preds)


# -------------------------------------------------------------------------------------------------
# `make demo`.
# -------------------------------------------------------------------------------------------------

def test_demo_runs_the_bundled_example(tmp_path, capsys):
    from pipeline import demo
    out = str(tmp_path / 'demo')
    assert demo.main(['--output', out] + RUNNER) == 0
    printed = capsys.readouterr().out
    assert 'evaluated 20000 rows' in printed and out in printed
    for name in ('metrics/metrics.parquet', 'plots/plots.parquet', 'summary.json'):
        assert name in printed and os.path.exists(os.path.join(out, name))
    headline = {}
    for line in printed.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == '20000':
            headline[(parts[0], parts[1])] = float(parts[2])
    d = {k: np.asarray(v) for k, v in pq.read_table(
        os.path.join(demo.ROOT, 'examples', 'data')).to_pydict().items()}
    # click: binary CE Σ w·U / n (sum_over_batch_size); accuracy at logit > 0, weighted.
    x, y = d['click_logit'].astype(np.float64), d['click_label'].astype(np.float64)
    w = d['w'].astype(np.float64)
    u = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    click_loss = np.sum(w * u) / len(x)
    # topic: softmax CE, unweighted mean; accuracy of the argmax.
    t = np.stack(d['topic_logits']).astype(np.float64)
    lse = np.log(np.sum(np.exp(t - t.max(axis=1, keepdims=True)), axis=1)) + t.max(axis=1)
    topic_loss = np.mean(lse - t[np.arange(len(t)), d['topic_label']])
    # dwell: squared error Σ w·(y − ŷ)² / n; average_loss is its weighted mean.
    r = d['dwell_label'].astype(np.float64) - d['dwell_pred'].astype(np.float64)
    dwell_loss = np.sum(w * r * r) / len(r)
    multi_loss = click_loss + 0.5 * topic_loss + 0.2 * dwell_loss  # head_weights [1, 0.5, 0.2]
    expected = {
        ('click', 'loss'): click_loss,
        ('click', 'average_loss'): np.sum(w * u) / np.sum(w),
        ('click', 'accuracy'): np.sum(w * (y == (x > 0))) / np.sum(w),
        ('click', 'auc'): roc_auc_score(y, x, sample_weight=w),
        ('topic', 'loss'): topic_loss,
        ('topic', 'accuracy'): np.mean(np.argmax(t, axis=1) == d['topic_label']),
        ('dwell', 'loss'): dwell_loss,
        ('dwell', 'average_loss'): np.sum(w * r * r) / np.sum(w),
        ('click_topic_dwell', 'loss'): multi_loss,
    }
    for key, value in expected.items():
        # Printed to 4 places; the AUC is bucketed (200 thresholds), so it gets a looser check.
        tol = 2e-3 if key[1] == 'auc' else 6e-5
        assert headline[key] == pytest.approx(value, abs=tol), key
    rows = _lookup(_metrics(out))
    # The example's tensorboard.step (1000) is every row's `step`.
    assert rows[('Overall', 'click_topic_dwell', 'loss', 1000)]['value'] == pytest.approx(
        multi_loss, rel=1e-6)
    assert ('country_X_device:US_X_mobile', 'click', 'auc', 1000) in rows


# -------------------------------------------------------------------------------------------------
# CSV input: list columns as JSON list strings.
# -------------------------------------------------------------------------------------------------

def _multi_and_click_data(n: int, seed: int, click_seed: int
                          ) -> tuple[dict, np.ndarray, np.ndarray]:
    """The multi-head data's columns as Python lists, with a binary head's logits `x` (float32)
    and labels `y` (int64) drawn from `click_seed`."""
    d = _multi_data(n=n, seed=seed).to_pydict()
    rng = np.random.default_rng(click_seed)
    x = rng.normal(0.0, 2.0, n).astype(np.float32)
    y = (rng.random(n) < 0.4).astype(np.int64)
    return d, x, y


def _assert_slice_is_one_batch(rows: dict, slice_name: str, specs: list, inputs: dict,
                               weights: np.ndarray, n: int, rel_tol: float,
                               abs_tol: float) -> None:
    """Each head's metrics and loss of one slice equal its state updated with the slice's rows as
    one batch (`inputs[head name]` = (labels, logits)), and the loss counts the slice's n rows."""
    for spec in specs:
        head_name = spec['args']['name']
        head = getattr(heads, spec['type'])(**spec['args'])
        state = head.new_state().update(*inputs[head_name], {'w': weights})
        expected = {k[:-len(head_name) - 1]: v for k, v in state.result().items()}
        expected['loss'] = state.loss()
        got = {k[2]: r['value'] for k, r in rows.items() if k[:2] == (slice_name, head_name)}
        assert got.keys() == expected.keys(), (slice_name, head_name)
        for metric, value in expected.items():
            assert got[metric] == pytest.approx(value, rel=rel_tol, abs=abs_tol), (
                slice_name, head_name, metric)
        assert rows[(slice_name, head_name, 'loss')]['example_count'] == n


def test_csv_input_with_json_list_cells(tmp_path):
    import csv
    d, x, y = _multi_and_click_data(400, seed=29, click_seed=3)
    os.makedirs(str(tmp_path / 'in'))
    for part, rows in enumerate((range(0, 150), range(150, 400))):
        with open(str(tmp_path / 'in' / ('part-%d.csv' % part)), 'w', newline='') as f:
            out = csv.writer(f)
            out.writerow(['country', 'w', 'x', 'y', 'topic_logits', 'topic', 'tag_logits',
                          'tag_ids'])
            for i in rows:
                out.writerow([d['country'][i], repr(float(d['w'][i])), repr(float(x[i])), y[i],
                              json.dumps([float(v) for v in d['topic_logits'][i]]),
                              d['topic'][i], json.dumps([float(v) for v in d['tag_logits'][i]]),
                              json.dumps(d['tag_ids'][i])])
    specs = [BINARY, MULTI_HEADS[0], MULTI_HEADS[2]]
    evaluate(_config(str(tmp_path / 'in' / 'part-*.csv'), tmp_path / 'out', heads=specs,
                     slices=[[]]), RUNNER)
    rows = _lookup(_metrics(tmp_path / 'out'))
    w = np.asarray(d['w'], np.float32)   # the CSV cells hold the float32 values exactly
    inputs = {
        'click': (y.reshape(-1, 1), x.reshape(-1, 1)),
        'topic': (np.asarray(d['topic'], object).reshape(-1, 1),
                  np.asarray(d['topic_logits'], np.float32)),
        'tagids': (d['tag_ids'], np.asarray(d['tag_logits'], np.float32)),
    }
    # All 400 rows as one batch.
    _assert_slice_is_one_batch(rows, 'Overall', specs, inputs, w, 400, rel_tol=1e-6,
                               abs_tol=1e-9)


# -------------------------------------------------------------------------------------------------
# Window assignment (no Beam).
# -------------------------------------------------------------------------------------------------

def test_window_starts_fixed_and_sliding():
    from pipeline.keys import window_starts
    s = 1_000_000
    micros = np.array([0, 60 * s - 1, 60 * s, -1])
    rows, starts = window_starts(micros, 60 * s, None)
    assert rows.tolist() == [0, 1, 2, 3]
    assert (starts // s).tolist() == [0, 0, 60, -60]       # [start, start + 60 s), epoch-aligned
    rows, starts = window_starts(micros, 120 * s, 60 * s)  # every row is in two windows
    got = sorted(zip(rows.tolist(), (starts // s).tolist()))
    assert got == [(0, -60), (0, 0), (1, -60), (1, 0), (2, 0), (2, 60), (3, -120), (3, -60)]


def test_event_times_from_timestamps_and_epoch_seconds():
    from pipeline.decode import Problems, epoch_micros
    problems = Problems(2)
    naive = pa.array([datetime.datetime(1970, 1, 1, 0, 1), datetime.datetime(2026, 11, 1)],
                     pa.timestamp('ms'))
    berlin = pa.array([0, 3_600_000_000], pa.timestamp('us', tz='Europe/Berlin'))
    expected_naive = [60_000_000, int(datetime.datetime(
        2026, 11, 1, tzinfo=datetime.timezone.utc).timestamp()) * 1_000_000]
    assert epoch_micros(naive, 'ts', problems).tolist() == expected_naive   # naive = UTC
    assert epoch_micros(berlin, 'ts', problems).tolist() == [0, 3_600_000_000]
    assert epoch_micros(pa.array([1.5, -0.25]), 'ts', problems).tolist() == [1_500_000, -250_000]
    assert epoch_micros(pa.array([7, 8]), 'ts', problems).tolist() == [7_000_000, 8_000_000]
    assert not problems.items
    epoch_micros(pa.array([1.0, None]), 'ts', problems)
    assert [(c, r, m.tolist()) for c, r, m in problems.items] == [
        ('ts', 'null timestamp', [False, True])]


# -------------------------------------------------------------------------------------------------
# TFRecord input: tf.Example features are list columns (scalars as lists of one).
# -------------------------------------------------------------------------------------------------

def test_tfrecord_input_of_tf_examples(tmp_path):
    from apache_beam.io.tfrecordio import _TFRecordUtil
    from tfx_bsl.coders import example_coder
    d, x, y = _multi_and_click_data(300, seed=31, click_seed=5)

    def one(values, t):
        return pa.array([[v] for v in values], pa.large_list(t))

    rb = pa.record_batch({
        'country': one([c.encode() for c in d['country']], pa.large_binary()),
        'w': one(d['w'], pa.float32()),
        'x': one(x, pa.float32()),
        'y': one(y, pa.int64()),
        'topic_logits': pa.array(d['topic_logits'], pa.large_list(pa.float32())),
        'topic': one([t.encode() for t in d['topic']], pa.large_binary()),
        'tag_logits': pa.array(d['tag_logits'], pa.large_list(pa.float32())),
        'tag_ids': pa.array(d['tag_ids'], pa.large_list(pa.int64())),
    })
    os.makedirs(str(tmp_path / 'in'))
    for part, (lo, hi) in enumerate(((0, 120), (120, 300))):
        with open(str(tmp_path / 'in' / ('part-%d.tfrecord' % part)), 'wb') as f:
            for record in example_coder.RecordBatchToExamplesEncoder().encode(
                    rb.slice(lo, hi - lo)):
                _TFRecordUtil.write_record(f, record)
    specs = [BINARY, MULTI_HEADS[0], MULTI_HEADS[2]]
    evaluate(_config(str(tmp_path / 'in' / 'part-*.tfrecord'), tmp_path / 'out', heads=specs,
                     slices=[[], ['country']]), RUNNER)
    rows = _lookup(_metrics(tmp_path / 'out'))
    w = np.asarray(d['w'], np.float32)
    country = np.asarray(d['country'])
    topic = np.asarray(d['topic'], object).reshape(-1, 1)
    for name, mask in [('Overall', np.ones(300, bool)), ('country:US', country == 'US')]:
        idx = np.flatnonzero(mask)
        inputs = {
            'click': (y[idx].reshape(-1, 1), x[idx].reshape(-1, 1)),
            'topic': (topic[idx], np.asarray(d['topic_logits'], np.float32)[idx]),
            'tagids': ([d['tag_ids'][i] for i in idx],
                       np.asarray(d['tag_logits'], np.float32)[idx]),
        }
        _assert_slice_is_one_batch(rows, name, specs, inputs, w[idx], idx.size, rel_tol=1e-9,
                                   abs_tol=1e-12)


# -------------------------------------------------------------------------------------------------
# Degenerate slices with a real head: all weights zero, no positives; an empty input.
# -------------------------------------------------------------------------------------------------

def test_degenerate_slices_and_empty_input(tmp_path):
    table = _data(n=600, seed=41)
    d = {k: np.asarray(v).copy() for k, v in table.to_pydict().items()}
    d['w'][d['country'] == 'JP'] = 0.0      # a slice whose weights are all zero
    d['y'][d['country'] == 'DE'] = 0        # a slice without positives
    pattern = _write(pa.table(d), tmp_path / 'in', 2)
    evaluate(_config(pattern, tmp_path / 'out'), RUNNER)
    rows = _lookup(_metrics(tmp_path / 'out'))
    head = heads.BinaryClassHead(name='click', weight_column='w', thresholds=[0.5])
    for c in ('JP', 'DE'):
        sel = d['country'] == c
        state = head.new_state().update(d['y'][sel].reshape(-1, 1), d['x'][sel].reshape(-1, 1),
                                        {'w': d['w'][sel]})
        expected = {k[:-len('/click')]: v for k, v in state.result().items()}
        for metric, value in expected.items():
            got = rows[('country:%s' % c, 'click', metric)]['value']
            assert got == pytest.approx(value, rel=1e-9, abs=1e-12), (c, metric)
            assert np.isfinite(got), (c, metric)
        assert rows[('country:%s' % c, 'click', 'loss')]['example_count'] == sel.sum()
    jp = {k[2]: r for k, r in rows.items() if k[0] == 'country:JP'}
    assert jp['loss']['value'] == 0.0                      # Σ 0·U / n
    assert jp['loss']['weighted_example_count'] == 0.0
    assert jp['accuracy']['value'] == 0.0                  # div_no_nan(0, 0)
    de = {k[2]: r for k, r in rows.items() if k[0] == 'country:DE'}
    assert de['label/mean']['value'] == 0.0 and de['recall']['value'] == 0.0

    empty = _write(pa.table(d).slice(0, 0), tmp_path / 'empty', 1)
    summary = evaluate(_config(empty, tmp_path / 'out_empty'), RUNNER)
    assert (summary['rows_read'], summary['metrics_rows'], summary['plots_rows']) == (0, 0, 0)
    assert _metrics(tmp_path / 'out_empty').schema == METRICS


# -------------------------------------------------------------------------------------------------
# Arrow → head arrays (no Beam).
# -------------------------------------------------------------------------------------------------

def test_head_arrays_from_columns_lists_and_lists_of_one():
    from pipeline.decode import Problems, head_arrays
    batch = pa.record_batch({
        'l0': pa.array([0.5, 1.0]), 'l1': pa.array([-1.0, 2.0]), 'l2': pa.array([3.0, 0.0]),
        'cls': pa.array([[2], [0]], pa.list_(pa.int64())),             # tf.Example style
        'reg': pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32())),
        'pred': pa.array([[0.1, 0.2], [0.3, 0.4]], pa.list_(pa.float32())),
        'w': pa.array([2.0, None]),
    })
    raw = {'input': {'pattern': 'x.parquet'}, 'output': 'o', 'heads': [
        {'type': 'MultiClassHead', 'args': {'name': 'a', 'n_classes': 3, 'weight_column': 'w'},
         'logits': ['l0', 'l1', 'l2'], 'labels': 'cls'},
        {'type': 'RegressionHead', 'args': {'name': 'b', 'label_dimension': 2},
         'logits': 'pred', 'labels': 'reg'}]}
    config = parse_config(raw)
    problems = Problems(2)
    a, b = head_arrays(batch, config, config.build_heads(), problems)
    np.testing.assert_array_equal(a.logits, [[0.5, -1.0, 3.0], [1.0, 2.0, 0.0]])
    np.testing.assert_array_equal(a.labels, [[2], [0]])
    np.testing.assert_array_equal(b.labels, [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(b.logits, np.array([[0.1, 0.2], [0.3, 0.4]], np.float32))
    assert b.features == {}
    assert [(c, r, m.tolist()) for c, r, m in problems.items] == [
        ('w', 'null value', [False, True])]


# -------------------------------------------------------------------------------------------------
# Rows with a null slice value: in Overall, in no slice of that spec, and counted.
# -------------------------------------------------------------------------------------------------

def test_null_slice_values_are_counted_not_dropped_silently(tmp_path, fake_heads):
    table = _data(n=600, seed=11)
    country = table.column('country').to_pylist()
    for i in range(0, 600, 7):  # rows 0, 7, 14, ...: 86 rows without a country
        country[i] = None
    table = table.set_column(table.schema.get_field_index('country'), 'country',
                             pa.array(country, pa.string()))
    pattern = _write(table, tmp_path / 'in', 3, 50)
    summary = evaluate(_config(pattern, tmp_path / 'out', heads=[FAKE]), RUNNER)
    assert summary['rows_evaluated'] == 600
    assert summary['rows_outside_slices'] == {'country': 86}
    rows = _lookup(_metrics(tmp_path / 'out'))
    counts = {k[0]: v['example_count'] for k, v in rows.items() if k[2] == 'loss'}
    assert counts['Overall'] == 600
    assert sum(c for s, c in counts.items() if s.startswith('country:')) == 600 - 86


@pytest.mark.parametrize('mode', ['fail', 'dead_letter'])
def test_a_shard_missing_a_column_is_named_never_read_from_another_column(tmp_path, fake_heads,
                                                                         mode):
    table = _data(n=300, seed=5)
    pattern = _write(table, tmp_path / 'in', 3, 50)
    # The last shard lacks the weight column `w` (the first shard's schema passes the check).
    last = str(tmp_path / 'in' / 'part-002.parquet')
    pq.write_table(pq.read_table(last).drop_columns(['w']), last)
    raw = _config(pattern, tmp_path / 'out', heads=[FAKE])
    if mode == 'fail':
        with pytest.raises(BadRecordError,
                           match=r'part-002\.parquet, row 0, column w: column missing'):
            evaluate(raw, RUNNER)
        return
    summary = evaluate(raw, RUNNER, bad_records='dead_letter')
    assert (summary['rows_read'], summary['bad_rows']) == (300, 100)
    errors = pq.read_table(os.path.join(str(tmp_path / 'out'), 'errors'))
    assert set(errors.column('reason').to_pylist()) == {'column missing from this file'}
    assert set(errors.column('file').to_pylist()) == {last}
    assert _lookup(_metrics(tmp_path / 'out'))[('Overall', 'click', 'loss')]['example_count'] == 200
