"""A high-resolution weighted histogram of probabilities (ours, not a Keras metric): an interval
that provably contains the exact ROC AUC, calibration sums, and curves at any threshold.

Scores are binned by table lookups on their float32 bit patterns (`heads.metrics.histogram_cuts`),
giving exactly the entries a float64 binary search over the cuts would. Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from heads.metrics.common import CHUNK, cumulative_from_top, flatten_inputs
from heads.metrics.groups import Groups
from heads.metrics.histogram_cuts import CELL_BITS, float32_cut_tables, histogram_cuts

__all__ = ['Histogram', 'auc_bounds_rows', 'calibration_buckets']


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
        return histogram_cuts(self.n_buckets, self.logit_range)

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
        t = float32_cut_tables(self.n_buckets, self.logit_range)
        p = np.ascontiguousarray(p, dtype=np.float32).reshape(-1)
        out = np.empty(p.size, dtype=np.intp)
        for start in range(0, p.size, CHUNK):
            part = p[start:start + CHUNK]
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
        cell = v >> CELL_BITS
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
        pos, s, w = flatten_inputs(positive, scores, weights)
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
        n, m = first.size, first.n_calibration
        pos, s, w, z, groups = Histogram._set_apart(hists, groups, positive, scores, weights,
                                                    labels)
        cell, cal, wz, wp = first._keys(groups, pos, s, w, z)
        cells = groups.cells_of_keys(cell, 2 * n, w).reshape(groups.n, n, 2)
        cal_examples, cal_labels, cal_predictions = Histogram._calibration_sums(
            groups, m, cal, w, wz, wp)
        for g, h in enumerate(hists):
            h._add_cells(cells[g])
            h.cal_examples += cal_examples[g]
            h.cal_labels += cal_labels[g]
            h.cal_predictions += cal_predictions[g]
        return np.stack([cal_examples.sum(axis=1), cal_labels.sum(axis=1),
                         cal_predictions.sum(axis=1)])

    @staticmethod
    def _set_apart(hists: Sequence['Histogram'], groups: Groups, pos: np.ndarray, s: np.ndarray,
                   w: np.ndarray, z: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, Groups]:
        """Counts each group's negative weights and NaN-scored rows into its histogram; returns
        (positive, scores, weights, labels, groups) of the rows left to bin."""
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
        return pos, s, w, z, groups

    def _keys(self, groups: Groups, pos: np.ndarray, s: np.ndarray, w: np.ndarray,
              z: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """Per-row bincount keys and products, in cache-sized steps: (entry key
        `group · 2n + 2 · entry + label`, calibration key, w · label or None, w · p). The
        calibration key is `group · 2m + 2 · bucket + label` without label values (`z` None: the
        0/1 flags are the labels), else `group · m + bucket`."""
        n, m = self.size, self.n_calibration
        t = float32_cut_tables(self.n_buckets, self.logit_range)
        cell = np.empty(s.size, dtype=np.intp)   # 2 · entry + label
        cal = np.empty(s.size, dtype=np.intp)    # calibration bucket (· 2 + label for 0/1 labels)
        wz = np.empty(s.size) if z is not None else None  # w · label
        wp = np.empty(s.size)                    # w · p
        for start in range(0, s.size, CHUNK):
            stop = min(start + CHUNK, s.size)
            p32 = np.clip(s[start:stop], np.float32(0.0), np.float32(1.0))
            group = groups.offsets(start, stop, 1)  # each score's group (0: a single group)
            entry = self._bucket_chunk(p32, t)
            entry *= 2
            entry += pos[start:stop]
            entry += group * (2 * n)
            cell[start:stop] = entry
            p = p32.astype(np.float64)
            c = calibration_buckets(p, m, out=cal[start:stop])
            if z is None:  # with 0/1 labels, Σw·label is the positives' part of Σw
                c *= 2
                c += pos[start:stop]
                c += group * (2 * m)
            else:
                c += group * m
                np.multiply(w[start:stop], z[start:stop], out=wz[start:stop])
            np.multiply(w[start:stop], p, out=wp[start:stop])
        return cell, cal, wz, wp

    @staticmethod
    def _calibration_sums(groups: Groups, m: int, cal: np.ndarray, w: np.ndarray,
                          wz: np.ndarray | None, wp: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Σw, Σw·label, Σw·p) per (group, calibration bucket) from the keys of `_keys`."""
        if wz is None:
            by_label = groups.cells_of_keys(cal, 2 * m, w).reshape(groups.n, m, 2)
            cal_examples = by_label.sum(axis=2)
            cal_labels = by_label[:, :, 1]
            np.right_shift(cal, 1, out=cal)  # the buckets alone (group offsets kept) for Σw·p
        else:
            cal_examples = groups.cells_of_keys(cal, m, w)
            cal_labels = groups.cells_of_keys(cal, m, wz)
        return cal_examples, cal_labels, groups.cells_of_keys(cal, m, wp)

    def _add_cells(self, cells: np.ndarray) -> None:
        """Adds Σw per (entry, label 0/1), shape [size, 2]."""
        if self._idx is None:  # dense storage: adding the empty entries' zeros changes nothing
            self._pos += cells[:, 1]
            self._neg += cells[:, 0]
        else:
            used = np.flatnonzero((cells[:, 1] != 0) | (cells[:, 0] != 0))
            self._add_entries(used, cells[used, 1], cells[used, 0])

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
        # The non-empty entries only (empty ones add nothing), after the NaN-scored weight.
        idx, pos, neg = self._sparse()
        point = np.ones(idx.size + 1, dtype=bool)  # NaN, exactly 0, exactly 1
        point[1:] = self.point_entries(idx)
        lower, upper = auc_bounds_rows(np.concatenate([[self.nan_pos], pos])[np.newaxis],
                                       np.concatenate([[self.nan_neg], neg])[np.newaxis],
                                       point[np.newaxis], np.array([self.negative_weights]))
        return (float(lower[0]), float(upper[0]))

    def point_entries(self, idx: np.ndarray) -> np.ndarray:
        """Whether each entry index holds a single score value (exactly 0 or exactly 1)."""
        return (idx == 0) | (idx == self.size - 1)

    def curve(self, thresholds: Sequence[float]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(tp, fp, tn, fn) at `thresholds` (predicted positive iff p > t), counting an entry as
        predicted positive iff its lowest possible score is above t: exact up to the examples of
        the entry containing t."""
        lower, _ = self.bucket_bounds()
        t = np.asarray(thresholds, dtype=np.float64)
        # `lower` never decreases: the entries above t are those from the first with lower > t on.
        first = np.searchsorted(lower, t, side='right')
        pos, neg = self.pos, self.neg
        tp = np.append(cumulative_from_top(pos), 0.0)[first]
        fp = np.append(cumulative_from_top(neg), 0.0)[first]
        wp = float(np.sum(pos)) + self.nan_pos
        wn = float(np.sum(neg)) + self.nan_neg
        return tp, fp, wn - fp, wp - tp

    def __repr__(self) -> str:
        return 'Histogram(n_buckets={}, logit_range={})'.format(self.n_buckets, self.logit_range)


def calibration_buckets(p: np.ndarray, m: int, out: np.ndarray | None = None) -> np.ndarray:
    """The calibration bucket (of m evenly spaced ones) of each float64 probability in [0, 1],
    intp: `floor(p·m)`, the top edge in the last bucket."""
    out = np.empty(p.shape, dtype=np.intp) if out is None else out
    out[...] = p * m
    return np.clip(out, 0, m - 1, out=out)


def auc_bounds_rows(pos: np.ndarray, neg: np.ndarray, point: np.ndarray,
                    negative_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`Histogram.auc_bounds` of each row of [rows, entries] arrays: Σw of positives and negatives
    per entry in increasing score order (the NaN-scored weight first; entries of zeros anywhere
    change nothing), `point` where an entry holds one score value (NaN, exactly 0 or 1), and the
    Σ|w| of negative weights per row. (NaN, NaN) rows where the bound is undefined."""
    wp, wn = np.sum(pos, axis=1), np.sum(neg, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each entry
    ordered = np.sum(pos * below, axis=1)
    same = pos * neg
    ties = 0.5 * np.sum(np.where(point, same, 0.0), axis=1)
    spread = np.sum(np.where(point, 0.0, same), axis=1)
    scale = wp * wn
    undefined = (negative_weights > 0) | (wp <= 0) | (wn <= 0)
    scale[undefined] = 1.0
    # A relative 1e-12 of slack absorbs float64 rounding of the sums: the bound stays a bound.
    lower = np.maximum(0.0, (ordered + ties) / scale - 1e-12)
    upper = np.minimum(1.0, (ordered + ties + spread) / scale + 1e-12)
    lower[undefined] = np.nan
    upper[undefined] = np.nan
    return lower, upper
