"""The compact pickled forms of a block's numbers give back the same numbers bit for bit:
`sparse_cells.pack_steps` (sorted codes as uint16 increments with escapes) and the binary block's
sums packed against each key's Σw (`binary_block._pack_sums`), on edge values (NaN, ±0.0, ±inf,
zero and negative weights, increments at and past the escape)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import heads
from heads.array import binary_block
from heads.metrics.sparse_cells import SparseCells, pack_steps, unpack_steps


@pytest.mark.parametrize('seed', range(4))
def test_codes_come_back_from_their_packed_increments(seed):
    rng = np.random.default_rng(seed)
    steps = rng.choice([0, 1, 5, 0xFFFE, 0xFFFF, 0x10000, 2 ** 40], size=500,
                       p=[.05, .4, .3, .05, .05, .05, .1])
    codes = np.cumsum(steps).astype(np.int64)
    small, big = pack_steps(codes)
    assert small.dtype == np.uint16
    assert big.size == np.count_nonzero(steps >= 0xFFFF)
    np.testing.assert_array_equal(unpack_steps((small, big)), codes)
    # The older plain form (increments as one array) still reads.
    np.testing.assert_array_equal(unpack_steps(np.diff(codes, prepend=0)), codes)
    empty = np.empty(0, np.int64)
    np.testing.assert_array_equal(unpack_steps(pack_steps(empty)), empty)


def test_a_pickled_sparse_table_is_the_same_table():
    rng = np.random.default_rng(7)
    table = SparseCells(8194, 2)
    keys = np.repeat(rng.choice(10 ** 6, 300, replace=False), 3)
    values = rng.normal(size=(keys.size, 2))
    values[::7] = 0.0
    values[::11, 0] = np.nan
    table.add(keys, rng.integers(0, 8194, keys.size), values)
    back = pickle.loads(pickle.dumps(table))
    for a, b in zip(table.entries(), back.entries()):
        np.testing.assert_array_equal(a, b)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint64)


def test_sums_packed_against_the_weight_come_back_bit_for_bit():
    rng = np.random.default_rng(8)
    n, cols = 400, 20
    w = rng.choice([0.0, -0.0, 1.5, -2.0, np.nan, np.inf, 0.25], size=n)
    sums = rng.normal(size=(n, cols))
    sums[:, binary_block.WEIGHT] = w
    for j in (2, 7, 11, 17):  # columns equal to the weight in some rows
        pick = rng.random(n) < 0.5
        sums[pick, j] = w[pick]
    sums[rng.random((n, cols)) < 0.2] = 0.0
    sums[rng.random((n, cols)) < 0.05] = -0.0
    sums[rng.random((n, cols)) < 0.05] = np.nan
    back = binary_block._unpack_sums(binary_block._pack_sums(sums))
    # Zeros come back as +0.0 (pack_nonzero keeps non-zero values only, as it always did).
    want = np.where(sums == 0, 0.0, sums)
    np.testing.assert_array_equal(_bits(back), _bits(want))
    # pack_nonzero's form (no weight bits) still reads.
    from heads.metrics.sparse_cells import pack_nonzero
    np.testing.assert_array_equal(_bits(binary_block._unpack_sums(pack_nonzero(sums))),
                                  _bits(want))


def test_a_pickled_binary_block_has_the_same_sums_and_tables():
    rng = np.random.default_rng(9)
    block = heads.BinaryClassHead(weight_column='w', thresholds=[0.3, 0.7]).new_block()
    n = 2000
    codes = rng.integers(-1, 700, n)
    w = rng.uniform(0.5, 1.5, (n, 1)).astype(np.float32).astype(np.float64)
    block.add(codes, 700, rng.integers(0, 2, (n, 1)).astype(np.float32),
              rng.normal(0, 2, (n, 1)).astype(np.float32), {'w': w})
    back = pickle.loads(pickle.dumps(block))
    np.testing.assert_array_equal(_bits(back.sums), _bits(block.sums))
    for t, u in zip(block._tables(), back._tables()):
        for a, b in zip(t.entries(), u.entries()):
            np.testing.assert_array_equal(a, b)


def _pack(keys, rng, bounds_of=(0,)):
    from pipeline.block_results import ResultsPack
    from pipeline.elements import Key
    from pipeline.metric_rows import MetricRows
    from pipeline.results import KeyResult
    k, names = len(keys), ('auc', 'accuracy', 'precision', 'loss')
    values = np.full((k, len(names), 3), np.nan)
    values[:, :, 0] = rng.normal(size=(k, len(names)))
    values[rng.random(k) < 0.2, 1, 0] = np.nan
    values[3 % k, 2, 0] = -0.0
    for j in bounds_of:  # a bound where finite, NaN elsewhere (as _metric_array fills them)
        values[:, j, 1:] = rng.normal(size=(k, 2))
        values[rng.random(k) < 0.3, j, 1:] = np.nan
    extra = [KeyResult(Key(('c',), ('dense',), 0, None, None),
                       MetricRows([('loss', 0.25, None, None)]), 3, 3.0, 0.25, {})]
    return ResultsPack(('c',), 0, keys, names, values, rng.integers(1, 9, k).astype(float),
                       rng.random(k), {1: {'curve': 'x'}}, extra)


@pytest.mark.parametrize('kind', ['ints', 'strings', 'windows', 'big ints', 'no bounds'])
def test_a_pickled_results_pack_is_the_same_pack(kind):
    rng = np.random.default_rng(10)
    values = rng.permutation(400)[:60].tolist()
    keys = {'ints': [((v,), None, None) for v in values],
            'no bounds': [((v,), None, None) for v in values],
            'strings': [(('u%d' % v,), None, None) for v in values],
            'windows': [((v,), 60 * (v % 3), None) for v in values],
            'big ints': [((v,), None, None) for v in values[:-1]] + [((2 ** 70,), None, None)]
            }[kind]
    pack = _pack(keys, rng, () if kind == 'no bounds' else (0, 2))
    back = pickle.loads(pickle.dumps(pack))
    assert back.keys == pack.keys
    assert [type(k[0][0]) for k in back.keys] == [type(k[0][0]) for k in pack.keys]
    np.testing.assert_array_equal(_bits(back.values), _bits(pack.values))
    for name in ('columns', 'head', 'names', 'plots', 'extra'):
        assert getattr(back, name) == getattr(pack, name)
    np.testing.assert_array_equal(back.counts, pack.counts)
    np.testing.assert_array_equal(back.weighted, pack.weighted)
    assert [r.key for r in back.results()] == [r.key for r in pack.results()]


@pytest.mark.parametrize('inexact', [False, True])
def test_nonzero_packing_against_a_loop(inexact):
    from heads.metrics.sparse_cells import pack_nonzero, unpack_nonzero
    rng = np.random.default_rng(12)
    a = rng.integers(-3, 4, (500, 3)).astype(np.float64) / 4  # float32-exact, a third 0
    a[rng.random(a.shape) < 0.1] = -0.0
    if inexact:
        a[rng.random(a.shape) < 0.3] = rng.random() / 3
        a[5, 1] = np.nan
    shape, _, _, narrow, wide = pack_nonzero(a)
    # A loop: the non-zero elements in order, those float32 holds exactly apart.
    exact, other = [], []
    for x in a.reshape(-1).tolist():
        if x != 0:
            (exact if float(np.float32(x)) == x else other).append(x)
    assert shape == a.shape
    assert narrow.dtype == np.float32 and narrow.astype(float).tolist() == exact
    assert wide.dtype == np.float64 and _bits(wide).tolist() == _bits(np.array(other)).tolist()
    want = np.array([0.0 if x == 0 else x for x in a.reshape(-1).tolist()]).reshape(a.shape)
    np.testing.assert_array_equal(_bits(unpack_nonzero(pack_nonzero(a))), _bits(want))
