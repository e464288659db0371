"""Confidence intervals from the sums a mergeable state keeps: pure formulas, plus `CISums`, the
one extra component an interval-carrying state holds.

Estimators (docs/intervals.md gives their guarantees and the weighting approximations):

* `normal_quantile(level)` — z with P(|Z| <= z) = level for a standard normal Z.
* `delong_auc(pos, neg, w2_pos, w2_neg, z)` — ROC AUC (ties ½) and DeLong's (1988) variance, from
  the positive / negative weight of each tie group (histogram entries, in increasing score order)
  and the Σw² of all positives / all negatives. Weights: every structural component is a weighted
  mean, and the sample sizes m, n of DeLong's formula are Kish's effective sizes
  (Σw)² / Σw² — exact DeLong for unit weights.
* `wilson(p, n_eff, z)` — Wilson's (1927) score interval of a proportion p on an effective sample
  size n_eff = (Σw)² / Σw² (the denominator's weights).
* `mean_interval(sw, swx, sw2, sw2x, sw2x2, z, per_row)` — a weighted mean m = Σw·x / Σw with
  the delta-method (linearization) variance Σw²·(x − m)² / (Σw)², times n_eff / (n_eff − 1) (the
  usual n / (n − 1) for unit weights); rows of several values are the units (cluster-robust).

Every function returns an `Estimate(lower, upper, standard_error)` or None when the interval is
undefined (no weight, one effective example, a non-finite sum): never an exception, never a NaN.
Never imports TensorFlow.
"""
from __future__ import annotations

import math
import statistics
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ['Estimate', 'normal_quantile', 'student_t_quantile', 'effective_size', 'wilson', 'mean_interval',
           'delong_auc', 'CISums']


class Estimate(NamedTuple):
    """A two-sided interval and the standard error it was built from (None: not defined)."""
    lower: float
    upper: float
    standard_error: float | None


def normal_quantile(level: float) -> float:
    """z such that a standard normal lies in [−z, z] with probability `level` (0 < level < 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError('confidence level must be in (0, 1); got {!r}'.format(level))
    return statistics.NormalDist().inv_cdf(0.5 + level / 2.0)


def student_t_quantile(level: float, df: float) -> float:
    """t such that Student's t with `df` degrees of freedom lies in [−t, t] with probability
    `level`: the Cornish–Fisher expansion in 1/df around the normal quantile (five terms; within
    1e-3 of the exact quantile for df >= 10 at levels up to 0.99, df >= 5 up to 0.95)."""
    z = normal_quantile(level)
    g1 = (z ** 3 + z) / 4.0
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96.0
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384.0
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160.0
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


def effective_size(sw: float, sw2: float) -> float:
    """Kish's effective sample size (Σw)² / Σw² (0 without weight)."""
    return sw * sw / sw2 if sw2 > 0 else 0.0


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def wilson(p: float, n_eff: float, z: float) -> Estimate | None:
    """Wilson's score interval of a proportion `p` observed on `n_eff` (effective) trials; its
    standard error is the binomial one, sqrt(p(1 − p) / n_eff). None when n_eff is 0 or p is not a
    finite proportion."""
    p, n_eff = float(p), float(n_eff)
    if not _finite(p, n_eff) or n_eff <= 0 or not -1e-12 <= p <= 1 + 1e-12:
        return None
    p = min(max(p, 0.0), 1.0)
    z2n = z * z / n_eff
    center = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n_eff + z2n / (4.0 * n_eff))
    return Estimate(max(0.0, center - half), min(1.0, center + half),
                    math.sqrt(p * (1.0 - p) / n_eff))


