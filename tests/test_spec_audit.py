"""tf.estimator 2.15 rules not pinned elsewhere, one test per rule, on every face it applies to.

The other head test files cover tf.estimator's test vectors by id (test_array_*.py, test_tf_*.py,
test_construction.py, test_golden_tf215.py); this file fills the gaps an audit found: the key
strings and their formatting, the accepted loss reductions, tf.estimator's surprising behaviours
that no test pinned on both faces, the MultiHead vector M3 on the TF face, construction rules,
and the plots at the head's own thresholds.

Expected values are hand arithmetic written out, or values recorded from TensorFlow (cited).
Tests parametrized over `face` run the array face (numpy, `new_state().update`) and the TF face
(`loss` + `update_metrics`, marked `tf`).
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import heads
from heads.keys import MetricKeys, PredictionKeys, Reduction, ServingKeys

from _helpers import HEADS_WITH_REDUCTION  # every head, built with a loss_reduction

F32 = np.float32
FACES = [pytest.param('array', id='array'), pytest.param('tf', id='tf', marks=pytest.mark.tf)]


def sce(x: float, z: float) -> float:
    """Sigmoid cross-entropy by its textbook formula."""
    return max(x, 0.0) - x * z + math.log1p(math.exp(-abs(x)))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def evaluate(face: str, head, labels, logits, features=None) -> tuple[float, dict]:
    """(loss, metrics) of one batch on the given face."""
    if face == 'array':
        state = head.new_state().update(labels, logits, features)
        return state.loss(), state.result()
    features = {} if features is None else features
    loss = float(head.loss(labels, logits, features))
    metrics = head.update_metrics(head.metrics(), features, logits, labels)
    return loss, {k: float(v.result().numpy()) for k, v in metrics.items()}


def predictions(face: str, head, logits, keys=None) -> dict:
    """Predictions as numpy arrays (strings as str) on the given face."""
    if face == 'array':
        return {k: np.asarray(v) for k, v in head.array_predictions(logits, keys).items()}
    out = {}
    for k, v in head.predictions(logits, keys).items():
        a = v.numpy()
        if a.dtype == object:
            a = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b,
                             otypes=[object])(a)
        out[k] = a
    return out


def assert_close(actual: dict, expected: dict, tol: float = 1e-6) -> None:
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=tol), key


# -------------------------------------------------------------------------------------------------
# Key strings and loss reductions.
# -------------------------------------------------------------------------------------------------

def test_metric_key_strings_are_tf_estimators():
    """Every metric key string, as tf.estimator's MetricKeys spelled it."""
    table = {
        'LOSS': 'loss', 'LOSS_MEAN': 'average_loss', 'LOSS_REGULARIZATION': 'regularization_loss',
        'ACCURACY': 'accuracy', 'PRECISION': 'precision', 'RECALL': 'recall',
        'ACCURACY_BASELINE': 'accuracy_baseline', 'AUC': 'auc', 'AUC_PR': 'auc_precision_recall',
        'LABEL_MEAN': 'label/mean', 'PREDICTION_MEAN': 'prediction/mean',
        'ACCURACY_AT_THRESHOLD': 'accuracy/positive_threshold_%g',
        'PRECISION_AT_THRESHOLD': 'precision/positive_threshold_%g',
        'RECALL_AT_THRESHOLD': 'recall/positive_threshold_%g',
        'PROBABILITY_MEAN_AT_CLASS': 'probability_mean/class%d', 'AUC_AT_CLASS': 'auc/class%d',
        'AUC_PR_AT_CLASS': 'auc_precision_recall/class%d',
        'PROBABILITY_MEAN_AT_NAME': 'probability_mean/%s', 'AUC_AT_NAME': 'auc/%s',
        'AUC_PR_AT_NAME': 'auc_precision_recall/%s',
        'PRECISION_AT_RECALL': 'precision_at_recall_%g',
        'RECALL_AT_PRECISION': 'recall_at_precision_%g',
        'SENSITIVITY_AT_SPECIFICITY': 'sensitivity_at_specificity_%g',
        'SPECIFICITY_AT_SENSITIVITY': 'specificity_at_sensitivity_%g',
    }
    assert {k: getattr(MetricKeys, k) for k in table} == table


def test_prediction_and_serving_key_strings_are_tf_estimators():
    assert [getattr(PredictionKeys, k) for k in (
        'CLASSES', 'CLASS_IDS', 'ALL_CLASSES', 'ALL_CLASS_IDS', 'LOGISTIC', 'LOGITS',
        'PREDICTIONS', 'PROBABILITIES', 'TOP_K')] == [
        'classes', 'class_ids', 'all_classes', 'all_class_ids', 'logistic', 'logits',
        'predictions', 'probabilities', 'top_k']
    assert (ServingKeys.DEFAULT_SERVING, ServingKeys.CLASSIFY, ServingKeys.REGRESS,
            ServingKeys.PREDICT) == ('serving_default', 'classification', 'regression', 'predict')


