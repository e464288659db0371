"""Paired states: the uncertainty of a difference between two models scored on the same rows.

Both models see the same rows, so their metrics are correlated and the difference's variance is
far smaller than the sum of the two variances. Two fixed-size float64 states, mergeable by
elementwise addition (associative and commutative; exact under any split up to rounding):

* `PairedRatios` — metrics that are ratios of weighted sums, R = Σ n_i / Σ d_i (means: d_i = w_i;
  accuracy: n_i = w_i·1[correct]; recall: d_i = w_i·1[positive]; precision: d_i = w_i·1[predicted
  positive]). Per metric it keeps Σ z_i and Σ z_i z_iᵀ of the per-row vector
  z_i = (n_i of the candidate, d_i of the candidate, n_i of the baseline, d_i of the baseline).
  The delta method (linearisation of the ratios; rows are the independent units, weights fixed)
  gives the influence of row i on R_c − R_b as ψ_i = gᵀ z_i with
  g = (1/D_c, −R_c/D_c, −1/D_b, R_b/D_b), and Var(R_c − R_b) ≈ Σ ψ_i² = gᵀ (Σ z zᵀ) g. The same
  sums give each model's own variance (g with the other model's half set to 0). For a mean this is
  the variance of the weighted mean of the per-row differences.
* `PairedAUC` — DeLong's paired covariance of two ROC AUCs. Each model's logits are put in `BINS`
  fixed bins of width 0.25 on [−8, 8] (the outer bins take the tails); rows in one bin are ties
  (counted 1/2). The structural components are V10(a) = (W_N below bin a + ½ W_N in a) / W_N for a
  positive in bin a and V01(a) = (W_P above a + ½ W_P in a) / W_P for a negative. With weights,
  the influence of a positive row i is w_i·(V10(a_i) − A)/W_P (of a negative j:
  w_j·(V01(a_j) − A)/W_N), so
  Var(A_c − A_b) = Σ_pos w²(s_c(a) − s_b(b))²/W_P² + Σ_neg w²(t_c(a) − t_b(b))²/W_N², with s, t the
  centred components of each model at its bin. The state keeps per class Σw per bin of each model
  and Σw² per (candidate bin, baseline bin): 2·(2·64 + 64²) float64 (66 kB; a state of at most
  256 rows holds the rows instead, 32 bytes each). Unit weights give
  DeLong's estimator with 1/m, 1/n in place of 1/(m−1), 1/(n−1).

A variance is NaN where it is undefined (a denominator of 0, one class only).
"""
from __future__ import annotations

import math
import statistics

import numpy as np

__all__ = ['PairedRatios', 'PairedAUC', 'normal_quantile', 'interval', 'group_spans', 'BINS']

BINS = 64
_LOW, _HIGH = -8.0, 8.0


def normal_quantile(level: float) -> float:
    """z with P(|Z| ≤ z) = level for a standard normal Z (two-sided)."""
    return statistics.NormalDist().inv_cdf(0.5 + level / 2.0)


def interval(value: float, variance: float, level: float
             ) -> tuple[float | None, float | None, float | None]:
    """(lower, upper, standard error) of a normal interval around `value`; Nones when the
    variance is undefined (NaN) or the value is not finite."""
    if not (math.isfinite(value) and math.isfinite(variance)):
        return None, None, None
    se = math.sqrt(max(variance, 0.0))
    half = normal_quantile(level) * se
    return value - half, value + half, se


def group_spans(codes: np.ndarray | None, n: int, rows: int
                ) -> tuple[np.ndarray | None, list[tuple[int, int, int]]]:
    """Rows in group order: (the order, None for codes None: every row in group 0) and
    (group, start, stop) per group with rows, positions in that order; codes < 0 or >= n belong
    to no group. One stable sort."""
    if codes is None:
        return None, [(0, 0, rows)] if rows else []
    codes = np.asarray(codes)
    keep = np.flatnonzero((codes >= 0) & (codes < n))
    order = keep[np.argsort(codes[keep], kind='stable')]
    ordered = codes[order]
    bounds = np.flatnonzero(np.diff(ordered)) + 1
    starts = np.r_[0, bounds]
    stops = np.r_[bounds, order.size]
    return order, [(int(ordered[a]), int(a), int(b)) for a, b in zip(starts, stops) if b > a]


