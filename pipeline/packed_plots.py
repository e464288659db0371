"""One key's plot columns packed into one compressed buffer (`PackedPlots`), so that the results of
many slices cross the pipeline's gather and wait for the writers in little memory.

A head state's `plots()` is a dict of equally long columns (a few hundred confusion and
calibration rows per slice, whatever the slice's size): ~37 KB per key as numpy arrays, which at
100,000 slices is gigabytes. Packed, the columns' bytes are concatenated and lz4-compressed
(a small slice's curves are mostly repeated values: ~4 KB; zstd packs ~1.6x smaller but costs
~40 µs more a key); text columns (`sub_key`, `curve`)
become codes into their distinct values. Unpacking gives back the same arrays bit for bit.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow as pa

CODEC = 'lz4'


# The column names, specs and text values of a key's plots are the same for most keys (every
# small slice of one head has the same rows): one shared copy instead of ~3 KB of tuples a key.
_SHARED: dict[Any, Any] = {}


def _shared(value: tuple) -> tuple:
    """`value`, or an equal tuple made before (hashable values only)."""
    if len(_SHARED) > 100_000:  # many distinct layouts: stop collecting
        _SHARED.clear()
    return _SHARED.setdefault(value, value)


def _shared_labels(labels: dict[str, tuple]) -> dict[str, tuple]:
    """A labels dict (column → distinct values), shared with equal ones made before (read only)."""
    try:
        key = ('labels',) + tuple(sorted(labels.items()))
    except TypeError:  # values that do not sort (None beside str): keep this one
        return labels
    return _SHARED.setdefault(key, labels)


def _codes(a: np.ndarray) -> tuple[tuple, np.ndarray]:
    """An object array's distinct values in order of first appearance and the int32 codes into
    them (same shape). Plot columns hold long runs of one value (a curve's name, a sub_key), so
    only the first value of each run is looked up in Python."""
    flat = a.ravel()
    if flat.size == 0:
        return (), np.zeros(a.shape, np.int32)
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    index: dict[Any, int] = {}
    run_codes = [index.setdefault(v, len(index)) for v in flat[starts].tolist()]
    lengths = np.diff(np.append(starts, flat.size))
    codes = np.repeat(np.asarray(run_codes, np.int32), lengths)
    return tuple(index), codes.reshape(a.shape)


class PackedPlots(Mapping):
    """A read-only mapping column name → np.ndarray, held compressed.

    `arrays()` unpacks every column at once (use it when reading several); item access unpacks
    the whole buffer each time.
    """
    __slots__ = ('_names', '_specs', '_labels', '_size', '_data', 'rows')

    def __init__(self, plots: Mapping[str, Any]):
        names, specs, labels, parts = [], [], {}, []
        rows = 0
        for name, values in plots.items():
            a = np.asarray(values)
            rows = len(a)
            if a.dtype == object:  # any hashable values (str, None): codes into them
                labels[name], a = _codes(a)
            a = np.ascontiguousarray(a)
            names.append(name)
            specs.append((a.dtype.str, a.shape))
            parts.append(a.tobytes())
        raw = b''.join(parts)
        self._names = _shared(tuple(names))
        self._specs = _shared(tuple(specs))
        self._labels = _shared_labels(labels)
        self._size = len(raw)
        self._data = pa.compress(raw, codec=CODEC, asbytes=True) if raw else b''
        self.rows = rows

    def __getstate__(self) -> tuple:
        return (self._names, self._specs, self._labels, self._size, self._data, self.rows)

    def __setstate__(self, state: tuple) -> None:
        (names, specs, labels, self._size, self._data, self.rows) = state
        self._names, self._specs = _shared(names), _shared(specs)
        self._labels = _shared_labels(labels)

    @property
    def nbytes(self) -> int:
        """The packed buffer's size."""
        return len(self._data)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every column, unpacked."""
        raw = (pa.decompress(self._data, self._size, codec=CODEC, asbytes=True)
               if self._size else b'')
        out, start = {}, 0
        for name, (dtype, shape) in zip(self._names, self._specs):
            dt = np.dtype(dtype)
            count = int(np.prod(shape)) if shape else 1
            a = np.frombuffer(raw, dt, count, start).reshape(shape)
            start += count * dt.itemsize
            if name in self._labels:
                table = np.empty(len(self._labels[name]), object)
                table[:] = self._labels[name]
                a = table[a] if a.size else np.empty(shape, object)
            out[name] = a
        return out

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self.arrays()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def plot_arrays(plots: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A KeyResult's plots as plain arrays, packed or not."""
    if isinstance(plots, PackedPlots):
        return plots.arrays()
    return {k: np.asarray(v) for k, v in plots.items()}


def plot_rows(plots: Mapping[str, Any]) -> int:
    """How many plot rows a KeyResult's plots hold."""
    if isinstance(plots, PackedPlots):
        return plots.rows
    return len(next(iter(plots.values()))) if plots else 0