@pytest.mark.parametrize('face', FACES)
def test_threshold_keys_format_thresholds_with_percent_g(face):
    """`%g`: 1/3 → 0.333333, 1e-5 → 1e-05, 0.999999 stays (probed on tf.estimator)."""
    head = heads.BinaryClassHead(thresholds=[1 / 3, 1e-5, 0.999999])
    _, metrics = evaluate(face, head, np.array([[1]]), np.array([[2.]], F32))
    for t in ('0.333333', '1e-05', '0.999999'):
        for kind in ('accuracy', 'precision', 'recall'):
            assert '{}/positive_threshold_{}'.format(kind, t) in metrics
    # sigmoid(2) = 0.8808 is above 1/3 and 1e-5, below 0.999999; the label is 1.
    assert_close(metrics, {'accuracy/positive_threshold_0.333333': 1.0,
                           'accuracy/positive_threshold_1e-05': 1.0,
                           'accuracy/positive_threshold_0.999999': 0.0,
                           'recall/positive_threshold_0.999999': 0.0})


@pytest.mark.parametrize('face', FACES)
def test_thresholds_formatting_alike_keep_the_later_metric(face):
    """Thresholds formatting alike share one key; the later threshold's metric is reported."""
    t1, t2 = 0.1234561, 0.1234564        # both '%g' → '0.123456'
    x = F32(-1.9600998)                  # float32 sigmoid(x) = 0.12345625, between t1 and t2
    p = F32(1.0 / (1.0 + math.exp(-float(x))))
    assert t1 < p < t2
    head = heads.BinaryClassHead(thresholds=[t1, t2])
    _, metrics = evaluate(face, head, np.array([[1]]), np.array([[x]], F32))
    assert len(metrics) == 9 + 3
    # At t1 the positive example is predicted positive (accuracy 1); at t2, the later, it is not.
    assert_close(metrics, {'accuracy/positive_threshold_0.123456': 0.0,
                           'recall/positive_threshold_0.123456': 0.0,
                           'precision/positive_threshold_0.123456': 0.0})


@pytest.mark.parametrize('make', list(HEADS_WITH_REDUCTION.values()),
                         ids=list(HEADS_WITH_REDUCTION))
def test_v2_reductions_are_accepted_and_v1_names_refused(make):
    """v2 heads accept 'auto' / 'sum' / 'sum_over_batch_size' and refuse the v1 names."""
    assert set(Reduction.all()) == {'auto', 'none', 'sum', 'sum_over_batch_size'}
    for ok in ('auto', 'sum', 'sum_over_batch_size'):
        assert make(ok).loss_reduction == ok
    for v1 in ('weighted_sum', 'weighted_mean', 'weighted_sum_over_batch_size',
               'weighted_sum_by_nonzero_weights'):
        with pytest.raises(ValueError, match=re.escape(
                'Invalid loss_reduction: {}. See `tf.losses.Reduction` for valid '
                'options.'.format(v1))):
            make(v1)


# -------------------------------------------------------------------------------------------------
# Surprising tf.estimator behaviours, kept on both faces.
# -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('face', FACES)
def test_accuracy_baseline_is_the_weighted_soft_label_mean(face):
    head = heads.BinaryClassHead(weight_column='w')
    labels = np.array([[0.8], [0.4], [0.0]], F32)
    _, metrics = evaluate(face, head, labels, np.array([[1.], [1.], [1.]], F32),
                          {'w': np.array([[1.], [2.], [1.]], F32)})
    m = (0.8 * 1 + 0.4 * 2 + 0.0 * 1) / (1 + 2 + 1)   # 0.4, soft labels kept
    assert_close(metrics, {'label/mean': m, 'accuracy_baseline': max(m, 1 - m)})   # 0.6


@pytest.mark.parametrize('face', FACES)
def test_sum_over_batch_size_counts_zero_weight_rows_and_label_dims(face):
    head = heads.RegressionHead(label_dimension=2, weight_column='w')
    logits = np.array([[1., 2.], [3., 4.]], F32)
    loss, metrics = evaluate(face, head, np.zeros((2, 2), F32), logits,
                             {'w': np.array([[1.], [0.]], F32)})
    # U = [[1, 4], [9, 16]]; U·w = [[1, 4], [0, 0]]: loss = 5 / (2 rows × 2 dims), zero row counted
    assert loss == pytest.approx(5 / 4)
    # average_loss is the weighted mean: 5 / (2 dims × Σw = 1)
    assert_close(metrics, {'average_loss': 5 / 2})


