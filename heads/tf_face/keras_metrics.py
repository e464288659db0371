"""Streaming metric objects of the TF face, with Keras 2 semantics.

tf.estimator's heads delegated their metrics to Keras 2 (`tf.keras.metrics.Mean`, `AUC`, ...). The
Keras 3 that ships with TF 2.21 computes several of them differently (weight broadcasting, AUC
bucket handling, reductions), so the TF face carries its own small classes instead. Each keeps its
state in float32 `tf.Variable`s (as Keras 2 did), so numbers match tf.estimator 2.15 bit for bit
where float32 arithmetic allows, and each works eagerly and inside `tf.function` (create the metric
outside the function, update it inside).

Every class offers `update_state(...)`, `result()` (a scalar float32 tensor), `reset_state()` and
`variables`; every ratio is a `div_no_nan`, so empty input gives 0.
"""
from __future__ import annotations

from typing import Any, Sequence

import tensorflow as tf

__all__ = ['Metric', 'Mean', 'Accuracy', 'BinaryAccuracy', 'Precision', 'Recall', 'AUC']


def _squeeze_or_expand_weight(values: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    """Aligns a weight's rank with the values' rank as Keras 2 did before broadcasting.

    A weight one rank above the values loses its last (size-1) dimension; a weight one rank below
    gains a trailing dimension; a scalar weight is left alone.
    """
    v_rank, w_rank = values.shape.rank, weight.shape.rank
    if v_rank is None or w_rank is None or w_rank == 0:
        return weight
    if w_rank - v_rank == 1:
        return tf.squeeze(weight, axis=[-1])
    if v_rank - w_rank == 1:
        return tf.expand_dims(weight, -1)
    return weight


def _broadcast_weight(values: tf.Tensor, sample_weight: Any) -> tf.Tensor:
    """Weight as float32 with the values' shape (rank-aligned first, then broadcast)."""
    weight = tf.cast(tf.convert_to_tensor(sample_weight), tf.float32)
    weight = _squeeze_or_expand_weight(values, weight)
    return tf.broadcast_to(weight, tf.shape(values))


def _squeeze_one_extra_dim(y_true: tf.Tensor, y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Keras 2's `remove_squeezable_dimensions`: drops a trailing size-1 dim that breaks rank."""
    t_rank, p_rank = y_true.shape.rank, y_pred.shape.rank
    if t_rank is None or p_rank is None:
        return y_true, y_pred
    if p_rank - t_rank == 1 and y_pred.shape[-1] == 1:
        y_pred = tf.squeeze(y_pred, axis=[-1])
    elif t_rank - p_rank == 1 and y_true.shape[-1] == 1:
        y_true = tf.squeeze(y_true, axis=[-1])
    return y_true, y_pred


class Metric:
    """Base class: a named set of float32 state variables.

    Args:
      name: metric name (informational; heads key their metric dicts themselves).
    """

    def __init__(self, name: str):
        self.name = name
        self._variables: list[tf.Variable] = []
        self.last_update_op: Any = None  # what the last update_state returned (graph: an op)

    def _add_state(self, name: str, shape: Sequence[int] = ()) -> tf.Variable:
        # init_scope lifts creation out of any surrounding tf.function graph, so a metric built
        # while tracing still owns ordinary (eager) variables.
        with tf.init_scope():
            var = tf.Variable(tf.zeros(shape, tf.float32), trainable=False,
                              name='%s_%s' % (self.name.replace('/', '_'), name))
        self._variables.append(var)
        return var

    @property
    def variables(self) -> list[tf.Variable]:
        """The state variables, in creation order."""
        return list(self._variables)

    def reset_state(self) -> None:
        """Sets every state variable back to zero."""
        for var in self._variables:
            var.assign(tf.zeros_like(var))

    def _done(self, *ops: Any) -> Any:
        # tf.group gives an op in graph mode and None eagerly, like Keras 2's update_state.
        self.last_update_op = tf.group(*[op for op in ops if op is not None])
        return self.last_update_op

    def update_state(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def result(self) -> tf.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return '<%s name=%r>' % (type(self).__name__, self.name)


class Mean(Metric):
    """Weighted mean: total += Σ v·w, count += Σ w (w broadcast to v); result total / count.

    Without a weight, count grows by the number of values. A `[B, 1]` weight counts once for every
    value it is broadcast over (Keras 2 behaviour the heads' `average_loss` relies on).
    """

    def __init__(self, name: str = 'mean'):
        super().__init__(name)
        self.total = self._add_state('total')
        self.count = self._add_state('count')

    def update_state(self, values: Any, sample_weight: Any = None) -> Any:
        """Adds a batch of values (any shape) with optional weights."""
        values = tf.cast(tf.convert_to_tensor(values), tf.float32)
        if sample_weight is None:
            total = tf.reduce_sum(values)
            count = tf.cast(tf.size(values), tf.float32)
        else:
            weight = _broadcast_weight(values, sample_weight)
            total = tf.reduce_sum(values * weight)
            count = tf.reduce_sum(weight)
        return self._done(self.total.assign_add(total), self.count.assign_add(count))

    def result(self) -> tf.Tensor:
        return tf.math.divide_no_nan(self.total.read_value(), self.count.read_value())

    def state_after_update(self) -> tuple[tf.Tensor, tf.Tensor]:
        """(total, count) as read after this metric's last update.

        In a TF1 graph the reads depend on the last update op, so a session running several update
        ops together sees the updated state; eagerly and inside `tf.function` ops run in order.
        """
        after = [] if self.last_update_op is None else [self.last_update_op]
        with tf.control_dependencies(after):
            return self.total.read_value(), self.count.read_value()

    def set_state(self, total: Any, count: Any) -> Any:
        """Overwrites (total, count); derived means such as accuracy_baseline are kept this way."""
        return self._done(self.total.assign(tf.cast(total, tf.float32)),
                          self.count.assign(tf.cast(count, tf.float32)))


class _MatchMean(Mean):
    """A Mean over per-element match indicators computed from (y_true, y_pred)."""

    def _matches(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:  # pragma: no cover
        raise NotImplementedError

    def update_state(self, y_true: Any, y_pred: Any = None, sample_weight: Any = None) -> Any:
        """Adds matches of one batch; weights are per example (broadcast like `Mean`)."""
        y_true = tf.cast(tf.convert_to_tensor(y_true), tf.float32)
        y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
        y_true, y_pred = _squeeze_one_extra_dim(y_true, y_pred)
        return super().update_state(self._matches(y_true, y_pred), sample_weight)


class Accuracy(_MatchMean):
    """Weighted fraction of elements where `y_true == y_pred` (exact float32 equality)."""

    def __init__(self, name: str = 'accuracy'):
        super().__init__(name)

    def _matches(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.equal(y_true, y_pred), tf.float32)


class BinaryAccuracy(_MatchMean):
    """Accuracy of `y_pred > threshold` (strict) against y_true, averaged over the last axis first.

    The per-example fraction of correct elements is then a weighted mean over examples, with
    `[..., 1]` example weights squeezed to `[...]`.
    """

    def __init__(self, name: str = 'binary_accuracy', threshold: float = 0.5):
        super().__init__(name)
        self.threshold = float(threshold)

    def _matches(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        predicted = tf.cast(y_pred > self.threshold, tf.float32)
        return tf.reduce_mean(tf.cast(tf.equal(y_true, predicted), tf.float32), axis=-1)


def _flat_inputs(y_true: Any, y_pred: Any, sample_weight: Any
                 ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """Flattens (positive indicator, float32 score, float32 weight or None) for confusion counts.

    Positives are labels != 0 (soft labels count as positive); the weight is rank-aligned with
    and broadcast to the scores before flattening.
    """
    y_true = tf.cast(tf.convert_to_tensor(y_true), tf.float32)
    y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
    y_true, y_pred = _squeeze_one_extra_dim(y_true, y_pred)
    weight = None if sample_weight is None else tf.reshape(
        _broadcast_weight(y_pred, sample_weight), [-1])
    positive = tf.reshape(tf.cast(tf.not_equal(y_true, 0.0), tf.float32), [-1])
    return positive, tf.reshape(y_pred, [-1]), weight


class _ThresholdConfusion(Metric):
    """Weighted true/false positive/negative counts of `y_pred > t` at fixed thresholds."""

    def __init__(self, name: str, thresholds: float | Sequence[float] | None):
        super().__init__(name)
        self._scalar = thresholds is None or isinstance(thresholds, (int, float))
        values = [0.5] if thresholds is None else (
            [float(thresholds)] if self._scalar else [float(t) for t in thresholds])
        self.thresholds = values
        size = (len(values),)
        self.true_positives = self._add_state('true_positives', size)
        self.false_positives = self._add_state('false_positives', size)
        self.false_negatives = self._add_state('false_negatives', size)

    def update_state(self, y_true: Any, y_pred: Any = None, sample_weight: Any = None) -> Any:
        """Adds one batch; `y_true != 0` is a positive, `y_pred > t` a predicted positive."""
        positive, score, weight = _flat_inputs(y_true, y_pred, sample_weight)
        if weight is None:
            weight = tf.ones_like(score)
        thresholds = tf.constant(self.thresholds, tf.float32)
        # [T, N] predicted-positive table; N is the flattened batch.
        predicted = tf.cast(score[tf.newaxis, :] > thresholds[:, tf.newaxis], tf.float32)
        pos_w = (positive * weight)[tf.newaxis, :]
        neg_w = ((1.0 - positive) * weight)[tf.newaxis, :]
        tp = tf.reduce_sum(predicted * pos_w, axis=1)
        fp = tf.reduce_sum(predicted * neg_w, axis=1)
        fn = tf.reduce_sum((1.0 - predicted) * pos_w, axis=1)
        return self._done(self.true_positives.assign_add(tp),
                          self.false_positives.assign_add(fp),
                          self.false_negatives.assign_add(fn))

    def _shape_result(self, values: tf.Tensor) -> tf.Tensor:
        return values[0] if self._scalar else values


class Precision(_ThresholdConfusion):
    """TP / (TP + FP) at `thresholds` (default 0.5; a list gives a vector result)."""

    def __init__(self, name: str = 'precision', thresholds: float | Sequence[float] | None = None):
        super().__init__(name, thresholds)

    def result(self) -> tf.Tensor:
        tp = self.true_positives.read_value()
        return self._shape_result(
            tf.math.divide_no_nan(tp, tp + self.false_positives.read_value()))


class Recall(_ThresholdConfusion):
    """TP / (TP + FN) at `thresholds` (default 0.5; a list gives a vector result)."""

    def __init__(self, name: str = 'recall', thresholds: float | Sequence[float] | None = None):
        super().__init__(name, thresholds)

    def result(self) -> tf.Tensor:
        tp = self.true_positives.read_value()
        return self._shape_result(
            tf.math.divide_no_nan(tp, tp + self.false_negatives.read_value()))


class AUC(Metric):
    """Keras 2's bucketed ROC / PR AUC over `num_thresholds` evenly spaced thresholds.

    Thresholds are -1e-7, 1/(n-1), ..., (n-2)/(n-1), 1+1e-7. A score p (clipped to [0, 1]) falls
    in bucket max(ceil(p·(n-1)) - 1, 0), computed in float32, and counts as predicted-positive at
    every threshold index up to its bucket. NaN scores fall in no bucket (negative-predicted
    everywhere) but their weight still enters the positive/negative totals, as in Keras 2. ROC uses the
    trapezoidal rule over (FPR, recall); PR uses the Davis & Goadrich interpolation.
    """

    def __init__(self, name: str = 'auc', num_thresholds: int = 200, curve: str = 'ROC'):
        super().__init__(name)
        if curve not in ('ROC', 'PR'):
            raise ValueError('curve must be ROC or PR. Given: {}'.format(curve))
        if num_thresholds <= 1:
            raise ValueError('num_thresholds must be > 1. Given: {}'.format(num_thresholds))
        self.num_thresholds = int(num_thresholds)
        self.curve = curve
        eps = 1e-7
        n = self.num_thresholds
        self.thresholds = [0.0 - eps] + [(i + 1) / (n - 1) for i in range(n - 2)] + [1.0 + eps]
        size = (n,)
        self.true_positives = self._add_state('true_positives', size)
        self.false_positives = self._add_state('false_positives', size)
        self.true_negatives = self._add_state('true_negatives', size)
        self.false_negatives = self._add_state('false_negatives', size)

    def update_state(self, y_true: Any, y_pred: Any = None, sample_weight: Any = None) -> Any:
        """Adds one batch of (label, score[, weight]); all inputs are flattened into one pool."""
        positive, score, weight = _flat_inputs(y_true, y_pred, sample_weight)
        if weight is None:
            weight = tf.ones_like(score)
        n = self.num_thresholds
        is_nan = tf.math.is_nan(score)
        clipped = tf.clip_by_value(tf.where(is_nan, tf.zeros_like(score), score), 0.0, 1.0)
        # float32 throughout, so a score sits in the same bucket as in Keras 2.
        bucket = tf.nn.relu(tf.math.ceil(clipped * tf.constant(n - 1, tf.float32)) - 1.0)
        bucket = tf.cast(bucket, tf.int32)
        in_bucket = tf.where(is_nan, tf.zeros_like(weight), weight)
        pos_w = positive * weight
        neg_w = (1.0 - positive) * weight
        pos_hist = tf.math.unsorted_segment_sum(positive * in_bucket, bucket, n)
        neg_hist = tf.math.unsorted_segment_sum((1.0 - positive) * in_bucket, bucket, n)
        # Count at threshold i = everything in buckets >= i (reverse cumulative sum).
        tp = tf.math.cumsum(pos_hist, reverse=True)
        fp = tf.math.cumsum(neg_hist, reverse=True)
        total_pos = tf.reduce_sum(pos_w)
        total_neg = tf.reduce_sum(neg_w)
        return self._done(self.true_positives.assign_add(tp),
                          self.false_positives.assign_add(fp),
                          self.false_negatives.assign_add(total_pos - tp),
                          self.true_negatives.assign_add(total_neg - fp))

    def result(self) -> tf.Tensor:
        tp = self.true_positives.read_value()
        fp = self.false_positives.read_value()
        tn = self.true_negatives.read_value()
        fn = self.false_negatives.read_value()
        if self.curve == 'ROC':
            recall = tf.math.divide_no_nan(tp, tp + fn)
            fpr = tf.math.divide_no_nan(fp, fp + tn)
            return tf.reduce_sum((fpr[:-1] - fpr[1:]) * (recall[:-1] + recall[1:]) / 2.0)
        # PR, interpolated between thresholds (precision is linear in TP between them).
        d_tp = tp[:-1] - tp[1:]
        pred_pos = tp + fp
        d_pred = pred_pos[:-1] - pred_pos[1:]
        slope = tf.math.divide_no_nan(d_tp, tf.maximum(d_pred, 0.0))
        intercept = tp[1:] - slope * pred_pos[1:]
        both_positive = tf.logical_and(pred_pos[:-1] > 0, pred_pos[1:] > 0)
        ratio = tf.where(both_positive,
                         tf.math.divide_no_nan(pred_pos[:-1], tf.maximum(pred_pos[1:], 0.0)),
                         tf.ones_like(pred_pos[1:]))
        increments = tf.math.divide_no_nan(slope * (d_tp + intercept * tf.math.log(ratio)),
                                           tf.maximum(tp[1:] + fn[1:], 0.0))
        return tf.reduce_sum(increments)
