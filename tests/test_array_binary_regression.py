"""Array face of BinaryClassHead, RegressionHead, PoissonRegressionHead and LogisticRegressionHead.

Expected values are hand arithmetic (written out), recorded tf.estimator 2.15 values, or slow
references in this file — never the code under test. Ids such as B7 or X19 in the docstrings name
tf.estimator 2.15's test vectors; each test writes the vector's inputs and tf.estimator's outputs
out in full. Metrics are read from `new_state().update(...)`, i.e. over all data seen as one
batch.
"""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import heads

BINARY_KEYS = {'average_loss', 'accuracy', 'precision', 'recall', 'prediction/mean', 'label/mean',
               'accuracy_baseline', 'auc', 'auc_precision_recall'}
REGRESSION_KEYS = {'average_loss', 'prediction/mean', 'label/mean'}


def sce(x: float, z: float) -> float:
    """Sigmoid cross-entropy, by its textbook formula."""
    return max(x, 0.0) - x * z + math.log1p(math.exp(-abs(x)))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def evaluate(head, labels, logits, features=None):
    state = head.new_state().update(np.asarray(labels) if not isinstance(labels, np.ndarray)
                                    else labels, np.asarray(logits), features)
    return state.loss(), state.result()


def assert_metrics(actual: dict, expected: dict, rel=1e-6, abs_=1e-6):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, rel=rel, abs=abs_), key


# -------------------------------------------------------------------------------------------------
# BinaryClassHead: tf.estimator 2.15 vectors.
# -------------------------------------------------------------------------------------------------

def test_binary_unweighted_eval_matches_tf_estimator():
    """Vector B1."""
    loss, metrics = evaluate(heads.BinaryClassHead(), [[1], [1]], [[45], [-41]])
    # loss = (sce(45, 1) + sce(-41, 1)) / 2 = (0 + 41) / 2
    assert loss == pytest.approx((0 + 41) / 2)
    assert_metrics(metrics, {
        'average_loss': 20.5, 'accuracy': 1 / 2, 'precision': 1 / 1, 'recall': 1 / 2,
        'prediction/mean': (1 + 0) / 2, 'label/mean': 1.0, 'accuracy_baseline': 1.0,
        'auc': 0.0,                    # no negatives: Keras gives 0
        'auc_precision_recall': 1.0})  # all positive: 1


def test_binary_metrics_at_thresholds_match_tf_estimator():
    """Vector B3."""
    head = heads.BinaryClassHead(thresholds=[0.25, 0.5, 0.75])
    loss, metrics = evaluate(head, [[1], [1]], [[-1], [1]])
    assert loss == pytest.approx((sce(-1, 1) + sce(1, 1)) / 2)
    assert loss == pytest.approx(0.8132617, abs=1e-6)  # recorded
    # probabilities σ(−1) = 0.269, σ(1) = 0.731; both labels 1.
    assert_metrics(metrics, {
        'average_loss': loss, 'accuracy': 0.5, 'precision': 1.0, 'recall': 0.5,
        'prediction/mean': 0.5, 'label/mean': 1.0, 'accuracy_baseline': 1.0, 'auc': 0.0,
        'auc_precision_recall': 1.0,
        'accuracy/positive_threshold_0.25': 2 / 2, 'precision/positive_threshold_0.25': 1.0,
        'recall/positive_threshold_0.25': 2 / 2,
        'accuracy/positive_threshold_0.5': 1 / 2, 'precision/positive_threshold_0.5': 1.0,
        'recall/positive_threshold_0.5': 1 / 2,
        'accuracy/positive_threshold_0.75': 0 / 2, 'precision/positive_threshold_0.75': 0.0,
        'recall/positive_threshold_0.75': 0 / 2})


def test_binary_sum_reduction_adds_the_losses():
    """Vector B4."""
    loss, _ = evaluate(heads.BinaryClassHead(loss_reduction='sum'), [[1.], [1.]], [[45], [-41]])
    assert loss == pytest.approx(0 + 41)


def test_binary_rank1_labels_and_weights_are_expanded():
    """Vector B5."""
    head = heads.BinaryClassHead(weight_column='label_weights')
    state = head.new_state().update(np.array([1., 1., 0.]), np.array([[45], [-41], [44]]),
                                    {'label_weights': np.array([1., 0.1, 1.5])})
    # (1·0 + 0.1·41 + 1.5·44) / 3
    assert state.loss() == pytest.approx((1 * 0 + 0.1 * 41 + 1.5 * 44) / 3, rel=1e-6)
    assert state.counts() == (3, pytest.approx(1 + 0.1 + 1.5))


