"""Array face of MultiClassHead, MultiLabelHead and MultiHead: losses, metrics, predictions,
invalid rows and mergeable states, against tf.estimator 2.15's numbers.

Golden values are hand derivations written as arithmetic, tf.estimator 2.15 recordings of its
test vectors (ids such as C3 or L7 in the docstrings; inputs and outputs written out), sklearn, or
the slow reference implementations below.
"""
from __future__ import annotations

import math
import pickle
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

import heads
from heads.array import multi_label

from _helpers import reference_keras_auc  # Keras AUC, one threshold at a time

# -------------------------------------------------------------------------------------------------
# Slow, obviously correct references.
# -------------------------------------------------------------------------------------------------


def lse(*xs: float) -> float:
    """log Σ exp(x), written out."""
    return math.log(sum(math.exp(x) for x in xs))


def sce(x: float, z: float) -> float:
    """Sigmoid cross-entropy −z·log σ(x) − (1−z)·log(1−σ(x)), in a form that does not overflow."""
    return max(x, 0.0) - x * z + math.log1p(math.exp(-abs(x)))


def sigmoid32(x):
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)


def assert_metrics(actual: dict, expected: dict, rtol=1e-6, atol=1e-6):
    assert sorted(actual) == sorted(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(actual[k], v, rtol=rtol, atol=atol, err_msg=k)


def one_batch(head, labels, logits, features=None):
    return head.new_state().update(labels, logits, features)


# -------------------------------------------------------------------------------------------------
# MultiClassHead (vectors C1–C9).
# -------------------------------------------------------------------------------------------------

C_LOGITS = np.array([[10, 0, 0], [0, 10, 0]], np.float32)
C_U0 = lse(10, 0, 0) - 0    # label 1, its logit 0
C_U1 = lse(0, 10, 0) - 10   # label 1, its logit 10


def test_multi_class_unweighted_eval_matches_tf_estimator():
    """Vector C1."""
    state = one_batch(heads.MultiClassHead(3), np.array([[1], [1]]), C_LOGITS, {})
    assert state.loss() == pytest.approx((C_U0 + C_U1) / 2, rel=1e-9)
    # Row 0 predicts class 0 (wrong), row 1 class 1 (right).
    assert_metrics(state.result(), {'average_loss': (C_U0 + C_U1) / 2, 'accuracy': 1 / 2})
    assert state.counts() == (2, 2.0)


@pytest.mark.parametrize('labels,weights', [
    (np.array([[1], [2], [2]]), np.array([[1.], [2.], [3.]])),   # C3
    (np.array([1, 2, 2]), np.array([1., 2., 3.])),               # C8: rank-1 labels and weights
])
def test_multi_class_weighted_loss_is_not_a_weighted_mean(labels, weights):
    """Vectors C3, C8 (rank-1 labels and weights)."""
    head = heads.MultiClassHead(3, weight_column='label_weights', name='topic')
    logits = np.array([[10, 0, 0], [0, 10, 0], [0, 0, 10]], np.float32)
    u = [lse(10, 0, 0) - 0, lse(0, 10, 0) - 0, lse(0, 0, 10) - 10]
    state = one_batch(head, labels, logits, {'label_weights': weights})
    # sum_over_batch_size: Σ w·U / 3 examples; average_loss: Σ w·U / Σ w.
    assert state.loss() == pytest.approx((1 * u[0] + 2 * u[1] + 3 * u[2]) / 3, rel=1e-9)
    assert_metrics(state.result(), {'average_loss/topic': (1 * u[0] + 2 * u[1] + 3 * u[2]) / 6,
                                    'accuracy/topic': 3 / 6})
    assert state.counts() == (3, 6.0)
    np.testing.assert_allclose(head.array_loss(labels, logits, {'label_weights': weights}),
                               [[1 * u[0]], [2 * u[1]], [3 * u[2]]], rtol=1e-9)


def test_multi_class_rank3_logits_with_weights_match_tf_estimator():
    """Vector C4."""
    head = heads.MultiClassHead(3, weight_column='weights')
    logits = np.array([[[10, 0, 0], [12, 0, 0]], [[0, 10, 0], [0, 15, 0]]], np.float32)
    labels = np.array([[[0], [1]], [[1], [2]]])
    w = np.array([[1., 1.5], [2., 2.5]])
    u = [lse(10, 0, 0) - 10, lse(12, 0, 0) - 0, lse(0, 10, 0) - 10, lse(0, 15, 0) - 0]
    wu = 1 * u[0] + 1.5 * u[1] + 2 * u[2] + 2.5 * u[3]
    state = one_batch(head, labels, logits, {'weights': w})
    assert state.loss() == pytest.approx(wu / 4, rel=1e-9)   # 13.875 in tf.estimator (tol 1e-2)
    assert_metrics(state.result(), {'average_loss': wu / 7, 'accuracy': (1 + 2) / 7})


def test_multi_class_sum_reduction_and_custom_loss_fn():
    """Vectors C5, C9."""
    state = one_batch(heads.MultiClassHead(3, loss_reduction='sum'), np.array([[1], [1]]),
                      C_LOGITS)
    assert state.loss() == pytest.approx(C_U0 + C_U1, rel=1e-9)

    def constant_loss(labels, logits):
        assert labels.dtype == np.int64 and labels.shape == (2, 1)
        return np.array([[1.], [2.]])
    head = heads.MultiClassHead(3, loss_fn=constant_loss)
    logits = np.array([[-10., 10., 0.], [-15., 10., 0]], np.float32)
    state = one_batch(head, np.array([[1], [2]]), logits)
    assert state.loss() == pytest.approx(1.5)
    assert_metrics(state.result(), {'average_loss': 1.5, 'accuracy': 0.5})


@pytest.mark.parametrize('labels', [
    np.array([[b'iroh'], [b'iroh']]), np.array([['iroh'], ['iroh']]),
    np.array(['iroh', 'iroh'], dtype=object), pa.array(['iroh', 'iroh'])])
def test_multi_class_vocabulary_labels_in_every_string_form(labels):
    """Vector C7."""
    head = heads.MultiClassHead(3, label_vocabulary=['aang', 'iroh', 'zuko'])
    state = one_batch(head, labels, C_LOGITS)
    assert state.loss() == pytest.approx((C_U0 + C_U1) / 2, rel=1e-9)
    assert state.result()['accuracy'] == 0.5


def test_multi_class_predictions_with_and_without_vocabulary():
    """Vectors C2, C7."""
    logits = np.array([[1., 0., 0.], [0., 0., 1.]], np.float32)
    p = heads.MultiClassHead(3).array_predictions(logits)
    assert list(p) == ['logits', 'probabilities', 'class_ids', 'classes', 'all_class_ids',
                       'all_classes']
    e = math.e
    np.testing.assert_allclose(p['probabilities'], [[e / (e + 2), 1 / (e + 2), 1 / (e + 2)],
                                                    [1 / (e + 2), 1 / (e + 2), e / (e + 2)]],
                               rtol=1e-6)
    assert p['probabilities'].dtype == np.float32
    assert p['class_ids'].tolist() == [[0], [2]] and p['class_ids'].dtype == np.int64
    assert p['classes'].tolist() == [['0'], ['2']]
    assert p['all_class_ids'].tolist() == [[0, 1, 2]] * 2 and p['all_class_ids'].dtype == np.int32
    assert p['all_classes'].tolist() == [['0', '1', '2']] * 2
    v = heads.MultiClassHead(3, label_vocabulary=['aang', 'iroh', 'zuko']).array_predictions(
        logits, keys=['classes', 'all_classes'])
    assert sorted(v) == ['all_classes', 'classes']
    assert v['classes'].tolist() == [['aang'], ['zuko']]
    assert v['all_classes'].tolist() == [['aang', 'iroh', 'zuko']] * 2
    with pytest.raises(ValueError, match='Prediction key must be in PredictionKeys, given: '
                                         'some_invalid_key'):
        heads.MultiClassHead(3).array_predictions(logits, ['some_invalid_key'])


def test_multi_class_nan_logits():
    head = heads.MultiClassHead(3)
    logits = np.array([[np.nan, 1., 0.], [0., np.nan, 2.], [np.nan] * 3, [1., 0., 0.]], np.float32)
    # tf.argmax on CPU (TF 2.21, checked): NaN never wins a row; an all-NaN row gives 0.
    p = head.array_predictions(logits, ['class_ids'])
    assert p['class_ids'].tolist() == [[1], [2], [0], [0]]
    state = one_batch(head, np.array([1, 2, 0, 1]), logits)
    assert math.isnan(state.loss()) and math.isnan(state.result()['average_loss'])
    assert state.result()['accuracy'] == 3 / 4
    rows = head.invalid_rows(np.array([1, 2, 0, 1]), logits)
    assert [(r, k.tolist()) for r, _, k in rows] == [('logits', [True, True, True, False])]


def test_multi_class_label_errors():
    head = heads.MultiClassHead(3)
    logits = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"Labels dtype should be integer. Instead got "
                                         r"<dtype: 'float32'>\."):
        head.new_state().update(np.array([[1.], [1.]], np.float32), logits)
    with pytest.raises(ValueError, match='Labels must be <= 3 - 1'):
        head.new_state().update(np.array([[45], [1]]), logits)
    with pytest.raises(ValueError, match='Labels must be >= 0'):
        head.array_loss(np.array([[-5], [1]]), logits)
    with pytest.raises(ValueError, match="Labels dtype should be string if there is a vocabulary. "
                                         "Instead got <dtype: 'int64'>"):
        heads.MultiClassHead(3, label_vocabulary=['a', 'b', 'c']).array_loss(
            np.array([[1], [2]]), logits)
    with pytest.raises(ValueError, match='labels shape must be'):
        head.array_loss(np.array([[1], [1], [1]]), logits)
    with pytest.raises(ValueError, match='logits shape must be'):
        head.array_loss(np.array([[1], [1]]), np.zeros((2, 4)))


