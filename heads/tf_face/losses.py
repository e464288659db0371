"""The TF face's losses: custom loss_fn calls, cross-entropies, reductions, regularization.

Eagerly a wrong loss_fn shape raises `ValueError` with tf.estimator's message; in a graph (TF1 or
`tf.function`) it is asserted when the graph runs, as tf.estimator's graph mode did. The loss ops'
own static shape messages are TF 2.15's.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, Sequence

import tensorflow as tf

from heads.keys import Reduction
from heads.tf_face.inputs import same_shape, shape_tuple
from heads.validation import loss_fn_passes_features

__all__ = ['call_loss_fn', 'sigmoid_cross_entropy', 'sparse_softmax_cross_entropy',
           'compute_weighted_loss', 'regularization_loss', 'regularize']

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
    kwargs = {'features': features} if loss_fn_passes_features(loss_fn) else {}
    loss = tf.convert_to_tensor(loss_fn(labels=labels, logits=logits, **kwargs))
    logits = tf.convert_to_tensor(logits)
    if isinstance(expected_shape, numbers.Integral):
        k = int(expected_shape)
        expected_static = (shape_tuple(logits)[:-1] + (k,)) if logits.shape.rank else None
    else:
        expected_static = tuple(expected_shape)
        k = expected_static[-1]
    head_msg = 'loss_fn must return Tensor of shape [D0, D1, ... DN, {}]. '.format(k)
    if tf.executing_eagerly():
        loss_shape = shape_tuple(loss)
        if loss_shape != expected_static:
            raise ValueError(head_msg, 'logits_shape: ', shape_tuple(logits),
                             'loss_shape: ', loss_shape)
        return loss
    # Graph (TF1 or tf.function): checked when the graph runs, as tf.estimator's graph mode did.
    l_dyn = tf.shape(logits)
    expected = tf.concat([l_dyn[:-1], [k]], axis=0)
    actual = tf.shape(loss)
    check = tf.debugging.Assert(same_shape(expected, actual),
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
    """Reduces `unreduced * weights` to a scalar, as Keras 2's loss reductions did.

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
