"""Every key of one (slice spec, head) as one columnar state: `KeyBlock`.

A slice spec with 10^5 values makes 10^5 keys. As one head-state object per key, each key costs
about a millisecond across the update, the pickling of partial states, their merging and the
reading of its metrics — minutes for such a spec, against a second for a spec of 5 values. A
`KeyBlock` holds every key of one spec and head that a bundle saw: the key table (per key index,
its slice values, window start and step) and the head's columnar block (`head.new_block()`, e.g.
`heads.array.binary_block.BinaryClassBlock`), whose update, merge and metrics are vectorised over
keys. Python touches a key only to find its index in the table (one dict lookup per key and batch).
A spec of one integer column without windows or steps (the common high-cardinality case) keeps
its table as numbers: the keys' values as one int64 array and a direct-address array from value to
index, so looking keys up, merging, sharding and pickling such a table are numpy operations (the
`(values, window, step)` tuples are built only when read, `KeyBlock.keys`; the table of numbers
is `pipeline.int_key_table.IntKeyTable`).

How a block travels (batch runs with the pre-combine; `pipeline.config.EvalConfig.new_block` says
which heads have blocks): `BatchEvaluator` updates one KeyBlock per (spec, head) for the bundle and
at its end splits it into `SHARDS` blocks by a hash of each key that does not depend on the
process (`shards`), keyed `block_key(columns, head, shard)`; the CombineFn merges the blocks of a
shard (`merge`: the key tables joined, the numbers added); `pipeline.block_results` reads a shard's
metrics as one array per metric. Every key lands in one shard whatever the bundles, so results do
not depend on sharding or bundle order (merging is associative and commutative, as for states).
"""
from __future__ import annotations

import copy
import zlib
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from pipeline.elements import HeadArrays, Key
from pipeline.decode import take_rows
from pipeline.keys import SpecKeys, group_rows
from pipeline.int_key_table import IntKeyTable, TableKey, _int_shard_numbers, _is_int_key
from pipeline.pickle_once import PickleOnce

__all__ = ['BLOCK_TAG', 'SHARDS', 'KeyBlock', 'block_key', 'is_block_key']

BLOCK_TAG = '__block__'
# A batch holding at most this many keys of a spec updates one dense head state per key
# (`KeyBlock.dense`, the states' own grouped update): for a few keys that is cheaper than the
# block's sparse buckets; many keys go to the block. A key may have rows in both: its result is
# then its dense state merged with its block part (`pipeline.block_results`).
DENSE_KEYS = 64
# Shards of a spec's keys: the unit of the combine and of reading metrics (bounded memory each,
# parallel on runners with several workers).
SHARDS = 8


def block_key(columns: tuple[str, ...], head: int, shard: int) -> tuple:
    """The Beam key of a shard's block: a plain tuple (Beam's deterministic coder), told apart
    from a state's key (`tuple(Key)`, whose first item is a tuple of columns) by its tag."""
    return (BLOCK_TAG, tuple(columns), int(head), int(shard))


def is_block_key(key: Sequence[Any]) -> bool:
    return len(key) == 4 and key[0] == BLOCK_TAG


def _stable_hash(key: TableKey) -> int:
    """The same number for the same key in every process (Python's hash of a str is salted)."""
    return zlib.crc32(repr(key).encode('utf-8', 'surrogatepass'))


# The pickled key table of a table of numbers: (_INT_TABLE, values).
_INT_TABLE = 'ints'


# NaN slice values: one float object in every key table of this process. NaN equals no NaN, and
# a dict finds a tuple holding NaN only by that very object, so each batch's and each unpickled
# block's own NaN would be a key of its own (duplicate slices).
_NAN = float('nan')


def _canonical(key: TableKey) -> TableKey:
    """`key` with each NaN value replaced by `_NAN`."""
    values, window, step = key
    if any(type(v) is float and v != v for v in values):
        values = tuple(_NAN if type(v) is float and v != v else v for v in values)
    return (values, window, step)


def _all_distinct(indices: np.ndarray) -> bool:
    """Whether no index repeats (increasing indices, as `shards` takes, without a sort)."""
    if indices.size < 2 or bool((indices[1:] > indices[:-1]).all()):
        return True
    return np.unique(indices).size == indices.size


