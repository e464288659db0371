"""Blocks and results packs pickled several times while unchanged are packed once
(`pipeline.pickle_once`), and a change is always in the next pickle.

The reference for a block's contents is a block updated with the same rows and never pickled.
"""
from __future__ import annotations

import pickle

import numpy as np

from pipeline.key_blocks import KeyBlock
from pipeline.keys import SpecKeys

from _helpers import binary_arrays, binary_key_block


_arrays = binary_arrays


_block = binary_key_block


def _keys(values: list) -> list[tuple]:
    return [(('c',), (v,), None, None) for v in values]


def _count_packs(monkeypatch) -> list[int]:
    """[KeyBlock.__getstate__ calls from now on]."""
    count, getstate = [0], KeyBlock.__getstate__

    def counting(self):
        count[0] += 1
        return getstate(self)
    monkeypatch.setattr(KeyBlock, '__getstate__', counting)
    return count


def _same_block(a: KeyBlock, b: KeyBlock) -> None:
    assert a.keys == b.keys
    np.testing.assert_array_equal(a.block.sums, b.block.sums)
    for t, u in zip(a.block._tables(), b.block._tables()):
        for x, y in zip(t.entries(), u.entries()):
            np.testing.assert_array_equal(x, y)


def test_an_unchanged_block_is_packed_once_however_often_it_is_pickled(monkeypatch):
    rng = np.random.default_rng(1)
    packs = _count_packs(monkeypatch)
    kb, ref = _block(), _block()
    keys, codes, arrays = _keys(['x', 'y', 'z']), rng.integers(0, 3, 50), _arrays(rng, 50)
    kb.add(keys, codes, arrays)
    ref.add(keys, codes, arrays)
    first = pickle.dumps(kb, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.dumps(kb, protocol=pickle.HIGHEST_PROTOCOL) == first
    assert packs[0] == 1
    back = pickle.loads(first)
    _same_block(back, ref)
    # What was read from a pickle is pickled as those bytes again, not packed.
    assert pickle.loads(pickle.dumps(back)).keys == ref.keys and packs[0] == 1


def test_a_block_changed_after_a_pickle_is_pickled_with_the_change(monkeypatch):
    rng = np.random.default_rng(2)
    packs = _count_packs(monkeypatch)
    kb, other, ref = _block(), _block(), _block()
    parts = [(_keys(['x', 'y']), rng.integers(0, 2, 40), _arrays(rng, 40)),
             (_keys(['y', 'w']), rng.integers(0, 2, 30), _arrays(rng, 30)),
             (_keys(['v', 'x']), rng.integers(0, 2, 20), _arrays(rng, 20))]
    for part in parts:
        ref.add(*part)
    kb.add(*parts[0])
    pickle.dumps(kb)
    kb.add(*parts[1])  # add drops the kept pickle
    _same_block(pickle.loads(pickle.dumps(kb)), _block().merge(kb))
    other.add(*parts[2])
    back = pickle.loads(pickle.dumps(kb))
    back.merge(other)  # merge drops the pickle kept from the read
    _same_block(pickle.loads(pickle.dumps(back)), ref)
    assert packs[0] == 3  # kb before and after its add (once after: kept), back after its merge


def test_a_block_of_int_keys_changed_after_a_pickle_is_pickled_with_the_change():
    rng = np.random.default_rng(3)
    kb, ref = _block(), _block()
    batches = [(SpecKeys(('c',), None, None, None, np.array(vs, np.int64)),
                rng.integers(0, len(vs), 60), _arrays(rng, 60))
               for vs in ([5, 9, 2], [9, 100, 7, 11])]
    for keys, codes, arrays in batches:
        ref.add(keys, codes, arrays)
    kb.add(*batches[0])
    pickle.dumps(kb)
    kb.add(*batches[1])
    assert kb.int_values() is not None
    _same_block(pickle.loads(pickle.dumps(kb)), ref)


def test_a_results_pack_is_packed_once_and_reads_back_the_same(monkeypatch):
    from pipeline.block_results import ResultsPack
    rng = np.random.default_rng(4)
    count, getstate = [0], ResultsPack.__getstate__

    def counting(self):
        count[0] += 1
        return getstate(self)
    monkeypatch.setattr(ResultsPack, '__getstate__', counting)
    values = np.full((5, 2, 3), np.nan)
    values[:, :, 0] = rng.normal(size=(5, 2))
    pack = ResultsPack(('c',), 0, [((v,), None, None) for v in range(5)], ('auc', 'loss'),
                       values, np.arange(5.0), np.arange(5.0) / 2, {}, [])
    data = pickle.dumps(pack)
    assert pickle.dumps(pack) == data and count[0] == 1
    back = pickle.loads(data)
    assert back.keys == pack.keys
    np.testing.assert_array_equal(back.values, values)
    np.testing.assert_array_equal(back.weighted, np.arange(5.0) / 2)


def test_a_results_pack_given_new_keys_after_a_pickle_is_pickled_with_them():
    from pipeline.block_results import ResultsPack
    values = np.zeros((3, 1, 3))
    pack = ResultsPack(('c',), 0, None, ('auc',), values, np.ones(3), np.ones(3), {}, [],
                       int_values=np.array([4, 5, 6], np.int64))
    assert pickle.loads(pickle.dumps(pack)).keys == [((v,), None, None) for v in (4, 5, 6)]
    pack.keys = [(('a',), None, None), (('b',), None, None), (('c',), None, None)]
    assert pickle.loads(pickle.dumps(pack)).keys == pack.keys
