"""Mergeable metric states: the accumulators behind every head's array face.

Each class holds a few fixed-size float64 numpy arrays (or float64 scalars), so states pickle small
and their size does not grow with the data. Every class has

* `update(...) -> self` — adds one batch (mutating self, returned for chaining);
* `merge(other) -> self` — adds another state of the same kind; `other` is left unchanged. Merging
  only adds arrays elementwise, so it is associative and commutative up to float64 rounding;
* a result method computing the metric from the accumulated sums, with Keras 2's conventions
  (every ratio is `div_no_nan`: 0 when the denominator is 0).

The update semantics are those of the Keras 2 metrics tf.estimator's heads used (`heads_spec.md`
§2.5–2.6): `WeightedMean` is `tf.keras.metrics.Mean`, `Confusion` is Precision / Recall at
thresholds, `KerasAUC` is `tf.keras.metrics.AUC(num_thresholds=200)` with interpolation for ROC and
PR, and `LossSum` is `compute_weighted_loss`. `Histogram` is ours: a high-resolution score
histogram giving an interval that provably contains the exact ROC AUC, and calibration sums.

`HeadState` is the base of the per-head states: it merges its declared components, counts examples,
and answers `counts()`, `bounds()` and `plots()` (see docs/design.md). This module never imports
TensorFlow.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from heads import _np
from heads.keys import MetricKeys, Reduction, summary_key, threshold_key

__all__ = [
    'WeightedMean', 'Confusion', 'KerasAUC', 'Histogram', 'LossSum', 'HeadState', 'div_no_nan',
    'PLOT_COLUMNS', 'empty_plots', 'confusion_plot', 'calibration_plot', 'concat_plots',
    'BinaryClassState', 'RegressionState', 'Groups', 'flat_weights', 'add_counts_groups',
    'state_arrays', 'load_state_arrays',
]


def div_no_nan(num: Any, den: Any) -> Any:
    """`num / den`, and 0 where `den` is 0 (tf.math.divide_no_nan); scalars give a float."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return float(out) if out.ndim == 0 else out


def _keras_match_weights(values: np.ndarray, weights: Any) -> np.ndarray:
    """Keras' `squeeze_or_expand_dimensions` for a weight against values: squeeze the weight's
    last dim when it has one rank more, expand it when it has one rank less."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == values.ndim + 1:
        if w.shape[-1] != 1:
            raise ValueError('Can not squeeze dim[{}], expected a dimension of 1, got {} '
                             '(weights shape {}, values shape {}).'.format(
                                 w.ndim - 1, w.shape[-1], w.shape, values.shape))
        w = w[..., 0]
    elif values.ndim == w.ndim + 1:
        w = w[..., np.newaxis]
    return w


def _broadcast_weights(values: np.ndarray, weights: Any) -> np.ndarray:
    """Weights squeezed / expanded as Keras does, then broadcast to the values' shape."""
    w = _keras_match_weights(values, weights)
    try:
        return np.broadcast_to(w, values.shape)
    except ValueError:
        raise ValueError('weights of shape {} can not be broadcast to values of shape {}.'.format(
            np.shape(weights), values.shape)) from None


# -------------------------------------------------------------------------------------------------
# Rows of a batch spread over several states.
# -------------------------------------------------------------------------------------------------