class PairedRatios:
    """Σ z and Σ z zᵀ per ratio metric (see the module docstring): float64 [k, 4] and [k, 4, 4]."""

    def __init__(self, k: int) -> None:
        self.first = np.zeros((k, 4))
        self.second = np.zeros((k, 4, 4))

    @staticmethod
    def add_spans(states: list['PairedRatios'], spans: list[tuple[int, int, int]],
                  zt: np.ndarray) -> None:
        """Adds the per-row vectors zt [k, 4, rows] (metric, component, row; rows in group order,
        `group_spans`) to their states: per (group, start, stop) Σz and one batched matrix product
        [k, 4, rows] @ [k, rows, 4] over the span (a view: no copy)."""
        zt = np.asarray(zt, dtype=np.float64)
        for g, start, stop in spans:
            part = zt[:, :, start:stop]
            states[g].first += part.sum(axis=2)
            states[g].second += np.matmul(part, part.transpose(0, 2, 1))

    def merge(self, other: 'PairedRatios') -> 'PairedRatios':
        if self.first.shape != other.first.shape:
            raise ValueError('Cannot merge paired ratios of %d and %d metrics.'
                             % (self.first.shape[0], other.first.shape[0]))
        self.first += other.first
        self.second += other.second
        return self

    def variances(self, j: int) -> tuple[float, float, float]:
        """(Var(R_c − R_b), Var(R_c), Var(R_b)) of metric j; NaN where a denominator is 0."""
        n_c, d_c, n_b, d_b = self.first[j]
        if d_c == 0 or d_b == 0:
            return math.nan, math.nan, math.nan
        g_c = np.array([1.0 / d_c, -n_c / d_c / d_c, 0.0, 0.0])
        g_b = np.array([0.0, 0.0, 1.0 / d_b, -n_b / d_b / d_b])
        m = self.second[j]
        g = g_c - g_b
        return float(g @ m @ g), float(g_c @ m @ g_c), float(g_b @ m @ g_b)


def bins_of(logits: np.ndarray) -> np.ndarray:
    """Each logit's bin in [0, BINS): width (_HIGH − _LOW)/BINS, tails in the outer bins, NaN in
    bin 0."""
    x = np.nan_to_num(np.asarray(logits, dtype=np.float64), nan=_LOW)
    b = np.floor((x - _LOW) * (BINS / (_HIGH - _LOW)))
    return np.clip(b, 0, BINS - 1).astype(np.intp)


