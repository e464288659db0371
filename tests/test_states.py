"""The mergeable metric states (heads/metrics/) and the numpy helpers they rely on (heads/array/).

Golden values are hand arithmetic written out below, tf.estimator 2.15 recordings (its test
vectors, by id, with inputs and outputs written out), slow reference implementations in this
file, and sklearn.
"""
from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from heads.array import inputs, numerics
from heads.metrics import (PLOT_COLUMNS, Confusion, Histogram, KerasAUC, LossSum, WeightedMean,
                           calibration_plot, concat_plots, confusion_plot, div_no_nan,
                           empty_plots)

from _helpers import reference_keras_auc  # Keras AUC, one threshold at a time


# -------------------------------------------------------------------------------------------------
# Slow, obviously correct references.
# -------------------------------------------------------------------------------------------------

def reference_exact_auc(labels, scores, weights):
    """Exact weighted ROC AUC, O(n²): Σ w_i·w_j·([s_i > s_j] + ½[s_i = s_j]) / (Σw₊·Σw₋)."""
    num = 0.0
    wp = wn = 0.0
    for z, w in zip(labels, weights):
        if z:
            wp += w
        else:
            wn += w
    for zi, si, wi in zip(labels, scores, weights):
        if not zi:
            continue
        for zj, sj, wj in zip(labels, scores, weights):
            if zj:
                continue
            num += wi * wj * (1.0 if si > sj else 0.5 if si == sj else 0.0)
    return num / (wp * wn)


# -------------------------------------------------------------------------------------------------
# WeightedMean / LossSum.
# -------------------------------------------------------------------------------------------------

def test_weighted_mean_hand_values():
    m = WeightedMean().update([1.0, 2.0, 6.0])
    assert m.result() == pytest.approx(9.0 / 3)
    m = WeightedMean().update([[1.0], [2.0], [6.0]], [[1.0], [0.0], [0.5]])
    assert m.result() == pytest.approx((1 * 1 + 2 * 0 + 6 * 0.5) / 1.5)


