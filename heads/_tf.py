"""Shared TensorFlow machinery of the heads' TF face (heads_spec.md §2).

Logit/label/weight checks with tf.estimator 2.15's exact error texts, loss reductions, custom
loss_fn calls, label range checks, export outputs, train ops and `create_estimator_spec`.

Imported only when a TF-face method runs, so `import heads` stays free of TensorFlow. Eager calls
raise `ValueError` with tf.estimator's eager messages. In a graph (a TF1 `tf.compat.v1.Graph` or
`tf.function`) the checks are tf.estimator's graph-mode ones: ranks and a wrong last dimension fail
while building, full label/weight/loss_fn shapes are asserted when the graph runs
(`InvalidArgumentError`), label ranges through `tf.debugging` asserts (which fail while building
on constant labels), and the loss ops' own static shape messages come first where they apply.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, Sequence

import tensorflow as tf

from heads import base
from heads.keys import MetricKeys, ModeKeys, PredictionKeys, Reduction, ServingKeys, summary_key

__all__ = [
    'check_logits_final_dim', 'check_dense_labels_match_logits_and_reshape',
    'get_weights_and_check_match_logits', 'compute_weighted_loss', 'call_loss_fn',
    'check_label_range', 'lookup_vocabulary', 'check_prediction_keys',
    'export_outputs', 'all_class_ids', 'all_class_strings', 'class_strings',
    'create_estimator_spec', 'create_train_op', 'sigmoid_cross_entropy',
    'sparse_softmax_cross_entropy', 'regularization_loss', 'regularize',
    'eval_metric_ops', 'estimator_spec', 'train_summaries', 'write_summaries', 'LABEL_NONE_ERR_MSG',
]

LABEL_NONE_ERR_MSG = (
    'You must provide a labels Tensor. Given: None. Suggested troubleshooting steps: Check that '
    'your data contains your label feature. Check that your input_fn properly parses and returns '
    'labels.')

SPARSE_LABEL_ERR_MSG = (
    'SparseTensor labels are not supported. Labels must be a Tensor of shape '
    '[D0, D1, ..., DN, {}], e.g. [batch_size, {}].Suggested Fix (1): Check the label feature in '
    'your data. Each example must contain {} value(s). If not, your choice of label was probably '
    'incorrect. Suggested Fix (2): In your input_fn, use tf.sparse_tensor_to_dense() to turn labels '
    'into a Tensor.')

MISMATCHED_LABEL_DIM_ERR_MSG = (
    'Mismatched label shape. Expected labels dimension={}.  Received {}. Suggested Fix: If your '
    'classifier expects one-hot encoding label, check your n_classes argument to the estimator '
    'and/or the shape of your label. Otherwise, check the shape of your label.')

LABEL_SHAPE_ERR_MSG = (
    'labels shape must be [D0, D1, ... DN, {}]. Suggested Fix: check your n_classes argument to '
    'the head and/or the shape of your label.')

_LOGITS_SHAPE_MSG = 'logits shape must be [D0, D1, ... DN, logits_dimension]'


def _shape_tuple(tensor: tf.Tensor) -> tuple:
    """Static shape as a tuple (None for unknown dims), printed like tf.estimator's eager shapes."""
    return tuple(tensor.shape.as_list())


def _is_sparse(value: Any) -> bool:
    return isinstance(value, (tf.SparseTensor, tf.compat.v1.SparseTensorValue))


