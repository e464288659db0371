"""A shard's `KeyBlock` → one `pipeline.results.KeyResult` per key, its metrics read as one array
per metric for every key at once; which keys get plots.

The rows are those `pipeline.results.state_result` gives a key's own state: the head's metrics
(keys without the head's '/name' suffix), then `loss`; the AUC's bounds where the state has them
(null where not finite).

Plots (`plots.max_slices` = N): a spec keeps plots for its N largest slices per window and step
(by example count, ties in the tables' slice order — the rule `pipeline.run_outputs` applies).
Reading a key's plots means building its dense state, so only the winners are read, found
before any shard is read: the batch graph finds them in a side step from the example counts of
every block part the bundles hand on (`key_counts`, summed per key by `winners_of_counts`), so
the winners are known when the combined shards are, and hands them to every shard's reading
(`pipeline.graph`).
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from pipeline.key_blocks import KeyBlock, TableKey, _canonical, _is_int_key
from pipeline.metric_rows import MetricRows
from pipeline.packed_plots import PackedPlots
from pipeline.pickle_once import PickleOnce
from pipeline.elements import Key
from pipeline.results import KeyResult, state_results, strip_suffix, values_order

# Tags of the compact pickled fields of a ResultsPack.
_INT_KEYS = 'int-keys'
_SPLIT_VALUES = 'split-values'
_NAN_BITS = np.array(np.nan).view(np.uint64)

__all__ = ['ResultsPack', 'block_results', 'key_counts', 'results_pack', 'winners_of_counts']


class _IntKeys(Sequence):
    """The keys ((v,), None, None) of a table of numbers, each tuple built when read (a shard of
    10^5 keys reads a few thousand)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return self.values.size

    def __getitem__(self, i: Any) -> TableKey:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return ((int(self.values[i]),), None, None)


def _key_counts(kb: KeyBlock) -> tuple[Sequence[TableKey], np.ndarray]:
    """Every key of `kb` (block keys, then keys only in `dense`) and its example count."""
    counts = kb.block.counts()[0].copy()
    values = kb.int_values()
    if values is not None and not kb.dense:
        return _IntKeys(values), counts
    keys = list(kb.keys)
    extra = []
    for key, state in kb.dense.items():
        i = kb.index_of(key)
        if i is None:
            keys.append(key)
            extra.append(state.counts()[0])
        else:
            counts[i] += state.counts()[0]
    return keys, np.concatenate([counts, np.asarray(extra, np.float64)])


def _first_by_value(keys: Sequence[TableKey], index: np.ndarray, r: int) -> np.ndarray:
    """The r of `index` whose keys' slice values come first in the tables' order: with numpy when
    the values are single ints or single strings (their order is numpy's), else key by key."""
    if isinstance(keys, _IntKeys):  # single ints: numpy's order
        return index[np.argsort(keys.values[index], kind='stable')[:r]]
    values = [keys[i][0] for i in index.tolist()]
    flat = [v[0] for v in values] if all(len(v) == 1 for v in values) else None
    order = None
    if flat is not None and all(type(x) is int for x in flat):
        try:
            order = np.argsort(np.array(flat, np.int64), kind='stable')
        except OverflowError:  # beyond int64: Python's order
            order = None
    elif flat is not None and all(type(x) is str for x in flat):
        order = np.argsort(np.array(flat, dtype=str), kind='stable')
    if order is None:
        order = np.asarray(sorted(range(len(values)), key=lambda j: values_order(values[j])),
                           np.int64)
    return index[order[:r]]


def _largest(keys: Sequence[TableKey], counts: np.ndarray, index: np.ndarray, limit: int
             ) -> list[int]:
    """The `limit` keys of `index` with the most examples, ties in the tables' slice order, in
    that order."""
    c = counts[index]
    by_count = index[np.argsort(-c, kind='stable')]
    if by_count.size <= limit:
        chosen = by_count
    else:
        edge = counts[by_count[limit - 1]]  # the count the last chosen key has
        above = by_count[counts[by_count] > edge]
        tied = by_count[counts[by_count] == edge]
        chosen = np.concatenate([above, _first_by_value(keys, tied, limit - above.size)])
    return sorted(chosen.tolist(), key=lambda i: (-counts[i], values_order(keys[i][0])))