def test_binary_soft_labels_match_tf_estimator():
    """Vector B6."""
    loss, metrics = evaluate(heads.BinaryClassHead(), [[0.8], [0.4]], [[0.5], [-0.3]])
    expected_loss = (sce(0.5, 0.8) + sce(-0.3, 0.4)) / 2
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert loss == pytest.approx(0.6242161, abs=1e-5)  # recorded
    assert_metrics(metrics, {
        'average_loss': expected_loss,
        'accuracy': 0.0,                  # soft labels never equal a class id
        'precision': 1.0, 'recall': 0.5,  # both labels != 0 are positives; one logit > 0
        'prediction/mean': (sigmoid(0.5) + sigmoid(-0.3)) / 2,
        'label/mean': (0.8 + 0.4) / 2, 'accuracy_baseline': 0.6,
        'auc': 0.0, 'auc_precision_recall': 1.0})


def test_binary_weighted_eval_metrics_match_tf_estimator():
    """Vector B7."""
    head = heads.BinaryClassHead(weight_column='label_weights')
    loss, metrics = evaluate(head, [[1], [1], [0]], [[45], [-41], [44]],
                             {'label_weights': np.array([[1.], [0.1], [1.5]])})
    w = (1.0, 0.1, 1.5)
    sw = sum(w)
    assert loss == pytest.approx((0 + 0.1 * 41 + 1.5 * 44) / 3, rel=1e-6)
    assert_metrics(metrics, {
        'average_loss': (0 + 0.1 * 41 + 1.5 * 44) / sw,
        'accuracy': 1.0 / sw,                       # only the first example is right
        'precision': 1.0 / (1.0 + 1.5),             # predicted positive: rows 1 and 3
        'recall': 1.0 / (1.0 + 0.1),
        'prediction/mean': (1.0 + 0 + 1.5) / sw,
        'label/mean': (1.0 + 0.1) / sw,
        'accuracy_baseline': 1 - (1.0 + 0.1) / sw,
        # ROC: the positive at p = 1 ties the negative at p = 1 (float32 sigmoid saturates):
        # the trapezoid gives (1·1.5·½) / (1.1·1.5); recorded 0.4545454539.
        'auc': 0.75 / 1.65,
        'auc_precision_recall': 0.4010626639,       # recorded
    }, rel=1e-6)


def test_binary_rank3_logits_and_weights_match_tf_estimator():
    """Vector B8."""
    head = heads.BinaryClassHead(weight_column='weights')
    logits = np.array([[[10], [-10]], [[12], [-12]]])
    labels = np.array([[[0], [0]], [[1], [1]]])
    w = np.array([[1., 1.5], [2., 2.5]])
    loss, metrics = evaluate(head, labels, logits, {'weights': w})
    per = [sce(10, 0), sce(-10, 0), sce(12, 1), sce(-12, 1)]
    ws = [1., 1.5, 2., 2.5]
    assert loss == pytest.approx(sum(a * b for a, b in zip(per, ws)) / 4, rel=1e-6)
    assert loss == pytest.approx(10.0000353, abs=1e-5)  # recorded
    assert_metrics(metrics, {
        'average_loss': sum(a * b for a, b in zip(per, ws)) / 7,
        'accuracy': (1.5 + 2) / 7, 'precision': 2 / (1 + 2), 'recall': 2 / (2 + 2.5),
        'prediction/mean': (1 * sigmoid(10) + 1.5 * sigmoid(-10) + 2 * sigmoid(12)
                            + 2.5 * sigmoid(-12)) / 7,
        'label/mean': 4.5 / 7, 'accuracy_baseline': 4.5 / 7,
        'auc': 0.5222222, 'auc_precision_recall': 0.6582286,  # recorded
    }, rel=1e-6, abs_=1e-6)


def test_binary_predictions_keys_values_and_dtypes():
    """Vectors B9, B10."""
    preds = heads.BinaryClassHead().array_predictions(np.array([[0.3], [-0.4]]))
    assert list(preds) == ['logits', 'logistic', 'probabilities', 'class_ids', 'classes',
                           'all_class_ids', 'all_classes']
    np.testing.assert_allclose(preds['logistic'], [[sigmoid(0.3)], [sigmoid(-0.4)]], rtol=1e-6)
    np.testing.assert_allclose(preds['probabilities'],
                               [[0.425557, 0.574443], [0.598688, 0.401312]], atol=1e-6)
    assert preds['logits'].dtype == preds['logistic'].dtype == np.float32
    assert preds['class_ids'].dtype == np.int64 and preds['all_class_ids'].dtype == np.int32
    np.testing.assert_array_equal(preds['class_ids'], [[1], [0]])
    assert preds['classes'].tolist() == [['1'], ['0']]
    np.testing.assert_array_equal(preds['all_class_ids'], [[0, 1], [0, 1]])
    assert preds['all_classes'].tolist() == [['0', '1'], ['0', '1']]
    vocab = heads.BinaryClassHead(label_vocabulary=['aang', 'iroh'])
    assert vocab.array_predictions(np.array([[1.], [0.]]))['classes'].tolist() == [['iroh'],
                                                                                  ['aang']]
    # x = 0 and NaN → class 0 (argmax of [0, x] takes the first).
    np.testing.assert_array_equal(
        heads.BinaryClassHead().array_predictions(np.array([[0.], [np.nan]]))['class_ids'],
        [[0], [0]])