@pytest.mark.parametrize('face', FACES)
def test_binary_precision_uses_class_ids_not_the_threshold(face):
    """A logit of 1e-8 is class 1 (x > 0) while its float32 sigmoid is exactly 0.5, which is not
    above the threshold 0.5: `precision`/`recall`/`accuracy` see a hit, the `_0.5` ones a miss."""
    head = heads.BinaryClassHead(thresholds=[0.5])
    assert F32(1) / (F32(1) + np.exp(F32(-1e-8))) == F32(0.5)
    _, metrics = evaluate(face, head, np.array([[1]]), np.array([[1e-8]], F32))
    assert_close(metrics, {'precision': 1.0, 'recall': 1.0, 'accuracy': 1.0,
                           'precision/positive_threshold_0.5': 0.0,
                           'recall/positive_threshold_0.5': 0.0,
                           'accuracy/positive_threshold_0.5': 0.0})


@pytest.mark.parametrize('face', FACES)
def test_thresholds_are_strict(face):
    """p = sigmoid(0) = 0.5 is not above 0.5; a logit of 0 is class 0."""
    head = heads.BinaryClassHead(thresholds=[0.5])
    _, metrics = evaluate(face, head, np.array([[0], [1]]), np.array([[0.], [0.]], F32))
    assert_close(metrics, {'accuracy/positive_threshold_0.5': 1 / 2,   # the label-0 row right
                           'precision/positive_threshold_0.5': 0.0,   # nothing predicted
                           'recall/positive_threshold_0.5': 0.0,
                           'accuracy': 1 / 2, 'precision': 0.0, 'recall': 0.0})
    ml = heads.MultiLabelHead(2, thresholds=[0.5])
    _, metrics = evaluate(face, ml, np.array([[1, 0]]), np.array([[0., 0.]], F32))
    assert_close(metrics, {'accuracy/positive_threshold_0.5': 1 / 2,
                           'precision/positive_threshold_0.5': 0.0,
                           'recall/positive_threshold_0.5': 0.0})


@pytest.mark.parametrize('face', FACES)
def test_all_classes_are_tiled_over_the_first_dimension_only(face):
    rank3 = np.zeros((2, 3, 1), F32)
    p = predictions(face, heads.BinaryClassHead(), rank3)
    assert p['class_ids'].shape == (2, 3, 1)
    assert p['all_class_ids'].tolist() == [[0, 1], [0, 1]]
    assert p['all_classes'].tolist() == [['0', '1'], ['0', '1']]
    p = predictions(face, heads.MultiClassHead(3), np.zeros((2, 3, 3), F32))
    assert p['all_class_ids'].tolist() == [[0, 1, 2], [0, 1, 2]]
    assert p['all_classes'].shape == (2, 3)


@pytest.mark.parametrize('face', FACES)
def test_multi_label_classes_list_every_class_and_loss_fn_shape_is_checked(face):
    head = heads.MultiLabelHead(3)
    p = predictions(face, head, np.array([[5., -5., 5.], [-5., 5., -5.]], F32))
    assert p['classes'].tolist() == [['0', '1', '2']] * 2   # every class, not the predicted set

    def per_class_loss(labels, logits):   # [B, n]: the head wants [B, 1]
        return logits * 0.0

    bad = heads.MultiLabelHead(3, loss_fn=per_class_loss)
    with pytest.raises(ValueError, match='loss_shape'):
        evaluate(face, bad, np.array([[1, 0, 1]]), np.array([[1., 2., 3.]], F32))


@pytest.mark.parametrize('face', FACES)
def test_multi_class_reports_only_average_loss_and_accuracy(face):
    _, metrics = evaluate(face, heads.MultiClassHead(3), np.array([[2]]),
                          np.array([[0., 1., 3.]], F32))
    assert sorted(metrics) == ['accuracy', 'average_loss']


@pytest.mark.parametrize('face', FACES)
def test_regression_label_mean_reads_the_labels_as_given(face):
    head = heads.RegressionHead(weight_column='w')
    _, metrics = evaluate(face, head, np.array([3., 5.], F32), np.array([[1.], [2.]], F32),
                          {'w': np.array([[1.], [3.]], F32)})
    assert_close(metrics, {'label/mean': (3 * 1 + 5 * 3) / (1 + 3),        # 4.5
                           'prediction/mean': (1 * 1 + 2 * 3) / (1 + 3),   # 1.75
                           'average_loss': ((1 - 3) ** 2 * 1 + (2 - 5) ** 2 * 3) / 4})