def test_multi_class_invalid_rows():
    head = heads.MultiClassHead(3, weight_column='w')
    logits = np.array([[0, 1, 2], [np.nan, 0, 0], [1, 1, 1], [0, 0, 0], [1, 2, 3]], np.float32)
    labels = np.array([[0], [1], [3], [-1], [2]])
    w = np.array([1., 1., 1., 1., np.inf])
    got = {(role, reason): mask.tolist() for role, reason, mask in
           head.invalid_rows(labels, logits, {'w': w})}
    assert got == {
        ('logits', 'Logits must be finite (NaN or infinite logits give NaN losses and metrics)'):
            [False, True, False, False, False],
        ('w', 'Weights must be finite'): [False, False, False, False, True],
        ('labels', 'Labels must be <= 3 - 1'): [False, False, True, False, False],
        ('labels', 'Labels must be >= 0'): [False, False, False, True, False]}
    # Unknown vocabulary strings are looked up as −1: "Labels must be >= 0", as the TF face says.
    vocab = heads.MultiClassHead(3, label_vocabulary=['a', 'b', 'c'])
    rows = vocab.invalid_rows(np.array(['a', 'zz', 'c']), np.zeros((3, 3)))
    assert [(r, m, k.tolist()) for r, m, k in rows] == [
        ('labels', 'Labels must be >= 0', [False, True, False])]
    with pytest.raises(ValueError, match='Labels must be >= 0'):
        vocab.new_state().update(np.array(['a', 'zz', 'c']), np.zeros((3, 3)))
    # Whole-batch problems mark every row instead of raising.
    rows = head.invalid_rows(np.array([[1.], [2.]]), np.zeros((2, 3)), {'w': np.ones(2)})
    assert [(r, k.tolist()) for r, _, k in rows] == [('labels', [True, True])]
    assert 'Labels dtype should be integer' in rows[0][1]
    rows = head.invalid_rows(np.array([[1], [2]]), np.zeros((2, 3)), {})
    assert [(r, m, k.tolist()) for r, m, k in rows] == [
        ('w', 'Feature w is not in features dictionary.', [True, True])]
    assert head.invalid_rows(np.array([[1], [2]]), np.zeros((2, 3)), {'w': np.ones(2)}) == []


