"""Every key of one (slice spec, head) as one columnar state: `KeyBlock`.

A slice spec with 10^5 values makes 10^5 keys. As one head-state object per key, each key costs
about a millisecond across the update, the pickling of partial states, their merging and the
reading of its metrics — minutes for such a spec, against a second for a spec of 5 values. A
`KeyBlock` holds every key of one spec and head that a bundle saw: the key table (per key index,
its slice values, window start and step) and the head's columnar block (`head.new_block()`, e.g.
`heads.array.binary_block.BinaryClassBlock`), whose update, merge and metrics are vectorised over
keys. Python touches a key only to find its index in the table (one dict lookup per key and batch).

How a block travels (batch runs with the pre-combine; `pipeline.config.EvalConfig.new_block` says
which heads have blocks): `BatchEvaluator` updates one KeyBlock per (spec, head) for the bundle and
at its end splits it into `SHARDS` blocks by a hash of each key that does not depend on the
process (`shards`), keyed `block_key(columns, head, shard)`; the CombineFn merges the blocks of a
shard (`merge`: the key tables joined, the numbers added); `pipeline.block_results` reads a shard's
metrics as one array per metric. Every key lands in one shard whatever the bundles, so results do
not depend on sharding or bundle order (merging is associative and commutative, as for states).
"""
from __future__ import annotations

import zlib
from typing import Any, Iterator, Sequence

import numpy as np

from pipeline.elements import HeadArrays, Key
from pipeline.keys import SpecKeys

__all__ = ['BLOCK_TAG', 'SHARDS', 'KeyBlock', 'block_key', 'is_block_key']

BLOCK_TAG = '__block__'
# Shards of a spec's keys: the unit of the combine and of reading metrics (bounded memory each,
# parallel on runners with several workers).
SHARDS = 8

#: A key's place in its block's table: (slice values, window start, step).
TableKey = tuple[tuple[Any, ...], int | None, int | None]


def block_key(columns: tuple[str, ...], head: int, shard: int) -> tuple:
    """The Beam key of a shard's block: a plain tuple (Beam's deterministic coder), told apart
    from a state's key (`tuple(Key)`, whose first item is a tuple of columns) by its tag."""
    return (BLOCK_TAG, tuple(columns), int(head), int(shard))


def is_block_key(key: Sequence[Any]) -> bool:
    return len(key) == 4 and key[0] == BLOCK_TAG


def _stable_hash(key: TableKey) -> int:
    """The same number for the same key in every process (Python's hash of a str is salted)."""
    return zlib.crc32(repr(key).encode('utf-8', 'surrogatepass'))


_INT64 = (-(1 << 63), 1 << 63)


def _is_int_key(key: TableKey) -> bool:
    values, window, step = key
    return (len(values) == 1 and type(values[0]) is int and _INT64[0] <= values[0] < _INT64[1]
            and window is None and step is None)


def shard_numbers(keys: Sequence[TableKey]) -> np.ndarray:
    """A number per key, the same for the same key in every process and whatever the other
    keys: a key of one int value (no window, no step) mixed with numpy (the common case at 10^6
    values, ~20x cheaper), any other `_stable_hash`."""
    n = len(keys)
    simple = np.fromiter(map(_is_int_key, keys), bool, n)
    out = np.empty(n, np.uint64)
    idx = np.flatnonzero(simple)
    if idx.size:
        values = np.fromiter((keys[i][0][0] for i in idx.tolist()), np.int64, idx.size)
        x = values.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        out[idx] = x ^ (x >> np.uint64(29))
    for i in np.flatnonzero(~simple).tolist():
        out[i] = _stable_hash(keys[i])
    return out