def test_binary_prediction_keys_and_rank3_all_classes():
    head = heads.BinaryClassHead()
    preds = head.array_predictions(np.zeros((2, 3, 1)), keys=['classes', 'logits'])
    assert list(preds) == ['logits', 'classes']
    assert head.array_predictions(np.zeros((2, 3, 1)))['all_classes'].shape == (2, 2)  # [D0, n]
    with pytest.raises(ValueError, match=r'Prediction key must be in PredictionKeys, given: '
                                         r'bad\.Valid prediction keys include \[\'logits\''):
        head.array_predictions(np.zeros((2, 1)), keys=['bad'])
    with pytest.raises(ValueError, match='logits shape'):  # X20
        head.array_predictions(np.array([[45., 44.], [41., 42.]]))


def test_binary_vocabulary_labels_as_str_bytes_or_list():
    """Vector B11."""
    head = heads.BinaryClassHead(label_vocabulary=['aang', 'iroh'])
    for labels in (np.array([['iroh'], ['iroh']], dtype=object), np.array([[b'iroh'], [b'iroh']]),
                   ['iroh', 'iroh']):
        loss, metrics = evaluate(head, labels, [[45], [-41]])
        assert loss == pytest.approx(41 / 2)
        assert metrics['accuracy'] == 0.5


def test_binary_head_name_suffixes_every_metric_key():
    """Vector B12."""
    head = heads.BinaryClassHead(name='some_binary_head', thresholds=[0.5])
    state = head.new_state().update(np.array([[1], [1]]), np.array([[45], [-41]]))
    assert set(state.result()) == {k + '/some_binary_head' for k in BINARY_KEYS | {
        'accuracy/positive_threshold_0.5', 'precision/positive_threshold_0.5',
        'recall/positive_threshold_0.5'}}
    assert set(state.bounds()) == {'auc/some_binary_head'}


def test_binary_loss_fn_gets_processed_float32_numpy_labels():
    """Vector B13."""
    seen = {}

    def loss_fn(labels, logits):
        seen['labels'], seen['logits'] = labels, logits
        return np.array([[1.], [2.]])

    head = heads.BinaryClassHead(loss_fn=loss_fn)
    loss, metrics = evaluate(head, [[1], [0]], [[-10.], [10.]])
    assert loss == pytest.approx((1 + 2) / 2)
    assert metrics['average_loss'] == pytest.approx((1 + 2) / 2)
    assert isinstance(seen['labels'], np.ndarray) and seen['labels'].dtype == np.float32
    np.testing.assert_array_equal(seen['labels'], [[1.], [0.]])
    assert seen['logits'].dtype == np.float32


def test_binary_loss_fn_tensor_like_result_and_shape_check():
    class TensorLike:  # stands in for a tf.Tensor: converted through np.asarray
        def __init__(self, value):
            self._value = np.asarray(value)

        def __array__(self, dtype=None, copy=None):
            return self._value if dtype is None else self._value.astype(dtype)

    head = heads.BinaryClassHead(loss_fn=lambda labels, logits: TensorLike([[3.], [5.]]))
    loss, _ = evaluate(head, [[1], [0]], [[1.], [2.]])
    assert loss == pytest.approx((3 + 5) / 2)
    bad = heads.BinaryClassHead(loss_fn=lambda labels, logits: np.ones(2))  # X28
    with pytest.raises(ValueError, match='loss_shape'):
        bad.new_state().update(np.array([[1], [0]]), np.array([[1.], [2.]]))


def test_binary_loss_fn_receives_features_when_it_names_them():
    """Vector E10."""
    head = heads.BinaryClassHead(
        loss_fn=lambda labels, logits, features: np.ones_like(logits) * np.size(features['x']))
    loss, metrics = evaluate(head, [[1.], [0.]], [[1.], [2.]], {'x': np.array([[1.], [1.]])})
    assert loss == 2.0
    assert_metrics(metrics, {
        'average_loss': 2.0, 'accuracy': 0.5, 'precision': 0.5, 'recall': 1.0,
        'prediction/mean': (sigmoid(1) + sigmoid(2)) / 2, 'label/mean': 0.5,
        'accuracy_baseline': 0.5, 'auc': 0.0, 'auc_precision_recall': 0.3068528})  # recorded


# -------------------------------------------------------------------------------------------------
# BinaryClassHead: degenerate cases (E vectors).
# -------------------------------------------------------------------------------------------------

def test_binary_empty_batch_and_empty_state_give_zeros():
    """Vector E1."""
    head = heads.BinaryClassHead(thresholds=[0.5])
    for state in (head.new_state(),
                  head.new_state().update(np.zeros((0, 1)), np.zeros((0, 1)))):
        assert state.loss() == 0.0
        assert all(v == 0.0 for v in state.result().values())
        assert len(state.result()) == len(BINARY_KEYS) + 3
        assert state.counts() == (0, 0.0)
        assert list(state.bounds()) == ['auc'] and np.isnan(state.bounds()['auc']).all()


