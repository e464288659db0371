"""Grouped state updates: the states of many slices updated in one pass over a batch must equal
each state updated alone with its own rows (and per-group sums must equal a plain loop)."""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from heads import (BinaryClassHead, MultiClassHead, MultiLabelHead, PoissonRegressionHead,
                   RegressionHead)
from heads.array.binary import BinaryClassState
from heads.metrics import Groups
from pipeline.apply import ApplyHeads
from pipeline.config import parse_config
from pipeline.elements import SourceBatch


# -- Groups ---------------------------------------------------------------------------------------

def test_groups_sums_and_cells_equal_a_loop():
    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 4, 1000)
    values = rng.normal(size=1000)
    cell = rng.integers(0, 7, 1000)
    groups = Groups(codes, 4)
    want_sum = [sum(v for c, v in zip(codes, values) if c == g) for g in range(4)]
    want_rows = [int(np.count_nonzero(codes == g)) for g in range(4)]
    want_cells = np.zeros((4, 7))
    for c, k, v in zip(codes, cell, values):
        if c >= 0:
            want_cells[c, k] += v
    np.testing.assert_allclose(groups.sum(values), want_sum, rtol=1e-12)
    assert groups.sum().tolist() == want_rows
    np.testing.assert_allclose(groups.cells(cell, 7, values), want_cells, rtol=1e-12, atol=1e-12)
    assert groups.cells(cell, 7, None).sum() == np.count_nonzero(codes >= 0)


def test_groups_of_the_values_of_each_row():
    # repeat(k): the k values of each row (row-major) all go to the row's group.
    rng = np.random.default_rng(2)
    codes = rng.integers(-1, 3, 70_000)  # more entries than one cache-sized step
    values = rng.normal(size=(70_000, 3))
    cell = rng.integers(0, 5, (70_000, 3))
    pairs = Groups(codes, 3).repeat(3)
    assert pairs.size == 210_000
    element_codes = np.repeat(codes, 3)
    want = [values.reshape(-1)[element_codes == g].sum() for g in range(3)]
    np.testing.assert_allclose(pairs.sum(values.reshape(-1)), want, rtol=1e-10)
    assert pairs.sum().tolist() == [3.0 * np.count_nonzero(codes == g) for g in range(3)]
    got = pairs.cells(cell.reshape(-1), 5, values.reshape(-1))
    for g in range(3):
        m = element_codes == g
        np.testing.assert_allclose(
            got[g], np.bincount(cell.reshape(-1)[m], values.reshape(-1)[m], 5), rtol=1e-10)
    assert pairs.codes(4, 11).tolist() == [3 if c < 0 else c for c in element_codes[4:11]]
    keep = rng.random(210_000) < 0.5
    np.testing.assert_allclose(
        pairs.subset(keep).sum(values.reshape(-1)[keep]),
        [values.reshape(-1)[keep & (element_codes == g)].sum() for g in range(3)], rtol=1e-10)


def test_groups_of_one_state_and_subsets():
    values = np.array([1.0, 2.0, 4.0])
    one = Groups.one(3)
    assert one.sum(values).tolist() == [7.0] and one.sum().tolist() == [3.0]
    assert Groups(np.zeros(3, np.int64), 1).sum(values).tolist() == [7.0]  # all rows in group 0
    assert Groups(np.array([0, -1, 0]), 1).sum(values).tolist() == [5.0]
    keep = np.array([True, False, True])
    assert one.subset(keep).sum().tolist() == [2.0]
    sub = Groups(np.array([1, -1, 0]), 2).subset(np.array([False, True, True]))
    assert sub.sum(np.array([2.0, 4.0])).tolist() == [4.0, 0.0]  # the kept -1 row counts nowhere
    with pytest.raises(ValueError, match='out of range'):
        Groups(np.array([0, 2]), 2)


# -- BinaryClassState.update_groups ----------------------------------------------------------------

