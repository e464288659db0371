"""The TF face's Keras-2-semantics metric classes (heads/tf_face/keras_metrics.py).

Golden values are hand arithmetic, sklearn, recorded tf.estimator 2.15 values (written out), or
the slow reference loops of tests/_helpers.py.
"""

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')
from sklearn.metrics import roc_auc_score  # noqa: E402

from _helpers import (div_or_zero, keras_thresholds, reference_confusion,  # noqa: E402
                      reference_pr, reference_roc)
from heads.tf_face import keras_metrics as tfm  # noqa: E402

pytestmark = pytest.mark.tf


def _value(metric):
    return float(metric.result().numpy())


# ---------------------------------------------------------------------------------------------
# Mean, Accuracy, BinaryAccuracy.
# ---------------------------------------------------------------------------------------------

def test_mean_weighted_broadcasts_example_weight_over_values():
    m = tfm.Mean('m')
    m.update_state([[1., 2.], [3., 4.]], sample_weight=[[1.], [3.]])
    # each [B,1] weight counts once per value it covers: (1+2)*1 + (3+4)*3 over 2*1 + 2*3
    assert _value(m) == pytest.approx((3. + 21.) / 8.)


def test_mean_unweighted_streams_and_squeezes_weights():
    m = tfm.Mean('m')
    m.update_state([1., 2., 3.])
    m.update_state([[10.]])
    assert _value(m) == pytest.approx(16. / 4.)
    w = tfm.Mean('w')
    w.update_state([2., 4.], sample_weight=[[1.], [0.]])  # rank+1 weight is squeezed
    assert _value(w) == pytest.approx(2.)


def test_mean_degenerate_cases_are_zero():
    empty = tfm.Mean('e')
    empty.update_state(tf.zeros([0, 1]))
    assert _value(empty) == 0.0
    zero_w = tfm.Mean('z')
    zero_w.update_state([5., 7.], sample_weight=[0., 0.])
    assert _value(zero_w) == 0.0
    opposite = tfm.Mean('o')  # negative weights may cancel: div_no_nan gives 0, not inf
    opposite.update_state([1., 0.], sample_weight=[1., -1.])
    assert _value(opposite) == 0.0


def test_mean_state_is_float32_and_resets():
    m = tfm.Mean('m')
    assert all(v.dtype == tf.float32 for v in m.variables) and len(m.variables) == 2
    m.update_state([4.])
    m.reset_state()
    assert _value(m) == 0.0
    m.update_state([6.])
    assert _value(m) == 6.0


def test_accuracy_exact_equality_soft_labels_never_match():
    a = tfm.Accuracy('a')
    a.update_state([[1.], [0.], [0.8]], [[1], [1], [1]], sample_weight=[[2.], [1.], [1.]])
    assert _value(a) == pytest.approx(2. / 4.)


def test_binary_accuracy_averages_over_last_axis_with_strict_threshold():
    b = tfm.BinaryAccuracy('b', threshold=0.5)
    # row 1: 0.5 is not > 0.5 → predicted 0 (wrong for label 1); 0.7 → 1 (right): 1/2.
    # row 2: both right: 1.  Weights 1 and 3: (0.5*1 + 1*3) / 4.
    b.update_state([[1, 1], [0, 1]], [[0.5, 0.7], [0.2, 0.9]], sample_weight=[[1.], [3.]])
    assert _value(b) == pytest.approx(3.5 / 4.)


# ---------------------------------------------------------------------------------------------
# Precision / Recall.
# ---------------------------------------------------------------------------------------------

def test_precision_recall_hand_example():
    labels = [[1.], [1.], [0.], [0.4]]    # 0.4 is a positive (label != 0)
    scores = [[0.9], [0.5], [0.6], [0.2]]
    weights = [[1.], [2.], [3.], [4.]]
    p, r = tfm.Precision('p'), tfm.Recall('r')
    p.update_state(labels, scores, weights)
    r.update_state(labels, scores, weights)
    # > 0.5 strictly: predicted rows 0 and 2 → TP = 1, FP = 3; FN = rows 1 and 3 = 6.
    assert _value(p) == pytest.approx(1. / 4.)
    assert _value(r) == pytest.approx(1. / 7.)


def test_precision_recall_match_reference_on_random_data():
    rng = np.random.default_rng(7)
    labels = (rng.random(300) < 0.4).astype(np.float32)
    scores = rng.random(300).astype(np.float32)
    weights = rng.random(300).astype(np.float32)
    thresholds = [0.1, 0.5, 0.77]
    p = tfm.Precision('p', thresholds=thresholds)
    r = tfm.Recall('r', thresholds=thresholds)
    for part in (slice(0, 120), slice(120, 300)):  # streaming over two batches
        p.update_state(labels[part], scores[part], weights[part])
        r.update_state(labels[part], scores[part], weights[part])
    conf = reference_confusion(labels, scores.astype(float), weights.astype(float), thresholds)
    np.testing.assert_allclose(p.result().numpy(),
                               [div_or_zero(tp, tp + fp) for tp, fp, _, _ in conf],
                               rtol=1e-5)
    np.testing.assert_allclose(r.result().numpy(),
                               [div_or_zero(tp, tp + fn) for tp, _, _, fn in conf],
                               rtol=1e-5)


def test_precision_recall_without_predicted_or_actual_positives_are_zero():
    p, r = tfm.Precision('p'), tfm.Recall('r')
    p.update_state([[0.], [1.]], [[0.1], [0.2]])
    r.update_state([[0.], [0.]], [[0.9], [0.8]])
    assert _value(p) == 0.0 and _value(r) == 0.0


