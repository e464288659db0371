"""TF face of BinaryClassHead, RegressionHead, PoissonRegressionHead, LogisticRegressionHead and the
shared machinery (heads/tf_face/): numbers, keys, dtypes, error texts and estimator specs.

Expected values are hand arithmetic written out in the test, or tf.estimator 2.15's recorded
values. Ids such as B7 or X19 in the docstrings name tf.estimator 2.15's test vectors; each test
writes the vector's inputs and tf.estimator's outputs out in full.
"""
import math

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

import heads  # noqa: E402
from heads.tf_face import inputs as tf_inputs, losses as tf_losses  # noqa: E402

pytestmark = pytest.mark.tf

BINARY_KEYS = ['accuracy', 'accuracy_baseline', 'auc', 'auc_precision_recall', 'average_loss',
               'label/mean', 'precision', 'prediction/mean', 'recall']


def sce(label, logit):
    """Sigmoid cross-entropy, float64: max(x, 0) - x·z + log(1 + exp(-|x|))."""
    return max(logit, 0.) - logit * label + math.log1p(math.exp(-abs(logit)))


def sigmoid(x):
    return 1. / (1. + math.exp(-x))


def results(head, logits, labels, features=None, reg=None):
    metrics = head.update_metrics(head.metrics(reg), {} if features is None else features,
                                  logits, labels, regularization_losses=reg)
    return {k: float(v.result().numpy()) for k, v in metrics.items()}


def assert_metrics(got, expected, tol=1e-6):
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=tol, nan_ok=True), key


# ---------------------------------------------------------------------------------------------
# BinaryClassHead: loss and metrics.
# ---------------------------------------------------------------------------------------------

def test_binary_loss_and_metrics_with_and_without_regularization():
    """Vectors B1, B2."""
    head = heads.BinaryClassHead()
    logits = np.array([[45], [-41]], np.float32)
    labels = np.array([[1], [1]], np.int32)
    # sce(1, 45) ≈ 0, sce(1, -41) = 41 → loss = 41 / 2
    assert float(head.loss(labels, logits, {})) == pytest.approx(20.5)
    expected = {'average_loss': 20.5, 'accuracy': 0.5, 'precision': 1.0, 'recall': 0.5,
                'prediction/mean': 0.5, 'label/mean': 1.0, 'accuracy_baseline': 1.0, 'auc': 0.0,
                'auc_precision_recall': 1.0}
    assert_metrics(results(head, logits, labels), expected)
    reg = [1.5, 0.5]
    assert float(head.loss(labels, logits, {}, regularization_losses=reg)) == pytest.approx(22.5)
    assert_metrics(results(head, logits, labels, reg=reg),
                   dict(expected, regularization_loss=2.0))


def test_binary_metrics_at_thresholds():
    """Vector B3."""
    head = heads.BinaryClassHead(thresholds=[0.25, 0.5, 0.75])
    # sigmoid(-1) = 0.269, sigmoid(1) = 0.731; both labels 1.
    got = results(head, np.array([[-1.], [1.]], np.float32), np.array([[1], [1]]))
    loss = (sce(1, -1.) + sce(1, 1.)) / 2
    assert_metrics(got, {
        'average_loss': loss, 'accuracy': 0.5, 'precision': 1.0, 'recall': 0.5,
        'prediction/mean': 0.5, 'label/mean': 1.0, 'accuracy_baseline': 1.0, 'auc': 0.0,
        'auc_precision_recall': 1.0,
        'accuracy/positive_threshold_0.25': 1.0, 'precision/positive_threshold_0.25': 1.0,
        'recall/positive_threshold_0.25': 1.0,
        'accuracy/positive_threshold_0.5': 0.5, 'precision/positive_threshold_0.5': 1.0,
        'recall/positive_threshold_0.5': 0.5,
        'accuracy/positive_threshold_0.75': 0.0, 'precision/positive_threshold_0.75': 0.0,
        'recall/positive_threshold_0.75': 0.0})


def test_binary_sum_reduction_and_rank1_labels_and_weights():
    """Vectors B4, B5."""
    logits = np.array([[45], [-41]], np.float32)
    assert float(heads.BinaryClassHead(loss_reduction='sum').loss(
        np.array([[1.], [1.]]), logits, {})) == pytest.approx(41.)
    head = heads.BinaryClassHead(weight_column='label_weights')
    loss = head.loss(np.array([1., 1., 0.]), np.array([[45], [-41], [44]], np.float32),
                     {'label_weights': np.array([1., 0.1, 1.5], np.float32)})
    # (0·1 + 41·0.1 + 44·1.5) / 3 rows (not a weighted mean)
    assert float(loss) == pytest.approx((41 * 0.1 + 44 * 1.5) / 3, rel=1e-6)


