"""Public key names: metric keys, prediction keys, serving keys, mode keys, loss reductions.

These strings are a contract shared with tf.estimator 2.15 (dashboards, exported signatures and
saved metrics depend on them), so they live in one module and every head reads them from here.
"""
from __future__ import annotations


class MetricKeys:
    """Metric key strings, exactly as tf.estimator wrote them."""

    LOSS = 'loss'
    LOSS_MEAN = 'average_loss'
    LOSS_REGULARIZATION = 'regularization_loss'

    ACCURACY = 'accuracy'
    PRECISION = 'precision'
    RECALL = 'recall'
    ACCURACY_BASELINE = 'accuracy_baseline'
    AUC = 'auc'
    AUC_PR = 'auc_precision_recall'
    LABEL_MEAN = 'label/mean'
    PREDICTION_MEAN = 'prediction/mean'

    # The following require a threshold applied, formatted with %g.
    ACCURACY_AT_THRESHOLD = 'accuracy/positive_threshold_%g'
    PRECISION_AT_THRESHOLD = 'precision/positive_threshold_%g'
    RECALL_AT_THRESHOLD = 'recall/positive_threshold_%g'

    # Per-class metrics of the multi-label head, by class id or by vocabulary name.
    PROBABILITY_MEAN_AT_CLASS = 'probability_mean/class%d'
    AUC_AT_CLASS = 'auc/class%d'
    AUC_PR_AT_CLASS = 'auc_precision_recall/class%d'
    PROBABILITY_MEAN_AT_NAME = 'probability_mean/%s'
    AUC_AT_NAME = 'auc/%s'
    AUC_PR_AT_NAME = 'auc_precision_recall/%s'

    # Defined by tf.estimator but not produced by its v2 heads; kept for completeness.
    PRECISION_AT_RECALL = 'precision_at_recall_%g'
    RECALL_AT_PRECISION = 'recall_at_precision_%g'
    SENSITIVITY_AT_SPECIFICITY = 'sensitivity_at_specificity_%g'
    SPECIFICITY_AT_SENSITIVITY = 'specificity_at_sensitivity_%g'


class PredictionKeys:
    """Prediction dict keys."""

    CLASSES = 'classes'
    CLASS_IDS = 'class_ids'
    ALL_CLASSES = 'all_classes'
    ALL_CLASS_IDS = 'all_class_ids'
    LOGISTIC = 'logistic'
    LOGITS = 'logits'
    PREDICTIONS = 'predictions'
    PROBABILITIES = 'probabilities'
    TOP_K = 'top_k'


class ModeKeys:
    """Standard names for model modes (same strings as tf.estimator.ModeKeys)."""

    TRAIN = 'train'
    EVAL = 'eval'
    PREDICT = 'infer'


class ServingKeys:
    """Keys of export_outputs."""

    DEFAULT_SERVING = 'serving_default'
    CLASSIFY = 'classification'
    REGRESS = 'regression'
    PREDICT = 'predict'


class Reduction:
    """Loss reductions, as the strings of tf.keras 2's `tf.losses.Reduction`."""

    AUTO = 'auto'
    NONE = 'none'
    SUM = 'sum'
    SUM_OVER_BATCH_SIZE = 'sum_over_batch_size'

    @classmethod
    def all(cls) -> tuple[str, ...]:
        return (cls.AUTO, cls.NONE, cls.SUM, cls.SUM_OVER_BATCH_SIZE)


def summary_key(key: str, name: str | None) -> str:
    """Appends `/name` to a metric key when the head has a name (tf.estimator's `_summary_key`)."""
    return '%s/%s' % (key, name) if name else key


def threshold_key(template: str, threshold: float) -> str:
    """Formats a per-threshold key; `%g` keeps six significant digits, so 1/3 → `0.333333`."""
    return template % threshold
