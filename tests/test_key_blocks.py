"""Many keys of a slice spec as one columnar block (`pipeline.key_blocks`, `block_results`):
the same tables as one state per key, whatever the bundles, shards and merge order.

The reference is the run without blocks (one head state per key, the path every other test checks
against hand derivations and tf.estimator recordings); the block under test is the head's own
(`new_block`) and, for the pipeline's mechanics alone, `tests/_reference_block.ReferenceBlock`
(per-key states behind the block interface).
"""
from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import heads
from pipeline.block_results import block_results, key_counts, winners_of_counts
from pipeline.key_blocks import SHARDS, KeyBlock, block_key, is_block_key, shard_numbers
from pipeline.keys import SpecKeys
from pipeline.run import evaluate

from _helpers import write_shards, binary_arrays
from _reference_block import ReferenceBlock

RUNNER = ['--runner=DirectRunner']


def _reference(monkeypatch) -> None:
    monkeypatch.setattr(heads.BinaryClassHead, 'new_block',
                        lambda self: ReferenceBlock(self._array_face()), raising=False)


def _count_block_rows(monkeypatch, block_class: type) -> list[int]:
    """[rows added to blocks of this class from now on] (their keyed rows)."""
    count, add = [0], block_class.add

    def counting(self, codes, *args, **kwargs):
        count[0] += int(np.count_nonzero(codes >= 0))
        return add(self, codes, *args, **kwargs)
    monkeypatch.setattr(block_class, 'add', counting)
    return count


def _no_blocks(monkeypatch) -> None:
    monkeypatch.setattr('pipeline.config.EvalConfig.new_block', lambda self, head: None)


_arrays = binary_arrays


def _face() -> object:
    return heads.BinaryClassHead(weight_column='w')._array_face()


def _keys(values: list) -> list[tuple]:
    return [(('c',), (v,), None, None) for v in values]


def test_block_keys_are_told_apart_from_state_keys():
    assert is_block_key(block_key(('c',), 0, 3))
    assert not is_block_key((('c',), ('a',), 0, None, None))
    assert not is_block_key(((), (), 0, None))


def test_a_key_is_in_one_shard_whatever_the_block_and_every_key_is_in_one():
    rng = np.random.default_rng(1)
    values = ['v%d' % i for i in range(200)]
    shard_of = {}
    for trial in range(3):
        order = rng.permutation(200)[:150]
        kb = KeyBlock(('c',), 0, ReferenceBlock(_face()))
        kb.add(_keys([values[i] for i in order]), np.arange(150), _arrays(rng, 150))
        seen = []
        for shard, part in kb.shards():
            assert 0 <= shard < SHARDS
            for i in range(len(part)):
                key = part.keys[i]
                assert shard_of.setdefault(key, shard) == shard
                seen.append(key)
        assert sorted(seen) == sorted(kb.keys)
    assert len(set(shard_of.values())) > 1


def test_merge_joins_the_key_tables_and_adds_the_same_keys_numbers():
    rng = np.random.default_rng(2)
    a = KeyBlock(('c',), 0, ReferenceBlock(_face()))
    b = KeyBlock(('c',), 0, ReferenceBlock(_face()))
    whole = KeyBlock(('c',), 0, ReferenceBlock(_face()))
    arr1, arr2 = _arrays(rng, 40), _arrays(rng, 30)
    codes1, codes2 = rng.integers(-1, 3, 40), rng.integers(0, 3, 30)
    a.add(_keys(['x', 'y', 'z']), codes1, arr1)
    b.add(_keys(['z', 'w', 'x']), codes2, arr2)
    a.merge(pickle.loads(pickle.dumps(b)))
    assert a.keys == [(('x',), None, None), (('y',), None, None), (('z',), None, None),
                      (('w',), None, None)]
    # The same rows added straight to one block, key by key.
    whole.add(_keys(['x', 'y', 'z']), codes1, arr1)
    whole.add(_keys(['z', 'w', 'x']), codes2, arr2)
    for k in range(4):
        assert a.block.state(k).result() == pytest.approx(whole.block.state(k).result(),
                                                          rel=1e-12, nan_ok=True)
    with pytest.raises(ValueError, match="head 0 and .* head 1"):
        a.merge(KeyBlock(('c',), 1, ReferenceBlock(_face())))


def _sized_block(sizes: dict, window=None, head: int = 0) -> KeyBlock:
    """A block whose key v has sizes[v] rows (window `window`)."""
    rng = np.random.default_rng(5)
    kb = KeyBlock(('c',), head, ReferenceBlock(_face()))
    values = list(sizes)
    codes = np.repeat(np.arange(len(values)), [sizes[v] for v in values])
    kb.add([(('c',), (v,), window, None) for v in values], codes, _arrays(rng, codes.size))
    return kb