# -------------------------------------------------------------------------------------------------
# MultiLabelHead (vectors L1–L10, E3, E7).
# -------------------------------------------------------------------------------------------------

L_LOGITS = np.array([[-1., 1.], [-1.5, 1.5]], np.float32)
L_LABELS = np.array([[1, 0], [1, 1]], np.int64)
L1_LOSS = ((sce(-1, 1) + sce(1, 0)) / 2 + (sce(-1.5, 1) + sce(1.5, 1)) / 2) / 2  # 1.1323375
L1_AUC, L1_AUC_PR = 0.3333333, 0.7689509   # tf.estimator 2.15 (multi_label_head_test.test_eval)


@pytest.mark.parametrize('labels', [
    L_LABELS,                                          # dense multi-hot
    L_LABELS.astype(np.float32),
    [[0], [0, 1]],                                     # per-row class ids (SparseTensor labels)
    np.array([np.array([0]), np.array([1, 0, 1])], dtype=object),  # duplicate ids collapse
    pa.array([[0], [0, 1]]),
    pa.chunked_array([[[0]], [[0, 1]]]),
    pa.array([[0], [0, 1]], type=pa.large_list(pa.int32())),
    pa.array([[1], [0], [0, 1]]).slice(1),             # a slice: offsets do not start at 0
], ids=['dense', 'dense-float', 'lists', 'object', 'arrow', 'chunked', 'large-list', 'slice'])
def test_multi_label_multi_hot_and_id_list_labels_agree(labels):
    """Vector L1."""
    state = one_batch(heads.MultiLabelHead(2), labels, L_LOGITS, {'x': np.array([[41], [42]])})
    assert state.loss() == pytest.approx(L1_LOSS, rel=1e-9)
    assert_metrics(state.result(), {'average_loss': L1_LOSS, 'auc': L1_AUC,
                                    'auc_precision_recall': L1_AUC_PR})


@pytest.mark.parametrize('labels', [
    [['class0'], ['class0', 'class1']], pa.array([['class0'], [b'class0', b'class1']]),
    pa.ListArray.from_arrays(pa.array([0, 1, 3]),
                             pa.array(['class0', 'class0', 'class1']).dictionary_encode()),
    np.array([['class0', 'class0'], ['class0', 'class1']])])
def test_multi_label_vocabulary_names_as_labels_and_metric_classes(labels):
    """Vectors L1, L3s."""
    head = heads.MultiLabelHead(2, label_vocabulary=['class0', 'class1'],
                                classes_for_class_based_metrics=['class0', 'class1'])
    state = one_batch(head, labels, L_LOGITS)
    assert state.loss() == pytest.approx(L1_LOSS, rel=1e-9)
    assert_metrics(state.result(), {
        'average_loss': L1_LOSS, 'auc': L1_AUC, 'auc_precision_recall': L1_AUC_PR,
        'probability_mean/class0': (sigmoid32(-1.) + sigmoid32(-1.5)) / 2,
        'auc/class0': 0.0, 'auc_precision_recall/class0': 1.0,   # class 0 has no negatives
        'probability_mean/class1': (sigmoid32(1.) + sigmoid32(1.5)) / 2,
        'auc/class1': 1.0, 'auc_precision_recall/class1': 1.0})


def test_multi_label_threshold_and_per_class_metrics():
    """Vectors L2, L3."""
    head = heads.MultiLabelHead(2, thresholds=[0.25, 0.5, 0.75],
                                classes_for_class_based_metrics=[0, 1], name='tags')
    # σ: row 0 (0.269, 0.731), row 1 (0.182, 0.818); labels (1, 0), (1, 1).
    expected = {
        'average_loss/tags': L1_LOSS, 'auc/tags': L1_AUC, 'auc_precision_recall/tags': L1_AUC_PR,
        # t = 0.25: predictions (1, 1), (0, 1): row accuracy 1/2, 1/2; TP 2, FP 1, FN 1.
        'accuracy/positive_threshold_0.25/tags': (1 / 2 + 1 / 2) / 2,
        'precision/positive_threshold_0.25/tags': 2 / 3,
        'recall/positive_threshold_0.25/tags': 2 / 3,
        # t = 0.5: predictions (0, 1), (0, 1): row accuracy 0, 1/2; TP 1, FP 1, FN 2.
        'accuracy/positive_threshold_0.5/tags': (0 + 1 / 2) / 2,
        'precision/positive_threshold_0.5/tags': 1 / 2, 'recall/positive_threshold_0.5/tags': 1 / 3,
        # t = 0.75: predictions (0, 0), (0, 1): row accuracy 1/2, 1/2; TP 1, FP 0, FN 2.
        'accuracy/positive_threshold_0.75/tags': 1 / 2,
        'precision/positive_threshold_0.75/tags': 1.0, 'recall/positive_threshold_0.75/tags': 1 / 3,
        'probability_mean/class0/tags': (sigmoid32(-1.) + sigmoid32(-1.5)) / 2,
        'auc/class0/tags': 0.0, 'auc_precision_recall/class0/tags': 1.0,
        'probability_mean/class1/tags': (sigmoid32(1.) + sigmoid32(1.5)) / 2,
        'auc/class1/tags': 1.0, 'auc_precision_recall/class1/tags': 1.0}
    assert_metrics(one_batch(head, L_LABELS, L_LOGITS).result(), expected)


L4_LOGITS = np.array([[-10., 10.], [-15., 10.]], np.float32)
L4_U = [(sce(-10, 1) + sce(10, 0)) / 2, (sce(-15, 1) + sce(10, 1)) / 2]


