"""`tf.contrib.estimator`'s head functions (TF 1.x) whose documented signature maps exactly onto a
headstream head. Only `logistic_regression_head` does; see docs/migration.md for the others.
"""
from __future__ import annotations

from heads.keys import Reduction
from heads.regression_head import LogisticRegressionHead

# TF 1.x spelled the reductions as `tf.compat.v1.losses.Reduction`; these two have exactly the
# v2 meaning (Σ, and Σ / number of loss elements). MEAN and SUM_BY_NONZERO_WEIGHTS have no v2 head
# equivalent and are refused by the head's own check.
_V1_REDUCTIONS = {'weighted_sum_over_batch_size': Reduction.SUM_OVER_BATCH_SIZE,
                  'weighted_sum': Reduction.SUM}


def logistic_regression_head(weight_column: str | None = None,
                             loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
                             name: str | None = None) -> LogisticRegressionHead:
    """Creates a head for logistic regression (`tf.contrib.estimator.logistic_regression_head`).

    Sigmoid cross-entropy loss on labels that are floats in [0, 1], `sigmoid` inverse link;
    predictions `logits` and `predictions` (= sigmoid(logits)); default export RegressionOutput.

    Args:
      weight_column: name of the feature holding example weights.
      loss_reduction: how the training loss is reduced, default SUM_OVER_BATCH_SIZE (weighted
        sum of losses / batch size); the TF 1.x strings 'weighted_sum_over_batch_size' and
        'weighted_sum' are accepted too.
      name: head name, suffixing metric keys.

    Returns:
      A `LogisticRegressionHead`.

    Raises:
      ValueError: if loss_reduction is invalid.
    """
    return LogisticRegressionHead(weight_column=weight_column,
                                  loss_reduction=_V1_REDUCTIONS.get(loss_reduction, loss_reduction),
                                  name=name)