def key_counts(kb: KeyBlock) -> tuple[tuple[str, ...], Any, np.ndarray]:
    """(slice columns, keys, example count of each key) of a block or a part of one, for
    `winners_of_counts`: the keys as an int64 array for a table of numbers without dense keys,
    else a list of table keys (block keys, then keys only in `dense`)."""
    keys, counts = _key_counts(kb)
    if isinstance(keys, _IntKeys):
        return kb.columns, keys.values.copy(), counts
    return kb.columns, list(keys), counts


def winners_of_counts(parts: Iterable[tuple[tuple[str, ...], Any, np.ndarray]], limit: int
                      ) -> dict[tuple[str, ...], set[TableKey]]:
    """The keys that get plots, per spec, from the `key_counts` of every part of every spec's
    blocks (parts of the same keys from several bundles): each key's counts summed over its
    parts, then per (spec, window, step) the `limit` largest, ties in the tables' slice order
    (heads name the same keys: every head sees the same rows)."""
    by_spec: dict[tuple[str, ...], list] = {}
    for columns, keys, counts in parts:
        by_spec.setdefault(columns, []).append((keys, counts))
    out: dict[tuple[str, ...], set[TableKey]] = {}
    if limit <= 0:
        return out
    for columns, items in by_spec.items():
        if all(isinstance(k, np.ndarray) for k, _ in items):  # int keys: numpy throughout
            values, inverse = np.unique(np.concatenate([k for k, _ in items]),
                                        return_inverse=True)
            totals = np.bincount(inverse.reshape(-1), minlength=values.size,
                                 weights=np.concatenate([c for _, c in items]))
            keys: Sequence[TableKey] = _IntKeys(values)
            groups = {(None, None): np.arange(values.size)}
        else:
            summed: dict[TableKey, float] = {}
            for k, c in items:
                for key, n in zip(_IntKeys(k) if isinstance(k, np.ndarray) else k, c.tolist()):
                    key = _canonical(key)
                    summed[key] = summed.get(key, 0.0) + n
            keys, totals = list(summed), np.fromiter(summed.values(), np.float64, len(summed))
            members: dict[tuple, list[int]] = {}
            for i, (_, window, step) in enumerate(keys):
                members.setdefault((window, step), []).append(i)
            groups = {g: np.asarray(m, np.int64) for g, m in members.items()}
        chosen = out.setdefault(columns, set())
        for index in groups.values():
            chosen.update(keys[i] for i in _largest(keys, totals, index, limit))
    return {columns: keys for columns, keys in out.items() if keys}


