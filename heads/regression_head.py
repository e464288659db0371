"""`RegressionHead` and its GLM variants `LogisticRegressionHead` and `PoissonRegressionHead`.

The TF face is implemented here; the array face is delegated to `heads.array.regression` (see
docs/design.md). The GLM heads are regression heads with a fixed loss and inverse link: they say
which through `_glm` ('logistic' or 'poisson'), so both faces can pick their own implementation of
the same formula (a TF one and a numpy one) without TensorFlow being imported to build the head.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from heads import base, validation
from heads.array import regression as array_regression
from heads.keys import MetricKeys, PredictionKeys, Reduction

class RegressionHead(base.Head):
    """Creates a `Head` for regression using the `mean_squared_error` loss.

    Logits `[D0, ..., DN, label_dimension]`; labels of the same shape (or `[D0, ..., DN]` when
    label_dimension is 1); weights `[D0, ..., DN]`, `[D0, ..., DN, 1]` or per logit
    `[D0, ..., DN, label_dimension]`.

    Args:
      label_dimension: number of regression labels per example, >= 1.
      weight_column: name of the feature holding example weights.
      loss_reduction: 'sum_over_batch_size' (default), 'auto' or 'sum'.
      loss_fn: optional `loss_fn(labels, logits[, features])` returning
        `[D0, ..., DN, label_dimension]`. The TF face calls it with tensors; the array face calls
        it with numpy arrays (float32 labels and logits) and converts its result with
        `np.asarray` (likewise `inverse_link_fn`, whose array-face result is cast to float32).
      inverse_link_fn: optional function from logits to predictions (e.g. `tf.math.exp`); with it
        predictions also carry `logits`.
      name: head name, appended to metric keys.
    """

    _glm: str | None = None  # 'logistic' | 'poisson' in the GLM subclasses

    def __init__(self, label_dimension: int = 1, weight_column: str | None = None,
                 loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
                 loss_fn: Callable[..., Any] | None = None,
                 inverse_link_fn: Callable[..., Any] | None = None, name: str | None = None):
        if label_dimension < 1:
            raise ValueError('Invalid label_dimension {}.'.format(label_dimension))
        validation.validate_loss_reduction(loss_reduction)
        if loss_fn:
            validation.validate_loss_fn_args(loss_fn)
        self._label_dimension = label_dimension
        self._weight_column = weight_column
        self._loss_reduction = loss_reduction
        self._loss_fn = loss_fn
        self._inverse_link_fn = inverse_link_fn
        self._name = name

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def logits_dimension(self) -> int:
        return self._label_dimension

    @property
    def loss_reduction(self) -> str:
        return self._loss_reduction

    @property
    def weight_column(self) -> str | None:
        return self._weight_column

    @property
    def has_inverse_link(self) -> bool:
        """Whether predictions differ from logits (then predictions also carry `logits`)."""
        return self._inverse_link_fn is not None or self._glm is not None

    # -- TF face ------------------------------------------------------------------------------
    def _tf_inverse_link(self, logits):
        """Predictions from float32 logits: the GLM's link, the given inverse_link_fn, or None."""
        import tensorflow as tf
        if self._glm == 'logistic':
            return tf.sigmoid(logits)
        if self._glm == 'poisson':
            return tf.exp(logits)
        if self._inverse_link_fn is not None:
            return self._inverse_link_fn(logits)
        return None

    def _tf_glm_loss(self, labels, logits):
        """The GLM heads' fixed loss_fn, element-wise [..,d]."""
        import tensorflow as tf

        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        if self._glm == 'logistic':
            labels = tf_inputs.check_label_range(labels, 2,
                                                 message='Labels must be in range [0, 1]')
            return tf_losses.sigmoid_cross_entropy(labels, logits)
        return tf.nn.log_poisson_loss(targets=labels, log_input=logits,
                                      compute_full_loss=self._compute_full_loss)

    def _tf_unweighted_loss_and_weights(self, logits, labels, features):
        """float32 labels checked against logits, then the unreduced loss [..,d] and weights."""
        import tensorflow as tf

        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        labels = tf_inputs.check_dense_labels_match_logits_and_reshape(
            labels, logits, self._label_dimension)
        labels = tf.cast(labels, tf.float32)
        if self._glm is not None:
            unweighted = tf_losses.call_loss_fn(self._tf_glm_loss, labels, logits, features,
                                                self._label_dimension)
        elif self._loss_fn is not None:
            unweighted = tf_losses.call_loss_fn(self._loss_fn, labels, logits, features,
                                                self._label_dimension)
        else:
            unweighted = tf.math.squared_difference(labels, logits)
        weights = tf_inputs.get_weights_and_check_match_logits(
            features, self._weight_column, logits, allow_per_logit=True)
        return unweighted, weights

    def loss(self, labels, logits, features=None, mode=None, regularization_losses=None):
        """Reduced (and regularized) loss; sum_over_batch_size divides by B×label_dimension."""
        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        logits = tf_inputs.check_logits_final_dim(logits, self._label_dimension)
        unweighted, weights = self._tf_unweighted_loss_and_weights(logits, labels, features)
        training_loss = tf_losses.compute_weighted_loss(unweighted, weights, self._loss_reduction)
        return tf_losses.regularize(training_loss, regularization_losses)

    def predictions(self, logits):
        """No `keys` argument, as in tf.estimator (passing keys is a TypeError).

        Returns `{'predictions': logits}`, or with an inverse link
        `{'predictions': inverse_link(logits), 'logits': logits}` (float32).
        """
        from heads.tf_face import inputs as tf_inputs
        logits = tf_inputs.check_logits_final_dim(logits, self._label_dimension)
        predicted = self._tf_inverse_link(logits)
        if predicted is None:
            return {PredictionKeys.PREDICTIONS: logits}
        return {PredictionKeys.PREDICTIONS: predicted, PredictionKeys.LOGITS: logits}

    def metrics(self, regularization_losses=None):
        """Fresh metric objects: average_loss, prediction/mean, label/mean (+ regularization)."""
        from heads.tf_face import keras_metrics as tfm
        mk = MetricKeys
        key = self._summary_key
        metrics = {key(k): tfm.Mean(key(k))
                   for k in (mk.LOSS_MEAN, mk.PREDICTION_MEAN, mk.LABEL_MEAN)}
        if regularization_losses is not None:
            metrics[key(mk.LOSS_REGULARIZATION)] = tfm.Mean(key(mk.LOSS_REGULARIZATION))
        return metrics

    def update_metrics(self, eval_metrics, features, logits, labels, regularization_losses=None):
        """Adds one batch to `eval_metrics` (from `metrics()`) and returns it.

        label/mean averages the `labels` argument as given (not reshaped), as tf.estimator did.
        """
        from heads.tf_face import inputs as tf_inputs, losses as tf_losses
        mk = MetricKeys
        key = self._summary_key
        logits = tf_inputs.check_logits_final_dim(logits, self._label_dimension)
        unweighted, weights = self._tf_unweighted_loss_and_weights(logits, labels, features)
        predicted = self.predictions(logits)[PredictionKeys.PREDICTIONS]
        eval_metrics[key(mk.LOSS_MEAN)].update_state(unweighted, sample_weight=weights)
        eval_metrics[key(mk.PREDICTION_MEAN)].update_state(predicted, sample_weight=weights)
        eval_metrics[key(mk.LABEL_MEAN)].update_state(labels, sample_weight=weights)
        if regularization_losses is not None:
            eval_metrics[key(mk.LOSS_REGULARIZATION)].update_state(
                tf_losses.regularization_loss(regularization_losses))
        return eval_metrics

    # -- array face: delegated to heads.array.regression -------------------------------------------
    def _array_face(self) -> array_regression.RegressionFace:
        """This head's array face (numpy; never imports TensorFlow)."""
        return array_regression.RegressionFace(
            head_type=type(self).__name__, name=self._name,
            label_dimension=self._label_dimension, weight_column=self._weight_column,
            loss_reduction=self._loss_reduction, loss_fn=self._loss_fn,
            inverse_link_fn=self._inverse_link_fn, glm=self._glm,
            compute_full_loss=getattr(self, '_compute_full_loss', True))

    def new_state(self, intervals: bool = False) -> array_regression.RegressionState:
        """An empty mergeable `RegressionState` (metrics over all data it is updated with).
        `intervals`: a state also keeping the sums of confidence intervals."""
        return self._array_face().new_state(intervals)

    def array_predictions(self, logits, keys=None) -> dict:
        return self._array_face().predictions(logits, keys)

    def array_loss(self, labels, logits, features=None) -> np.ndarray:
        return self._array_face().loss(labels, logits, features)

    def invalid_rows(self, labels, logits, features=None) -> list:
        return self._array_face().invalid_rows(labels, logits, features)


