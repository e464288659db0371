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
