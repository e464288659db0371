"""Training a model with a head on TensorFlow 2.21 / Keras 3: `HeadModel`.

tf.estimator is gone from TensorFlow 2.16 on, and with it the `model_fn` that called
`head.create_estimator_spec`. `HeadModel` takes its place: a `keras.Model` that wraps a body (any
Keras layer or model that maps a features dict to logits) and lets the head supply the training
loss, the evaluation metrics and the predictions::

    model = HeadModel(body, heads.BinaryClassHead(weight_column='w'))
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(train_ds, epochs=5)           # datasets of (features dict, labels)
    model.evaluate(eval_ds, return_dict=True)   # the head's metric keys and values
    model.predict(features_ds)              # the head's prediction dict

What each step does, matching the TRAIN / EVAL / PREDICT modes of `create_estimator_spec`:

* fit: `loss = head.loss(labels, logits, features, 'train', regularization_losses=model.losses or
  None)`, differentiated with `tf.GradientTape` and applied by the compiled optimizer. The logged
  `loss` is the unweighted mean over the epoch's batches of that (regularized) batch loss, and
  `regularization_loss` the mean of Σ model.losses when the model has any.
* evaluate: the head's metric objects (`head.metrics(regularization_losses)`) are created once per
  model, reset when an evaluation starts and updated with `head.update_metrics` on every batch, so
  the result is exactly the keys and values `update_metrics` gives over the same batches (as an
  Estimator evaluation accumulated them). For a `MultiHead` every head's metrics accumulate over
  all batches too, as in an Estimator evaluation (calling `MultiHead.update_metrics` eagerly once
  per batch would keep only the last batch's per-head metrics).
* predict: `head.predictions(logits)`. Keras needs string keys, so a MultiHead's `(head, key)`
  prediction keys become `'head/key'`.

Example weights come from the head's `weight_column` in the features dict, exactly as the head
reads them; Keras' `sample_weight` is refused so that no example is weighted twice. The head
supplies loss and metrics, so `compile` accepts no `loss` or `metrics`.

This module imports TensorFlow and Keras (TensorFlow backend); `import heads` does not import it.
"""
from __future__ import annotations

from typing import Any, Mapping

import keras
import tensorflow as tf

from heads import base
from heads.keys import MetricKeys, ModeKeys, Reduction, summary_key
from heads.multi_head import MultiHead
from heads.tf_face.losses import regularization_loss

__all__ = ['HeadModel', 'prediction_name']

if keras.backend.backend() != 'tensorflow':
    raise ImportError('heads.keras_adapter needs the TensorFlow backend of Keras; '
                      'KERAS_BACKEND is {!r}.'.format(keras.backend.backend()))


def prediction_name(key: Any) -> str:
    """A prediction key as Keras can carry it: `'probabilities'`, or `'head/key'` for MultiHead's
    `(head, key)` tuples."""
    if isinstance(key, tuple):
        return '/'.join(str(part) for part in key)
    return str(key)


class _Evaluation:
    """The head's metric objects of one model, created once, and how one batch updates them.

    A single head is updated through its own `update_metrics`. A MultiHead's `update_metrics`
    creates fresh per-head metric objects on every call, which cannot accumulate across the
    batches of a compiled test step; so its metrics are `MultiHead.metrics()` plus every head's
    own `metrics()`, kept for the whole evaluation and updated the way `MultiHead.update_metrics`
    updates them (regularization mean, `loss/<head>` means, then each head's `update_metrics`).
    """

    def __init__(self, head: base.Head, regularization_losses: list | None):
        self.head = head
        self.with_regularization = regularization_losses is not None
        self.own = head.metrics(regularization_losses)
        self.per_head = ({h.name: h.metrics() for h in head.heads}
                         if isinstance(head, MultiHead) else {})
        self.metrics: dict[str, Any] = dict(self.own)
        for head_metrics in self.per_head.values():
            self.metrics.update(head_metrics)

    def update(self, features: Any, logits: Any, labels: Any,
               regularization_losses: list | None) -> None:
        """Adds one batch to every metric."""
        # Metrics were created for one regularization setting; keep feeding them that way.
        reg = regularization_losses if self.with_regularization else None
        if self.with_regularization and reg is None:
            reg = [tf.constant(0.0)]
        head = self.head
        if not isinstance(head, MultiHead):
            head.update_metrics(self.own, features, logits, labels, regularization_losses=reg)
            return
        logits_dict = head._check_logits_and_labels(logits, labels)
        if reg is not None:
            self.own[summary_key(MetricKeys.LOSS_REGULARIZATION, head.name)].update_state(
                regularization_loss(reg))
        for sub in head.heads:
            sub_logits, sub_labels = logits_dict[sub.name], labels[sub.name]
            self.own[summary_key(MetricKeys.LOSS, sub.name)].update_state(
                sub.loss(sub_labels, sub_logits, features))
            sub.update_metrics(self.per_head[sub.name], features, sub_logits, sub_labels)

    def results(self) -> dict[str, tf.Tensor]:
        return {key: metric.result() for key, metric in self.metrics.items()}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset_state()