def test_multi_label_weights_and_reductions_match_tf_estimator():
    """Vectors L4–L6."""
    w = {'example_weights': np.array([[1.], [2.]])}
    state = one_batch(heads.MultiLabelHead(2, weight_column='example_weights'), L_LABELS,
                      L4_LOGITS, w)
    assert state.loss() == pytest.approx((1 * L4_U[0] + 2 * L4_U[1]) / 2, rel=1e-9)  # 12.5000456
    # auc and auc_pr: tf.estimator 2.15 (test_eval_with_weights).
    assert_metrics(state.result(), {'average_loss': (1 * L4_U[0] + 2 * L4_U[1]) / 3,
                                    'auc': 0.2, 'auc_precision_recall': 0.7280372})
    state = one_batch(heads.MultiLabelHead(2), L_LABELS, L4_LOGITS)
    assert state.loss() == pytest.approx((L4_U[0] + L4_U[1]) / 2, rel=1e-9)  # L5: 8.7500341
    state = one_batch(heads.MultiLabelHead(2, weight_column='example_weights',
                                           loss_reduction='sum'), L_LABELS, L4_LOGITS, w)
    assert state.loss() == pytest.approx(1 * L4_U[0] + 2 * L4_U[1], rel=1e-9)  # L6: 25.0000911


def test_multi_label_rank3_logits_match_tf_estimator():
    """Vector L7."""
    head = heads.MultiLabelHead(3, weight_column='weights')
    logits = np.array([[[-10., 10., -10.], [10., -10., 10.]],
                       [[-12., 12., -12.], [12., -12., 12.]]], np.float32)
    labels = np.array([[[1, 0, 0], [1, 0, 0]], [[0, 1, 1], [0, 1, 1]]])
    w = np.array([[1., 1.5], [2., 2.5]])
    state = one_batch(head, labels, logits, {'weights': w})
    u = [np.mean([sce(x, z) for x, z in zip(lg, lb)])
         for lg, lb in zip(logits.reshape(4, 3).tolist(), labels.reshape(4, 3).tolist())]
    wu = float(np.dot(w.reshape(-1), u))
    assert state.loss() == pytest.approx(wu / 4, rel=1e-9)   # 9.9167020
    assert_metrics(state.result(), {'average_loss': wu / 7, 'auc': 0.4977117,
                                    'auc_precision_recall': 0.5460822})   # tf.estimator 2.15


def test_multi_label_loss_fn_receives_multi_hot_labels():
    """Vector L10."""
    seen = []

    def constant_loss(labels, logits, features):
        seen.append((labels.tolist(), labels.dtype, sorted(features)))
        return np.array([[1.], [2.]])
    head = heads.MultiLabelHead(2, loss_fn=constant_loss)
    assert one_batch(head, [[0], [0, 1]], L4_LOGITS, {'x': np.ones(2)}).loss() == 1.5
    assert seen == [([[1, 0], [1, 1]], np.int64, ['x'])]


def test_multi_label_soft_labels_and_duplicate_ids():
    """Vector E7."""
    state = one_batch(heads.MultiLabelHead(2), np.array([[0.5, 0.]]), np.array([[1., -1.]]))
    assert state.loss() == pytest.approx((sce(1, 0.5) + sce(-1, 0)) / 2, rel=1e-9)  # 0.5632617
    assert state.result()['auc'] == pytest.approx(1.0)   # 0.5 is a positive for AUC
    assert state.result()['auc_precision_recall'] == pytest.approx(1.0)
    state = one_batch(heads.MultiLabelHead(3), [[1, 1]], np.array([[1., -1., 0.]]))
    assert state.loss() == pytest.approx((sce(1, 0) + sce(-1, 1) + sce(0, 0)) / 3, rel=1e-9)
    assert state.result()['auc'] == 0.0
    assert state.result()['auc_precision_recall'] == pytest.approx(0.1890698, rel=1e-6)  # recorded


def test_multi_label_nan_logits_count_as_predicted_negative():
    """Vector E3."""
    head = heads.MultiLabelHead(2)
    logits = np.array([[np.nan, 1.], [1., -1.]])
    labels = np.array([[1, 0], [0, 1]])
    state = one_batch(head, labels, logits)
    assert math.isnan(state.loss()) and math.isnan(state.result()['average_loss'])
    # tf.estimator 2.15 (probe): the NaN score counts as predicted negative at every threshold.
    assert state.result()['auc'] == 0.0
    assert state.result()['auc_precision_recall'] == pytest.approx(0.0945349, rel=1e-6)
    rows = head.invalid_rows(labels, logits)
    assert [(r, k.tolist()) for r, _, k in rows] == [('logits', [True, False])]


def test_multi_label_predictions_list_every_class():
    """Vector L8."""
    logits = np.array([[0., 1., 2., -1.], [-1., -2., -3., 1.]], np.float32)
    p = heads.MultiLabelHead(4).array_predictions(logits)
    assert list(p) == ['logits', 'probabilities', 'classes']
    np.testing.assert_allclose(p['probabilities'], 1 / (1 + np.exp(-logits.astype(np.float64))),
                               rtol=1e-6)
    assert p['classes'].tolist() == [['0', '1', '2', '3']] * 2
    v = heads.MultiLabelHead(4, label_vocabulary=['foo', 'bar', 'foobar', 'barfoo'])
    assert v.array_predictions(logits, ['classes'])['classes'].tolist() == [
        ['foo', 'bar', 'foobar', 'barfoo']] * 2
    with pytest.raises(ValueError, match='Prediction key must be in PredictionKeys'):
        v.array_predictions(logits, ['class_ids'])