def test_weighted_mean_keras_rank_rules():
    # [B, 1] weight against [B] values: its last dim is squeezed.
    m = WeightedMean().update([1.0, 3.0], [[1.0], [3.0]])
    assert (m.total, m.count) == (1 * 1 + 3 * 3, 4.0)
    # [B] weight against [B, 2] values: expanded, then broadcast over both columns.
    m = WeightedMean().update([[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0])
    assert (m.total, m.count) == (1 + 2 + 2 * (3 + 4), 2 * (1 + 2))
    # A scalar weight counts once per element.
    m = WeightedMean().update([[1.0], [2.0]], 1.0)
    assert (m.total, m.count) == (3.0, 2.0)
    with pytest.raises(ValueError):
        WeightedMean().update([1.0, 2.0], [[1.0, 1.0], [1.0, 1.0]])


def test_weighted_mean_degenerate():
    assert WeightedMean().result() == 0.0
    assert WeightedMean().update(np.zeros((0, 1))).result() == 0.0
    assert WeightedMean().update([5.0, 7.0], [0.0, 0.0]).result() == 0.0
    # Σw = 0 with negative weights: div_no_nan gives 0, as Keras.
    assert WeightedMean().update([5.0, 7.0], [1.0, -1.0]).result() == 0.0


def test_loss_sum_reductions():
    s = LossSum().update(np.array([[1.0], [2.0], [6.0]]) * np.array([[1.0], [0.0], [2.0]]))
    assert s.value('sum') == 13.0
    assert s.value('sum_over_batch_size') == pytest.approx(13.0 / 3)  # zero weights still count
    assert s.value('auto') == s.value('sum_over_batch_size')
    assert LossSum().value('sum_over_batch_size') == 0.0
    assert LossSum().value('sum') == 0.0
    with pytest.raises(ValueError, match='Invalid loss_reduction: none'):
        s.value('none')


# -------------------------------------------------------------------------------------------------
# Confusion.
# -------------------------------------------------------------------------------------------------

def test_confusion_hand_values():
    c = Confusion([0.25, 0.5]).update([1, 1, 0, 0.4], [0.3, 0.5, 0.9, 0.2], [1.0, 2.0, 3.0, 4.0])
    # t=0.25: predicted positive 0.3 (pos), 0.9 (neg); 0.5 is > 0.25 too (pos); 0.4 is a soft label
    # → positive, score 0.2 → predicted negative.
    np.testing.assert_array_equal(c.tp, [1 + 2, 0])
    np.testing.assert_array_equal(c.fp, [3, 3])
    np.testing.assert_array_equal(c.fn, [4, 1 + 2 + 4])
    np.testing.assert_array_equal(c.tn, [0, 0])
    np.testing.assert_allclose(c.precision(), [3 / 6, 0 / 3])
    np.testing.assert_allclose(c.recall(), [3 / 7, 0 / 7])


def test_confusion_strict_and_float32_thresholds():
    # Keras compares float32 scores with float32 thresholds, strictly: float32(0.1) is not > 0.1.
    c = Confusion([0.1]).update([1], np.float32([0.1]))
    assert c.tp[0] == 0 and c.fn[0] == 1
    c = Confusion([0.5]).update([0, 1], [np.nan, 0.7])
    assert (c.tp[0], c.fp[0], c.tn[0]) == (1, 0, 1)  # NaN predicted negative


def test_confusion_degenerate_ratios_are_zero():
    c = Confusion([0.5])
    np.testing.assert_array_equal(c.precision(), [0.0])
    np.testing.assert_array_equal(c.recall(), [0.0])
    with pytest.raises(ValueError, match='different thresholds'):
        c.merge(Confusion([0.4]))


# -------------------------------------------------------------------------------------------------
# KerasAUC.
# -------------------------------------------------------------------------------------------------

def _auc(labels, scores, weights=None):
    a = KerasAUC().update(np.asarray(labels) != 0, np.asarray(scores, np.float32), weights)
    return a.roc(), a.pr()


def test_keras_auc_recorded_tf_values():
    # Vector B7 (tf.estimator 2.15): BinaryClassHead, sigmoid of logits [45, -41, 44], labels
    # [1, 1, 0].
    p = numerics.sigmoid32([[45.0], [-41.0], [44.0]])
    roc, pr = _auc([[1], [1], [0]], p, [[1.0], [0.1], [1.5]])
    assert roc == pytest.approx(0.4545454539, abs=1e-9)
    assert pr == pytest.approx(0.4010626639, abs=1e-9)
    # B8: rank-3 logits, weights per (example, step).
    p = numerics.sigmoid32([[[10.0], [-10.0]], [[12.0], [-12.0]]])
    roc, pr = _auc([[[0], [0]], [[1], [1]]], p, [[[1.0], [1.5]], [[2.0], [2.5]]])
    assert (roc, pr) == (pytest.approx(0.5222222, abs=1e-6), pytest.approx(0.6582286, abs=1e-6))
    # L1 (multi-label, flattened): logits [[-1, 1], [-1.5, 1.5]], labels [[1, 0], [1, 1]].
    roc, pr = _auc([[1, 0], [1, 1]], numerics.sigmoid32([[-1.0, 1.0], [-1.5, 1.5]]))
    assert (roc, pr) == (pytest.approx(0.3333333, abs=1e-6), pytest.approx(0.7689509, abs=1e-6))
    # E3: a NaN score is predicted negative everywhere (dropped from the buckets).
    roc, pr = _auc([[1, 0], [0, 1]], numerics.sigmoid32([[np.nan, 1.0], [1.0, -1.0]]))
    assert (roc, pr) == (0.0, pytest.approx(0.0945349, abs=1e-6))
    # E7: logits [[1, -1, 0]], labels [[0, 1, 0]].
    roc, pr = _auc([[0, 1, 0]], numerics.sigmoid32([[1.0, -1.0, 0.0]]))
    assert (roc, pr) == (0.0, pytest.approx(0.1890698, abs=1e-6))


def test_keras_auc_degenerate_cases():
    assert _auc(np.zeros(0), np.zeros(0)) == (0.0, 0.0)  # empty
    assert _auc([1, 1], [0.2, 0.9]) == (0.0, pytest.approx(1.0))  # no negatives: ROC 0, PR 1
    assert _auc([0, 0], [0.2, 0.9]) == (0.0, 0.0)  # no positives
    assert _auc([1, 0], [0.9, 0.2], [0.0, 0.0]) == (0.0, 0.0)  # zero weights
    roc, pr = _auc([1, 0], [0.9, 0.2])  # perfectly separated
    assert (roc, pr) == (pytest.approx(1.0), pytest.approx(1.0))


def test_keras_auc_bucket_assignment_is_float32():
    # p·199 is computed in float32: 1/199 rounds in float32 to a value whose product is exactly 1,
    # so ceil − 1 = 0 → bucket 0 (not counted at threshold 1/199).
    p = np.float32(1.0 / 199)
    assert np.ceil(p * np.float32(199)) - 1 == 0
    a = KerasAUC().update([True], [p])
    assert a.pos[0] == 1.0
    _, tp, _, _, _ = a.confusion()
    assert (tp[0], tp[1]) == (1.0, 0.0)


def test_keras_auc_thresholds():
    t = KerasAUC().thresholds()
    assert t.size == 200 and t[0] == -1e-7 and t[-1] == 1 + 1e-7
    assert t[1] == 1 / 199 and t[198] == 198 / 199


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_keras_auc_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    n = 150
    labels = (rng.random(n) < 0.4).astype(float)
    labels[rng.random(n) < 0.1] = 0.3  # soft labels are positives
    scores = numerics.sigmoid32(rng.normal(0, 2, n) + labels)
    scores[:5] = [0.0, 1.0, 0.5, np.nan, 1.0]
    weights = rng.uniform(0, 2, n)
    a = KerasAUC()
    for part in np.array_split(np.arange(n), 4):
        a.update(labels[part] != 0, scores[part], weights[part])
    roc, pr = reference_keras_auc(labels, scores, weights)
    assert a.roc() == pytest.approx(roc, rel=1e-12, abs=1e-12)
    assert a.pr() == pytest.approx(pr, rel=1e-12, abs=1e-12)


# -------------------------------------------------------------------------------------------------
# Histogram: AUC bounds and calibration.
# -------------------------------------------------------------------------------------------------

def _tied_data(rng, n):
    labels = rng.random(n) < 0.35
    logits = rng.normal(0, 3, n) + 1.5 * labels
    logits[rng.random(n) < 0.2] = 20.0   # saturates to p = 1 in float32: ties at the top
    logits[rng.random(n) < 0.1] = -200.0  # p = 0
    logits = np.round(logits, 1)          # more ties
    return labels, numerics.sigmoid32(logits), rng.uniform(0.1, 3.0, n)


@pytest.mark.parametrize('seed', range(4))
def test_histogram_bounds_contain_exact_auc(seed):
    rng = np.random.default_rng(seed)
    labels, p, w = _tied_data(rng, 120)
    h = Histogram().update(labels, p, w)
    lo, hi = h.auc_bounds()
    exact = reference_exact_auc(labels.tolist(), p.tolist(), w.tolist())
    assert lo <= exact <= hi
    # sklearn's weighted ROC AUC also counts ties 1/2.
    assert exact == pytest.approx(roc_auc_score(labels, p, sample_weight=w), abs=1e-12)
    assert hi - lo < 0.05  # high resolution: a narrow interval


@pytest.mark.parametrize('n_buckets', [2, 5, 64])
def test_histogram_bounds_hold_at_coarse_resolution(n_buckets):
    rng = np.random.default_rng(n_buckets)
    labels, p, w = _tied_data(rng, 200)
    lo, hi = Histogram(n_buckets=n_buckets).update(labels, p, w).auc_bounds()
    exact = roc_auc_score(labels, p, sample_weight=w)
    assert lo <= exact <= hi


def test_histogram_bounds_on_large_sample_are_tight():
    rng = np.random.default_rng(5)
    n = 20000
    labels = rng.random(n) < 0.3
    p = numerics.sigmoid32(rng.normal(0, 2, n) + labels)
    lo, hi = Histogram().update(labels, p).auc_bounds()
    exact = roc_auc_score(labels, p)
    assert lo <= exact <= hi
    assert hi - lo < 1e-3


def test_histogram_bounds_exact_for_point_ties_and_nan():
    # Scores exactly 0 and 1 (and NaN) are single values: their ties are 1/2 exactly.
    # Positives at p = 1 (w 1, 2), negatives at p = 1 (w 1) and p = 0 (w 3):
    # (1·1·½ + 2·1·½ + (1 + 2)·3) / (3·4) = 10.5 / 12.
    h = Histogram().update([1, 1, 0, 0], [1.0, 1.0, 1.0, 0.0], [1.0, 2.0, 1.0, 3.0])
    lo, hi = h.auc_bounds()
    assert lo == pytest.approx(10.5 / 12) and hi == pytest.approx(10.5 / 12)
    # A NaN positive ranks below every score: against one negative at 0.3 it contributes 0.
    lo, hi = Histogram().update([1, 0, 1], [np.nan, 0.3, 0.9]).auc_bounds()
    assert lo == pytest.approx(1 / 2) and hi == pytest.approx(1 / 2)


def test_histogram_bounds_degenerate():
    # Issue 20 item 10: where the exact AUC is a 0/0 there is no interval (it was [0, 0], which
    # contains no AUC): empty, one class only, all weights zero; and none with a negative weight.
    for h in (Histogram(), Histogram().update([1, 1], [0.2, 0.3]),
              Histogram().update([1, 0], [0.2, 0.3], [0.0, 1.0]),
              Histogram().update([1, 0], [0.2, 0.3], [0.0, 0.0]),
              Histogram().update([1, 0], [0.2, 0.3], [1.0, -1.0])):
        lo, hi = h.auc_bounds()
        assert math.isnan(lo) and math.isnan(hi), h


def test_histogram_calibration_and_curve():
    h = Histogram(n_calibration=2).update([1, 0, 0.5], [0.2, 0.7, 0.9], [1.0, 2.0, 4.0],
                                          labels=[1.0, 0.0, 0.5])
    np.testing.assert_allclose(h.cal_examples, [1.0, 2.0 + 4.0])
    np.testing.assert_allclose(h.cal_labels, [1.0, 0.5 * 4.0])
    np.testing.assert_allclose(h.cal_predictions, [0.2, 0.7 * 2 + 0.9 * 4], rtol=1e-6)
    tp, fp, tn, fn = h.curve([0.5])
    # Predicted positive above 0.5: 0.7 (negative, w 2) and 0.9 (positive: label 0.5 != 0, w 4).
    assert (tp[0], fp[0], tn[0], fn[0]) == (4.0, 2.0, 0.0, 1.0)


def test_histogram_bucket_layout():
    h = Histogram(n_buckets=8)
    idx = h.bucket_index([0.0, 1e-30, 0.5, 1 - 1e-7, 1.0])
    assert idx[0] == 0 and idx[1] == 1 and idx[-1] == 9 and 1 < idx[2] < idx[3] < 9
    lower, upper = h.bucket_bounds()
    b = h.bucket_index([0.3])[0]
    assert lower[b] <= 0.3 < upper[b]


# -------------------------------------------------------------------------------------------------
# Merging: associative, commutative, inputs unchanged; pickling.
# -------------------------------------------------------------------------------------------------

def _fill(states, labels, scores, weights, parts):
    for s, part in zip(states, parts):
        if isinstance(s, WeightedMean):
            s.update(scores[part], weights[part])
        elif isinstance(s, LossSum):
            s.update(scores[part] * weights[part])
        elif isinstance(s, Histogram):
            s.update(labels[part], scores[part], weights[part], labels=labels[part])
        else:
            s.update(labels[part], scores[part], weights[part])
    return states


def _summary(s):
    if isinstance(s, WeightedMean):
        return np.array([s.result()])
    if isinstance(s, LossSum):
        return np.array([s.value('sum'), s.value('sum_over_batch_size')])
    if isinstance(s, Confusion):
        return np.concatenate([s.tp, s.fp, s.tn, s.fn, s.precision(), s.recall()])
    if isinstance(s, KerasAUC):
        return np.concatenate([[s.roc(), s.pr()], *s.confusion()[1:]])
    return np.concatenate([np.asarray(s.auc_bounds()), s.pos, s.neg, s.cal_examples,
                           s.cal_labels, s.cal_predictions])


_FACTORIES = [WeightedMean, LossSum, lambda: Confusion([0.3, 0.5]), KerasAUC,
              lambda: Histogram(n_buckets=64, n_calibration=5)]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), seed=st.integers(0, 2 ** 16), n_parts=st.integers(1, 5),
       factory=st.integers(0, len(_FACTORIES) - 1))
