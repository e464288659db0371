"""A key table of numbers (`KeyBlock` while every key is one int value without window and step)
against the table of tuples (the path every other key-block test checks): the same keys at the
same indices, the same sums, shards, pickles and merges, through growth of the direct-address
range, values spread too far for it, and keys of other kinds arriving later. And
`pipeline.keys.int_slice_codes` against `slice_codes`."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pyarrow as pa
import pytest

from pipeline.key_blocks import KeyBlock
from pipeline.keys import SpecKeys, int_slice_codes, key_codes, slice_codes

from _helpers import binary_arrays, binary_key_block


_arrays = binary_arrays


_block = binary_key_block


def _batch_values(rng: np.random.Generator, spread: int, offset: int, n: int) -> np.ndarray:
    """n distinct int values (a batch's dictionary, in order of first appearance)."""
    return offset + rng.choice(spread, size=n, replace=False).astype(np.int64)


def _add_both(rng, numbers: KeyBlock, tuples: KeyBlock, values: np.ndarray) -> None:
    rows = 3 * values.size + 5
    codes = rng.integers(-1, values.size, rows)
    arrays = _arrays(rng, rows)
    numbers.add(SpecKeys(('c',), None, None, None, ints=values), codes, arrays)
    tuples.add(SpecKeys(('c',), [(v,) for v in values.tolist()], None, None), codes, arrays)


def _assert_same(a: KeyBlock, b: KeyBlock) -> None:
    assert a.keys == b.keys
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.block.sums, b.block.sums)
    for table_a, table_b in zip(a.block._tables(), b.block._tables()):
        for x, y in zip(table_a.entries(), table_b.entries()):
            np.testing.assert_array_equal(x, y)


# (spread, offset) per batch: a compact range, growth on either side, negative values, and
# (last) values too far apart for a direct-address array.
BATCHES = [(300, 0), (300, 250), (1000, -700), (50, 5000), (40, 10 ** 12)]


@pytest.mark.parametrize('n_batches', [2, 4, 5])
def test_a_table_of_numbers_gives_the_tuples_indices_and_sums(n_batches):
    rng = np.random.default_rng(n_batches)
    numbers, tuples = _block(), _block()
    for spread, offset in BATCHES[:n_batches]:
        _add_both(rng, numbers, tuples, _batch_values(rng, spread, offset, min(spread, 120)))
    assert (numbers.int_values() is None) == (n_batches == 5)  # values 10^12 apart: tuples
    assert tuples.int_values() is None
    _assert_same(numbers, tuples)
    for key in tuples.keys + [((-10 ** 9,), None, None), ((3,), 0, None), (('3',), None, None),
                              ((3.5,), None, None), ((2 ** 70,), None, None)]:
        assert numbers.index_of(key) == tuples.index_of(key)
    # Shards: the same keys, sums and order.
    got = dict(numbers.shards())
    want = dict(tuples.shards())
    assert got.keys() == want.keys() and len(got) > 1
    for shard in want:
        _assert_same(got[shard], want[shard])
    # A pickle and a deep copy: the same table and numbers, and as cheap a form as numbers.
    for twin in (pickle.loads(pickle.dumps(numbers)), copy.deepcopy(numbers)):
        assert (twin.int_values() is None) == (numbers.int_values() is None)
        _assert_same(twin, tuples)
    # The Overall part: one merged state of every key.
    (key_a, state_a), = numbers.merged_states()
    (key_b, state_b), = tuples.merged_states()
    assert key_a == key_b and state_a.result() == pytest.approx(state_b.result(), nan_ok=True)


def test_merges_between_tables_of_numbers_and_of_tuples():
    rng = np.random.default_rng(11)
    parts = []
    for spread, offset in BATCHES[:4]:
        numbers, tuples = _block(), _block()
        _add_both(rng, numbers, tuples, _batch_values(rng, spread, offset, min(spread, 100)))
        parts.append((numbers, tuples))
    # Every mix of kinds, pickled as they cross to the combine.
    for kinds in ([0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 1]):
        acc_mixed, acc_ref = None, None
        for (numbers, tuples), kind in zip(parts, kinds):
            mixed = pickle.loads(pickle.dumps(numbers if kind == 0 else tuples))
            ref = pickle.loads(pickle.dumps(tuples))
            acc_mixed = copy.deepcopy(mixed) if acc_mixed is None else acc_mixed.merge(mixed)
            acc_ref = copy.deepcopy(ref) if acc_ref is None else acc_ref.merge(ref)
        _assert_same(acc_mixed, acc_ref)
        assert (acc_mixed.int_values() is not None) == (kinds == [0, 0, 0, 0])