def _batch(n: int, seed: int, weights: str, soft: bool = False, nan: bool = False,
           negative: bool = False):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (n, 1)).astype(np.float32)
    logits[rng.random(n) < 0.05, 0] = 0.0  # ties at the class threshold
    if nan:
        logits[rng.random(n) < 0.05, 0] = np.nan
    labels = (rng.random((n, 1)) < 0.4).astype(np.float32)
    if soft:
        labels = np.round(rng.random((n, 1)), 2).astype(np.float32)
    features = None
    if weights != 'none':
        w = rng.uniform(0.0, 2.0, n)
        w[rng.random(n) < 0.05] = 0.0
        if negative:
            w[rng.random(n) < 0.05] = -0.5
        features = {'w': w if weights == '[B]' else w[:, None]}
    return labels, logits, features


def _rows(features, idx):
    return None if features is None else {k: v[idx] for k, v in features.items()}


def _assert_same_state(got: BinaryClassState, want: BinaryClassState) -> None:
    assert got.counts()[0] == want.counts()[0]
    assert got.counts()[1] == pytest.approx(want.counts()[1], rel=1e-12, abs=1e-12)
    assert got.loss() == pytest.approx(want.loss(), rel=1e-12, abs=1e-12, nan_ok=True)
    w_result = want.result()
    for key, value in got.result().items():
        assert value == pytest.approx(w_result[key], rel=1e-9, abs=1e-12, nan_ok=True), key
    for key, (lo, hi) in got.bounds().items():
        np.testing.assert_allclose([lo, hi], want.bounds()[key], rtol=1e-9, atol=1e-12,
                                   equal_nan=True)
    g_plots, w_plots = got.plots(), want.plots()
    assert g_plots.keys() == w_plots.keys()
    for col, values in g_plots.items():
        if values.dtype.kind in 'fc':
            np.testing.assert_allclose(values, w_plots[col], rtol=1e-9, atol=1e-9, err_msg=col)
        else:
            assert values.tolist() == w_plots[col].tolist(), col
    np.testing.assert_allclose(got.histogram.pos, want.histogram.pos, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.histogram.neg, want.histogram.neg, rtol=1e-12, atol=1e-12)
    assert got.histogram.negative_weights == pytest.approx(want.histogram.negative_weights)
    assert got.histogram.nan_pos == pytest.approx(want.histogram.nan_pos)


CASES = [
    dict(weights='[B,1]'),
    dict(weights='[B]'),
    dict(weights='none'),
    dict(weights='[B,1]', soft=True),
    dict(weights='[B,1]', nan=True),
    dict(weights='[B,1]', negative=True),
]


@pytest.mark.parametrize('case', CASES, ids=lambda c: '-'.join('%s' % v for v in c.values()))
def test_grouped_update_equals_each_state_updated_with_its_rows(case):
    head = BinaryClassHead(weight_column=None if case['weights'] == 'none' else 'w',
                           thresholds=[0.3, 0.5, 0.9])
    labels, logits, features = _batch(3000, 7, **case)
    rng = np.random.default_rng(1)
    codes = rng.integers(-1, 5, labels.shape[0])
    codes[codes == 3] = 2  # group 3 holds no row
    grouped = [head.new_state() for _ in range(5)]
    # Two batches into the same states: the second adds to what the first left.
    half = labels.shape[0] // 2
    for part in (slice(0, half), slice(half, None)):
        assert BinaryClassState.update_groups(
            grouped, codes[part], labels[part], logits[part], _rows(features, part)) is True
    for g in range(5):
        alone = head.new_state()
        for part in (slice(0, half), slice(half, None)):
            idx = np.flatnonzero(codes[part] == g) + part.indices(labels.shape[0])[0]
            alone.update(labels[idx], logits[idx], _rows(features, idx))
        _assert_same_state(grouped[g], alone)
    assert grouped[3].counts() == (0, 0.0)