def test_multi_label_label_errors_and_invalid_rows():
    head = heads.MultiLabelHead(2)
    lg = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r'labels must be an integer indicator Tensor with values '
                                         r'in \[0, 1\]'):
        head.new_state().update(np.array([[2, 0], [1, 1], [0, 0]]), lg)
    with pytest.raises(ValueError, match=r'labels must be an integer SparseTensor with values in '
                                         r'\[0, 2\)'):
        head.array_loss([[2, 0], [1], []], lg)
    with pytest.raises(ValueError, match='Expected labels dimension=2'):
        head.array_loss(np.array([[1], [1], [0]]), lg)
    with pytest.raises(ValueError, match="Labels dtype should be integer. Instead got "
                                         "<dtype: 'float64'>."):
        head.array_loss([[0.5], [1.0], []], lg)
    with pytest.raises(ValueError, match='String labels need a label_vocabulary'):
        head.array_loss([['a'], [], []], lg)

    rows = head.invalid_rows(np.array([[2, 0], [1, 1], [np.nan, 0]]), lg)
    assert [(r, m, k.tolist()) for r, m, k in rows] == [
        ('labels', multi_label.LABELS_NOT_INDICATOR, [True, False, True])]
    rows = head.invalid_rows(pa.array([[0], [5, 1], [-1]]), lg)
    assert [(r, m, k.tolist()) for r, m, k in rows] == [
        ('labels', 'labels must be an integer SparseTensor with values in [0, 2)',
         [False, True, True])]
    vocab = heads.MultiLabelHead(2, label_vocabulary=['a', 'b'])
    rows = vocab.invalid_rows([['a'], ['b', 'zz'], []], lg)
    assert [(r, m, k.tolist()) for r, m, k in rows] == [
        ('labels', multi_label.LABELS_UNKNOWN_NAME, [False, True, False])]
    with pytest.raises(ValueError, match='Indices are not valid'):
        vocab.new_state().update([['a'], ['b', 'zz'], []], lg)
    assert vocab.invalid_rows([['a'], ['b', 'a'], []], lg) == []
    rows = head.invalid_rows(np.array([[1], [1], [0]]), lg)
    assert [(r, k.tolist()) for r, _, k in rows] == [('labels', [True, True, True])]


def test_multi_label_random_data_against_reference():
    rng = np.random.default_rng(11)
    n, k = 60, 4
    logits = rng.normal(-0.5, 2, (n, k)).astype(np.float32)
    labels = (rng.random((n, k)) < 0.4).astype(np.int64)
    # Weight features are float32 in tf.estimator; the reference uses the same float32 values.
    w = rng.uniform(0, 2, n).astype(np.float32).astype(np.float64)
    head = heads.MultiLabelHead(k, weight_column='w', thresholds=[0.3, 0.7],
                                classes_for_class_based_metrics=[1, 3])
    state = one_batch(head, labels, logits, {'w': w})
    p = sigmoid32(logits).astype(np.float64)
    u = [np.mean([sce(float(x), float(z)) for x, z in zip(lr, yr)])
         for lr, yr in zip(logits, labels)]
    expected = {'average_loss': np.dot(w, u) / w.sum()}
    flat_w = np.repeat(w, k)
    expected['auc'], expected['auc_precision_recall'] = reference_keras_auc(
        labels.reshape(-1), p.reshape(-1), flat_w)
    for t in (0.3, 0.7):
        pred = p > t
        expected['accuracy/positive_threshold_%g' % t] = np.dot(
            w, (pred == labels).mean(axis=1)) / w.sum()
        tp = np.sum(flat_w * (pred & (labels == 1)).reshape(-1))
        expected['precision/positive_threshold_%g' % t] = tp / np.sum(flat_w * pred.reshape(-1))
        expected['recall/positive_threshold_%g' % t] = tp / np.sum(flat_w * labels.reshape(-1))
    for c in (1, 3):
        expected['probability_mean/class%d' % c] = np.dot(w, p[:, c]) / w.sum()
        expected['auc/class%d' % c], expected['auc_precision_recall/class%d' % c] = reference_keras_auc(
            labels[:, c], p[:, c], w)
    assert_metrics(state.result(), expected, rtol=1e-6)
    assert state.loss() == pytest.approx(np.dot(w, u) / n, rel=1e-9)

    # The bounds contain sklearn's exact weighted ROC AUC (ties ½), pooled and per class.
    from sklearn.metrics import roc_auc_score
    bounds = state.bounds()
    assert sorted(bounds) == ['auc', 'auc/class1', 'auc/class3']
    exact = {'auc': roc_auc_score(labels.reshape(-1), p.reshape(-1), sample_weight=flat_w)}
    for c in (1, 3):
        exact['auc/class%d' % c] = roc_auc_score(labels[:, c], p[:, c], sample_weight=w)
    for key, value in exact.items():
        lo, hi = bounds[key]
        assert lo <= value <= hi and hi - lo < 0.01, key

    plots = state.plots()
    assert sorted(set(plots['sub_key'])) == ['', 'classId:1', 'classId:3']
    assert set(plots['curve']) == {'confusion', 'calibration'}
    pooled = (plots['sub_key'] == '') & (plots['curve'] == 'calibration')
    np.testing.assert_allclose(plots['weighted_examples'][pooled].sum(), flat_w.sum())
    np.testing.assert_allclose(plots['weighted_labels'][pooled].sum(),
                               np.dot(flat_w, labels.reshape(-1)))


# -------------------------------------------------------------------------------------------------
# MultiHead (vectors M1, M2, seed example).
# -------------------------------------------------------------------------------------------------

def _m_heads(**kw):
    return [heads.MultiLabelHead(2, name='head1', **kw.get('h1', {})),
            heads.MultiLabelHead(3, name='head2', **kw.get('h2', {}))]


M_LOGITS = {'head1': np.array([[-10., 10.], [-15., 10.]], np.float32),
            'head2': np.array([[20., -20., 20.], [-30., 20., -20.]], np.float32)}
M_LABELS = {'head1': np.array([[1, 0], [1, 1]]), 'head2': np.array([[0, 1, 0], [1, 1, 0]])}
M_U2 = [(sce(20, 0) + sce(-20, 1) + sce(20, 0)) / 3, (sce(-30, 1) + sce(20, 1) + sce(-20, 0)) / 3]