def _auc_arrays(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dense arrays (Σw per class and candidate bin, per class and baseline bin; Σw² per class
    and bin pair) of rows (class, candidate bin, baseline bin, weight) [n, 4]."""
    cls, a, b = (rows[:, i].astype(np.intp) for i in range(3))
    w = rows[:, 3]
    base = cls * BINS
    out = (np.bincount(base + a, w, 2 * BINS).reshape(2, BINS),
           np.bincount(base + b, w, 2 * BINS).reshape(2, BINS),
           np.bincount((base + a) * BINS + b, w * w, 2 * BINS * BINS).reshape(2, BINS, BINS))
    # (bincount of no rows gives integers)
    return tuple(x.astype(np.float64, copy=False) for x in out)


class PairedAUC:
    """DeLong's paired state for two ROC AUCs (see the module docstring).

    Small at first: up to `SMALL_ROWS` rows are held as (class, candidate bin, baseline bin,
    weight) and the dense arrays (66 kB) are built when there are more, so that thousands of
    small slices stay small (in memory and across the shuffle). Answers, merges and the named
    arrays of `heads.state.state_arrays` (`__getstate__`) are the dense state's either way.
    """

    SMALL_ROWS = 256

    def __init__(self) -> None:
        self._rows: np.ndarray | None = np.zeros((0, 4))
        self.weights_c = self.weights_b = self.joint = None

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._rows is not None:
            return _auc_arrays(self._rows)
        return self.weights_c, self.weights_b, self.joint

    def _densify(self) -> None:
        if self._rows is not None:
            self.weights_c, self.weights_b, self.joint = _auc_arrays(self._rows)
            self._rows = None

    def _add_rows(self, rows: np.ndarray) -> None:
        if self._rows is not None and len(self._rows) + len(rows) <= self.SMALL_ROWS:
            self._rows = np.concatenate([self._rows, rows])
            return
        self._densify()
        wc, wb, joint = _auc_arrays(rows)
        self.weights_c += wc
        self.weights_b += wb
        self.joint += joint

    @staticmethod
    def add_spans(states: list['PairedAUC'], spans: list[tuple[int, int, int]],
                  positive: np.ndarray, logits_c: np.ndarray, logits_b: np.ndarray,
                  w: np.ndarray) -> None:
        """Adds rows in group order (`group_spans`: (group, start, stop)) of class `positive`,
        both models' logits and weight w to their states."""
        rows = np.stack([np.asarray(positive, np.float64), bins_of(logits_c),
                         bins_of(logits_b), np.asarray(w, np.float64)], axis=1)
        for g, start, stop in spans:
            states[g]._add_rows(rows[start:stop])

    def merge(self, other: 'PairedAUC') -> 'PairedAUC':
        if other._rows is not None:
            self._add_rows(other._rows)
            return self
        self._densify()
        self.weights_c += other.weights_c
        self.weights_b += other.weights_b
        self.joint += other.joint
        return self

    def __getstate__(self) -> dict:
        wc, wb, joint = self._arrays()
        return {'weights_c': wc, 'weights_b': wb, 'joint': joint}

    def __setstate__(self, state: dict) -> None:
        self._rows = None
        self.weights_c = np.asarray(state['weights_c'], np.float64)
        self.weights_b = np.asarray(state['weights_b'], np.float64)
        self.joint = np.asarray(state['joint'], np.float64)

    def __reduce__(self) -> tuple:
        # Pickles small while small (a pre-combined state crosses the shuffle so).
        if self._rows is not None:
            return (_small_auc, (self._rows.copy(),))
        return (_dense_auc, (self.__getstate__(),))

    @staticmethod
    def _components(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Centred structural components of one model per bin: (positives', negatives', AUC)."""
        neg, pos = weights[0], weights[1]
        w_n, w_p = neg.sum(), pos.sum()
        below = np.cumsum(neg) - neg
        above = pos.sum() - np.cumsum(pos)
        v10 = (below + 0.5 * neg) / w_n
        v01 = (above + 0.5 * pos) / w_p
        auc = float(pos @ v10 / w_p)
        return v10 - auc, v01 - auc, auc

    def variances(self) -> tuple[float, float, float]:
        """(Var(A_c − A_b), Var(A_c), Var(A_b)) by DeLong on the bins; NaN with one class only."""
        weights_c, weights_b, joint = self._arrays()
        w_n, w_p = weights_c[0].sum(), weights_c[1].sum()
        if not (w_n > 0 and w_p > 0):
            return math.nan, math.nan, math.nan
        s_c, t_c, _ = self._components(weights_c)
        s_b, t_b, _ = self._components(weights_b)
        pos, neg = joint[1], joint[0]
        diff = (np.sum(pos * (s_c[:, None] - s_b[None, :]) ** 2) / w_p ** 2
                + np.sum(neg * (t_c[:, None] - t_b[None, :]) ** 2) / w_n ** 2)
        var_c = (pos.sum(axis=1) @ s_c ** 2) / w_p ** 2 + (neg.sum(axis=1) @ t_c ** 2) / w_n ** 2
        var_b = (pos.sum(axis=0) @ s_b ** 2) / w_p ** 2 + (neg.sum(axis=0) @ t_b ** 2) / w_n ** 2
        return float(diff), float(var_c), float(var_b)


def _small_auc(rows: np.ndarray) -> PairedAUC:
    state = PairedAUC()
    state._rows = rows
    return state


def _dense_auc(arrays: dict) -> PairedAUC:
    state = PairedAUC.__new__(PairedAUC)
    state.__setstate__(arrays)
    return state