def test_a_key_of_another_kind_turns_the_table_into_tuples():
    rng = np.random.default_rng(12)
    numbers, tuples = _block(), _block()
    _add_both(rng, numbers, tuples, _batch_values(rng, 500, 0, 100))
    assert numbers.int_values() is not None
    values = ['a', 3, 7.5, 40]
    codes, arrays = rng.integers(0, 4, 100), _arrays(rng, 100)
    for kb in (numbers, tuples):
        kb.add([(('c',), (v,), None, None) for v in values], codes, arrays)
    assert numbers.int_values() is None
    _assert_same(numbers, tuples)
    # Then a window: keys of numbers with a window start are tuples too.
    more = SpecKeys(('c',), [(1,), (2,)], 60, None)
    codes, arrays = rng.integers(0, 2, 80), _arrays(rng, 80)
    for kb in (numbers, tuples):
        kb.add(more, codes, arrays)
    _assert_same(numbers, tuples)


def test_take_with_repeats_and_in_any_order():
    rng = np.random.default_rng(13)
    numbers, tuples = _block(), _block()
    _add_both(rng, numbers, tuples, _batch_values(rng, 400, 0, 150))
    for picked in (rng.permutation(150)[:60], rng.integers(0, 150, 80), np.array([], np.int64)):
        got, want = numbers.take(picked), tuples.take(picked)
        assert got.keys == want.keys
        np.testing.assert_array_equal(got.block.sums, want.block.sums)


@pytest.mark.parametrize('typ', [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(),
                                 pa.uint16(), pa.uint32()])
def test_int_slice_codes_are_slice_codes(typ):
    rng = np.random.default_rng(14)
    hi = 100 if typ in (pa.int8(), pa.uint8()) else 5000
    lo = 0 if 'uint' in str(typ) else -hi
    raw = rng.integers(lo, hi, 400).tolist()
    for i in rng.integers(0, 400, 30).tolist():
        raw[i] = None
    chunked = pa.chunked_array([pa.array(raw[:150], typ), pa.array(raw[150:], typ)])
    for column in (pa.array(raw, typ), chunked):
        batch = pa.table({'c': column}).combine_chunks().to_batches()[0]
        want_codes, want_values = slice_codes(batch, ('c',))
        codes, values = int_slice_codes(batch, 'c')
        np.testing.assert_array_equal(codes, want_codes)
        assert [(v,) for v in values.tolist()] == want_values
        assert values.dtype == np.int64


@pytest.mark.parametrize('column', [pa.array([1, 2, None], pa.uint64()),
                                    pa.array([1.0, 2.0, None]), pa.array(['a', 'b', None]),
                                    pa.array([True, False, None]),
                                    pa.array([1, 2, 1]).dictionary_encode()])
def test_int_slice_codes_leaves_other_columns_to_slice_codes(column):
    batch = pa.record_batch([column], names=['c'])
    assert int_slice_codes(batch, 'c') is None


def test_key_codes_give_numbers_only_for_one_int_column():
    from pipeline.config.parse import load_config
    config = load_config({
        'input': {'pattern': 'x', 'format': 'parquet'},
        'heads': [{'type': 'BinaryClassHead', 'labels': 'y', 'logits': 'x'}],
        'slices': [[], ['c'], ['c', 'd'], ['d']], 'output': 'o'})
    batch = pa.record_batch([pa.array([5, 3, None, 5]), pa.array(['a', 'b', 'a', None])],
                            names=['c', 'd'])
    got = {keys.columns if isinstance(keys, SpecKeys) else keys[0][0]: keys
           for keys, _, _ in key_codes(config, batch, None, None)}
    assert got[('c',)].ints.tolist() == [5, 3] and got[('c',)].combos == [(5,), (3,)]
    assert list(got[('c',)]) == [(('c',), (5,), None, None), (('c',), (3,), None, None)]
    assert got[('c', 'd')].ints is None and got[('d',)].ints is None and got[()].ints is None


def test_a_handed_shard_part_is_its_own_first_copy_and_only_that():
    rng = np.random.default_rng(15)
    numbers, tuples = _block(), _block()
    _add_both(rng, numbers, tuples, _batch_values(rng, 1000, 0, 300))
    parts = dict(numbers.shards())
    assert len(parts) > 1
    part = next(iter(parts.values()))
    assert copy.deepcopy(part) is part          # handed over: the combine's copy is the part
    twin = copy.deepcopy(part)                  # any later copy is a copy
    assert twin is not part and twin.keys == part.keys
    twin.merge(copy.deepcopy(part))
    np.testing.assert_array_equal(twin.block.sums, 2 * part.block.sums)
    # The bundle's block itself, and unpickled blocks, are always copied.
    assert copy.deepcopy(numbers) is not numbers
    back = pickle.loads(pickle.dumps(part))
    assert copy.deepcopy(back) is not back