@pytest.mark.tf
def test_regression_predictions_take_no_keys():
    head = heads.RegressionHead()
    with pytest.raises(TypeError):
        head.predictions(np.array([[1.]], F32), ['predictions'])


@pytest.mark.parametrize('face', FACES)
def test_loss_fn_never_receives_loss_reduction(face):
    def needs_reduction(labels, logits, loss_reduction):
        return logits * 0.0

    head = heads.BinaryClassHead(loss_fn=needs_reduction)   # accepted at construction
    with pytest.raises(TypeError, match="missing 1 required positional argument: "
                                        "'loss_reduction'"):
        evaluate(face, head, np.array([[1]]), np.array([[1.]], F32))
    seen = []

    def with_default(labels, logits, loss_reduction='not passed'):
        seen.append(loss_reduction)
        return np.ones_like(np.asarray(logits)) * 3.0

    loss, _ = evaluate(face, heads.BinaryClassHead(loss_fn=with_default), np.array([[1]]),
                       np.array([[1.]], F32))
    assert loss == pytest.approx(3.0) and set(seen) == {'not passed'}


@pytest.mark.parametrize('face', FACES)
def test_multi_head_adds_losses_after_each_heads_reduction(face):
    """MultiHead loss = Σ head_weight · (each head's loss with its own reduction)."""
    head = heads.MultiHead([heads.BinaryClassHead(name='a', loss_reduction='sum'),
                            heads.BinaryClassHead(name='b')], head_weights=[1., 3.])
    logits = {'a': np.array([[1.], [-2.]], F32), 'b': np.array([[0.5], [2.]], F32)}
    labels = {'a': np.array([[1], [1]]), 'b': np.array([[0], [1]])}
    loss_a = sce(1., 1.) + sce(-2., 1.)             # 'sum'
    loss_b = (sce(0.5, 0.) + sce(2., 1.)) / 2       # 'sum_over_batch_size'
    loss, metrics = evaluate(face, head, labels, logits)
    assert loss == pytest.approx(1 * loss_a + 3 * loss_b, rel=1e-6)
    assert_close(metrics, {'loss/a': loss_a, 'loss/b': loss_b}, tol=1e-5)


@pytest.mark.parametrize('face', FACES)
def test_rank1_weights_are_expanded_and_no_features_are_needed_without_weights(face):
    head = heads.BinaryClassHead(weight_column='w')
    loss, metrics = evaluate(face, head, np.array([1., 0.], F32), np.array([[2.], [1.]], F32),
                             {'w': np.array([2., 1.], F32)})
    assert loss == pytest.approx((2 * sce(2., 1.) + 1 * sce(1., 0.)) / 2, rel=1e-6)
    assert_close(metrics, {'label/mean': 2 / 3})
    # Without a weight column the array face and our TF face accept an empty features dict.
    loss, _ = evaluate(face, heads.BinaryClassHead(), np.array([[1.]], F32),
                       np.array([[0.]], F32), {})
    assert loss == pytest.approx(math.log(2), rel=1e-6)


# Softmax of non-finite logits recorded on TF 2.21's CPU kernel (tf.nn.softmax, float32); the
# binary rows [0, NaN] and [0, +inf] are tf.estimator 2.15's recorded probabilities as well
# (tests/golden/tf215_cases.json, nonfinite/binary_*).
NONFINITE_SOFTMAX = [
    ([1., math.nan, 2.], [0., math.nan, 0.]),
    ([math.inf, 1., 2.], [math.nan, 0., 0.]),
    ([math.inf, math.inf, 0.], [math.nan, math.nan, 0.]),
    ([math.inf, math.nan, 1.], [math.nan, math.nan, 0.]),
    ([-math.inf, 1., 2.], [0., 0.2689414322376251, 0.7310585379600525]),
]


@pytest.mark.parametrize('face', FACES)
def test_non_finite_logits_give_nan_losses_and_tf_probabilities(face):
    """NaN logit → class 0 and NaN loss; ±inf → NaN loss; probabilities as TF's softmax."""
    binary = heads.BinaryClassHead()
    p = predictions(face, binary, np.array([[math.nan], [math.inf], [-math.inf]], F32))
    assert p['class_ids'].ravel().tolist() == [0, 1, 0]
    np.testing.assert_array_equal(p['probabilities'],
                                  [[0., math.nan], [0., math.nan], [1., 0.]])
    loss, _ = evaluate(face, binary, np.array([[1], [0]]), np.array([[math.inf], [-math.inf]], F32))
    assert math.isnan(loss)
    logits = np.array([row for row, _ in NONFINITE_SOFTMAX], F32)
    p = predictions(face, heads.MultiClassHead(3), logits, ['probabilities'])['probabilities']
    np.testing.assert_allclose(p, [expected for _, expected in NONFINITE_SOFTMAX], rtol=1e-6)