def test_multi_head_eval_with_head_weights_matches_tf_estimator():
    """Vector M1."""
    mh = heads.MultiHead(_m_heads(), head_weights=[1., 2.])
    state = mh.new_state().update(M_LABELS, M_LOGITS, {})
    loss1, loss2 = (L4_U[0] + L4_U[1]) / 2, (M_U2[0] + M_U2[1]) / 2   # 8.75, 15.0
    assert state.loss() == pytest.approx(1 * loss1 + 2 * loss2, rel=1e-9)   # 38.75
    # auc and auc_pr: tf.estimator 2.15 (multi_head_test.test_eval_two_heads_with_weights).
    assert_metrics(state.result(), {
        'loss/head1': loss1, 'loss/head2': loss2, 'average_loss/head1': loss1,
        'average_loss/head2': loss2, 'auc/head1': 0.1666667, 'auc/head2': 0.3333333,
        'auc_precision_recall/head1': 0.60228, 'auc_precision_recall/head2': 0.40152},
        rtol=1e-4)
    assert sorted(state.bounds()) == ['auc/head1', 'auc/head2']
    assert state.counts() == (2, 2.0)
    per_example = mh.array_loss(M_LABELS, M_LOGITS)
    np.testing.assert_allclose(per_example, [[L4_U[0] + 2 * M_U2[0]], [L4_U[1] + 2 * M_U2[1]]],
                               rtol=1e-9)


def test_multi_head_weight_columns_with_dict_or_concatenated_logits():
    """Vector M2."""
    mh = heads.MultiHead(_m_heads(h1={'weight_column': 'weights1'},
                                  h2={'weight_column': 'weights2'}), head_weights=[1., 2.])
    features = {'weights1': np.array([[1.], [2.]]), 'weights2': np.array([[2.], [3.]])}
    expected = (1 * L4_U[0] + 2 * L4_U[1]) / 2 + 2 * (2 * M_U2[0] + 3 * M_U2[1]) / 2   # 82.5
    joined = np.concatenate([M_LOGITS['head1'], M_LOGITS['head2']], axis=-1)
    for logits in (M_LOGITS, joined):
        assert mh.new_state().update(M_LABELS, logits, features).loss() == pytest.approx(
            expected, rel=1e-9)
    preds = mh.array_predictions(joined)
    assert sorted(preds) == sorted((h, k) for h in ('head1', 'head2')
                                   for k in ('logits', 'probabilities', 'classes'))
    np.testing.assert_array_equal(preds[('head2', 'logits')], M_LOGITS['head2'])


def test_multi_head_splits_rank3_logits_between_regression_heads():
    """Vector M3."""
    mh = heads.MultiHead([heads.RegressionHead(label_dimension=2, name='head1'),
                          heads.RegressionHead(label_dimension=3, name='head2')])
    logits = np.array([[[-1., 1., 2., -2., 2.], [-1., 1., 2., -2., 2.]],
                       [[-1.5, 1.5, -2., 2., -2.], [-1.5, 1.5, -2., 2., -2.]]], np.float32)
    labels = {'head1': np.array([[[1., 0.], [1., 0.]], [[1.5, 1.5], [1.5, 1.5]]]),
              'head2': np.array([[[0., 1., 0.], [0., 1., 0.]], [[2., 2., 0.], [2., 2., 0.]]])}
    # head1: squared errors (4 + 1)·2 + (9 + 0)·2 = 28 over 4·2 elements; head2: (4 + 9 + 4)·2 +
    # (16 + 0 + 4)·2 = 74 over 4·3 elements.
    expected = 28 / 8 + 74 / 12   # 9.6666667
    assert mh.new_state().update(labels, logits).loss() == pytest.approx(expected, rel=1e-9)
    per_example = mh.array_loss(labels, logits)
    assert per_example.shape == (2, 2, 1)
    assert per_example.mean() == pytest.approx(expected, rel=1e-9)
    preds = mh.array_predictions(logits)
    np.testing.assert_array_equal(preds[('head1', 'predictions')], logits[..., :2])
    np.testing.assert_array_equal(preds[('head2', 'predictions')], logits[..., 2:])


def test_multi_head_errors():
    mh = heads.MultiHead(_m_heads())
    # tf.estimator's text swaps the two sizes: 6 is the actual one, 5 the expected one.
    with pytest.raises(ValueError, match=(
            r'Could not split logits of shape \[2, 6\] among the heads with individual logits '
            r'dimensions: \[2, 3\]. The last dimension of the logits tensor should equal 6 but '
            r'is 5.')):
        mh.new_state().update(M_LABELS, np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"logits has missing values for head\(s\): \['head2'\]"):
        mh.array_loss(M_LABELS, {'head1': M_LOGITS['head1']})
    with pytest.raises(ValueError, match='labels must be a dict'):
        mh.new_state().update(np.zeros((2, 5)), M_LOGITS)
    with pytest.raises(ValueError, match=r"labels has missing values for head\(s\): \['head1'\]"):
        mh.new_state().update({'head2': M_LABELS['head2']}, M_LOGITS)
    # A batch one head rejects leaves the whole state unchanged.
    state = mh.new_state().update(M_LABELS, M_LOGITS)
    before = state.result()
    with pytest.raises(ValueError, match='indicator'):
        state.update({'head1': M_LABELS['head1'], 'head2': np.full((2, 3), 2)}, M_LOGITS)
    assert state.result() == before and state.counts() == (2, 2.0)
    rows = mh.invalid_rows({'head1': M_LABELS['head1'], 'head2': np.array([[0, 1, 0], [2, 0, 0]])},
                           M_LOGITS)
    assert [(r, k.tolist()) for r, _, k in rows] == [('labels', [False, True])]
    assert [k.tolist() for _, _, k in mh.invalid_rows(M_LABELS, np.zeros((2, 4)))] == [[True, True]]


def test_multi_head_accumulates_every_head_over_all_batches():
    """Dataset semantics: two batches give the metrics of one concatenated batch (tf.estimator's
    eager update_metrics kept only the last batch's per-head metrics)."""
    mh = heads.MultiHead([heads.MultiClassHead(3, name='a'), heads.MultiLabelHead(2, name='b')])
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 2, (10, 5)).astype(np.float32)
    labels = {'a': rng.integers(0, 3, (10, 1)), 'b': rng.integers(0, 2, (10, 2))}
    whole = mh.new_state().update(labels, logits)
    parts = mh.new_state()
    for s in (slice(0, 4), slice(4, 10)):
        parts.update({k: v[s] for k, v in labels.items()}, logits[s])
    assert_metrics(parts.result(), whole.result(), rtol=1e-12, atol=1e-12)
    a = heads.MultiClassHead(3, name='a').new_state().update(labels['a'], logits[:, :3])
    assert parts.result()['accuracy/a'] == a.result()['accuracy/a']
    assert parts.result()['loss/a'] == pytest.approx(a.loss(), rel=1e-12)
    assert parts.loss() == pytest.approx(whole.loss(), rel=1e-12)
    assert set(parts.plots()['sub_key']) == {'b'}