def test_any_chunking_merged_in_any_order_gives_the_one_batch_result(n, seed, n_parts, factory):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.5).astype(float)
    scores = numerics.sigmoid32(rng.normal(0, 2, n)).astype(np.float64)
    weights = rng.uniform(0, 2, n)
    make = _FACTORIES[factory]
    whole = _fill([make()], labels, scores, weights, [np.arange(n)])[0]
    cuts = np.sort(rng.integers(0, n + 1, n_parts - 1))
    parts = np.split(rng.permutation(n), cuts)
    states = _fill([make() for _ in parts], labels, scores, weights, parts)
    # Merge in a random order and a random tree shape.
    pool = [states[i] for i in rng.permutation(len(states))]
    while len(pool) > 1:
        i, j = sorted(rng.choice(len(pool), 2, replace=False))
        b = pool.pop(j)
        a = pool.pop(i)
        snapshot = _summary(b)
        merged = a.merge(b)
        assert merged is a
        np.testing.assert_array_equal(_summary(b), snapshot)  # `other` unchanged
        pool.append(merged)
    np.testing.assert_allclose(_summary(pool[0]), _summary(whole), rtol=1e-9, atol=1e-12)


def test_merge_returns_self_and_pickles_small():
    rng = np.random.default_rng(0)
    a = KerasAUC().update(rng.random(100) < 0.5, rng.random(100))
    b = copy.deepcopy(a)
    assert a.merge(b) is a
    for state in (a, Histogram().update([1, 0], [0.2, 0.4]), WeightedMean().update([1.0]),
                  Confusion([0.5]).update([1], [0.7])):
        data = pickle.dumps(state)
        assert len(data) < 8 * 1024  # a histogram pickles its non-empty buckets only
        np.testing.assert_array_equal(_summary(pickle.loads(data)), _summary(state))