def test_binary_nan_and_inf_logits_give_nan_loss_and_invalid_rows():
    """Vector E2."""
    head = heads.BinaryClassHead()
    loss, metrics = evaluate(head, [[1.], [0.]], [[np.nan], [1.]])
    assert math.isnan(loss)
    assert_metrics(metrics, {
        'average_loss': float('nan'), 'prediction/mean': float('nan'), 'accuracy': 0.0,
        'precision': 0.0, 'recall': 0.0, 'label/mean': 0.5, 'accuracy_baseline': 0.5, 'auc': 0.0,
        'auc_precision_recall': 0.0})
    loss, metrics = evaluate(head, [[1.], [0.]], [[np.inf], [-np.inf]])
    assert math.isnan(loss)  # inf − inf, as in TF
    assert_metrics(metrics, {
        'average_loss': float('nan'), 'accuracy': 1.0, 'precision': 1.0, 'recall': 1.0,
        'prediction/mean': 0.5, 'label/mean': 0.5, 'accuracy_baseline': 0.5, 'auc': 1.0,
        'auc_precision_recall': 1.0})
    problems = head.invalid_rows(np.array([[1.], [0.], [1.]]),
                                 np.array([[np.nan], [1.], [np.inf]]))
    assert [(role, mask.tolist()) for role, _, mask in problems] == [
        ('logits', [True, False, True])]


def test_binary_all_zero_weights_give_zero_loss_and_metrics():
    """Vector E4."""
    head = heads.BinaryClassHead(weight_column='w')
    loss, metrics = evaluate(head, [[1.], [0.]], [[1.], [2.]], {'w': np.array([0., 0.])})
    assert loss == 0.0
    assert metrics == {k: 0.0 for k in BINARY_KEYS}


def test_binary_negative_weights_are_used_as_given():
    """Vector E5."""
    head = heads.BinaryClassHead(weight_column='w')
    loss, metrics = evaluate(head, [[1.], [0.]], [[1.], [-2.]], {'w': np.array([1., -1.])})
    assert loss == pytest.approx((sce(1, 1) - sce(-2, 0)) / 2)
    assert loss == pytest.approx(0.0931668, abs=1e-6)  # recorded
    assert_metrics(metrics, {
        'average_loss': 0.0, 'accuracy': 0.0, 'precision': 1.0, 'recall': 1.0,
        'prediction/mean': 0.0, 'label/mean': 0.0, 'accuracy_baseline': 0.0, 'auc': 1.0,
        'auc_precision_recall': 1.0})
    lo, hi = head.new_state().update(np.array([[1.], [0.]]), np.array([[1.], [-2.]]),
                                     {'w': np.array([1., -1.])}).bounds()['auc']
    assert math.isnan(lo) and math.isnan(hi)  # no bound holds with negative weights


def test_binary_no_positives_no_negatives():
    head = heads.BinaryClassHead()
    _, metrics = evaluate(head, [[0], [0]], [[1.], [-1.]])
    assert (metrics['auc'], metrics['auc_precision_recall'], metrics['precision'],
            metrics['recall']) == (0.0, 0.0, 0.0, 0.0)
    assert metrics['accuracy_baseline'] == 1.0
    _, metrics = evaluate(head, [[1], [1]], [[1.], [-1.]])
    assert (metrics['auc'], metrics['auc_precision_recall']) == (0.0, pytest.approx(1.0))


# -------------------------------------------------------------------------------------------------
# BinaryClassHead: input errors and invalid_rows.
# -------------------------------------------------------------------------------------------------