# -------------------------------------------------------------------------------------------------
# A vector missing on a face.
# -------------------------------------------------------------------------------------------------

@pytest.mark.tf
def test_multi_head_splits_rank3_logits_between_regression_heads_on_the_tf_face():
    """Vector M3."""
    head = heads.MultiHead([heads.RegressionHead(label_dimension=2, name='head1'),
                            heads.RegressionHead(label_dimension=3, name='head2')])
    logits = np.array([[[-1., 1., 2., -2., 2.], [-1., 1., 2., -2., 2.]],
                       [[-1.5, 1.5, -2., 2., -2.], [-1.5, 1.5, -2., 2., -2.]]], F32)
    labels = {'head1': np.array([[[1., 0.], [1., 0.]], [[1.5, 1.5], [1.5, 1.5]]], F32),
              'head2': np.array([[[0., 1., 0.], [0., 1., 0.]], [[2., 2., 0.], [2., 2., 0.]]], F32)}
    # head1: Σ (labels − logits)² = 2·(4 + 1) + 2·(9 + 0) = 28 over 2·2·2 = 8 → 3.5
    # head2: 2·(4 + 9 + 4) + 2·(16 + 0 + 4) = 74 over 2·2·3 = 12 → 6.1666667
    assert float(head.loss(labels, logits, {})) == pytest.approx(28 / 8 + 74 / 12, rel=1e-6)
    preds = head.predictions(logits)
    np.testing.assert_array_equal(preds[('head1', 'predictions')].numpy(), logits[..., :2])
    np.testing.assert_array_equal(preds[('head2', 'predictions')].numpy(), logits[..., 2:])


# -------------------------------------------------------------------------------------------------
# Construction and head-specific rules not pinned elsewhere.
# -------------------------------------------------------------------------------------------------

def test_binary_or_multi_class_head_picks_the_head_by_n_classes():
    two = heads.binary_or_multi_class_head(2, weight_column='w', label_vocabulary=['a', 'b'],
                                           loss_reduction='sum')
    assert type(two) is heads.BinaryClassHead
    assert (two.weight_column, tuple(two.label_vocabulary), two.loss_reduction) == (
        'w', ('a', 'b'), 'sum')
    three = heads.binary_or_multi_class_head(3)
    assert type(three) is heads.MultiClassHead and three.logits_dimension == 3


def test_multi_class_constructor_checks_in_tf_estimator_order():
    """None first, then the vocabulary's length (its text), then n_classes > 2."""
    with pytest.raises(ValueError, match=re.escape(
            '"label_vocabulary" does not have "n_classes" items. len(label_vocabulary)=4, '
            "n_classes=3, label_vocabulary=['a', 'b', 'c', 'd']")):
        heads.MultiClassHead(3, label_vocabulary=['a', 'b', 'c', 'd'])
    # The length check comes before the n_classes > 2 check.
    with pytest.raises(ValueError, match='does not have "n_classes" items'):
        heads.MultiClassHead(2, label_vocabulary=['a'])
    with pytest.raises(ValueError, match=re.escape('n_classes must be > 2: 2.')):
        heads.MultiClassHead(2, label_vocabulary=['a', 'b'])


def test_binary_vocabulary_length_is_not_checked():
    head = heads.BinaryClassHead(label_vocabulary=['a', 'b', 'c'])
    p = head.array_predictions(np.array([[1.], [-1.]], F32), ['classes', 'all_classes'])
    assert p['classes'].tolist() == [['b'], ['a']]
    assert p['all_classes'].tolist() == [['a', 'b', 'c']] * 2   # the whole vocabulary, tiled


def test_multi_label_class_names_need_a_vocabulary():
    with pytest.raises(ValueError, match=re.escape(
            'label_vocabulary must be provided when classes_for_class_based_metrics are '
            'strings.')):
        heads.MultiLabelHead(3, classes_for_class_based_metrics=['a'])


def test_multi_head_names_are_joined_and_duplicates_allowed():
    head = heads.MultiHead([heads.BinaryClassHead(name='a'), heads.BinaryClassHead(name='a')])
    assert head.name == 'a_a' and head.logits_dimension == 2