# ---------------------------------------------------------------------------------------------
# AUC.
# ---------------------------------------------------------------------------------------------

def test_roc_auc_equals_sklearn_when_scores_sit_in_distinct_buckets():
    rng = np.random.default_rng(3)
    buckets = rng.choice(199, size=60, replace=False)
    scores = ((buckets + 0.5) / 199.).astype(np.float32)  # one score per bucket: no binning loss
    labels = (rng.random(60) < 0.5).astype(np.int64)
    weights = rng.random(60).astype(np.float32) + 0.1
    auc = tfm.AUC('auc')
    auc.update_state(labels, scores, weights)
    expected = roc_auc_score(labels, scores.astype(float), sample_weight=weights.astype(float))
    assert _value(auc) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('curve', ['ROC', 'PR'])
def test_auc_matches_reference_loop_on_random_data(curve):
    rng = np.random.default_rng(11)
    labels = (rng.random((40, 3)) < 0.3).astype(np.float32)     # multi-dim: one pooled AUC
    scores = rng.random((40, 3)).astype(np.float32)
    weights = (rng.random((40, 1)) * 2).astype(np.float32)      # per-example, broadcast
    auc = tfm.AUC('auc', curve=curve)
    auc.update_state(labels[:25], scores[:25], weights[:25])
    auc.update_state(labels[25:], scores[25:], weights[25:])
    flat_w = np.broadcast_to(weights, scores.shape).ravel().astype(float)
    conf = reference_confusion(labels.ravel(), scores.ravel().astype(float), flat_w,
                               keras_thresholds())
    expected = reference_roc(conf) if curve == 'ROC' else reference_pr(conf)
    assert _value(auc) == pytest.approx(expected, rel=1e-5)


def test_auc_recorded_tf_estimator_values():
    # Vector B7 (tf.estimator 2.15): sigmoid of logits [45, -41, 44], labels [1, 1, 0],
    # weights [1, .1, 1.5]
    scores = tf.sigmoid(tf.constant([[45.], [-41.], [44.]]))
    roc, pr = tfm.AUC('roc'), tfm.AUC('pr', curve='PR')
    for m in (roc, pr):
        m.update_state([[1], [1], [0]], scores, [[1.], [0.1], [1.5]])
    assert _value(roc) == pytest.approx(0.4545454539, abs=1e-6)
    assert _value(pr) == pytest.approx(0.4010626639, abs=1e-6)


def test_auc_nan_scores_are_dropped_from_buckets_but_counted():
    # Vector E3 (tf.estimator 2.15): probabilities of [[nan, 1], [1, -1]], labels [[1, 0], [0, 1]]
    scores = tf.sigmoid(tf.constant([[float('nan'), 1.], [1., -1.]]))
    roc, pr = tfm.AUC('roc'), tfm.AUC('pr', curve='PR')
    for m in (roc, pr):
        m.update_state([[1, 0], [0, 1]], scores)
    assert _value(roc) == pytest.approx(0.0, abs=1e-7)
    assert _value(pr) == pytest.approx(0.0945349, abs=1e-6)


def test_auc_degenerate_cases():
    only_pos_roc, only_pos_pr = tfm.AUC('a'), tfm.AUC('b', curve='PR')
    for m in (only_pos_roc, only_pos_pr):
        m.update_state([[1], [1]], [[0.3], [0.9]])
    assert _value(only_pos_roc) == 0.0      # no negatives: FPR ≡ 0
    assert _value(only_pos_pr) == pytest.approx(1.0)
    only_neg_roc, only_neg_pr = tfm.AUC('c'), tfm.AUC('d', curve='PR')
    for m in (only_neg_roc, only_neg_pr):
        m.update_state([[0], [0]], [[0.3], [0.9]])
    assert _value(only_neg_roc) == 0.0 and _value(only_neg_pr) == 0.0
    empty = tfm.AUC('e')
    empty.update_state(tf.zeros([0, 1]), tf.zeros([0, 1]))
    assert _value(empty) == 0.0


def test_auc_bucket_assignment_is_float32():
    # A score at a float32 bucket edge: the bucket is ceil(float32(p) * 199) - 1, in float32.
    p = np.float32(3) / np.float32(199)
    bucket = int(max(np.ceil(np.float32(p) * np.float32(199)) - 1, 0))
    # float64 arithmetic would give ceil(3.0000000xx) - 1 = 3; float32 rounds p·199 to exactly 3.
    assert bucket == 2 and int(np.ceil(np.float64(p) * 199) - 1) == 3
    auc = tfm.AUC('a')
    auc.update_state([[1]], [[p]])
    tp = auc.true_positives.numpy()
    assert tp[bucket] == 1.0 and tp[bucket + 1] == 0.0
    assert tp[0] == 1.0 and tp[199] == 0.0  # always counted at τ0, never at τ199


def test_metrics_update_inside_tf_function_like_eagerly():
    eager, traced = tfm.AUC('e', curve='PR'), tfm.AUC('t', curve='PR')
    mean = tfm.Mean('m')
    labels = tf.constant([[1.], [0.], [1.]])
    scores = tf.constant([[0.8], [0.3], [0.1]])

    @tf.function
    def step(y, s):
        traced.update_state(y, s)
        mean.update_state(s, sample_weight=y)
        return traced.result()

    step(labels, scores)
    result = step(labels, scores).numpy()
    eager.update_state(labels, scores)
    eager.update_state(labels, scores)
    assert result == pytest.approx(_value(eager))
    assert _value(mean) == pytest.approx((0.8 + 0.1) / 2.)