def mean_interval(sw: float, swx: float, sw2: float, sw2x: float, sw2x2: float, z: float,
                  per_row: int = 1) -> Estimate | None:
    """m ± z·se for the weighted mean m = swx / sw of values in rows of `per_row` values sharing
    the row's weight w (sw = per_row·Σw): the rows are the independent units, with
    S = the row's sum of values, sw2 = Σw², sw2x = Σw²·S, sw2x2 = Σw²·S². Delta method:
    se² = n_eff / (n_eff − 1) · Σw²(S − per_row·m)² / sw², with n_eff = (Σw)² / Σw² over rows and
    Σw²(S − d·m)² = sw2x2 − 2d·m·sw2x + d²·m²·sw2. None when n_eff <= 1 (no spread is
    measurable) or a sum is not finite."""
    sw, swx, sw2, sw2x, sw2x2 = (float(v) for v in (sw, swx, sw2, sw2x, sw2x2))
    if not _finite(sw, swx, sw2, sw2x, sw2x2) or sw <= 0:
        return None
    n_eff = effective_size(sw / per_row, sw2)
    if n_eff <= 1.0 + 1e-9:
        return None
    m = swx / sw
    dm = per_row * m
    ss = max(sw2x2 - 2.0 * dm * sw2x + dm * dm * sw2, 0.0)
    se = math.sqrt(ss / (sw * sw) * n_eff / (n_eff - 1.0))
    if not _finite(se):
        return None
    return Estimate(m - z * se, m + z * se, se)


def delong_auc(pos: np.ndarray, neg: np.ndarray, w2_pos: float, w2_neg: float, z: float
               ) -> tuple[float, Estimate | None]:
    """(AUC, its interval) from per-tie-group positive / negative weights (increasing score).

    AUC = Σ_b pos_b·V10_b / P with V10_b = (N_below_b + ½·neg_b) / N; V01_b = (P_above_b +
    ½·pos_b) / P. S10 = Σ_b pos_b·(V10_b − AUC)² / P, S01 likewise over negatives;
    Var = S10 / (m − 1) + S01 / (n − 1) with m = P² / w2_pos, n = N² / w2_neg (Kish). The interval
    is AUC ± z·sqrt(Var) clipped to [0, 1]. (NaN, None) without positive or negative weight;
    (AUC, None) when m or n is at most 1."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    wp, wn = float(pos.sum()), float(neg.sum())
    if not _finite(wp, wn, w2_pos, w2_neg) or wp <= 0 or wn <= 0:
        return float('nan'), None
    below = np.cumsum(neg) - neg
    above = wp - np.cumsum(pos)
    v10 = (below + 0.5 * neg) / wn
    v01 = (above + 0.5 * pos) / wp
    auc = float(np.dot(pos, v10) / wp)
    m, n = effective_size(wp, w2_pos), effective_size(wn, w2_neg)
    if m <= 1.0 + 1e-9 or n <= 1.0 + 1e-9:
        return auc, None
    s10 = float(np.dot(pos, (v10 - auc) ** 2) / wp)
    s01 = float(np.dot(neg, (v01 - auc) ** 2) / wn)
    se = math.sqrt(max(s10 / (m - 1.0) + s01 / (n - 1.0), 0.0))
    if not _finite(se):
        return auc, None
    return auc, Estimate(max(0.0, auc - z * se), min(1.0, auc + z * se), se)


class CISums:
    """The extra sums of an interval-carrying state: named float64 vectors, added per group and
    merged by addition (so exact under any split up to float64 rounding). `fields` maps a name to
    its length; `v` holds them all in one array."""

    def __init__(self, fields: Sequence[tuple[str, int]]) -> None:
        self.fields = tuple((str(k), int(n)) for k, n in fields)
        self.v = np.zeros(sum(n for _, n in self.fields))

    def _slice(self, name: str) -> slice:
        at = 0
        for k, n in self.fields:
            if k == name:
                return slice(at, at + n)
            at += n
        raise KeyError(name)

    def get(self, name: str) -> np.ndarray:
        """The vector `name` (a view)."""
        return self.v[self._slice(name)]

    def scalar(self, name: str) -> float:
        return float(self.v[self._slice(name)][0])

    @staticmethod
    def add_groups(sums: Sequence['CISums'], name: str, values: np.ndarray) -> None:
        """Adds values[g] (shape [groups] or [groups, len]) to field `name` of sums[g]."""
        if not sums:
            return
        s = sums[0]._slice(name)
        values = np.asarray(values, dtype=np.float64).reshape(len(sums), -1)
        for st, row in zip(sums, values):
            st.v[s] += row

    def merge(self, other: 'CISums') -> 'CISums':
        if self.fields != other.fields:
            raise ValueError('Cannot merge interval sums of different layouts.')
        self.v += other.v
        return self

    def __repr__(self) -> str:
        return 'CISums({})'.format(dict(self.fields))
