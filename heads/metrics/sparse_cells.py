"""`SparseCells`: Σ of a few values per (key, bucket) for many keys, holding only the pairs that
received data — the bucketed components (Keras' AUC buckets, the histogram's entries, calibration
buckets) of a block of many keys (`heads.array.binary_block`).

A pair is the int64 code `key · width + bucket`. The consolidated table is sorted and unique by
code; rows added since are kept as pending parts and aggregated when the table is read (or when
they outnumber it), so adding a batch costs no sort and memory stays proportional to the pairs in
use, never keys × width. Every operation is vectorised over keys. Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

__all__ = ['SparseCells', 'part_ranks', 'ragged_positions', 'pack_nonzero', 'unpack_nonzero',
           'pack_steps', 'unpack_steps']

# Pending rows always allowed before a consolidation (beyond the table's own size).
_MIN_PENDING = 1 << 20
# `key_bounds` of at least this many keys counts every key's entries (else binary searches).
_MANY_KEYS = 256


def ragged_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions `starts[i] + j` for j < lengths[i], concatenated in order of i."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if not total:
        return np.empty(0, dtype=np.int64)
    # Each run's first position jumps from the end of the previous run; the rest step by 1.
    steps = np.ones(total, dtype=np.int64)
    firsts = np.cumsum(lengths) - lengths
    nonempty = lengths > 0
    begin = np.asarray(starts, dtype=np.int64)[nonempty]
    prev_end = np.concatenate([[0], (begin + lengths[nonempty] - 1)[:-1]])
    steps[firsts[nonempty]] = begin - prev_end
    return np.cumsum(steps)


class SparseCells:
    """Σ of `n_values` float64 values per (key, bucket), bucket in [0, width): sorted unique int64
    codes `key · width + bucket` and their [entries, n_values] sums."""

    def __init__(self, width: int, n_values: int) -> None:
        self.width = int(width)
        self.n_values = int(n_values)
        self._codes = np.empty(0, dtype=np.int64)
        self._values = np.empty((0, self.n_values))
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending = 0
        # (codes, start, stop per key) of the consolidated table `codes` (`key_bounds`).
        self._bounds: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        # Compact: the codes as their (mostly small) increments, the sums without their zeros.
        self.consolidate()
        return {'width': self.width, 'n_values': self.n_values,
                'steps': pack_steps(self._codes), 'values': pack_nonzero(self._values)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state['width'], state['n_values'])
        self._codes = unpack_steps(state['steps'])
        self._values = unpack_nonzero(state['values'])

    def add(self, keys: np.ndarray, buckets: np.ndarray, values: np.ndarray) -> None:
        """Adds values[i] (a row of n_values) to the pair (keys[i], buckets[i])."""
        self._add_summed(np.asarray(keys, dtype=np.int64) * self.width + buckets, values)

    def _add_summed(self, codes: np.ndarray, values: np.ndarray) -> None:
        """Adds values[i] to the pair of code codes[i]: summed per pair first when the codes span
        few pairs (no sort)."""
        span = int(codes.max()) + 1 if codes.size else 0
        if codes.size and span <= 2 * codes.size:
            # Few keys: the rows summed per pair by bincounts over the pairs (no sort), a part
            # sorted and unique already, as small as the pairs in use.
            sums = np.stack([np.bincount(codes, weights=values[:, j], minlength=span)
                             for j in range(self.n_values)], axis=1)
            codes = np.flatnonzero(np.logical_or.reduce(
                [sums[:, j] != 0 for j in range(self.n_values)]))
            values = np.take(sums, codes, axis=0)
        self._add_codes(codes, values)

    def _add_codes(self, codes: np.ndarray, values: np.ndarray) -> None:
        if not codes.size:
            return
        self._parts.append((codes, np.asarray(values, dtype=np.float64)))
        self._pending += codes.size
        if self._pending > max(self._codes.size, _MIN_PENDING):
            self.consolidate()

    def _all_parts(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The consolidated table and the pending parts (what the sums are), without changing
        anything."""
        return [(self._codes, self._values)] + self._parts

    def consolidate(self) -> 'SparseCells':
        """Aggregates the pending rows into the sorted table, dropping pairs whose sums are 0."""
        if not self._parts:
            return self
        codes, values = _aggregate(np.concatenate([c for c, _ in self._parts]),
                                   np.concatenate([v for _, v in self._parts]))
        if self._codes.size:  # two sorted runs: a stable sort merges them in linear time
            codes = np.concatenate([self._codes, codes])
            order = np.argsort(codes, kind='stable')
            codes, values = _reduce_sorted(codes[order], np.take(
                np.concatenate([self._values, values]), order, axis=0))
        keep = np.logical_or.reduce([values[:, j] != 0 for j in range(self.n_values)])
        if not keep.all():
            codes, values = codes[keep], values[keep]
        self._codes, self._values = codes, values
        self._parts, self._pending = [], 0
        self._bounds = None  # (the old table's: not kept alive)
        return self

    def merge(self, other: 'SparseCells', index: np.ndarray) -> None:
        """Adds other's key i into this table's key index[i] (`other` unchanged)."""
        index = np.asarray(index, dtype=np.int64)
        for codes, values in other._all_parts():
            if codes.size:
                key = codes // other.width
                self._add_summed(index[key] * self.width + (codes - key * other.width), values)

    def take(self, keys: np.ndarray) -> 'SparseCells':
        """A new table of these keys: new key i holds old key keys[i]'s pairs."""
        self.consolidate()
        keys = np.asarray(keys, dtype=np.int64)
        starts, stops = self.key_bounds(keys)
        lengths = stops - starts
        at = ragged_positions(starts, lengths)
        out = SparseCells(self.width, self.n_values)
        new_keys = np.repeat(np.arange(keys.size, dtype=np.int64), lengths)
        out._codes = new_keys * self.width + self._codes[at] % self.width
        out._values = np.take(self._values, at, axis=0)
        return out

    def split(self, part_of_key: np.ndarray, n_parts: int, local: np.ndarray | None = None
              ) -> list['SparseCells']:
        """The tables of `n_parts` parts of the keys (key k in part part_of_key[k], an int in
        [0, n_parts)): part p is `take(np.flatnonzero(part_of_key == p))`, all parts from one
        pass over the table (a stable partition of its entries by part) instead of a search of
        the table per part. `local`: `part_ranks(part_of_key, n_parts)`, when known."""
        self.consolidate()
        parts = np.asarray(part_of_key, dtype=np.int64)
        if local is None:
            local = part_ranks(parts, n_parts)
        key = self._codes // self.width
        entry_part = parts[key]
        codes = local[key] * self.width + (self._codes - key * self.width)
        order = _small_stable_order(entry_part, n_parts)
        codes = codes[order]
        values = np.take(self._values, order, axis=0)
        ends = np.cumsum(np.bincount(entry_part, minlength=n_parts)).tolist()
        out = []
        for p in range(n_parts):
            table = SparseCells(self.width, self.n_values)
            a, b = (ends[p - 1] if p else 0), ends[p]
            table._codes, table._values = codes[a:b], values[a:b]
            out.append(table)
        return out

    def key_bounds(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, stop) of each key's entries in the consolidated table: many keys (a block's
        reading) from every key's bounds, counted once per table (one bincount of the entries'
        keys and its cumsum, kept while the table is unchanged); a few by binary search."""
        self.consolidate()
        keys = np.asarray(keys, dtype=np.int64)
        bounds = self._bounds
        if bounds is None or bounds[0] is not self._codes:
            bounds = None
            if keys.size >= _MANY_KEYS:
                per_key = np.bincount(self._codes // self.width)
                stops = np.cumsum(per_key)
                bounds = self._bounds = (self._codes, stops - per_key, stops)
        if bounds is not None and keys.size and keys.min() >= 0:
            _, starts, stops = bounds
            if keys.max() >= starts.size:  # keys past the last key with entries: empty
                end = self._codes.size
                starts, stops = np.append(starts, end), np.append(stops, end)
                keys = np.minimum(keys, starts.size - 1)
            return starts[keys], stops[keys]
        return (np.searchsorted(self._codes, keys * self.width),
                np.searchsorted(self._codes, (keys + 1) * self.width))

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, buckets, values) of the consolidated table, sorted by (key, bucket)."""
        self.consolidate()
        keys = self._codes // self.width
        return keys, self._codes - keys * self.width, self._values

    def key_entries(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(buckets, values) of key k's entries, sorted by bucket (a search, not a pass over
        the table: reading a few keys of a large block costs what those keys hold)."""
        (start,), (stop,) = self.key_bounds(np.array([k]))
        return self._codes[start:stop] - k * self.width, self._values[start:stop]

    def dense(self, k0: int, k1: int) -> np.ndarray:
        """The sums of keys [k0, k1) as a dense [k1 − k0, width, n_values] array."""
        self.consolidate()
        a, b = np.searchsorted(self._codes, [k0 * self.width, k1 * self.width])
        out = np.zeros((k1 - k0, self.width, self.n_values))
        codes = self._codes[a:b]
        key = codes // self.width
        out[key - k0, codes - key * self.width] = self._values[a:b]
        return out

    def dense_of(self, keys: np.ndarray) -> np.ndarray:
        """The sums of these keys as a dense [len(keys), width, n_values] array."""
        starts, stops = self.key_bounds(keys)
        lengths = stops - starts
        at = ragged_positions(starts, lengths)
        out = np.zeros((np.size(keys), self.width, self.n_values))
        out[np.repeat(np.arange(np.size(keys)), lengths), self._codes[at] % self.width] = (
            self._values[at])
        return out

    def padded(self, keys: np.ndarray, length: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each key's entries (at most `length`) left-aligned in rows: (buckets [keys, length],
        values [keys, length, n_values], valid [keys, length]); padding has bucket −1 and zero
        values."""
        starts, stops = self.key_bounds(keys)
        j = np.arange(length)
        valid = j < (stops - starts)[:, np.newaxis]
        at = np.where(valid, starts[:, np.newaxis] + j, 0)
        if not self._codes.size:
            at[:] = 0
            return (np.full(at.shape, -1, np.int64), np.zeros(at.shape + (self.n_values,)),
                    valid)
        buckets = np.where(valid, self._codes[at] % self.width, -1)
        values = np.take(self._values, at, axis=0)  # (np.take: much faster than [] on rows)
        values[~valid] = 0.0
        return buckets, values, valid

    def padded_steps(self, n_keys: int, step: int
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(keys, buckets, values) of every key of [0, n_keys), each key's entries left-aligned in
        rows of `padded`: keys grouped by entries rounded up to a power of two (so padding at
        most doubles the entries; a key without entries has one padding entry), at most ~`step`
        entries a step."""
        starts, stops = self.key_bounds(np.arange(n_keys))
        length = np.maximum(stops - starts, 1)
        size_class = np.ceil(np.log2(length)).astype(np.int64)
        order = np.argsort(size_class, kind='stable')
        bounds = np.searchsorted(size_class[order], np.arange(size_class.max(initial=0) + 2))
        for c in range(bounds.size - 1):
            keys = order[bounds[c]:bounds[c + 1]]
            width = 1 << c
            per_step = max(1, step // width)
            for a in range(0, keys.size, per_step):
                part = keys[a:a + per_step]
                buckets, values, _ = self.padded(part, width)
                yield part, buckets, values

    @property
    def nbytes(self) -> int:
        """Bytes held by the table and its pending parts."""
        return sum(c.nbytes + v.nbytes for c, v in self._all_parts())


def _aggregate(codes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsorted (code, values) rows summed per code, in their order: sorted unique codes and
    their sums."""
    codes, order = stable_order(codes)
    return _reduce_sorted(codes, np.take(values, order, axis=0))


def stable_order(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the codes sorted, the stable order that sorts them) of non-negative int64 codes: a sort of
    each code with its position in the low bits when both fit in 63 bits (numpy's sort of int64
    numbers is several times faster than its argsort, stable or not), else a stable argsort."""
    n = codes.size
    shift = max(int(n).bit_length(), 1)
    if n and 0 <= int(codes.min()) and int(codes.max()) < (1 << (63 - shift)):
        packed = np.left_shift(codes, shift)
        packed |= np.arange(n, dtype=np.int64)
        packed.sort()
        order = packed & ((1 << shift) - 1)
        return np.right_shift(packed, shift), order
    order = np.argsort(codes, kind='stable')
    return codes[order], order


def part_ranks(part_of_key: np.ndarray, n_parts: int) -> np.ndarray:
    """Each key's index in its part (`SparseCells.split`): its rank among the keys of its part,
    in key order."""
    parts = np.asarray(part_of_key, dtype=np.int64)
    per_part = np.bincount(parts, minlength=n_parts)
    local = np.empty(parts.size, dtype=np.int64)
    local[_small_stable_order(parts, n_parts)] = (
        np.arange(parts.size) - np.repeat(np.cumsum(per_part) - per_part, per_part))
    return local


def _small_stable_order(labels: np.ndarray, n: int) -> np.ndarray:
    """The stable order sorting labels in [0, n): as 16-bit numbers when they fit (numpy's
    radix sort, linear)."""
    return np.argsort(labels.astype(np.int16) if n <= np.iinfo(np.int16).max else labels,
                      kind='stable')


def _reduce_sorted(codes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by code summed per code (in their order)."""
    if not codes.size:
        return codes, values
    first = np.empty(codes.size, dtype=bool)
    first[0] = True
    np.not_equal(codes[1:], codes[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    if starts.size == codes.size:
        return codes, values
    return codes[starts], np.add.reduceat(values, starts, axis=0)


def pack_nonzero(values: np.ndarray) -> tuple:
    """A float64 array as (shape, bit mask of its non-zero elements, bit mask of those that
    float32 holds exactly, those as float32, the others as float64): compact for pickles of sums
    that are mostly 0 (a key's few rows fill few cells) or whole (counts, unit weights). Works on
    the flat array, selecting through the masks' positions (`np.flatnonzero`; numpy's boolean
    indexing is several times slower on masks without long runs, as a table's alternating
    positive and negative sums)."""
    flat = values.reshape(-1)
    mask = flat != 0  # NaN is kept
    nonzero = flat.take(np.flatnonzero(mask))
    narrow = nonzero.astype(np.float32)
    exact = narrow == nonzero  # NaN is not: kept as float64
    if exact.all():
        return (values.shape, np.packbits(mask), np.packbits(exact), narrow, nonzero[:0])
    return (values.shape, np.packbits(mask), np.packbits(exact),
            narrow.take(np.flatnonzero(exact)), nonzero.take(np.flatnonzero(~exact)))


def unpack_nonzero(packed: tuple) -> np.ndarray:
    """The array `pack_nonzero` packed."""
    shape, bits, exact_bits, narrow, wide = packed
    size = int(np.prod(shape))
    mask = np.unpackbits(bits, count=size).view(bool)
    if wide.size:
        exact = np.unpackbits(exact_bits, count=narrow.size + wide.size).view(bool)
        nonzero = np.empty(exact.size)
        nonzero[np.flatnonzero(exact)] = narrow
        nonzero[np.flatnonzero(~exact)] = wide
    else:
        nonzero = narrow
    out = np.zeros(size)
    out[np.flatnonzero(mask)] = nonzero
    return out.reshape(shape)


_ESCAPE = 0xFFFF


def pack_steps(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted int64 codes as (their increments as uint16, _ESCAPE where an increment does not
    fit; those increments as int64, in order): 2 bytes a code when keys are numbered densely
    (a key's buckets are near each other and the next key's follow)."""
    steps = np.diff(codes, prepend=0)
    big = (steps >= _ESCAPE) | (steps < 0)
    return np.where(big, _ESCAPE, steps).astype(np.uint16), steps[big]


def unpack_steps(packed: Any) -> np.ndarray:
    """The codes `pack_steps` packed (or a plain array of increments)."""
    if isinstance(packed, np.ndarray):
        return np.cumsum(packed, dtype=np.int64)
    small, big = packed
    steps = small.astype(np.int64)
    steps[small == _ESCAPE] = big
    return np.cumsum(steps, dtype=np.int64)