def _winners(blocks, limit: int) -> dict:
    return winners_of_counts([key_counts(kb) for kb in blocks], limit)


def _winning_values(kb, limit: int) -> set:
    return {key[0] for key in _winners([kb], limit).get(('c',), ())}


def test_plots_go_to_the_largest_keys_of_all_shards_ties_in_slice_order():
    one = _sized_block({'b': 5, 3: 2, 'a': 1})
    two = _sized_block({'a2': 5, 1: 2, 'z': 2})
    assert _winning_values(one, 2) == {('b',), (3,)}
    assert _winning_values(two, 2) == {('a2',), (1,)}  # 1 before 'z'
    winners = _winners([one, two], 3)
    # 5 rows: 'a2' and 'b' (text in order); then 2 rows: 1 before 3 (numbers by value) and 'z'.
    assert winners == {('c',): {(('a2',), None, None), (('b',), None, None),
                                ((1,), None, None)}}
    assert _winners([one], 0) == {} and winners_of_counts([], 3) == {}


def test_the_plot_limit_applies_per_window():
    early, late = _sized_block({'a': 3, 'b': 1}, window=0), _sized_block({'b': 4}, window=60)
    winners = _winners([early, late], 1)
    assert winners == {('c',): {(('a',), 0, None), (('b',), 60, None)}}


def test_block_results_read_plots_only_for_the_winners():
    kb = _sized_block({'a': 3, 'b': 2, 'c': 1})
    results = block_results(kb, ['click'], {('c',): {(('b',), None, None)}})
    assert [(r.key.slice_values, bool(r.plots)) for r in results] == [
        (('a',), False), (('b',), True), (('c',), False)]
    assert all(r.plots for r in block_results(kb, ['click'], None))
    assert [r.example_count for r in results] == [3, 2, 1]


