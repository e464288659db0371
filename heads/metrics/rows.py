"""`RowBuffer`: the validated rows of a small state, kept as they are until they are many.

A head state of a slice with few rows holds those rows (a numpy record per example: the fields
its family's dense update reads — logits, labels, weight, unweighted loss) rather than its dense
components (histograms of thousands of buckets, 200 thresholds, ...). The rows of one batch for
many states are sorted by state once and stored in one read-only record array; each state keeps
(block, start, stop) references into it, so adding a batch's rows to 10^5 states is one sort and
10^5 list appends, not 10^5 numpy calls. Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ['RowBuffer', 'as_records', 'record_fields']

# References held before the short ones are copied into one array of their own (a state taking a
# few rows from many batches would otherwise keep every batch's block alive and pickle slowly).
# Only references of fewer than SHORT rows are copied, so no row is copied more than about
# SHORT / MAX_CHUNKS times however many merges a state takes.
MAX_CHUNKS = 32
SHORT = 256


def as_records(rows: Mapping[str, np.ndarray], index: np.ndarray | None = None) -> np.ndarray:
    """The per-example arrays `rows` (same first dimension) as one read-only record array,
    taking the entries `index` (all when None) in that order."""
    names = list(rows)
    first = rows[names[0]]
    n = first.shape[0] if index is None else index.size
    dtype = np.dtype([(k, rows[k].dtype, rows[k].shape[1:]) for k in names])
    out = np.empty(n, dtype=dtype)
    for k in names:
        out[k] = rows[k] if index is None else np.take(rows[k], index, axis=0)
    out.flags.writeable = False
    return out


def record_fields(records: np.ndarray) -> dict[str, np.ndarray]:
    """The fields of a record array as contiguous arrays (what a dense update reads)."""
    return {k: np.ascontiguousarray(records[k]) for k in records.dtype.names}


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    """Record arrays of one dtype concatenated (a copy per part: np.concatenate first works out a
    common record dtype, which costs more than the copy for short parts)."""
    out = np.empty(sum(p.shape[0] for p in parts), dtype=parts[0].dtype)
    at = 0
    for p in parts:
        out[at:at + p.shape[0]] = p
        at += p.shape[0]
    return out


_LAYOUTS: dict[np.dtype, tuple] = {}
_DTYPES: dict[tuple, np.dtype] = {}


def _layout(dtype: np.dtype) -> tuple:
    """A record dtype as a tuple of (name, type string, shape) fields (cached)."""
    out = _LAYOUTS.get(dtype)
    if out is None:
        out = _LAYOUTS[dtype] = tuple(
            (name, dtype.fields[name][0].base.str, dtype.fields[name][0].shape)
            for name in dtype.names)
    return out


def _dtype(layout: tuple) -> np.dtype:
    """The record dtype of a `_layout` (cached)."""
    out = _DTYPES.get(layout)
    if out is None:
        out = _DTYPES[layout] = np.dtype([(name, base, shape) for name, base, shape in layout])
    return out


class RowBuffer:
    """Rows held by a small state: references (block, start, stop) into read-only record arrays,
    `n` rows in all. Blocks are never written after they are made, so two buffers may share them
    (a merge copies references only). Pickles as one record array of its own rows."""

    __slots__ = ('n', '_chunks', '_short')

    def __init__(self) -> None:
        self.n = 0
        self._chunks: list[tuple[np.ndarray, int, int]] = []
        self._short = 0  # references of fewer than SHORT rows

    def append(self, block: np.ndarray, start: int, stop: int) -> None:
        """Adds rows [start, stop) of the read-only record array `block`."""
        self._chunks.append((block, start, stop))
        self.n += stop - start
        if stop - start < SHORT:
            self._short += 1
            if self._short > MAX_CHUNKS:
                self._compact()

    def extend(self, other: 'RowBuffer') -> None:
        """Adds the rows of `other` (left unchanged: its blocks are shared, never copied)."""
        self._chunks.extend(other._chunks)
        self.n += other.n
        self._short += other._short
        if self._short > MAX_CHUNKS:
            self._compact()

    def rows(self) -> np.ndarray | None:
        """Every row held, as one record array (a view when they are in one block); None when
        empty."""
        if not self._chunks:
            return None
        if len(self._chunks) == 1:
            block, start, stop = self._chunks[0]
            return block[start:stop]
        return _concat([b[s:e] for b, s, e in self._chunks])

    def _compact(self) -> None:
        """The short references' rows copied into one array of their own."""
        short = [c for c in self._chunks if c[2] - c[1] < SHORT]
        self._chunks = [c for c in self._chunks if c[2] - c[1] >= SHORT]
        rows = _concat([b[s:e] for b, s, e in short])
        rows.flags.writeable = False
        self._chunks.append((rows, 0, rows.shape[0]))
        self._short = 1 if rows.shape[0] < SHORT else 0

    def __getstate__(self) -> tuple:
        # The rows' bytes and their record layout as plain tuples (a record dtype pickles slowly):
        # a view of a shared block pickles (and deep-copies) its own rows only.
        rows = self.rows()
        if rows is None:
            return (None, b'')
        return (_layout(rows.dtype), rows.tobytes())

    def __setstate__(self, state: tuple) -> None:
        layout, data = state
        self.n, self._chunks, self._short = 0, [], 0
        if layout is None:
            return
        rows = np.frombuffer(data, dtype=_dtype(layout))  # read-only, as every block
        self.n = int(rows.shape[0])
        self._chunks = [(rows, 0, self.n)]
        self._short = 1 if self.n < SHORT else 0

    def __repr__(self) -> str:
        return 'RowBuffer(n={})'.format(self.n)