@pytest.mark.parametrize('soft', [False, True])
def test_grouped_update_against_plain_numpy_per_group(soft):
    # Independent of the state classes: counts, means, accuracies, precision and recall per group
    # (thresholds unsorted), from masks and textbook formulas; soft labels count as positive when
    # != 0 and as correct only when equal to the 0/1 prediction (Keras' accuracy).
    thresholds = [0.9, 0.3, 0.7]
    head = BinaryClassHead(weight_column='w', thresholds=thresholds)
    labels, logits, features = _batch(2000, 3, weights='[B]', soft=soft)
    codes = np.random.default_rng(4).integers(-1, 3, 2000)
    states = [head.new_state() for _ in range(3)]
    BinaryClassState.update_groups(states, codes, labels, logits, features)
    y, x = labels[:, 0].astype(np.float64), logits[:, 0].astype(np.float64)
    w = features['w'].astype(np.float32).astype(np.float64)  # weights are float32, as in TF
    p = 1.0 / (1.0 + np.exp(-x))
    loss = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    for g, state in enumerate(states):
        m = codes == g
        wm, ym, pos = w[m], y[m], y[m] != 0
        result = state.result()
        assert state.counts()[0] == m.sum()
        assert result['label/mean'] == pytest.approx(np.sum(wm * ym) / np.sum(wm), rel=1e-9)
        assert result['prediction/mean'] == pytest.approx(np.sum(wm * p[m]) / np.sum(wm),
                                                          rel=1e-6)
        assert result['average_loss'] == pytest.approx(np.sum(wm * loss[m]) / np.sum(wm), rel=1e-5)
        predicted = x[m] > 0
        assert result['accuracy'] == pytest.approx(
            np.sum(wm * (ym == predicted)) / np.sum(wm), rel=1e-9)
        assert result['precision'] == pytest.approx(
            np.sum(wm * (pos & predicted)) / np.sum(wm * predicted), rel=1e-9)
        assert result['recall'] == pytest.approx(
            np.sum(wm * (pos & predicted)) / np.sum(wm * pos), rel=1e-9)
        for t in thresholds:  # no score is within float32 rounding of a threshold here
            above = p[m] > t
            assert result['accuracy/positive_threshold_%g' % t] == pytest.approx(
                np.sum(wm * (ym == above)) / np.sum(wm), rel=1e-9)
            assert result['precision/positive_threshold_%g' % t] == pytest.approx(
                np.sum(wm * (pos & above)) / np.sum(wm * above), rel=1e-9)
            assert result['recall/positive_threshold_%g' % t] == pytest.approx(
                np.sum(wm * (pos & above)) / np.sum(wm * pos), rel=1e-9)


def _head_batch(kind: str, n: int, rng: np.random.Generator):
    """(head, labels, logits, features) of one head kind, weighted, with [n] weights."""
    features = {'w': rng.uniform(0.0, 2.0, n)}
    if kind == 'multi_class':
        head = MultiClassHead(n_classes=4, weight_column='w')
        return head, rng.integers(0, 4, (n, 1)), rng.normal(size=(n, 4)).astype(np.float32), \
            features
    if kind == 'multi_label':
        head = MultiLabelHead(n_classes=5, weight_column='w', thresholds=[0.2, 0.6],
                              classes_for_class_based_metrics=[1, 3])
        return head, (rng.random((n, 5)) < 0.3).astype(np.int64), \
            rng.normal(0.0, 2.0, (n, 5)).astype(np.float32), features
    if kind == 'regression_3':
        head = RegressionHead(label_dimension=3, weight_column='w')
        return head, rng.normal(size=(n, 3)), rng.normal(size=(n, 3)).astype(np.float32), features
    if kind == 'poisson':
        head = PoissonRegressionHead(weight_column='w')
        return head, rng.poisson(2.0, (n, 1)).astype(np.float64), \
            rng.normal(size=(n, 1)).astype(np.float32), features
    head = RegressionHead(weight_column='w')
    return head, rng.normal(size=n), rng.normal(size=(n, 1)).astype(np.float32), features


@pytest.mark.parametrize('kind', ['multi_class', 'multi_label', 'regression', 'regression_3',
                                  'poisson'])