def test_binary_soft_labels():
    """Vector B6."""
    head = heads.BinaryClassHead()
    logits = np.array([[0.5], [-0.3]], np.float32)
    labels = np.array([[0.8], [0.4]], np.float32)
    loss = (sce(0.8, 0.5) + sce(0.4, -0.3)) / 2
    assert float(head.loss(labels, logits, {})) == pytest.approx(loss, abs=1e-6)
    # soft labels never equal a class id; both count as positives for precision/recall/AUC.
    assert_metrics(results(head, logits, labels), {
        'average_loss': loss, 'accuracy': 0.0, 'precision': 1.0, 'recall': 0.5,
        'prediction/mean': (sigmoid(0.5) + sigmoid(-0.3)) / 2, 'label/mean': 0.6,
        'accuracy_baseline': 0.6, 'auc': 0.0, 'auc_precision_recall': 1.0})


def test_binary_weighted_eval_metrics_match_tf_estimator():
    """Vector B7."""
    head = heads.BinaryClassHead(weight_column='label_weights')
    logits = np.array([[45], [-41], [44]], np.int32)
    labels = np.array([[1], [1], [0]])
    features = {'label_weights': np.array([[1.], [0.1], [1.5]], np.float32)}
    assert float(head.loss(labels, logits, features)) == pytest.approx(70.1 / 3, rel=1e-6)
    sw = 2.6
    assert_metrics(results(head, logits, labels, features), {
        'average_loss': 70.1 / sw,                       # (41·0.1 + 44·1.5) / Σw
        'accuracy': 1. / sw,                             # only row 0 right
        'precision': 1. / 2.5, 'recall': 1. / 1.1,       # predicted rows 0, 2; positives 0, 1
        'prediction/mean': 2.5 / sw, 'label/mean': 1.1 / sw,
        'accuracy_baseline': 1.5 / sw,
        'auc': 0.4545454539, 'auc_precision_recall': 0.4010626639})  # recorded


def test_binary_rank3_logits_and_weights():
    """Vector B8."""
    head = heads.BinaryClassHead(weight_column='weights')
    logits = np.array([[[10], [-10]], [[12], [-12]]], np.float32)
    labels = np.array([[[0], [0]], [[1], [1]]])
    features = {'weights': np.array([[1., 1.5], [2., 2.5]], np.float32)}
    u = [sce(0, 10.), sce(0, -10.), sce(1, 12.), sce(1, -12.)]
    w = [1., 1.5, 2., 2.5]
    assert float(head.loss(labels, logits, features)) == pytest.approx(
        sum(a * b for a, b in zip(u, w)) / 4, rel=1e-6)
    got = results(head, logits, labels, features)
    assert got['average_loss'] == pytest.approx(sum(a * b for a, b in zip(u, w)) / 7, rel=1e-5)
    assert got['accuracy'] == pytest.approx((1.5 + 2.) / 7)
    assert got['precision'] == pytest.approx(2. / 3.)
    assert got['recall'] == pytest.approx(2. / 4.5)
    assert got['label/mean'] == pytest.approx(4.5 / 7)
    assert got['auc'] == pytest.approx(0.5222222, abs=1e-5)
    assert got['auc_precision_recall'] == pytest.approx(0.6582286, abs=1e-5)


def test_binary_empty_batch_and_zero_weights_give_zeros():
    """Vectors E1, E4."""
    head = heads.BinaryClassHead()
    empty = np.zeros([0, 1], np.float32)
    assert float(head.loss(empty, empty, {})) == 0.0
    assert_metrics(results(head, empty, empty), dict.fromkeys(BINARY_KEYS, 0.0))
    weighted = heads.BinaryClassHead(weight_column='w')
    features = {'w': np.array([0., 0.], np.float32)}
    logits, labels = np.array([[1.], [2.]], np.float32), np.array([[1.], [0.]], np.float32)
    assert float(weighted.loss(labels, logits, features)) == 0.0
    assert_metrics(results(weighted, logits, labels, features), dict.fromkeys(BINARY_KEYS, 0.0))


def test_binary_nan_and_inf_logits_give_nan_loss():
    """Vector E2."""
    head = heads.BinaryClassHead()
    labels = np.array([[1.], [0.]], np.float32)
    nan_logits = np.array([[np.nan], [1.]], np.float32)
    assert math.isnan(float(head.loss(labels, nan_logits, {})))
    assert_metrics(results(head, nan_logits, labels), {
        'average_loss': float('nan'), 'prediction/mean': float('nan'), 'accuracy': 0.0,
        'precision': 0.0, 'recall': 0.0, 'label/mean': 0.5, 'accuracy_baseline': 0.5, 'auc': 0.0,
        'auc_precision_recall': 0.0})
    inf_logits = np.array([[np.inf], [-np.inf]], np.float32)
    assert_metrics(results(head, inf_logits, labels), {
        'average_loss': float('nan'), 'accuracy': 1.0, 'precision': 1.0, 'recall': 1.0,
        'prediction/mean': 0.5, 'label/mean': 0.5, 'accuracy_baseline': 0.5, 'auc': 1.0,
        'auc_precision_recall': 1.0})


