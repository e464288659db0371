"""Weighted means and loss sums: `WeightedMean` is `tf.keras.metrics.Mean`, `LossSum` the sum and
element count behind Keras 2's loss reductions (`compute_weighted_loss`).

Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from heads.keys import Reduction
from heads.metrics.common import div_no_nan, keras_match_weights
from heads.metrics.groups import Groups

__all__ = ['WeightedMean', 'LossSum', 'reduce_loss']


class WeightedMean:
    """Weighted mean with `tf.keras.metrics.Mean` semantics: (Σ v·w, Σ w broadcast)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def update(self, values: Any, weights: Any = None) -> 'WeightedMean':
        """Adds `values` with optional `weights`.

        Without weights every element counts 1. With weights, the weight's last dimension is
        squeezed when it has one rank more than the values and expanded when it has one rank less,
        then it is broadcast to the values; Σ v·w goes to `total` and Σ (broadcast w) to `count`,
        so a `[B, 1]` weight counts once per element it covers. When the weight cannot be
        broadcast, the values are averaged over their trailing axes down to the weight's rank
        (Keras' fallback).
        """
        v = np.asarray(values, dtype=np.float64)
        if weights is None:
            self.total += float(np.sum(v))
            self.count += float(v.size)
            return self
        w = keras_match_weights(v, weights)
        try:
            wb = np.broadcast_to(w, v.shape)
        except ValueError:
            if w.ndim > v.ndim:
                raise
            v = v.mean(axis=tuple(range(w.ndim, v.ndim))) if w.ndim < v.ndim else v
            wb = np.broadcast_to(w, v.shape)
        self.total += float(np.sum(v * wb))
        self.count += float(np.sum(wb))
        return self

    @staticmethod
    def update_groups(means: Sequence['WeightedMean'], groups: Groups, values: np.ndarray,
                      weights: np.ndarray, weight_sums: np.ndarray | None = None) -> None:
        """Adds per-row `values` weighted by per-row `weights` (both flat, one entry per row) to
        `means[g]` for the rows of group g; `weight_sums`: Σ weights per group, when known."""
        WeightedMean.add_groups(means, groups.sum(values * weights),
                                groups.sum(weights) if weight_sums is None else weight_sums)

    @staticmethod
    def add_groups(means: Sequence['WeightedMean'], totals: np.ndarray, counts: np.ndarray
                   ) -> None:
        """Adds Σ v·w = totals[g] and Σ w = counts[g] to means[g]."""
        for mean, total, count in zip(means, totals, counts):
            mean.total += float(total)
            mean.count += float(count)

    def merge(self, other: 'WeightedMean') -> 'WeightedMean':
        self.total += other.total
        self.count += other.count
        return self

    def result(self) -> float:
        return div_no_nan(self.total, self.count)

    def __repr__(self) -> str:
        return 'WeightedMean(total={!r}, count={!r})'.format(self.total, self.count)


class LossSum:
    """Σ of the weighted unreduced loss and the number of its elements: 'sum' reports the Σ,
    'sum_over_batch_size' (and 'auto') the Σ over the number of elements (Keras 2 reductions)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def update(self, weighted_loss: Any) -> 'LossSum':
        """Adds a weighted unreduced loss tensor `U · w` (already broadcast)."""
        wl = np.asarray(weighted_loss, dtype=np.float64)
        self.total += float(np.sum(wl))
        self.count += float(wl.size)
        return self

    @staticmethod
    def add_groups(sums: Sequence['LossSum'], totals: np.ndarray, counts: np.ndarray) -> None:
        """Adds Σ weighted loss = totals[g] over counts[g] elements to sums[g]."""
        for loss_sum, total, count in zip(sums, totals, counts):
            loss_sum.total += float(total)
            loss_sum.count += float(count)

    def merge(self, other: 'LossSum') -> 'LossSum':
        self.total += other.total
        self.count += other.count
        return self

    def value(self, reduction: str) -> float:
        """'sum' → Σ; 'sum_over_batch_size' / 'auto' → Σ / number of elements (0 when empty)."""
        return float(reduce_loss(self.total, self.count, reduction))

    def __repr__(self) -> str:
        return 'LossSum(total={!r}, count={!r})'.format(self.total, self.count)


def reduce_loss(total: Any, count: Any, reduction: str) -> Any:
    """A Keras 2 loss reduction of Σ weighted loss `total` over `count` elements (scalars or
    arrays, elementwise): 'sum' → the Σ; 'sum_over_batch_size' / 'auto' → Σ / count (0 when
    empty)."""
    if reduction == Reduction.SUM:
        return np.asarray(total, dtype=np.float64)
    if reduction in (Reduction.SUM_OVER_BATCH_SIZE, Reduction.AUTO):
        return div_no_nan(total, count)
    raise ValueError('Invalid loss_reduction: {}. See `tf.losses.Reduction` for valid '
                     'options.'.format(reduction))
