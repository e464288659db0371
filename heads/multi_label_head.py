"""`MultiLabelHead`: independent sigmoid cross-entropy per class, averaged over the classes.

The TF face is implemented here; the array face is delegated to `heads.array.multi_label` (see
docs/design.md). Keys, numbers and messages follow tf.estimator 2.15's MultiLabelHead.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from heads import base, validation
from heads.array import multi_label as array_multi_label
from heads.keys import MetricKeys, PredictionKeys, Reduction, threshold_key
from heads.multi_class_head import vocabulary_ids


class MultiLabelHead(base.Head):
    """Creates a `Head` for multi-label classification.

    Multi-label classification handles the case where each example may have zero or more
    associated labels from a discrete set; `n_classes` independent sigmoid cross-entropies are
    averaged over the classes per example.

    Labels: a dense multi-hot `[D0, ..., DN, n_classes]` tensor (values in [0, 1]); or a
    `SparseTensor` of class ids (`[D0, ..., DN, ?]`); or, with `label_vocabulary`, a
    `SparseTensor` of class name strings.

    Args:
      n_classes: number of classes, > 1.
      weight_column: name of the feature holding example weights.
      thresholds: iterable of floats in (0, 1); adds accuracy/precision/recall at each threshold.
      label_vocabulary: list of n_classes strings.
      loss_reduction: 'sum_over_batch_size' (default), 'auto' or 'sum'.
      loss_fn: optional `loss_fn(labels, logits[, features])` returning `[D0, ..., DN, 1]`.
      classes_for_class_based_metrics: class ids (or vocabulary names) that get
        `probability_mean/`, `auc/`, `auc_precision_recall/` metrics of their own.
      name: head name, appended to metric keys.
    """

    def __init__(self, n_classes: int, weight_column: str | None = None,
                 thresholds: Sequence[float] | None = None,
                 label_vocabulary: Sequence[str] | None = None,
                 loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
                 loss_fn: Callable[..., Any] | None = None,
                 classes_for_class_based_metrics: Sequence[int | str] | None = None,
                 name: str | None = None):
        if n_classes is None or n_classes < 2:
            raise ValueError(
                'n_classes must be > 1 for multi-label classification. Given: {}'.format(n_classes))
        thresholds = tuple(thresholds) if thresholds else tuple()
        for threshold in thresholds:
            if threshold <= 0.0 or threshold >= 1.0:
                raise ValueError('thresholds must be in (0, 1) range. Given: {}'.format(threshold))
        if label_vocabulary is not None:
            if not isinstance(label_vocabulary, (list, tuple)):
                raise ValueError('label_vocabulary must be a list or tuple. Given type: {}'.format(
                    type(label_vocabulary)))
            if len(label_vocabulary) != n_classes:
                raise ValueError('Length of label_vocabulary must be n_classes ({}). '
                                 'Given: {}'.format(n_classes, len(label_vocabulary)))
        if loss_fn:
            validation.validate_loss_fn_args(loss_fn)
        validation.validate_loss_reduction(loss_reduction)
        if classes_for_class_based_metrics:
            classes_for_class_based_metrics = tuple(classes_for_class_based_metrics)
            if isinstance(classes_for_class_based_metrics[0], str):
                if not label_vocabulary:
                    raise ValueError('label_vocabulary must be provided when '
                                     'classes_for_class_based_metrics are strings.')
                classes_for_class_based_metrics = tuple(
                    list(label_vocabulary).index(c) for c in classes_for_class_based_metrics)
            else:
                for class_id in classes_for_class_based_metrics:
                    if class_id < 0 or class_id >= n_classes:
                        raise ValueError(
                            'All classes_for_class_based_metrics must be in range [0, {}]. '
                            'Given: {}'.format(n_classes - 1, class_id))
        else:
            classes_for_class_based_metrics = tuple()
        self._n_classes = n_classes
        self._weight_column = weight_column
        self._thresholds = thresholds
        self._label_vocabulary = label_vocabulary
        self._loss_reduction = loss_reduction
        self._loss_fn = loss_fn
        self._classes_for_class_based_metrics = classes_for_class_based_metrics
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
    def thresholds(self) -> tuple[float, ...]:
        return self._thresholds

    @property
    def label_vocabulary(self) -> Sequence[str] | None:
        return self._label_vocabulary

    @property
    def classes_for_class_based_metrics(self) -> tuple[int, ...]:
        return self._classes_for_class_based_metrics

    def class_tag(self, class_id: int) -> str:
        """The per-class metric suffix: `class<id>`, or the vocabulary name."""
        if self._label_vocabulary:
            return str(self._label_vocabulary[class_id])
        return 'class%d' % class_id

    # -- TF face ------------------------------------------------------------------------------
    def _metric_keys(self) -> dict[str, Any]:
        """The suffixed metric keys, by role (lists follow thresholds / per-class classes)."""
        tags = [self.class_tag(c) for c in self._classes_for_class_based_metrics]
        return {
            'loss_mean': self._summary_key(MetricKeys.LOSS_MEAN),
            'auc': self._summary_key(MetricKeys.AUC),
            'auc_pr': self._summary_key(MetricKeys.AUC_PR),
            'regularization': self._summary_key(MetricKeys.LOSS_REGULARIZATION),
            'accuracy': [self._summary_key(threshold_key(MetricKeys.ACCURACY_AT_THRESHOLD, t))
                         for t in self._thresholds],
            'precision': [self._summary_key(threshold_key(MetricKeys.PRECISION_AT_THRESHOLD, t))
                          for t in self._thresholds],
            'recall': [self._summary_key(threshold_key(MetricKeys.RECALL_AT_THRESHOLD, t))
                       for t in self._thresholds],
            'probability_mean': [self._summary_key(MetricKeys.PROBABILITY_MEAN_AT_NAME % t)
                                 for t in tags],
            'class_auc': [self._summary_key(MetricKeys.AUC_AT_NAME % t) for t in tags],
            'class_auc_pr': [self._summary_key(MetricKeys.AUC_PR_AT_NAME % t) for t in tags],
        }

    def _processed_labels(self, logits, labels):
        """Multi-hot labels `[D0, ..., DN, n_classes]` from any of the three accepted forms.

        Dense labels keep their dtype (soft float targets are used as given); sparse class ids and
        sparse vocabulary strings become an int64 indicator (duplicate ids collapse to 1). A
        `tf.RaggedTensor` of per-row ids or names is read as its SparseTensor.
        """
        import tensorflow as tf
        from heads.tf_face import inputs as tf_inputs
        if labels is None:
            raise ValueError(tf_inputs.LABEL_NONE_ERR_MSG)
        if isinstance(labels, tf.RaggedTensor):
            # Per-row lists of ids or names: the same content as the SparseTensor form.
            labels = labels.to_sparse()
        if isinstance(labels, tf.SparseTensor):
            if labels.dtype == tf.string:
                if self._label_vocabulary is None:
                    raise ValueError('String labels need the head to have a label_vocabulary. '
                                     'Given labels dtype: {}'.format(labels.dtype))
                # Unknown strings become -1 and are not range-checked: tf.sparse.to_indicator then
                # fails on them, as tf.estimator did.
                ids = tf.SparseTensor(labels.indices,
                                      vocabulary_ids(labels.values, self._label_vocabulary),
                                      labels.dense_shape)
                processed = tf.sparse.to_indicator(ids, self._n_classes)
            else:
                if not labels.dtype.is_integer:
                    raise ValueError('Labels dtype should be integer. Instead got {}.'.format(
                        labels.dtype))
                checked = tf_inputs.check_label_range(
                    labels.values, self._n_classes,
                    'labels must be an integer SparseTensor with values in [0, {})'.format(
                        self._n_classes))
                processed = tf.sparse.to_indicator(
                    tf.SparseTensor(labels.indices, checked, labels.dense_shape), self._n_classes)
            processed = tf.cast(processed, tf.int64)
            # to_indicator drops the static batch dimensions inside tf.function; restoring them
            # from dense_shape keeps the label shape checks static, as for dense labels.
            processed.set_shape(labels.shape[:-1].concatenate([self._n_classes]))
        else:
            processed = tf.convert_to_tensor(labels)
            if processed.dtype == tf.string:
                # tf.estimator had no dense string form; its range check below could not compare
                # strings either. Say what is accepted instead of failing inside TensorFlow.
                raise ValueError('labels must be an integer indicator Tensor with values in [0, 1]; '
                                 'string labels must be a SparseTensor of vocabulary names.')
            processed = tf_inputs.check_label_range(
                processed, 2, 'labels must be an integer indicator Tensor with values in [0, 1]')
        return tf_inputs.check_dense_labels_match_logits_and_reshape(
            processed, logits, self.logits_dimension)

    def _unweighted_loss_and_weights(self, logits, processed_labels, features):
        """Per-example loss `[D0, ..., DN, 1]` (class-averaged sigmoid CE) and example weights."""
        import tensorflow as tf
        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        if self._loss_fn:
            unweighted_loss = tf_losses.call_loss_fn(self._loss_fn, processed_labels, logits,
                                                     features, 1)
        else:
            unweighted_loss = tf.reduce_mean(
                tf_losses.sigmoid_cross_entropy(tf.cast(processed_labels, tf.float32), logits),
                axis=-1, keepdims=True)
        weights = tf_inputs.get_weights_and_check_match_logits(
            features, self._weight_column, logits)
        return unweighted_loss, weights

    def loss(self, labels, logits, features=None, mode=None, regularization_losses=None):
        """Class-averaged sigmoid cross-entropy reduced by `loss_reduction`, plus regularization.

        Args:
          labels: multi-hot `[D0, ..., DN, n_classes]`, or a `tf.SparseTensor` (or
            `tf.RaggedTensor`) of class ids or of vocabulary strings.
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
        processed_labels = self._processed_labels(logits, labels)
        unweighted_loss, weights = self._unweighted_loss_and_weights(
            logits, processed_labels, features)
        training_loss = tf_losses.compute_weighted_loss(unweighted_loss, weights,
                                                        self._loss_reduction)
        return tf_losses.regularize(training_loss, regularization_losses)

    def predictions(self, logits, keys=None):
        """logits, probabilities (sigmoid) and classes (every class name, not a prediction)."""
        import tensorflow as tf
        from heads.tf_face import inputs as tf_inputs, outputs as tf_outputs
        valid_keys = [PredictionKeys.LOGITS, PredictionKeys.PROBABILITIES, PredictionKeys.CLASSES]
        if keys:
            tf_outputs.check_prediction_keys(keys, valid_keys)
        else:
            keys = valid_keys
        logits = tf_inputs.check_logits_final_dim(logits, self.logits_dimension)
        predictions = {}
        if PredictionKeys.LOGITS in keys:
            predictions[PredictionKeys.LOGITS] = logits
        if PredictionKeys.PROBABILITIES in keys:
            predictions[PredictionKeys.PROBABILITIES] = tf.math.sigmoid(logits)
        if PredictionKeys.CLASSES in keys:
            predictions[PredictionKeys.CLASSES] = tf_outputs.all_class_strings(
                logits, self._n_classes, self._label_vocabulary)
        return predictions

    def metrics(self, regularization_losses=None):
        """Fresh metric objects, in tf.estimator's order."""
        from heads.tf_face import keras_metrics
        keys = self._metric_keys()
        eval_metrics = {
            keys['loss_mean']: keras_metrics.Mean(name=MetricKeys.LOSS_MEAN),
            keys['auc']: keras_metrics.AUC(name=MetricKeys.AUC),
            keys['auc_pr']: keras_metrics.AUC(name=MetricKeys.AUC_PR, curve='PR'),
        }
        if regularization_losses is not None:
            eval_metrics[keys['regularization']] = keras_metrics.Mean(
                name=MetricKeys.LOSS_REGULARIZATION)
        for i, threshold in enumerate(self._thresholds):
            eval_metrics[keys['accuracy'][i]] = keras_metrics.BinaryAccuracy(
                name=keys['accuracy'][i], threshold=threshold)
            eval_metrics[keys['precision'][i]] = keras_metrics.Precision(
                name=keys['precision'][i], thresholds=threshold)
            eval_metrics[keys['recall'][i]] = keras_metrics.Recall(
                name=keys['recall'][i], thresholds=threshold)
        for i in range(len(self._classes_for_class_based_metrics)):
            eval_metrics[keys['probability_mean'][i]] = keras_metrics.Mean(
                name=keys['probability_mean'][i])
            eval_metrics[keys['class_auc'][i]] = keras_metrics.AUC(name=keys['class_auc'][i])
            eval_metrics[keys['class_auc_pr'][i]] = keras_metrics.AUC(
                name=keys['class_auc_pr'][i], curve='PR')
        return eval_metrics

    def update_metrics(self, eval_metrics, features, logits, labels, regularization_losses=None):
        """Updates `eval_metrics` (from `metrics()`) with one batch and returns it."""
        import tensorflow as tf
        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        keys = self._metric_keys()
        logits = tf_inputs.check_logits_final_dim(logits, self.logits_dimension)
        processed_labels = self._processed_labels(logits, labels)
        unweighted_loss, weights = self._unweighted_loss_and_weights(
            logits, processed_labels, features)
        probabilities = self.predictions(
            logits, [PredictionKeys.PROBABILITIES])[PredictionKeys.PROBABILITIES]
        eval_metrics[keys['loss_mean']].update_state(unweighted_loss, sample_weight=weights)
        # One pool of B x n (label, probability) pairs, each weighted by its example's weight.
        eval_metrics[keys['auc']].update_state(processed_labels, probabilities, sample_weight=weights)
        eval_metrics[keys['auc_pr']].update_state(
            processed_labels, probabilities, sample_weight=weights)
        if regularization_losses is not None:
            eval_metrics[keys['regularization']].update_state(
                tf_losses.regularization_loss(regularization_losses))
        for i in range(len(self._thresholds)):
            for kind in ('accuracy', 'precision', 'recall'):
                eval_metrics[keys[kind][i]].update_state(
                    processed_labels, probabilities, sample_weight=weights)
        for i, class_id in enumerate(self._classes_for_class_based_metrics):
            class_probabilities = probabilities[..., class_id:class_id + 1]
            class_labels = tf.cast(processed_labels[..., class_id:class_id + 1], tf.float32)
            class_weights = tf.broadcast_to(tf.cast(weights, tf.float32),
                                            tf.shape(class_probabilities))
            eval_metrics[keys['probability_mean'][i]].update_state(
                class_probabilities, sample_weight=class_weights)
            eval_metrics[keys['class_auc'][i]].update_state(
                class_labels, class_probabilities, sample_weight=class_weights)
            eval_metrics[keys['class_auc_pr'][i]].update_state(
                class_labels, class_probabilities, sample_weight=class_weights)
        return eval_metrics

    # -- array face: delegated to heads.array.multi_label ------------------------------------------
    def _array_face(self) -> array_multi_label.MultiLabelFace:
        """This head's array face (numpy; never imports TensorFlow)."""
        return array_multi_label.MultiLabelFace(
            name=self._name, n_classes=self._n_classes, weight_column=self._weight_column,
            thresholds=self._thresholds, label_vocabulary=self._label_vocabulary,
            loss_reduction=self._loss_reduction, loss_fn=self._loss_fn,
            classes_for_class_based_metrics=self._classes_for_class_based_metrics)

    def new_state(self, intervals: bool = False) -> array_multi_label.MultiLabelState:
        """An empty mergeable `MultiLabelState` (metrics over all data it is updated with).
        `intervals`: a state also keeping the sums of confidence intervals."""
        return self._array_face().new_state(intervals)

    def array_predictions(self, logits, keys=None) -> dict:
        return self._array_face().predictions(logits, keys)

    def array_loss(self, labels, logits, features=None) -> np.ndarray:
        return self._array_face().loss(labels, logits, features)

    def invalid_rows(self, labels, logits, features=None) -> list:
        return self._array_face().invalid_rows(labels, logits, features)
