"""Row-level problems for `invalid_rows`: which rows of a batch a head cannot evaluate, and why,
without raising. Each problem is (role, reason, bool mask over the first dimension): role is
'logits', 'labels' or the weight column's name; reason is the message the TF face would raise (or,
for non-finite values it would let through as NaN, a sentence saying so). Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from heads.array.inputs import (LABELS_NEGATIVE, LABELS_TOO_LARGE, LOGITS_NOT_FINITE,
                                WEIGHTS_NOT_FINITE, check_logits, dense_labels, example_weights,
                                label_range_mask, lookup_labels, numeric_labels, rows_any,
                                weight_column_key, weights_not_finite_rows)

RowProblem = tuple  # (role, reason, bool mask over the first dimension)


def n_rows_of(logits: Any) -> int:
    """Length of the first dimension (1 for a scalar)."""
    try:
        a = np.asarray(logits)
    except Exception:  # pragma: no cover - anything np.asarray refuses is one bad "row"
        return 1
    return int(a.shape[0]) if a.ndim else 1


def logits_problems(logits: Any, logits_dimension: int
                    ) -> tuple[np.ndarray | None, list[RowProblem]]:
    """(float32 logits or None when unusable, problems): shape errors mark every row."""
    n = n_rows_of(logits)
    try:
        x = check_logits(logits, logits_dimension)
    except (ValueError, TypeError) as e:
        return None, [('logits', str(e), np.ones(n, dtype=bool))]
    bad = rows_any(~np.isfinite(x), n)
    return x, ([('logits', LOGITS_NOT_FINITE, bad)] if bad.any() else [])


def weight_problems(features: Mapping[str, Any] | None, weight_column: Any, logits: np.ndarray,
                    allow_per_logit: bool = False) -> list[RowProblem]:
    """Weight shape errors (every row) and non-finite weights, under the weight column's name."""
    if weight_column is None:
        return []
    n = logits.shape[0]
    try:
        role = weight_column_key(weight_column)
    except TypeError as e:
        return [('weights', str(e), np.ones(n, dtype=bool))]
    try:
        w = example_weights(features, weight_column, logits, allow_per_logit)
    except (ValueError, TypeError) as e:
        return [(role, str(e), np.ones(n, dtype=bool))]
    bad = rows_any(~np.isfinite(w), n)
    return [(role, WEIGHTS_NOT_FINITE, bad)] if bad.any() else []


def classifier_invalid_rows(labels: Any, logits: Any, features: Mapping[str, Any] | None, *,
                            logits_dimension: int, n_classes: int,
                            vocabulary: Sequence[str] | None, weight_column: Any
                            ) -> list[RowProblem]:
    """`invalid_rows` of a head with one label per example in [0, n_classes − 1] (numbers, or
    strings of `vocabulary`): the TF face's messages; unknown vocabulary strings fail
    `Labels must be >= 0` as in tf.estimator, with the reason saying why."""
    x, problems = logits_problems(logits, logits_dimension)
    if x is None:
        return problems
    n = x.shape[0]
    all_rows = np.ones(n, dtype=bool)
    try:
        lab = dense_labels(labels, x, 1)
        if vocabulary is not None:
            ids = lookup_labels(lab, vocabulary)
            oov = rows_any(ids < 0, n)
            if oov.any():
                problems.append(('labels', LABELS_NEGATIVE + ' (a label is not in '
                                 'label_vocabulary {})'.format(list(vocabulary)), oov))
            lab = ids
        z = numeric_labels(lab)
    except (ValueError, TypeError) as e:
        return problems + [('labels', str(e), all_rows)]
    too_large, negative = label_range_mask(z, n_classes)
    for mask, reason in ((too_large, LABELS_TOO_LARGE.format(n=n_classes)),
                         (negative & (z != -1 if vocabulary is not None else True),
                          LABELS_NEGATIVE)):
        rows = rows_any(mask, n)
        if rows.any():
            problems.append(('labels', reason, rows))
    return problems + weight_problems(features, weight_column, x)


def row_problems(masks: list[tuple[str, str, np.ndarray]]) -> list[tuple[str, str, np.ndarray]]:
    """Drops the entries whose mask marks no row."""
    return [(role, reason, mask) for role, reason, mask in masks if mask.any()]


def logits_and_weight_problems(logits: Any, logits_dimension: int, weight_column: Any,
                               features: Mapping[str, Any] | None
                               ) -> tuple[np.ndarray | None, list[tuple[str, str, np.ndarray]]]:
    """Checked logits (or None when they are unusable) and the logits / weight problems of a
    batch, as bool masks over its rows."""
    try:
        lg = check_logits(logits, logits_dimension)
    except ValueError as e:
        # Logits of the wrong shape or type: no row of the batch can be evaluated.
        rows = np.shape(logits)[0] if np.ndim(logits) else 1
        return None, [('logits', str(e), np.ones(rows, dtype=bool))]
    n = lg.shape[0]
    out = [('logits', LOGITS_NOT_FINITE, rows_any(~np.isfinite(lg), n))]
    if weight_column is not None:
        role = weight_column_key(weight_column)
        try:
            example_weights(features, weight_column, lg)
            bad = weights_not_finite_rows(features, weight_column, n)
            if bad is not None:
                out.append((role, WEIGHTS_NOT_FINITE, bad))
        except (ValueError, TypeError) as e:
            out.append((role, str(e), np.ones(n, dtype=bool)))
    return lg, out