def shard_numbers(keys: Sequence[TableKey]) -> np.ndarray:
    """A number per key, the same for the same key in every process and whatever the other
    keys: a key of one int value (no window, no step) mixed with numpy (the common case at 10^6
    values, ~20x cheaper), any other `_stable_hash`."""
    n = len(keys)
    simple = np.fromiter(map(_is_int_key, keys), bool, n)
    out = np.empty(n, np.uint64)
    idx = np.flatnonzero(simple)
    if idx.size:
        out[idx] = _int_shard_numbers(
            np.fromiter((keys[i][0][0] for i in idx.tolist()), np.int64, idx.size))
    for i in np.flatnonzero(~simple).tolist():
        out[i] = _stable_hash(keys[i])
    return out


class KeyBlock(IntKeyTable, PickleOnce):
    """The states of every key of slice spec `columns` for head index `head`.

    `keys[i]` is key i's (slice values, window start, step) and `block` the head's columnar block
    over them; `dense` holds one head state per key for keys updated by batches with few keys
    (made by `new_state`, given where rows are added; a merged or unpickled block only merges).

    The table is held in one of two ways: as tuples (`_keys`, with `_index` from key to index and
    `_by_values` from slice values to index per (window, step)), or, while every key is one int
    value without window and step, as numbers (`_ints[:_n_ints]` the values in table order;
    `_slot[v - _lo]` the index of value v, −1 when absent, built when first needed). A table of
    numbers turns into tuples when a key of another kind arrives (`_to_tuples`); both give the
    same indices for the same keys.

    A block is pickled once while unchanged (`pipeline.pickle_once`): `add` and `merge` drop the
    kept pickle.
    """

    __slots__ = ('columns', 'head', '_keys', 'block', 'dense', '_index', '_by_values',
                 '_new_state', '_ints', '_n_ints', '_slot', '_lo', '_handed', '_pickled')

    def __init__(self, columns: tuple[str, ...], head: int, block: Any,
                 new_state: Callable[[], Any] | None = None) -> None:
        self.columns = tuple(columns)
        self.head = int(head)
        self._keys: list[TableKey] = []
        self.block = block
        self.dense: dict[TableKey, Any] = {}
        self._new_state = new_state
        self._index: dict[TableKey, int] = {}
        # Per (window, step): slice values → index, for batches whose keys share them.
        self._by_values: dict[tuple, dict[tuple, int]] = {}
        self._ints: np.ndarray | None = None  # a table of numbers: the values (capacity)
        self._n_ints = 0
        self._slot: np.ndarray | None = None
        self._lo = 0
        # A shard part `shards` made and handed on, not yet copied (see `__deepcopy__`).
        self._handed = False
        self._pickled: bytes | None = None

    # -- the key table ----------------------------------------------------------------------------
    @property
    def keys(self) -> list[TableKey]:
        """Every key of the table, in index order (a table of numbers builds the tuples here, once
        for the keys it has; do not change the list)."""
        if self._ints is not None and len(self._keys) < self._n_ints:
            self._keys.extend([((v,), None, None)
                               for v in self._ints[len(self._keys):self._n_ints].tolist()])
        return self._keys

    def n_keys(self) -> int:
        """The number of keys in the table (not counting keys only in `dense`)."""
        return self._n_ints if self._ints is not None else len(self._keys)

    def __len__(self) -> int:
        """The number of distinct keys (in the block, dense, or both)."""
        return self.n_keys() + sum(1 for k in self.dense if self.index_of(k) is None)

    def index_of(self, key: TableKey) -> int | None:
        """The index of a (slice values, window, step) in the table, None if absent."""
        if self._ints is None:
            return self._index.get(key)
        if not _is_int_key(key):
            return None
        v = key[0][0]
        if not self._n_ints:
            return None
        if self._slot is None or not self._lo <= v < self._lo + self._slot.size:
            values = self._ints[:self._n_ints]
            if not self._fit_slots(int(values.min()), int(values.max()), self._n_ints):
                self._to_tuples()
                return self._index.get(key)
            if not self._lo <= v < self._lo + self._slot.size:
                return None
        i = int(self._slot[v - self._lo])
        return i if i >= 0 else None

    def _indices(self, keys: Sequence[TableKey]) -> np.ndarray:
        """Each key's index in the table, adding the keys it does not hold yet (lookups and
        inserts as whole-list dict operations, in C)."""
        self._to_tuples()
        index = self._index
        found = list(map(index.get, keys))
        if None in found:
            keys = [k if j is not None else _canonical(k) for k, j in zip(keys, found)]
            new = list(dict.fromkeys(k for k in keys if k not in index))
            start = len(self._keys)
            self._keys.extend(new)
            index.update(zip(new, range(start, start + len(new))))
            found = list(map(index.get, keys))
        return np.fromiter(found, np.int64, len(found))

    def _indices_of_values(self, combos: list[tuple], window: int | None, step: int | None
                           ) -> np.ndarray:
        """`_indices` of keys (combos[i], window, step), looked up by `combos` alone: no key
        tuple is built for keys this block has seen."""
        self._to_tuples()
        table = self._by_values.setdefault((window, step), {})
        found = list(map(table.get, combos))
        if None in found:
            missing = [c for c, j in zip(combos, found) if j is None]
            table.update(zip(missing, self._indices(
                [(c, window, step) for c in missing]).tolist()))
            found = list(map(table.get, combos))
        return np.fromiter(found, np.int64, len(found))

    def add(self, keys: Sequence[tuple], codes: np.ndarray, arrays: HeadArrays) -> None:
        """Adds row j of `arrays` to key `keys[codes[j]]` ((columns, values, window, step), as
        `pipeline.keys.key_codes` lists them; codes[j] < 0: the row is in no key)."""
        self._changed()
        if self._new_state is not None and len(keys) <= DENSE_KEYS:
            self._add_dense(keys, codes, arrays)
            return
        index = None
        if isinstance(keys, SpecKeys):
            if keys.ints is not None and keys.window is None and keys.step is None:
                index = self._int_indices(keys.ints, distinct=True)
            if index is None:
                index = self._indices_of_values(keys.combos, keys.window, keys.step)
        else:
            index = self._indices([(k[1], k[2], k[3]) for k in keys])
        rows = np.where(codes >= 0, index[np.maximum(codes, 0)], -1) if index.size else codes
        self.block.add(rows, self.n_keys(), arrays.labels, arrays.logits,
                       arrays.features or None)

    def _add_dense(self, keys: Sequence[tuple], codes: np.ndarray, arrays: HeadArrays) -> None:
        """Adds the rows to the keys' dense states, all keys in one grouped update when the
        state has one, else key by key."""
        states = []
        for _, values, window, step in keys:
            key = (values, window, step)
            state = self.dense.get(key)
            if state is None:
                key = _canonical(key)
                state = self.dense.get(key)
            if state is None:
                state = self.dense[key] = self._new_state()
            states.append(state)
        features = arrays.features or None
        grouped = getattr(type(states[0]), 'update_groups', None)
        if grouped is not None and grouped(states, codes, arrays.labels, arrays.logits, features):
            return
        for code, idx in group_rows(codes):
            sub = take_rows(arrays, idx)
            states[code].update(sub.labels, sub.logits, sub.features or None)

    def merge(self, other: 'KeyBlock') -> 'KeyBlock':
        """Adds `other`'s keys (left unchanged) to this block; returns self."""
        if (other.columns, other.head) != (self.columns, self.head):
            raise ValueError('Cannot merge the blocks of %r head %d and %r head %d.'
                             % (self.columns, self.head, other.columns, other.head))
        self._changed()
        index = None
        theirs = other.int_values()
        if theirs is not None:
            index = self._int_indices(theirs, distinct=True)
        if index is None:
            index = self._indices(other.keys)
        self.block.merge(other.block, index)
        for key, state in other.dense.items():
            key = _canonical(key)
            mine = self.dense.get(key)
            self.dense[key] = copy.deepcopy(state) if mine is None else mine.merge(state)
        return self

    def take(self, indices: np.ndarray) -> 'KeyBlock':
        """A new block of these keys, in this order."""
        out = KeyBlock(self.columns, self.head, self.block.take(indices))
        values = self.int_values()
        if values is not None:
            picked_values = values[indices]
            if _all_distinct(indices):
                out._set_ints(picked_values)
            elif out._int_indices(picked_values) is None:
                out._indices([self.keys[i] for i in indices.tolist()])
            return out
        picked = indices.tolist()
        keys = [self.keys[i] for i in picked]
        if len(set(picked)) == len(picked):
            out._set_keys(keys)
        else:
            out._indices(keys)
        return out

    def _part(self, indices: np.ndarray, block: Any) -> 'KeyBlock':
        """A new block of these keys (increasing indices) whose columnar block, `block`, is
        this block's `take(indices)` already."""
        out = KeyBlock(self.columns, self.head, block)
        values = self.int_values()
        if values is not None:
            out._set_ints(values[indices])
        else:
            keys = self.keys
            out._set_keys([keys[i] for i in indices.tolist()])
        return out

    def _set_keys(self, keys: list[TableKey]) -> None:
        """Makes `keys` (distinct) the table of an empty block."""
        self._ints, self._n_ints, self._slot, self._by_values = None, 0, None, {}
        self._keys, self._index = keys, dict(zip(keys, range(len(keys))))

    def merged_states(self) -> Iterator[tuple[Key, Any]]:
        """Per (window, step) of its keys: the Overall key of this head and one state of the rows
        of every such key together (the Overall slice's share of rows with a value in this
        spec): the dense states merged (copies), plus the block merged into one key per (window,
        step) when it holds keys."""
        out: dict[tuple, Any] = {}
        for (_, window, step), state in self.dense.items():
            acc = out.get((window, step))
            out[(window, step)] = copy.deepcopy(state) if acc is None else acc.merge(state)
        if self.int_values() is not None and self._n_ints:
            groups: dict[tuple, int] = {(None, None): 0}
            index = np.zeros(self._n_ints, np.int64)
        elif self.n_keys():
            groups = {}
            index = np.fromiter((groups.setdefault((w, s), len(groups)) for _, w, s in self.keys),
                                np.int64, len(self.keys))
        if self.n_keys():
            merged = self.block.take(np.empty(0, np.int64)).merge(self.block, index)
            for (window, step), g in groups.items():
                acc = out.get((window, step))
                out[(window, step)] = (merged.state(g) if acc is None
                                       else acc.merge(merged.state(g)))
        for (window, step), state in out.items():
            yield Key((), (), self.head, window, step), state

    def shards(self, n: int = SHARDS) -> Iterator[tuple[int, 'KeyBlock']]:
        """(shard, block of its keys) for each shard holding keys; a key's shard depends only on
        the key (`shard_numbers`), so every bundle sends it to the same shard. The parts are new
        blocks handed over to the caller (their first deep copy is the part itself:
        `__deepcopy__`); with one shard, the part is this block. A block with `split` (e.g.
        `BinaryClassBlock.split`) is split in one pass, else each part is a `take`."""
        dense = list(self.dense)
        values = self.int_values()
        block_shard = ((shard_numbers(self.keys) if values is None else _int_shard_numbers(values))
                       % np.uint64(n)).astype(np.int64)
        dense_shard = (shard_numbers(dense) % np.uint64(n)).astype(np.int64)
        shards = np.union1d(block_shard, dense_shard)
        if shards.size == 1:
            yield int(shards[0]), self
            return
        split = getattr(self.block, 'split', None)
        blocks = split(block_shard, n) if split is not None else None
        for shard in shards.tolist():
            if blocks is None:
                part = self.take(np.flatnonzero(block_shard == shard))
            else:
                part = self._part(np.flatnonzero(block_shard == shard), blocks[shard])
            part.dense = {dense[i]: self.dense[dense[i]]
                          for i in np.flatnonzero(dense_shard == shard).tolist()}
            part._handed = True
            yield shard, part

    def __deepcopy__(self, memo: dict) -> 'KeyBlock':
        """A copy through the block's own `take` (numpy copies; the key tuples are immutable and
        shared) — Python's generic deepcopy walks every key's tuple.

        A part `shards` handed on (nobody else holds it: the bundle's block it came from is
        dropped) is its own first deep copy: the combine copies its first input so as not to change
        it, which for such a part only doubled the memory of every bundle's blocks."""
        if self._handed:
            self._handed = False
            return self
        out = KeyBlock(self.columns, self.head, self.block.take(np.arange(self.n_keys())))
        values = self.int_values()
        if values is not None:
            out._set_ints(values.copy())
        else:
            out._set_keys(list(self.keys))
        out.dense = copy.deepcopy(self.dense, memo)
        return out

    def __getstate__(self) -> tuple:
        values = self.int_values()
        if values is None:
            keys: Any = self.keys
        else:  # a table of numbers: its values, as int32 when they fit
            narrow = (values.size and -(1 << 31) <= values.min() and values.max() < (1 << 31))
            keys = (_INT_TABLE, values.astype(np.int32) if narrow else values)
        return (self.columns, self.head, keys, self.block, self.dense)

    def __setstate__(self, state: tuple) -> None:
        self.columns, self.head, keys, self.block, dense = state
        self._new_state, self._lo, self._handed, self._pickled = None, 0, False, None
        self.dense = {_canonical(k): s for k, s in dense.items()}
        if isinstance(keys, tuple) and len(keys) == 2 and keys[0] == _INT_TABLE:
            self._set_ints(keys[1].astype(np.int64))
            return
        if any(type(v) is float for k in keys for v in k[0]):  # NaN values: this process's
            keys = [_canonical(k) for k in keys]
        self._set_keys(list(keys))