def test_binary_input_errors_match_tf_face():
    head = heads.BinaryClassHead()
    with pytest.raises(ValueError, match=r'You must provide a labels Tensor\. Given: None\.'):
        head.new_state().update(None, np.zeros((2, 1)))  # X19
    with pytest.raises(ValueError, match='Mismatched label shape'):  # X21
        head.array_loss(np.array([[45., 44.], [41., 42.]]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match='labels shape'):  # X22
        head.array_loss(np.zeros((3, 1)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r'Labels must be <= 2 - 1'):  # X23
        head.new_state().update(np.array([[1.2], [0.4]]), np.zeros((2, 1)))
    vocab = heads.BinaryClassHead(label_vocabulary=['a', 'b'])
    with pytest.raises(ValueError, match=r'Labels must be >= 0'):  # X40: unknown string
        vocab.new_state().update(np.array([['z']], dtype=object), np.zeros((1, 1)))
    with pytest.raises(TypeError, match="must be <dtype: 'string'>"):
        vocab.array_loss(np.array([[1]]), np.zeros((1, 1)))
    with pytest.raises(ValueError, match='weights shape'):  # X32
        heads.BinaryClassHead(weight_column='w').array_loss(
            np.zeros((2, 2, 1)), np.zeros((2, 2, 1)), {'w': np.ones(2)})


def test_binary_failed_update_leaves_state_unchanged():
    head = heads.BinaryClassHead()
    state = head.new_state().update(np.array([[1], [0]]), np.array([[1.], [-1.]]))
    before = state.result()
    with pytest.raises(ValueError):
        state.update(np.array([[2]]), np.array([[1.]]))
    assert state.result() == before and state.counts() == (2, 2.0)


def test_binary_invalid_rows():
    head = heads.BinaryClassHead(weight_column='w')
    labels = np.array([[1.2], [0.4], [-1.], [1.], [0.]])
    logits = np.array([[0.], [np.nan], [0.], [0.], [0.]])
    w = np.array([1., 1., 1., np.inf, 1.])
    problems = head.invalid_rows(labels, logits, {'w': w})
    assert [(role, reason, mask.tolist()) for role, reason, mask in problems] == [
        ('logits', problems[0][1], [False, True, False, False, False]),
        ('labels', 'Labels must be <= 2 - 1', [True, False, False, False, False]),
        ('labels', 'Labels must be >= 0', [False, False, True, False, False]),
        ('w', 'Weights must be finite', [False, False, False, True, False])]
    assert 'finite' in problems[0][1]
    ok = head.invalid_rows(np.array([[1], [0]]), np.array([[1.], [2.]]), {'w': np.ones(2)})
    assert ok == []
    # Whole-batch problems mark every row, with the TF face's message.
    (role, reason, mask), = head.invalid_rows(np.zeros((2, 1)), np.zeros((2, 2)), {'w': np.ones(2)})
    assert role == 'logits' and reason.startswith('logits shape') and mask.tolist() == [True] * 2
    (role, reason, mask), = head.invalid_rows(np.zeros((2, 1)), np.zeros((2, 1)), {})
    assert (role, reason, mask.tolist()) == ('w', 'Feature w is not in features dictionary.',
                                             [True, True])


def test_binary_invalid_rows_unknown_vocabulary_string():
    head = heads.BinaryClassHead(label_vocabulary=['no', 'yes'])
    (role, reason, mask), = head.invalid_rows(
        np.array(['yes', 'maybe', 'no'], dtype=object), np.zeros((3, 1)))
    assert role == 'labels' and reason.startswith('Labels must be >= 0')
    assert 'label_vocabulary' in reason and mask.tolist() == [False, True, False]


# -------------------------------------------------------------------------------------------------
# RegressionHead and the GLMs: tf.estimator 2.15 vectors.
# -------------------------------------------------------------------------------------------------

def test_regression_unweighted_loss_metrics_and_predictions_match_tf_estimator():
    """Vectors R1, R3, E8."""
    loss, metrics = evaluate(heads.RegressionHead(), [[43], [44]], [[45], [41]])
    assert loss == ((45 - 43) ** 2 + (41 - 44) ** 2) / 2 == 6.5
    assert metrics == {'average_loss': 6.5, 'prediction/mean': (45 + 41) / 2,
                       'label/mean': (43 + 44) / 2}
    loss, _ = evaluate(heads.RegressionHead(loss_reduction='sum'), [[43], [44]], [[45], [41]])
    assert loss == 4 + 9
    loss, _ = evaluate(heads.RegressionHead(loss_reduction='auto'), [[43], [44]], [[45], [41]])
    assert loss == 6.5
    preds = heads.RegressionHead().array_predictions(np.array([[45], [41]]))
    assert list(preds) == ['predictions'] and preds['predictions'].dtype == np.float32


def test_regression_weighted_loss_and_metrics_match_tf_estimator():
    """Vectors R4, R11."""
    head = heads.RegressionHead(weight_column='label_weights')
    w = (1.0, 0.1, 1.5)
    sq = ((45 - 35) ** 2, (41 - 42) ** 2, (44 - 45) ** 2)
    for labels, weights in (([[35], [42], [45]], np.array([[1.], [0.1], [1.5]])),
                            ([35., 42., 45.], np.array([1., 0.1, 1.5]))):  # R11: rank 1
        loss, metrics = evaluate(head, labels, [[45], [41], [44]], {'label_weights': weights})
        assert loss == pytest.approx(sum(a * b for a, b in zip(sq, w)) / 3, rel=1e-6)
        assert_metrics(metrics, {
            'average_loss': sum(a * b for a, b in zip(sq, w)) / sum(w),
            'prediction/mean': (45 * 1 + 41 * 0.1 + 44 * 1.5) / 2.6,
            'label/mean': (35 * 1 + 42 * 0.1 + 45 * 1.5) / 2.6})
        assert metrics['average_loss'] == pytest.approx(39.0769231, rel=1e-6)  # recorded


def test_regression_weight_column_normalizer_is_applied():
    """Vector R5."""
    class NumericColumn:  # what tf.feature_column.numeric_column exposes to the head
        key = 'label_weights'

        @staticmethod
        def normalizer_fn(x):
            return x + 1.

    head = heads.RegressionHead(weight_column=NumericColumn())
    loss, _ = evaluate(head, [[35], [42], [45]], [[45], [41], [44]],
                       {'label_weights': np.array([[0.], [-0.9], [0.5]])})
    assert loss == pytest.approx((100 * 1 + 1 * 0.1 + 1 * 1.5) / 3, rel=1e-6)


def test_regression_per_logit_weights_match_tf_estimator():
    """Vectors R6, E9."""
    head = heads.RegressionHead(weight_column='label_weights', label_dimension=3)
    loss, metrics = evaluate(head, [[35., 42., 45.]], [[45., 41., 44.]],
                             {'label_weights': np.array([[1., 0.1, 1.5]])})
    assert loss == pytest.approx((100 * 1 + 1 * 0.1 + 1 * 1.5) / 3, rel=1e-6)
    assert metrics['average_loss'] == pytest.approx(101.6 / 2.6, rel=1e-6)
    head = heads.RegressionHead(label_dimension=2, weight_column='w')
    loss, metrics = evaluate(head, [[0., 0.], [0., 0.]], [[1., 2.], [3., 4.]],
                             {'w': np.array([[1., 0.], [0., 1.]])})
    assert loss == (1 * 1 + 16 * 1) / 4 == 4.25
    assert metrics == {'average_loss': 17 / 2, 'prediction/mean': (1 + 4) / 2, 'label/mean': 0.0}


def test_regression_rank3_logits_match_tf_estimator():
    """Vector R7."""
    head = heads.RegressionHead(weight_column='label_weights', label_dimension=3)
    logits = np.array([[[0., 1., 2.], [10., 11., 12.]], [[20., 21., 22.], [30., 31., 32.]]])
    labels = np.array([[[1., 2., 3.], [12., 13., 14.]], [[23., 24., 25.], [34., 35., 36.]]])
    w = np.array([[1., 1.5], [2., 2.5]])
    state = head.new_state().update(labels, logits, {'label_weights': w})
    # squared errors per example: 1, 4, 9, 16 (each over 3 dims); weighted Σ = 3·(1 + 6 + 18 + 40)
    assert state.loss() == 3 * (1 * 1 + 1.5 * 4 + 2 * 9 + 2.5 * 16) / 12 == 16.25
    assert_metrics(state.result(), {'average_loss': 195 / 21,
                                    'prediction/mean': 9.2857143 + 10.2857143,
                                    'label/mean': 22.4285714})
    assert state.counts() == (4, 7.0)


def test_regression_states_of_single_rows_merge_to_the_whole_batch():
    """Vector R8."""
    head = heads.RegressionHead(weight_column='label_weights')
    batches = [([[35.]], [[45.]], [[1.]]), ([[42.]], [[41.]], [[0.1]]),
               ([[45.]], [[44.]], [[1.5]])]
    states = [head.new_state().update(np.array(y), np.array(x), {'label_weights': np.array(w)})
              for y, x, w in batches]
    assert [s.loss() for s in states] == pytest.approx([100., 0.1, 1.5], rel=1e-6)
    merged = states[2].merge(states[0]).merge(states[1])
    assert_metrics(merged.result(), {'average_loss': 101.6 / 2.6,
                                     'prediction/mean': (45 + 4.1 + 66) / 2.6,
                                     'label/mean': (35 + 4.2 + 67.5) / 2.6})


def test_regression_inverse_link_predictions_and_custom_loss_fn():
    """Vectors R9, R10."""
    head = heads.RegressionHead(inverse_link_fn=lambda x: x - 10.)
    preds = head.array_predictions(np.array([[45], [41]]))
    assert list(preds) == ['predictions', 'logits']
    np.testing.assert_array_equal(preds['predictions'], [[35.], [31.]])
    assert preds['predictions'].dtype == preds['logits'].dtype == np.float32
    _, metrics = evaluate(head, [[0.], [0.]], [[45], [41]])
    assert metrics['prediction/mean'] == (35 + 31) / 2  # the link is used in metrics too
    head = heads.RegressionHead(label_dimension=2,
                                loss_fn=lambda labels, logits: np.array([[0., 1.], [2., 3.]]))
    loss, _ = evaluate(head, [[1., 0.], [2., -1.]], [[-1., 1.], [-2., 2.]])
    assert loss == (0 + 1 + 2 + 3) / (2 * 2)


def test_poisson_loss_metrics_and_predictions_match_tf_estimator():
    """Vector P1."""
    head = heads.PoissonRegressionHead()
    loss, metrics = evaluate(head, [[1], [2], [3]], [[0], [-1], [1]])

    def full(x, z):
        stirling = z * math.log(z) - z + 0.5 * math.log(2 * math.pi * z) if z > 1 else 0.0
        return math.exp(x) - x * z + stirling

    expected = (full(0, 1) + full(-1, 2) + full(1, 3)) / 3
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss == pytest.approx(1.8340164, abs=1e-6)  # recorded
    assert_metrics(metrics, {'average_loss': expected,
                             'prediction/mean': (1 + math.exp(-1) + math.e) / 3,
                             'label/mean': 2.0})
    preds = head.array_predictions(np.array([[0], [-1], [1]]))
    np.testing.assert_allclose(preds['predictions'], [[1.], [0.3678794], [2.7182817]], rtol=1e-6)
    partial = heads.PoissonRegressionHead(compute_full_loss=False)
    loss, _ = evaluate(partial, [[1], [2], [3]], [[0], [-1], [1]])
    assert loss == pytest.approx((1 + (math.exp(-1) + 2) + (math.e - 3)) / 3)


def test_logistic_regression_matches_tf_estimator_and_refuses_labels_outside_0_1():
    """Vectors G1, G2."""
    head = heads.LogisticRegressionHead()
    loss, metrics = evaluate(head, [[.4], [.6], [.8]], [[0], [-1], [1]])
    expected = (sce(0, .4) + sce(-1, .6) + sce(1, .8)) / 3
    assert loss == pytest.approx(expected, rel=1e-6)
    assert loss == pytest.approx(0.7065569, abs=1e-6)  # recorded
    assert_metrics(metrics, {'average_loss': expected, 'prediction/mean': 0.5,
                             'label/mean': 0.6})
    preds = head.array_predictions(np.array([[0], [-1], [1]]))
    np.testing.assert_allclose(preds['predictions'], [[0.5], [0.2689414], [0.7310586]], rtol=1e-6)
    for bad in ([[.4], [1.2], [.8]], [[.4], [-0.2], [.8]]):
        with pytest.raises(ValueError, match=r'Labels must be in range \[0, 1\]'):
            head.new_state().update(np.array(bad), np.array([[0], [-1], [1]]))
        (role, reason, mask), = head.invalid_rows(np.array(bad), np.array([[0], [-1], [1]]))
        assert (role, reason, mask.tolist()) == ('labels', 'Labels must be in range [0, 1]',
                                                 [False, True, False])


def test_regression_errors_and_invalid_rows():
    head = heads.RegressionHead(label_dimension=3)
    with pytest.raises(ValueError, match='logits shape'):  # X33
        head.array_loss(np.zeros((2, 3)), np.array([[45.], [41.]]))
    problems = heads.RegressionHead(weight_column='w').invalid_rows(
        np.array([[1.], [np.nan], [2.]]), np.array([[0.], [0.], [-np.inf]]),
        {'w': np.array([1., 1., np.nan])})
    assert [(role, mask.tolist()) for role, _, mask in problems] == [
        ('logits', [False, False, True]), ('labels', [False, True, False]),
        ('w', [False, False, True])]
    poisson = heads.PoissonRegressionHead()
    (role, reason, mask), = poisson.invalid_rows(np.array([[1.], [-1.]]), np.zeros((2, 1)))
    assert role == 'labels' and mask.tolist() == [False, True]
    assert math.isnan(poisson.new_state().update(np.array([[-1.]]), np.zeros((1, 1))).loss())
    assert heads.PoissonRegressionHead(compute_full_loss=False).invalid_rows(
        np.array([[-1.]]), np.zeros((1, 1))) == []


def test_regression_empty_state():
    for head in (heads.RegressionHead(), heads.PoissonRegressionHead(name='p'),
                 heads.LogisticRegressionHead()):
        state = head.new_state()
        assert state.loss() == 0.0 and set(state.result().values()) == {0.0}
        assert state.counts() == (0, 0.0) and state.bounds() == {}
        assert all(len(v) == 0 for v in state.plots().values())
    assert set(heads.PoissonRegressionHead(name='p').new_state().result()) == {
        k + '/p' for k in REGRESSION_KEYS}


def test_array_loss_shapes():
    head = heads.BinaryClassHead(weight_column='w')
    loss = head.array_loss(np.array([1, 0]), np.array([[45.], [44.]]), {'w': np.array([2., 3.])})
    assert loss.shape == (2, 1) and loss.dtype == np.float64
    np.testing.assert_allclose(loss, [[2 * sce(45, 1)], [3 * sce(44, 0)]])
    reg = heads.RegressionHead(label_dimension=2)
    assert reg.array_loss(np.zeros((3, 2)), np.ones((3, 2))).shape == (3, 2)


# -------------------------------------------------------------------------------------------------
# States: merge-order independence, pickling, plots.
# -------------------------------------------------------------------------------------------------

_HEADS = [
    lambda: heads.BinaryClassHead(weight_column='w', thresholds=[0.3, 0.7], name='b'),
    lambda: heads.BinaryClassHead(label_vocabulary=['n', 'y'], loss_reduction='sum'),
    lambda: heads.RegressionHead(label_dimension=2, weight_column='w'),
    lambda: heads.PoissonRegressionHead(weight_column='w'),
    lambda: heads.LogisticRegressionHead(),
]


def _data(kind, rng, n):
    w = rng.uniform(0, 2, n)
    if kind == 0:
        return rng.integers(0, 2, (n, 1)).astype(float), rng.normal(0, 2, (n, 1)), {'w': w}
    if kind == 1:
        return (np.array(['n', 'y'], dtype=object)[rng.integers(0, 2, (n, 1))],
                rng.normal(0, 2, (n, 1)), None)
    if kind == 2:
        return rng.normal(0, 1, (n, 2)), rng.normal(0, 1, (n, 2)), {'w': w}
    if kind == 3:
        return rng.poisson(2.0, (n, 1)).astype(float), rng.normal(0.5, 0.5, (n, 1)), {'w': w}
    return rng.random((n, 1)), rng.normal(0, 1, (n, 1)), None


def _take(features, idx):
    return None if features is None else {k: v[idx] for k, v in features.items()}


@settings(max_examples=20, deadline=None)
@given(kind=st.integers(0, len(_HEADS) - 1), n=st.integers(0, 30), seed=st.integers(0, 999),
       n_parts=st.integers(1, 4))
def test_head_state_merge_order_independent(kind, n, seed, n_parts):
    rng = np.random.default_rng(seed)
    head = _HEADS[kind]()
    labels, logits, features = _data(kind, rng, n)
    whole = head.new_state().update(labels, logits, features)
    parts = np.split(rng.permutation(n), np.sort(rng.integers(0, n + 1, n_parts - 1)))
    states = [head.new_state().update(labels[p], logits[p], _take(features, p)) for p in parts]
    order = rng.permutation(len(states))
    merged = states[order[0]]
    for i in order[1:]:
        merged = merged.merge(states[i])
    expected = whole.result()
    for key, value in merged.result().items():
        assert value == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    assert merged.loss() == pytest.approx(whole.loss(), rel=1e-9, abs=1e-12)
    assert merged.counts()[0] == n
    assert merged.counts()[1] == pytest.approx(whole.counts()[1], rel=1e-9, abs=1e-12)
    for key, (lo, hi) in merged.bounds().items():
        assert (lo, hi) == pytest.approx(whole.bounds()[key], rel=1e-9, abs=1e-12, nan_ok=True)


def test_head_states_pickle_and_refuse_foreign_merges():
    rng = np.random.default_rng(1)
    labels, logits, features = _data(0, rng, 50)
    head = _HEADS[0]()
    state = head.new_state().update(labels, logits, features)
    data = pickle.dumps(state)
    assert len(data) < 16 * 1024
    restored = pickle.loads(data)
    assert restored.result() == state.result() and restored.loss() == state.loss()
    assert restored.bounds() == state.bounds()
    other = heads.BinaryClassHead(name='other').new_state()
    with pytest.raises(ValueError, match='Cannot merge'):
        state.merge(other)
    with pytest.raises(ValueError, match='Cannot merge'):
        state.merge(heads.RegressionHead(name='b').new_state())
    snapshot = other.result()
    heads.BinaryClassHead(name='other').new_state().merge(other)
    assert other.result() == snapshot


def test_binary_bounds_contain_exact_auc_and_plots():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(4)
    n = 300
    labels = rng.integers(0, 2, (n, 1))
    logits = np.round(rng.normal(0, 3, (n, 1)) + labels, 1)
    w = rng.uniform(0.1, 2, n)
    head = heads.BinaryClassHead(weight_column='w')
    state = head.new_state().update(labels, logits, {'w': w})
    p = 1 / (1 + np.exp(-logits.astype(np.float32).astype(np.float64)))
    lo, hi = state.bounds()['auc']
    exact = roc_auc_score(labels[:, 0], np.float32(p[:, 0]), sample_weight=np.float32(w))
    assert lo <= exact <= hi and hi - lo < 0.01
    # Keras' 200-bucket AUC is close to, but not necessarily inside, the exact interval.
    assert abs(state.result()['auc'] - exact) < 0.01
    plots = state.plots()
    conf = plots['curve'] == 'confusion'
    assert conf.sum() == 200 and (plots['sub_key'] == '').all()
    # At threshold τ_0 every example is predicted positive: tp = Σw of positives.
    first = np.flatnonzero(conf)[0]
    w32 = np.float32(w).astype(np.float64)  # weights are float32 features, summed in float64
    pos_w = float(np.sum(w32[labels[:, 0] == 1]))
    assert plots['tp'][first] == pytest.approx(pos_w, rel=1e-12)
    cal = plots['curve'] == 'calibration'
    assert plots['weighted_examples'][cal].sum() == pytest.approx(float(np.sum(w32)))
    assert plots['weighted_labels'][cal].sum() == pytest.approx(pos_w)
