"""`MultiClassHead`: softmax cross-entropy over `n_classes` logits, integer or vocabulary labels.

The TF face is implemented here; the array face is delegated to `heads.array.multi_class` (see
docs/design.md). Metrics: average_loss and accuracy only, as tf.estimator 2.15's MultiClassHead.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from heads import base, validation
from heads.array import multi_class as array_multi_class
from heads.keys import MetricKeys, PredictionKeys, Reduction


class MultiClassHead(base.Head):
    """Creates a `Head` for multi class classification.

    Uses `sparse_softmax_cross_entropy` loss. Logits `[D0, ..., DN, n_classes]`; labels
    `[D0, ..., DN, 1]` or `[D0, ..., DN]` integer class ids in [0, n_classes), or strings of
    `label_vocabulary`.

    Args:
      n_classes: number of classes, > 2 (use BinaryClassHead for 2).
      weight_column: name of the feature holding example weights.
      label_vocabulary: list of n_classes strings.
      loss_reduction: 'sum_over_batch_size' (default), 'auto' or 'sum'.
      loss_fn: optional `loss_fn(labels, logits[, features])` returning `[D0, ..., DN, 1]`.
      name: head name, appended to metric keys.
    """

    def __init__(self, n_classes: int, weight_column: str | None = None,
                 label_vocabulary: Sequence[str] | None = None,
                 loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
                 loss_fn: Callable[..., Any] | None = None, name: str | None = None):
        if n_classes is None:
            raise ValueError('n_classes cannot be None')
        validation.validate_vocabulary_type(label_vocabulary)
        if label_vocabulary is not None and len(label_vocabulary) != n_classes:
            raise ValueError(
                '"label_vocabulary" does not have "n_classes" items. '
                'len(label_vocabulary)={}, n_classes={}, label_vocabulary={}'.format(
                    len(label_vocabulary), n_classes, label_vocabulary))
        validation.validate_loss_reduction(loss_reduction)
        if loss_fn:
            validation.validate_loss_fn_args(loss_fn)
        if isinstance(n_classes, int) and n_classes <= 2:
            raise ValueError('n_classes must be > 2: {}.'.format(n_classes))
        self._n_classes = n_classes
        self._weight_column = weight_column
        self._label_vocabulary = label_vocabulary
        self._loss_reduction = loss_reduction
        self._loss_fn = loss_fn
        self._name = name

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def logits_dimension(self) -> int:
        return self._n_classes

    @property
    def loss_reduction(self) -> str:
        return self._loss_reduction

    @property
    def n_classes(self) -> int:
        return self._n_classes

    @property
    def weight_column(self) -> str | None:
        return self._weight_column

    @property
    def label_vocabulary(self) -> Sequence[str] | None:
        return self._label_vocabulary

    # -- TF face ------------------------------------------------------------------------------
    def _processed_labels(self, logits, labels):
        """Label ids `[D0, ..., DN, 1]` (int64 after a vocabulary lookup), range-checked."""
        import tensorflow as tf
        from heads.tf_face import inputs as tf_inputs
        label_ids = tf_inputs.check_dense_labels_match_logits_and_reshape(labels, logits, 1)
        if self._label_vocabulary is None:
            if not label_ids.dtype.is_integer:
                raise ValueError('Labels dtype should be integer. Instead got {}.'.format(
                    label_ids.dtype))
        else:
            if label_ids.dtype != tf.string:
                raise ValueError('Labels dtype should be string if there is a vocabulary. '
                                 'Instead got {}'.format(label_ids.dtype))
            label_ids = vocabulary_ids(label_ids, self._label_vocabulary)
        return tf_inputs.check_label_range(label_ids, self._n_classes, None)

    def _unweighted_loss_and_weights(self, logits, label_ids, features):
        """Unreduced loss `[D0, ..., DN, 1]` and the example weights (1.0 without a column)."""
        import tensorflow as tf
        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        if self._loss_fn:
            unweighted_loss = tf_losses.call_loss_fn(self._loss_fn, label_ids, logits, features, 1)
        else:
            unweighted_loss = tf.expand_dims(tf_losses.sparse_softmax_cross_entropy(
                tf.cast(tf.squeeze(label_ids, axis=-1), tf.int64), logits), axis=-1)
        weights = tf_inputs.get_weights_and_check_match_logits(
            features, self._weight_column, logits)
        return unweighted_loss, weights

    def loss(self, labels, logits, features=None, mode=None, regularization_losses=None):
        """Sparse softmax cross-entropy reduced by `loss_reduction`, plus regularization.

        Args:
          labels: class ids `[D0, ..., DN, 1]` or `[D0, ..., DN]` (integers), or vocabulary strings.
          logits: `[D0, ..., DN, n_classes]`.
          features: dict holding the weight column, if any.
          mode: ignored (tf.estimator ignored it too).
          regularization_losses: optional list of scalars added after the reduction.

        Returns:
          A float32 scalar tensor.
        """
        del mode  # The loss is the same in every mode.
        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        logits = tf_inputs.check_logits_final_dim(logits, self.logits_dimension)
        label_ids = self._processed_labels(logits, labels)
        unweighted_loss, weights = self._unweighted_loss_and_weights(logits, label_ids, features)
        training_loss = tf_losses.compute_weighted_loss(unweighted_loss, weights,
                                                        self._loss_reduction)
        return tf_losses.regularize(training_loss, regularization_losses)

    def predictions(self, logits, keys=None):
        """Returns the requested prediction tensors (all six when `keys` is empty)."""
        import tensorflow as tf
        from heads.tf_face import inputs as tf_inputs, outputs as tf_outputs
        valid_keys = [PredictionKeys.LOGITS, PredictionKeys.PROBABILITIES, PredictionKeys.CLASS_IDS,
                      PredictionKeys.CLASSES, PredictionKeys.ALL_CLASS_IDS,
                      PredictionKeys.ALL_CLASSES]
        if keys:
            tf_outputs.check_prediction_keys(keys, valid_keys)
        else:
            keys = valid_keys
        logits = tf_inputs.check_logits_final_dim(logits, self.logits_dimension)
        predictions = {}
        if PredictionKeys.LOGITS in keys:
            predictions[PredictionKeys.LOGITS] = logits
        if PredictionKeys.PROBABILITIES in keys:
            predictions[PredictionKeys.PROBABILITIES] = tf.nn.softmax(logits)
        if PredictionKeys.CLASS_IDS in keys or PredictionKeys.CLASSES in keys:
            class_ids = tf.expand_dims(tf.math.argmax(logits, axis=-1), axis=-1)  # int64, first max
            if PredictionKeys.CLASS_IDS in keys:
                predictions[PredictionKeys.CLASS_IDS] = class_ids
            if PredictionKeys.CLASSES in keys:
                predictions[PredictionKeys.CLASSES] = tf_outputs.class_strings(
                    class_ids, self._label_vocabulary)
        if PredictionKeys.ALL_CLASS_IDS in keys:
            predictions[PredictionKeys.ALL_CLASS_IDS] = tf_outputs.all_class_ids(
                logits, self._n_classes)
        if PredictionKeys.ALL_CLASSES in keys:
            predictions[PredictionKeys.ALL_CLASSES] = tf_outputs.all_class_strings(
                logits, self._n_classes, self._label_vocabulary)
        return predictions

    def metrics(self, regularization_losses=None):
        """Fresh metric objects: average_loss, accuracy, and regularization_loss if requested."""
        from heads.tf_face import keras_metrics
        eval_metrics = {self._summary_key(MetricKeys.LOSS_MEAN):
                        keras_metrics.Mean(name=MetricKeys.LOSS_MEAN)}
        if regularization_losses is not None:
            eval_metrics[self._summary_key(MetricKeys.LOSS_REGULARIZATION)] = keras_metrics.Mean(
                name=MetricKeys.LOSS_REGULARIZATION)
        eval_metrics[self._summary_key(MetricKeys.ACCURACY)] = keras_metrics.Accuracy(
            name=MetricKeys.ACCURACY)
        return eval_metrics

    def update_metrics(self, eval_metrics, features, logits, labels, regularization_losses=None):
        """Updates `eval_metrics` (from `metrics()`) with one batch and returns it."""
        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        class_ids = self.predictions(logits, [PredictionKeys.CLASS_IDS])[PredictionKeys.CLASS_IDS]
        logits = tf_inputs.check_logits_final_dim(logits, self.logits_dimension)
        label_ids = self._processed_labels(logits, labels)
        unweighted_loss, weights = self._unweighted_loss_and_weights(logits, label_ids, features)
        eval_metrics[self._summary_key(MetricKeys.LOSS_MEAN)].update_state(
            unweighted_loss, sample_weight=weights)
        eval_metrics[self._summary_key(MetricKeys.ACCURACY)].update_state(
            label_ids, class_ids, sample_weight=weights)
        if regularization_losses is not None:
            eval_metrics[self._summary_key(MetricKeys.LOSS_REGULARIZATION)].update_state(
                tf_losses.regularization_loss(regularization_losses))
        return eval_metrics

    # -- array face: delegated to heads.array.multi_class ------------------------------------------
    def _array_face(self) -> array_multi_class.MultiClassFace:
        """This head's array face (numpy; never imports TensorFlow)."""
        return array_multi_class.MultiClassFace(
            name=self._name, n_classes=self._n_classes, weight_column=self._weight_column,
            label_vocabulary=self._label_vocabulary, loss_reduction=self._loss_reduction,
            loss_fn=self._loss_fn)

    def new_state(self, intervals: bool = False) -> array_multi_class.MultiClassState:
        """An empty mergeable `MultiClassState` (metrics over all data it is updated with).
        `intervals`: a state also keeping the sums of confidence intervals."""
        return self._array_face().new_state(intervals)

    def array_predictions(self, logits, keys=None) -> dict:
        return self._array_face().predictions(logits, keys)

    def array_loss(self, labels, logits, features=None) -> np.ndarray:
        return self._array_face().loss(labels, logits, features)

    def invalid_rows(self, labels, logits, features=None) -> list:
        return self._array_face().invalid_rows(labels, logits, features)


