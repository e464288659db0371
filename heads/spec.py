"""What the TF face's `create_estimator_spec` returns: `EstimatorSpec` and the export outputs.

Plain Python containers with tf.estimator 2.15's field names (tf.estimator's classes are gone in
TF 2.16+). They hold tensors but import nothing: `heads.base` (the `Head` interface) and
`heads.tf_face` (which builds them) both read them from here, so neither imports the other.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

__all__ = ['ClassificationOutput', 'RegressionOutput', 'PredictOutput', 'EstimatorSpec']


class ClassificationOutput(NamedTuple):
    """Export output of a classifier: `scores` [B, n] and `classes` [B, n] (every class name)."""
    scores: Any = None
    classes: Any = None


class RegressionOutput(NamedTuple):
    """Export output of a regressor: one float32 `value` tensor."""
    value: Any


class PredictOutput(NamedTuple):
    """Export output carrying a dict of prediction tensors."""
    outputs: Mapping[str, Any]


class EstimatorSpec(NamedTuple):
    """What `create_estimator_spec` returns, with tf.estimator.EstimatorSpec's fields."""
    mode: str
    predictions: Mapping[Any, Any] | None = None
    loss: Any = None
    train_op: Any = None
    eval_metric_ops: Mapping[str, Any] | None = None
    export_outputs: Mapping[str, Any] | None = None
    training_chief_hooks: Sequence[Any] = ()
    training_hooks: Sequence[Any] = ()
    scaffold: Any = None
    evaluation_hooks: Sequence[Any] = ()
    prediction_hooks: Sequence[Any] = ()
    summaries: Mapping[str, Any] | None = None  # TRAIN scalars tf.estimator wrote with tf.summary
