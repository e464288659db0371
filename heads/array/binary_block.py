"""`BinaryClassBlock`: the states of many keys (slice values) of one `BinaryClassHead`, columnar.

Slicing an evaluation by a column of 10^5–10^6 values must cost about what a few values cost;
one `BinaryClassState` object per key makes every step (update, pickle, merge, read) a Python
loop over keys. A block holds key k as index k of a few arrays and vectorises every operation
over keys:

* `_sums` [keys, columns] float64: the scalar sums of a state's components — examples, Σw,
  Σw·loss, Σw·label, Σw·p, Σw of correct class ids, Σw of positives / negatives (all rows and
  NaN-scored ones), Σ|w| of negative weights, the joint confusion cells of `confusion_cells`
  (class id × thresholds below p × label != 0) and Σw of correct predictions at each threshold;
* `auc`, `histogram`, `calibration` (`SparseCells`): Keras' 200 AUC buckets, the 8,194-entry
  `Histogram` and its calibration buckets, as (key, bucket) → sums for the pairs holding data.

Rows are validated and bucketed by the same functions as `BinaryClassState` (float32 sigmoid and
bucket assignment, float64 sums), and results are computed by the same formulas over a leading
key axis (`binary_metrics`, `Confusion.from_cells`, `roc_between` / `pr_between`,
`auc_bounds_rows`), so key k answers as a state updated with key k's rows, up to float64
rounding. No interval, bootstrap or paired sums: blocks serve heads without them. Never imports
TensorFlow.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from heads.array.binary import (BinaryClassFace, BinaryClassState, binary_metrics,
                                confusion_cells, correct_at)
from heads.array.numerics import sigmoid32
from heads.keys import MetricKeys, summary_key
from heads.metrics import Confusion, Groups, Histogram, KerasAUC
from heads.metrics.common import cumulative_from_top
from heads.metrics.histogram import auc_bounds_rows, calibration_buckets
from heads.metrics.keras_auc import curve_confusion, keras_buckets, pr_between, roc_between
from heads.metrics.means import reduce_loss
from heads.metrics.plots import curve_plots
from heads.metrics.sparse_cells import SparseCells, pack_nonzero, part_ranks, unpack_nonzero

__all__ = ['BinaryClassBlock']

# Columns of `_sums` before the confusion cells.
EXAMPLES, WEIGHT, WU, WY, WP, CORRECT, POS, NEG, NAN_POS, NAN_NEG, NEG_WEIGHT = range(11)
_SCALARS = 11
# Elements of the temporaries of one step of results() / bounds(): cache-sized (512 kB each).
_STEP = 1 << 16


class BinaryClassBlock:
    """The states of n_keys keys of one BinaryClassHead, columnar: key k is index k of every
    array. Empty keys (no rows) answer as an empty `BinaryClassState`."""

    def __init__(self, face: BinaryClassFace) -> None:
        self.face = face
        self.n_keys = 0
        n_t = len(face.thresholds) + 1
        self._cells = slice(_SCALARS, _SCALARS + 4 * n_t)
        self._correct_at = slice(self._cells.stop, self._cells.stop + len(face.thresholds))
        self._sums = np.zeros((0, self._correct_at.stop))
        hist = Histogram()
        self.auc = SparseCells(KerasAUC().num_thresholds, 2)  # Σw of positives, negatives
        self.histogram = SparseCells(hist.size, 2)             # Σw of positives, negatives
        self.calibration = SparseCells(hist.n_calibration, 3)  # Σw, Σw·label, Σw·p

    # -- storage ------------------------------------------------------------------------------
    @property
    def sums(self) -> np.ndarray:
        """The scalar sums [n_keys, columns] (a view)."""
        return self._sums[:self.n_keys]

    def grow(self, n_keys: int) -> 'BinaryClassBlock':
        """At least n_keys keys (new keys empty: keys without rows). Capacity doubles, so growing
        key by key is amortised. Returns self."""
        if n_keys <= self.n_keys:
            return self
        if n_keys > self._sums.shape[0]:
            grown = np.zeros((max(n_keys, 2 * self._sums.shape[0]), self._sums.shape[1]))
            grown[:self.n_keys] = self.sums
            self._sums = grown
        self.n_keys = int(n_keys)
        return self

    def _tables(self) -> tuple[SparseCells, SparseCells, SparseCells]:
        return self.auc, self.histogram, self.calibration

    def __getstate__(self) -> dict[str, Any]:
        return {'face': self.face, 'sums': _pack_sums(self.sums), 'auc': self.auc,
                'histogram': self.histogram, 'calibration': self.calibration}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__init__(state['face'])
        self._sums = _unpack_sums(state['sums'])
        self.n_keys = self._sums.shape[0]
        self.auc, self.histogram, self.calibration = (state['auc'], state['histogram'],
                                                      state['calibration'])

    # -- adding ---------------------------------------------------------------------------------
    def add(self, codes: np.ndarray, n_keys: int, labels: Any, logits: Any,
            features: Mapping[str, Any] | None = None) -> 'BinaryClassBlock':
        """Row j of the batch into key codes[j] (int64; negative: the row is in no key); the block
        grows to at least n_keys keys. Validates exactly as `BinaryClassState.update` (same
        exceptions and messages), and the codes, before anything changes. Returns self."""
        rows = BinaryClassState._prepare(self.face, labels, logits, features)
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        if codes.size != rows['w'].size:
            raise ValueError('{} key codes for a batch of {} examples.'.format(
                codes.size, rows['w'].size))
        if codes.size and codes.max() >= n_keys:
            raise ValueError('key code {} out of range for {} keys'.format(codes.max(), n_keys))
        self.grow(n_keys)
        keep = codes >= 0
        if not keep.all():
            codes = codes[keep]
            rows = {name: v[keep] for name, v in rows.items()}
        if codes.size:
            p = sigmoid32(rows['x'])
            self._add_sums(codes, rows, p)
            self._add_buckets(codes, rows, p)
        return self

    def _add_sums(self, codes: np.ndarray, rows: Mapping[str, np.ndarray], p: np.ndarray
                  ) -> None:
        """Adds the rows' scalar sums to their keys' columns (one bincount per column, over the
        keys present when they are fewer than the block's)."""
        x, y, w = rows['x'], rows['y'], rows['w']
        keys = None
        if codes.size < self.n_keys:
            keys, codes = np.unique(codes, return_inverse=True)
        groups = Groups(codes, self.n_keys if keys is None else keys.size)
        positive = y != 0
        w_pos = np.where(positive, w, 0.0)
        w_neg = np.where(positive, 0.0, w)
        sums = np.zeros((groups.n, self._sums.shape[1]))
        sums[:, EXAMPLES] = groups.sum()
        for column, values in ((WEIGHT, w), (WU, rows['u'] * w), (WY, y * w), (WP, p * w),
                               (CORRECT, correct_at(y, x, 0.0) * w),  # class id 1 iff x > 0
                               (POS, w_pos), (NEG, w_neg)):
            sums[:, column] = groups.sum(values)
        nan = np.isnan(p)
        if nan.any():
            sums[:, NAN_POS] = groups.sum(np.where(nan, w_pos, 0.0))
            sums[:, NAN_NEG] = groups.sum(np.where(nan, w_neg, 0.0))
        if (w < 0).any():
            sums[:, NEG_WEIGHT] = groups.sum(np.where(w < 0, -w, 0.0))
        _, cell = confusion_cells(self.face.thresholds, x, p, positive)
        sums[:, self._cells] = groups.cells(cell, self._cells.stop - self._cells.start, w)
        for i, t in enumerate(self.face.thresholds):
            sums[:, self._correct_at.start + i] = groups.sum(correct_at(y, p, t) * w)
        if keys is None:
            self._sums[:self.n_keys] += sums
        else:
            self._sums[keys] += sums

    def _add_buckets(self, codes: np.ndarray, rows: Mapping[str, np.ndarray], p: np.ndarray
                     ) -> None:
        """Adds the rows to their keys' AUC buckets, histogram entries and calibration buckets
        (NaN scores: in the totals only, as the per-key components)."""
        y, w = rows['y'], rows['w']
        positive = y != 0
        by_label = np.empty((w.size, 2))
        np.multiply(w, positive, out=by_label[:, 0])
        np.subtract(w, by_label[:, 0], out=by_label[:, 1])
        bucket = keras_buckets(p, self.auc.width)
        scored = bucket < self.auc.width
        if not scored.all():
            codes, p, y, w, by_label, bucket = (
                v[scored] for v in (codes, p, y, w, by_label, bucket))
        self.auc.add(codes, bucket, by_label)
        hist = Histogram()
        self.histogram.add(codes, hist.bucket_index(p), by_label)
        p64 = p.astype(np.float64)
        cal = np.empty((w.size, 3))
        cal[:, 0] = w
        np.multiply(w, y, out=cal[:, 1])
        np.multiply(w, p64, out=cal[:, 2])
        self.calibration.add(codes, calibration_buckets(p64, hist.n_calibration), cal)

    # -- combining --------------------------------------------------------------------------------
    def merge(self, other: 'BinaryClassBlock', index: np.ndarray) -> 'BinaryClassBlock':
        """Adds other's key i into this block's key index[i] (len(index) == other.n_keys; the
        block grows to max(index) + 1 keys when needed). `other` is unchanged. Returns self."""
        if other.face.signature != self.face.signature:
            raise ValueError('Cannot merge a block of {!r} into a block of {!r}.'.format(
                other.face.signature, self.face.signature))
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size != other.n_keys:
            raise ValueError('{} indices for a block of {} keys.'.format(index.size,
                                                                         other.n_keys))
        if index.size and index.min() < 0:
            raise ValueError('negative key index {}'.format(index.min()))
        if index.size:
            theirs = other.sums  # before growing: `other` may be this block
            self.grow(int(index.max()) + 1)
            _scatter_add(self._sums, index, theirs)
            for table, their_table in zip(self._tables(), other._tables()):
                table.merge(their_table, index)
        return self

    def take(self, keys: np.ndarray) -> 'BinaryClassBlock':
        """A new block of these keys (new key i = old key keys[i])."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if keys.size and (keys.min() < 0 or keys.max() >= self.n_keys):
            raise IndexError('keys out of range for a block of {} keys'.format(self.n_keys))
        out = BinaryClassBlock(self.face)
        out._sums = self.sums[keys]
        out.n_keys = keys.size
        out.auc, out.histogram, out.calibration = (t.take(keys) for t in self._tables())
        return out

    def split(self, part_of_key: np.ndarray, n_parts: int) -> list['BinaryClassBlock']:
        """The blocks of `n_parts` parts of the keys (key k in part part_of_key[k]): part p is
        `take(np.flatnonzero(part_of_key == p))`, each table split in one pass
        (`SparseCells.split`)."""
        parts = np.asarray(part_of_key, dtype=np.int64).reshape(-1)
        if parts.size != self.n_keys:
            raise ValueError('{} parts for a block of {} keys.'.format(parts.size, self.n_keys))
        local = part_ranks(parts, n_parts)
        tables = [t.split(parts, n_parts, local) for t in self._tables()]
        out = []
        for p in range(n_parts):
            block = BinaryClassBlock(self.face)
            block._sums = self.sums[parts == p]
            block.n_keys = block._sums.shape[0]
            block.auc, block.histogram, block.calibration = (t[p] for t in tables)
            out.append(block)
        return out

    # -- reading ----------------------------------------------------------------------------------
    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(examples, Σ example weights) per key, float64 [n_keys] each."""
        return self.sums[:, EXAMPLES].copy(), self.sums[:, WEIGHT].copy()

    def losses(self) -> np.ndarray:
        """Each key's loss (`BinaryClassState.loss`), float64 [n_keys]."""
        s = self.sums
        return np.array(reduce_loss(s[:, WU], s[:, EXAMPLES], self.face.loss_reduction),
                        dtype=np.float64, ndmin=1)

    def results(self) -> dict[str, np.ndarray]:
        """{metric key: float64 [n_keys]}: each key's `BinaryClassState.result()`."""
        s = self.sums
        w = s[:, WEIGHT]
        means = {'loss': (s[:, WU], w), 'accuracy': (s[:, CORRECT], w),
                 'prediction': (s[:, WP], w), 'label': (s[:, WY], w)}
        for i in range(len(self.face.thresholds)):
            means[i] = (s[:, self._correct_at.start + i], w)
        cells = s[:, self._cells].reshape(self.n_keys, 2, len(self.face.thresholds) + 1, 2)
        cc = Confusion.from_cells([0.5], cells.sum(axis=2))
        tc = Confusion.from_cells(self.face.thresholds, cells.sum(axis=1))
        out = binary_metrics(self.face, means, (cc[0], cc[1], cc[3]), (tc[0], tc[1], tc[3]),
                             self._keras_auc())
        return {k: np.array(v, dtype=np.float64, ndmin=1) for k, v in out.items()}

    def _keras_auc(self) -> tuple[np.ndarray, np.ndarray]:
        """(ROC AUC, PR AUC) per key from the non-empty buckets: Keras' curve moves only at a
        bucket holding data (thresholds between two such buckets add 0 to either area), so the
        areas sum over the pairs (bucket b, b + 1) of each non-empty bucket b."""
        roc, pr = np.zeros(self.n_keys), np.zeros(self.n_keys)
        s = self.sums
        for keys, _, values in self.auc.padded_steps(self.n_keys, _STEP):
            tp = cumulative_from_top(values[..., 0], axis=1)
            fp = cumulative_from_top(values[..., 1], axis=1)
            # At the next threshold: the next entry's sums (the buckets between are empty), 0
            # past the last. Buckets run up to n − 2 (p ≤ 1): each has a next threshold.
            tp1, fp1 = _next_entry(tp), _next_entry(fp)
            wp, wn = s[keys, POS][:, np.newaxis], s[keys, NEG][:, np.newaxis]
            at, above = (tp, fp, wn - fp, wp - tp), (tp1, fp1, wn - fp1, wp - tp1)
            roc[keys] = roc_between(at, above)
            pr[keys] = pr_between(at, above)
        return roc, pr

    def bounds(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{'auc' key: (lower [n_keys], upper [n_keys])}: each key's `BinaryClassState.bounds()`
        (NaN where undefined)."""
        lower, upper = np.full(self.n_keys, np.nan), np.full(self.n_keys, np.nan)
        s = self.sums
        hist = Histogram()
        for keys, buckets, values in self.histogram.padded_steps(self.n_keys, _STEP):
            first = np.ones((keys.size, 1), dtype=bool)  # the NaN-scored weight: one value
            lower[keys], upper[keys] = auc_bounds_rows(
                np.concatenate([s[keys, NAN_POS][:, np.newaxis], values[..., 0]], axis=1),
                np.concatenate([s[keys, NAN_NEG][:, np.newaxis], values[..., 1]], axis=1),
                np.concatenate([first, hist.point_entries(buckets)], axis=1),
                s[keys, NEG_WEIGHT])
        return {summary_key(MetricKeys.AUC, self.face.name): (lower, upper)}

    def state(self, k: int) -> BinaryClassState:
        """A dense `BinaryClassState` equal in every component to one updated with key k's rows
        (its result(), loss(), counts(), bounds() and plots() are then that state's)."""
        if not 0 <= k < self.n_keys:
            raise IndexError('key {} out of range for a block of {} keys'.format(k, self.n_keys))
        s = self.sums[k]
        st = BinaryClassState(self.face)
        st.example_count, st.weighted_example_count = float(s[EXAMPLES]), float(s[WEIGHT])
        st.loss_sum.total, st.loss_sum.count = float(s[WU]), float(s[EXAMPLES])
        for mean, total in ((st.average_loss, s[WU]), (st.accuracy, s[CORRECT]),
                            (st.prediction_mean, s[WP]), (st.label_mean, s[WY])):
            mean.total, mean.count = float(total), float(s[WEIGHT])
        for i, mean in enumerate(st.threshold_accuracy):
            mean.total, mean.count = float(s[self._correct_at.start + i]), float(s[WEIGHT])
        cells = s[self._cells].reshape(1, 2, len(self.face.thresholds) + 1, 2)
        Confusion.add_groups([st.class_confusion], cells.sum(axis=2))
        Confusion.add_groups([st.threshold_confusion], cells.sum(axis=1))
        auc = self.auc.dense(k, k + 1)[0]
        st.auc.pos, st.auc.neg = auc[:, 0], auc[:, 1]
        st.auc.pos_total, st.auc.neg_total = float(s[POS]), float(s[NEG])
        h = st.histogram
        idx, values = self.histogram.key_entries(k)
        h._add_entries(idx, values[:, 0], values[:, 1])
        h.nan_pos, h.nan_neg = float(s[NAN_POS]), float(s[NAN_NEG])
        h.negative_weights = float(s[NEG_WEIGHT])
        cal = self.calibration.dense(k, k + 1)[0]
        h.cal_examples, h.cal_labels, h.cal_predictions = cal[:, 0], cal[:, 1], cal[:, 2]
        return st

    def plots_of(self, keys: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Each of these keys' `state(k).plots()`, bit for bit, the keys' curves computed
        together."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if keys.size and (keys.min() < 0 or keys.max() >= self.n_keys):
            raise IndexError('keys out of range for a block of {} keys'.format(self.n_keys))
        s = self.sums[keys]
        auc = self.auc.dense_of(keys)
        confusion = curve_confusion(auc[..., 0], auc[..., 1], s[:, POS], s[:, NEG])
        thresholds = Confusion(self.face.thresholds).thresholds
        n_t = len(self.face.thresholds) + 1
        cells = s[:, self._cells].reshape(keys.size, 2, n_t, 2).sum(axis=1)
        exact = (thresholds,) + tuple(0.0 + a for a in Confusion.from_cells(thresholds, cells))
        return curve_plots('', KerasAUC(self.auc.width).thresholds(), confusion, exact,
                           self.calibration.dense_of(keys))

    def __repr__(self) -> str:
        return 'BinaryClassBlock({!r}, n_keys={})'.format(self.face.signature, self.n_keys)


_SAME_AS_WEIGHT = 'same-as-weight'


def _pack_sums(sums: np.ndarray) -> tuple:
    """`pack_nonzero` of the sums, each value equal to its key's non-zero Σw (column WEIGHT:
    for a key of few rows, its negatives' or positives' weight, a confusion cell, the correct
    weight) kept as one bit instead: the same floats back, bit for bit (equal non-zero,
    non-NaN floats have the same bits)."""
    w = sums[:, WEIGHT:WEIGHT + 1]
    same = (sums == w) & (w != 0)
    same[:, WEIGHT] = False
    return (_SAME_AS_WEIGHT, np.packbits(same.reshape(-1)),
            pack_nonzero(np.where(same, 0.0, sums)))


def _unpack_sums(packed: tuple) -> np.ndarray:
    """The sums `_pack_sums` packed (or `pack_nonzero` packed)."""
    if len(packed) != 3 or not isinstance(packed[0], str) or packed[0] != _SAME_AS_WEIGHT:
        return unpack_nonzero(packed)
    _, bits, rest = packed
    sums = unpack_nonzero(rest)
    same = np.unpackbits(bits, count=sums.size).view(bool).reshape(sums.shape)
    np.copyto(sums, sums[:, WEIGHT:WEIGHT + 1], where=same)
    return sums


def _next_entry(a: np.ndarray) -> np.ndarray:
    """Each row shifted one entry left, 0 after the last."""
    out = np.zeros_like(a)
    out[:, :-1] = a[:, 1:]
    return out


def _scatter_add(target: np.ndarray, index: np.ndarray, rows: np.ndarray) -> None:
    """target[index[i]] += rows[i] for every i, repeated indices adding up (np.add.at's result,
    through one sort and a bincount per column: several times faster)."""
    span = int(index.max()) + 1 if index.size else 0
    if index.size and span <= index.size // 4:  # many rows onto few keys: bincounts, no sort
        for j in range(rows.shape[1]):
            target[:span, j] += np.bincount(index, weights=rows[:, j], minlength=span)
        return
    keys, inverse = np.unique(index, return_inverse=True)
    if keys.size == index.size:  # no index repeats: a plain fancy-index add
        target[index] += rows
        return
    summed = np.empty((keys.size, rows.shape[1]))
    for j in range(rows.shape[1]):
        summed[:, j] = np.bincount(inverse, weights=rows[:, j], minlength=keys.size)
    target[keys] += summed