def _same_shape(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Whether two 1-D shape vectors (possibly of different lengths) are equal, as a bool tensor."""
    size_a, size_b = tf.size(a), tf.size(b)
    # Padding both to one length lets the element-wise comparison run even when lengths differ.
    padded_a, padded_b = tf.pad(a, [[0, size_b]]), tf.pad(b, [[0, size_a]])
    return tf.logical_and(tf.equal(size_a, size_b), tf.reduce_all(tf.equal(padded_a, padded_b)))


# ---------------------------------------------------------------------------------------------
# Logits, labels, weights.
# ---------------------------------------------------------------------------------------------

def check_logits_final_dim(logits: Any, dim: Any) -> tf.Tensor:
    """Casts logits to float32 and checks their shape is `[D0, ..., DN, dim]` with N >= 0.

    Args:
      logits: logits tensor (any numeric dtype).
      dim: expected last dimension; a tensor value skips the static check.

    Returns:
      float32 logits.

    Raises:
      ValueError: rank < 2 or a statically wrong last dimension.
    """
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    rank = logits.shape.rank
    static_dim = int(dim) if isinstance(dim, numbers.Integral) else None
    if rank is not None:
        if rank < 2:
            raise ValueError('logits must have rank at least 2.  Received rank {}, shape {}'.format(
                rank, _shape_tuple(logits)))
        last = logits.shape[-1]
        if static_dim is not None and last is not None:
            if last != static_dim:
                raise ValueError('logits shape must be [D0, D1, ... DN, logits_dimension], '
                                 'got {}.'.format(_shape_tuple(logits)))
            return logits
    if tf.executing_eagerly():
        return logits
    # Graph mode with shapes unknown at trace time: check when the values arrive.
    shape = tf.shape(logits)
    checks = [tf.debugging.assert_rank_at_least(logits, 2, message=_LOGITS_SHAPE_MSG)]
    with tf.control_dependencies(checks):
        checks.append(tf.debugging.Assert(tf.equal(tf.cast(dim, tf.int32), shape[-1]),
                                          [_LOGITS_SHAPE_MSG, shape]))
    with tf.control_dependencies(checks):
        return tf.identity(logits)


def check_dense_labels_match_logits_and_reshape(labels: Any, logits: tf.Tensor,
                                                dim: int) -> tf.Tensor:
    """Checks dense labels are `[D0, ..., DN, dim]` (or `[D0, ..., DN]`, then expanded).

    Eagerly every shape fact is checked at once (ValueError, tf.estimator's eager texts). In a
    graph (TF1 or `tf.function`) only a known rank below 2 and a known wrong last dimension fail
    while building; the full shape is checked when the graph runs (InvalidArgumentError), and only
    after the rank check, as tf.estimator's graph mode did.

    Args:
      labels: labels tensor (any dtype).
      logits: checked logits `[D0, ..., DN, L]`.
      dim: expected last dimension of labels.

    Returns:
      labels with a trailing dimension `dim`, dtype unchanged.

    Raises:
      ValueError: None or sparse labels, or statically wrong shapes (tf.estimator's texts).
    """
    if labels is None:
        raise ValueError(LABEL_NONE_ERR_MSG)
    if _is_sparse(labels):
        raise ValueError(SPARSE_LABEL_ERR_MSG.format(dim, dim, dim))
    labels = tf.convert_to_tensor(labels)
    logits = tf.convert_to_tensor(logits)
    labels_rank, logits_rank = labels.shape.rank, logits.shape.rank
    if labels_rank is not None and logits_rank is not None and labels_rank == logits_rank - 1:
        labels = tf.expand_dims(labels, -1)
    if tf.executing_eagerly():
        return _check_eager_labels_shape(labels, logits, dim)
    return _check_graph_labels_shape(labels, logits, dim)


def _check_eager_labels_shape(labels: tf.Tensor, logits: tf.Tensor, dim: int) -> tf.Tensor:
    """Eager label shape checks, in tf.estimator's order: rank, last dimension, full shape."""
    labels_shape = _shape_tuple(labels)
    if len(labels_shape) < 2:
        raise ValueError('labels must have rank at least 2.  Received rank {}, shape {}'.format(
            len(labels_shape), labels_shape))
    if labels_shape[-1] != dim:
        raise ValueError(MISMATCHED_LABEL_DIM_ERR_MSG.format(dim, labels_shape[-1]))
    expected = _shape_tuple(logits)[:-1] + (dim,)
    if expected != labels_shape:
        raise ValueError('{}, expected_labels_shape: {}. labels_shape: {}.'.format(
            LABEL_SHAPE_ERR_MSG.format(dim), expected, labels_shape))
    return labels


def _check_graph_labels_shape(labels: tf.Tensor, logits: tf.Tensor, dim: int) -> tf.Tensor:
    """Graph label shape checks: the rank check, then (depending on it) the full shape check."""
    message = LABEL_SHAPE_ERR_MSG.format(dim)
    # A known rank fails here while building (ValueError); an unknown one when the graph runs.
    rank_check = tf.debugging.assert_rank_at_least(labels, 2, message=message)
    with tf.control_dependencies(_ops(rank_check)):
        if labels.shape.rank is not None and labels.shape[-1] is not None \
                and labels.shape[-1] != dim:
            raise ValueError(MISMATCHED_LABEL_DIM_ERR_MSG.format(dim, labels.shape[-1]))
        expected = tf.concat([tf.shape(logits)[:-1], [dim]], axis=0)
        actual = tf.shape(labels)
        shape_check = tf.debugging.Assert(
            _same_shape(expected, actual),
            [message, 'expected_labels_shape: ', expected, 'labels_shape: ', actual])
    with tf.control_dependencies([shape_check]):
        return tf.identity(labels)


def _ops(*maybe_ops: Any) -> list[Any]:
    """The given ops without the Nones (assert functions return None when nothing is left to
    check)."""
    return [op for op in maybe_ops if op is not None]


def _numeric_column_type() -> type:
    # The class behind tf.feature_column.numeric_column (still shipped, deprecated, in TF 2.21).
    return type(tf.feature_column.numeric_column('_'))


def _fetch_weight_feature(features: Mapping[str, Any], weight_column: Any) -> tf.Tensor:
    """Weight feature as tf.estimator's feature columns delivered it: float32, rank >= 2."""
    if isinstance(weight_column, str):
        key, normalizer_fn = weight_column, None
    elif isinstance(weight_column, _numeric_column_type()):
        key, normalizer_fn = weight_column.key, weight_column.normalizer_fn
    else:
        raise TypeError('Weight column must be either a string or NumericColumn. '
                        'Given type: {}.'.format(type(weight_column)))
    if features is None or key not in features:
        raise ValueError('Feature {} is not in features dictionary.'.format(key))
    raw = features[key]
    if _is_sparse(raw):
        raise ValueError('The corresponding Tensor of numerical column must be a Tensor. '
                         'SparseTensor is not supported. key: {}'.format(key))
    weights = tf.convert_to_tensor(raw)
    if weights.shape.rank == 0:
        shown = weights.numpy() if tf.executing_eagerly() else raw
        raise ValueError('Feature (key: {}) cannot have rank 0. Given: {}'.format(key, shown))
    if weights.shape.rank == 1:
        # The feature-column builder expanded rank-1 features to [B, 1] before the head saw them.
        weights = tf.expand_dims(weights, -1)
    if normalizer_fn is not None:
        weights = normalizer_fn(weights)
    return tf.cast(weights, tf.float32)


def get_weights_and_check_match_logits(features: Mapping[str, Any] | None, weight_column: Any,
                                       logits: tf.Tensor, allow_per_logit: bool = False) -> Any:
    """Example weights from `features[weight_column]`, shaped to broadcast against the loss.

    Args:
      features: dict of feature tensors (may be None when there is no weight column).
      weight_column: None, a feature key, or a `tf.feature_column.numeric_column`.
      logits: checked logits `[D0, ..., DN, L]`.
      allow_per_logit: accept `[D0, ..., DN, L]` weights too (regression heads).

    Returns:
      The Python float 1.0 without a weight column, else float32 weights `[D0, ..., DN, 1]` (or
      `[D0, ..., DN, L]` per logit). Zero and negative weights are kept as they are.
    """
    if weight_column is None:
        return 1.0
    weights = _fetch_weight_feature(features, weight_column)
    if allow_per_logit:
        err_msg = ('weights shape must be [D0, D1, ... DN], [D0, D1, ... DN, 1] or '
                   '[D0, D1, ... DN, logits_dimension]')
    else:
        err_msg = 'weights shape must be [D0, D1, ... DN] or [D0, D1, ... DN, 1]'
    logits = tf.convert_to_tensor(logits)
    w_rank, l_rank = weights.shape.rank, logits.shape.rank
    if tf.executing_eagerly():
        w_shape, l_shape = _shape_tuple(weights), _shape_tuple(logits)
        if w_rank == l_rank - 1:
            if l_shape[:-1] != w_shape:
                raise ValueError('{}, logits_shape: {}. weights_shape: {}.'.format(
                    err_msg, l_shape, w_shape))
            return tf.expand_dims(weights, -1)
        per_example = l_shape[:-1] + (1,)
        if w_shape != per_example and not (allow_per_logit and w_shape == l_shape):
            raise ValueError('{}, logits_shape: {}. weights_shape: {}.'.format(
                err_msg, l_shape, w_shape))
        return weights
    # Graph (TF1 or tf.function): checked when the graph runs, as tf.estimator's graph mode did.
    w_dyn, l_dyn = tf.shape(weights), tf.shape(logits)
    if w_rank is not None and l_rank is not None and w_rank == l_rank - 1:
        check = tf.debugging.Assert(_same_shape(l_dyn[:-1], w_dyn),
                                    [err_msg, 'logits_shape: ', l_dyn, 'weights_shape: ', w_dyn])
        with tf.control_dependencies([check]):
            return tf.expand_dims(weights, -1)
    per_example = tf.concat([l_dyn[:-1], [1]], axis=0)
    ok = _same_shape(per_example, w_dyn)
    if allow_per_logit:
        ok = tf.logical_or(ok, _same_shape(l_dyn, w_dyn))
    check = tf.debugging.Assert(ok, [err_msg, 'logits_shape: ', l_dyn, 'weights_shape: ', w_dyn])
    with tf.control_dependencies([check]):
        return tf.identity(weights)


def lookup_vocabulary(labels: tf.Tensor, vocabulary: Sequence[str]) -> tf.Tensor:
    """int64 index of each string label in `vocabulary`; labels not in it map to -1.

    Plain tensor ops (no lookup table resource), so it also runs inside `tf.function`.
    """
    names = tf.constant(list(vocabulary), dtype=tf.string)
    matches = tf.equal(labels[..., tf.newaxis], names)
    index = tf.argmax(tf.cast(matches, tf.int32), axis=-1, output_type=tf.int64)
    return tf.where(tf.reduce_any(matches, axis=-1), index, tf.constant(-1, tf.int64))


def check_label_range(labels: tf.Tensor, n: int, message: str | None = None) -> tf.Tensor:
    """Requires `0 <= labels <= n - 1` element-wise (upper bound checked first).

    Eagerly a ValueError (`Labels must be <= {n} - 1` / `Labels must be >= 0`); in a graph (TF1
    or `tf.function`) tf.debugging's asserts with `Labels must be <= n_classes - 1`: they raise
    InvalidArgumentError while building when the labels are constants, else when the graph runs.
    """
    labels = tf.convert_to_tensor(labels)
    upper = tf.cast(n - 1, labels.dtype)
    if tf.executing_eagerly():
        if not bool(tf.reduce_all(tf.less_equal(labels, upper))):
            raise ValueError(message or 'Labels must be <= {} - 1'.format(n))
        if not bool(tf.reduce_all(tf.greater_equal(labels, tf.zeros([], labels.dtype)))):
            raise ValueError(message or 'Labels must be >= 0')
        return labels
    checks = _ops(
        tf.compat.v1.debugging.assert_less_equal(
            labels, upper, message=message or 'Labels must be <= n_classes - 1'),
        tf.compat.v1.debugging.assert_non_negative(labels, message=message or 'Labels must be >= 0'))
    with tf.control_dependencies(checks):
        return tf.identity(labels)


# ---------------------------------------------------------------------------------------------
# Loss.
# ---------------------------------------------------------------------------------------------

def call_loss_fn(loss_fn: Callable[..., Any], labels: tf.Tensor, logits: tf.Tensor,
                 features: Mapping[str, Any] | None, expected_shape: Any = 1) -> tf.Tensor:
    """Calls a custom loss_fn as tf.estimator did and checks the unreduced loss shape.

    `features` is passed only if the signature names it; `loss_reduction` is never passed.

    Args:
      loss_fn: the head's loss_fn.
      labels: processed labels.
      logits: float32 logits `[D0, ..., DN, L]`.
      features: features dict.
      expected_shape: the loss's expected last dimension k (int) — the shape must then be
        `[D0, ..., DN, k]` — or a full expected shape (sequence of ints).

    Returns:
      The unreduced loss tensor.
    """
    kwargs = {'features': features} if base.loss_fn_passes_features(loss_fn) else {}
    loss = tf.convert_to_tensor(loss_fn(labels=labels, logits=logits, **kwargs))
    logits = tf.convert_to_tensor(logits)
    if isinstance(expected_shape, numbers.Integral):
        k = int(expected_shape)
        expected_static = (_shape_tuple(logits)[:-1] + (k,)) if logits.shape.rank else None
    else:
        expected_static = tuple(expected_shape)
        k = expected_static[-1]
    head_msg = 'loss_fn must return Tensor of shape [D0, D1, ... DN, {}]. '.format(k)
    if tf.executing_eagerly():
        loss_shape = _shape_tuple(loss)
        if loss_shape != expected_static:
            raise ValueError(head_msg, 'logits_shape: ', _shape_tuple(logits),
                             'loss_shape: ', loss_shape)
        return loss
    # Graph (TF1 or tf.function): checked when the graph runs, as tf.estimator's graph mode did.
    l_dyn = tf.shape(logits)
    expected = tf.concat([l_dyn[:-1], [k]], axis=0)
    actual = tf.shape(loss)
    check = tf.debugging.Assert(_same_shape(expected, actual),
                                [head_msg, 'logits_shape: ', l_dyn, 'loss_shape: ', actual])
    with tf.control_dependencies([check]):
        return tf.identity(loss)


def sigmoid_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """`tf.nn.sigmoid_cross_entropy_with_logits`, with TF 2.15's message for statically
    incompatible shapes (`logits and labels must have the same shape ((2, 1) vs (3, 1))`)."""
    labels = tf.convert_to_tensor(labels)
    if not labels.shape.is_compatible_with(logits.shape):
        raise ValueError('logits and labels must have the same shape ({} vs {})'.format(
            logits.shape, labels.shape))
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def sparse_softmax_cross_entropy(label_ids: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy of int label ids `[D0, ..., DN]` against logits `[D0, ..., DN, n]`,
    with TF 2.15's message for statically incompatible shapes."""
    if not label_ids.shape.is_compatible_with(logits.shape[:-1]):
        raise ValueError('Shape mismatch: The shape of labels (received {}) should equal the shape '
                         'of logits except for the last dimension (received {}).'.format(
                             label_ids.shape, logits.shape))
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=label_ids, logits=logits)


def compute_weighted_loss(unreduced: tf.Tensor, weights: Any, reduction: str) -> tf.Tensor:
    """Reduces `unreduced * weights` to a scalar (Keras 2 reductions, heads_spec §2.5).

    'sum' is Σ; 'sum_over_batch_size' and 'auto' divide by the number of elements of the weighted
    loss (zero-weight elements count; empty input gives 0). Not a weighted mean.
    """
    weighted = tf.cast(unreduced, tf.float32) * tf.cast(weights, tf.float32)
    total = tf.reduce_sum(weighted)
    if reduction == Reduction.SUM:
        return total
    if reduction in (Reduction.SUM_OVER_BATCH_SIZE, Reduction.AUTO):
        return tf.math.divide_no_nan(total, tf.cast(tf.size(weighted), tf.float32))
    raise ValueError('Invalid loss_reduction: {}. See `tf.losses.Reduction` for valid '
                     'options.'.format(reduction))


def regularization_loss(regularization_losses: Sequence[Any]) -> tf.Tensor:
    """Plain float32 sum of the regularization losses (tf.add_n)."""
    return tf.add_n([tf.cast(r, tf.float32) for r in regularization_losses])


def regularize(training_loss: tf.Tensor, regularization_losses: Sequence[Any] | None) -> tf.Tensor:
    """Adds the regularization losses (if given) to a reduced training loss."""
    if regularization_losses is None:
        return training_loss
    return training_loss + regularization_loss(regularization_losses)


# ---------------------------------------------------------------------------------------------
# Predictions and export outputs.
# ---------------------------------------------------------------------------------------------

def check_prediction_keys(keys: Sequence[str], valid_keys: Sequence[str]) -> None:
    """Rejects unknown prediction keys with tf.estimator's message."""
    for key in keys:
        if key not in valid_keys:
            raise ValueError('Prediction key must be in PredictionKeys, given: {}.'
                             'Valid prediction keys include {}.'.format(key, list(valid_keys)))


def all_class_strings(logits: tf.Tensor, n_classes: int,
                      label_vocabulary: Sequence[str] | None) -> tf.Tensor:
    """Every class name (vocabulary or '0'..'n-1'), tiled to `[D0, n]` (first dim only)."""
    if label_vocabulary:
        names = tf.constant(list(label_vocabulary), dtype=tf.string)
    else:
        names = tf.strings.as_string(tf.range(n_classes))
    return tf.tile(names[tf.newaxis, :], [tf.shape(logits)[0], 1])


def all_class_ids(logits: tf.Tensor, n_classes: int) -> tf.Tensor:
    """int32 `[D0, n]` table of class ids 0..n-1."""
    return tf.tile(tf.range(n_classes, dtype=tf.int32)[tf.newaxis, :], [tf.shape(logits)[0], 1])


def class_strings(class_ids: tf.Tensor, label_vocabulary: Sequence[str] | None) -> tf.Tensor:
    """String class of each id: `str(id)` or `label_vocabulary[id]`."""
    if label_vocabulary:
        return tf.gather(tf.constant(list(label_vocabulary), dtype=tf.string), class_ids)
    return tf.strings.as_string(class_ids)


def export_outputs(head: Any, predictions: Mapping[Any, Any]) -> dict[str, Any]:
    """PREDICT-mode export outputs of a single head, chosen from its prediction keys.

    A head may define `_tf_export_outputs(predictions)` to decide itself. Otherwise: regression
    heads (a `predictions` key) export RegressionOutput as default and `regression`; classifiers
    export ClassificationOutput(probabilities, every class) as default and `classification`, and
    the binary head (a `logistic` key) adds RegressionOutput(logistic) as `regression`. Every head
    adds `predict` = PredictOutput(all predictions), also the default of a (user's) head with
    neither a `predictions` nor a `probabilities` key.
    """
    own = getattr(head, '_tf_export_outputs', None)
    if own is not None:
        return own(predictions)
    keys = PredictionKeys
    outputs: dict[str, Any] = {}
    if keys.PREDICTIONS in predictions:
        regression = base.RegressionOutput(value=predictions[keys.PREDICTIONS])
        outputs[ServingKeys.DEFAULT_SERVING] = regression
        outputs[ServingKeys.REGRESS] = regression
    elif keys.PROBABILITIES in predictions:
        classes = predictions.get(keys.ALL_CLASSES, predictions.get(keys.CLASSES))
        classification = base.ClassificationOutput(
            scores=predictions[keys.PROBABILITIES], classes=classes)
        outputs[ServingKeys.DEFAULT_SERVING] = classification
        outputs[ServingKeys.CLASSIFY] = classification
        if keys.LOGISTIC in predictions:
            outputs[ServingKeys.REGRESS] = base.RegressionOutput(value=predictions[keys.LOGISTIC])
    predict = base.PredictOutput(outputs=dict(predictions))
    # A user's head with other prediction keys serves all its predictions by default.
    outputs.setdefault(ServingKeys.DEFAULT_SERVING, predict)
    outputs[ServingKeys.PREDICT] = predict
    return outputs


# ---------------------------------------------------------------------------------------------
# Train op and the estimator spec.
# ---------------------------------------------------------------------------------------------

def _is_keras_optimizer(optimizer: Any) -> bool:
    classes = [tf.keras.optimizers.Optimizer]
    legacy = getattr(tf.keras.optimizers, 'legacy', None)
    if legacy is not None and hasattr(legacy, 'Optimizer'):
        classes.append(legacy.Optimizer)
    return isinstance(optimizer, tuple(classes))


def _why_not_keras_optimizer(optimizer: Any) -> str:
    """Why an optimizer tf.estimator 2.15 took cannot run here (docs/migration.md), or ''."""
    if isinstance(optimizer, tf.compat.v1.train.Optimizer):
        return ('. TF 1.x optimizers (tf.compat.v1.train.*) were not accepted by tf.estimator 2.x '
                'heads either: pass a tf.keras.optimizers.Optimizer or train_op_fn.')
    if hasattr(optimizer, 'get_updates'):
        return ('. It looks like a Keras 2 optimizer (it has get_updates): TF 2.21 ships Keras 3, '
                'which has no get_updates; pass a Keras 3 tf.keras.optimizers.Optimizer or '
                'train_op_fn (see docs/migration.md).')
    return ''


def create_train_op(loss: tf.Tensor, optimizer: Any = None, trainable_variables: Any = None,
                    train_op_fn: Callable[[tf.Tensor], Any] | None = None,
                    update_ops: Any = None,
                    loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE) -> Any:
    """The TRAIN-mode train_op, with tf.estimator's checks in its order (heads_spec §2.9).

    With an optimizer the gradients of `loss` w.r.t. `trainable_variables` are applied; that needs
    a graph (call inside `tf.function`), since an eager tensor no longer knows how it was computed.
    With `train_op_fn` its return value is the train op. `update_ops` are grouped with it.
    """
    if update_ops is not None and not isinstance(update_ops, (list, tuple)):
        raise ValueError('update_ops should be a list or a tuple. Given type: {}.'.format(
            type(update_ops)))
    if optimizer is not None:
        if train_op_fn is not None:
            raise ValueError('train_op_fn and optimizer cannot both be set.')
        if not _is_keras_optimizer(optimizer):
            raise ValueError('The given optimizer is not a tf.keras.optimizers.Optimizer instance. '
                             'Received optimizer of type {}{}'.format(
                                 type(optimizer), _why_not_keras_optimizer(optimizer)))
        if trainable_variables is None:
            raise ValueError('trainable_variables cannot be None. Given {}'.format(
                trainable_variables))
        if not isinstance(trainable_variables, (list, tuple)):
            raise ValueError('trainable_variables should be a list or a tuple. Given type: '
                             '{}.'.format(type(trainable_variables)))
        loss_for_optimizer = loss
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if loss_reduction == Reduction.SUM_OVER_BATCH_SIZE and replicas > 1:
            # Gradients are summed over replicas; scale so the step matches one global batch.
            loss_for_optimizer = loss * (1.0 / replicas)
        if tf.executing_eagerly():
            raise ValueError('An optimizer needs the loss as a graph tensor to differentiate it: '
                             'call create_estimator_spec inside tf.function, or pass train_op_fn.')
        grads = tf.gradients(loss_for_optimizer, list(trainable_variables))
        train_op = optimizer.apply_gradients(zip(grads, trainable_variables))
    elif train_op_fn is not None:
        train_op = train_op_fn(loss)
    else:
        raise ValueError('train_op_fn and optimizer cannot both be None.')
    if update_ops is not None and not tf.executing_eagerly():
        ops = [op for op in (train_op, *update_ops) if op is not None]
        train_op = tf.group(*ops)
    return train_op


def eval_metric_ops(metrics: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`{key: (result tensor, last update op)}`, the EstimatorSpec form of updated metrics."""
    return {key: (metric.result(), getattr(metric, 'last_update_op', None))
            for key, metric in metrics.items()}


def train_summaries(loss: tf.Tensor, regularization_losses: Sequence[Any] | None,
                    name: str | None) -> dict[str, tf.Tensor]:
    """TRAIN scalars tf.estimator wrote: `loss` (regularized) and, if given, `regularization_loss`,
    each suffixed with `/name` for a named head."""
    summaries = {summary_key(MetricKeys.LOSS, name): loss}
    if regularization_losses is not None:
        summaries[summary_key(MetricKeys.LOSS_REGULARIZATION, name)] = regularization_loss(
            regularization_losses)
    return summaries


def write_summaries(summaries: Mapping[str, Any]) -> None:
    """Writes TRAIN scalars to the default `tf.summary` writer, as tf.estimator did.

    A no-op unless a writer is the default and a step is set (`tf.summary.experimental.set_step`);
    the scalars are returned in `EstimatorSpec.summaries` either way.
    """
    if tf.summary.experimental.get_step() is None:
        return
    for key, value in summaries.items():
        tf.summary.scalar(key, value)


def estimator_spec(**fields: Any) -> base.EstimatorSpec:
    """An EstimatorSpec; built in a graph (TF1 or tf.function) it carries a
    `tf.compat.v1.train.Scaffold`, as tf.estimator's did (hooks read `spec.scaffold.summary_op`)."""
    if not tf.executing_eagerly():
        fields.setdefault('scaffold', tf.compat.v1.train.Scaffold())
    return base.EstimatorSpec(**fields)


def create_estimator_spec(head: Any, features: Mapping[str, Any] | None, mode: str,
                          logits: Any, labels: Any = None, optimizer: Any = None,
                          trainable_variables: Any = None,
                          train_op_fn: Callable[[tf.Tensor], Any] | None = None,
                          update_ops: Any = None,
                          regularization_losses: Sequence[Any] | None = None
                          ) -> base.EstimatorSpec:
    """A single head's EstimatorSpec for TRAIN, EVAL or PREDICT (heads_spec §2.8).

    Predictions are computed (and logits validated) in every mode. PREDICT needs no labels and
    carries export outputs; EVAL carries the regularized loss and the updated metrics; any other
    mode is TRAIN: loss, train op and the TRAIN summaries.
    """
    with tf.name_scope(head.name or 'head'):
        predictions = head.predictions(logits)
        if mode == ModeKeys.PREDICT:
            return estimator_spec(mode=ModeKeys.PREDICT, predictions=predictions,
                                      eval_metric_ops={},
                                      export_outputs=export_outputs(head, predictions))
        loss = head.loss(labels, logits, features, mode, regularization_losses)
        if mode == ModeKeys.EVAL:
            metrics = head.update_metrics(head.metrics(regularization_losses), features, logits,
                                          labels, regularization_losses=regularization_losses)
            return estimator_spec(mode=ModeKeys.EVAL, predictions=predictions, loss=loss,
                                      eval_metric_ops=eval_metric_ops(metrics))
        train_op = create_train_op(loss, optimizer=optimizer,
                                   trainable_variables=trainable_variables,
                                   train_op_fn=train_op_fn, update_ops=update_ops,
                                   loss_reduction=head.loss_reduction)
        summaries = train_summaries(loss, regularization_losses, head.name)
    # Outside the head's name scope, so the tags are the bare keys (`loss/name`).
    write_summaries(summaries)
    return estimator_spec(mode=ModeKeys.TRAIN, predictions=predictions, loss=loss,
                              train_op=train_op, eval_metric_ops={}, summaries=summaries)
