"""The TF face in the three ways migrated tf.estimator code runs it: eagerly, inside
`tf.function`, and in a TF1 graph (`tf.compat.v1.Graph` + `Session.run` of `eval_metric_ops`, as
Estimator's evaluation loop did).

Expected numbers are hand arithmetic written out here, or the eager result (itself pinned by
tests/golden/tf215_cases.json). Error texts are tf.estimator 2.15's graph-mode ones (issue 16).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

import heads  # noqa: E402

pytestmark = pytest.mark.tf

# Issue 16's case: weights (1, .1, 1.5), labels (1, 0, 0) → weighted label mean m = 1 / 2.6.
B_LOGITS = np.array([[45.], [-41.], [44.]], np.float32)
B_LABELS = np.array([[1], [0], [0]], np.int32)
B_WEIGHTS = np.array([[1.], [.1], [1.5]], np.float32)
LABEL_MEAN = 1. / (1. + .1 + 1.5)          # 0.3846
BASELINE = max(LABEL_MEAN, 1. - LABEL_MEAN)  # 0.6154


def graph_eval(head: Any, features: dict, logits: Any, labels: Any) -> tuple[dict, Any]:
    """Builds an EVAL spec in a fresh TF1 graph, runs every update op in one `Session.run`, then
    reads every value op; returns (values, spec)."""
    graph = tf.compat.v1.Graph()
    with graph.as_default():
        spec = head.create_estimator_spec(
            {k: tf.constant(v) for k, v in features.items()}, heads.ModeKeys.EVAL,
            tf.constant(logits), tf.constant(labels))
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run([update for _, update in spec.eval_metric_ops.values()])
            values = session.run({k: value for k, (value, _) in spec.eval_metric_ops.items()})
    return values, spec


def run_in_graph(build: Callable[[], Any], feed: Callable[[], dict] | None = None) -> Any:
    """Builds `build()` in a fresh TF1 graph and runs its result once in a Session."""
    graph = tf.compat.v1.Graph()
    with graph.as_default():
        fetch = build()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return session.run(fetch, feed() if feed else None)


# ---------------------------------------------------------------------------------------------
# accuracy_baseline reads label/mean after its update.
# ---------------------------------------------------------------------------------------------

def test_accuracy_baseline_in_fresh_tf1_graphs():
    head = heads.BinaryClassHead(weight_column='w')
    for _ in range(50):
        values, _ = graph_eval(head, {'w': B_WEIGHTS}, B_LOGITS, B_LABELS)
        assert values['label/mean'] == pytest.approx(LABEL_MEAN, abs=1e-6)
        assert values['accuracy_baseline'] == pytest.approx(BASELINE, abs=1e-6)
        assert values['accuracy_baseline'] == pytest.approx(0.6154, abs=1e-4)


def test_accuracy_baseline_eager_and_tf_function():
    head = heads.BinaryClassHead(weight_column='w')
    eager = head.update_metrics(head.metrics(), {'w': B_WEIGHTS}, B_LOGITS, B_LABELS)
    assert float(eager['accuracy_baseline'].result()) == pytest.approx(BASELINE, abs=1e-6)
    metrics = head.metrics()
    tf.function(lambda w, lg, lb: head.update_metrics(metrics, {'w': w}, lg, lb) and None)(
        tf.constant(B_WEIGHTS), tf.constant(B_LOGITS), tf.constant(B_LABELS))
    assert float(metrics['accuracy_baseline'].result()) == pytest.approx(BASELINE, abs=1e-6)


def test_graph_eval_metrics_equal_eager_ones():
    head = heads.BinaryClassHead(weight_column='w', thresholds=[0.3])
    values, _ = graph_eval(head, {'w': B_WEIGHTS}, B_LOGITS, B_LABELS)
    eager = head.update_metrics(head.metrics(), {'w': B_WEIGHTS}, B_LOGITS, B_LABELS)
    assert sorted(values) == sorted(eager)
    for key, metric in eager.items():
        assert values[key] == pytest.approx(float(metric.result()), abs=1e-6), key


# ---------------------------------------------------------------------------------------------
# Error types and texts in graphs (TF1 and tf.function); eager keeps ValueError.
# ---------------------------------------------------------------------------------------------

def _squeezing_loss(labels, logits):
    return tf.squeeze(logits, -1)  # [2] where [2, 1] is expected


LOSS_FN_MSG = (r'\[loss_fn must return Tensor of shape \[D0, D1, \.\.\. DN, 1\]\. \] '
               r'\[logits_shape: \] \[2 1\] \[loss_shape: \] \[2\]')
WEIGHTS_MSG = r'\[logits_shape: \] \[2 2 1\] \[weights_shape: \] \[2 1\]'


def test_wrong_loss_fn_shape_is_invalid_argument_in_graphs_value_error_eagerly():
    head = heads.BinaryClassHead(loss_fn=_squeezing_loss)
    labels, logits = np.array([[1.], [0.]], np.float32), np.array([[1.], [2.]], np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match=LOSS_FN_MSG):
        run_in_graph(lambda: head.loss(tf.constant(labels), tf.constant(logits), {}))
    with pytest.raises(tf.errors.InvalidArgumentError, match=LOSS_FN_MSG):
        tf.function(lambda lb, lg: head.loss(lb, lg, {}))(labels, logits)
    with pytest.raises(ValueError, match='loss_shape'):
        head.loss(labels, logits, {})


def test_weights_with_wrong_inner_dimension_in_graphs_and_eagerly():
    head = heads.BinaryClassHead(weight_column='w')
    ones, weights = np.ones([2, 2, 1], np.float32), np.ones([2, 1], np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match=WEIGHTS_MSG):
        run_in_graph(lambda: head.loss(tf.constant(ones), tf.constant(ones),
                                       {'w': tf.constant(weights)}))
    with pytest.raises(tf.errors.InvalidArgumentError, match=WEIGHTS_MSG):
        tf.function(lambda lb, lg, w: head.loss(lb, lg, {'w': w}))(ones, ones, weights)
    with pytest.raises(ValueError, match=r'weights_shape: \(2, 1\)\.$'):
        head.loss(ones, ones, {'w': weights})


def test_constant_label_above_one_fails_while_building_the_graph():
    head = heads.BinaryClassHead()
    graph = tf.compat.v1.Graph()
    with graph.as_default():  # no Session is ever run: the assert is evaluated statically
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r'^Labels must be <= n_classes - 1'):
            head.loss(tf.constant([[1.2], [0.4]]), tf.constant([[1.], [2.]]), {})
    with pytest.raises(ValueError, match=r'^Labels must be <= 2 - 1$'):
        head.loss(np.array([[1.2], [0.4]], np.float32), np.array([[1.], [2.]], np.float32), {})


RANK_MSG = (r'labels shape must be \[D0, D1, \.\.\. DN, 2\]\..*'
            r'\[Received shape: \] \[2\]')


def test_multi_label_wrong_rank_gives_the_rank_message_every_time():
    head = heads.MultiLabelHead(2)
    logits = np.array([[1., 2.], [3., 4.]], np.float32)
    for _ in range(60):
        graph = tf.compat.v1.Graph()
        with graph.as_default():
            labels = tf.compat.v1.placeholder(tf.int64, shape=None)  # rank unknown when built
            loss = head.loss(labels, tf.constant(logits), {})
            with tf.compat.v1.Session(graph=graph) as session:
                with pytest.raises(tf.errors.InvalidArgumentError, match=RANK_MSG):
                    session.run(loss, {labels: np.array([1, 1])})
    unknown_rank = tf.function(lambda lb: head.loss(lb, logits, {}),
                               input_signature=[tf.TensorSpec(None, tf.int64)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=RANK_MSG):
        unknown_rank(tf.constant([1, 1], tf.int64))


@pytest.mark.parametrize('head,labels,logits,message', [
    (heads.BinaryClassHead(), np.ones([3, 1], np.float32), np.ones([2, 1], np.float32),
     r'logits and labels must have the same shape \(\(2, 1\) vs \(3, 1\)\)'),
    (heads.MultiClassHead(3), np.ones([3, 1], np.int32), np.ones([2, 3], np.float32),
     r'shape.*\(3,\).*\(2, 3\)'),
])
def test_static_label_shape_messages_in_graphs(head, labels, logits, message):
    with pytest.raises(ValueError, match=message):
        run_in_graph(lambda: head.loss(tf.constant(labels), tf.constant(logits), {}))
    with pytest.raises(ValueError, match=message):
        tf.function(lambda lb, lg: head.loss(lb, lg, {}))(labels, logits)
    with pytest.raises(ValueError, match=r'expected_labels_shape: \(2, [13]\)\. '
                                         r'labels_shape: \(3, 1\)\.$'):
        head.loss(labels, logits, {})


# ---------------------------------------------------------------------------------------------
# EstimatorSpec.scaffold: a Scaffold in graphs, as tf.estimator's specs carried.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('mode', [heads.ModeKeys.EVAL, heads.ModeKeys.PREDICT,
                                  heads.ModeKeys.TRAIN])
def test_graph_specs_carry_a_scaffold_eager_ones_none(mode):
    logits, labels = np.array([[1.], [-1.]], np.float32), np.array([[1], [0]], np.int32)
    multi = heads.MultiHead([heads.BinaryClassHead(name='a'), heads.RegressionHead(name='b')])

    def specs():
        single = heads.BinaryClassHead().create_estimator_spec(
            {}, mode, tf.constant(logits), tf.constant(labels), train_op_fn=lambda _: tf.no_op())
        both = multi.create_estimator_spec(
            {}, mode, {'a': tf.constant(logits), 'b': tf.constant(logits)},
            {'a': tf.constant(labels), 'b': tf.constant(logits)}, train_op_fn=lambda _: tf.no_op())
        return single, both

    with tf.compat.v1.Graph().as_default():
        for spec in specs():
            assert isinstance(spec.scaffold, tf.compat.v1.train.Scaffold)
            assert spec.scaffold.summary_op is None  # set when a session finalizes it
    if mode != heads.ModeKeys.EVAL:  # EVAL creates metric variables: not inside tf.function
        in_function = []
        tf.function(lambda: in_function.extend(specs()))()
        assert all(isinstance(s.scaffold, tf.compat.v1.train.Scaffold) for s in in_function)
    assert [s.scaffold for s in specs()] == [None, None]
