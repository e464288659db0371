"""The keys of a run's results as columns (`KeyColumns`), and the rules that act on keys alone:
slices per spec, `min_slice_size`, the MultiHead `loss`, the tables' row order and
`plots.max_slices`.

A run sliced by a column of 10^6 values has 10^6 keys per head. Each rule below is a grouping or
a sort over (slice spec, slice values, window, step, head); done key by key on Python objects it
costs seconds and a few hundred bytes a key, here it is numpy over int codes: the slice values
are coded once (one dict pass over the distinct value tuples), and every grouping is an
`np.unique` of codes. `pipeline.results` (KeyResult lists: streaming panes, tests) and
`pipeline.results_frame` (batch runs: columns end to end) both use these rules, so they are
written once.
"""
from __future__ import annotations

import itertools
import logging
from typing import Any, Sequence

import numpy as np

_log = logging.getLogger(__name__)

# NaN slice values: one object, so that a dict finds every NaN-valued tuple (NaN equals nothing,
# and a dict matches it by identity only).
_NAN = float('nan')


def spec_name(columns: Sequence[str]) -> str:
    """A slice spec as the summary names it: its columns joined by '_X_' ('' for Overall)."""
    return '_X_'.join(columns)


def values_order(values: tuple) -> tuple:
    """Slice values as the tables order them: numbers (by value) before text."""
    return tuple((0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in values)


def dense_codes(*columns: np.ndarray) -> np.ndarray:
    """One int64 code per row for the distinct rows of these int columns (codes in sorted order
    of the rows: equal rows, equal codes)."""
    acc = np.zeros(len(columns[0]) if columns else 0, np.int64)
    for col in columns:
        uniq, inverse = np.unique(np.asarray(col), return_inverse=True)
        acc = acc * np.int64(len(uniq)) + inverse.reshape(-1).astype(np.int64)
        acc = np.unique(acc, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return acc


def _canonical_values(values: tuple) -> tuple:
    return tuple(_NAN if type(v) is float and v != v else v for v in values)


class KeyColumns:
    """Per key: its slice spec (a code into `specs`), slice values (tuples), head index, window
    start and step (int64, 0 where null, with null masks), example count, weighted example count
    (NaN where null, with a mask) and loss."""

    __slots__ = ('specs', 'spec', 'values', 'head', 'window', 'window_null', 'step', 'step_null',
                 'example_count', 'weighted', 'weighted_null', 'loss', '_value_codes')

    def __init__(self, specs: list[tuple[str, ...]], spec: np.ndarray, values: list[tuple],
                 head: np.ndarray, window: Sequence[Any], step: Sequence[Any],
                 example_count: np.ndarray, weighted: Sequence[Any], loss: np.ndarray) -> None:
        n = len(values)
        self.specs, self.spec, self.values = specs, np.asarray(spec, np.int64), values
        self.head = np.asarray(head, np.int64)
        self.window, self.window_null = _nullable(window, np.int64, n)
        self.step, self.step_null = _nullable(step, np.int64, n)
        self.example_count = np.asarray(example_count, np.int64)
        self.weighted, self.weighted_null = _nullable(weighted, np.float64, n)
        self.loss = np.asarray(loss, np.float64)
        self._value_codes: tuple[np.ndarray, list[tuple]] | None = None

    @classmethod
    def from_results(cls, results: Sequence[Any]) -> 'KeyColumns':
        """The keys of `pipeline.results.KeyResult`s (or anything with `.key`, counts, loss)."""
        specs: dict[tuple, int] = {}
        n = len(results)
        spec = np.fromiter((specs.setdefault(tuple(r.key.slice_columns), len(specs))
                            for r in results), np.int64, n)
        return cls(list(specs), spec, [tuple(r.key.slice_values) for r in results],
                   np.fromiter((r.key.head for r in results), np.int64, n),
                   [r.key.window_start for r in results], [r.key.step for r in results],
                   np.fromiter((r.example_count for r in results), np.int64, n),
                   [r.weighted_example_count for r in results],
                   np.fromiter((r.loss for r in results), np.float64, n))

    @classmethod
    def concat(cls, parts: Sequence['KeyColumns']) -> 'KeyColumns':
        specs: dict[tuple, int] = {}
        codes = []
        for p in parts:
            remap = np.asarray([specs.setdefault(s, len(specs)) for s in p.specs], np.int64)
            codes.append(remap[p.spec] if p.spec.size else p.spec)
        out = cls.__new__(cls)
        out.specs, out._value_codes = list(specs), None
        out.spec = np.concatenate(codes) if codes else np.empty(0, np.int64)
        out.values = list(itertools.chain.from_iterable(p.values for p in parts))
        for name in ('head', 'window', 'window_null', 'step', 'step_null', 'example_count',
                     'weighted', 'weighted_null', 'loss'):
            arrays = [getattr(p, name) for p in parts]
            setattr(out, name, np.concatenate(arrays) if arrays else np.empty(0))
        return out

    def __len__(self) -> int:
        return len(self.values)

    def take(self, index: np.ndarray) -> 'KeyColumns':
        """These keys at `index` (int positions), in that order."""
        index = np.asarray(index, np.int64)
        out = KeyColumns.__new__(KeyColumns)
        out.specs, values = self.specs, self.values
        known = self._value_codes
        out._value_codes = None if known is None else (known[0][index],) + known[1:]
        out.values = [values[i] for i in index.tolist()]
        for name in ('spec', 'head', 'window', 'window_null', 'step', 'step_null',
                     'example_count', 'weighted', 'weighted_null', 'loss'):
            setattr(out, name, getattr(self, name)[index])
        return out

    # -- codes -----------------------------------------------------------------------------------
    def value_codes(self) -> tuple[np.ndarray, list[tuple]]:
        """Each key's slice values as a code into the distinct value tuples (NaN values made one
        object first, so every NaN-valued tuple is found)."""
        if self._value_codes is None:
            self._value_codes = self._int_codes() or self._tuple_codes()
        return self._value_codes[:2]

    def distinct_ints(self) -> np.ndarray | None:
        """When every key's values are one int in int64 (or Overall's ()), each distinct value
        tuple's int (0 for ()), else None."""
        self.value_codes()
        return self._value_codes[2]

    def _tuple_codes(self) -> tuple[np.ndarray, list[tuple], None]:
        values = self.values
        if float in set(map(type, itertools.chain.from_iterable(values))):
            values = [_canonical_values(v) for v in values]
        table: dict[tuple, int] = {}
        codes = np.fromiter((table.setdefault(v, len(table)) for v in values), np.int64,
                            len(values))
        return codes, list(table), None

    def _int_codes(self) -> tuple[np.ndarray, list[tuple], np.ndarray] | None:
        """`value_codes` with numpy when every key's values are one int (or ()): the common case
        of a high-cardinality column (ids), ~10x faster than a dict of tuples."""
        values = self.values
        lengths = np.fromiter(map(len, values), np.int64, len(values))
        if lengths.size and lengths.max() > 1 or (lengths == 1).sum() == 0:
            return None
        one = lengths == 1
        flat = [v[0] for v in itertools.compress(values, one.tolist())]
        if set(map(type, flat)) != {int}:
            return None
        try:
            ints = np.array(flat, np.int64)
        except OverflowError:
            return None
        uniq, inverse = np.unique(ints, return_inverse=True)
        empty = int(not one.all())  # Overall's () is code 0
        codes = np.zeros(len(values), np.int64)
        codes[one] = inverse.reshape(-1) + empty
        distinct = [()] * empty + [(x,) for x in uniq.tolist()]
        return codes, distinct, np.concatenate([np.zeros(empty, np.int64), uniq])

    def slice_codes(self, head: bool = False) -> np.ndarray:
        """Each key's slice (spec, values, window, step; and head with `head`) as a code."""
        value = self.value_codes()[0]
        columns = [self.spec, value, self.window, self.window_null, self.step, self.step_null]
        if head:
            columns.append(self.head)
        return dense_codes(*columns)

    def spec_counts(self) -> dict[str, int]:
        """Per slice spec (by `spec_name`), its distinct slice values across windows and steps."""
        pairs = np.unique(dense_codes(self.spec, self.value_codes()[0]), return_index=True)[1]
        per = np.bincount(self.spec[pairs], minlength=len(self.specs))
        out: dict[str, int] = {}
        for s, n in zip(self.specs, per.tolist()):
            if n:
                out[spec_name(s)] = out.get(spec_name(s), 0) + n
        return dict(sorted(out.items()))

    # -- rules -----------------------------------------------------------------------------------
    def small_slices(self, min_slice_size: int) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
        """`min_slice_size`: which keys stay (a mask) and, per spec that loses slices, how many
        slices and rows it loses. A slice's size is the largest example count of its heads; a
        slice is left out whole (every head), and Overall never."""
        n = len(self)
        if min_slice_size <= 0 or not n:
            return np.ones(n, bool), {}
        unit = self.slice_codes()
        sizes = np.zeros(int(unit.max()) + 1, np.int64)
        np.maximum.at(sizes, unit, self.example_count)
        first = np.unique(unit, return_index=True)[1]
        has_columns = np.asarray([bool(s) for s in self.specs], bool)
        small = has_columns[self.spec[first]] & (sizes < min_slice_size)
        if not small.any():
            return np.ones(n, bool), {}
        left_out: dict[str, dict[str, int]] = {}
        for s, size in zip(self.spec[first][small].tolist(), sizes[small].tolist()):
            entry = left_out.setdefault(spec_name(self.specs[s]), {'slices': 0, 'rows': 0})
            entry['slices'] += 1
            entry['rows'] += size
        for name, entry in sorted(left_out.items()):
            _log.warning('headstream: min_slice_size %d: %d %s slice(s) with %d rows in all left '
                         'out of the metrics, plots, TFMA, TensorBoard and report outputs (their '
                         'rows stay in Overall)', min_slice_size, entry['slices'], name,
                         entry['rows'])
        return ~small[unit], dict(sorted(left_out.items()))

    def multi_head(self, weights: Sequence[float]) -> tuple['KeyColumns', np.ndarray]:
        """The MultiHead `loss` keys (head index len(weights)): per slice holding every head,
        Σ weight · head loss (tf.estimator's MultiHead.loss, each head reduced with its own
        reduction and weights), the example count of head 0, the heads' weighted count when they
        agree (up to summation order, else null); and for each, its head-0 key's position."""
        n_heads = len(weights)
        if n_heads < 2 or not len(self):
            return self.take(np.empty(0, np.int64)), np.empty(0, np.int64)
        inside = self.head < n_heads
        unit = np.where(inside, self.slice_codes(), -1)
        n_units = int(unit.max()) + 1
        ok = inside & (unit >= 0)
        members = np.bincount(unit[ok], minlength=n_units)
        w = np.asarray(weights, np.float64)
        loss = np.zeros(n_units)
        np.add.at(loss, unit[ok], w[self.head[ok]] * self.loss[ok])
        lo = np.full(n_units, np.inf)
        hi = np.full(n_units, -np.inf)
        weighted = np.where(self.weighted_null, 0.0, self.weighted)[ok]
        with np.errstate(invalid='ignore'):  # a NaN weighted count: never agrees (below)
            np.minimum.at(lo, unit[ok], weighted)
            np.maximum.at(hi, unit[ok], weighted)
        null = np.zeros(n_units, bool)
        np.logical_or.at(null, unit[ok], self.weighted_null[ok])
        head0 = np.full(n_units, -1, np.int64)
        first = np.flatnonzero(ok & (self.head == 0))
        head0[unit[first]] = first
        whole = np.flatnonzero((members == n_heads) & (head0 >= 0))
        at = head0[whole]
        out = self.take(at)
        out.head = np.full(at.size, n_heads, np.int64)
        out.loss = loss[whole]
        tol = 1e-12 * np.maximum(np.maximum(np.abs(hi[whole]), np.abs(lo[whole])), 1.0)
        agree = ~null[whole] & (hi[whole] - lo[whole] <= tol)
        out.weighted = np.where(agree, self.weighted[at], np.nan)
        out.weighted_null = ~agree
        return out, at

    def order(self, slices: Sequence[tuple[str, ...]]) -> np.ndarray:
        """The tables' row order: Overall, then slices in config order (`slices`) and by value
        (`values_order`: numbers before text), window, step, head."""
        position = {tuple(s): i for i, s in enumerate(slices)}
        spec_rank = np.asarray([position[tuple(s)] for s in self.specs], np.int64)
        codes, distinct = self.value_codes()
        rank = np.empty(len(distinct), np.int64)
        rank[_values_sort(distinct)] = np.arange(len(distinct))
        return np.lexsort((self.head, self.step, self.window, rank[codes] if codes.size else codes,
                           spec_rank[self.spec] if self.spec.size else self.spec))

    def plot_limit(self, max_slices: int | None) -> tuple[np.ndarray, dict[str, int]]:
        """`plots.max_slices` over keys in the tables' order: a mask of the keys that keep their
        plots (Overall, and per spec, window and step the `max_slices` largest slices by the
        largest example count of their heads, ties to the slice first in the order) and per spec
        how many slices lose them (logged once per spec). None: every key keeps them."""
        n = len(self)
        if max_slices is None or not n:
            return np.ones(n, bool), {}
        codes = self.slice_codes()
        # Slices numbered in order of first appearance (the tables' order).
        uniq, first, unit = np.unique(codes, return_index=True, return_inverse=True)
        by_first = np.argsort(first, kind='stable')
        renumber = np.empty(len(uniq), np.int64)
        renumber[by_first] = np.arange(len(uniq))
        unit = renumber[unit.reshape(-1)]
        first = first[by_first]
        sizes = np.zeros(len(uniq), np.int64)
        np.maximum.at(sizes, unit, self.example_count)
        spec = self.spec[first]
        group = dense_codes(spec, self.window[first], self.window_null[first], self.step[first],
                            self.step_null[first])
        order = np.lexsort((np.arange(len(uniq)), -sizes, group))
        starts = np.searchsorted(group[order], group[order], side='left')
        rank = np.empty(len(uniq), np.int64)
        rank[order] = np.arange(len(uniq)) - starts
        overall = np.asarray([not s for s in self.specs], bool)[spec]
        keep = overall | (rank < max_slices)
        if keep.all():
            return np.ones(n, bool), {}
        without: dict[str, int] = {}
        totals: dict[str, int] = {}
        for name, total, lost in _per_spec(self.specs, spec, ~keep):
            totals[name], without[name] = total, lost
        for name, lost in sorted(without.items()):
            _log.warning('headstream: plots.max_slices %d: plots for Overall and the %s largest '
                         'of %s slices of %s; raise plots.max_slices to plot more', max_slices,
                         f'{totals[name] - lost:,}', f'{totals[name]:,}', name)
        return keep[unit], dict(sorted(without.items()))


def _per_spec(specs: list[tuple], spec: np.ndarray, lost: np.ndarray
              ) -> list[tuple[str, int, int]]:
    """(spec name, slices, slices lost) for each spec that loses some."""
    totals = np.bincount(spec, minlength=len(specs))
    losses = np.bincount(spec[lost], minlength=len(specs))
    merged: dict[str, list[int]] = {}
    for s, t, k in zip(specs, totals.tolist(), losses.tolist()):
        entry = merged.setdefault(spec_name(s), [0, 0])
        entry[0] += t
        entry[1] += k
    return [(name, t, k) for name, (t, k) in merged.items() if k]


def _values_sort(distinct: list[tuple]) -> np.ndarray:
    """The distinct value tuples' positions in `values_order`: numpy for tuples of one int (in
    int64) or one str, Python's sort otherwise."""
    empty = [j for j, v in enumerate(distinct) if not v]  # Overall's (): before any value
    if len(empty) <= 1 and all(len(v) == 1 for v in distinct if v):
        rest = np.asarray([j for j, v in enumerate(distinct) if v], np.int64) if empty \
            else np.arange(len(distinct))
        flat = [distinct[j][0] for j in rest.tolist()]
        kinds = set(map(type, flat))
        order = None
        if kinds == {int}:
            try:
                order = np.argsort(np.array(flat, np.int64), kind='stable')
            except OverflowError:
                pass
        elif kinds == {str} and not any(s.endswith('\x00') for s in flat):
            order = np.argsort(np.array(flat, dtype=str), kind='stable')
        if order is not None:
            return np.concatenate([np.asarray(empty, np.int64), rest[order]])
    return np.asarray(sorted(range(len(distinct)), key=lambda j: values_order(distinct[j])),
                      np.int64)


def _nullable(values: Sequence[Any], dtype: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls as 0 / NaN, null mask) of a list that may hold None, or of an array
    (no nulls; a float array's NaN is not null)."""
    if isinstance(values, np.ndarray):
        return values.astype(dtype, copy=False), np.zeros(n, bool)
    null = np.fromiter((v is None for v in values), bool, n)
    fill = 0 if dtype is np.int64 else np.nan
    out = np.fromiter((fill if v is None else v for v in values), dtype, n)
    return out, null

