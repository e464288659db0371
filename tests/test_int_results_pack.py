"""A shard of int keys read as numbers (`block_results.results_pack`, `key_counts` and
`ResultsPack` without building the keys' tuples): the same keys, metrics and plotted keys as
one `BinaryClassState` per key and loops over the keys.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import heads
from pipeline.block_results import ResultsPack, key_counts, results_pack, winners_of_counts
from pipeline.elements import HeadArrays
from pipeline.key_blocks import KeyBlock
from pipeline.keys import SpecKeys
from pipeline.results import strip_suffix


def _block(seed: int = 1, n_keys: int = 90, n: int = 1500, ties: bool = False):
    """(KeyBlock of int keys, head, each value's rows (label, logit, w)); `ties`: most keys with
    as many rows as another."""
    rng = np.random.default_rng(seed)
    head = heads.BinaryClassHead(weight_column='w', name='click')
    values = rng.permutation(10 * n_keys)[:n_keys].astype(np.int64)
    kb = KeyBlock(('c',), 0, head.new_block())
    rows: dict[int, list] = {}
    for part in range(3):  # three batches, keys in each batch's own order
        codes = rng.integers(0, n_keys, n // 3) ** 2 % n_keys  # sizes differ, ties too
        if ties:
            codes = rng.permutation(np.repeat(np.arange(n_keys), 2)[:n // 3])
        labels = rng.integers(0, 2, (codes.size, 1)).astype(np.float32)
        logits = rng.normal(0, 2, (codes.size, 1)).astype(np.float32)
        w = rng.uniform(0.5, 1.5, (codes.size, 1))
        kb.add(SpecKeys(('c',), None, None, None, values), codes,
               HeadArrays(labels=labels, logits=logits, features={'w': w}))
        for j, c in enumerate(codes.tolist()):
            rows.setdefault(int(values[c]), []).append((labels[j], logits[j], w[j]))
    assert kb.int_values() is not None and not kb.dense
    return kb, head, rows


def _state(head, rows):
    st = head.new_state()
    if rows:
        labels, logits, w = (np.array([r[i] for r in rows]) for i in range(3))
        st.update(labels, logits, {'w': w})
    return st


@pytest.mark.parametrize('limit', [None, 7])
def test_a_shard_of_int_keys_reads_as_one_state_per_key(limit):
    kb, head, rows = _block()
    table = [((int(v),), None, None) for v in kb.int_values().tolist()]
    winners = None
    if limit is not None:
        winners = winners_of_counts([key_counts(kb)], limit)
        winners[('c',)].add(((123456,), None, None))  # a winner of another shard
    pack = results_pack(kb, ['click'], winners)
    assert pack.int_values() is not None and pack.keys == table and pack.extra == []
    for i, key in enumerate(table):
        want = _state(head, rows.get(key[0][0], []))
        got = dict(zip(pack.names, pack.values[i, :, 0].tolist()))
        for m, v in want.result().items():
            np.testing.assert_allclose(got[strip_suffix(m, 'click')], v, rtol=1e-9, atol=1e-12)
        assert pack.counts[i] == want.counts()[0]
    plotted = (set(range(len(table))) if winners is None
               else {i for i, k in enumerate(table) if k in winners[('c',)]})
    assert set(pack.plots) == plotted and list(pack.plots) == sorted(plotted)
    back = pickle.loads(pickle.dumps(pack))
    assert back.keys == table and back.int_values().tolist() == kb.int_values().tolist()
    np.testing.assert_array_equal(back.values, pack.values)


@pytest.mark.parametrize('ties', [False, True])
def test_plot_winners_of_int_keys_are_the_largest_then_the_smallest_values(ties):
    kb, _, rows = _block(seed=2, n=300, ties=ties)
    limit = 9
    columns, values, counts = key_counts(kb)
    assert columns == ('c',) and values.tolist() == kb.int_values().tolist()
    assert counts.tolist() == [len(rows.get(v, [])) for v in values.tolist()]
    # A loop: every key of the table with its row count, most rows first, then smaller values.
    sizes = [(-len(rows.get(v, [])), v) for v in kb.int_values().tolist()]
    want = sorted(sizes)[:limit]
    assert winners_of_counts([key_counts(kb)], limit) == {
        ('c',): {((v,), None, None) for _, v in want}}


def test_a_results_pack_needs_keys_or_int_values():
    with pytest.raises(ValueError, match='keys or int_values'):
        ResultsPack(('c',), 0, None, ('loss',), np.zeros((0, 1, 3)), np.zeros(0), np.zeros(0),
                    {}, [])
    pack = ResultsPack(('c',), 0, None, ('loss',), np.zeros((2, 1, 3)), np.zeros(2), np.zeros(2),
                       {}, [], int_values=np.array([5, -3]))
    assert pack.keys == [((5,), None, None), ((-3,), None, None)]
    pack.keys = [(('a',), None, None), (('b',), None, None)]
    assert pack.int_values() is None and pickle.loads(pickle.dumps(pack)).keys == pack.keys


def _loop_winners(blocks: list[KeyBlock], limit: int) -> dict:
    """Per spec, window and step, the `limit` keys with the most rows over all blocks, ties by
    slice value (numbers by value, text in order), by a loop."""
    from pipeline.key_columns import values_order
    total: dict = {}
    for kb in blocks:
        counts = kb.block.counts()[0]
        for i, key in enumerate(kb.keys):
            total[key] = total.get(key, 0.0) + counts[i]
        for key, state in kb.dense.items():
            total[key] = total.get(key, 0.0) + state.counts()[0]
    out: dict = {}
    for key in sorted(total, key=lambda k: (-total[k], values_order(k[0]))):
        group = out.setdefault((key[1], key[2]), [])
        if len(group) < limit:
            group.append(key)
    return {('c',): {k for group in out.values() for k in group}} if out else {}


@pytest.mark.parametrize('kind', ['ints', 'text', 'windows', 'dense'])
def test_winners_from_the_counts_of_every_part_are_the_largest_keys_overall(kind):
    from pipeline.block_results import key_counts, winners_of_counts
    rng = np.random.default_rng(31)
    head = heads.BinaryClassHead(weight_column='w')
    parts = []
    for bundle in range(3):  # parts of overlapping keys, as bundles hand them on
        kb = KeyBlock(('c',), 0, head.new_block(),
                      (lambda: head.new_state()) if kind == 'dense' else None)
        for _ in range(2):
            values = rng.permutation(60)[:40]
            codes = rng.integers(0, values.size, 150)
            if kind == 'dense':  # few keys a batch: dense states, some keys in both
                values, codes = values[:5], codes % 5
            arrays = HeadArrays(labels=rng.integers(0, 2, (150, 1)).astype(np.float32),
                                logits=rng.normal(0, 2, (150, 1)).astype(np.float32),
                                features={'w': np.ones((150, 1))})
            if kind == 'ints':
                keys = SpecKeys(('c',), None, None, None, values.astype(np.int64))
            else:
                keys = [(('c',), (('v%02d' % v) if kind == 'text' else int(v),),
                         (60 * (v % 2) if kind == 'windows' else None), None)
                        for v in values.tolist()]
            kb.add(keys, codes, arrays)
        parts.append(kb)
    if kind == 'dense':
        assert parts[0].dense
    for limit in (1, 4, 100):
        got = winners_of_counts([key_counts(kb) for kb in parts], limit)
        assert got == _loop_winners(parts, limit), limit
    assert winners_of_counts([key_counts(kb) for kb in parts], 0) == {}
    assert winners_of_counts([], 3) == {}
