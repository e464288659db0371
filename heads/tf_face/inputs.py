"""The TF face's input checks: logits, labels, weights, label ranges, vocabulary lookup.

tf.estimator 2.15's checks with its exact error texts. Eager calls raise `ValueError` with
tf.estimator's eager messages. In a graph (a TF1 `tf.compat.v1.Graph` or `tf.function`) the checks
are tf.estimator's graph-mode ones: ranks and a wrong last dimension fail while building, full
label/weight shapes are asserted when the graph runs (`InvalidArgumentError`), and label ranges go
through `tf.debugging` asserts (which fail while building on constant labels).

Imported only when a TF-face method runs, so `import heads` stays free of TensorFlow.
"""
from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

import tensorflow as tf

__all__ = [
    'LABEL_NONE_ERR_MSG', 'check_logits_final_dim', 'check_dense_labels_match_logits_and_reshape',
    'get_weights_and_check_match_logits', 'lookup_vocabulary', 'check_label_range',
    'shape_tuple', 'same_shape',
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


def shape_tuple(tensor: tf.Tensor) -> tuple:
    """Static shape as a tuple (None for unknown dims), printed like tf.estimator's eager shapes."""
    return tuple(tensor.shape.as_list())


def _is_sparse(value: Any) -> bool:
    return isinstance(value, (tf.SparseTensor, tf.compat.v1.SparseTensorValue))


def same_shape(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
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
                rank, shape_tuple(logits)))
        last = logits.shape[-1]
        if static_dim is not None and last is not None:
            if last != static_dim:
                raise ValueError('logits shape must be [D0, D1, ... DN, logits_dimension], '
                                 'got {}.'.format(shape_tuple(logits)))
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
    labels_shape = shape_tuple(labels)
    if len(labels_shape) < 2:
        raise ValueError('labels must have rank at least 2.  Received rank {}, shape {}'.format(
            len(labels_shape), labels_shape))
    if labels_shape[-1] != dim:
        raise ValueError(MISMATCHED_LABEL_DIM_ERR_MSG.format(dim, labels_shape[-1]))
    expected = shape_tuple(logits)[:-1] + (dim,)
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
            same_shape(expected, actual),
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
        w_shape, l_shape = shape_tuple(weights), shape_tuple(logits)
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
        check = tf.debugging.Assert(same_shape(l_dyn[:-1], w_dyn),
                                    [err_msg, 'logits_shape: ', l_dyn, 'weights_shape: ', w_dyn])
        with tf.control_dependencies([check]):
            return tf.expand_dims(weights, -1)
    per_example = tf.concat([l_dyn[:-1], [1]], axis=0)
    ok = same_shape(per_example, w_dyn)
    if allow_per_logit:
        ok = tf.logical_or(ok, same_shape(l_dyn, w_dyn))
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
