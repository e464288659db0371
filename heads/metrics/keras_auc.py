"""`tf.keras.metrics.AUC(num_thresholds=200)` (Keras 2) as two bucket histograms, with Keras'
interpolation for ROC and PR.

Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from heads.metrics.common import CHUNK, cumulative_from_top, div_no_nan, flatten_inputs
from heads.metrics.groups import Groups

__all__ = ['KerasAUC', 'keras_buckets', 'curve_confusion', 'roc_auc', 'pr_auc',
           'roc_between', 'pr_between']


class KerasAUC:
    """`tf.keras.metrics.AUC(num_thresholds)` (Keras 2) as two bucket histograms.

    Thresholds are `−1e-7, 1/(n−1), …, (n−2)/(n−1), 1 + 1e-7`; a score p (clipped to [0, 1])
    falls in bucket `max(ceil(p·(n−1)) − 1, 0)` computed in float32, exactly as Keras' evenly
    spaced fast path, and counts as predicted positive at every threshold up to its bucket.
    NaN scores land in no bucket but count in the totals (predicted negative everywhere).
    """

    EPSILON = 1e-7

    def __init__(self, num_thresholds: int = 200) -> None:
        if num_thresholds <= 1:
            raise ValueError('Argument `num_thresholds` must be an integer > 1. '
                             'Received: num_thresholds={}'.format(num_thresholds))
        self.num_thresholds = int(num_thresholds)
        self.pos = np.zeros(self.num_thresholds)  # Σ w of positives per bucket
        self.neg = np.zeros(self.num_thresholds)  # Σ w of negatives per bucket
        self.pos_total = 0.0                      # including NaN-scored examples
        self.neg_total = 0.0

    def update(self, positive: Any, scores: Any, weights: Any = None) -> 'KerasAUC':
        pos, s, w = flatten_inputs(positive, scores, weights)
        KerasAUC.update_groups([self], Groups.one(s.size), pos, s, w)
        return self

    @staticmethod
    def update_groups(aucs: Sequence['KerasAUC'], groups: Groups, positive: np.ndarray,
                      scores: np.ndarray, weights: np.ndarray) -> None:
        """Adds flat per-row (bool positive, float32 score, float64 weight) to `aucs[g]` for the
        rows of group g (all with the same number of thresholds)."""
        if not aucs:
            return
        n = aucs[0].num_thresholds
        cell = keras_buckets(scores, n)  # NaN: bucket n, outside the buckets (totals only)
        cell *= 2
        cell += positive
        cell += groups.offsets(0, cell.size, 2 * (n + 1))
        # One pass: Σw per (group, bucket, label) cell.
        cells = groups.cells_of_keys(cell, 2 * (n + 1), weights).reshape(groups.n, n + 1, 2)
        for auc, c in zip(aucs, cells):
            auc.pos += c[:n, 1]
            auc.neg += c[:n, 0]
            auc.pos_total += float(np.sum(c[:, 1]))
            auc.neg_total += float(np.sum(c[:, 0]))

    def merge(self, other: 'KerasAUC') -> 'KerasAUC':
        if other.num_thresholds != self.num_thresholds:
            raise ValueError('Cannot merge AUC states with {} and {} thresholds.'.format(
                self.num_thresholds, other.num_thresholds))
        self.pos += other.pos
        self.neg += other.neg
        self.pos_total += other.pos_total
        self.neg_total += other.neg_total
        return self

    def thresholds(self) -> np.ndarray:
        """The num_thresholds thresholds, increasing (read-only: shared by every state)."""
        return _thresholds(self.num_thresholds)

    def confusion(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds, tp, fp, tn, fn), each of length num_thresholds."""
        return (self.thresholds(),) + curve_confusion(self.pos, self.neg, self.pos_total,
                                                      self.neg_total)

    def roc(self) -> float:
        """Area under the ROC curve, trapezoids between thresholds (0 without positives or
        negatives, as Keras)."""
        return float(roc_auc(*self.confusion()[1:]))

    def pr(self) -> float:
        """Area under the precision-recall curve with Davis & Goadrich interpolation (Keras)."""
        return float(pr_auc(*self.confusion()[1:]))

    def roc_pr(self) -> tuple[float, float]:
        """(`roc()`, `pr()`) from one reading of the confusion matrices."""
        confusion = self.confusion()[1:]
        return float(roc_auc(*confusion)), float(pr_auc(*confusion))

    def __repr__(self) -> str:
        return 'KerasAUC(num_thresholds={})'.format(self.num_thresholds)


_THRESHOLDS: dict[int, np.ndarray] = {}