# -------------------------------------------------------------------------------------------------
# Plots.
# -------------------------------------------------------------------------------------------------

def test_plot_columns():
    a = KerasAUC().update([1, 0, 1], [0.9, 0.3, 0.6])
    h = Histogram(n_calibration=4).update([1, 0, 1], [0.9, 0.3, 0.6])
    plots = concat_plots([confusion_plot('', a), calibration_plot('', h)])
    assert tuple(plots) == PLOT_COLUMNS
    assert all(len(v) == 200 + 4 for v in plots.values())
    conf = plots['curve'] == 'confusion'
    # At threshold 0.5 (index 100 is 100/199 ≈ 0.5025): predicted positive 0.9, 0.6 → tp 2, fp 0.
    i = int(np.flatnonzero(conf)[100])
    assert (plots['tp'][i], plots['fp'][i], plots['tn'][i], plots['fn'][i]) == (2, 0, 1, 0)
    assert plots['precision'][i] == 1.0 and plots['false_positive_rate'][i] == 0.0
    cal = ~conf
    np.testing.assert_allclose(plots['weighted_examples'][cal], [0, 1, 1, 1])
    assert np.isnan(plots['bucket_lower'][conf]).all() and np.isnan(plots['threshold'][cal]).all()
    empty = empty_plots()
    assert tuple(empty) == PLOT_COLUMNS and all(len(v) == 0 for v in empty.values())
    assert concat_plots([]).keys() == empty.keys()


