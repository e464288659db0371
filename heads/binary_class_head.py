"""`BinaryClassHead`: sigmoid cross-entropy over one logit per example.

The TF face is implemented here; the array face is delegated to `heads.array.binary` (see
docs/design.md). Numbers, keys and messages follow tf.estimator 2.15's `BinaryClassHead`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from heads import base, validation
from heads.array import binary as array_binary
from heads.keys import MetricKeys, PredictionKeys, Reduction, threshold_key


class BinaryClassHead(base.Head):
    """Creates a `Head` for single label binary classification.

    Uses `sigmoid_cross_entropy_with_logits` loss. The head expects `logits` with shape
    `[D0, D1, ... DN, 1]` and labels with shape `[D0, D1, ... DN, 1]` or `[D0, D1, ... DN]`;
    labels are in [0, 1] (soft labels allowed), or strings of `label_vocabulary`.

    Args:
      weight_column: name of the feature holding example weights.
      thresholds: iterable of floats in (0, 1); adds accuracy/precision/recall at each threshold.
      label_vocabulary: list of two strings, the label values of class 0 and class 1.
      loss_reduction: 'sum_over_batch_size' (default), 'auto' or 'sum'.
      loss_fn: optional `loss_fn(labels, logits[, features])` returning the unreduced loss
        `[D0, ..., DN, 1]`. The TF face calls it with tensors; the array face calls it with numpy
        arrays (float32 labels and logits) and converts its result with `np.asarray`.
      name: head name, appended to metric keys (`auc/name`).
    """

    def __init__(self, weight_column: str | None = None, thresholds: Sequence[float] | None = None,
                 label_vocabulary: Sequence[str] | None = None,
                 loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
                 loss_fn: Callable[..., Any] | None = None, name: str | None = None):
        validation.validate_vocabulary_type(label_vocabulary)
        thresholds = tuple(thresholds) if thresholds else tuple()
        for threshold in thresholds:
            if threshold <= 0.0 or threshold >= 1.0:
                raise ValueError('thresholds not in (0, 1): {}.'.format((thresholds,)))
        validation.validate_loss_reduction(loss_reduction)
        if loss_fn:
            validation.validate_loss_fn_args(loss_fn)
        self._weight_column = weight_column
        self._thresholds = thresholds
        self._label_vocabulary = label_vocabulary
        self._loss_reduction = loss_reduction
        self._loss_fn = loss_fn
        self._name = name

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def logits_dimension(self) -> int:
        return 1

    @property
    def loss_reduction(self) -> str:
        return self._loss_reduction

    @property
    def weight_column(self) -> str | None:
        return self._weight_column

    @property
    def thresholds(self) -> tuple[float, ...]:
        return self._thresholds

    @property
    def label_vocabulary(self) -> Sequence[str] | None:
        return self._label_vocabulary

    # -- TF face ------------------------------------------------------------------------------
    def _tf_processed_labels(self, logits, labels):
        """Dense [..,1] labels → vocabulary ids if any → float32, range-checked to [0, 1]."""
        import tensorflow as tf

        from heads.tf_face import inputs as tf_inputs
        labels = tf_inputs.check_dense_labels_match_logits_and_reshape(labels, logits, 1)
        if self._label_vocabulary is not None:
            if labels.dtype != tf.string:
                raise TypeError('Dtype of argument `keys` must be {}, received: {}'.format(
                    tf.string, labels.dtype))
            labels = tf_inputs.lookup_vocabulary(labels, self._label_vocabulary)
        labels = tf.cast(labels, tf.float32)
        return tf_inputs.check_label_range(labels, 2)

    def _tf_unweighted_loss_and_weights(self, logits, labels, features):
        """Unreduced loss [..,1] (sigmoid cross-entropy or loss_fn) and the example weights."""
        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        if self._loss_fn is not None:
            unweighted = tf_losses.call_loss_fn(self._loss_fn, labels, logits, features, 1)
        else:
            unweighted = tf_losses.sigmoid_cross_entropy(labels, logits)
        weights = tf_inputs.get_weights_and_check_match_logits(
            features, self._weight_column, logits)
        return unweighted, weights

    def loss(self, labels, logits, features=None, mode=None, regularization_losses=None):
        """Reduced (and regularized) sigmoid cross-entropy; `mode` is ignored."""
        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        logits = tf_inputs.check_logits_final_dim(logits, 1)
        labels = self._tf_processed_labels(logits, labels)
        unweighted, weights = self._tf_unweighted_loss_and_weights(logits, labels, features)
        training_loss = tf_losses.compute_weighted_loss(unweighted, weights, self._loss_reduction)
        return tf_losses.regularize(training_loss, regularization_losses)

    def predictions(self, logits, keys=None):
        """Dict of prediction tensors for `keys` (all seven when keys is falsy)."""
        import tensorflow as tf

        from heads.tf_face import inputs as tf_inputs, outputs as tf_outputs
        pk = PredictionKeys
        valid_keys = [pk.LOGITS, pk.LOGISTIC, pk.PROBABILITIES, pk.CLASS_IDS, pk.CLASSES,
                      pk.ALL_CLASS_IDS, pk.ALL_CLASSES]
        if keys:
            tf_outputs.check_prediction_keys(keys, valid_keys)
        else:
            keys = valid_keys
        logits = tf_inputs.check_logits_final_dim(logits, 1)
        predictions = {}
        if pk.LOGITS in keys:
            predictions[pk.LOGITS] = logits
        if pk.LOGISTIC in keys:
            predictions[pk.LOGISTIC] = tf.sigmoid(logits)
        if pk.PROBABILITIES in keys:
            two_class_logits = tf.concat([tf.zeros_like(logits), logits], axis=-1)
            predictions[pk.PROBABILITIES] = tf.nn.softmax(two_class_logits)
        # argmax([0, x]) with the first max winning: class 1 iff x > 0 (x = 0 and NaN give 0).
        class_ids = tf.cast(logits > 0.0, tf.int64)
        if pk.CLASS_IDS in keys:
            predictions[pk.CLASS_IDS] = class_ids
        if pk.CLASSES in keys:
            predictions[pk.CLASSES] = tf_outputs.class_strings(class_ids, self._label_vocabulary)
        if pk.ALL_CLASS_IDS in keys:
            predictions[pk.ALL_CLASS_IDS] = tf_outputs.all_class_ids(logits, 2)
        if pk.ALL_CLASSES in keys:
            predictions[pk.ALL_CLASSES] = tf_outputs.all_class_strings(
                logits, 2, self._label_vocabulary)
        return predictions

    def metrics(self, regularization_losses=None):
        """Fresh metric objects keyed by (suffixed) metric key."""
        from heads.tf_face import keras_metrics as tfm
        mk = MetricKeys
        key = self._summary_key
        metrics = {
            key(mk.LOSS_MEAN): tfm.Mean(key(mk.LOSS_MEAN)),
            key(mk.ACCURACY): tfm.Accuracy(key(mk.ACCURACY)),
            key(mk.PRECISION): tfm.Precision(key(mk.PRECISION)),
            key(mk.RECALL): tfm.Recall(key(mk.RECALL)),
            key(mk.PREDICTION_MEAN): tfm.Mean(key(mk.PREDICTION_MEAN)),
            key(mk.LABEL_MEAN): tfm.Mean(key(mk.LABEL_MEAN)),
            key(mk.ACCURACY_BASELINE): tfm.Mean(key(mk.ACCURACY_BASELINE)),
            key(mk.AUC): tfm.AUC(key(mk.AUC), curve='ROC'),
            key(mk.AUC_PR): tfm.AUC(key(mk.AUC_PR), curve='PR'),
        }
        if regularization_losses is not None:
            metrics[key(mk.LOSS_REGULARIZATION)] = tfm.Mean(key(mk.LOSS_REGULARIZATION))
        for threshold in self._thresholds:
            for template, cls in ((mk.ACCURACY_AT_THRESHOLD, tfm.BinaryAccuracy),
                                  (mk.PRECISION_AT_THRESHOLD, tfm.Precision),
                                  (mk.RECALL_AT_THRESHOLD, tfm.Recall)):
                name = key(threshold_key(template, threshold))
                metrics[name] = (cls(name, threshold=threshold) if cls is tfm.BinaryAccuracy
                                 else cls(name, thresholds=threshold))
        return metrics

    def update_metrics(self, eval_metrics, features, logits, labels, regularization_losses=None):
        """Adds one batch to `eval_metrics` (from `metrics()`) and returns it."""
        import tensorflow as tf

        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        mk = MetricKeys
        key = self._summary_key
        logits = tf_inputs.check_logits_final_dim(logits, 1)
        labels = self._tf_processed_labels(logits, labels)
        unweighted, weights = self._tf_unweighted_loss_and_weights(logits, labels, features)
        predictions = self.predictions(logits, [PredictionKeys.LOGISTIC, PredictionKeys.CLASS_IDS])
        logistic = predictions[PredictionKeys.LOGISTIC]
        class_ids = predictions[PredictionKeys.CLASS_IDS]
        eval_metrics[key(mk.LOSS_MEAN)].update_state(unweighted, sample_weight=weights)
        eval_metrics[key(mk.ACCURACY)].update_state(labels, class_ids, sample_weight=weights)
        eval_metrics[key(mk.PRECISION)].update_state(labels, class_ids, sample_weight=weights)
        eval_metrics[key(mk.RECALL)].update_state(labels, class_ids, sample_weight=weights)
        eval_metrics[key(mk.PREDICTION_MEAN)].update_state(logistic, sample_weight=weights)
        label_mean = eval_metrics[key(mk.LABEL_MEAN)]
        label_mean.update_state(labels, sample_weight=weights)
        # accuracy_baseline = max(m, 1 - m) of the cumulative weighted label mean m: rewrite its
        # state from label/mean's, as tf.estimator did.
        baseline = eval_metrics[key(mk.ACCURACY_BASELINE)]
        total, count = label_mean.state_after_update()
        baseline.set_state(tf.maximum(total, count - total), count)
        eval_metrics[key(mk.AUC)].update_state(labels, logistic, sample_weight=weights)
        eval_metrics[key(mk.AUC_PR)].update_state(labels, logistic, sample_weight=weights)
        if regularization_losses is not None:
            eval_metrics[key(mk.LOSS_REGULARIZATION)].update_state(
                tf_losses.regularization_loss(regularization_losses))
        for threshold in self._thresholds:
            for template in (mk.ACCURACY_AT_THRESHOLD, mk.PRECISION_AT_THRESHOLD,
                             mk.RECALL_AT_THRESHOLD):
                eval_metrics[key(threshold_key(template, threshold))].update_state(
                    labels, logistic, sample_weight=weights)
        return eval_metrics

    # -- array face: delegated to heads.array.binary -----------------------------------------------
    def _array_face(self) -> array_binary.BinaryClassFace:
        """This head's array face (numpy; never imports TensorFlow)."""
        return array_binary.BinaryClassFace(
            name=self._name, thresholds=self._thresholds,
            label_vocabulary=self._label_vocabulary, weight_column=self._weight_column,
            loss_reduction=self._loss_reduction, loss_fn=self._loss_fn)

    def new_state(self, intervals: bool = False) -> array_binary.BinaryClassState:
        """An empty mergeable `BinaryClassState` (metrics over all data it is updated with).
        `intervals`: a state also keeping the sums of confidence intervals."""
        return self._array_face().new_state(intervals)

    def array_predictions(self, logits, keys=None) -> dict:
        return self._array_face().predictions(logits, keys)

    def array_loss(self, labels, logits, features=None) -> np.ndarray:
        return self._array_face().loss(labels, logits, features)

    def invalid_rows(self, labels, logits, features=None) -> list:
        return self._array_face().invalid_rows(labels, logits, features)
