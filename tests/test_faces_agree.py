"""The two faces agree: the array face's mergeable state, fed the data in random chunks, gives the
TF face's loss and update_metrics values on the same data as one batch (1e-5 relative), and the same
predictions.

Neither face is the reference for the other's correctness (golden values live in the per-face tests
and in the tf.estimator 2.15 recordings); this test pins that they implement one behaviour.
"""
from __future__ import annotations

import numpy as np
import pytest

import heads

pytestmark = pytest.mark.tf

RNG_SEED = 20261123


def _chunks(rng: np.random.Generator, n: int) -> list[slice]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(3, n - 1), replace=False))
    edges = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _take(value, s: slice):
    if isinstance(value, dict):
        return {k: _take(v, s) for k, v in value.items()}
    if isinstance(value, list):
        return value[s]
    return value[s]


def _binary_data(rng, n, soft=False, vocab=None):
    logits = rng.normal(0, 2, (n, 1)).astype(np.float32)
    if vocab:
        labels = np.array(vocab)[rng.integers(0, 2, (n, 1))]
    elif soft:
        labels = rng.random((n, 1)).astype(np.float32)
    else:
        labels = rng.integers(0, 2, (n, 1)).astype(np.int64)
    return logits, labels


def _weights(rng, n, rank1=False, zeros=False):
    w = rng.uniform(0.1, 2.0, n).astype(np.float32)
    if zeros:
        w[rng.random(n) < 0.3] = 0.0
    return w if rank1 else w.reshape(n, 1)


def _multiclass_data(rng, n, k, vocab=None):
    logits = rng.normal(0, 2, (n, k)).astype(np.float32)
    ids = rng.integers(0, k, (n, 1))
    return logits, (np.array(vocab)[ids] if vocab else ids.astype(np.int64))


def _multilabel_data(rng, n, k):
    logits = rng.normal(-0.5, 2, (n, k)).astype(np.float32)
    labels = (rng.random((n, k)) < 0.4).astype(np.int64)
    return logits, labels


def _regression_data(rng, n, d=1):
    logits = rng.normal(3, 2, (n, d)).astype(np.float32)
    return logits, (logits + rng.normal(0, 1, (n, d))).astype(np.float32)


def _case(name, head, logits, labels, features=None):
    return pytest.param(head, logits, labels, features or {}, id=name)


def _cases():
    rng = np.random.default_rng(RNG_SEED)
    n = 257
    c = []
    lg, lb = _binary_data(rng, n)
    c.append(_case('binary/default', heads.BinaryClassHead(), lg, lb))
    c.append(_case('binary/weights+thresholds', heads.BinaryClassHead(
        weight_column='w', thresholds=[0.1, 0.5, 0.9], name='click'), lg, lb,
        {'w': _weights(rng, n, zeros=True)}))
    c.append(_case('binary/rank1-weights/sum', heads.BinaryClassHead(
        weight_column='w', loss_reduction='sum'), lg, lb, {'w': _weights(rng, n, rank1=True)}))
    lg, lb = _binary_data(rng, n, soft=True)
    c.append(_case('binary/soft-labels', heads.BinaryClassHead(thresholds=[0.5]), lg, lb))
    lg, lb = _binary_data(rng, n, vocab=['no', 'yes'])
    c.append(_case('binary/vocabulary', heads.BinaryClassHead(label_vocabulary=['no', 'yes']), lg, lb))
    lg, lb = _multiclass_data(rng, n, 4)
    c.append(_case('multiclass/default', heads.MultiClassHead(4), lg, lb))
    c.append(_case('multiclass/weights/sum', heads.MultiClassHead(
        4, weight_column='w', loss_reduction='sum', name='topic'), lg, lb, {'w': _weights(rng, n)}))
    lg, lb = _multiclass_data(rng, n, 3, vocab=['a', 'b', 'c'])
    c.append(_case('multiclass/vocabulary', heads.MultiClassHead(
        3, label_vocabulary=['a', 'b', 'c']), lg, lb))
    lg, lb = _multilabel_data(rng, n, 5)
    c.append(_case('multilabel/default', heads.MultiLabelHead(5), lg, lb))
    c.append(_case('multilabel/all-args', heads.MultiLabelHead(
        5, weight_column='w', thresholds=[0.3, 0.7], classes_for_class_based_metrics=[0, 3],
        name='tags'), lg, lb, {'w': _weights(rng, n)}))
    lg, lb = _regression_data(rng, n)
    c.append(_case('regression/default', heads.RegressionHead(), lg, lb))
    c.append(_case('regression/weights/sum', heads.RegressionHead(
        weight_column='w', loss_reduction='sum', name='watch'), lg, lb, {'w': _weights(rng, n)}))
    lg, lb = _regression_data(rng, n, d=3)
    c.append(_case('regression/dim3/per-logit-weights', heads.RegressionHead(
        label_dimension=3, weight_column='w'), lg, lb,
        {'w': rng.uniform(0, 2, (n, 3)).astype(np.float32)}))
    lg = rng.normal(0, 1, (n, 1)).astype(np.float32)
    c.append(_case('logistic', heads.LogisticRegressionHead(weight_column='w'), lg,
                   rng.random((n, 1)).astype(np.float32), {'w': _weights(rng, n)}))
    lg = rng.normal(0.5, 0.5, (n, 2)).astype(np.float32)
    counts = rng.poisson(np.exp(lg)).astype(np.float32)
    c.append(_case('poisson/full', heads.PoissonRegressionHead(label_dimension=2), lg, counts))
    c.append(_case('poisson/partial', heads.PoissonRegressionHead(
        label_dimension=2, compute_full_loss=False, name='count'), lg, counts))
    return c


