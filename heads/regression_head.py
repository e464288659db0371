"""`RegressionHead` and its GLM variants `LogisticRegressionHead` and `PoissonRegressionHead`.

TF face and array face side by side (`heads_spec.md` §7-8). The GLM heads are regression heads with
a fixed loss and inverse link: they say which through `_glm` ('logistic' or 'poisson'), so both faces
can pick their own implementation of the same formula (a TF one and a numpy one) without TensorFlow
being imported to build the head.
"""
from __future__ import annotations

from typing import Any, Callable

from heads import base
from heads.keys import Reduction


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
        `[D0, ..., DN, label_dimension]`.
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
        base.validate_loss_reduction(loss_reduction)
        if loss_fn:
            base.validate_loss_fn_args(loss_fn)
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
    def loss(self, labels, logits, features=None, mode=None, regularization_losses=None):
        raise NotImplementedError  # TF FACE

    def predictions(self, logits):
        """No `keys` argument, as in tf.estimator (passing keys is a TypeError)."""
        raise NotImplementedError  # TF FACE

    def metrics(self, regularization_losses=None):
        raise NotImplementedError  # TF FACE

    def update_metrics(self, eval_metrics, features, logits, labels, regularization_losses=None):
        raise NotImplementedError  # TF FACE

    # -- array face ---------------------------------------------------------------------------
    def new_state(self):
        raise NotImplementedError  # ARRAY FACE

    def array_predictions(self, logits, keys=None) -> dict:
        raise NotImplementedError  # ARRAY FACE

    def array_loss(self, labels, logits, features=None):
        raise NotImplementedError  # ARRAY FACE

    def invalid_rows(self, labels, logits, features=None) -> list:
        raise NotImplementedError  # ARRAY FACE


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