def test_div_no_nan():
    assert div_no_nan(1.0, 0.0) == 0.0
    np.testing.assert_array_equal(div_no_nan([1.0, 2.0], [0.0, 4.0]), [0.0, 0.5])


# -------------------------------------------------------------------------------------------------
# heads/array helpers (inputs and numerics).
# -------------------------------------------------------------------------------------------------

def test_sigmoid32_and_softmax32():
    x = np.array([-200.0, -1.0, 0.0, 1.0, 200.0, np.nan], np.float32)
    s = numerics.sigmoid32(x)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s[:5], [0.0, 1 / (1 + math.e), 0.5, 1 / (1 + math.exp(-1)), 1.0],
                               rtol=1e-6)
    assert np.isnan(s[5])
    sm = numerics.softmax32([[0.0, 1.0, 0.0]])
    np.testing.assert_allclose(sm, [[1 / (2 + math.e), math.e / (2 + math.e), 1 / (2 + math.e)]],
                               rtol=1e-6)


def test_check_logits_messages():
    with pytest.raises(ValueError, match=r'logits must have rank at least 2\.  Received rank 1, '
                                         r'shape \(2,\)'):
        inputs.check_logits([1.0, 2.0], 1)
    with pytest.raises(ValueError, match=r'logits shape must be \[D0, D1, \.\.\. DN, '
                                         r'logits_dimension\], got \(2, 2\)\.'):
        inputs.check_logits([[1.0, 2.0], [3.0, 4.0]], 1)
    assert inputs.check_logits([[1], [2]], 1).dtype == np.float32


