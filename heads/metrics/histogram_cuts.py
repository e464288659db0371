"""The bucket cuts of `Histogram` and the tables that bin a float32 score without a search.

`histogram_cuts` are the sigmoids of evenly spaced logits; `float32_cut_tables` give, from a
float32 score's bit pattern, exactly the entry a float64 binary search over the cuts would give.
Both are cached per (n_buckets, logit_range) and read-only. Never imports TensorFlow.
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ['histogram_cuts', 'float32_cut_tables', 'CELL_BITS']


@functools.lru_cache(maxsize=8)
def histogram_cuts(n_buckets: int, logit_range: float) -> np.ndarray:
    inner = np.linspace(-logit_range, logit_range, n_buckets - 1)
    cuts = 1.0 / (1.0 + np.exp(-inner))
    cuts.setflags(write=False)
    return cuts


# Bit patterns of non-negative float32 values order like the values, so a float32 score's entry
# can be read from a table indexed by its top bits (a "cell" of 2**CELL_BITS consecutive float32
# values). Scores of at least 0.5 are looked up by 1 − p, exact in float32 for such p, so that
# both halves keep float32's fine resolution near their end and a cell never holds two cuts.
CELL_BITS = 12
_FLOAT32_ONE_BITS = int(np.float32(1.0).view(np.int32))
_FLOAT32_HALF_BITS = int(np.float32(0.5).view(np.int32))
_NO_CUT = 2 ** 31 - 1  # above every float32 bit pattern in [0, 1]


def _cell_table(sorted_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(base, inner) per cell of [0, 0.5]: the number of patterns below the cell, and the one
    pattern inside it (_NO_CUT when none); base is −1 where the cell holds several."""
    starts = np.arange((_FLOAT32_HALF_BITS >> CELL_BITS) + 1, dtype=np.int64) << CELL_BITS
    below = np.searchsorted(sorted_bits, starts, side='left')
    upto = np.searchsorted(sorted_bits, starts + ((1 << CELL_BITS) - 1), side='right')
    inside = upto - below
    inner = np.full(starts.size, _NO_CUT, dtype=np.int64)
    one = inside == 1
    inner[one] = sorted_bits[below[one]]
    base = np.where(inside > 1, -1, below)
    return base, inner


@functools.lru_cache(maxsize=8)
def float32_cut_tables(n_buckets: int, logit_range: float) -> dict[str, np.ndarray]:
    """Tables giving, for a float32 p in [0, 1], the number of float64 cuts <= p exactly.

    For p < 0.5: `cut <= p` iff `ceil32(cut) <= p` (ceil32: the smallest float32 not below the
    cut), a count of `low` patterns <= bits(p). For p >= 0.5, with q = 1 − p (exact): `cut <= p`
    iff `q <= 1 − cut` iff `q <= floor32(1 − cut)`, so the count is the number of cuts minus the
    `high` patterns below bits(q) (1 − cut is exact in float64 for cut >= 0.5; smaller cuts give
    values above 0.5 >= q either way). Cells holding one pattern compare against it; cells holding
    several (only for unusually fine buckets) fall back to a binary search.
    """
    cuts = histogram_cuts(n_buckets, logit_range)
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
