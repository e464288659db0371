"""Which key each row of a batch belongs to: slice codes, window starts, step values.

Owns the vectorised key codes of a batch:

* `slice_codes`: per slice spec, dictionary codes of the slice values (crosses by compacting
  combined codes; numbers unified whatever their Arrow type; -1 for a null value: the row is in
  no slice of that spec, as in TFMA).
* `window_starts`: the (row, window start) pairs of fixed or sliding event-time windows.
* `key_codes`: per slice spec, the keys holding rows and each (row, window) pair's code, crossed
  with window starts and step values.
* `group_rows`: the rows of each code, from one stable sort.

A key here is `(slice_columns, slice_values, window_start_us | None, step | None)`: the
`pipeline.elements.Key` without its head.
"""
from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from pipeline.config import EvalConfig
from pipeline.decode import batch_column, list_of_one

_INT64_LIMIT = 2.0 ** 63

#: (slice columns, slice values, window start, step): a `Key` without its head.
SliceKey = tuple[tuple[str, ...], tuple[Any, ...], int | None, int | None]


def _codes(values: np.ndarray | pa.Array) -> tuple[np.ndarray, list]:
    """Dense int64 codes per row (-1 for null) and the value of each code."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if not pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_encode()
        dictionary = arr.dictionary.to_pylist()
        indices = arr.indices
        if not indices.null_count:
            idx = indices.to_numpy().astype(np.int64)
            used = np.flatnonzero(np.bincount(idx, minlength=len(dictionary)))
            if used.size == len(dictionary):  # every entry in use: the indices are the codes
                return idx, dictionary
        else:
            idx = indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        # Dense codes for the dictionary entries in use, in dictionary order, by counting (linear
        # time; a np.unique here would sort every row of every batch).
        shifted = idx + 1  # null (-1) → 0
        used = np.flatnonzero(np.bincount(shifted, minlength=len(dictionary) + 1)[1:])
        remap = np.full(len(dictionary) + 1, -1, np.int64)
        remap[used + 1] = np.arange(used.size)
        return remap[shifted], [dictionary[u] for u in used]
    used, inverse = np.unique(values, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), used.tolist()


def _number_value(v: Any) -> Any:
    """A slice value with an integral float as an int (0.0 and -0.0 → 0, 3.0 → 3; within int64);
    any other value as it is."""
    if isinstance(v, float) and v.is_integer() and -_INT64_LIMIT <= v < _INT64_LIMIT:
        return int(v)
    return v


def _slice_value_codes(batch: pa.RecordBatch, col: str) -> tuple[np.ndarray, list]:
    """`_codes` of a slice column, numbers unified whatever their Arrow type: int64 0, int32 0 and
    float64 0.0 are the value 0, so a slice does not depend on how its rows' shards were typed.
    Only the (few) dictionary entries of a floating column are looked at; entries that become
    equal share a code."""
    arr = list_of_one(batch_column(batch, col))
    codes, values = _codes(arr)
    if not pa.types.is_floating(arr.type):
        return codes, values
    unified = [_number_value(v) for v in values]
    merged: dict[Any, int] = {}
    remap = np.array([merged.setdefault(v, len(merged)) for v in unified] + [-1], np.int64)
    if len(merged) == len(unified):
        return codes, unified
    return remap[codes], list(merged)  # code -1 (null) → remap[-1] = -1


def int_slice_codes(batch: pa.RecordBatch, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """`slice_codes` of a spec of one integer column (signed, or unsigned of at most 32 bits;
    not dictionary-encoded) with the values as an int64 array instead of a list of tuples: the
    same codes and the same values in the same order (value i of the array is the value of
    `slice_codes`' tuple i). None for a column of another type."""
    arr = list_of_one(batch_column(batch, column))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if not (pa.types.is_signed_integer(t) or t in (pa.uint8(), pa.uint16(), pa.uint32())):
        return None
    encoded = arr.dictionary_encode()  # every entry in use, in order of first appearance
    indices = encoded.indices
    if indices.null_count:
        codes = indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        codes = indices.to_numpy().astype(np.int64)
    values = encoded.dictionary.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, values


def slice_codes(batch: pa.RecordBatch, columns: tuple[str, ...]) -> tuple[np.ndarray, list[tuple]]:
    """Per row, a code into the returned list of value tuples; -1 where a slice value is null (the
    row then belongs to no slice of this spec, as in TFMA). Numbers are unified
    (`_slice_value_codes`)."""
    n = batch.num_rows
    if not columns:
        return np.zeros(n, np.int64), [()]
    codes, values = _slice_value_codes(batch, columns[0])
    combos = [(v,) for v in values]
    for col in columns[1:]:
        c2, v2 = _slice_value_codes(batch, col)
        null = (codes < 0) | (c2 < 0)
        combined = np.where(null, -1, codes * max(len(v2), 1) + c2)
        used, inverse = np.unique(combined, return_inverse=True)
        inverse = inverse.reshape(-1)
        offset = 1 if used.size and used[0] < 0 else 0
        codes = inverse - offset
        combos = [combos[u // max(len(v2), 1)] + (v2[u % max(len(v2), 1)],)
                  for u in used[offset:]]
    return codes.astype(np.int64), combos


def window_starts(micros: np.ndarray, size_us: int, period_us: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(row index, window start) pairs: every window [start, start + size) holding each row.

    Fixed windows are aligned to the epoch; sliding windows start at multiples of the period.
    """
    n = micros.shape[0]
    if period_us is None or period_us == size_us:
        return np.arange(n), np.floor_divide(micros, size_us) * size_us
    last = np.floor_divide(micros, period_us) * period_us
    rows, starts = [], []
    for j in range(-(-size_us // period_us)):
        start = last - j * period_us
        inside = start + size_us > micros
        rows.append(np.flatnonzero(inside))
        starts.append(start[inside])
    return np.concatenate(rows), np.concatenate(starts)


def group_rows(codes: np.ndarray) -> Iterator[tuple[int, np.ndarray | None]]:
    """(code, row indices) per distinct non-negative code, one stable argsort for all; None as the
    indices when every row has the same code (no copy needed)."""
    valid = codes >= 0
    if not valid.any():
        return
    if valid.all() and (codes == codes[0]).all():
        yield int(codes[0]), None
        return
    # A stable sort of 16-bit keys is numpy's radix sort (linear, ~4x faster than on int64): slice
    # specs rarely have more than a few thousand values per batch.
    small = codes.size and -1 <= codes.min() and codes.max() < np.iinfo(np.int16).max
    order = np.argsort(codes.astype(np.int16) if small else codes, kind='stable')
    ordered = codes[order]
    cuts = np.flatnonzero(np.diff(ordered)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [ordered.size]])
    for s, e in zip(starts, ends):
        if e > s and ordered[s] >= 0:
            yield int(ordered[s]), order[s:e]


# -------------------------------------------------------------------------------------------------
# Every key of a batch.
# -------------------------------------------------------------------------------------------------

class SpecKeys(Sequence):
    """The keys of one spec in a batch whose rows share one window start and step:
    `(columns, combos[i], window, step)` for code i, each built only when read (a block looks its
    keys up by `combos` alone: at 10^5–10^6 slice values a batch holds about as many keys as
    rows). A spec of one integer column may give its values as an int64 array instead (`ints`;
    combos[i] is then `(int(ints[i]),)`, built when first read)."""

    __slots__ = ('columns', '_combos', 'window', 'step', 'ints')

    def __init__(self, columns: tuple[str, ...], combos: list[tuple] | None,
                 window: int | None, step: int | None, ints: np.ndarray | None = None) -> None:
        if combos is None and ints is None:
            raise ValueError('SpecKeys needs combos or ints')
        self.columns, self._combos, self.window, self.step = columns, combos, window, step
        self.ints = ints

    @property
    def combos(self) -> list[tuple]:
        """The slice values of each code, as tuples."""
        if self._combos is None:
            self._combos = [(v,) for v in self.ints.tolist()]
        return self._combos

    def __len__(self) -> int:
        return self.ints.size if self._combos is None else len(self._combos)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if self._combos is None:  # one key: its tuple alone
            return (self.columns, (int(self.ints[i]),), self.window, self.step)
        return (self.columns, self._combos[i], self.window, self.step)

    def __iter__(self) -> Iterator[SliceKey]:
        columns, window, step = self.columns, self.window, self.step
        return ((columns, v, window, step) for v in self.combos)


class _Extra(NamedTuple):
    """The window and step part of the keys of a batch's (row, window) pairs."""
    base_rows: np.ndarray | None  # batch row of each pair; None: one pair per row, in order
    codes: np.ndarray             # per pair, an index into `values`
    values: list[tuple[int | None, int | None]]  # (window start, step), in that order


def _extra_codes(config: EvalConfig, n: int, micros: np.ndarray | None,
                 steps: np.ndarray | None) -> _Extra:
    """The (row, window) pairs of a batch of `n` rows and their (window, step) codes."""
    base_rows = None
    win: np.ndarray | None = None
    if config.window:
        size = int(round(config.window.size * 1e6))
        period = (int(round(config.window.period * 1e6))
                  if config.window.period is not None else None)
        rows, win = window_starts(micros, size, period)
        if not (rows.size == n and (rows == np.arange(n)).all()):
            base_rows = rows
    codes = np.zeros(n if base_rows is None else base_rows.size, np.int64)
    if win is None and steps is None:
        return _Extra(base_rows, codes, [(None, None)])
    parts = [win if win is not None else np.zeros_like(codes),
             (steps if base_rows is None else steps[base_rows]) if steps is not None
             else np.zeros_like(codes)]
    # Codes of (window, step) pairs in (window, step) order: two 1-D uniques and one of their
    # combined codes (np.unique over rows, axis=0, is ~20x slower).
    (wu, wi), (su, si) = (np.unique(x, return_inverse=True) for x in parts)
    used, inverse = np.unique(wi.reshape(-1) * su.size + si.reshape(-1), return_inverse=True)
    values = [(int(wu[u // su.size]) if win is not None else None,
               int(su[u % su.size]) if steps is not None else None) for u in used]
    return _Extra(base_rows, inverse.reshape(-1).astype(np.int64), values)


def _crossed(columns: tuple[str, ...], codes: np.ndarray, combos: list[tuple], extra: _Extra
             ) -> tuple[list[SliceKey], np.ndarray] | None:
    """A spec's slice codes (per pair) crossed with the (window, step) codes: the keys holding
    rows, in code order, and each pair's dense code; None when no pair has a key."""
    n_extra = len(extra.values)
    combined = np.where(codes < 0, -1, codes * n_extra + extra.codes)
    # Dense codes over the (slice value, window, step) combinations holding rows: by counting
    # (linear), unless the combinations far outnumber the rows.
    n_combined = len(combos) * n_extra
    if n_combined <= 4 * combined.size + 1024:
        present = np.bincount(combined + 1, minlength=n_combined + 1)[1:]
        used = np.flatnonzero(present)
        if used.size < n_combined:
            remap = np.full(n_combined + 1, -1, np.int64)
            remap[used + 1] = np.arange(used.size)
            combined = remap[combined + 1]
    else:
        used, inverse = np.unique(combined, return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int64)
        if used.size and used[0] < 0:
            used, inverse = used[1:], inverse - 1
        combined = inverse
    if not used.size:
        return None
    keys = [(columns, combos[code // n_extra]) + extra.values[code % n_extra] for code in used]
    return keys, combined


def key_codes(config: EvalConfig, batch: pa.RecordBatch, micros: np.ndarray | None,
              steps: np.ndarray | None, donor: tuple[str, ...] | None = None,
              unsliced: dict[tuple[str, ...], int] | None = None
              ) -> Iterator[tuple[list[SliceKey], np.ndarray, np.ndarray | None]]:
    """Per slice spec: (keys, codes, base_rows). Row j of the (row, window) pairs — batch row
    `base_rows[j]`, or row j when base_rows is None (one window or none per row) — belongs to
    `keys[codes[j]]` ((slice columns, slice values, window start, step)), or to no key when
    codes[j] < 0. Only keys holding rows are listed, in code order: a `SpecKeys` when every
    pair has the same window and step, else a list.

    With a `donor` spec, the Overall keys get only the rows where the donor's value is null
    (the rest of Overall is merged from the donor's states). `unsliced` (when given) counts per
    non-Overall spec the rows with a null slice value."""
    extra = _extra_codes(config, batch.num_rows, micros, steps)
    donor_split = _spec_codes(batch, donor) if donor is not None else None
    for columns in config.slices:
        if donor_split is not None and columns == donor:
            codes, combos, ints = donor_split
        else:
            codes, combos, ints = _spec_codes(batch, columns)
        if columns and unsliced is not None:
            outside = int(np.count_nonzero(codes < 0))
            if outside:
                unsliced[columns] = unsliced.get(columns, 0) + outside
        if not columns and donor_split is not None:
            codes = np.where(donor_split[0] < 0, 0, -1)
        if extra.base_rows is not None:
            codes = codes[extra.base_rows]
        n_values = len(combos) if combos is not None else ints.size
        if len(extra.values) == 1:
            # slice_codes are dense over the values present; only a derived Overall (rows with a
            # null donor value) may hold no row.
            if not n_values or (not columns and donor_split is not None
                                and not (codes >= 0).any()):
                continue
            yield SpecKeys(columns, combos, *extra.values[0], ints=ints), codes, extra.base_rows
            continue
        if combos is None:
            combos = [(v,) for v in ints.tolist()]
        crossed = _crossed(columns, codes, combos, extra)
        if crossed is not None:
            yield crossed[0], crossed[1], extra.base_rows


def _spec_codes(batch: pa.RecordBatch, columns: tuple[str, ...]
                ) -> tuple[np.ndarray, list[tuple] | None, np.ndarray | None]:
    """(codes, combos, ints): `slice_codes` of a spec, its values as `combos` or, for one integer
    column (`int_slice_codes`), as the int64 array `ints` (combos None)."""
    if len(columns) == 1:
        found = int_slice_codes(batch, columns[0])
        if found is not None:
            return found[0], None, found[1]
    codes, combos = slice_codes(batch, columns)
    return codes, combos, None
