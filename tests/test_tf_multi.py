"""TF face of MultiClassHead, MultiLabelHead and MultiHead: tf.estimator 2.15's numbers and messages.

Golden values are hand derivations (written as arithmetic, with the float64 reference losses below)
or recorded tf.estimator 2.15 values. Ids such as C3 or L7 in the docstrings name tf.estimator
2.15's test vectors; each test writes the vector's inputs and tf.estimator's outputs out in full.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

import heads  # noqa: E402

pytestmark = pytest.mark.tf

F32 = np.float32


def _sce(x, z) -> np.ndarray:
    """Reference sigmoid cross-entropy in float64: max(x, 0) − x·z + log(1 + e^−|x|)."""
    x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
    return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))


def _softmax_ce(logits, label: int) -> float:
    """Reference softmax cross-entropy in float64: logsumexp(logits) − logits[label]."""
    x = np.asarray(logits, np.float64)
    return float(np.log(np.sum(np.exp(x))) - x[label])


def re_escape(text: str) -> str:
    """A pattern matching exactly `text` (for messages full of brackets)."""
    return '^' + re.escape(text) + '$'


def _values(metrics: dict) -> dict:
    return {k: float(m.result()) for k, m in metrics.items()}


def _assert_metrics(actual: dict, expected: dict, rtol: float = 1e-5, atol: float = 1e-6):
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], value, rtol=rtol, atol=atol, err_msg=key)


def _eval(head, logits, labels, features=None, regularization_losses=None):
    features = {} if features is None else features
    loss = float(head.loss(labels, logits, features,
                           regularization_losses=regularization_losses))
    metrics = head.update_metrics(head.metrics(regularization_losses), features, logits, labels,
                                  regularization_losses=regularization_losses)
    return loss, _values(metrics)


# Shared inputs of the upstream tests.
MC_LOGITS = np.array([[10, 0, 0], [0, 10, 0]], F32)
ML_LOGITS = np.array([[-1., 1.], [-1.5, 1.5]], F32)
ML_LABELS = np.array([[1, 0], [1, 1]], np.int64)
ML_LOGITS_10 = np.array([[-10., 10.], [-15., 10.]], F32)
EPS10 = math.log1p(2 * math.exp(-10))  # softmax CE of a logit 10 ahead of two zeros

# =================================================================================================
# MultiClassHead
# =================================================================================================


def test_multi_class_unweighted_eval():
    """Vector C1."""
    # Row 0 is labelled 1 but predicts 0: CE = log(e^10 + 2) = 10 + EPS10; row 1 is right: EPS10.
    loss, metrics = _eval(heads.MultiClassHead(3), MC_LOGITS, np.array([[1], [1]]))
    expected = (_softmax_ce([10, 0, 0], 1) + _softmax_ce([0, 10, 0], 1)) / 2
    assert expected == pytest.approx(5 + EPS10)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    _assert_metrics(metrics, {'average_loss': expected, 'accuracy': 1 / 2})


def test_multi_class_weighted_loss_is_not_a_weighted_mean():
    """Vector C3."""
    head = heads.MultiClassHead(3, weight_column='label_weights', name='topic')
    logits = np.array([[10, 0, 0], [0, 10, 0], [0, 0, 10]], F32)
    features = {'label_weights': np.array([[1.], [2.], [3.]], F32)}
    loss, metrics = _eval(head, logits, np.array([[1], [2], [2]]), features)
    weighted = 1 * (10 + EPS10) + 2 * (10 + EPS10) + 3 * EPS10
    np.testing.assert_allclose(loss, weighted / 3, rtol=1e-6)  # spec C3: 10.0001816
    _assert_metrics(metrics, {'average_loss/topic': weighted / 6,
                              'accuracy/topic': 3 / 6})  # only row 2 (weight 3) is right


def test_multi_class_rank3_logits_with_rank2_weights():
    """Vector C4."""
    head = heads.MultiClassHead(3, weight_column='weights')
    logits = np.array([[[10, 0, 0], [12, 0, 0]], [[0, 10, 0], [0, 15, 0]]], F32)
    labels = np.array([[[0], [1]], [[1], [2]]])
    features = {'weights': np.array([[1., 1.5], [2., 2.5]], F32)}
    loss, metrics = _eval(head, logits, labels, features)
    ces = [_softmax_ce([10, 0, 0], 0), _softmax_ce([12, 0, 0], 1), _softmax_ce([0, 10, 0], 1),
           _softmax_ce([0, 15, 0], 2)]
    weighted = float(np.dot([1., 1.5, 2., 2.5], ces))  # ≈ 1.5·12 + 2.5·15 = 55.5
    np.testing.assert_allclose(loss, weighted / 4, rtol=1e-6)  # spec C4: 13.8750731
    _assert_metrics(metrics, {'average_loss': weighted / 7, 'accuracy': (1 + 2) / 7})


def test_multi_class_sum_reduction_and_regularization():
    """Vectors C5, C6."""
    labels = np.array([[1], [1]])
    loss = heads.MultiClassHead(3, loss_reduction='sum').loss(labels, MC_LOGITS, {})
    np.testing.assert_allclose(float(loss), 10 + 2 * EPS10, rtol=1e-6)
    loss, metrics = _eval(heads.MultiClassHead(3), MC_LOGITS, labels,
                          regularization_losses=[1.5, 0.5])
    np.testing.assert_allclose(loss, 5 + EPS10 + 2.0, rtol=1e-6)
    _assert_metrics(metrics, {'average_loss': 5 + EPS10, 'regularization_loss': 2.0,
                              'accuracy': 0.5})
    spec = heads.MultiClassHead(3, name='topic').create_estimator_spec(
        {}, heads.ModeKeys.TRAIN, MC_LOGITS, labels, train_op_fn=lambda loss: 'step',
        regularization_losses=[1.5, 0.5])
    _assert_metrics({k: float(v) for k, v in spec.summaries.items()},
                    {'loss/topic': 5 + EPS10 + 2.0, 'regularization_loss/topic': 2.0})


def test_multi_class_vocabulary_labels_and_classes():
    """Vector C7."""
    head = heads.MultiClassHead(3, label_vocabulary=['aang', 'iroh', 'zuko'])
    loss, metrics = _eval(head, MC_LOGITS, np.array([[b'iroh'], [b'iroh']]))
    np.testing.assert_allclose(loss, 5 + EPS10, rtol=1e-6)
    _assert_metrics(metrics, {'average_loss': 5 + EPS10, 'accuracy': 0.5})
    preds = head.predictions(np.array([[1., 0., 0.], [0., 0., 1.]], F32))
    assert preds['classes'].numpy().tolist() == [[b'aang'], [b'zuko']]
    assert preds['all_classes'].numpy().tolist() == [[b'aang', b'iroh', b'zuko']] * 2


def test_multi_class_rank1_labels_and_weights():
    """Vector C8."""
    head = heads.MultiClassHead(3, weight_column='label_weights')
    logits = np.array([[10, 0, 0], [0, 10, 0], [0, 0, 10]], F32)
    loss = head.loss(np.array([1, 2, 2]), logits, {'label_weights': np.array([1., 2., 3.], F32)})
    np.testing.assert_allclose(float(loss), (3 * (10 + EPS10) + 3 * EPS10) / 3, rtol=1e-6)


def test_multi_class_loss_fn_gets_int64_label_ids_and_features():
    """Vector C9."""
    seen = {}

    def loss_fn(labels, logits, features):
        seen['labels'], seen['features'] = labels, features
        return tf.constant([[1.], [2.]])

    head = heads.MultiClassHead(3, loss_fn=loss_fn)
    loss = head.loss(np.array([[1], [2]], np.int32), np.array([[-10., 10., 0.], [-15., 10., 0]]),
                     {'x': 1})
    assert float(loss) == pytest.approx((1 + 2) / 2)
    assert seen['labels'].numpy().tolist() == [[1], [2]] and seen['features'] == {'x': 1}


def test_multi_class_predictions():
    """Vector C2."""
    head = heads.MultiClassHead(3)
    preds = head.predictions(np.array([[1., 0., 0.], [0., 0., 1.]], F32))
    assert list(preds) == ['logits', 'probabilities', 'class_ids', 'classes', 'all_class_ids',
                           'all_classes']
    e = math.e
    np.testing.assert_allclose(preds['probabilities'].numpy(),
                               [[e / (e + 2), 1 / (e + 2), 1 / (e + 2)],
                                [1 / (e + 2), 1 / (e + 2), e / (e + 2)]], rtol=1e-6)
    assert preds['class_ids'].dtype == tf.int64
    assert preds['class_ids'].numpy().tolist() == [[0], [2]]
    assert preds['classes'].numpy().tolist() == [[b'0'], [b'2']]
    assert preds['all_class_ids'].dtype == tf.int32
    assert preds['all_class_ids'].numpy().tolist() == [[0, 1, 2]] * 2
    assert preds['all_classes'].numpy().tolist() == [[b'0', b'1', b'2']] * 2
    # Ties go to the first maximum, as argmax does; keys select a subset.
    tie = head.predictions(np.array([[3., 3., 1.]], F32), keys=['class_ids'])
    assert list(tie) == ['class_ids'] and tie['class_ids'].numpy().tolist() == [[0]]
    spec = head.create_estimator_spec({}, heads.ModeKeys.PREDICT, np.array([[1., 0., 0.]], F32))
    assert sorted(spec.export_outputs) == ['classification', 'predict', 'serving_default']
    assert spec.export_outputs['classification'].classes.numpy().tolist() == [[b'0', b'1', b'2']]


def test_multi_class_empty_batch_and_zero_weights_give_zero():
    head = heads.MultiClassHead(3, weight_column='w')
    empty = np.zeros((0, 3), F32)
    loss, metrics = _eval(head, empty, np.zeros((0, 1), np.int64), {'w': np.zeros((0, 1), F32)})
    assert loss == 0.0 and metrics == {'average_loss': 0.0, 'accuracy': 0.0}
    loss, metrics = _eval(head, MC_LOGITS, np.array([[1], [1]]), {'w': np.zeros((2, 1), F32)})
    assert loss == 0.0 and metrics == {'average_loss': 0.0, 'accuracy': 0.0}


@pytest.mark.parametrize('head_args,labels,error,message', [
    ({}, np.array([[1.], [1.]], F32), ValueError,
     "^Labels dtype should be integer. Instead got <dtype: 'float32'>.$"),  # X24
    ({}, np.array([[45], [1]]), ValueError, r'^Labels must be <= 3 - 1$'),  # X25
    ({}, np.array([[-5], [1]]), ValueError, r'^Labels must be >= 0$'),
    ({}, tf.SparseTensor([[0, 0]], tf.constant([1], tf.int64), [2, 1]), ValueError,
     r'^SparseTensor labels are not supported\.'),  # X26
    ({}, None, ValueError, r'^You must provide a labels Tensor\. Given: None\.'),  # X19
    ({}, np.array([[1], [1], [1]]), ValueError, r'labels shape must be \[D0, D1, \.\.\. DN, 1\]'),
    ({'label_vocabulary': ['a', 'b', 'c']}, np.array([[1], [1]]), ValueError,
     "^Labels dtype should be string if there is a vocabulary. Instead got <dtype: 'int64'>$"),
    ({'label_vocabulary': ['a', 'b', 'c']}, np.array([['a'], ['z']]), ValueError,
     r'^Labels must be >= 0$'),  # out of vocabulary → id −1
])
def test_multi_class_label_errors(head_args, labels, error, message):
    with pytest.raises(error, match=message):
        heads.MultiClassHead(3, **head_args).loss(labels, MC_LOGITS, {})


def test_multi_class_logits_and_key_errors():
    head = heads.MultiClassHead(3)
    with pytest.raises(ValueError, match=r'^logits shape must be \[D0, D1, \.\.\. DN, '
                                         r'logits_dimension\], got \(2, 2\)\.$'):
        head.predictions(np.zeros((2, 2), F32))
    with pytest.raises(ValueError, match=r'^Prediction key must be in PredictionKeys, given: '
                                         r'some_invalid_key\.Valid prediction keys include'):
        head.predictions(MC_LOGITS, ['some_invalid_key'])  # X27
    with pytest.raises(ValueError, match='loss_shape'):  # X28
        heads.MultiClassHead(3, loss_fn=lambda labels, logits: tf.ones([2])).loss(
            np.array([[1], [1]]), MC_LOGITS, {})


def test_multi_class_vocabulary_inside_tf_function():
    head = heads.MultiClassHead(3, label_vocabulary=['aang', 'iroh', 'zuko'])
    fn = tf.function(lambda lb, lg: head.loss(lb, lg, {}))
    loss = fn(tf.constant([['iroh'], ['iroh']]), tf.constant(MC_LOGITS))
    np.testing.assert_allclose(float(loss), 5 + EPS10, rtol=1e-6)
    # Graph mode checks at run time, with tf.estimator's graph message.
    with pytest.raises(tf.errors.InvalidArgumentError, match='Labels must be >= 0'):
        fn(tf.constant([['iroh'], ['ozai']]), tf.constant(MC_LOGITS))


# =================================================================================================
# MultiLabelHead
# =================================================================================================

L1_LOSS = (_sce([-1., 1.], [1, 0]).mean() + _sce([-1.5, 1.5], [1, 1]).mean()) / 2  # 1.1323375
L1_METRICS = {'average_loss': L1_LOSS, 'auc': 0.3333333, 'auc_precision_recall': 0.7689509}


@pytest.mark.parametrize('labels,head_args', [
    (ML_LABELS, {}),
    (tf.SparseTensor([[0, 0], [1, 0], [1, 1]], tf.constant([0, 0, 1], tf.int64), [2, 2]), {}),
    (tf.SparseTensor([[0, 0], [1, 0], [1, 1]], ['class0', 'class0', 'class1'], [2, 2]),
     {'label_vocabulary': ['class0', 'class1']}),
    (ML_LABELS, {'label_vocabulary': ['class0', 'class1']}),  # vocabulary unused by dense labels
    (tf.ragged.constant([[0], [1, 0, 1]], tf.int64), {}),  # per-row id lists; duplicates collapse
    (tf.ragged.constant([['class0'], ['class0', 'class1']]),
     {'label_vocabulary': ['class0', 'class1']}),
], ids=['dense', 'sparse-ids', 'sparse-strings', 'dense+vocabulary', 'ragged-ids',
        'ragged-strings'])
def test_multi_label_three_label_forms_agree(labels, head_args):
    """Vector L1."""
    loss, metrics = _eval(heads.MultiLabelHead(2, **head_args), ML_LOGITS, labels)
    np.testing.assert_allclose(loss, L1_LOSS, rtol=1e-6)
    _assert_metrics(metrics, L1_METRICS)


def test_multi_label_metrics_at_thresholds():
    """Vector L2."""
    _, metrics = _eval(heads.MultiLabelHead(2, thresholds=[0.25, 0.5, 0.75]), ML_LOGITS, ML_LABELS)
    # p = σ(logits) = [[.269, .731], [.182, .818]]; labels [[1, 0], [1, 1]] (3 positives).
    # t = 0.25: predicted [[1, 1], [0, 1]] → per-row accuracy 1/2, 1/2; TP 2, FP 1, FN 1.
    # t = 0.5: predicted [[0, 1], [0, 1]] → per-row accuracy 0/2, 1/2; TP 1, FP 1, FN 2.
    # t = 0.75: only .818 > .75: [[0, 0], [0, 1]] → accuracy 1/2, 1/2; TP 1, FP 0, FN 2.
    _assert_metrics(metrics, {**L1_METRICS,
                              'accuracy/positive_threshold_0.25': 0.5,
                              'precision/positive_threshold_0.25': 2 / 3,
                              'recall/positive_threshold_0.25': 2 / 3,
                              'accuracy/positive_threshold_0.5': 0.25,
                              'precision/positive_threshold_0.5': 1 / 2,
                              'recall/positive_threshold_0.5': 1 / 3,
                              'accuracy/positive_threshold_0.75': 0.5,
                              'precision/positive_threshold_0.75': 1.0,
                              'recall/positive_threshold_0.75': 1 / 3})


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


@pytest.mark.parametrize('head_args,labels,tags', [
    ({'classes_for_class_based_metrics': [0, 1]}, ML_LABELS, ['class0', 'class1']),
    ({'label_vocabulary': ['a', 'b'], 'classes_for_class_based_metrics': ['a', 'b'],
      'name': 'tags'},
     tf.SparseTensor([[0, 0], [1, 0], [1, 1]], ['a', 'a', 'b'], [2, 2]), ['a/tags', 'b/tags']),
], ids=['ids', 'names'])
def test_multi_label_per_class_metrics_by_id_or_name(head_args, labels, tags):
    """Vector L3."""
    _, metrics = _eval(heads.MultiLabelHead(2, **head_args), ML_LOGITS, labels)
    suffix = '/tags' if 'name' in head_args else ''
    # Class 0 is positive in both rows (no negatives: ROC AUC 0, PR AUC 1); class 1 separates
    # perfectly (σ(1.5) for the positive > σ(1) for the negative).
    _assert_metrics(metrics, {
        **{k + suffix: v for k, v in L1_METRICS.items()},
        'probability_mean/' + tags[0]: (_sigmoid(-1) + _sigmoid(-1.5)) / 2,
        'auc/' + tags[0]: 0.0, 'auc_precision_recall/' + tags[0]: 1.0,
        'probability_mean/' + tags[1]: (_sigmoid(1) + _sigmoid(1.5)) / 2,
        'auc/' + tags[1]: 1.0, 'auc_precision_recall/' + tags[1]: 1.0})


def test_multi_label_weights_and_sum_reduction():
    """Vectors L4–L6."""
    features = {'example_weights': np.array([[1.], [2.]], F32)}
    per_row = [_sce([-10., 10.], [1, 0]).mean(), _sce([-15., 10.], [1, 1]).mean()]  # ≈ 10, 7.5
    weighted = 1 * per_row[0] + 2 * per_row[1]
    head = heads.MultiLabelHead(2, weight_column='example_weights')
    loss, metrics = _eval(head, ML_LOGITS_10, ML_LABELS, features)
    np.testing.assert_allclose(loss, weighted / 2, rtol=1e-6)  # spec L4: 12.5000456
    _assert_metrics(metrics, {'average_loss': weighted / 3, 'auc': 0.2,
                              'auc_precision_recall': 0.7280372})
    head = heads.MultiLabelHead(2, weight_column='example_weights', loss_reduction='sum')
    np.testing.assert_allclose(float(head.loss(ML_LABELS, ML_LOGITS_10, features)), weighted,
                               rtol=1e-6)  # spec L6: 25.0000911


def test_multi_label_rank3_logits():
    """Vector L7."""
    head = heads.MultiLabelHead(3, weight_column='weights')
    logits = np.array([[[-10., 10., -10.], [10., -10., 10.]],
                       [[-12., 12., -12.], [12., -12., 12.]]], F32)
    labels = np.array([[[1, 0, 0], [1, 0, 0]], [[0, 1, 1], [0, 1, 1]]], np.int64)
    w = np.array([[1., 1.5], [2., 2.5]], F32)
    per_example = _sce(logits, labels).mean(axis=-1)
    weighted = float(np.sum(per_example * w))
    loss, metrics = _eval(head, logits, labels, {'weights': w})
    np.testing.assert_allclose(loss, weighted / 4, rtol=1e-6)  # spec L7: 9.9167020
    _assert_metrics(metrics, {'average_loss': weighted / 7, 'auc': 0.4977117,
                              'auc_precision_recall': 0.5460822})


def test_multi_label_predictions():
    """Vector L8."""
    logits = np.array([[0., 1., 2., -1.], [-1., -2., -3., 1.]], F32)
    preds = heads.MultiLabelHead(4).predictions(logits)
    assert list(preds) == ['logits', 'probabilities', 'classes']
    np.testing.assert_allclose(preds['probabilities'].numpy(), _sigmoid(logits), rtol=1e-6)
    assert preds['classes'].numpy().tolist() == [[b'0', b'1', b'2', b'3']] * 2
    vocab = ['foo', 'bar', 'foobar', 'barfoo']
    head = heads.MultiLabelHead(4, label_vocabulary=vocab)
    assert head.predictions(logits)['classes'].numpy().tolist() == [[v.encode() for v in vocab]] * 2
    spec = head.create_estimator_spec({}, heads.ModeKeys.PREDICT, logits)
    assert sorted(spec.export_outputs) == ['classification', 'predict', 'serving_default']
    assert spec.export_outputs['serving_default'].scores is spec.predictions['probabilities']
    with pytest.raises(ValueError, match='given: class_ids'):
        head.predictions(logits, ['class_ids'])


def test_multi_label_regularization_and_custom_loss_fn():
    """Vectors L9, L10."""
    loss, metrics = _eval(heads.MultiLabelHead(2), ML_LOGITS_10, ML_LABELS,
                          regularization_losses=[1.5, 0.5])
    plain = (_sce([-10., 10.], [1, 0]).mean() + _sce([-15., 10.], [1, 1]).mean()) / 2  # 8.75
    np.testing.assert_allclose(loss, plain + 2.0, rtol=1e-6)
    np.testing.assert_allclose(metrics['regularization_loss'], 2.0)
    seen = {}

    def loss_fn(labels, logits):
        seen['labels'] = labels
        return tf.constant([[1.], [2.]])

    sparse = tf.SparseTensor([[0, 0], [1, 0], [1, 1]], tf.constant([0, 0, 1], tf.int64), [2, 2])
    loss = heads.MultiLabelHead(2, loss_fn=loss_fn).loss(sparse, ML_LOGITS_10, {})
    assert float(loss) == pytest.approx(1.5)
    assert seen['labels'].dtype == tf.int64 and seen['labels'].numpy().tolist() == [[1, 0], [1, 1]]


def test_multi_label_nan_logit_gives_nan_loss_and_tf_estimator_aucs():
    """Vector E3."""
    loss, metrics = _eval(heads.MultiLabelHead(2), np.array([[np.nan, 1.], [1., -1.]], F32),
                          np.array([[1, 0], [0, 1]]))
    assert math.isnan(loss) and math.isnan(metrics['average_loss'])
    _assert_metrics({k: v for k, v in metrics.items() if k != 'average_loss'},
                    {'auc': 0.0, 'auc_precision_recall': 0.0945349})


def test_multi_label_soft_targets_and_duplicate_sparse_ids():
    """Vector E7."""
    loss, metrics = _eval(heads.MultiLabelHead(2), np.array([[1., -1.]], F32),
                          np.array([[0.5, 0.]], F32))
    np.testing.assert_allclose(loss, _sce([1., -1.], [0.5, 0.]).mean(), rtol=1e-6)  # 0.5632617
    assert metrics['auc'] == 1.0 and metrics['auc_precision_recall'] == 1.0
    duplicate = tf.SparseTensor([[0, 0], [0, 1]], tf.constant([1, 1], tf.int64), [1, 2])
    loss, metrics = _eval(heads.MultiLabelHead(3), np.array([[1., -1., 0.]], F32), duplicate)
    np.testing.assert_allclose(loss, _sce([1., -1., 0.], [0, 1, 0]).mean(), rtol=1e-6)
    _assert_metrics({k: v for k, v in metrics.items() if k != 'average_loss'},
                    {'auc': 0.0, 'auc_precision_recall': 0.1890698})


def test_multi_label_empty_batch_and_zero_weights_give_zero():
    head = heads.MultiLabelHead(2, weight_column='w', thresholds=[0.5])
    zero = {'average_loss': 0.0, 'auc': 0.0, 'auc_precision_recall': 0.0,
            'accuracy/positive_threshold_0.5': 0.0, 'precision/positive_threshold_0.5': 0.0,
            'recall/positive_threshold_0.5': 0.0}
    loss, metrics = _eval(head, np.zeros((0, 2), F32), np.zeros((0, 2), np.int64),
                          {'w': np.zeros((0,), F32)})
    assert loss == 0.0 and metrics == zero
    loss, metrics = _eval(head, ML_LOGITS, ML_LABELS, {'w': np.zeros((2,), F32)})
    assert loss == 0.0 and metrics == zero


@pytest.mark.parametrize('labels,error,message', [
    (np.array([[1], [1]]), ValueError, r'Expected labels dimension=2\.  Received 1\.'),  # X29
    (np.array([1, 1]), ValueError, r'Expected labels dimension=2\.  Received 1\.'),
    (np.array([[2, 0], [1, 1]]), ValueError,
     r'^labels must be an integer indicator Tensor with values in \[0, 1\]$'),  # X30
    (tf.SparseTensor([[0, 0], [1, 0], [1, 1]], tf.constant([2, 0, 1], tf.int64), [2, 2]),
     ValueError, r'^labels must be an integer SparseTensor with values in \[0, 2\)$'),  # X31
    (tf.SparseTensor([[0, 0]], tf.constant([1.]), [2, 2]), ValueError,
     "^Labels dtype should be integer. Instead got <dtype: 'float32'>.$"),
    (tf.SparseTensor([[0, 0]], ['z'], [2, 2]), tf.errors.InvalidArgumentError,
     'out of bounds'),  # unknown name → id −1, not range-checked (as upstream)
    (None, ValueError, r'^You must provide a labels Tensor\. Given: None\.'),
])
def test_multi_label_label_errors(labels, error, message):
    head = heads.MultiLabelHead(2, label_vocabulary=['a', 'b'])
    with pytest.raises(error, match=message):
        head.loss(labels, ML_LOGITS, {})


def test_multi_label_weight_shape_error():
    head = heads.MultiLabelHead(2, weight_column='w')
    with pytest.raises(ValueError, match=r'^weights shape must be \[D0, D1, \.\.\. DN\] or '
                                         r'\[D0, D1, \.\.\. DN, 1\], logits_shape: \(2, 2\)\. '
                                         r'weights_shape: \(2, 2\)\.$'):
        head.loss(ML_LABELS, ML_LOGITS, {'w': np.ones((2, 2), F32)})


def test_multi_label_sparse_labels_inside_tf_function():
    head = heads.MultiLabelHead(2)
    fn = tf.function(lambda lb, lg: head.loss(lb, lg, {}))
    sparse = tf.SparseTensor([[0, 0], [1, 0], [1, 1]], tf.constant([0, 0, 1], tf.int64), [2, 2])
    np.testing.assert_allclose(float(fn(sparse, tf.constant(ML_LOGITS))), L1_LOSS, rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match='integer indicator Tensor'):
        fn(tf.constant([[2, 0], [1, 1]], tf.int64), tf.constant(ML_LOGITS))


# =================================================================================================
# MultiHead
# =================================================================================================

def _two_multi_label_heads(head_weights=None, **kwargs):
    return heads.MultiHead([heads.MultiLabelHead(2, name='head1', **kwargs.get('h1', {})),
                            heads.MultiLabelHead(3, name='head2', **kwargs.get('h2', {}))],
                           head_weights=head_weights)


MH_LOGITS = {'head1': ML_LOGITS_10, 'head2': np.array([[20., -20., 20.], [-30., 20., -20.]], F32)}
MH_LABELS = {'head1': ML_LABELS, 'head2': np.array([[0, 1, 0], [1, 1, 0]], np.int64)}
H1_LOSS = (_sce([-10., 10.], [1, 0]).mean() + _sce([-15., 10.], [1, 1]).mean()) / 2  # 8.75
H2_LOSS = (_sce([20., -20., 20.], [0, 1, 0]).mean() + _sce([-30., 20., -20.], [1, 1, 0]).mean()) / 2
M1_METRICS = {'loss/head1': H1_LOSS, 'loss/head2': H2_LOSS,
              'average_loss/head1': H1_LOSS, 'average_loss/head2': H2_LOSS,
              'auc/head1': 0.1666667, 'auc/head2': 0.3333333,
              'auc_precision_recall/head1': 0.6022843, 'auc_precision_recall/head2': 0.4015228}


def test_multi_head_weighted_loss_and_metrics():
    """Vector M1."""
    assert H2_LOSS == pytest.approx(15.0)
    loss, metrics = _eval(_two_multi_label_heads([1., 2.]), MH_LOGITS, MH_LABELS)
    np.testing.assert_allclose(loss, 1 * H1_LOSS + 2 * H2_LOSS, rtol=1e-6)  # 38.75
    _assert_metrics(metrics, M1_METRICS, rtol=1e-4)
    loss = _two_multi_label_heads().loss(MH_LABELS, MH_LOGITS, {})  # no weights: plain sum
    np.testing.assert_allclose(float(loss), H1_LOSS + H2_LOSS, rtol=1e-6)  # 23.75


def test_multi_head_weight_columns_and_one_logits_tensor():
    """Vector M2."""
    head = _two_multi_label_heads([1., 2.], h1={'weight_column': 'weights1'},
                                  h2={'weight_column': 'weights2'})
    features = {'weights1': np.array([[1.], [2.]], F32), 'weights2': np.array([[2.], [3.]], F32)}
    h1 = (1 * _sce([-10., 10.], [1, 0]).mean() + 2 * _sce([-15., 10.], [1, 1]).mean()) / 2
    h2 = (2 * _sce([20., -20., 20.], [0, 1, 0]).mean()
          + 3 * _sce([-30., 20., -20.], [1, 1, 0]).mean()) / 2
    expected = 1 * h1 + 2 * h2  # 12.5 + 2·35 = 82.5
    joined = np.concatenate([MH_LOGITS['head1'], MH_LOGITS['head2']], axis=-1)
    for logits in (MH_LOGITS, joined):
        np.testing.assert_allclose(float(head.loss(MH_LABELS, logits, features)), expected,
                                   rtol=1e-6)
    in_graph = tf.function(lambda lg: head.loss(MH_LABELS, lg, features))(tf.constant(joined))
    np.testing.assert_allclose(float(in_graph), expected, rtol=1e-6)


def test_multi_head_predictions_and_export_outputs():
    """Vector M4."""
    head = _two_multi_label_heads()
    logits = {'head1': np.array([[-1., 1.], [-1.5, 1.]], F32),
              'head2': np.array([[2., -2., 2.], [-3., 2., -2.]], F32)}
    preds = head.predictions(logits, keys=['ignored'])
    assert list(preds) == [(h, k) for h in ('head1', 'head2')
                           for k in ('logits', 'probabilities', 'classes')]
    np.testing.assert_allclose(preds[('head2', 'probabilities')].numpy(),
                               _sigmoid(logits['head2']), rtol=1e-6)
    assert preds[('head2', 'classes')].numpy().tolist() == [[b'0', b'1', b'2']] * 2
    spec = head.create_estimator_spec({}, heads.ModeKeys.PREDICT, logits)
    assert spec.loss is None and sorted(spec.predictions) == sorted(preds)
    assert sorted(spec.export_outputs) == ['head1', 'head1/classification', 'head1/predict',
                                           'head2', 'head2/classification', 'head2/predict',
                                           'predict', 'serving_default']
    np.testing.assert_allclose(spec.export_outputs['serving_default'].scores.numpy(),
                               _sigmoid(logits['head1']), rtol=1e-6)
    assert sorted(spec.export_outputs['predict'].outputs) == [
        'head1/classes', 'head1/logits', 'head1/probabilities',
        'head2/classes', 'head2/logits', 'head2/probabilities']


def test_multi_head_eval_and_train_specs():
    """Vector M5."""
    head = _two_multi_label_heads([1., 2.])
    spec = head.create_estimator_spec({}, heads.ModeKeys.EVAL, MH_LOGITS, MH_LABELS)
    np.testing.assert_allclose(float(spec.loss), H1_LOSS + 2 * H2_LOSS, rtol=1e-6)
    _assert_metrics({k: float(v[0]) for k, v in spec.eval_metric_ops.items()}, M1_METRICS,
                    rtol=1e-4)
    spec = head.create_estimator_spec({}, heads.ModeKeys.TRAIN, MH_LOGITS, MH_LABELS,
                                      train_op_fn=lambda loss: 'step',
                                      regularization_losses=[1.5, 0.5])
    assert spec.train_op == 'step' and spec.eval_metric_ops == {}
    _assert_metrics({k: float(v) for k, v in spec.summaries.items()},
                    {'loss': H1_LOSS + 2 * H2_LOSS + 2.0, 'regularization_loss': 2.0,
                     'loss/head1': H1_LOSS, 'loss/head2': H2_LOSS})  # 40.75
    np.testing.assert_allclose(float(spec.loss), H1_LOSS + 2 * H2_LOSS + 2.0, rtol=1e-6)


def test_multi_head_eval_spec_in_graph_mode():
    # tf.estimator built its specs in a graph with an unknown batch size; metrics update per run.
    head = heads.MultiHead([heads.MultiLabelHead(2, name='head1'),
                            heads.MultiClassHead(3, name='head2', label_vocabulary=['a', 'b', 'c'])],
                           head_weights=[1., 2.])
    logits = np.concatenate([ML_LOGITS_10, MC_LOGITS], axis=-1)
    with tf.Graph().as_default():
        placeholder = tf.compat.v1.placeholder(tf.float32, [None, 5])
        labels = {'head1': tf.SparseTensor([[0, 0], [1, 0], [1, 1]],
                                           tf.constant([0, 0, 1], tf.int64), [2, 2]),
                  'head2': tf.constant([['b'], ['a']])}
        spec = head.create_estimator_spec({}, heads.ModeKeys.EVAL, placeholder, labels)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run([op for _, op in spec.eval_metric_ops.values()], {placeholder: logits})
            values = session.run({k: v for k, (v, _) in spec.eval_metric_ops.items()})
            loss = session.run(spec.loss, {placeholder: logits})
    head2 = (_softmax_ce([10, 0, 0], 1) + _softmax_ce([0, 10, 0], 0)) / 2  # both wrong: 10 + EPS10
    np.testing.assert_allclose(loss, H1_LOSS + 2 * head2, rtol=1e-6)
    _assert_metrics(values, {'loss/head1': H1_LOSS, 'loss/head2': head2,
                             'average_loss/head1': H1_LOSS, 'auc/head1': 0.1666667,
                             'auc_precision_recall/head1': 0.6022843,
                             'average_loss/head2': head2, 'accuracy/head2': 0.0}, rtol=1e-4)


def test_multi_head_name_metric_keys_and_logits_split_error():
    """Vector M6."""
    head = heads.MultiHead([heads.MultiClassHead(3, name='a'), heads.MultiLabelHead(2, name='b')])
    assert head.name == 'a_b' and head.logits_dimension == 5
    assert list(head.metrics(regularization_losses=[1.])) == [
        'regularization_loss/a_b', 'loss/a', 'loss/b']
    with pytest.raises(ValueError, match=re_escape(
            'Could not split logits of shape [2, 6] among the heads with individual logits '
            'dimensions: [3, 2]. The last dimension of the logits tensor should equal 6 but is 5.')):
        head.predictions(np.zeros((2, 6), F32))  # the two numbers are swapped, as upstream


def test_multi_head_per_head_metrics_keep_only_the_last_batch():
    """Vector E6."""
    head = heads.MultiHead([heads.MultiClassHead(3, name='a'), heads.MultiLabelHead(2, name='b')])
    metrics = head.metrics()
    batches = [({'a': np.array([[10., 0., 0.]], F32), 'b': np.array([[0., 0.]], F32)},
                {'a': np.array([[0]]), 'b': np.array([[1, 0]])}),
               ({'a': np.array([[0., 10., 0.]], F32), 'b': np.array([[2., -2.]], F32)},
                {'a': np.array([[0]]), 'b': np.array([[1, 1]])})]
    for logits, labels in batches:
        metrics = head.update_metrics(metrics, {}, logits, labels)
    a1, a2 = EPS10, 10 + EPS10                       # batch 1 right, batch 2 wrong
    b1, b2 = math.log(2), _sce([2., -2.], [1, 1]).mean()  # ln 2, then (0.126928 + 2.126928) / 2
    _assert_metrics(_values(metrics), {
        'loss/a': (a1 + a2) / 2, 'loss/b': (b1 + b2) / 2,  # accumulated over both calls
        'average_loss/a': a2, 'accuracy/a': 0.0,          # last batch only (not 0.5)
        'average_loss/b': b2,
        'auc/b': 0.0, 'auc_precision_recall/b': 1.0})     # last batch has no negatives


def test_multi_head_input_errors():
    head = _two_multi_label_heads()
    with pytest.raises(ValueError, match=re_escape("logits has missing values for head(s): "
                                                   "['head2']")):
        head.loss(MH_LABELS, {'head1': MH_LOGITS['head1']}, {})
    with pytest.raises(ValueError, match=r'^labels must be a dict\. Given: '):
        head.loss(ML_LABELS, MH_LOGITS, {})
    with pytest.raises(ValueError, match=re_escape("labels has missing values for head(s): "
                                                   "['head1']")):
        head.update_metrics(head.metrics(), {}, MH_LOGITS, {'head2': MH_LABELS['head2']})
    with pytest.raises(ValueError, match=r'^mode=predict unrecognized$'):
        head.create_estimator_spec({}, 'predict', MH_LOGITS, MH_LABELS)
    mixed = _two_multi_label_heads(h1={'loss_reduction': 'sum'})
    mixed.create_estimator_spec({}, heads.ModeKeys.EVAL, MH_LOGITS, MH_LABELS)  # EVAL is fine
    with pytest.raises(ValueError, match='The loss_reduction must be the same for different '
                                         r"heads\. Given: \['sum', 'sum_over_batch_size'\]"):
        mixed.create_estimator_spec({}, heads.ModeKeys.TRAIN, MH_LOGITS, MH_LABELS,
                                    train_op_fn=lambda loss: None)  # X37