class LogisticRegressionHead(RegressionHead):
    """A regression head for labels in [0, 1]: sigmoid cross-entropy loss, sigmoid inverse link.

    Labels outside [0, 1] raise `Labels must be in range [0, 1]`. Predictions are
    `{'predictions': sigmoid(logits), 'logits': logits}`.
    """

    _glm = 'logistic'

    def __init__(self, weight_column: str | None = None,
                 loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, name: str | None = None):
        super().__init__(label_dimension=1, weight_column=weight_column,
                         loss_reduction=loss_reduction, name=name)


class PoissonRegressionHead(RegressionHead):
    """A regression head for counts: `log_poisson_loss` on log-rates, `exp` inverse link.

    Args:
      compute_full_loss: whether to add the Stirling approximation term of log(z!) (only where the
        label z > 1, as tf.nn.log_poisson_loss does).
    """

    _glm = 'poisson'

    def __init__(self, label_dimension: int = 1, weight_column: str | None = None,
                 loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
                 compute_full_loss: bool = True, name: str | None = None):
        super().__init__(label_dimension=label_dimension, weight_column=weight_column,
                         loss_reduction=loss_reduction, name=name)
        self._compute_full_loss = compute_full_loss

    @property
    def compute_full_loss(self) -> bool:
        return self._compute_full_loss