@pytest.mark.parametrize('face', FACES)
def test_multi_label_dense_labels_range_checked_before_shape_and_vocabulary_ignored(face):
    # A wrong-width label row with a 2 in it fails the [0, 1] check, not the shape check.
    with pytest.raises(ValueError, match=re.escape(
            'labels must be an integer indicator Tensor with values in [0, 1]')):
        evaluate(face, heads.MultiLabelHead(2), np.array([[2, 0, 0]]), np.zeros((1, 2), F32))
    # Multi-hot labels are used as they are, with or without a vocabulary: logits 0 give
    # loss ln 2 for each class either way.
    for head in (heads.MultiLabelHead(2), heads.MultiLabelHead(2, label_vocabulary=['a', 'b'])):
        loss, _ = evaluate(face, head, np.array([[1, 0]]), np.zeros((1, 2), F32))
        assert loss == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize('face', FACES)
def test_poisson_stirling_term_only_for_targets_outside_zero_one(face):
    """log_poisson_loss(z, x) = exp(x) − x·z, plus z·ln z − z + ½·ln(2πz) only where z > 1 or
    z < 0 (compute_full_loss=True); negative targets give NaN."""
    logits = np.array([[0.], [0.]], F32)
    labels = np.array([[0.5], [2.]], F32)
    stirling = 2 * math.log(2) - 2 + 0.5 * math.log(2 * math.pi * 2)
    loss, _ = evaluate(face, heads.PoissonRegressionHead(), labels, logits)
    assert loss == pytest.approx((1.0 + (1.0 + stirling)) / 2, rel=1e-6)
    loss, _ = evaluate(face, heads.PoissonRegressionHead(compute_full_loss=False), labels, logits)
    assert loss == pytest.approx((1.0 + 1.0) / 2, rel=1e-6)
    loss, _ = evaluate(face, heads.PoissonRegressionHead(), np.array([[-1.]], F32),
                       np.array([[0.]], F32))
    assert math.isnan(loss)


# -------------------------------------------------------------------------------------------------
# Plots: confusion rows at the head's own thresholds, counted exactly.
# -------------------------------------------------------------------------------------------------

def _confusion_rows(plots: dict, sub_key: str) -> dict[float, tuple]:
    rows = {}
    for i in range(len(plots['curve'])):
        if plots['curve'][i] == 'confusion' and plots['sub_key'][i] == sub_key:
            t = float(plots['threshold'][i])
            assert t not in rows, 'threshold %r twice' % t
            rows[t] = tuple(float(plots[c][i]) for c in (
                'tp', 'fp', 'tn', 'fn', 'precision', 'recall', 'false_positive_rate'))
    return rows


BINARY_PLOT_LOGITS = np.array([[3.], [2.], [0.5], [0.], [-1.]], F32)
BINARY_PLOT_LABELS = np.array([[1], [0], [1], [1], [0]])
BINARY_PLOT_WEIGHTS = np.array([[1.], [2.], [1.], [3.], [1.]], F32)


def test_plots_binary_confusion_rows_at_head_thresholds():
    head = heads.BinaryClassHead(weight_column='w', thresholds=[0.3, 0.5, 0.9])
    state = head.new_state().update(BINARY_PLOT_LABELS, BINARY_PLOT_LOGITS,
                                    {'w': BINARY_PLOT_WEIGHTS})
    plots = state.plots()
    assert set(plots) == set(heads.metrics.PLOT_COLUMNS)
    rows = _confusion_rows(plots, '')
    assert len(rows) == 200 + 3                       # the AUC's 200 and the head's 3
    thresholds = plots['threshold'][plots['curve'] == 'confusion']
    assert np.all(np.diff(thresholds) > 0)            # increasing, each once
    # p = σ(3, 2, 0.5, 0, −1) = 0.953, 0.881, 0.622, 0.5, 0.269; labels 1, 0, 1, 1, 0;
    # weights 1, 2, 1, 3, 1. Positive weight 1 + 1 + 3 = 5, negative 2 + 1 = 3.
    # t = 0.3: predicted 0.953, 0.881, 0.622, 0.5 → tp 1 + 1 + 3, fp 2, tn 1, fn 0
    assert rows[0.3] == (5., 2., 1., 0., 5 / 7, 5 / 5, 2 / 3)
    # t = 0.5: 0.5 is not above 0.5 → tp 1 + 1, fp 2, tn 1, fn 3
    assert rows[0.5] == (2., 2., 1., 3., 2 / 4, 2 / 5, 2 / 3)
    # t = 0.9: only 0.953 → tp 1, fp 0, tn 3, fn 4
    assert rows[0.9] == (1., 0., 3., 4., 1 / 1, 1 / 5, 0 / 3)
    # Non-confusion columns of these rows are NaN; calibration rows unchanged in number.
    at = np.flatnonzero(plots['threshold'] == 0.5)
    assert np.isnan(plots['bucket_lower'][at]).all()
    assert (plots['curve'] == 'calibration').sum() == state.histogram.n_calibration


