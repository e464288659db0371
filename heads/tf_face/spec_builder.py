"""The TF face's `create_estimator_spec`: train op, eval metric ops, TRAIN summaries, the spec.

What tf.estimator's `model_fn` got from a head for TRAIN, EVAL and PREDICT, built from the head's
own `predictions`, `loss`, `metrics` and `update_metrics`; `MultiHead` builds its merged spec from
the same pieces.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import tensorflow as tf

from heads.keys import MetricKeys, ModeKeys, Reduction, summary_key
from heads.spec import EstimatorSpec
from heads.tf_face.losses import regularization_loss
from heads.tf_face.outputs import export_outputs

__all__ = ['create_estimator_spec', 'create_train_op', 'eval_metric_ops', 'train_summaries',
           'write_summaries', 'estimator_spec']

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
    """The TRAIN-mode train_op, with tf.estimator's checks in its order.

    The checks, in order: update_ops a list or tuple; not both optimizer and train_op_fn; the
    optimizer a Keras optimizer (a TF1 or Keras 2 one is refused with the reason, see
    docs/migration.md); trainable_variables given, as a list or tuple; one of the two given.

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


def estimator_spec(**fields: Any) -> EstimatorSpec:
    """An EstimatorSpec; built in a graph (TF1 or tf.function) it carries a
    `tf.compat.v1.train.Scaffold`, as tf.estimator's did (hooks read `spec.scaffold.summary_op`)."""
    if not tf.executing_eagerly():
        fields.setdefault('scaffold', tf.compat.v1.train.Scaffold())
    return EstimatorSpec(**fields)


def create_estimator_spec(head: Any, features: Mapping[str, Any] | None, mode: str,
                          logits: Any, labels: Any = None, optimizer: Any = None,
                          trainable_variables: Any = None,
                          train_op_fn: Callable[[tf.Tensor], Any] | None = None,
                          update_ops: Any = None,
                          regularization_losses: Sequence[Any] | None = None
                          ) -> EstimatorSpec:
    """A single head's EstimatorSpec for TRAIN, EVAL or PREDICT, as tf.estimator built it.

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
