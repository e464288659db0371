"""`MultiLabelHead`: independent sigmoid cross-entropy per class, averaged over the classes.

TF face and array face side by side (`heads_spec.md` §6).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from heads import base
from heads.keys import Reduction


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
            base.validate_loss_fn_args(loss_fn)
        base.validate_loss_reduction(loss_reduction)
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