def test_dense_labels_rules():
    logits = np.zeros((2, 1), np.float32)
    assert inputs.dense_labels([1, 0], logits, 1).shape == (2, 1)  # rank fix-up
    with pytest.raises(ValueError, match='You must provide a labels Tensor'):
        inputs.dense_labels(None, logits, 1)
    with pytest.raises(ValueError, match='Mismatched label shape'):
        inputs.dense_labels([[45.0, 44.0], [41.0, 42.0]], logits, 1)
    # [3] labels against [2, 1] logits: expanded to [3, 1], then the full-shape message.
    with pytest.raises(ValueError, match=r'labels shape must be \[D0, D1, \.\.\. DN, 1\]\. .*'
                                         r'expected_labels_shape: \(2, 1\)\. labels_shape: '
                                         r'\(3, 1\)\.'):
        inputs.dense_labels([1, 0, 1], logits, 1)


def test_example_weights_rules():
    logits = np.zeros((2, 1), np.float32)
    assert inputs.example_weights({}, None, logits) == 1.0
    w = inputs.example_weights({'w': [1.0, 0.1]}, 'w', logits)
    assert w.shape == (2, 1) and w.dtype == np.float64
    assert w[1, 0] == np.float32(0.1)  # float32 like the TF face
    with pytest.raises(ValueError, match='Feature w is not in features dictionary.'):
        inputs.example_weights({}, 'w', logits)
    with pytest.raises(ValueError, match=r'Feature \(key: w\) cannot have rank 0\. Given: 2\.0'):
        inputs.example_weights({'w': np.float32(2.0)}, 'w', logits)
    with pytest.raises(ValueError, match=r'weights shape must be \[D0, D1, \.\.\. DN\] or \[D0, '
                                         r'D1, \.\.\. DN, 1\], logits_shape: \(2, 1\)\. '
                                         r'weights_shape: \(2, 2\)\.'):
        inputs.example_weights({'w': np.ones((2, 2))}, 'w', logits)
    per_logit = inputs.example_weights({'w': np.ones((2, 3))}, 'w', np.zeros((2, 3)), True)
    assert per_logit.shape == (2, 3)
    with pytest.raises(ValueError, match=r'\[D0, D1, \.\.\. DN, logits_dimension\]'):
        inputs.example_weights({'w': np.ones((2, 2))}, 'w', np.zeros((2, 3)), True)
    # Rank-3 logits take [D0, D1] weights (rank − 1) and give [D0, D1, 1].
    assert inputs.example_weights({'w': np.ones((2, 2))}, 'w', np.zeros((2, 2, 1))).shape == (2, 2, 1)


def test_lookup_and_label_range():
    ids = inputs.lookup_labels(np.array([['b'], ['z'], ['a']], dtype=object), ['a', 'b'])
    np.testing.assert_array_equal(ids, [[1], [-1], [0]])
    np.testing.assert_array_equal(inputs.lookup_labels([b'b'], ['a', 'b']), [1])  # bytes decoded
    with pytest.raises(TypeError, match="Dtype of argument `keys` must be <dtype: 'string'>, "
                                        "received: <dtype: 'int64'>"):
        inputs.lookup_labels(np.array([1, 0]), ['a', 'b'])
    with pytest.raises(ValueError, match=r'Labels must be <= 2 - 1'):
        inputs.check_label_range(np.array([1.2, -1.0]), 2)  # the upper check comes first
    with pytest.raises(ValueError, match=r'Labels must be >= 0'):
        inputs.check_label_range(np.array([0.0, -1.0]), 2)
    with pytest.raises(ValueError, match=r'Labels must be <= 2 - 1'):
        inputs.check_label_range(np.array([np.nan]), 2)
    inputs.check_label_range(np.array([0.0, 0.4, 1.0]), 2)
    with pytest.raises(ValueError, match='Cast string to float is not supported'):
        inputs.numeric_labels(np.array(['1'], dtype=object))