class KeyBlock:
    """The states of every key of slice spec `columns` for head index `head`, columnar.

    `keys[i]` is key i's (slice values, window start, step); `block` the head's block over them.
    """

    __slots__ = ('columns', 'head', 'keys', 'block', '_index', '_by_values')

    def __init__(self, columns: tuple[str, ...], head: int, block: Any) -> None:
        self.columns = tuple(columns)
        self.head = int(head)
        self.keys: list[TableKey] = []
        self.block = block
        self._index: dict[TableKey, int] = {}
        # Per (window, step): slice values → index, for batches whose keys share them.
        self._by_values: dict[tuple, dict[tuple, int]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def key(self, i: int) -> Key:
        values, window, step = self.keys[i]
        return Key(self.columns, values, self.head, window, step)

    def index_of(self, key: TableKey) -> int | None:
        """The index of a (slice values, window, step) in the table, None if absent."""
        return self._index.get(key)

    def _indices(self, keys: Sequence[TableKey]) -> np.ndarray:
        """Each key's index in the table, adding the keys it does not hold yet (lookups and
        inserts as whole-list dict operations, in C)."""
        index = self._index
        found = list(map(index.get, keys))
        if None in found:
            new = list(dict.fromkeys(k for k, j in zip(keys, found) if j is None))
            start = len(self.keys)
            self.keys.extend(new)
            index.update(zip(new, range(start, start + len(new))))
            found = list(map(index.get, keys))
        return np.fromiter(found, np.int64, len(found))

    def _indices_of_values(self, combos: list[tuple], window: int | None, step: int | None
                           ) -> np.ndarray:
        """`_indices` of keys (combos[i], window, step), looked up by `combos` alone: no key
        tuple is built for keys this block has seen."""
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
        if isinstance(keys, SpecKeys):
            index = self._indices_of_values(keys.combos, keys.window, keys.step)
        else:
            index = self._indices([(k[1], k[2], k[3]) for k in keys])
        rows = np.where(codes >= 0, index[np.maximum(codes, 0)], -1) if index.size else codes
        self.block.add(rows, len(self.keys), arrays.labels, arrays.logits,
                       arrays.features or None)

    def merge(self, other: 'KeyBlock') -> 'KeyBlock':
        """Adds `other`'s keys (left unchanged) to this block; returns self."""
        if (other.columns, other.head) != (self.columns, self.head):
            raise ValueError('Cannot merge the blocks of %r head %d and %r head %d.'
                             % (self.columns, self.head, other.columns, other.head))
        self.block.merge(other.block, self._indices(other.keys))
        return self

    def take(self, indices: np.ndarray) -> 'KeyBlock':
        """A new block of these keys, in this order."""
        out = KeyBlock(self.columns, self.head, self.block.take(indices))
        picked = indices.tolist()
        keys = [self.keys[i] for i in picked]
        if len(set(picked)) == len(picked):
            out._set_keys(keys)
        else:
            out._indices(keys)
        return out

    def _set_keys(self, keys: list[TableKey]) -> None:
        """Makes `keys` (distinct) the table of an empty block."""
        self.keys, self._index = keys, dict(zip(keys, range(len(keys))))

    def shards(self, n: int = SHARDS) -> Iterator[tuple[int, 'KeyBlock']]:
        """(shard, block of its keys) for each shard holding keys; a key's shard depends only on
        the key (`shard_numbers`), so every bundle sends it to the same shard."""
        if not self.keys:
            return
        shard = (shard_numbers(self.keys) % np.uint64(n)).astype(np.int64)
        if (shard == shard[0]).all():
            yield int(shard[0]), self
            return
        order = np.argsort(shard, kind='stable')
        cuts = np.flatnonzero(np.diff(shard[order])) + 1
        for part in np.split(order, cuts):
            yield int(shard[part[0]]), self.take(part)

    def __deepcopy__(self, memo: dict) -> 'KeyBlock':
        """A copy through the block's own `take` (numpy copies; the key tuples are immutable and
        shared) — Python's generic deepcopy walks every key's tuple."""
        out = KeyBlock(self.columns, self.head, self.block.take(np.arange(len(self.keys))))
        out._set_keys(list(self.keys))
        return out

    def __getstate__(self) -> tuple:
        return (self.columns, self.head, self.keys, self.block)

    def __setstate__(self, state: tuple) -> None:
        self.columns, self.head, keys, self.block = state
        self._set_keys(list(keys))
        self._by_values = {}