# -------------------------------------------------------------------------------------------------
# The seed examples, printed to two decimals as the seed pages print them.
# -------------------------------------------------------------------------------------------------

def test_seed_examples_on_the_array_face():
    head = heads.MultiLabelHead(2)
    features = {'x': np.array([[41], [42]], dtype=np.int32)}
    state = one_batch(head, L_LABELS, L_LOGITS, features)
    out = ['{:.2f}'.format(state.loss())]
    out += ['{} : {:.2f}'.format(k, v) for k, v in sorted(state.result().items())]
    assert out == ['1.13', 'auc : 0.33', 'auc_precision_recall : 0.77', 'average_loss : 1.13']

    mh = heads.MultiHead([heads.MultiLabelHead(n_classes=2, name='head1'),
                          heads.MultiLabelHead(n_classes=3, name='head2')])
    state = mh.new_state().update(M_LABELS, M_LOGITS, {'x': np.array(((42,),), np.float32)})
    out = ['{:.2f}'.format(state.loss())]
    out += ['{} : {:.2f}'.format(k, v) for k, v in sorted(state.result().items())]
    out.append(str(np.asarray(mh.array_predictions(M_LOGITS)[('head1', 'logits')]).tolist()))
    assert out == ['23.75', 'auc/head1 : 0.17', 'auc/head2 : 0.33',
                   'auc_precision_recall/head1 : 0.60', 'auc_precision_recall/head2 : 0.40',
                   'average_loss/head1 : 8.75', 'average_loss/head2 : 15.00', 'loss/head1 : 8.75',
                   'loss/head2 : 15.00', '[[-10.0, 10.0], [-15.0, 10.0]]']


# -------------------------------------------------------------------------------------------------
# Degenerate cases.
# -------------------------------------------------------------------------------------------------

def _all_heads():
    return [heads.MultiClassHead(3, weight_column='w', name='c'),
            heads.MultiLabelHead(3, weight_column='w', thresholds=[0.5],
                                 classes_for_class_based_metrics=[2], name='l'),
            heads.MultiHead([heads.MultiClassHead(3, name='c'),
                             heads.MultiLabelHead(2, name='l')], head_weights=[1., 3.])]


@pytest.mark.parametrize('head', _all_heads(), ids=['class', 'label', 'multi'])
def test_empty_state_and_empty_batch(head):
    d = head.logits_dimension
    if isinstance(head, heads.MultiHead):
        empty_labels = {'c': np.zeros((0, 1), np.int64), 'l': np.zeros((0, 2), np.int64)}
    elif isinstance(head, heads.MultiClassHead):
        empty_labels = np.zeros((0, 1), np.int64)
    else:
        empty_labels = np.zeros((0, 3), np.int64)
    fresh = head.new_state()
    batch = head.new_state().update(empty_labels, np.zeros((0, d), np.float32),
                                    {'w': np.zeros(0)})
    for state in (fresh, batch):
        # Every metric is div_no_nan of empty sums: 0, as tf.estimator on an empty batch (E1).
        assert state.result() and all(v == 0.0 for v in state.result().values())
        assert state.loss() == 0.0 and state.counts() == (0, 0.0)
        assert all(np.isnan(b).all() for b in state.bounds().values())  # no AUC: no interval
    assert sorted(fresh.result()) == sorted(batch.result())


def test_zero_weights_and_a_class_without_positives():
    logits = np.array([[1., -2., 0.5], [0.3, 0.2, -1.]], np.float32)
    w = {'w': np.zeros(2)}
    c = one_batch(heads.MultiClassHead(3, weight_column='w'), np.array([0, 2]), logits, w)
    assert c.loss() == 0.0 and c.result() == {'average_loss': 0.0, 'accuracy': 0.0}
    assert c.counts() == (2, 0.0)
    head = heads.MultiLabelHead(3, weight_column='w', thresholds=[0.5],
                                classes_for_class_based_metrics=[0, 1])
    z = one_batch(head, np.array([[1, 0, 1], [0, 0, 1]]), logits, w)
    assert z.loss() == 0.0 and all(v == 0.0 for v in z.result().values())
    # Class 1 has no positive: its ROC AUC is 0 (Keras, not 0.5) and so is its PR AUC (no TP);
    # class 0 has one positive and one negative, ranked correctly.
    s = one_batch(head, np.array([[1, 0, 1], [0, 0, 1]]), logits, {'w': np.ones(2)})
    r = s.result()
    assert (r['auc/class1'], r['auc_precision_recall/class1']) == (0.0, 0.0)
    assert r['auc/class0'] == pytest.approx(1.0)
    assert np.isnan(s.bounds()['auc/class1']).all()  # no exact AUC: no interval


# -------------------------------------------------------------------------------------------------
# Mergeable states: chunking and merge order do not matter; states pickle small.
# -------------------------------------------------------------------------------------------------

def _random_batch(head, rng, n):
    w = rng.uniform(0, 2, n)
    if isinstance(head, heads.MultiHead):
        labels = {'c': rng.integers(0, 3, (n, 1)), 'l': rng.integers(0, 2, (n, 2))}
    elif isinstance(head, heads.MultiClassHead):
        labels = rng.integers(0, 3, n)
    else:
        labels = [list(np.flatnonzero(rng.random(3) < 0.4)) for _ in range(n)]
    logits = rng.normal(0, 3, (n, head.logits_dimension)).astype(np.float32)
    return labels, logits, {'w': w}


def _rows(batch, s):
    labels, logits, features = batch
    if isinstance(labels, dict):
        labels = {k: v[s] for k, v in labels.items()}
    else:
        labels = labels[s]
    return labels, logits[s], {k: v[s] for k, v in features.items()}


