"""A block split into parts in one pass (`SparseCells.split`, `BinaryClassBlock.split`, and
`KeyBlock.shards` through them) and the sort that sums a table's pending rows
(`sparse_cells.stable_order`).

References: one `BinaryClassState` per key updated with its rows (tests/test_binary_block.py's
`_per_key`), (key, bucket) sums by `np.add.at`, and Python loops.
"""
from __future__ import annotations

import numpy as np
import pytest

import heads
from heads.metrics import sparse_cells
from heads.metrics.sparse_cells import SparseCells, part_ranks, stable_order
from pipeline.key_blocks import KeyBlock, _int_shard_numbers, shard_numbers
from pipeline.keys import SpecKeys

from test_binary_block import _assert_equal, _block, _data, _per_key

from _helpers import binary_arrays


def _dense(keys, buckets, values, n_keys, width):
    out = np.zeros((n_keys, width, values.shape[1]))
    np.add.at(out, (keys, buckets), values)
    return out


@pytest.mark.parametrize('n_keys, n_parts', [(1, 3), (40, 1), (700, 8), (5000, 5)])
def test_sparse_cells_parts_hold_each_part_s_keys_in_order(n_keys, n_parts):
    rng = np.random.default_rng(n_keys)
    width, n = 30, 6000
    keys, buckets = rng.integers(0, n_keys, n), rng.integers(0, width, n)
    values = rng.normal(size=(n, 2))
    table = SparseCells(width, 2)
    for at in np.array_split(np.arange(n), 4):
        table.add(keys[at], buckets[at], values[at])
    want = _dense(keys, buckets, values, n_keys, width)
    part_of_key = rng.integers(0, n_parts, n_keys)
    if n_parts > 2:
        part_of_key[part_of_key == 1] = 0  # a part without keys
    parts = table.split(part_of_key, n_parts)
    assert len(parts) == n_parts
    for p, part in enumerate(parts):
        mine = [k for k in range(n_keys) if part_of_key[k] == p]  # in key order
        np.testing.assert_allclose(part.dense(0, len(mine)), want[mine], rtol=1e-12)
        k, b, _ = part.entries()
        assert np.all(np.diff(k * width + b) > 0)  # sorted and unique, as a consolidated table
        assert part.entries()[0].size == 0 or part.entries()[0].max() < len(mine)


def test_part_ranks_number_each_part_s_keys_from_zero():
    parts = np.array([2, 0, 2, 1, 0, 2])
    ranks, seen = [], {}
    for p in parts.tolist():  # a loop: the count of earlier keys of the same part
        ranks.append(seen.get(p, 0))
        seen[p] = seen.get(p, 0) + 1
    assert part_ranks(parts, 3).tolist() == ranks


@pytest.mark.parametrize('kind', ['weighted', 'edges'])
def test_binary_block_parts_answer_as_their_keys_states(kind):
    head, codes, labels, logits, features, n_keys = _data(kind, 7)
    block = _block(head, codes, labels, logits, features, n_keys, batches=3)
    states = _per_key(head, codes, labels, logits, features, n_keys)
    part_of_key = np.random.default_rng(7).integers(0, 4, n_keys)
    part_of_key[part_of_key == 3] = 2  # part 3 empty
    parts = block.split(part_of_key, 4)
    for p, part in enumerate(parts):
        mine = [states[k] for k in range(n_keys) if part_of_key[k] == p]
        if mine:
            _assert_equal(part, mine)
        else:
            assert part.n_keys == 0 and part.auc.entries()[0].size == 0
    assert parts[3].n_keys == 0
    with pytest.raises(ValueError, match='parts for a block of'):
        block.split(part_of_key[:-1], 4)


_arrays = binary_arrays