def binary_or_multi_class_head(n_classes: int, weight_column: str | None = None,
                               label_vocabulary: Sequence[str] | None = None,
                               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE) -> base.Head:
    """A BinaryClassHead when n_classes == 2, else a MultiClassHead (tf.estimator's helper)."""
    from heads.binary_class_head import BinaryClassHead
    if n_classes == 2:
        return BinaryClassHead(weight_column=weight_column, label_vocabulary=label_vocabulary,
                               loss_reduction=loss_reduction)
    return MultiClassHead(n_classes, weight_column=weight_column,
                          label_vocabulary=label_vocabulary, loss_reduction=loss_reduction)


# -------------------------------------------------------------------------------------------------
# TF face: vocabulary lookup shared with MultiLabelHead (TensorFlow imported on call).
# -------------------------------------------------------------------------------------------------

def vocabulary_ids(labels, vocabulary: Sequence[str]):
    """String label tensor → int64 ids in `vocabulary`; unknown strings → −1.

    −1 is what tf.estimator's `index_table_from_tensor` returned for out-of-vocabulary strings; the
    range check that follows turns it into `Labels must be >= 0`. An equality test against the whole
    vocabulary needs no lookup-table resource, so it runs eagerly and inside `tf.function` alike.
    """
    import tensorflow as tf
    vocab = tf.constant([v.encode('utf-8') if isinstance(v, str) else v for v in vocabulary],
                        dtype=tf.string)
    matches = tf.equal(tf.expand_dims(labels, -1), vocab)
    ids = tf.math.argmax(tf.cast(matches, tf.int32), axis=-1)
    return tf.where(tf.reduce_any(matches, axis=-1), ids, tf.constant(-1, dtype=tf.int64))