def _data(tmp_path, n: int = 1200, values: int = 100, seed: int = 3, rows_per_batch: int = 400
          ) -> str:
    """Three shards of n/3 rows (one batch each); the first holds 10 users (its batch updates
    dense states, `DENSE_KEYS`), the others ~100 (the block): users 0-9 have rows in both."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, n).astype(np.float32)
    user = rng.integers(0, values, n)
    user[:n // 3] %= 10
    table = pa.table({
        'user': user,
        'country': rng.choice(['US', 'JP', 'DE'], n),
        'w': rng.uniform(0.0, 1.5, n).astype(np.float32),
        'x': x,
        'y': (rng.random(n) < 1 / (1 + np.exp(-x))).astype(np.int64),
        'r': rng.normal(1, 1, n).astype(np.float32),
        'ry': rng.normal(1, 1, n).astype(np.float32),
        'ts': rng.integers(0, 180, n),
        **{'m%d' % i: rng.normal(0, 1, n).astype(np.float32) for i in range(3)},
        'cls': rng.integers(0, 3, n),
    })
    return write_shards(table, tmp_path / 'data', 3, row_group_size=rows_per_batch)


# The whole-run tests' first two heads (over columns x, y, w and r, ry).
BINARY_AND_REGRESSION = [
    {'type': 'BinaryClassHead',
     'args': {'name': 'click', 'weight_column': 'w', 'thresholds': [0.3, 0.5]},
     'logits': 'x', 'labels': 'y'},
    {'type': 'RegressionHead', 'args': {'name': 'value'}, 'logits': 'r', 'labels': 'ry'}]


def _run(pattern: str, out, max_plots=None, window: bool = False) -> tuple[pa.Table, pa.Table]:
    config = {'input': {'pattern': pattern},
              'heads': BINARY_AND_REGRESSION + [
                        {'type': 'MultiClassHead',
                         'args': {'name': 'topic', 'n_classes': 3, 'weight_column': 'w'},
                         'logits': ['m0', 'm1', 'm2'], 'labels': 'cls'}],
              'slices': [[], ['user'], ['country', 'user']],
              'plots': {'max_slices': max_plots}}
    if window:
        config['window'] = {'column': 'ts', 'size': 60}
    evaluate(config, RUNNER, output=str(out))
    keys = ['slice', 'head', 'model', 'metric'] + (['window_start'] if window else [])
    metrics = pq.read_table(out / 'metrics').sort_by([(k, 'ascending') for k in keys])
    plots = pq.read_table(out / 'plots')
    return metrics, plots


def _same_metrics(a: pa.Table, b: pa.Table) -> None:
    assert a.num_rows == b.num_rows
    for col in ('slice', 'head', 'metric', 'example_count') + (
            ('window_start',) if 'window_start' in a.column_names else ()):
        assert a[col].to_pylist() == b[col].to_pylist(), col
    for col in ('value', 'lower_bound', 'upper_bound', 'weighted_example_count'):
        x, y = (np.asarray(t[col].to_pylist(), dtype=float) for t in (a, b))
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=col)


@pytest.mark.parametrize('block, window', [('reference', False), ('columnar', False),
                                           ('columnar', True)])
def test_a_run_with_blocks_writes_the_tables_of_one_state_per_key(tmp_path, monkeypatch, block,
                                                                 window):
    if block == 'reference':
        _reference(monkeypatch)
    elif not hasattr(heads.BinaryClassHead, 'new_block'):
        pytest.skip('BinaryClassHead has no columnar block yet')
    pattern = _data(tmp_path)
    with monkeypatch.context() as m:
        _no_blocks(m)
        expected, expected_plots = _run(pattern, tmp_path / 'per_key', window=window)
    before = ReferenceBlock.rows_added
    from heads.array.multi_class_block import MultiClassBlock
    from heads.array.regression_block import RegressionBlock
    regression_rows = _count_block_rows(monkeypatch, RegressionBlock)
    multi_class_rows = _count_block_rows(monkeypatch, MultiClassBlock)
    got, got_plots = _run(pattern, tmp_path / 'blocks', window=window)
    if block == 'reference':  # both non-Overall specs of the binary head went through blocks
        assert ReferenceBlock.rows_added - before == 2 * 800
    # The last two shards' batches of both specs; with windows also the first shard's crossed
    # spec (30 country × user values × 3 windows: more than DENSE_KEYS).
    in_blocks = 2 * 800 + (400 if window else 0)
    assert regression_rows == [in_blocks]  # and of the RegressionHead (its RegressionBlock)
    assert multi_class_rows == [in_blocks]  # and of the MultiClassHead (its MultiClassBlock)
    _same_metrics(got, expected)
    sort = [(k, 'ascending') for k in ('slice', 'head', 'sub_key', 'curve', 'threshold',
                                       'bucket_lower') + (('window_start',) if window else ())]
    a, b = got_plots.sort_by(sort), expected_plots.sort_by(sort)
    assert a.num_rows == b.num_rows > 0
    for col in ('slice', 'head', 'sub_key', 'curve'):
        assert a[col].to_pylist() == b[col].to_pylist(), col
    for col in ('threshold', 'tp', 'fp', 'tn', 'fn', 'precision', 'recall', 'bucket_lower',
                'weighted_examples', 'weighted_labels', 'weighted_predictions'):
        x, y = (np.asarray(t[col].to_pylist(), dtype=float) for t in (a, b))
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=col)


def test_with_a_plot_limit_blocks_plot_the_same_slices_as_one_state_per_key(tmp_path,
                                                                           monkeypatch):
    pattern = _data(tmp_path)
    with monkeypatch.context() as m:
        _no_blocks(m)
        expected, expected_plots = _run(pattern, tmp_path / 'per_key', max_plots=3)
    got, got_plots = _run(pattern, tmp_path / 'blocks', max_plots=3)
    _same_metrics(got, expected)
    plotted = sorted(set(zip(got_plots['slice'].to_pylist(), got_plots['head'].to_pylist())))
    assert plotted == sorted(set(zip(expected_plots['slice'].to_pylist(),
                                     expected_plots['head'].to_pylist())))
    # Overall and 3 slices of each of the two specs, for the binary and the multi-class head.
    assert len({s for s, _ in plotted}) == 1 + 3 + 3
    assert got_plots.num_rows == expected_plots.num_rows


def test_keys_found_by_their_values_are_the_keys_found_whole():
    """A batch's keys given as values sharing one window and step (`SpecKeys`) or as whole
    tuples land on the same table entries, in either order."""
    rng = np.random.default_rng(6)
    a = KeyBlock(('c',), 0, ReferenceBlock(_face()))
    b = KeyBlock(('c',), 0, ReferenceBlock(_face()))
    batches = [(['x', 'y'], 0), (['y', 'z'], 0), (['x'], 60), (['z', 'x'], 0)]
    for i, (values, window) in enumerate(batches):
        arrays, codes = _arrays(rng, 20), rng.integers(-1, len(values), 20)
        whole = [(('c',), (v,), window, None) for v in values]
        by_values = SpecKeys(('c',), [(v,) for v in values], window, None)
        a.add(by_values if i % 2 else whole, codes, arrays)
        b.add(whole if i % 2 else by_values, codes, arrays)
    assert a.keys == b.keys == [(('x',), 0, None), (('y',), 0, None), (('z',), 0, None),
                                (('x',), 60, None)]
    for k in range(4):
        assert a.block.state(k).counts() == b.block.state(k).counts()
    keys = SpecKeys(('c',), [('z',), ('x',)], 0, None)
    assert list(keys) == keys[:] == [(('c',), ('z',), 0, None), (('c',), ('x',), 0, None)]


def test_a_key_s_shard_number_does_not_depend_on_the_other_keys():
    keys = [((i,), None, None) for i in range(-3, 50)] + [
        (('a',), None, None), ((2.5,), None, None), ((3,), 0, None), ((True,), None, None),
        ((1, 'x'), None, None), ((2 ** 70,), None, None)]
    whole = shard_numbers(keys).tolist()
    positions = list(range(len(keys)))
    for part in (positions[::3], positions[1::2], positions[-6:], [4]):
        assert shard_numbers([keys[i] for i in part]).tolist() == [whole[i] for i in part]
    # Different keys, different numbers (here); True is not the int 1, (3,) in a window not 3.
    assert len(set(whole)) == len(keys)


def test_a_deep_copy_is_equal_and_independent():
    import copy
    rng = np.random.default_rng(8)
    kb = KeyBlock(('c',), 0, heads.BinaryClassHead(weight_column='w').new_block())
    kb.add(_keys(['x', 'y']), rng.integers(0, 2, 30), _arrays(rng, 30))
    twin = copy.deepcopy(kb)
    assert twin.keys == kb.keys and twin.block.results().keys() == kb.block.results().keys()
    for k, v in kb.block.results().items():
        np.testing.assert_array_equal(twin.block.results()[k], v)
    twin.add(_keys(['z']), np.zeros(10, np.int64), _arrays(rng, 10))
    assert len(twin) == 3 and len(kb) == 2
    assert kb.block.counts()[0].tolist() == twin.block.counts()[0][:2].tolist()


def test_a_key_with_rows_in_both_dense_state_and_block_reads_as_all_its_rows():
    rng = np.random.default_rng(9)
    face = _face()
    kb = KeyBlock(('c',), 0, face.new_block(), face.new_state)
    few, many = _arrays(rng, 30), _arrays(rng, 400)
    few_codes, many_codes = rng.integers(0, 2, 30), rng.integers(0, 100, 400)
    kb.add(_keys(['a', 'b']), few_codes, few)                            # 2 keys: dense
    kb.add(_keys(['a'] + ['v%d' % i for i in range(99)]), many_codes, many)  # 100: block
    assert set(kb.dense) == {(('a',), None, None), (('b',), None, None)} and len(kb) == 101
    parts = [pickle.loads(pickle.dumps(part)) for _, part in kb.shards()]
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    by_value = {r.key.slice_values: r for r in block_results(merged, [''], None)}
    assert len(by_value) == 101
    # 'a': code 0 of both batches, read as one state of all those rows.
    expected = face.new_state()
    for arrays, codes in ((few, few_codes), (many, many_codes)):
        rows = codes == 0
        expected.update(arrays.labels[rows], arrays.logits[rows],
                        {"w": arrays.features["w"][rows]})
    got = dict((m, v) for m, v, _, _ in by_value[('a',)].metrics)
    for metric, value in expected.result().items():
        assert got[metric] == pytest.approx(value, rel=1e-9, nan_ok=True), metric
    assert by_value[('a',)].example_count == int(expected.counts()[0])
    assert by_value[('a',)].plots and by_value[('v0',)].plots


@pytest.mark.parametrize('values, first', [
    ([7, -2, 30, 5, -40, 12], [-40, -2, 5]),               # ints: by value
    (['b', 'B', 'a', 'ab', 'Z'], ['B', 'Z', 'a']),          # text: by code point
    ([2.5, 1, 'a', 0.5], [0.5, 1, 2.5]),                    # mixed: numbers before text
    ([2 ** 70, 3, -(2 ** 70)], [-(2 ** 70), 3, 2 ** 70]),   # beyond int64
])
def test_among_slices_of_equal_size_the_first_in_slice_order_get_plots(values, first):
    kb = _sized_block({v: 2 for v in values})
    assert _winning_values(kb, 3) == {(v,) for v in first}


def test_blocks_handed_on_early_give_the_same_tables(tmp_path, monkeypatch):
    """A bundle whose blocks outgrow MAX_BLOCK_KEYS hands them on mid-bundle; the combine merges
    the parts as it merges bundles'."""
    from pipeline import evaluate as evaluate_lib
    pattern = _data(tmp_path, rows_per_batch=100)  # 4 batches a bundle: handed on after each
    with monkeypatch.context() as m:
        _no_blocks(m)
        expected, _ = _run(pattern, tmp_path / 'per_key')
    monkeypatch.setattr(evaluate_lib, 'MAX_BLOCK_KEYS', 30)
    got, _ = _run(pattern, tmp_path / 'blocks')
    _same_metrics(got, expected)
