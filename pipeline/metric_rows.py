"""`MetricRows`: one key's metric rows (metric, value, lower bound, upper bound), held compactly.

A run with 10^5–10^6 slices gathers every key's result in one place before writing. As Python
tuples a key's ~20 rows cost ~3 KB (a tuple, a float object per number, and a new string per
metric name); here they are one float64 array (bounds absent stored as NaN: a bound the table
holds is always finite) and one tuple of names shared by every key of the same head (interned
when read back from a pickle). Iterating gives back the same tuples, the same floats bit for bit.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

__all__ = ['MetricRows']

# One names tuple per distinct list of metric names (each head's), shared by every key.
_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(sys.intern(n) for n in names)
    return _NAMES.setdefault(names, names)


def _bound(b: float) -> float | None:
    return None if b != b else b  # NaN: no bound


class MetricRows(Sequence):
    """A read-only sequence of (metric, value, lower, upper) tuples; lower / upper None where
    there is no bound.

    The numbers are held as the bytes of a (rows, 3) float64 array (`_data`; `_values` reads
    them as the array): an array object would add ~110 bytes a key to the gather, and the bytes
    of many keys concatenate into one array at once (`pipeline.metrics_table`)."""

    __slots__ = ('_names', '_data')

    def __init__(self, rows: Iterable[tuple[str, float, float | None, float | None]]) -> None:
        rows = list(rows)
        self._names = _shared(r[0] for r in rows)
        values = np.empty((len(rows), 3), np.float64)
        for i, (_, value, lo, hi) in enumerate(rows):
            values[i] = (value, np.nan if lo is None else lo, np.nan if hi is None else hi)
        self._data = values.tobytes()

    @property
    def _values(self) -> np.ndarray:
        """The rows' numbers: value, lower, upper (NaN: no bound), one row per metric."""
        return np.frombuffer(self._data, np.float64).reshape(len(self._names), 3)

    @classmethod
    def many(cls, names: Sequence[str], values: np.ndarray) -> list['MetricRows']:
        """The rows of many keys with the same metric names: `values` [keys, rows, 3] float64 of
        (value, lower, upper), NaN where a bound is absent (names shared once for all)."""
        shared = _shared(names)
        values = np.ascontiguousarray(values, dtype=np.float64)
        out = []
        for data in map(bytes, values):  # each key's rows as its own bytes
            rows = cls.__new__(cls)
            rows._names, rows._data = shared, data
            out.append(rows)
        return out

    @classmethod
    def _restore(cls, names: tuple[str, ...], data: bytes) -> 'MetricRows':
        out = cls.__new__(cls)
        out._names = _shared(names)
        out._data = data
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (MetricRows._restore, (self._names, self._data))

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        value, lo, hi = self._values[i].tolist()
        return (self._names[i], value, _bound(lo), _bound(hi))

    def __iter__(self) -> Iterator[tuple[str, float, float | None, float | None]]:
        for name, (value, lo, hi) in zip(self._names, self._values.tolist()):
            yield name, value, _bound(lo), _bound(hi)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (MetricRows, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return 'MetricRows({!r})'.format(list(self))