class HeadModel(keras.Model):
    """A Keras model whose loss, metrics and predictions come from a head.

    Args:
      body: a Keras layer or model mapping the features (a dict of tensors, as the head's
        `weight_column` is looked up there) to logits `[batch, head.logits_dimension]`; for a
        MultiHead, a dict of logits keyed by head name or one tensor with every head's logits
        side by side.
      head: the head (`heads.BinaryClassHead(...)`, `heads.MultiHead([...])`, ...).
      **kwargs: passed to `keras.Model` (e.g. `name`).

    Data for fit / evaluate are `(features, labels)` pairs (labels a dict keyed by head name for
    a MultiHead); predict takes features (labels, if present, are ignored).
    """

    def __init__(self, body: keras.layers.Layer, head: base.Head, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(head, base.Head):
            raise TypeError('head must be a heads.Head, got {}.'.format(type(head).__name__))
        if not isinstance(body, keras.layers.Layer):
            raise TypeError('body must be a keras.layers.Layer or keras.Model, got {}.'.format(
                type(body).__name__))
        self.body = body
        self._head = head
        self._train_loss = keras.metrics.Mean(name=MetricKeys.LOSS)
        self._train_regularization = keras.metrics.Mean(name=MetricKeys.LOSS_REGULARIZATION)
        # Known once the first training step has been traced (the body builds its weights then).
        self._logs_regularization = False
        self._evaluation: _Evaluation | None = None

    @property
    def head(self) -> base.Head:
        """The head supplying loss, metrics and predictions."""
        return self._head

    # -- Keras plumbing -----------------------------------------------------------------------
    def compile(self, optimizer: Any = 'rmsprop', **kwargs: Any) -> None:
        """`keras.Model.compile` without `loss` / `metrics`: the head supplies both.

        Raises:
          ValueError: `loss`, `metrics`, `weighted_metrics` or `loss_weights` is given.
        """
        for name in ('loss', 'metrics', 'weighted_metrics', 'loss_weights'):
            if kwargs.get(name) is not None:
                raise ValueError('HeadModel takes its loss and metrics from the head; do not pass '
                                 '{}= to compile.'.format(name))
        super().compile(optimizer=optimizer, **kwargs)

    @property
    def metrics(self) -> list:
        """The training trackers Keras averages over an epoch: `loss` (and
        `regularization_loss` when the model has regularization losses)."""
        trackers = [self._train_loss]
        if self._logs_regularization:
            trackers.append(self._train_regularization)
        return trackers

    def reset_metrics(self) -> None:
        """Resets the training trackers and, when created, the head's evaluation metrics.

        Keras calls this at the start of every epoch and of every `evaluate`.
        """
        self._train_loss.reset_state()
        self._train_regularization.reset_state()
        if self._evaluation is not None:
            self._evaluation.reset()

    def call(self, features: Any, training: bool | None = None) -> Any:
        """Logits of the body for a batch of features."""
        return self.body(features, training=training)

    # -- steps --------------------------------------------------------------------------------
    def _unpack(self, data: Any) -> tuple[Any, Any]:
        features, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            column = getattr(self._head, 'weight_column', None)
            where = (" under the head's weight_column {!r}".format(column) if column
                     else " and name it as the head's weight_column")
            raise ValueError('HeadModel weighs examples through the head: put the weights in the '
                             'features dict{} instead of passing sample_weight.'.format(where))
        return features, labels

    def _regularization_losses(self) -> list | None:
        # As tf.estimator passed them: None when there are none, so no regularization key appears.
        losses = list(self.losses)
        return losses or None

    def _loss_for_gradients(self, loss: tf.Tensor) -> tf.Tensor:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1 and self._head.loss_reduction == Reduction.SUM_OVER_BATCH_SIZE:
            # Replica gradients are summed; scaling makes a step match one global batch, as
            # tf.estimator's train op did (only for 'sum_over_batch_size', not 'auto').
            loss = loss * (1.0 / replicas)
        return self.optimizer.scale_loss(loss)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One optimizer step on `head.loss` (regularized); returns the epoch's running means."""
        features, labels = self._unpack(data)
        with tf.GradientTape() as tape:
            logits = self(features, training=True)
            regularization_losses = self._regularization_losses()
            loss = self._head.loss(labels, logits, features, ModeKeys.TRAIN,
                                   regularization_losses)
            scaled = self._loss_for_gradients(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._train_loss.update_state(loss)
        if regularization_losses is not None:
            self._logs_regularization = True
            self._train_regularization.update_state(
                regularization_loss(regularization_losses))
        return {metric.name: metric.result() for metric in self.metrics}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        """Adds one batch to the head's metrics; returns their values over the evaluation so far."""
        features, labels = self._unpack(data)
        logits = self(features, training=False)
        regularization_losses = self._regularization_losses()
        if self._evaluation is None:
            # Created on first use (the body's weights, hence its regularization losses, exist
            # only once it has been called); the metric variables are lifted out of the trace.
            self._evaluation = _Evaluation(self._head, regularization_losses)
        self._evaluation.update(features, logits, labels, regularization_losses)
        return self._evaluation.results()

    def predict_step(self, data: Any) -> dict[str, tf.Tensor]:
        """The head's predictions for one batch, keyed by `prediction_name`."""
        features, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        logits = self(features, training=False)
        predictions: Mapping[Any, Any] = self._head.predictions(logits)
        return {prediction_name(key): value for key, value in predictions.items()}