def test_grouped_update_of_every_head_equals_per_group_updates(kind):
    rng = np.random.default_rng(21)
    head, labels, logits, features = _head_batch(kind, 1500, rng)
    codes = rng.integers(-1, 4, 1500)
    grouped = [head.new_state() for _ in range(4)]
    assert type(grouped[0]).update_groups(grouped, codes, labels, logits, features) is True
    for g, state in enumerate(grouped):
        idx = np.flatnonzero(codes == g)
        alone = head.new_state().update(labels[idx], logits[idx], _rows(features, idx))
        assert state.counts()[0] == alone.counts()[0] == idx.size
        assert state.counts()[1] == pytest.approx(alone.counts()[1], rel=1e-12)
        assert state.loss() == pytest.approx(alone.loss(), rel=1e-12)
        want = alone.result()
        for key, value in state.result().items():
            assert value == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
        for key, bound in state.bounds().items():
            np.testing.assert_allclose(bound, alone.bounds()[key], rtol=1e-9, atol=1e-12)
        for col, values in state.plots().items():
            if values.dtype.kind == 'f':
                np.testing.assert_allclose(values, alone.plots()[col], rtol=1e-9, atol=1e-9)
    # Independently: the weighted label mean of a regression head from the rows' own values.
    if kind == 'regression':
        w = features['w'].astype(np.float32).astype(np.float64)
        y = labels.astype(np.float32).astype(np.float64)
        for g, state in enumerate(grouped):
            m = codes == g
            assert state.result()['label/mean'] == pytest.approx(
                np.sum(w[m] * y[m]) / np.sum(w[m]), rel=1e-9)


def test_grouped_update_takes_any_number_of_groups_and_keeps_states_on_errors():
    head = BinaryClassHead(weight_column='w')
    labels, logits, features = _batch(500, 5, weights='[B,1]')
    many = [head.new_state() for _ in range(BinaryClassState.MAX_GROUPS + 1)]
    codes = np.arange(500) % len(many)
    assert BinaryClassState.update_groups(many, codes, labels, logits, features) is True
    assert [s.counts()[0] for s in many] == np.bincount(codes).tolist()
    states = [head.new_state() for _ in range(2)]
    bad = labels.copy()
    bad[10, 0] = 2.0  # out of range for a binary head: the whole batch is refused
    with pytest.raises(Exception, match='Labels must be <= 2 - 1'):
        BinaryClassState.update_groups(states, np.arange(500) % 2, bad, logits, features)
    assert all(s.counts() == (0, 0.0) for s in states)
    with pytest.raises(ValueError, match='group codes'):
        BinaryClassState.update_groups(states, np.zeros(3, np.int64), labels, logits, features)


# -- ApplyHeads: keys of a batch and their states ----------------------------------------------

def _config(window: bool):
    raw = {'input': {'pattern': 'x.parquet', 'format': 'parquet'}, 'output': 'o',
           'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click', 'weight_column': 'w'},
                      'logits': 'x', 'labels': 'y'}],
           'slices': [[], ['user']]}
    if window:
        raw['window'] = {'column': 'ts', 'size': 10}
    return parse_config(raw)