def _thresholds(n: int) -> np.ndarray:
    """Keras' thresholds `−1e-7, 1/(n−1), …, (n−2)/(n−1), 1 + 1e-7`, computed once per n."""
    out = _THRESHOLDS.get(n)
    if out is None:
        inner = [(i + 1) * 1.0 / (n - 1) for i in range(n - 2)]
        out = np.asarray([0.0 - KerasAUC.EPSILON] + inner + [1.0 + KerasAUC.EPSILON],
                         dtype=np.float64)
        out.flags.writeable = False
        _THRESHOLDS[n] = out
    return out


def keras_buckets(scores: np.ndarray, n: int) -> np.ndarray:
    """Keras' bucket of each flat float32 score for n thresholds, intp: `max(ceil(p·(n−1)) − 1,
    0)` of the score clipped to [0, 1], in float32 as Keras' evenly spaced fast path; NaN → n
    (outside the buckets). Cache-sized steps."""
    out = np.empty(scores.size, dtype=np.intp)
    with np.errstate(invalid='ignore'):
        for start in range(0, scores.size, CHUNK):
            p = np.clip(scores[start:start + CHUNK], np.float32(0.0), np.float32(1.0))
            p *= np.float32(n - 1)
            bucket = np.ceil(p, out=p)
            bucket -= np.float32(1.0)
            np.maximum(bucket, np.float32(0.0), out=bucket)
            bucket[np.isnan(bucket)] = n
            out[start:start + bucket.size] = bucket
    return out


def curve_confusion(pos: np.ndarray, neg: np.ndarray, pos_total: Any, neg_total: Any
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, tn, fn) at each threshold from Σw per bucket (last axis) of positives and
    negatives and the totals (including NaN scores; one per leading index): a bucket counts as
    predicted positive at every threshold up to it. Works on one curve or on [keys, buckets]."""
    tp = cumulative_from_top(pos, axis=-1)
    fp = cumulative_from_top(neg, axis=-1)
    pos_total = np.asarray(pos_total, dtype=np.float64)[..., np.newaxis]
    neg_total = np.asarray(neg_total, dtype=np.float64)[..., np.newaxis]
    return tp, fp, neg_total - fp, pos_total - tp


def roc_auc(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Keras' ROC AUC over the last axis (thresholds): trapezoids between thresholds, 0 without
    positives or negatives."""
    lower, upper = _consecutive((tp, fp, tn, fn))
    return roc_between(lower, upper)


def pr_auc(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Keras' PR AUC over the last axis (thresholds), Davis & Goadrich interpolation."""
    lower, upper = _consecutive((tp, fp, tn, fn))
    return pr_between(lower, upper)


def _consecutive(confusion: tuple[np.ndarray, ...]
                 ) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Each threshold but the last, and the next one: the pairs the areas sum over."""
    return (tuple(c[..., :-1] for c in confusion), tuple(c[..., 1:] for c in confusion))


def roc_between(lower: tuple[np.ndarray, ...], upper: tuple[np.ndarray, ...]) -> np.ndarray:
    """Σ over the last axis of the ROC trapezoids between pairs of thresholds: (tp, fp, tn, fn)
    at the lower threshold of each pair and at the upper. A pair whose matrices are equal adds
    0, so the sum may run over the pairs where the curve moves only."""
    (tp0, fp0, tn0, fn0), (tp1, fp1, tn1, fn1) = lower, upper
    recall0, recall1 = div_no_nan(tp0, tp0 + fn0), div_no_nan(tp1, tp1 + fn1)
    fpr0, fpr1 = div_no_nan(fp0, fp0 + tn0), div_no_nan(fp1, fp1 + tn1)
    return np.sum((fpr0 - fpr1) * (recall0 + recall1) / 2.0, axis=-1)


def pr_between(lower: tuple[np.ndarray, ...], upper: tuple[np.ndarray, ...]) -> np.ndarray:
    """Σ over the last axis of Keras' interpolated PR areas between pairs of thresholds (as
    `roc_between`: equal matrices add 0)."""
    tp0, tp1, fn1 = lower[0], upper[0], upper[3]
    p0, p1 = tp0 + lower[1], tp1 + upper[1]
    dtp = tp0 - tp1
    dp = p0 - p1
    slope = div_no_nan(dtp, np.maximum(dp, 0.0))
    intercept = tp1 - slope * p1
    both = (p0 > 0) & (p1 > 0)
    ratio = np.where(both, div_no_nan(p0, np.maximum(p1, 0.0)), 1.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        log_ratio = np.log(ratio)
    increment = div_no_nan(slope * (dtp + intercept * log_ratio), np.maximum(tp1 + fn1, 0.0))
    return np.sum(increment, axis=-1)