def _close(a: float, b: float) -> bool:
    if np.isnan(a) or np.isnan(b):  # NaN bounds: no AUC (a class without positives, say)
        return bool(np.isnan(a) and np.isnan(b))
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b)) + 1e-12


@settings(max_examples=12, deadline=None)
@given(which=hst.integers(0, 2), seed=hst.integers(0, 2**31),
       cuts=hst.lists(hst.integers(0, 40), max_size=4), order=hst.randoms(use_true_random=False))
def test_any_chunking_merged_in_any_order_gives_one_batch_result(which, seed, cuts, order):
    head = _all_heads()[which]
    rng = np.random.default_rng(seed)
    batch = _random_batch(head, rng, 40)
    whole = head.new_state().update(*batch)
    edges = [0, *sorted(cuts), 40]
    states = [head.new_state().update(*_rows(batch, slice(a, b)))
              for a, b in zip(edges[:-1], edges[1:])]
    order.shuffle(states)
    # Merge as a random binary tree: pairwise merges of random neighbours.
    while len(states) > 1:
        i = order.randrange(len(states) - 1)
        states[i:i + 2] = [states[i].merge(states[i + 1])]
    merged = states[0]
    assert sorted(merged.result()) == sorted(whole.result())
    for k, v in whole.result().items():
        assert _close(merged.result()[k], v), k
    assert _close(merged.loss(), whole.loss())
    assert merged.counts()[0] == 40 and _close(merged.counts()[1], whole.counts()[1])
    for k, (lo, hi) in whole.bounds().items():
        assert _close(merged.bounds()[k][0], lo) and _close(merged.bounds()[k][1], hi)


def test_merge_leaves_other_unchanged_and_pickles_small():
    for head in _all_heads():
        rng = np.random.default_rng(1)
        a = head.new_state().update(*_random_batch(head, rng, 20))
        b = head.new_state().update(*_random_batch(head, rng, 30))
        before = pickle.dumps(b)
        a.merge(b)
        assert pickle.dumps(b) == before
        blob = pickle.dumps(a)
        restored = pickle.loads(blob)
        assert restored.result() == a.result() and restored.loss() == a.loss()
        assert restored.counts() == (50, a.counts()[1])
        # Fixed-size arrays: the pickle is bounded whatever the data (sparse histograms may pickle
        # smaller when few buckets are occupied).
        big = head.new_state().update(*_random_batch(head, rng, 5000))
        assert len(blob) < 400_000 and len(pickle.dumps(big)) < 400_000


@settings(max_examples=15, deadline=None)
@given(which=hst.sampled_from(['class', 'vocab', 'dense', 'ids', 'names']), seed=hst.integers(0, 2**31))
def test_dropping_invalid_rows_makes_the_batch_acceptable(which, seed):
    """The pipeline's contract: after the rows `invalid_rows` marks are dropped, `update` and
    `array_loss` accept the batch; a batch with no marked row is accepted as it is."""
    rng = np.random.default_rng(seed)
    n = 12
    vocab = ['a', 'b', 'c']
    logits = rng.normal(0, 2, (n, 3)).astype(np.float32)
    logits[rng.random((n, 3)) < 0.05] = np.nan
    w = rng.uniform(0, 2, n)
    w[rng.random(n) < 0.1] = np.inf
    if which in ('class', 'vocab'):
        head = heads.MultiClassHead(3, weight_column='w',
                                    label_vocabulary=vocab if which == 'vocab' else None)
        ids = rng.integers(-1, 4, n)
        labels = (np.array(vocab + ['zz', 'zz'], dtype=object)[ids] if which == 'vocab' else ids)
    elif which == 'dense':
        head = heads.MultiLabelHead(3, weight_column='w')
        labels = rng.choice([0., 1., 0.5, 2., -1., np.nan], p=[.4, .4, .08, .04, .04, .04],
                            size=(n, 3))
    else:
        head = heads.MultiLabelHead(3, weight_column='w', label_vocabulary=vocab)
        labels = [list(rng.integers(-1, 4, rng.integers(0, 3))) for _ in range(n)]
        if which == 'names':
            labels = [[(vocab + ['zz', 'zz'])[i] for i in row] for row in labels]
    features = {'w': w}
    bad = np.zeros(n, dtype=bool)
    for _, _, mask in head.invalid_rows(labels, logits, features):
        bad |= mask
    keep = np.flatnonzero(~bad)
    kept = ([labels[i] for i in keep] if isinstance(labels, list) else labels[keep])
    state = head.new_state().update(kept, logits[keep], {'w': w[keep]})
    assert state.counts()[0] == keep.size
    assert np.isfinite(state.loss()) and all(np.isfinite(v) for v in state.result().values())
    assert head.array_loss(kept, logits[keep], {'w': w[keep]}).shape == (keep.size, 1)


def test_states_of_different_heads_refuse_to_merge():
    with pytest.raises(ValueError, match='Cannot merge'):
        heads.MultiLabelHead(2).new_state().merge(heads.MultiLabelHead(3).new_state())
    with pytest.raises(ValueError, match='Cannot merge'):
        heads.MultiClassHead(3).new_state().merge(heads.MultiClassHead(3, name='x').new_state())


def test_array_face_does_not_import_tensorflow():
    code = ('import sys, numpy as np, heads\n'
            'h = heads.MultiHead([heads.MultiClassHead(3, name="a"), '
            'heads.MultiLabelHead(2, name="b", classes_for_class_based_metrics=[0])])\n'
            's = h.new_state().update({"a": np.array([0]), "b": [[1]]}, np.zeros((1, 5)))\n'
            's.result(); s.loss(); s.bounds(); s.plots(); h.array_predictions(np.zeros((1, 5)))\n'
            'h.invalid_rows({"a": np.array([0]), "b": [[1]]}, np.zeros((1, 5)))\n'
            'assert "tensorflow" not in sys.modules\n')
    subprocess.run([sys.executable, '-c', code], check=True, cwd=str(
        __import__('pathlib').Path(__file__).resolve().parents[1]))