@pytest.mark.parametrize('window', [False, True])
def test_apply_heads_states_equal_per_key_updates_with_many_keys(window):
    # 600 rows, ~300 users and (windowed) ~500 windows: far more (user, window) combinations than
    # rows, and more keys than one grouped update takes.
    n = 600
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 2.0, n).astype(np.float32)
    user = rng.integers(0, 300, n).astype(str).astype(object)
    user[rng.random(n) < 0.1] = None
    table = pa.table({'user': pa.array(user.tolist(), pa.string()),
                      'w': rng.uniform(0.5, 1.5, n), 'x': x,
                      'y': (rng.random(n) < 0.5).astype(np.int64),
                      'ts': rng.integers(0, 5000, n)})
    config = _config(window)
    dofn = ApplyHeads(config, 'run')
    dofn.setup()
    dofn.start_bundle()
    assert list(dofn.process(SourceBatch('f', 0, table.to_batches()[0]))) == []
    got = {}
    for wv in dofn.finish_bundle():
        if not isinstance(wv, beam.pvalue.TaggedOutput):
            got[wv.value[0]] = wv.value[1]
    # The reference: the rows of each key found by a loop, each key's state updated alone.
    rows: dict[tuple, list[int]] = {}
    for i in range(n):
        start = (int(table['ts'][i].as_py()) // 10 * 10 * 1_000_000) if window else None
        rows.setdefault(((), (), 0, start, None), []).append(i)
        if user[i] is not None:
            rows.setdefault((('user',), (user[i],), 0, start, None), []).append(i)
    assert set(got) == set(rows)
    assert len(rows) > BinaryClassState.MAX_GROUPS
    head = config.build_heads()[0]
    for key, idx in rows.items():
        idx = np.array(idx)
        want = head.new_state().update(
            np.asarray(table['y'])[idx][:, None], x[idx][:, None],
            {'w': np.asarray(table['w'])[idx]})
        _assert_same_state(got[key], want)


def test_regression_with_per_logit_weights_takes_the_general_path():
    # Weights [n, 3] (one per logit): no grouped update; `update` still computes Keras' means.
    rng = np.random.default_rng(5)
    head = RegressionHead(label_dimension=3, weight_column='w')
    labels = rng.normal(size=(40, 3))
    logits = rng.normal(size=(40, 3)).astype(np.float32)
    features = {'w': rng.uniform(0.5, 1.5, (40, 3))}
    states = [head.new_state() for _ in range(2)]
    assert type(states[0]).update_groups(states, np.arange(40) % 2, labels, logits,
                                         features) is False
    assert all(s.counts() == (0, 0.0) for s in states)
    state = head.new_state().update(labels, logits, features)
    w = features['w'].astype(np.float32).astype(np.float64)
    err = (labels.astype(np.float32).astype(np.float64) - logits.astype(np.float64)) ** 2
    assert state.result()['average_loss'] == pytest.approx(np.sum(w * err) / np.sum(w), rel=1e-6)


@pytest.mark.parametrize('soft', [False, True])
def test_histogram_calibration_sums_per_group_against_numpy(soft):
    # Calibration buckets [k/100, (k+1)/100) of the float32 score (1.0 in the last): Σw, Σw·label
    # and Σw·p per group, with 0/1 labels (label values not passed) and with soft labels.
    from heads.metrics import Histogram
    rng = np.random.default_rng(8)
    n = 5000
    p = rng.random(n).astype(np.float32)
    p[:5] = [0.0, 1.0, 0.5, 0.01, 0.99]
    labels = np.round(rng.random(n), 1) if soft else (rng.random(n) < 0.4).astype(np.float64)
    positive = labels != 0
    w = rng.uniform(0.0, 2.0, n)
    codes = rng.integers(-1, 3, n)
    hists = [Histogram() for _ in range(3)]
    Histogram.update_groups(hists, Groups(codes, 3), positive, p, w, labels if soft else None)
    bucket = np.minimum((p.astype(np.float64) * 100).astype(np.int64), 99)
    for g, h in enumerate(hists):
        m = codes == g
        np.testing.assert_allclose(h.cal_examples, np.bincount(bucket[m], w[m], 100), rtol=1e-12)
        np.testing.assert_allclose(h.cal_labels, np.bincount(bucket[m], w[m] * labels[m], 100),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(h.cal_predictions,
                                   np.bincount(bucket[m], w[m] * p[m].astype(np.float64), 100),
                                   rtol=1e-12)
        assert h.pos.sum() == pytest.approx(np.sum(w[m & positive]), rel=1e-12)
        assert h.neg.sum() == pytest.approx(np.sum(w[m & ~positive]), rel=1e-12)


def test_regression_with_a_link_of_another_shape_takes_the_general_path():
    # An inverse link giving one prediction per example for 3 logits: no grouped update (and no
    # state touched); `update` still computes Keras' means, weights broadcast to each shape.
    rng = np.random.default_rng(0)
    head = RegressionHead(label_dimension=3, weight_column='w',
                          inverse_link_fn=lambda z: np.sum(z, axis=-1, keepdims=True))
    labels = rng.normal(size=(8, 3))
    logits = rng.normal(size=(8, 3)).astype(np.float32)
    features = {'w': rng.uniform(0.5, 1.5, 8)}
    states = [head.new_state() for _ in range(2)]
    assert type(states[0]).update_groups(states, np.arange(8) % 2, labels, logits,
                                         features) is False
    assert all(s.counts() == (0, 0.0) and s.loss_sum.count == 0 for s in states)
    state = head.new_state().update(labels, logits, features)
    w = features['w'].astype(np.float32).astype(np.float64)
    prediction = logits.astype(np.float64).sum(axis=1)
    assert state.result()['prediction/mean'] == pytest.approx(
        np.sum(w * prediction) / np.sum(w), rel=1e-6)
    assert state.counts() == (8, pytest.approx(np.sum(w)))