def test_binary_negative_weights_are_used_as_given():
    """Vector E5."""
    head = heads.BinaryClassHead(weight_column='w')
    logits, labels = np.array([[1.], [-2.]], np.float32), np.array([[1.], [0.]], np.float32)
    features = {'w': np.array([1., -1.], np.float32)}
    assert float(head.loss(labels, logits, features)) == pytest.approx(
        (sce(1, 1.) - sce(0, -2.)) / 2, abs=1e-6)
    assert_metrics(results(head, logits, labels, features), {
        'average_loss': 0.0, 'accuracy': 0.0, 'precision': 1.0, 'recall': 1.0,
        'prediction/mean': 0.0, 'label/mean': 0.0, 'accuracy_baseline': 0.0, 'auc': 1.0,
        'auc_precision_recall': 1.0})


def test_binary_custom_loss_fn_gets_processed_labels_and_features():
    """Vectors B13, E10."""
    def constant_loss(labels, logits):
        assert labels.dtype == tf.float32  # processed labels
        return tf.constant([[1.], [2.]])
    head = heads.BinaryClassHead(loss_fn=constant_loss)
    assert float(head.loss(np.array([[1], [0]]), np.array([[-10.], [10.]], np.float32),
                           {})) == pytest.approx(1.5)
    with_features = heads.BinaryClassHead(
        loss_fn=lambda labels, logits, features: tf.ones_like(logits) * tf.cast(
            tf.size(features['x']), tf.float32))
    features = {'x': np.array([[1.], [1.]], np.float32)}
    logits, labels = np.array([[1.], [2.]], np.float32), np.array([[1.], [0.]], np.float32)
    assert float(with_features.loss(labels, logits, features)) == pytest.approx(2.)
    got = results(with_features, logits, labels, features)
    assert got['average_loss'] == pytest.approx(2.)
    assert got['auc_precision_recall'] == pytest.approx(0.3068528, abs=1e-6)  # recorded


def test_metrics_stream_over_batches_like_one_batch():
    head = heads.BinaryClassHead()
    metrics = head.metrics()
    head.update_metrics(metrics, {}, np.array([[2.]], np.float32), np.array([[1.]]))
    head.update_metrics(metrics, {}, np.array([[-2.]], np.float32), np.array([[1.]]))
    got = {k: float(v.result()) for k, v in metrics.items()}
    assert got['average_loss'] == pytest.approx((sce(1, 2.) + sce(1, -2.)) / 2)
    assert got['accuracy'] == 0.5 and got['accuracy_baseline'] == 1.0


def test_binary_head_name_suffixes_metric_keys_and_summaries():
    """Vector B12."""
    head = heads.BinaryClassHead(name='some_binary_head')
    got = results(head, np.array([[45], [-41]], np.float32), np.array([[1], [1]]))
    assert sorted(got) == sorted(k + '/some_binary_head' for k in BINARY_KEYS)
    spec = head.create_estimator_spec({}, heads.ModeKeys.TRAIN,
                                      np.array([[45], [-41]], np.float32),
                                      labels=np.array([[1], [1]]), train_op_fn=lambda loss: 'op')
    assert spec.train_op == 'op'
    assert list(spec.summaries) == ['loss/some_binary_head']
    assert float(spec.summaries['loss/some_binary_head']) == pytest.approx(20.5)


# ---------------------------------------------------------------------------------------------
# BinaryClassHead: predictions and vocabulary.
# ---------------------------------------------------------------------------------------------

def test_binary_predictions_dtypes_and_shapes():
    """Vector B9."""
    head = heads.BinaryClassHead()
    preds = head.predictions(np.array([[0.3], [-0.4]], np.float32))
    assert list(preds) == ['logits', 'logistic', 'probabilities', 'class_ids', 'classes',
                           'all_class_ids', 'all_classes']
    p0, p1 = sigmoid(0.3), sigmoid(-0.4)
    np.testing.assert_allclose(preds['logistic'].numpy(), [[p0], [p1]], rtol=1e-6)
    np.testing.assert_allclose(preds['probabilities'].numpy(), [[1 - p0, p0], [1 - p1, p1]],
                               rtol=1e-6)
    assert preds['class_ids'].dtype == tf.int64
    assert preds['class_ids'].numpy().tolist() == [[1], [0]]
    assert preds['classes'].numpy().tolist() == [[b'1'], [b'0']]
    assert preds['all_class_ids'].dtype == tf.int32
    assert preds['all_class_ids'].numpy().tolist() == [[0, 1], [0, 1]]
    assert preds['all_classes'].numpy().tolist() == [[b'0', b'1'], [b'0', b'1']]
    only = head.predictions(np.array([[0.], [np.nan]], np.float32), keys=['class_ids'])
    assert list(only) == ['class_ids'] and only['class_ids'].numpy().tolist() == [[0], [0]]
    rank3 = head.predictions(np.zeros([2, 3, 1], np.float32))
    assert rank3['all_classes'].shape == (2, 2)  # tiled over the first dimension only