def test_plots_binary_threshold_on_the_auc_grid_appears_once_exact():
    t = 1.0 / 199                                      # the AUC's threshold 1
    head = heads.BinaryClassHead(thresholds=[t, t])
    state = head.new_state().update(np.array([[1], [0]]), np.array([[-20.], [5.]], F32))
    rows = _confusion_rows(state.plots(), '')
    assert len(rows) == 200
    # σ(−20) ≈ 2.1e-9 is not above 1/199, σ(5) = 0.993 is: tp 0, fp 1, tn 0, fn 1
    assert rows[t][:4] == (0., 1., 0., 1.)


def test_plots_binary_without_thresholds_keep_the_auc_rows_only():
    state = heads.BinaryClassHead().new_state().update(BINARY_PLOT_LABELS, BINARY_PLOT_LOGITS)
    assert len(_confusion_rows(state.plots(), '')) == 200


def test_plots_binary_exact_rows_merge_like_one_batch():
    head = heads.BinaryClassHead(weight_column='w', thresholds=[0.3, 0.5, 0.9])
    parts = [head.new_state().update(BINARY_PLOT_LABELS[s], BINARY_PLOT_LOGITS[s],
                                     {'w': BINARY_PLOT_WEIGHTS[s]})
             for s in (slice(0, 2), slice(2, 5))]
    merged = parts[1].merge(parts[0])
    rows = _confusion_rows(merged.plots(), '')
    assert rows[0.5][:4] == (2., 2., 1., 3.) and rows[0.9][:4] == (1., 0., 3., 4.)


def test_plots_multi_label_rows_at_head_thresholds_pooled_and_per_class():
    head = heads.MultiLabelHead(2, thresholds=[0.5], classes_for_class_based_metrics=[1])
    logits = np.array([[2., 0.5], [-1., 3.]], F32)
    labels = np.array([[1, 0], [0, 1]])
    plots = head.new_state().update(labels, logits).plots()
    pooled = _confusion_rows(plots, '')
    per_class = _confusion_rows(plots, 'classId:1')
    assert len(pooled) == len(per_class) == 201
    # p = [[0.881, 0.622], [0.269, 0.953]]. Pooled at 0.5: predicted 0.881 (label 1),
    # 0.622 (label 0), 0.953 (label 1) → tp 2, fp 1, tn 1 (0.269, label 0), fn 0
    assert pooled[0.5] == (2., 1., 1., 0., 2 / 3, 2 / 2, 1 / 2)
    # Class 1: 0.622 (label 0), 0.953 (label 1) → tp 1, fp 1, tn 0, fn 0
    assert per_class[0.5] == (1., 1., 0., 0., 1 / 2, 1 / 1, 1 / 1)


def test_plots_multi_head_prefixes_exact_rows_with_the_head_name():
    mh = heads.MultiHead([heads.BinaryClassHead(name='a', weight_column='w', thresholds=[0.5]),
                          heads.RegressionHead(name='b')])
    state = mh.new_state().update(
        {'a': BINARY_PLOT_LABELS, 'b': np.zeros((5, 1), F32)},
        {'a': BINARY_PLOT_LOGITS, 'b': np.zeros((5, 1), F32)}, {'w': BINARY_PLOT_WEIGHTS})
    rows = _confusion_rows(state.plots(), 'a')
    assert rows[0.5][:4] == (2., 2., 1., 3.)


# -------------------------------------------------------------------------------------------------
# The float32 table lookup of the high-resolution histogram equals the float64 definition.
# -------------------------------------------------------------------------------------------------

