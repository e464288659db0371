"""`MultiClassHead`: softmax cross-entropy over `n_classes` logits, integer or vocabulary labels.

TF face and array face side by side (`heads_spec.md` §5). Metrics: average_loss and accuracy only.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from heads import base
from heads.keys import Reduction


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
        base.validate_vocabulary_type(label_vocabulary)
        if label_vocabulary is not None and len(label_vocabulary) != n_classes:
            raise ValueError(
                '"label_vocabulary" does not have "n_classes" items. '
                'len(label_vocabulary)={}, n_classes={}, label_vocabulary={}'.format(
                    len(label_vocabulary), n_classes, label_vocabulary))
        base.validate_loss_reduction(loss_reduction)
        if loss_fn:
            base.validate_loss_fn_args(loss_fn)
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