def test_binary_vocabulary_predictions_labels_and_errors():
    """Vectors B10, B11, X40."""
    head = heads.BinaryClassHead(label_vocabulary=['aang', 'iroh'])
    preds = head.predictions(np.array([[1.], [0.]], np.float32))
    assert preds['classes'].numpy().tolist() == [[b'iroh'], [b'aang']]
    assert preds['all_classes'].numpy().tolist() == [[b'aang', b'iroh']] * 2
    logits = np.array([[45], [-41]], np.float32)
    labels = np.array([[b'iroh'], [b'iroh']])
    assert float(head.loss(labels, logits, {})) == pytest.approx(20.5)
    assert results(head, logits, labels)['accuracy'] == 0.5
    with pytest.raises(ValueError, match=r'^Labels must be >= 0$'):
        head.loss(np.array([[b'z'], [b'iroh']]), logits, {})
    with pytest.raises(TypeError, match=r"Dtype of argument `keys` must be <dtype: 'string'>, "
                                        r"received: <dtype: 'int64'>"):
        head.loss(np.array([[1], [0]], np.int64), logits, {})


# ---------------------------------------------------------------------------------------------
# Shared machinery: error texts.
# ---------------------------------------------------------------------------------------------

def test_logits_and_label_errors_carry_tf_estimator_messages():
    """Vectors X19–X23."""
    head = heads.BinaryClassHead()
    logits = np.array([[1.], [2.]], np.float32)
    with pytest.raises(ValueError, match=r'^You must provide a labels Tensor\. Given: None\. '
                                         r'Suggested troubleshooting steps: Check that your data '
                                         r'contains your label feature\.'):
        head.loss(None, logits, {})
    with pytest.raises(ValueError, match=r'^logits shape must be \[D0, D1, \.\.\. DN, '
                                         r'logits_dimension\], got \(2, 2\)\.$'):
        head.predictions(np.array([[45., 44.], [41., 42.]], np.float32))
    with pytest.raises(ValueError, match=r'^logits must have rank at least 2\.  Received rank 1, '
                                         r'shape \(2,\)$'):
        head.predictions(np.array([1., 2.], np.float32))
    with pytest.raises(ValueError, match=r'^Mismatched label shape\. Expected labels '
                                         r'dimension=1\.  Received 2\. Suggested Fix:'):
        head.loss(np.array([[45., 44.], [41., 42.]]), logits, {})
    with pytest.raises(ValueError, match=r'^labels shape must be \[D0, D1, \.\.\. DN, 1\]\. '
                                         r'Suggested Fix: check your n_classes argument to the '
                                         r'head and/or the shape of your label\., '
                                         r'expected_labels_shape: \(2, 1\)\. labels_shape: '
                                         r'\(3, 1\)\.$'):
        head.loss(np.array([1., 0., 1.]), logits, {})  # rank 1 → [3, 1], then compared
    with pytest.raises(ValueError, match=r'^Labels must be <= 2 - 1$'):
        head.loss(np.array([[1.2], [0.4]]), logits, {})
    with pytest.raises(ValueError, match=r'^SparseTensor labels are not supported\. Labels must '
                                         r'be a Tensor of shape \[D0, D1, \.\.\., DN, 1\], e\.g\. '
                                         r'\[batch_size, 1\]\.Suggested Fix \(1\)'):
        head.loss(tf.SparseTensor([[0, 0]], [1.], [2, 1]), logits, {})
    with pytest.raises(ValueError, match=r'^Prediction key must be in PredictionKeys, given: '
                                         r'bogus\.Valid prediction keys include'):
        head.predictions(logits, keys=['bogus'])


def test_loss_fn_result_of_the_wrong_shape_is_refused():
    """Vector X28."""
    head = heads.BinaryClassHead(loss_fn=lambda labels, logits: tf.constant([1., 2.]))
    with pytest.raises(ValueError) as info:
        head.loss(np.array([[1], [0]]), np.array([[1.], [2.]], np.float32), {})
    assert info.value.args == ('loss_fn must return Tensor of shape [D0, D1, ... DN, 1]. ',
                               'logits_shape: ', (2, 1), 'loss_shape: ', (2,))


def test_weight_column_errors_carry_tf_estimator_messages():
    """Vector X32."""
    head = heads.BinaryClassHead(weight_column='w')
    logits = np.zeros([2, 2, 1], np.float32)
    labels = np.zeros([2, 2, 1], np.float32)
    with pytest.raises(ValueError, match=r'^weights shape must be \[D0, D1, \.\.\. DN\] or '
                                         r'\[D0, D1, \.\.\. DN, 1\], logits_shape: \(2, 2, 1\)\. '
                                         r'weights_shape: \(2, 1\)\.$'):
        head.loss(labels, logits, {'w': np.ones([2], np.float32)})   # rank 1 → [2, 1]
    with pytest.raises(ValueError, match=r'weights_shape: \(2, 2, 2\)\.$'):
        head.loss(labels, logits, {'w': np.ones([2, 2, 2], np.float32)})
    with pytest.raises(ValueError, match=r'^Feature w is not in features dictionary\.$'):
        head.loss(labels, logits, {})
    with pytest.raises(ValueError, match=r'^Feature \(key: w\) cannot have rank 0\. Given: 2\.0$'):
        head.loss(labels, logits, {'w': np.float32(2.)})
    with pytest.raises(ValueError, match=r'SparseTensor is not supported\. key: w$'):
        head.loss(labels, logits, {'w': tf.SparseTensor([[0, 0]], [1.], [2, 2])})
    with pytest.raises(TypeError, match=r'^Weight column must be either a string or '
                                        r'NumericColumn\. Given type: <class \'int\'>\.$'):
        heads.BinaryClassHead(weight_column=3).loss(labels, logits, {})


