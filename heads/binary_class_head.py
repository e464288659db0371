"""`BinaryClassHead`: sigmoid cross-entropy over one logit per example.

TF face and array face side by side. Numbers, keys and messages follow tf.estimator 2.15
(`heads_spec.md` §4).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from heads import base
from heads.keys import Reduction


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
        `[D0, ..., DN, 1]`.
      name: head name, appended to metric keys (`auc/name`).
    """

    def __init__(self, weight_column: str | None = None, thresholds: Sequence[float] | None = None,
                 label_vocabulary: Sequence[str] | None = None,
                 loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
                 loss_fn: Callable[..., Any] | None = None, name: str | None = None):
        base.validate_vocabulary_type(label_vocabulary)
        thresholds = tuple(thresholds) if thresholds else tuple()
        for threshold in thresholds:
            if threshold <= 0.0 or threshold >= 1.0:
                raise ValueError('thresholds not in (0, 1): {}.'.format((thresholds,)))
        base.validate_loss_reduction(loss_reduction)
        if loss_fn:
            base.validate_loss_fn_args(loss_fn)
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
    def loss(self, labels, logits, features=None, mode=None, regularization_losses=None):
        raise NotImplementedError  # TF FACE

    def predictions(self, logits, keys=None):
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