def _tf_values(head, logits, labels, features):
    loss = float(head.loss(labels, logits, features))
    metrics = head.update_metrics(head.metrics(), features, logits, labels)
    return loss, {k: float(m.result()) for k, m in metrics.items()}


def _assert_close(actual: dict, expected: dict):
    assert sorted(actual) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize('head,logits,labels,features', _cases())
def test_state_over_chunks_equals_tf_face_on_one_batch(head, logits, labels, features):
    tf_loss, tf_metrics = _tf_values(head, logits, labels, features)
    rng = np.random.default_rng(7)
    states = [head.new_state().update(_take(labels, s), _take(logits, s), _take(features, s))
              for s in _chunks(rng, len(logits))]
    merged = states[-1]
    for state in reversed(states[:-1]):
        merged = merged.merge(state)
    np.testing.assert_allclose(merged.loss(), tf_loss, rtol=1e-5, atol=1e-6)
    _assert_close(merged.result(), tf_metrics)


@pytest.mark.parametrize('head,logits,labels,features', _cases())
def test_array_predictions_equal_tf_predictions(head, logits, labels, features):
    tf_preds = head.predictions(logits)
    np_preds = head.array_predictions(logits)
    assert sorted(np_preds) == sorted(tf_preds)
    for key, value in tf_preds.items():
        expected = value.numpy()
        if expected.dtype == object:
            expected = np.vectorize(lambda b: b.decode())(expected)
            np.testing.assert_array_equal(np_preds[key].astype(str), expected, err_msg=key)
        else:
            assert np_preds[key].shape == expected.shape, key
            np.testing.assert_allclose(np_preds[key], expected, rtol=1e-6, atol=1e-7, err_msg=key)


def test_multi_head_state_equals_tf_face():
    rng = np.random.default_rng(3)
    n = 101
    click = heads.BinaryClassHead(name='click', weight_column='w')
    topic = heads.MultiClassHead(3, name='topic')
    head = heads.MultiHead([click, topic], head_weights=[1.0, 2.0])
    lg_c, lb_c = _binary_data(rng, n)
    lg_t, lb_t = _multiclass_data(rng, n, 3)
    logits = {'click': lg_c, 'topic': lg_t}
    labels = {'click': lb_c, 'topic': lb_t}
    features = {'w': _weights(rng, n)}
    tf_loss, tf_metrics = _tf_values(head, logits, labels, features)  # one update: no eager quirk
    state = head.new_state()
    for s in _chunks(rng, n):
        state = state.update(_take(labels, s), _take(logits, s), _take(features, s))
    np.testing.assert_allclose(state.loss(), tf_loss, rtol=1e-5)
    _assert_close(state.result(), tf_metrics)
    # One logits array split on the last axis gives the same state.
    joined = np.concatenate([lg_c, lg_t], axis=-1)
    split_state = head.new_state().update(labels, joined, features)
    np.testing.assert_allclose(split_state.loss(), tf_loss, rtol=1e-5)
