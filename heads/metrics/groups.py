"""Rows of a batch spread over several states: `Groups`, the grouped-update machinery every state
primitive shares (one `np.bincount` per sum, whatever the number of groups).

Never imports TensorFlow.
"""
from __future__ import annotations

import numpy as np

from heads.metrics.common import CHUNK

__all__ = ['Groups', 'flat_weights', 'group_order']


def flat_weights(weights: np.ndarray | float, shape: tuple[int, ...]) -> np.ndarray:
    """Example weights (`[D0..DN, 1]` or a scalar) broadcast to `shape` and flattened, float64."""
    return np.broadcast_to(np.asarray(weights, dtype=np.float64), shape).reshape(-1)


def group_order(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, counts): the indices of the entries with a code in [0, n), stably sorted by code,
    and the number of entries of each code (int64 [n]). Negative codes are left out.

    A stable LSD radix sort on 16-bit digits (numpy's stable sort of 16-bit keys is a counting
    sort): one pass for fewer than 2^16 codes, two below 2^32 — linear, ~4x faster than a
    comparison sort of int64 keys."""
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    counts = np.bincount(codes[codes >= 0], minlength=n) if codes.size else np.zeros(n, np.int64)
    # Codes out of range (none) or negative sort after every valid code and are cut off.
    key = np.where(codes < 0, n, codes)
    if n < (1 << 16):
        order = np.argsort(key.astype(np.uint16), kind='stable')
    elif n < (1 << 32):
        order = np.argsort((key & 0xFFFF).astype(np.uint16), kind='stable')
        order = order[np.argsort((key[order] >> 16).astype(np.uint16), kind='stable')]
    else:  # pragma: no cover - more groups than rows any batch holds
        order = np.argsort(key, kind='stable')
    return order[:int(counts.sum())], counts


class Groups:
    """Which of `n` states each row of a batch adds to: `codes[i]` in [0, n), or negative for
    none. Every per-state sum is then one `np.bincount` over the batch, so the states of many slices
    update in a single pass over the rows (no sort, no per-slice copies) — the pipeline's path.

    Sums run over entries: the rows themselves, or after `repeat(k)` the k values of each row
    (row-major), all in their row's group. `Groups.one(rows)` (or codes all 0 with n = 1) is a
    single state taking every row; its sums are `np.sum`, exactly as a plain `update` computes them.
    """

    def __init__(self, codes: np.ndarray | None, n: int, rows: int | None = None) -> None:
        self.n = int(n)
        self.per_row = 1
        if codes is None:
            if self.n != 1 or rows is None:
                raise ValueError('Groups without codes is one group of `rows` rows.')
            self.rows = int(rows)
            self._codes = None
            return
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        self.rows = codes.size
        if codes.size and codes.max(initial=-1) >= self.n:
            raise ValueError('group code {} out of range for {} groups'.format(codes.max(), n))
        if self.n == 1 and codes.size and codes.min() == 0:
            self._codes = None  # every row in the one group
        else:
            # Rows of no group count in an extra, dropped group.
            self._codes = np.where(codes < 0, self.n, codes) if codes.min(initial=0) < 0 else codes

    @classmethod
    def one(cls, rows: int) -> 'Groups':
        return cls(None, 1, rows)

    @classmethod
    def of(cls, codes: np.ndarray | None, n: int, rows: int) -> 'Groups':
        """`codes` (None: one group) for a batch of `rows` examples, its length checked."""
        if codes is None:
            return cls.one(rows)
        groups = cls(codes, n)
        if groups.rows != rows:
            raise ValueError('{} group codes for a batch of {} examples.'.format(groups.rows, rows))
        return groups

    @property
    def size(self) -> int:
        """Number of entries: rows × values per row."""
        return self.rows * self.per_row

    def repeat(self, k: int) -> 'Groups':
        """The groups of the k values of each entry (flattened row-major), without a copy."""
        out = object.__new__(Groups)
        out.__dict__.update(self.__dict__)
        out.per_row = self.per_row * int(k)
        return out

    def block(self, start: int, stop: int) -> 'Groups':
        """The groups of rows [start, stop) (with their values per row)."""
        if self._codes is None:
            out = Groups.one(min(stop, self.rows) - start)
        else:
            codes = self._codes[start:stop]
            out = Groups(np.where(codes >= self.n, -1, codes), self.n)
        return out.repeat(self.per_row)

    def codes(self, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """Group of each entry in [start, stop) (n for none); None for a single group."""
        if self._codes is None:
            return None
        stop = self.size if stop is None else stop
        k = self.per_row
        if k == 1:
            return self._codes[start:stop]
        first = start // k
        return np.repeat(self._codes[first:-(-stop // k)], k)[start - first * k:stop - first * k]

    def subset(self, keep: np.ndarray) -> 'Groups':
        """The same assignment restricted to the entries where the boolean `keep` is True."""
        if self._codes is None:
            return Groups(None, 1, int(np.count_nonzero(keep)))
        codes = self.codes()[keep]
        return Groups(np.where(codes >= self.n, -1, codes), self.n)

    def sum(self, values: np.ndarray | None = None) -> np.ndarray:
        """Σ of the per-entry `values` (None: the number of entries) per group, float64 [n]."""
        if self._codes is None:
            total = self.size if values is None else np.sum(values, dtype=np.float64)
            return np.array([float(total)])
        if values is None:
            out = np.bincount(self._codes, minlength=self.n + 1)[:self.n] * self.per_row
        else:
            if self.per_row != 1:  # a row's entries share its group: add them up first
                values = np.asarray(values, dtype=np.float64).reshape(self.rows, self.per_row)
                values = values.sum(axis=1)
            out = np.bincount(self._codes, weights=values, minlength=self.n + 1)[:self.n]
        return out.astype(np.float64, copy=False)

    def offsets(self, start: int, stop: int, n_cells: int) -> np.ndarray | int:
        """`group · n_cells` of the entries in [start, stop): added to cell indices in [0, n_cells),
        keys for `cells_of_keys` (0 for a single group)."""
        codes = self.codes(start, stop)
        return 0 if codes is None else codes * n_cells

    def cells_of_keys(self, keys: np.ndarray, n_cells: int, weights: np.ndarray | None
                      ) -> np.ndarray:
        """Σ `weights` per (group, cell) from per-entry keys `group · n_cells + cell` (see
        `offsets`): float64 [n, n_cells]."""
        if self._codes is None:
            out = np.bincount(keys, weights=weights, minlength=n_cells)[np.newaxis, :]
        else:
            out = np.bincount(keys, weights=weights, minlength=(self.n + 1) * n_cells)
            out = out[:self.n * n_cells].reshape(self.n, n_cells)
        return out.astype(np.float64, copy=False)

    def cells(self, cell: np.ndarray, n_cells: int, weights: np.ndarray | None) -> np.ndarray:
        """Σ `weights` per (group, cell) for per-entry cell indices in [0, n_cells): float64
        [n, n_cells]."""
        if self._codes is None:
            return self.cells_of_keys(cell, n_cells, weights)
        keys = np.empty(self.size, dtype=np.intp)
        for start in range(0, self.size, CHUNK):  # cache-sized steps
            stop = min(start + CHUNK, self.size)
            np.multiply(self.codes(start, stop), n_cells, out=keys[start:stop])
            keys[start:stop] += cell[start:stop]
        return self.cells_of_keys(keys, n_cells, weights)