def _metric_array(kb: KeyBlock, name: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(metric names, [keys, metrics, 3] float64 of (value, lower, upper); NaN: no bound)."""
    block = kb.block
    results = {strip_suffix(k, name): v for k, v in block.results().items()}
    results.pop('loss', None)  # the `loss` row is the head's loss, as in state_result
    names = tuple(results) + ('loss',)
    values = np.full((kb.n_keys(), len(names), 3), np.nan)
    for j, v in enumerate(results.values()):
        values[:, j, 0] = v
    values[:, -1, 0] = block.losses()
    position = {m: j for j, m in enumerate(names)}
    for k, (lo, hi) in block.bounds().items():
        j = position.get(strip_suffix(k, name))
        if j is not None:
            values[:, j, 1] = np.where(np.isfinite(lo), lo, np.nan)
            values[:, j, 2] = np.where(np.isfinite(hi), hi, np.nan)
    return names, values


class ResultsPack(PickleOnce):
    """A shard's results in columns, for the trip to the run's gather: one pickle of a few arrays
    and the key table instead of 10^5 named tuples (whose pickling is Python code, key by key).
    `results()` gives the KeyResults. Read only: packed once however often it is pickled
    (`pipeline.pickle_once`)."""

    _FIELDS = ('columns', 'head', 'keys', 'names', 'values', 'counts', 'weighted', 'plots',
               'extra')
    __slots__ = ('columns', 'head', '_keys', '_ints', 'names', 'values', 'counts', 'weighted',
                 'plots', 'extra', '_pickled')

    def __init__(self, columns: tuple[str, ...], head: int, keys: list[TableKey] | None,
                 names: tuple[str, ...], values: np.ndarray, counts: np.ndarray,
                 weighted: np.ndarray, plots: dict[int, Any], extra: list[KeyResult],
                 int_values: np.ndarray | None = None) -> None:
        """`keys` the keys in order; or None with `int_values`, the int64 values of keys
        ((v,), None, None) (`keys` is then built when first read)."""
        if keys is None and int_values is None:
            raise ValueError('ResultsPack needs keys or int_values')
        self.columns, self.head, self.names = columns, head, names
        self._keys, self._ints = keys, None if keys is not None else int_values
        self.values, self.counts, self.weighted = values, counts, weighted
        self.plots, self.extra = plots, extra  # plots by position in `keys`; dense keys' results
        self._pickled: bytes | None = None

    @property
    def keys(self) -> list[TableKey]:
        """The keys (slice values, window, step), in the order of the arrays' rows."""
        if self._keys is None:
            self._keys = [((v,), None, None) for v in self._ints.tolist()]
        return self._keys

    @keys.setter
    def keys(self, keys: list[TableKey]) -> None:
        self._changed()
        self._keys, self._ints = keys, None

    def int_values(self) -> np.ndarray | None:
        """The keys' values (int64) when every key is ((v,), None, None) and the pack was made
        or read with them as numbers; None otherwise (read `keys`)."""
        return self._ints

    def __getstate__(self) -> tuple:
        """The fields, two of them compact: keys of one int value (no window, no step) as an
        int64 array; of `values`, the value column and only the bounds columns of metrics that
        have a bound somewhere (the others are all the NaN they were filled with: 2/3 of the
        array for a binary head). `__setstate__` gives the same keys and bit-identical values."""
        state = {name: getattr(self, name) for name in self._FIELDS if name != 'keys'}
        keys = self._keys
        if self._ints is not None:
            state['keys'] = (_INT_KEYS, self._ints)
        elif keys and all(map(_is_int_key, keys)):
            state['keys'] = (_INT_KEYS, np.fromiter((k[0][0] for k in keys), np.int64, len(keys)))
        else:
            state['keys'] = keys
        v = np.ascontiguousarray(self.values)
        if v.ndim == 3 and v.shape[2] == 3:
            bounds = v[:, :, 1:].view(np.uint64)
            has = ~(bounds == _NAN_BITS).all(axis=(0, 2))
            with_bounds = np.flatnonzero(has)
            state['values'] = (_SPLIT_VALUES, v.shape, v[:, :, 0].copy(), with_bounds,
                               v[:, with_bounds, 1:].copy())
        return tuple(state[name] for name in self._FIELDS)

    def __setstate__(self, state: tuple) -> None:
        self._pickled = None
        for name, value in zip(self._FIELDS, state):
            setattr(self, name, value)
        keys = self._keys
        if isinstance(keys, tuple) and len(keys) == 2 and keys[0] == _INT_KEYS:
            self._keys, self._ints = None, keys[1]  # the tuples built when first read
        values = self.values
        if isinstance(values, tuple) and values[0] == _SPLIT_VALUES:
            _, shape, column, with_bounds, bounds = values
            full = np.full(shape, np.nan)
            full[:, :, 0] = column
            full[:, with_bounds, 1:] = bounds
            self.values = full

    def results(self) -> list[KeyResult]:
        rows = MetricRows.many(self.names, self.values)
        losses = self.values[:, -1, 0].tolist()
        columns, head, plots = self.columns, self.head, self.plots
        out = [KeyResult(Key(columns, values, head, window, step), rows[i], int(count), total,
                         losses[i], plots.get(i, {}))
               for i, ((values, window, step), count, total) in enumerate(
                   zip(self.keys, self.counts.tolist(), self.weighted.tolist()))]
        return out + self.extra


def block_results(kb: KeyBlock, head_names: Sequence[str],
                  winners: Mapping[tuple[str, ...], Iterable[TableKey]] | None
                  ) -> list[KeyResult]:
    """One KeyResult per key of `kb` (block keys in its table's order, then dense keys); plots
    for the keys `winners` names for its spec (`winners_of_counts`; None: every key)."""
    return results_pack(kb, head_names, winners).results()


def results_pack(kb: KeyBlock, head_names: Sequence[str],
                 winners: Mapping[tuple[str, ...], Iterable[TableKey]] | None) -> ResultsPack:
    """`block_results` as a `ResultsPack`."""
    names, values = _metric_array(kb, head_names[kb.head])
    examples, weighted = kb.block.counts()
    ints = kb.int_values()
    if ints is not None and not kb.dense:
        chosen = None if winners is None else _int_positions(kb, winners.get(kb.columns, ()))
        if winners is None or chosen is not None:  # the keys as numbers, never as tuples
            plots = _packed_plots(kb.block, range(ints.size) if chosen is None else chosen)
            return ResultsPack(kb.columns, kb.head, None, names, values, examples, weighted,
                               plots, [], int_values=ints.copy())
    plotted = (set(kb.keys) | set(kb.dense) if winners is None
               else set(map(_canonical, winners.get(kb.columns, ()))))
    own = np.fromiter((k not in kb.dense for k in kb.keys), bool, len(kb.keys))
    if not own.all():  # keys with a dense part are read with it (`_dense_results`)
        keep = np.flatnonzero(own)
        keys = [kb.keys[i] for i in keep.tolist()]
        values, examples, weighted = values[keep], examples[keep], weighted[keep]
    else:
        keep, keys = None, list(kb.keys)
    at = [j for j, key in enumerate(keys) if key in plotted]
    plots = _packed_plots(kb.block, at if keep is None else keep[at].tolist())
    if keep is not None:  # by position in `keys`
        plots = dict(zip(at, plots.values()))
    return ResultsPack(kb.columns, kb.head, keys, names, values, examples, weighted, plots,
                       _dense_results(kb, head_names, plotted))


# Keys whose plots a block reads at once (`plots_of`): [keys, 200, 2] AUC buckets and the
# calibration buckets, a few MB.
_PLOTS_STEP = 1024


def _packed_plots(block: Any, positions: Sequence[int]) -> dict[int, PackedPlots]:
    """{position: PackedPlots of that key's plots} for increasing positions of `block`: read
    `_PLOTS_STEP` keys at a time when the block has `plots_of`, else key by key through
    `state(k)`."""
    many = getattr(block, 'plots_of', None)
    if many is None:
        return {i: PackedPlots(block.state(i).plots() or {}) for i in positions}
    positions = list(positions)
    out = {}
    for a in range(0, len(positions), _PLOTS_STEP):
        part = positions[a:a + _PLOTS_STEP]
        for i, plots in zip(part, many(np.asarray(part, np.int64))):
            out[i] = PackedPlots(plots or {})
    return out


def _int_positions(kb: KeyBlock, winners: Iterable[TableKey]) -> list[int] | None:
    """The increasing table positions of the winners `kb` (a table of numbers) holds; None when
    a winner is not a key of one int value (then compared as tuples, key by key)."""
    found = []
    for key in winners:
        if not _is_int_key(key):
            return None
        i = kb.index_of(key)
        if i is not None:
            found.append(i)
    return sorted(found)


def _dense_results(kb: KeyBlock, head_names: Sequence[str], plotted: set[TableKey]
                   ) -> list[KeyResult]:
    """The results of the keys with a dense state (merged with their block part, if any), their
    plots dropped unless `plotted`. The states are copied: the block stays unchanged."""
    pairs = []
    for key, state in kb.dense.items():
        state = copy.deepcopy(state)
        i = kb.index_of(key)
        if i is not None:
            state.merge(kb.block.state(i))
        values, window, step = key
        pairs.append((tuple(Key(kb.columns, values, kb.head, window, step)), state))
    results = state_results(pairs, head_names)
    return [r if (r.key.slice_values, r.key.window_start, r.key.step) in plotted
            else r._replace(plots={}) for r in results]