class Groups:
    """Which of `n` states each row of a batch adds to: `codes[i]` in [0, n), or negative for
    none. Every per-state sum is then one `np.bincount` over the batch, so the states of many slices
    update in a single pass over the rows (no sort, no per-slice copies) — the pipeline's path.

    Sums run over entries: the rows themselves, or after `repeat(k)` the k values of each row
    (row-major), all in their row's group. `Groups.one(rows)` (or codes all 0 with n = 1) is a
    single state taking every row; its sums are `np.sum`, exactly as a plain `update` computes them.
    """

    def __init__(self, codes: np.ndarray | None, n: int, rows: int | None = None) -> None:
        self.n = int(n)
        self.per_row = 1
        if codes is None:
            if self.n != 1 or rows is None:
                raise ValueError('Groups without codes is one group of `rows` rows.')
            self.rows = int(rows)
            self._codes = None
            return
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        self.rows = codes.size
        if codes.size and codes.max(initial=-1) >= self.n:
            raise ValueError('group code {} out of range for {} groups'.format(codes.max(), n))
        if self.n == 1 and codes.size and codes.min() == 0:
            self._codes = None  # every row in the one group
        else:
            # Rows of no group count in an extra, dropped group.
            self._codes = np.where(codes < 0, self.n, codes) if codes.min(initial=0) < 0 else codes

    @classmethod
    def one(cls, rows: int) -> 'Groups':
        return cls(None, 1, rows)

    @classmethod
    def of(cls, codes: np.ndarray | None, n: int, rows: int) -> 'Groups':
        """`codes` (None: one group) for a batch of `rows` examples, its length checked."""
        if codes is None:
            return cls.one(rows)
        groups = cls(codes, n)
        if groups.rows != rows:
            raise ValueError('{} group codes for a batch of {} examples.'.format(groups.rows, rows))
        return groups

    @property
    def size(self) -> int:
        """Number of entries: rows × values per row."""
        return self.rows * self.per_row

    def repeat(self, k: int) -> 'Groups':
        """The groups of the k values of each entry (flattened row-major), without a copy."""
        out = object.__new__(Groups)
        out.__dict__.update(self.__dict__)
        out.per_row = self.per_row * int(k)
        return out

    def block(self, start: int, stop: int) -> 'Groups':
        """The groups of rows [start, stop) (with their values per row)."""
        if self._codes is None:
            out = Groups.one(min(stop, self.rows) - start)
        else:
            codes = self._codes[start:stop]
            out = Groups(np.where(codes >= self.n, -1, codes), self.n)
        return out.repeat(self.per_row)

    def codes(self, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """Group of each entry in [start, stop) (n for none); None for a single group."""
        if self._codes is None:
            return None
        stop = self.size if stop is None else stop
        k = self.per_row
        if k == 1:
            return self._codes[start:stop]
        first = start // k
        return np.repeat(self._codes[first:-(-stop // k)], k)[start - first * k:stop - first * k]

    def subset(self, keep: np.ndarray) -> 'Groups':
        """The same assignment restricted to the entries where the boolean `keep` is True."""
        if self._codes is None:
            return Groups(None, 1, int(np.count_nonzero(keep)))
        codes = self.codes()[keep]
        return Groups(np.where(codes >= self.n, -1, codes), self.n)

    def sum(self, values: np.ndarray | None = None) -> np.ndarray:
        """Σ of the per-entry `values` (None: the number of entries) per group, float64 [n]."""
        if self._codes is None:
            total = self.size if values is None else np.sum(values, dtype=np.float64)
            return np.array([float(total)])
        if values is None:
            out = np.bincount(self._codes, minlength=self.n + 1)[:self.n] * self.per_row
        else:
            if self.per_row != 1:  # a row's entries share its group: add them up first
                values = np.asarray(values, dtype=np.float64).reshape(self.rows, self.per_row)
                values = values.sum(axis=1)
            out = np.bincount(self._codes, weights=values, minlength=self.n + 1)[:self.n]
        return out.astype(np.float64, copy=False)

    def offsets(self, start: int, stop: int, n_cells: int) -> np.ndarray | int:
        """`group · n_cells` of the entries in [start, stop): added to cell indices in [0, n_cells),
        keys for `cells_of_keys` (0 for a single group)."""
        codes = self.codes(start, stop)
        return 0 if codes is None else codes * n_cells

    def cells_of_keys(self, keys: np.ndarray, n_cells: int, weights: np.ndarray | None
                      ) -> np.ndarray:
        """Σ `weights` per (group, cell) from per-entry keys `group · n_cells + cell` (see
        `offsets`): float64 [n, n_cells]."""
        if self._codes is None:
            out = np.bincount(keys, weights=weights, minlength=n_cells)[np.newaxis, :]
        else:
            out = np.bincount(keys, weights=weights, minlength=(self.n + 1) * n_cells)
            out = out[:self.n * n_cells].reshape(self.n, n_cells)
        return out.astype(np.float64, copy=False)

    def cells(self, cell: np.ndarray, n_cells: int, weights: np.ndarray | None) -> np.ndarray:
        """Σ `weights` per (group, cell) for per-entry cell indices in [0, n_cells): float64
        [n, n_cells]."""
        if self._codes is None:
            return self.cells_of_keys(cell, n_cells, weights)
        keys = np.empty(self.size, dtype=np.intp)
        for start in range(0, self.size, _np.CHUNK):  # cache-sized steps
            stop = min(start + _np.CHUNK, self.size)
            np.multiply(self.codes(start, stop), n_cells, out=keys[start:stop])
            keys[start:stop] += cell[start:stop]
        return self.cells_of_keys(keys, n_cells, weights)


# -------------------------------------------------------------------------------------------------
# Means and losses.
# -------------------------------------------------------------------------------------------------

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
        w = _keras_match_weights(v, weights)
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
    """Σ of the weighted unreduced loss and the number of its elements (Keras 2 reductions,
    §2.5)."""

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
        if reduction == Reduction.SUM:
            return float(self.total)
        if reduction in (Reduction.SUM_OVER_BATCH_SIZE, Reduction.AUTO):
            return div_no_nan(self.total, self.count)
        raise ValueError('Invalid loss_reduction: {}. See `tf.losses.Reduction` for valid '
                         'options.'.format(reduction))

    def __repr__(self) -> str:
        return 'LossSum(total={!r}, count={!r})'.format(self.total, self.count)


# -------------------------------------------------------------------------------------------------
# Confusion matrices.
# -------------------------------------------------------------------------------------------------

def _flatten_inputs(positive: Any, scores: Any, weights: Any
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positive bool, float32 scores, float64 weights), flat, weights broadcast to the scores."""
    s = np.asarray(scores, dtype=np.float32)
    pos = np.asarray(positive)
    if pos.dtype != np.bool_:
        pos = pos != 0
    if pos.shape != s.shape:
        pos = np.broadcast_to(_keras_match_weights(s, pos).astype(bool), s.shape)
    if weights is None:
        w = np.ones(s.shape, dtype=np.float64)
    else:
        w = _broadcast_weights(s, weights)
    return pos.reshape(-1), s.reshape(-1), np.asarray(w, dtype=np.float64).reshape(-1)


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
        pos, s, w = _flatten_inputs(positive, scores, weights)
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
        order = np.argsort(matrices[0].thresholds.astype(np.float32), kind='stable')
        at_least = np.cumsum(cells[:, ::-1], axis=1)[:, ::-1]
        for m, al in zip(matrices, at_least):
            tp = np.empty(order.size)
            fp = np.empty(order.size)
            tp[order] = al[1:, 1]
            fp[order] = al[1:, 0]
            m.tp += tp
            m.fp += fp
            m.fn += al[0, 1] - tp
            m.tn += al[0, 0] - fp

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
        pos, s, w = _flatten_inputs(positive, scores, weights)
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
        s = scores
        cell = np.empty(s.size, dtype=np.intp)
        with np.errstate(invalid='ignore'):
            for start in range(0, s.size, _np.CHUNK):  # cache-sized steps
                p = np.clip(s[start:start + _np.CHUNK], np.float32(0.0), np.float32(1.0))
                p *= np.float32(n - 1)
                bucket = np.ceil(p, out=p)
                bucket -= np.float32(1.0)
                np.maximum(bucket, np.float32(0.0), out=bucket)
                # NaN goes to an extra cell outside the buckets: counted in the totals only.
                bucket[np.isnan(bucket)] = n
                stop = start + bucket.size
                part = cell[start:stop]
                part[:] = bucket
                part *= 2
                part += positive[start:stop]
                part += groups.offsets(start, stop, 2 * (n + 1))
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
        n = self.num_thresholds
        inner = [(i + 1) * 1.0 / (n - 1) for i in range(n - 2)]
        return np.asarray([0.0 - self.EPSILON] + inner + [1.0 + self.EPSILON], dtype=np.float64)

    def confusion(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds, tp, fp, tn, fn), each of length num_thresholds."""
        tp = np.cumsum(self.pos[::-1])[::-1]
        fp = np.cumsum(self.neg[::-1])[::-1]
        return self.thresholds(), tp, fp, self.neg_total - fp, self.pos_total - tp

    def roc(self) -> float:
        """Area under the ROC curve, trapezoids between thresholds (0 without positives or
        negatives, as Keras)."""
        _, tp, fp, tn, fn = self.confusion()
        recall = div_no_nan(tp, tp + fn)
        fpr = div_no_nan(fp, fp + tn)
        return float(np.sum((fpr[:-1] - fpr[1:]) * (recall[:-1] + recall[1:]) / 2.0))

    def pr(self) -> float:
        """Area under the precision-recall curve with Davis & Goadrich interpolation (Keras)."""
        _, tp, fp, _, fn = self.confusion()
        p = tp + fp
        dtp = tp[:-1] - tp[1:]
        dp = p[:-1] - p[1:]
        slope = div_no_nan(dtp, np.maximum(dp, 0.0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = np.where(both, div_no_nan(p[:-1], np.maximum(p[1:], 0.0)), 1.0)
        with np.errstate(divide='ignore', invalid='ignore'):
            log_ratio = np.log(ratio)
        increment = div_no_nan(slope * (dtp + intercept * log_ratio),
                               np.maximum(tp[1:] + fn[1:], 0.0))
        return float(np.sum(increment))

    def __repr__(self) -> str:
        return 'KerasAUC(num_thresholds={})'.format(self.num_thresholds)


@functools.lru_cache(maxsize=8)
def _histogram_cuts(n_buckets: int, logit_range: float) -> np.ndarray:
    inner = np.linspace(-logit_range, logit_range, n_buckets - 1)
    cuts = 1.0 / (1.0 + np.exp(-inner))
    cuts.setflags(write=False)
    return cuts


# Bit patterns of non-negative float32 values order like the values, so a float32 score's entry
# can be read from a table indexed by its top bits (a "cell" of 2**_CELL_BITS consecutive float32
# values). Scores of at least 0.5 are looked up by 1 − p, exact in float32 for such p, so that
# both halves keep float32's fine resolution near their end and a cell never holds two cuts.
_CELL_BITS = 12
_FLOAT32_ONE_BITS = int(np.float32(1.0).view(np.int32))
_FLOAT32_HALF_BITS = int(np.float32(0.5).view(np.int32))
_NO_CUT = 2 ** 31 - 1  # above every float32 bit pattern in [0, 1]


def _cell_table(sorted_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(base, inner) per cell of [0, 0.5]: the number of patterns below the cell, and the one
    pattern inside it (_NO_CUT when none); base is −1 where the cell holds several."""
    starts = np.arange((_FLOAT32_HALF_BITS >> _CELL_BITS) + 1, dtype=np.int64) << _CELL_BITS
    below = np.searchsorted(sorted_bits, starts, side='left')
    upto = np.searchsorted(sorted_bits, starts + ((1 << _CELL_BITS) - 1), side='right')
    inside = upto - below
    inner = np.full(starts.size, _NO_CUT, dtype=np.int64)
    one = inside == 1
    inner[one] = sorted_bits[below[one]]
    base = np.where(inside > 1, -1, below)
    return base, inner


@functools.lru_cache(maxsize=8)
def _float32_cut_tables(n_buckets: int, logit_range: float) -> dict[str, np.ndarray]:
    """Tables giving, for a float32 p in [0, 1], the number of float64 cuts <= p exactly.

    For p < 0.5: `cut <= p` iff `ceil32(cut) <= p` (ceil32: the smallest float32 not below the
    cut), a count of `low` patterns <= bits(p). For p >= 0.5, with q = 1 − p (exact): `cut <= p`
    iff `q <= 1 − cut` iff `q <= floor32(1 − cut)`, so the count is the number of cuts minus the
    `high` patterns below bits(q) (1 − cut is exact in float64 for cut >= 0.5; smaller cuts give
    values above 0.5 >= q either way). Cells holding one pattern compare against it; cells holding
    several (only for unusually fine buckets) fall back to a binary search.
    """
    cuts = _histogram_cuts(n_buckets, logit_range)
    c32 = cuts.astype(np.float32)
    under = c32.astype(np.float64) < cuts
    c32[under] = np.nextafter(c32[under], np.float32(np.inf))
    d = 1.0 - cuts[::-1]
    d32 = d.astype(np.float32)
    over = d32.astype(np.float64) > d
    d32[over] = np.nextafter(d32[over], np.float32(-np.inf))
    low = c32.view(np.int32).astype(np.int64)
    high = d32.view(np.int32).astype(np.int64)
    low_base, low_inner = _cell_table(low)
    high_base, high_inner = _cell_table(high)
    # Per cell, the entry of a score whose pattern v is below the cell's one cut pattern, and
    # that pattern: the entry is `entry[cell] + (v >= thr[cell])` below 0.5 (entry = count + 1)
    # and `entry[cell] + (v < thr[cell])` from 0.5 on (entry = n_buckets − count, counting the
    # patterns < v, i.e. v >= pattern + 1). −1 marks a cell holding several cuts.
    n = int(n_buckets)
    low_entry = np.where(low_base < 0, -1, low_base + 1)
    high_entry = np.where(high_base < 0, -1, n - high_base - 1)
    high_thr = np.where(high_inner == _NO_CUT, _NO_CUT, high_inner + 1)
    # The ends: v = 0 in the lower half is p = 0 (entry 0), in the upper half p = 1 (entry
    # n_buckets + 1); any other pattern of those cells is a tiny p (entry 1) or, as q = 1 − p is
    # 0 or at least 2^-24, none. Cells 0 hold no cut unless the buckets reach denormal scores.
    for entry, thr, base, inner, at_zero in ((low_entry, low_inner, low_base, low_inner, 0),
                                             (high_entry, high_thr, high_base, high_inner, n)):
        if base[0] == 0 and inner[0] == _NO_CUT:
            entry[0], thr[0] = at_zero, 1
        else:
            entry[0] = -1
    out = {'low': low, 'high': high,
           # Both halves in one table, the upper half after the lower one.
           'entry': np.concatenate([low_entry, high_entry]).astype(np.int32),
           'thr': np.concatenate([low_inner, high_thr]).astype(np.int32),
           'cells': np.asarray(low_base.size, dtype=np.int32)}
    for a in out.values():
        a.setflags(write=False)
    return out


class Histogram:
    """High-resolution weighted histogram of probabilities, for exact-AUC bounds and calibration.

    Layout of `pos` / `neg` (Σw of positives / negatives), n_buckets + 2 entries in increasing
    score order: entry 0 holds scores exactly 0, entries 1..n_buckets the open interval (0, 1) cut
    at the sigmoids of evenly spaced logits in [−logit_range, logit_range] (so the resolution
    follows the scale on which models spread their scores), and the last entry scores exactly 1
    (a float32 sigmoid saturates to 1 from logits of about 17, so such ties are common). With
    c = `edges()` (the n_buckets − 1 cuts), entry 1 holds 0 < p < c[0], entry b holds
    c[b−2] <= p < c[b−1], entry n_buckets holds c[-1] <= p < 1. Scores are clipped to [0, 1];
    NaN scores are kept apart (`nan_pos`, `nan_neg`) and rank below every other score, as Keras'
    AUC treats them (predicted negative at every threshold).

    Calibration sums (Σw, Σw·label, Σw·p) are kept on `n_calibration` evenly spaced buckets of p.

    Storage: the non-empty entries only (sorted indices and their sums) until a quarter of the
    entries are in use, then dense arrays; a state of a small slice therefore stays small in
    memory and in pickles, and the size never exceeds the dense arrays.
    """

    def __init__(self, n_buckets: int = 8192, logit_range: float = 16.0,
                 n_calibration: int = 100) -> None:
        if n_buckets < 2:
            raise ValueError('n_buckets must be >= 2. Given: {}'.format(n_buckets))
        self.n_buckets = int(n_buckets)
        self.logit_range = float(logit_range)
        self.n_calibration = int(n_calibration)
        self._idx: np.ndarray | None = np.empty(0, dtype=np.int64)  # None once dense
        self._pos = np.empty(0)
        self._neg = np.empty(0)
        self.nan_pos = 0.0
        self.nan_neg = 0.0
        self.negative_weights = 0.0  # Σ |w| of negative weights seen (bounds need w >= 0)
        self.cal_examples = np.zeros(self.n_calibration)
        self.cal_labels = np.zeros(self.n_calibration)
        self.cal_predictions = np.zeros(self.n_calibration)

    # -- storage ------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Number of entries of `pos` / `neg`."""
        return self.n_buckets + 2

    @property
    def pos(self) -> np.ndarray:
        """Σw of positives per entry (a dense copy when stored sparse)."""
        return self._dense_view(self._pos)

    @property
    def neg(self) -> np.ndarray:
        """Σw of negatives per entry (a dense copy when stored sparse)."""
        return self._dense_view(self._neg)

    def _dense_view(self, values: np.ndarray) -> np.ndarray:
        if self._idx is None:
            return values
        dense = np.zeros(self.size)
        dense[self._idx] = values
        return dense

    def _sparse(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices, pos, neg) of the non-empty entries."""
        if self._idx is not None:
            return self._idx, self._pos, self._neg
        idx = np.flatnonzero((self._pos != 0) | (self._neg != 0))
        return idx, self._pos[idx], self._neg[idx]

    def _add_entries(self, idx: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> None:
        """Adds sums at unique entry indices `idx`."""
        if self._idx is not None:
            # Both index arrays are sorted and unique; an empty state (a fresh batch) takes idx.
            union = idx.copy() if not self._idx.size else np.union1d(self._idx, idx)
            if union.size * 4 <= self.size:
                new_pos = np.zeros(union.size)
                new_neg = np.zeros(union.size)
                at_old = np.searchsorted(union, self._idx)
                at_new = np.searchsorted(union, idx)
                new_pos[at_old] += self._pos
                new_neg[at_old] += self._neg
                new_pos[at_new] += pos
                new_neg[at_new] += neg
                self._idx, self._pos, self._neg = union, new_pos, new_neg
                return
            self._pos, self._neg = self.pos, self.neg  # switch to dense storage
            self._idx = None
        self._pos[idx] += pos
        self._neg[idx] += neg

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        idx, pos, neg = self._sparse()
        if self._idx is None:  # dense in memory: pickle the non-empty entries only
            state['_idx'], state['_pos'], state['_neg'] = idx, pos, neg
            state['_dense'] = True
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        dense = state.pop('_dense', False)
        self.__dict__.update(state)
        if dense:
            self._pos, self._neg = self.pos, self.neg
            self._idx = None

    def edges(self) -> np.ndarray:
        """The n_buckets − 1 inner cut points of (0, 1), increasing (read-only)."""
        return _histogram_cuts(self.n_buckets, self.logit_range)

    def bucket_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lowest, highest) score each entry of `pos` / `neg` can hold (closed hull)."""
        cuts = self.edges()
        lower = np.concatenate([[0.0, 0.0], cuts, [1.0]])
        upper = np.concatenate([[0.0], cuts, [1.0, 1.0]])
        return lower, upper

    def bucket_index(self, scores: Any) -> np.ndarray:
        """Entry of `pos` / `neg` for each (non-NaN) score."""
        scores = np.asarray(scores)
        if scores.dtype == np.float32:
            return self._bucket_index32(np.clip(scores, np.float32(0.0), np.float32(1.0)))
        p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        b = np.searchsorted(self.edges(), p, side='right') + 1
        b = np.where(p <= 0.0, 0, b)
        return np.where(p >= 1.0, self.n_buckets + 1, b)

    def _bucket_index32(self, p: np.ndarray) -> np.ndarray:
        """`bucket_index` of float32 scores already clipped to [0, 1] (no NaN): table lookups on
        the float32 bit patterns, the same entries as the float64 search. Works through the
        scores in cache-sized chunks (the lookup takes a dozen elementwise steps)."""
        t = _float32_cut_tables(self.n_buckets, self.logit_range)
        p = np.ascontiguousarray(p, dtype=np.float32).reshape(-1)
        out = np.empty(p.size, dtype=np.intp)
        for start in range(0, p.size, _np.CHUNK):
            part = p[start:start + _np.CHUNK]
            out[start:start + part.size] = self._bucket_chunk(part, t)
        return out

    def _bucket_chunk(self, p: np.ndarray, t: dict[str, np.ndarray]) -> np.ndarray:
        """Entries of one contiguous chunk of float32 scores in [0, 1] (`t`: the cut tables)."""
        q = np.float32(1.0) - p
        np.minimum(q, p, out=q)  # p below 0.5, else 1 − p (exact in float32 from 0.5 on)
        v = q.view(np.int32)
        np.maximum(v, 0, out=v)  # −0.0 has the sign bit set; it is 0
        up = p >= np.float32(0.5)
        # Both halves' cells in one table; arithmetic rather than np.where or masked assignment,
        # which are several times slower when the halves interleave at random.
        cell = v >> _CELL_BITS
        cell += up * t['cells']
        base = t['entry'][cell]
        step = v >= t['thr'][cell]
        step ^= up  # at or above the cut below 0.5; below it from 0.5 on
        entry = base + step
        several = base < 0
        if several.any():
            lo = several & ~up
            hi = several & up
            entry[lo] = np.searchsorted(t['low'], v[lo], side='right') + 1
            entry[hi] = self.n_buckets - np.searchsorted(t['high'], v[hi], side='left')
            entry[lo & (v == 0)] = 0
            entry[hi & (v == 0)] = self.n_buckets + 1
        return entry

    def update(self, positive: Any, scores: Any, weights: Any = None,
               labels: Any = None) -> 'Histogram':
        """Adds one batch of (label != 0, probability) pairs; `labels` (default: the 0/1 positive
        flags) are the label values summed for calibration (soft labels stay soft)."""
        pos, s, w = _flatten_inputs(positive, scores, weights)
        z = None if labels is None else np.broadcast_to(
            np.asarray(labels, dtype=np.float64), np.shape(scores)).reshape(-1)
        Histogram.update_groups([self], Groups.one(s.size), pos, s, w, z)
        return self

    @staticmethod
    def update_groups(hists: Sequence['Histogram'], groups: Groups, positive: np.ndarray,
                      scores: np.ndarray, weights: np.ndarray, labels: np.ndarray | None
                      ) -> np.ndarray:
        """Adds flat per-row (bool positive, float32 score, float64 weight, float64 label value)
        to `hists[g]` for the rows of group g (all with the same buckets); `labels` None: the
        label values are the 0/1 positive flags (then one pass less).

        Returns per group the (Σw, Σw·label, Σw·p) of the rows it binned (all but NaN scores):
        the totals of the calibration sums, which a caller can reuse for means."""
        if not hists:
            return np.zeros((3, 0))
        first = hists[0]
        pos, s, w, z = positive, scores, weights, labels
        negative = w < 0
        if negative.any():
            for h, v in zip(hists, groups.sum(np.where(negative, -w, 0.0))):
                h.negative_weights += float(v)
        nan = np.isnan(s)
        if nan.any():
            nan_pos = groups.sum(np.where(nan & pos, w, 0.0))
            nan_neg = groups.sum(np.where(nan & ~pos, w, 0.0))
            for h, vp, vn in zip(hists, nan_pos, nan_neg):
                h.nan_pos += float(vp)
                h.nan_neg += float(vn)
            keep = ~nan
            s, w, pos = s[keep], w[keep], pos[keep]
            z = None if z is None else z[keep]
            groups = groups.subset(keep)
        n, m = first.size, first.n_calibration
        t = _float32_cut_tables(first.n_buckets, first.logit_range)
        # Per-example indices and products, in cache-sized steps; then one bincount each.
        cell = np.empty(s.size, dtype=np.intp)   # 2 · entry + label
        cal = np.empty(s.size, dtype=np.intp)    # calibration bucket (· 2 + label for 0/1 labels)
        wz = np.empty(s.size) if z is not None else None  # w · label
        wp = np.empty(s.size)                    # w · p
        for start in range(0, s.size, _np.CHUNK):
            stop = min(start + _np.CHUNK, s.size)
            p32 = np.clip(s[start:stop], np.float32(0.0), np.float32(1.0))
            group = groups.offsets(start, stop, 1)  # each score's group (0: a single group)
            entry = first._bucket_chunk(p32, t)
            entry *= 2
            entry += pos[start:stop]
            entry += group * (2 * n)
            cell[start:stop] = entry
            p = p32.astype(np.float64)
            c = cal[start:stop]
            c[:] = p * m
            np.clip(c, 0, m - 1, out=c)
            if z is None:  # with 0/1 labels, Σw·label is the positives' part of Σw
                c *= 2
                c += pos[start:stop]
                c += group * (2 * m)
            else:
                c += group * m
                np.multiply(w[start:stop], z[start:stop], out=wz[start:stop])
            np.multiply(w[start:stop], p, out=wp[start:stop])
        cells = groups.cells_of_keys(cell, 2 * n, w).reshape(groups.n, n, 2)
        if z is None:
            by_label = groups.cells_of_keys(cal, 2 * m, w).reshape(groups.n, m, 2)
            cal_examples = by_label.sum(axis=2)
            cal_labels = by_label[:, :, 1]
            np.right_shift(cal, 1, out=cal)  # the buckets alone (group offsets kept) for Σw·p
        else:
            cal_examples = groups.cells_of_keys(cal, m, w)
            cal_labels = groups.cells_of_keys(cal, m, wz)
        cal_predictions = groups.cells_of_keys(cal, m, wp)
        for g, h in enumerate(hists):
            if h._idx is None:  # dense storage: adding the empty entries' zeros changes nothing
                h._pos += cells[g, :, 1]
                h._neg += cells[g, :, 0]
            else:
                used = np.flatnonzero((cells[g, :, 1] != 0) | (cells[g, :, 0] != 0))
                h._add_entries(used, cells[g, used, 1], cells[g, used, 0])
            h.cal_examples += cal_examples[g]
            h.cal_labels += cal_labels[g]
            h.cal_predictions += cal_predictions[g]
        return np.stack([cal_examples.sum(axis=1), cal_labels.sum(axis=1),
                         cal_predictions.sum(axis=1)])

    def merge(self, other: 'Histogram') -> 'Histogram':
        if (other.n_buckets, other.logit_range, other.n_calibration) != (
                self.n_buckets, self.logit_range, self.n_calibration):
            raise ValueError('Cannot merge histograms with different buckets.')
        self._add_entries(*other._sparse())
        self.nan_pos += other.nan_pos
        self.nan_neg += other.nan_neg
        self.negative_weights += other.negative_weights
        self.cal_examples += other.cal_examples
        self.cal_labels += other.cal_labels
        self.cal_predictions += other.cal_predictions
        return self

    def auc_bounds(self) -> tuple[float, float]:
        """(lower, upper) bounds of the exact weighted ROC AUC with ties counted 1/2.

        AUC = Σ over (positive i, negative j) of w_i·w_j·[s_i > s_j] + ½·w_i·w_j·[s_i = s_j], over
        Σw₊·Σw₋. Pairs in different entries are ordered exactly; pairs within a single-value entry
        (0, 1, NaN) are ties (½ exactly); pairs sharing an interval entry contribute anywhere
        between 0 and their weight product, which the interval spans.

        (NaN, NaN) — no interval — when the exact AUC is undefined: without positive or without
        negative weight (a 0/0: all weights zero, an empty state, one class only; Keras' AUC, the
        head's `auc` value, is 0 there), or when some weight is negative (a weighted AUC is not a
        probability then and no such bound holds; the pipeline rejects negative weights).
        """
        undefined = (float('nan'), float('nan'))
        if self.negative_weights > 0:
            return undefined
        pos = np.concatenate([[self.nan_pos], self.pos])
        neg = np.concatenate([[self.nan_neg], self.neg])
        wp, wn = float(np.sum(pos)), float(np.sum(neg))
        if wp <= 0 or wn <= 0:
            return undefined
        below = np.cumsum(neg) - neg  # negative weight strictly below each entry
        ordered = float(np.sum(pos * below))
        same = pos * neg
        point = np.zeros(same.size, dtype=bool)
        point[[0, 1, same.size - 1]] = True  # NaN, exactly 0, exactly 1
        ties = 0.5 * float(np.sum(same[point]))
        spread = float(np.sum(same[~point]))
        scale = wp * wn
        # A relative 1e-12 of slack absorbs float64 rounding of the sums: the bound stays a bound.
        lower = max(0.0, (ordered + ties) / scale - 1e-12)
        upper = min(1.0, (ordered + ties + spread) / scale + 1e-12)
        return (lower, upper)

    def curve(self, thresholds: Sequence[float]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(tp, fp, tn, fn) at `thresholds` (predicted positive iff p > t), counting an entry as
        predicted positive iff its lowest possible score is above t: exact up to the examples of
        the entry containing t."""
        lower, _ = self.bucket_bounds()
        t = np.asarray(thresholds, dtype=np.float64)
        above = (lower[np.newaxis, :] > t[:, np.newaxis]).astype(np.float64)
        above[:, -1] = 1.0 > t  # the entry of exactly 1
        tp = above @ self.pos
        fp = above @ self.neg
        wp = float(np.sum(self.pos)) + self.nan_pos
        wn = float(np.sum(self.neg)) + self.nan_neg
        return tp, fp, wn - fp, wp - tp

    def __repr__(self) -> str:
        return 'Histogram(n_buckets={}, logit_range={})'.format(self.n_buckets, self.logit_range)


# -------------------------------------------------------------------------------------------------
# Plots (columns of pipeline.schema.PLOTS after the id columns).
# -------------------------------------------------------------------------------------------------

PLOT_COLUMNS = ('sub_key', 'curve', 'threshold', 'tp', 'fp', 'tn', 'fn', 'precision', 'recall',
                'false_positive_rate', 'bucket_lower', 'bucket_upper', 'weighted_examples',
                'weighted_labels', 'weighted_predictions')
_TEXT_COLUMNS = ('sub_key', 'curve')


def empty_plots() -> dict[str, np.ndarray]:
    """Zero rows of every plot column (heads without curves)."""
    return {c: (np.empty(0, dtype=object) if c in _TEXT_COLUMNS else np.empty(0, dtype=np.float64))
            for c in PLOT_COLUMNS}


def _plot_rows(n: int, sub_key: str, curve: str, **columns: np.ndarray) -> dict[str, np.ndarray]:
    out = {c: np.full(n, np.nan) for c in PLOT_COLUMNS if c not in _TEXT_COLUMNS}
    out['sub_key'] = np.full(n, sub_key, dtype=object)
    out['curve'] = np.full(n, curve, dtype=object)
    for k, v in columns.items():
        out[k] = np.asarray(v, dtype=np.float64)
    return {c: out[c] for c in PLOT_COLUMNS}


def confusion_plot(sub_key: str, auc: KerasAUC, exact: Confusion | None = None
                   ) -> dict[str, np.ndarray]:
    """Rows of curve 'confusion': the AUC's confusion matrices at its thresholds, plus the exact
    matrices of `exact` (a head's own thresholds), in increasing threshold order.

    The rows of `exact` count `p > t` example by example, so a report or dashboard showing the
    confusion matrix at a head's threshold reads exact counts rather than the nearest of the 200
    bucketed thresholds. Where a head threshold equals one of the AUC's, only the exact row is
    kept (each threshold appears once per sub_key).
    """
    t, tp, fp, tn, fn = auc.confusion()
    if exact is not None and exact.thresholds.size:
        # np.unique: a threshold listed twice by the head is one row (its counts are identical).
        uniq, first = np.unique(exact.thresholds, return_index=True)
        keep = ~np.isin(t, uniq)
        t = np.concatenate([t[keep], uniq])
        tp = np.concatenate([tp[keep], exact.tp[first]])
        fp = np.concatenate([fp[keep], exact.fp[first]])
        tn = np.concatenate([tn[keep], exact.tn[first]])
        fn = np.concatenate([fn[keep], exact.fn[first]])
        order = np.argsort(t, kind='stable')
        t, tp, fp, tn, fn = t[order], tp[order], fp[order], tn[order], fn[order]
    return _plot_rows(t.size, sub_key, 'confusion', threshold=t, tp=tp, fp=fp, tn=tn, fn=fn,
                      precision=div_no_nan(tp, tp + fp), recall=div_no_nan(tp, tp + fn),
                      false_positive_rate=div_no_nan(fp, fp + tn))


def calibration_plot(sub_key: str, hist: Histogram) -> dict[str, np.ndarray]:
    """Rows of curve 'calibration': Σw, Σw·label, Σw·p per evenly spaced probability bucket."""
    m = hist.n_calibration
    lower = np.arange(m) / m
    upper = np.arange(1, m + 1) / m
    return _plot_rows(m, sub_key, 'calibration', bucket_lower=lower, bucket_upper=upper,
                      weighted_examples=hist.cal_examples, weighted_labels=hist.cal_labels,
                      weighted_predictions=hist.cal_predictions)


def concat_plots(parts: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Plot row groups concatenated column by column (empty columns when there are none)."""
    parts = [p for p in parts if p and len(p['curve'])]
    if not parts:
        return empty_plots()
    return {c: np.concatenate([np.asarray(p[c]) for p in parts]) for c in PLOT_COLUMNS}


# -------------------------------------------------------------------------------------------------
# The base of the per-head states.
# -------------------------------------------------------------------------------------------------

def _merge_component(mine: Any, theirs: Any) -> None:
    if isinstance(mine, (list, tuple)):
        if len(mine) != len(theirs):
            raise ValueError('Cannot merge states of different structure.')
        for a, b in zip(mine, theirs):
            _merge_component(a, b)
    elif isinstance(mine, dict):
        if mine.keys() != theirs.keys():
            raise ValueError('Cannot merge states of different structure.')
        for k in mine:
            _merge_component(mine[k], theirs[k])
    else:
        mine.merge(theirs)


class HeadState:
    """Base of a head's mergeable state.

    A subclass lists the attribute names of its mergeable components in `_components` (each a
    state above, or a list / tuple / dict of them), implements `update`, `result` and `loss`, and
    may override `bounds` and `plots`. `signature` (set by the subclass) identifies the head
    configuration; states of different heads refuse to merge. A per-head state keeps a reference
    to its head (which validates and processes each batch) and pickles with it: heads built from
    plain values pickle with the standard library; a head holding a lambda (`loss_fn`,
    `inverse_link_fn`) needs cloudpickle or dill.
    """

    _components: tuple[str, ...] = ()

    def __init__(self, signature: Any = None) -> None:
        self.signature = signature
        self.example_count = 0.0
        self.weighted_example_count = 0.0

    def _add_counts(self, examples: int | float, weighted: float) -> None:
        self.example_count += float(examples)
        self.weighted_example_count += float(weighted)

    def update(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
               ) -> 'HeadState':
        """Adds one batch: the state's grouped update with itself as the only group (validated
        exactly as the head's loss; errors leave self unchanged)."""
        if not type(self).update_groups([self], None, labels, logits, features):
            raise NotImplementedError('{} has no update for this batch.'.format(
                type(self).__name__))
        return self

    @staticmethod
    def update_groups(states: Sequence['HeadState'], codes: np.ndarray | None, labels: Any,
                      logits: Any, features: Mapping[str, Any] | None = None) -> bool:
        """Adds row i of one batch to `states[codes[i]]` in one pass, when the head's state
        supports it (see `BinaryClassState.update_groups`). Returns False, changing nothing, when
        it does not: the caller then updates each state with its own rows."""
        return False

    def merge(self, other: 'HeadState') -> 'HeadState':
        """Adds `other` (a state of the same head) into self; `other` is unchanged."""
        if type(other) is not type(self) or other.signature != self.signature:
            raise ValueError('Cannot merge a {} of {!r} into a {} of {!r}.'.format(
                type(other).__name__, other.signature, type(self).__name__, self.signature))
        for name in self._components:
            _merge_component(getattr(self, name), getattr(other, name))
        self.example_count += other.example_count
        self.weighted_example_count += other.weighted_example_count
        return self

    def result(self) -> dict[str, float]:
        raise NotImplementedError

    def loss(self) -> float:
        raise NotImplementedError

    def counts(self) -> tuple[int, float]:
        """(examples seen, Σ example weights — 1 per example without a weight column)."""
        return int(round(self.example_count)), float(self.weighted_example_count)

    def bounds(self) -> dict[str, tuple[float, float]]:
        return {}

    def plots(self) -> dict[str, np.ndarray]:
        return empty_plots()


# -------------------------------------------------------------------------------------------------
# A state's numbers as named arrays: persistence in a data format (no pickle).
# -------------------------------------------------------------------------------------------------

_CONFIGURATION = ('head', 'signature')  # rebuilt from the head, never stored


def _is_state(value: Any) -> bool:
    return callable(getattr(value, 'merge', None))


def _is_number(value: Any) -> bool:
    return isinstance(value, (bool, int, float, np.number, np.bool_))


def _is_numeric_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in 'biuf'


def _fields(state: Any) -> dict[str, Any]:
    """A state's attributes as its pickle would hold them (`__getstate__`), less the head."""
    return {k: v for k, v in state.__getstate__().items() if k not in _CONFIGURATION}


def state_arrays(state: Any) -> dict[str, np.ndarray]:
    """Every number of a state (a per-head state or a component) as named numpy arrays: each
    numeric array or scalar attribute, of the state and of its components (lists, tuples and dicts
    of them too), by attribute path ('histogram/_pos', 'threshold_accuracy/0/total'). The head
    and signature are not included: `load_state_arrays` fills a fresh state of the same head."""
    out: dict[str, np.ndarray] = {}
    _put_arrays(out, '', state)
    return out


def _put_arrays(out: dict[str, np.ndarray], path: str, value: Any) -> None:
    if _is_numeric_array(value) or _is_number(value):
        out[path] = np.asarray(value)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _put_arrays(out, '%s/%d' % (path, i) if path else str(i), v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _put_arrays(out, '%s/%s' % (path, k) if path else str(k), v)
    elif _is_state(value):
        for name, v in _fields(value).items():
            _put_arrays(out, '%s/%s' % (path, name) if path else name, v)
    # Anything else (None, strings, heads) is configuration: the fresh state has it.


def load_state_arrays(state: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Fills `state` (a fresh `head.new_state()`) with `state_arrays` of a state of the same head;
    returns it. Only the fresh state's own attributes are set, from arrays of matching kind.

    Raises:
      ValueError: naming the entry, when the arrays do not fit the state (missing, unknown, of
        another dtype or shape).
    """
    used: set[str] = set()
    _load_state(state, '', arrays, used)
    unknown = sorted(set(arrays) - used)
    if unknown:
        raise ValueError('unknown state entries: %s' % ', '.join(unknown[:5]))
    return state


def _load_state(state: Any, path: str, arrays: Mapping[str, np.ndarray], used: set[str]) -> None:
    fields = _fields(state)
    prefix = path + '/' if path else ''
    for name, value in fields.items():
        fields[name] = _load_value(value, prefix + name, arrays, used)
    own_setstate = getattr(type(state), '__setstate__', None) is not None
    extra = [k for k in arrays if k.startswith(prefix) and '/' not in k[len(prefix):]
             and k[len(prefix):] not in fields]
    if extra and own_setstate:  # entries the class's __getstate__ adds (e.g. a storage flag)
        for k in extra:
            fields[k[len(prefix):]] = _load_value(arrays[k][()], k, arrays, used)
    if own_setstate:
        state.__setstate__(fields)
    else:
        state.__dict__.update(fields)


def _load_value(template: Any, path: str, arrays: Mapping[str, np.ndarray], used: set[str]
                ) -> Any:
    if _is_numeric_array(template) or _is_number(template):
        if path not in arrays:
            raise ValueError('state entry %s is missing' % path)
        saved = np.asarray(arrays[path])
        used.add(path)
        if _is_number(template):
            if saved.ndim or saved.dtype.kind not in 'biuf':
                raise ValueError('state entry %s: a number expected, got %s %s'
                                 % (path, saved.dtype, saved.shape))
            return type(template)(saved.item())
        if saved.dtype != template.dtype or saved.ndim != template.ndim:
            raise ValueError('state entry %s: %s[%d dims] expected, got %s%s'
                             % (path, template.dtype, template.ndim, saved.dtype, saved.shape))
        return saved.copy()
    if isinstance(template, (list, tuple)):
        return type(template)(_load_value(v, '%s/%d' % (path, i), arrays, used)
                              for i, v in enumerate(template))
    if isinstance(template, dict):
        return {k: _load_value(v, '%s/%s' % (path, k), arrays, used)
                for k, v in template.items()}
    if _is_state(template):
        _load_state(template, path, arrays, used)
    return template


# -------------------------------------------------------------------------------------------------
# Per-head states: BinaryClassHead and the regression heads.
# -------------------------------------------------------------------------------------------------

def flat_weights(weights: np.ndarray | float, shape: tuple[int, ...]) -> np.ndarray:
    """Example weights (`[D0..DN, 1]` or a scalar) broadcast to `shape` and flattened, float64."""
    return np.broadcast_to(np.asarray(weights, dtype=np.float64), shape).reshape(-1)


def add_counts_groups(states: Sequence['HeadState'], n_rows: np.ndarray, w_sum: np.ndarray
                      ) -> None:
    """Adds n_rows[g] examples of total weight w_sum[g] to states[g]."""
    for state, examples, weighted in zip(states, n_rows, w_sum):
        state._add_counts(examples, weighted)


def row_weight_sum(weights: np.ndarray | float, logits: np.ndarray) -> float:
    """Σ of the example weights over all examples (a per-logit weight counts its mean)."""
    batch = logits.shape[:-1]
    if np.ndim(weights) == 0:
        return float(weights) * float(np.prod(batch, dtype=np.float64))
    w = np.asarray(weights, dtype=np.float64)
    per_example = w.mean(axis=-1) if w.shape[-1] != 1 else w[..., 0]
    return float(np.sum(np.broadcast_to(per_example, batch)))


class BinaryClassState(HeadState):
    """Mergeable metrics of a `BinaryClassHead`: the keys and values of its update_metrics.

    Components: the loss sum, Keras means (average_loss, accuracy, prediction/mean, label/mean,
    per-threshold accuracy), confusion matrices (precision / recall on class ids, and at each
    threshold on probabilities), Keras' 200-threshold AUC, and a high-resolution histogram for
    AUC bounds and calibration.
    """

    _components = ('loss_sum', 'average_loss', 'accuracy', 'class_confusion', 'prediction_mean',
                   'label_mean', 'auc', 'histogram', 'threshold_accuracy', 'threshold_confusion')
    MAX_GROUPS = 128  # states per grouped update: 128 × 2 × 8194 float64 histogram sums = 16 MB

    def __init__(self, head: Any) -> None:
        super().__init__(signature=('BinaryClassHead', head.name, head.thresholds,
                                    head.loss_reduction))
        self.head = head
        self.loss_sum = LossSum()
        self.average_loss = WeightedMean()
        self.accuracy = WeightedMean()
        self.class_confusion = Confusion([0.5])
        self.prediction_mean = WeightedMean()
        self.label_mean = WeightedMean()
        self.auc = KerasAUC()
        self.histogram = Histogram()
        self.threshold_accuracy = [WeightedMean() for _ in head.thresholds]
        self.threshold_confusion = Confusion(head.thresholds)

    @staticmethod
    def update_groups(states: Sequence['BinaryClassState'], codes: np.ndarray | None,
                      labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                      ) -> bool:
        """Adds row i of one batch to `states[codes[i]]` (rows with a negative code to none), in one
        pass over the rows; `codes` None: every row to the single state. The batch is validated as
        a whole first (errors leave every state unchanged). Returns False, changing nothing, for more
        than `MAX_GROUPS` states (their histograms' sums would take too much memory at once).
        """
        if not states:
            return True
        if len(states) > BinaryClassState.MAX_GROUPS:
            return False
        head = states[0].head
        labels, logits, weights = head._array_inputs(labels, logits, features)
        unweighted = head._array_unweighted_loss(labels, logits, features)
        # Logits, labels and weights are all [D0..DN, 1]: one value per example, flattened.
        groups = Groups.of(codes, len(states), _np.batch_size(logits))
        x = logits.reshape(-1)
        y = labels.reshape(-1)
        w = flat_weights(weights, logits.shape)
        u = unweighted.reshape(-1)
        p = _np.sigmoid32(x)
        predicted = x > 0  # class id 1: argmax([0, x]); NaN → 0
        class_ids = predicted.astype(np.float32)
        positive = y != 0
        # Each per-group sum is a pass over the batch: every sum is taken once and shared.
        n_rows = groups.sum()
        # Labels all 0 or 1 (label != 0 iff label == 1) let several sums come from one pass.
        hard = np.count_nonzero(y == 1) == np.count_nonzero(positive)
        # The histogram's calibration totals are Σw, Σw·label and Σw·p over the scored rows.
        cal = Histogram.update_groups([st.histogram for st in states], groups, positive, p, w,
                                      None if hard else y.astype(np.float64))
        if np.isnan(p).any():  # NaN scores are outside the histogram: sum directly
            cal = np.stack([groups.sum(w), groups.sum(y * w), groups.sum(p * w)])
        w_sum, wy_sum, wp_sum = cal
        wu_sum = groups.sum(u * w)
        LossSum.add_groups([st.loss_sum for st in states], wu_sum, n_rows)
        WeightedMean.add_groups([st.average_loss for st in states], wu_sum, w_sum)
        WeightedMean.add_groups([st.prediction_mean for st in states], wp_sum, w_sum)
        WeightedMean.add_groups([st.label_mean for st in states], wy_sum, w_sum)
        KerasAUC.update_groups([st.auc for st in states], groups, positive, p, w)
        # Both confusion matrices from one pass: Σw per (class id, number of thresholds below p,
        # label != 0). The class id is `class_ids > 0.5` (a Confusion at 0.5 on the class ids).
        order, above = Confusion.ranks(head.thresholds, p)
        n_t = len(head.thresholds) + 1
        key = predicted * (2 * n_t)
        key += above * 2
        key += positive
        joint = groups.cells(key, 4 * n_t, w).reshape(groups.n, 2, n_t, 2)
        by_threshold = joint.sum(axis=1)
        Confusion.add_groups([st.class_confusion for st in states], joint.sum(axis=2))
        Confusion.add_groups([st.threshold_confusion for st in states], by_threshold)
        # Keras accuracies count label == prediction; with labels all 0 or 1 that is a cell of the
        # matrices above, otherwise one pass each.
        if hard:
            correct = joint[:, 1, :, 1].sum(axis=1) + joint[:, 0, :, 0].sum(axis=1)
        else:
            correct = groups.sum((y == class_ids) * w)
        WeightedMean.add_groups([st.accuracy for st in states], correct, w_sum)
        for i, t in enumerate(head.thresholds):
            # Keras BinaryAccuracy: match per element, mean over the (length-1) last axis, weighted.
            if hard:
                rank = int(np.flatnonzero(order == i)[0])  # predicted positive iff above > rank
                correct = (by_threshold[:, rank + 1:, 1].sum(axis=1)
                           + by_threshold[:, :rank + 1, 0].sum(axis=1))
            else:
                correct = groups.sum((y == (p > np.float32(t)).astype(np.float32)) * w)
            WeightedMean.add_groups([st.threshold_accuracy[i] for st in states], correct, w_sum)
        add_counts_groups(states, n_rows, w_sum)
        return True

    def result(self) -> dict[str, float]:
        K = MetricKeys
        name = self.head.name
        lm = self.label_mean
        baseline = div_no_nan(max(lm.total, lm.count - lm.total), lm.count)
        out = {
            K.LOSS_MEAN: self.average_loss.result(),
            K.ACCURACY: self.accuracy.result(),
            K.PRECISION: float(self.class_confusion.precision()[0]),
            K.RECALL: float(self.class_confusion.recall()[0]),
            K.PREDICTION_MEAN: self.prediction_mean.result(),
            K.LABEL_MEAN: lm.result(),
            K.ACCURACY_BASELINE: baseline,
            K.AUC: self.auc.roc(),
            K.AUC_PR: self.auc.pr(),
        }
        precision = self.threshold_confusion.precision()
        recall = self.threshold_confusion.recall()
        for i, t in enumerate(self.head.thresholds):
            out[threshold_key(K.ACCURACY_AT_THRESHOLD, t)] = self.threshold_accuracy[i].result()
            out[threshold_key(K.PRECISION_AT_THRESHOLD, t)] = float(precision[i])
            out[threshold_key(K.RECALL_AT_THRESHOLD, t)] = float(recall[i])
        return {summary_key(k, name): float(v) for k, v in out.items()}

    def loss(self) -> float:
        return self.loss_sum.value(self.head.loss_reduction)

    def bounds(self) -> dict[str, tuple[float, float]]:
        return {summary_key(MetricKeys.AUC, self.head.name): self.histogram.auc_bounds()}

    def plots(self) -> dict[str, np.ndarray]:
        """Confusion rows (the AUC's 200 thresholds and, exactly, the head's thresholds) and the
        calibration histogram, sub_key ''."""
        return concat_plots([confusion_plot('', self.auc, self.threshold_confusion),
                             calibration_plot('', self.histogram)])


class RegressionState(HeadState):
    """Mergeable metrics of a `RegressionHead` (and its GLM variants): average_loss,
    prediction/mean, label/mean and the loss sum."""

    _components = ('loss_sum', 'average_loss', 'prediction_mean', 'label_mean')

    def __init__(self, head: Any) -> None:
        super().__init__(signature=(type(head).__name__, head.name, head.logits_dimension,
                                    head.loss_reduction))
        self.head = head
        self.loss_sum = LossSum()
        self.average_loss = WeightedMean()
        self.prediction_mean = WeightedMean()
        self.label_mean = WeightedMean()

    def update(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
               ) -> 'RegressionState':
        """Adds one batch (validated exactly as the head's loss; errors leave self unchanged)."""
        if RegressionState.update_groups([self], None, labels, logits, features):
            return self
        processed, logits, weights = self.head._array_inputs(labels, logits, features)
        unweighted = self.head._array_unweighted_loss(processed, logits, features)
        predictions = self.head._array_link(logits)
        # label/mean reads the labels as given (tf.estimator does not reshape them for it).
        raw = np.asarray(labels, dtype=np.float32).astype(np.float64)
        label_mean = WeightedMean().update(raw, weights)
        self.loss_sum.update(unweighted * weights)
        self.average_loss.update(unweighted, weights)
        self.prediction_mean.update(predictions, weights)
        self.label_mean.merge(label_mean)
        self._add_counts(_np.batch_size(logits), row_weight_sum(weights, logits))
        return self

    @staticmethod
    def update_groups(states: Sequence['RegressionState'], codes: np.ndarray | None,
                      labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                      ) -> bool:
        """Adds row i to `states[codes[i]]` in one pass (see `BinaryClassState.update_groups`).
        Returns False, changing nothing, unless the labels as given, the loss and the predictions
        hold one value per logit and the weights one per example (then `update` takes Keras'
        general path, which broadcasts them)."""
        if not states:
            return True
        head = states[0].head
        processed, lg, weights = head._array_inputs(labels, logits, features)
        raw = np.asarray(labels, dtype=np.float32)
        if raw.size != lg.size or np.ndim(weights) not in (0, lg.ndim) or (
                np.ndim(weights) and np.shape(weights)[-1] != 1):
            return False
        unweighted = head._array_unweighted_loss(processed, lg, features)
        predictions = np.asarray(head._array_link(lg))
        if unweighted.size != lg.size or predictions.size != lg.size:
            return False  # e.g. an inverse_link_fn of another shape
        rows = Groups.of(codes, len(states), _np.batch_size(lg))
        # Every metric is a Keras mean over the (example, logit) elements, weights broadcast.
        elements = rows.repeat(lg.shape[-1]) if lg.shape[-1] != 1 else rows
        w = flat_weights(weights, lg.shape)
        # All sums first: nothing changes unless every one of them could be taken.
        w_sum = elements.sum(w)
        wu_sum = elements.sum(np.asarray(unweighted, dtype=np.float64).reshape(-1) * w)
        wp_sum = elements.sum(predictions.reshape(-1).astype(np.float64) * w)
        wy_sum = elements.sum(raw.reshape(-1).astype(np.float64) * w)
        row_w_sum = rows.sum(flat_weights(weights, lg.shape[:-1] + (1,)))
        LossSum.add_groups([st.loss_sum for st in states], wu_sum, elements.sum())
        WeightedMean.add_groups([st.average_loss for st in states], wu_sum, w_sum)
        WeightedMean.add_groups([st.prediction_mean for st in states], wp_sum, w_sum)
        WeightedMean.add_groups([st.label_mean for st in states], wy_sum, w_sum)
        add_counts_groups(states, rows.sum(), row_w_sum)
        return True

    def result(self) -> dict[str, float]:
        K = MetricKeys
        out = {K.LOSS_MEAN: self.average_loss.result(),
               K.PREDICTION_MEAN: self.prediction_mean.result(),
               K.LABEL_MEAN: self.label_mean.result()}
        return {summary_key(k, self.head.name): float(v) for k, v in out.items()}

    def loss(self) -> float:
        return self.loss_sum.value(self.head.loss_reduction)
