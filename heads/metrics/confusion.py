"""Weighted confusion matrices at given thresholds: Keras' Precision / Recall (`score > t`, in
float32), from one bincount of (thresholds below the score, label) cells read through
`cumulative_from_top`.

Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from heads.metrics.common import cumulative_from_top, div_no_nan, flatten_inputs
from heads.metrics.groups import Groups

__all__ = ['Confusion']


def _count_above(scores: np.ndarray, sorted_thresholds: np.ndarray) -> np.ndarray:
    """For each float32 score, how many of the (increasing, float32) thresholds are strictly below
    it, as intp; NaN scores count 0 (predicted negative everywhere)."""
    if sorted_thresholds.size <= 8:
        # A few comparisons beat a binary search, and NaN compares False by itself.
        count = np.zeros(scores.shape, dtype=np.intp)
        for t in sorted_thresholds:
            count += scores > t
        return count
    count = np.searchsorted(sorted_thresholds, scores, side='left')
    count[np.isnan(scores)] = 0
    return count


class Confusion:
    """Weighted confusion matrices at given thresholds (Keras Precision / Recall, `score > t`)."""

    def __init__(self, thresholds: Sequence[float]) -> None:
        self.thresholds = np.asarray(tuple(thresholds), dtype=np.float64)
        n = self.thresholds.size
        self.tp = np.zeros(n)
        self.fp = np.zeros(n)
        self.tn = np.zeros(n)
        self.fn = np.zeros(n)

    def update(self, positive: Any, scores: Any, weights: Any = None) -> 'Confusion':
        """Adds one batch: an example is positive iff its label != 0 and predicted positive iff its
        score > t, both compared in float32 (Keras casts the thresholds to the scores' float32);
        NaN scores are predicted negative. Weights are broadcast to the scores."""
        if not self.thresholds.size:
            return self
        pos, s, w = flatten_inputs(positive, scores, weights)
        Confusion.update_groups([self], Groups.one(s.size), pos, s, w)
        return self

    @staticmethod
    def update_groups(matrices: Sequence['Confusion'], groups: Groups, positive: np.ndarray,
                      scores: np.ndarray, weights: np.ndarray) -> None:
        """Adds flat per-row (bool positive, float32 score, float64 weight) to `matrices[g]` for the
        rows of group g (all matrices at the same thresholds)."""
        if not matrices or not matrices[0].thresholds.size:
            return
        _, above = Confusion.ranks(matrices[0].thresholds, scores)
        # One pass: Σw per (number of thresholds below the score, label) cell.
        n = matrices[0].thresholds.size + 1
        above *= 2
        above += positive
        Confusion.add_groups(matrices, groups.cells(above, 2 * n, weights).reshape(groups.n, n, 2))

    @staticmethod
    def ranks(thresholds: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(order, above): the thresholds' stable sort order in float32, and per score how many of
        them are strictly below it (NaN: 0). A score is predicted positive at the j-th smallest
        threshold iff above > j."""
        t32 = np.asarray(thresholds, dtype=np.float64).astype(np.float32)
        order = np.argsort(t32, kind='stable')
        return order, _count_above(scores, t32[order])

    @staticmethod
    def add_groups(matrices: Sequence['Confusion'], cells: np.ndarray) -> None:
        """Adds `cells[g]` to `matrices[g]`: Σw per (number of thresholds below the score, label
        0/1), shape [thresholds + 1, 2] per group (see `ranks`)."""
        if not matrices or not matrices[0].thresholds.size:
            return
        tp, fp, tn, fn = Confusion.from_cells(matrices[0].thresholds, cells)
        for m, a, b, c, d in zip(matrices, tp, fp, tn, fn):
            m.tp += a
            m.fp += b
            m.tn += c
            m.fn += d

    @staticmethod
    def from_cells(thresholds: np.ndarray, cells: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(tp, fp, tn, fn), each [groups, thresholds] in the thresholds' order, from Σw per
        (group, number of thresholds below the score, label 0/1) cells (see `ranks`)."""
        order = np.argsort(np.asarray(thresholds, np.float64).astype(np.float32), kind='stable')
        at_least = cumulative_from_top(cells, axis=1)
        tp = np.empty((cells.shape[0], order.size))
        fp = np.empty((cells.shape[0], order.size))
        tp[:, order] = at_least[:, 1:, 1]
        fp[:, order] = at_least[:, 1:, 0]
        return tp, fp, at_least[:, :1, 0] - fp, at_least[:, :1, 1] - tp

    def merge(self, other: 'Confusion') -> 'Confusion':
        if not np.array_equal(self.thresholds, other.thresholds):
            raise ValueError('Cannot merge confusion matrices at different thresholds: {} and {}.'
                             .format(self.thresholds.tolist(), other.thresholds.tolist()))
        self.tp += other.tp
        self.fp += other.fp
        self.tn += other.tn
        self.fn += other.fn
        return self

    def precision(self) -> np.ndarray:
        return np.asarray(div_no_nan(self.tp, self.tp + self.fp), dtype=np.float64)

    def recall(self) -> np.ndarray:
        return np.asarray(div_no_nan(self.tp, self.tp + self.fn), dtype=np.float64)

    def __repr__(self) -> str:
        return 'Confusion(thresholds={})'.format(self.thresholds.tolist())