@pytest.mark.parametrize('ints', [True, False])
def test_shards_of_a_split_block_hold_each_key_s_rows(ints):
    rng = np.random.default_rng(11)
    head = heads.BinaryClassHead(weight_column='w')
    values = rng.permutation(5000)[:300]
    codes = rng.integers(0, values.size, 4000)
    arrays = _arrays(rng, codes.size)
    kb = KeyBlock(('c',), 0, head.new_block())
    keys = (SpecKeys(('c',), None, None, None, values.astype(np.int64)) if ints
            else [(('c',), ('v%d' % v,), None, None) for v in values.tolist()])
    kb.add(keys, codes, arrays)
    assert (kb.int_values() is not None) == ints
    seen = {}
    for shard, part in kb.shards(8):
        for i, key in enumerate(part.keys):
            seen[key] = (shard, part.block.state(i))
    assert len(seen) == values.size
    table_keys = [((int(v),) if ints else ('v%d' % v,), None, None) for v in values.tolist()]
    numbers = (_int_shard_numbers(values) if ints else shard_numbers(table_keys)) % np.uint64(8)
    for j, key in enumerate(table_keys):
        shard, state = seen[key]
        assert shard == int(numbers[j])
        want = head.new_state()
        at = np.flatnonzero(codes == j)
        want.update(arrays.labels[at], arrays.logits[at], {'w': arrays.features['w'][at]})
        got_r, want_r = state.result(), want.result()
        assert list(got_r) == list(want_r)
        np.testing.assert_allclose([got_r[m] for m in want_r], [want_r[m] for m in want_r],
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('big', [False, True])
def test_stable_order_sorts_and_keeps_equal_codes_in_row_order(big):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 50, 3000)
    if big:  # codes too large to pack with their positions: the argsort way
        codes = codes * (1 << 55)
    got_codes, order = stable_order(codes)
    # A loop: positions grouped by code, codes ascending, positions ascending within a code.
    by_code: dict[int, list[int]] = {}
    for i, c in enumerate(codes.tolist()):
        by_code.setdefault(c, []).append(i)
    want = [i for c in sorted(by_code) for i in by_code[c]]
    assert order.tolist() == want
    assert got_codes.tolist() == sorted(codes.tolist())
    assert stable_order(np.empty(0, np.int64))[1].size == 0


def test_pending_rows_are_summed_in_row_order():
    # Sums that depend on the order of addition: each pair's rows are summed in row order (as
    # numpy sums the rows of the pair picked by a mask), whatever the sort.
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 6, 400)
    values = rng.choice([1e16, -1e16, 1.0, 3.0], (400, 2))
    got_codes, got = sparse_cells._aggregate(codes, values)
    assert got_codes.tolist() == sorted(set(codes.tolist()))
    for j, c in enumerate(got_codes.tolist()):
        np.testing.assert_array_equal(got[j], np.add.reduceat(values[codes == c], [0], axis=0)[0])


def _loop_bounds(table: SparseCells, keys) -> tuple[list[int], list[int]]:
    """(start, stop) of each key's entries, by walking the table's entries."""
    entry_keys = table.entries()[0].tolist()
    starts, stops = [], []
    for k in keys:
        at = [i for i, e in enumerate(entry_keys) if e == k]
        first = next((i for i, e in enumerate(entry_keys) if e >= k), len(entry_keys))
        starts.append(at[0] if at else first)
        stops.append(at[-1] + 1 if at else first)
    return starts, stops


def test_key_bounds_of_many_keys_few_keys_and_keys_past_the_table():
    rng = np.random.default_rng(21)
    table = SparseCells(7, 1)
    assert [a.tolist() for a in table.key_bounds(np.arange(300))] == [[0] * 300, [0] * 300]
    keys = rng.integers(0, 400, 900)
    table.add(keys, rng.integers(0, 7, 900), np.ones((900, 1)))
    for ask in (np.arange(420), rng.integers(0, 450, 300), np.array([3, 399, 405])):
        got = table.key_bounds(ask)  # counted once (>= 256 keys), then reused or searched
        assert [a.tolist() for a in got] == list(_loop_bounds(table, ask.tolist()))
    more = rng.integers(380, 500, 50)  # the table changes: its bounds are counted again
    table.add(more, rng.integers(0, 7, 50), np.ones((50, 1)))
    ask = np.arange(510)
    assert [a.tolist() for a in table.key_bounds(ask)] == list(_loop_bounds(table, ask.tolist()))