def _reference_entry(p32: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """The histogram layout by its definition: 0 for p = 0, n_buckets + 1 for p = 1, else 1 +
    the number of cuts <= p, compared in float64."""
    p = p32.astype(np.float64)
    entry = np.array([1 + int(np.sum(cuts <= v)) for v in p]) if p.size <= 2000 else \
        1 + np.searchsorted(cuts, p, side='right')
    entry[p <= 0] = 0
    entry[p >= 1] = cuts.size + 2
    return entry


# The last case puts cuts among denormal scores (the first cell holds several).
@pytest.mark.parametrize('n_buckets,logit_range', [(8192, 16.0), (2 ** 17, 16.0), (50, 4.0),
                                                   (2, 16.0), (1000, 200.0)])
def test_histogram_float32_lookup_equals_float64_definition(n_buckets, logit_range):
    h = heads.metrics.Histogram(n_buckets=n_buckets, logit_range=logit_range)
    cuts = h.edges()
    assert cuts.size == n_buckets - 1
    c32 = cuts.astype(F32)
    # Every cut's float32 neighbourhood (two steps either side), mirrored around 0.5 as well.
    near = [c32]
    for direction in (np.inf, -np.inf):
        step = c32
        for _ in range(2):
            step = np.nextafter(step, F32(direction))
            near.append(step)
    near = np.concatenate(near)
    near = np.concatenate([near, F32(1) - near])
    rng = np.random.default_rng(0)
    one_bits = int(F32(1).view(np.int32))
    uniform_bits = rng.integers(0, one_bits + 1, 200_000).astype(np.int32).view(F32)
    special = np.array([0., -0., 1., 0.5, np.nextafter(F32(0.5), F32(0)), 1e-45, 1e-38,
                        np.nextafter(F32(1), F32(0))], F32)
    p = np.clip(np.concatenate([near, uniform_bits, special]), F32(0), F32(1))
    expected = _reference_entry(p, cuts)
    np.testing.assert_array_equal(h.bucket_index(p), expected)
    # The float64 path of bucket_index agrees too.
    np.testing.assert_array_equal(h.bucket_index(p.astype(np.float64)), expected)


def test_chunked_kernels_equal_the_plain_formulas():
    """The array face works through large batches in cache-sized chunks and column by column;
    on more rows than one chunk it gives exactly the plain one-pass formulas' values."""
    from heads.array import numerics
    rng = np.random.default_rng(7)
    n = 3 * numerics.CHUNK + 123
    x = (rng.normal(0, 4, n) * rng.choice([1, 1, 1, 30], n)).astype(F32)
    x[::1001] = np.nan
    x[3::2003] = np.inf
    x[5::2003] = -np.inf
    z = rng.choice(np.array([0., 1., 0.25], F32), n)
    with np.errstate(over='ignore', invalid='ignore'):
        e = np.exp(-np.abs(x))
        plain_sigmoid = np.where(x >= 0, F32(1) / (F32(1) + e), e / (F32(1) + e))
        x64, z64 = x.astype(np.float64), z.astype(np.float64)
        plain_sce = np.maximum(x64, 0.0) - x64 * z64 + np.log1p(np.exp(-np.abs(x64)))
    np.testing.assert_array_equal(numerics.sigmoid32(x), plain_sigmoid)
    np.testing.assert_array_equal(numerics.log_sigmoid_cross_entropy(z, x), plain_sce)

    logits = rng.normal(0, 3, (n // 4, 5)).astype(F32)
    logits[::97, 2] = np.nan
    ids = rng.integers(0, 5, (n // 4, 1))
    x64 = logits.astype(np.float64)
    with np.errstate(invalid='ignore'):
        top = np.max(x64, axis=-1, keepdims=True)
        plain_ce = (top + np.log(np.sum(np.exp(x64 - top), axis=-1, keepdims=True))
                    - np.take_along_axis(x64, ids, axis=-1))
    np.testing.assert_array_equal(numerics.softmax_cross_entropy(ids, logits), plain_ce)
    plain_ids = np.argmax(np.where(np.isnan(logits), -np.inf, logits), axis=-1)[:, np.newaxis]
    np.testing.assert_array_equal(numerics.class_ids_of(logits), plain_ids)
    squares = x64[:, :3] ** 2
    np.testing.assert_array_equal(numerics.mean_last_axis(squares), np.mean(squares, axis=-1))

    # Keras' AUC buckets of all the scores at once, NaN dropped from the buckets.
    p = np.clip(plain_sigmoid, F32(0), F32(1))
    positive = z != 0
    w = rng.random(n)
    auc = heads.metrics.KerasAUC().update(positive, plain_sigmoid, w)
    bucket = np.maximum(np.ceil(p * F32(199)) - F32(1), F32(0))
    ok = ~np.isnan(bucket)
    pos_ref = np.zeros(200)
    neg_ref = np.zeros(200)
    np.add.at(pos_ref, bucket[ok & positive].astype(int), w[ok & positive])
    np.add.at(neg_ref, bucket[ok & ~positive].astype(int), w[ok & ~positive])
    np.testing.assert_allclose(auc.pos, pos_ref, rtol=1e-12)
    np.testing.assert_allclose(auc.neg, neg_ref, rtol=1e-12)
    assert auc.pos_total == pytest.approx(w[positive].sum(), rel=1e-12)
    assert auc.neg_total == pytest.approx(w[~positive].sum(), rel=1e-12)
