"""The key table of a `pipeline.key_blocks.KeyBlock` held as numbers (`IntKeyTable`).

A slice spec of one integer column without windows or steps (the common high-cardinality case)
keys its block by the column's values: the table keeps them as one int64 array in index order
(`_ints[:_n_ints]`) and a direct-address array from value to index (`_slot[v - _lo]`, −1 when
absent, built when first needed), so looking keys up, merging, sharding and pickling the table
are numpy operations. Values spread too far apart for a direct-address array (e.g. ids of 10^12)
send the table back to tuples (`KeyBlock`'s dicts).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ['IntKeyTable', 'TableKey']

#: A key's place in its block's table: (slice values, window start, step).
TableKey = tuple[tuple[Any, ...], int | None, int | None]

_INT64 = (-(1 << 63), 1 << 63)


def _is_int_key(key: TableKey) -> bool:
    """Whether a table key is one int64 value without window and step (a table of numbers
    holds only such keys)."""
    values, window, step = key
    return (len(values) == 1 and type(values[0]) is int and _INT64[0] <= values[0] < _INT64[1]
            and window is None and step is None)


def _int_shard_numbers(values: np.ndarray) -> np.ndarray:
    """`shard_numbers` of keys ((v,), None, None), from their int64 values."""
    x = np.asarray(values, np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return x ^ (x >> np.uint64(29))


# A table of int keys keeps its direct-address array while it spans at most this many values, or
# _SLOTS_PER_KEY per key when more (int32 slots: 16 MB at the minimum); beyond, the table goes
# back to tuples and dicts (values spread too far apart: e.g. ids of 10^12).
_MIN_SLOTS = 1 << 22
_SLOTS_PER_KEY = 16


class IntKeyTable:
    """A mixin of `KeyBlock`: its table of numbers. The class holds the slots `_ints`,
    `_n_ints`, `_slot`, `_lo` (and `_keys`, `_index`, `_by_values`, the `keys` property of its
    table of tuples)."""

    __slots__ = ()

    def int_values(self) -> np.ndarray | None:
        """The keys' values (int64, in index order) of a table of numbers; None for tuples."""
        return None if self._ints is None else self._ints[:self._n_ints]

    def _to_tuples(self) -> None:
        """A table of numbers turned into tuples (same keys, same indices)."""
        if self._ints is None:
            return
        keys = self.keys
        self._ints, self._n_ints, self._slot = None, 0, None
        self._index = dict(zip(keys, range(len(keys))))
        self._by_values = {}

    def _set_ints(self, values: np.ndarray) -> None:
        """Makes `values` (distinct int64) the table of numbers of an empty block."""
        self._keys, self._index, self._by_values = [], {}, {}
        self._ints = np.ascontiguousarray(values, dtype=np.int64)
        self._n_ints = self._ints.size
        self._slot = None

    def _slot_range(self, lo: int, hi: int, n: int) -> bool:
        """Whether a direct-address array over values [lo, hi] is allowed for n keys."""
        return hi - lo + 1 <= max(_MIN_SLOTS, _SLOTS_PER_KEY * n)

    def _fit_slots(self, lo: int, hi: int, n: int) -> bool:
        """Makes `_slot` cover values [lo, hi] (with room to grow), indexing the table's keys;
        False (nothing changed) when that range is too wide for n keys."""
        slot = self._slot
        if slot is None and self._n_ints:  # the range covers the values held too
            held = self._ints[:self._n_ints]
            lo, hi = min(lo, int(held.min())), max(hi, int(held.max()))
        if slot is not None and lo >= self._lo and hi < self._lo + slot.size:
            return True
        if slot is not None:
            lo, hi = min(lo, self._lo), max(hi, self._lo + slot.size - 1)
        if not self._slot_range(lo, hi, n):
            return False
        room = (hi - lo + 1) // 2  # growing by half each time: amortised over many adds
        if slot is not None:
            new_lo = lo - room if lo < self._lo else lo
            new_hi = hi + room if hi >= self._lo + slot.size else hi
            if not self._slot_range(new_lo, new_hi, n):
                new_lo, new_hi = lo, hi
            lo, hi = new_lo, new_hi
        values = self._ints[:self._n_ints]
        out = np.full(hi - lo + 1, -1, np.int32 if n < (1 << 31) else np.int64)
        out[values - lo] = np.arange(values.size)
        self._slot, self._lo = out, lo
        return True

    def _int_indices(self, values: np.ndarray, distinct: bool = False) -> np.ndarray | None:
        """Each value's index in the table of numbers (an empty table becomes one), adding the
        values it does not hold yet in order of first appearance; None (nothing changed) when the
        table is of tuples or the values spread too far for a direct-address array. `distinct`:
        the caller knows no value repeats (a batch's keys, another table's), so none is looked
        for."""
        if self._ints is None:
            if self._keys:
                return None
            self._set_ints(np.empty(0, np.int64))
        values = np.asarray(values, dtype=np.int64)
        if not values.size:
            return np.empty(0, np.int64)
        lo, hi = int(values.min()), int(values.max())
        if not self._fit_slots(lo, hi, self._n_ints + values.size):
            if not self._n_ints:
                self._ints = None
            return None
        at = values - self._lo
        found = self._slot[at].astype(np.int64)
        missing = found < 0
        if missing.any():
            new = values[missing]
            if not distinct and np.unique(new).size != new.size:  # its first place counts
                _, first = np.unique(new, return_index=True)
                new = new[np.sort(first)]
            n, m = self._n_ints, new.size
            if n + m > self._ints.size:
                grown = np.empty(max(n + m, 2 * self._ints.size), np.int64)
                grown[:n] = self._ints[:n]
                self._ints = grown
            self._ints[n:n + m] = new
            self._n_ints = n + m
            self._slot[new - self._lo] = np.arange(n, n + m)
            found = self._slot[at].astype(np.int64)
        return found