def test_regression_per_logit_weight_error_text():
    head = heads.RegressionHead(label_dimension=2, weight_column='w')
    with pytest.raises(ValueError, match=r'^weights shape must be \[D0, D1, \.\.\. DN\], '
                                         r'\[D0, D1, \.\.\. DN, 1\] or \[D0, D1, \.\.\. DN, '
                                         r'logits_dimension\], logits_shape: \(2, 2\)\. '
                                         r'weights_shape: \(2, 3\)\.$'):
        head.loss(np.zeros([2, 2]), np.zeros([2, 2], np.float32), {'w': np.ones([2, 3])})


def test_shape_checks_inside_tf_function_fail_when_the_graph_runs():
    """Vector X23."""
    head = heads.BinaryClassHead(weight_column='w')
    spec = tf.TensorSpec([None, 1], tf.float32)
    loss = tf.function(lambda labels, logits, w: head.loss(labels, logits, {'w': w}),
                       input_signature=[spec, spec, tf.TensorSpec([None], tf.float32)])
    ones = tf.ones([2])
    assert float(loss(tf.constant([[1.], [0.]]), tf.constant([[45.], [-41.]]), ones)) == \
        pytest.approx(sce(1, 45.) / 2 + sce(0, -41.) / 2, abs=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match='Labels must be <= n_classes - 1'):
        loss(tf.constant([[1.2], [0.4]]), tf.constant([[1.], [2.]]), ones)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r'\[expected_labels_shape: \] \[2 1\] \[labels_shape: \] \[3 1\]'):
        loss(tf.ones([3, 1]), tf.ones([2, 1]), ones)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r'\[logits_shape: \] \[2 1\] \[weights_shape: \] \[3 1\]'):
        loss(tf.ones([2, 1]), tf.ones([2, 1]), tf.ones([3]))


def test_update_metrics_inside_tf_function_like_eager():
    head = heads.BinaryClassHead(weight_column='w', thresholds=[0.5])
    metrics = head.metrics([1.])
    logits = tf.constant([[45.], [-41.], [44.]])
    labels = tf.constant([[1], [1], [0]])
    features = {'w': tf.constant([[1.], [0.1], [1.5]])}

    @tf.function
    def step(features, logits, labels):
        head.update_metrics(metrics, features, logits, labels, regularization_losses=[1.])

    step(features, logits, labels)
    got = {k: float(v.result()) for k, v in metrics.items()}
    assert got == pytest.approx(results(head, logits, labels, features, reg=[1.]))
    assert got['regularization_loss'] == 1.0 and got['accuracy_baseline'] == pytest.approx(
        1.5 / 2.6)


# ---------------------------------------------------------------------------------------------
# create_estimator_spec and the train op.
# ---------------------------------------------------------------------------------------------

def test_binary_predict_spec_carries_export_outputs():
    """Vector B9."""
    head = heads.BinaryClassHead()
    spec = head.create_estimator_spec({}, heads.ModeKeys.PREDICT,
                                      np.array([[0.3], [-0.4]], np.float32))
    assert spec.mode == 'infer' and spec.loss is None and spec.train_op is None
    assert sorted(spec.export_outputs) == ['classification', 'predict', 'regression',
                                           'serving_default']
    default = spec.export_outputs['serving_default']
    assert isinstance(default, heads.ClassificationOutput)
    np.testing.assert_array_equal(default.scores.numpy(), spec.predictions['probabilities'])
    assert default.classes.numpy().tolist() == [[b'0', b'1']] * 2
    np.testing.assert_array_equal(spec.export_outputs['regression'].value.numpy(),
                                  spec.predictions['logistic'])
    assert sorted(spec.export_outputs['predict'].outputs) == sorted(spec.predictions)


def test_binary_eval_and_train_specs_with_regularization():
    """Vector B2."""
    head = heads.BinaryClassHead()
    logits = np.array([[45], [-41]], np.float32)
    labels = np.array([[1], [1]])
    reg = [1.5, 0.5]
    spec = head.create_estimator_spec({}, heads.ModeKeys.EVAL, logits, labels,
                                      regularization_losses=reg)
    assert float(spec.loss) == pytest.approx(22.5) and spec.export_outputs is None
    assert sorted(spec.eval_metric_ops) == sorted(BINARY_KEYS + ['regularization_loss'])
    value, _ = spec.eval_metric_ops['regularization_loss']
    assert float(value) == 2.0 and float(spec.eval_metric_ops['average_loss'][0]) == 20.5
    seen = []
    train = head.create_estimator_spec({}, heads.ModeKeys.TRAIN, logits, labels,
                                       train_op_fn=lambda loss: seen.append(float(loss)) or 'op',
                                       regularization_losses=reg)
    assert seen == [22.5] and train.train_op == 'op' and train.eval_metric_ops == {}
    assert {k: float(v) for k, v in train.summaries.items()} == {'loss': 22.5,
                                                                 'regularization_loss': 2.0}