def test_array_face_never_imports_tensorflow():
    code = (
        'import sys, numpy as np\n'
        'import heads\n'
        'from heads import metrics\n'
        'hs = [heads.BinaryClassHead(weight_column="w", thresholds=[0.5], name="b"),\n'
        '      heads.RegressionHead(label_dimension=2), heads.PoissonRegressionHead(),\n'
        '      heads.LogisticRegressionHead()]\n'
        'x1 = np.array([[0.5], [-1.0]], np.float32)\n'
        'data = [(np.array([[1], [0]]), x1, {"w": np.array([1.0, 2.0])}),\n'
        '        (np.ones((2, 2)), np.zeros((2, 2), np.float32), None),\n'
        '        (np.array([[1.0], [2.0]]), x1, None), (np.array([[0.2], [0.6]]), x1, None)]\n'
        'for h, (y, x, f) in zip(hs, data):\n'
        '    s = h.new_state().update(y, x, f).merge(h.new_state().update(y, x, f))\n'
        '    s.result(); s.loss(); s.counts(); s.bounds(); s.plots()\n'
        '    h.array_predictions(x); h.array_loss(y, x, f); h.invalid_rows(y, x, f)\n'
        'assert "tensorflow" not in sys.modules, "tensorflow was imported"\n'
        'print("ok")\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'


def test_histogram_sparse_and_dense_storage_agree():
    rng = np.random.default_rng(11)
    labels = rng.random(20000) < 0.4
    p = numerics.sigmoid32(rng.normal(0, 5, 20000))
    small = Histogram().update(labels[:5], p[:5])
    assert small._idx is not None and small._idx.size <= 5  # sparse: 5 entries at most
    assert len(pickle.dumps(small)) < 4 * 1024
    big = Histogram().update(labels[5:], p[5:])
    assert big._idx is None  # dense once a quarter of the entries are used
    whole = Histogram().update(labels, p)
    for merged in (copy.deepcopy(small).merge(big), copy.deepcopy(big).merge(small),
                   pickle.loads(pickle.dumps(big)).merge(pickle.loads(pickle.dumps(small)))):
        np.testing.assert_allclose(merged.pos, whole.pos, rtol=1e-12)
        np.testing.assert_allclose(merged.neg, whole.neg, rtol=1e-12)
        assert merged.auc_bounds() == pytest.approx(whole.auc_bounds(), rel=1e-12, nan_ok=True)
    assert pickle.loads(pickle.dumps(big))._idx is None


def test_state_arrays_round_trip_without_pickle():
    """`state_arrays` / `load_state_arrays` (the watch state file's form): a fresh state filled
    with another's arrays answers exactly as it; sparse and dense histograms alike."""
    import numpy as np
    from heads import metrics as st
    from heads.state import load_state_arrays, state_arrays
    rng = np.random.default_rng(7)
    for n in (6, 200_000):  # few rows: sparse histogram storage; many: dense
        labels = np.arange(n) % 2 == 0  # both classes: the AUC bounds are numbers
        hist = st.Histogram().update(labels, 1 / (1 + np.exp(-4 * rng.normal(size=n))))
        back = load_state_arrays(st.Histogram(), state_arrays(hist))
        assert (back._idx is None) == (hist._idx is None) == (n > 6)
        assert np.array_equal(back.pos, hist.pos) and back.auc_bounds() == hist.auc_bounds()
        assert not np.isnan(hist.auc_bounds()).any()
    mean = st.WeightedMean().update(np.array([1.0, 3.0]))
    arrays = state_arrays(mean)
    assert set(arrays) == {'total', 'count'}
    assert load_state_arrays(st.WeightedMean(), arrays).result() == 2.0
    import pytest
    with pytest.raises(ValueError, match='unknown state entries: evil'):
        load_state_arrays(st.WeightedMean(), dict(arrays, evil=np.zeros(1)))
    with pytest.raises(ValueError, match='total'):
        load_state_arrays(st.WeightedMean(), dict(arrays, total=np.zeros(3)))