def test_train_summaries_go_to_the_default_writer(tmp_path):
    head = heads.BinaryClassHead(name='h')
    with tf.summary.create_file_writer(str(tmp_path)).as_default():
        tf.summary.experimental.set_step(7)
        try:
            head.create_estimator_spec({}, heads.ModeKeys.TRAIN, np.array([[45], [-41]], np.float32),
                                       labels=np.array([[1], [1]]), train_op_fn=lambda loss: None,
                                       regularization_losses=[2.])
        finally:
            tf.summary.experimental.set_step(None)
    written = {}
    for path in tmp_path.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                written[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
    assert written == {'loss/h': (7, 22.5), 'regularization_loss/h': (7, 2.0)}  # 41/2 + 2


def test_train_op_argument_errors_in_tf_estimator_order():
    """Vectors X34–X36."""
    head = heads.BinaryClassHead()
    args = ({}, heads.ModeKeys.TRAIN, np.array([[1.]], np.float32), np.array([[1]]))
    sgd = tf.keras.optimizers.SGD(0.1)
    with pytest.raises(ValueError, match=r'^train_op_fn and optimizer cannot both be None\.$'):
        head.create_estimator_spec(*args)
    with pytest.raises(ValueError, match=r'^train_op_fn and optimizer cannot both be set\.$'):
        head.create_estimator_spec(*args, optimizer=sgd, train_op_fn=lambda loss: loss)
    with pytest.raises(ValueError, match=r'^The given optimizer is not a '
                                         r'tf\.keras\.optimizers\.Optimizer instance\.'):
        head.create_estimator_spec(*args, optimizer=tf.compat.v1.train.AdamOptimizer(),
                                   trainable_variables=[])
    with pytest.raises(ValueError, match=r'^trainable_variables cannot be None\. Given None$'):
        head.create_estimator_spec(*args, optimizer=sgd)
    with pytest.raises(ValueError, match=r'^trainable_variables should be a list or a tuple\.'):
        head.create_estimator_spec(*args, optimizer=sgd, trainable_variables={})
    with pytest.raises(ValueError, match=r'^update_ops should be a list or a tuple\. '
                                         r'Given type: <class \'str\'>\.$'):
        head.create_estimator_spec(*args, train_op_fn=lambda loss: loss, update_ops='x')
    # EVAL and PREDICT need neither.
    assert head.create_estimator_spec(*args[:1], heads.ModeKeys.EVAL, *args[2:]).train_op is None


def test_train_with_keras_optimizer_inside_tf_function():
    head = heads.RegressionHead()
    w = tf.Variable(1.0)
    sgd = tf.keras.optimizers.SGD(learning_rate=0.1)

    @tf.function
    def train_step(x, y):
        spec = head.create_estimator_spec({}, heads.ModeKeys.TRAIN, x * w, labels=y,
                                          optimizer=sgd, trainable_variables=[w])
        with tf.control_dependencies([spec.train_op]):
            return tf.identity(spec.loss)

    loss = train_step(tf.constant([[2.], [4.]]), tf.constant([[0.], [0.]]))
    # loss = ((2w)² + (4w)²) / 2 = 10 w² at w = 1; d/dw = 20 w = 20; w ← 1 - 0.1·20
    assert float(loss) == pytest.approx(10.)
    assert float(w.numpy()) == pytest.approx(1. - 0.1 * 20.)


# ---------------------------------------------------------------------------------------------
# RegressionHead and the GLM heads.
# ---------------------------------------------------------------------------------------------

def test_regression_losses_and_metrics():
    """Vectors R1–R3, E8."""
    logits = np.array([[45], [41]], np.int32)
    labels = np.array([[43], [44]], np.int32)
    head = heads.RegressionHead()
    # (45-43)² = 4, (41-44)² = 9
    assert float(head.loss(labels, logits, {})) == 6.5
    assert_metrics(results(head, logits, labels),
                   {'average_loss': 6.5, 'prediction/mean': 43.0, 'label/mean': 43.5})
    assert float(head.loss(labels, logits, {}, regularization_losses=[1.5, 0.5])) == 8.5
    assert results(head, logits, labels, reg=[1.5, 0.5])['regularization_loss'] == 2.0
    assert float(heads.RegressionHead(loss_reduction='sum').loss(labels, logits, {})) == 13.0
    assert float(heads.RegressionHead(loss_reduction='auto').loss(labels, logits, {})) == 6.5
    preds = head.predictions(logits)
    assert list(preds) == ['predictions'] and preds['predictions'].dtype == tf.float32
    with pytest.raises(TypeError):
        head.predictions(logits, ['predictions'])


def test_regression_weights_numeric_column_and_rank1_inputs():
    """Vectors R4, R5, R11."""
    logits = np.array([[45], [41], [44]], np.float32)
    labels = np.array([[35], [42], [45]], np.float32)
    # squared errors 100, 1, 1; weights 1, 0.1, 1.5 → Σ = 101.6... (100 + 0.1 + 1.5)
    loss = (100. + 0.1 + 1.5) / 3
    weighted = heads.RegressionHead(weight_column='label_weights')
    features = {'label_weights': np.array([[1.], [0.1], [1.5]], np.float32)}
    assert float(weighted.loss(labels, logits, features)) == pytest.approx(loss, rel=1e-6)
    assert_metrics(results(weighted, logits, labels, features), {
        'average_loss': 101.6 / 2.6, 'prediction/mean': (45 + 4.1 + 66) / 2.6,
        'label/mean': (35 + 4.2 + 67.5) / 2.6}, tol=1e-4)
    column = tf.feature_column.numeric_column('label_weights', normalizer_fn=lambda x: x + 1.)
    normalized = heads.RegressionHead(weight_column=column)
    raw = {'label_weights': np.array([[0.], [-0.9], [0.5]], np.float32)}
    assert float(normalized.loss(labels, logits, raw)) == pytest.approx(loss, rel=1e-6)
    rank1 = {'x': np.array([42., 43., 44.]), 'label_weights': np.array([1., 0.1, 1.5])}
    assert float(weighted.loss(np.array([35., 42., 45.]), logits, rank1)) == pytest.approx(
        loss, rel=1e-6)


def test_regression_multi_dimensional_logits_and_per_logit_weights():
    """Vectors R6, R7, E9."""
    head = heads.RegressionHead(weight_column='label_weights', label_dimension=3)
    logits = np.array([[45., 41., 44.]], np.float32)
    labels = np.array([[35., 42., 45.]], np.float32)
    per_logit = {'label_weights': np.array([[1., 0.1, 1.5]], np.float32)}
    assert float(head.loss(labels, logits, per_logit)) == pytest.approx(101.6 / 3, rel=1e-6)
    assert results(head, logits, labels, per_logit)['average_loss'] == pytest.approx(
        101.6 / 2.6, rel=1e-6)
    logits3 = np.array([[[0., 1., 2.], [10., 11., 12.]], [[20., 21., 22.], [30., 31., 32.]]],
                       np.float32)
    labels3 = logits3 + np.array([1., 1., 1., 2., 2., 2., 3., 3., 3., 4., 4., 4.],
                                 np.float32).reshape(2, 2, 3)
    weights = {'label_weights': np.array([[1., 1.5], [2., 2.5]], np.float32)}
    # errors² 1, 4, 9, 16 per row (×3 dims), weights 1, 1.5, 2, 2.5: Σ = 3·(1+6+18+40) = 195
    assert float(head.loss(labels3, logits3, weights)) == pytest.approx(195. / 12.)
    got = results(head, logits3, labels3, weights)
    assert got['average_loss'] == pytest.approx(195. / 21.)  # d·Σw = 3·7
    assert got['prediction/mean'] == pytest.approx(
        3 * (1 * 1 + 1.5 * 11 + 2 * 21 + 2.5 * 31) / 21.)
    e9 = heads.RegressionHead(label_dimension=2, weight_column='w')
    w = {'w': np.array([[1., 0.], [0., 1.]], np.float32)}
    lg, lb = np.array([[1., 2.], [3., 4.]], np.float32), np.zeros([2, 2], np.float32)
    assert float(e9.loss(lb, lg, w)) == pytest.approx((1. + 16.) / 4.)
    assert_metrics(results(e9, lg, lb, w),
                   {'average_loss': 17. / 2., 'prediction/mean': 5. / 2., 'label/mean': 0.})


def test_regression_metrics_stream_over_batches():
    """Vector R8."""
    head = heads.RegressionHead(weight_column='label_weights')
    metrics = head.metrics()
    for logit, label, weight, batch_loss in ((45., 35., 1., 100.), (41., 42., 0.1, 0.1),
                                             (44., 45., 1.5, 1.5)):
        features = {'label_weights': np.array([[weight]], np.float32)}
        logits, labels = np.array([[logit]], np.float32), np.array([[label]], np.float32)
        assert float(head.loss(labels, logits, features)) == pytest.approx(batch_loss)
        head.update_metrics(metrics, features, logits, labels)
    assert float(metrics['average_loss'].result()) == pytest.approx(101.6 / 2.6, rel=1e-6)
    assert float(metrics['label/mean'].result()) == pytest.approx((35 + 4.2 + 67.5) / 2.6)


def test_regression_inverse_link_and_custom_loss_fn():
    """Vectors R9, R10."""
    head = heads.RegressionHead(inverse_link_fn=lambda x: x - 10.)
    logits = np.array([[45], [41]], np.int32)
    preds = head.predictions(logits)
    assert preds['predictions'].numpy().tolist() == [[35.], [31.]]
    assert preds['logits'].dtype == tf.float32
    spec = head.create_estimator_spec({}, heads.ModeKeys.PREDICT, logits)
    assert sorted(spec.export_outputs) == ['predict', 'regression', 'serving_default']
    assert spec.export_outputs['serving_default'].value.numpy().tolist() == [[35.], [31.]]
    assert sorted(spec.export_outputs['predict'].outputs) == ['logits', 'predictions']
    custom = heads.RegressionHead(label_dimension=2,
                                  loss_fn=lambda labels, logits: tf.constant([[0., 1.], [2., 3.]]))
    assert float(custom.loss(np.array([[1., 0.], [2., -1.]]),
                             np.array([[-1., 1.], [-2., 2.]], np.float32), {})) == 6. / 4.


def test_poisson_and_logistic_regression_heads():
    """Vectors P1, G1, G2."""
    logits = np.array([[0], [-1], [1]], np.int32)
    poisson = heads.PoissonRegressionHead()
    labels = [1., 2., 3.]
    # exp(x) - x·z, plus Stirling z·ln z - z + ½ ln(2πz) only for z > 1
    stirling = [0.] + [z * math.log(z) - z + 0.5 * math.log(2 * math.pi * z) for z in labels[1:]]
    expected = sum(math.exp(x) - x * z + s for x, z, s in zip([0., -1., 1.], labels, stirling)) / 3
    assert float(poisson.loss(np.array([[1], [2], [3]], np.int32), logits, {})) == \
        pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(poisson.predictions(logits)['predictions'].numpy(),
                               [[1.], [math.exp(-1)], [math.exp(1)]], rtol=1e-6)
    got = results(poisson, logits, np.array([[1], [2], [3]]))
    assert got['prediction/mean'] == pytest.approx((1 + math.exp(-1) + math.exp(1)) / 3)
    logistic = heads.LogisticRegressionHead()
    soft = np.array([[.4], [.6], [.8]], np.float32)
    assert float(logistic.loss(soft, logits, {})) == pytest.approx(
        (sce(.4, 0.) + sce(.6, -1.) + sce(.8, 1.)) / 3, abs=1e-6)
    assert logistic.predictions(logits)['predictions'].numpy()[1, 0] == pytest.approx(
        sigmoid(-1.))
    for bad in ([[.4], [1.2], [.8]], [[.4], [-0.2], [.8]]):
        with pytest.raises(ValueError, match=r'^Labels must be in range \[0, 1\]$'):
            logistic.loss(np.array(bad, np.float32), logits, {})


def test_regression_logits_shape_error_and_empty_batch():
    """Vector X33."""
    with pytest.raises(ValueError, match=r'^logits shape must be'):
        heads.RegressionHead(label_dimension=3).loss(np.zeros([2, 3]),
                                                     np.array([[45.], [41.]], np.float32), {})
    head = heads.RegressionHead()
    empty = np.zeros([0, 1], np.float32)
    assert float(head.loss(empty, empty, {})) == 0.0
    assert_metrics(results(head, empty, empty),
                   {'average_loss': 0., 'prediction/mean': 0., 'label/mean': 0.})


def test_shared_helpers_directly():
    unreduced = tf.constant([[1.], [2.], [3.]])
    weights = tf.constant([[0.], [1.], [2.]])
    # Σ w·U = 0 + 2 + 6 = 8; sum_over_batch_size divides by all 3 elements, zero weight included
    assert float(tf_losses.compute_weighted_loss(unreduced, weights, 'sum')) == 8.
    assert float(tf_losses.compute_weighted_loss(unreduced, weights, 'sum_over_batch_size')) \
        == pytest.approx(8. / 3.)
    assert float(tf_losses.compute_weighted_loss(unreduced, 1.0, 'auto')) == 2.
    assert float(tf_losses.compute_weighted_loss(tf.zeros([0, 1]), 1.0, 'auto')) == 0.
    with pytest.raises(ValueError, match=r'^Invalid loss_reduction: none\.'):
        tf_losses.compute_weighted_loss(unreduced, 1.0, 'none')
    ids = tf_inputs.lookup_vocabulary(tf.constant([[b'b'], [b'q'], [b'a']]), ['a', 'b'])
    assert ids.dtype == tf.int64 and ids.numpy().tolist() == [[1], [-1], [0]]
    with pytest.raises(ValueError, match=r'^custom$'):
        tf_inputs.check_label_range(tf.constant([[-1]]), 3, message='custom')
    assert tf_inputs.check_label_range(tf.constant([[0], [2]]), 3).numpy().tolist() == [[0], [2]]
    full = tf_losses.call_loss_fn(lambda labels, logits: logits * 2., tf.ones([2, 3]),
                                  tf.ones([2, 3]), {}, expected_shape=(2, 3))
    assert full.numpy().tolist() == [[2.] * 3] * 2
    checked = tf_inputs.check_logits_final_dim(tf.constant([[1, 2]]), tf.constant(2))
    assert checked.dtype == tf.float32
