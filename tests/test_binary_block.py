"""`BinaryClassBlock` (issue 21): the states of many keys of one BinaryClassHead as columns must
answer, key by key, as one `BinaryClassState` per key updated with that key's rows — results,
losses, counts, bounds and (through `state(k)`) plots, at rtol 1e-9 — after one add, many adds,
merges of partial blocks in any order through shuffled index maps, take() and pickles. Keys
without rows, with all weights 0 or with one class only answer exactly as the state does; a
batch the state rejects is rejected with the same exception and message, changing nothing.

The reference, `BinaryClassState`, is checked against tf.estimator 2.15 recordings elsewhere.
"""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from heads import BinaryClassHead
from heads.array.binary_block import BinaryClassBlock
from heads.metrics.sparse_cells import (SparseCells, pack_nonzero, ragged_positions,
                                        unpack_nonzero)

from _block_cases import ATOL, RTOL, merge_in_orders, partial


def _square_loss(labels, logits):
    return (logits - labels) ** 2


HEADS = {
    'weighted': lambda: BinaryClassHead(weight_column='w', thresholds=[0.3, 0.5, 0.7],
                                        name='click'),
    'plain': lambda: BinaryClassHead(),
    'vocabulary_sum': lambda: BinaryClassHead(weight_column='w', label_vocabulary=['no', 'yes'],
                                              loss_reduction='sum', thresholds=[0.7, 0.2]),
    'loss_fn': lambda: BinaryClassHead(weight_column='w', loss_fn=_square_loss,
                                       loss_reduction='sum_over_batch_size', name='sq'),
    'soft': lambda: BinaryClassHead(weight_column='w', thresholds=[0.5, 0.25]),
    'edges': lambda: BinaryClassHead(weight_column='w', thresholds=[0.5]),
}
# Rows per key: single rows, a few, > 2,000 (a dense per-key state), none, and the special keys
# of `_data` (all weights 0, one class only).
SIZES = [1, 1, 2, 3, 5, 2500, 40, 0, 12, 30, 7, 0, 150, 1]
ZERO_WEIGHTS, ONE_CLASS, EMPTY = 8, 9, (7, 11)


def _data(kind: str, seed: int, sizes=SIZES):
    """(head, codes, labels, logits, features, n_keys): the rows of each key in random order,
    plus rows in no key (code −1)."""
    rng = np.random.default_rng(seed)
    codes = np.concatenate([np.full(s, k) for k, s in enumerate(sizes)] + [np.full(9, -1)])
    codes = codes[rng.permutation(codes.size)]
    n = codes.size
    x = rng.normal(0.0, 2.0, (n, 1)).astype(np.float32)
    y = (rng.random((n, 1)) < 1 / (1 + np.exp(-x))).astype(np.int64)
    w = np.round(rng.random((n, 1)) * 3, 2)
    w[rng.random(n) < 0.1] = 0.0
    w[codes == ZERO_WEIGHTS] = 0.0
    y[codes == ONE_CLASS] = 1
    labels = y
    if kind == 'soft':
        labels = np.round(rng.random((n, 1)), 2).astype(np.float32)
        labels[codes == ONE_CLASS] = 0.0
    elif kind == 'vocabulary_sum':
        labels = np.asarray(['no', 'yes'], dtype=object)[y]
    elif kind == 'edges':
        r = rng.random(n)
        x[r < 0.05, 0] = np.nan           # NaN scores: in the totals, in no bucket
        x[(r >= 0.05) & (r < 0.1), 0] = 40.0    # probability exactly 1
        x[(r >= 0.1) & (r < 0.15), 0] = -200.0  # probability exactly 0
        x[(r >= 0.15) & (r < 0.2), 0] = 0.0     # ties at the class threshold
        w[(r >= 0.2) & (r < 0.22)] *= -1        # negative weights: no bounds
    features = None if kind == 'plain' else {'w': w}
    return HEADS[kind](), codes, labels, x, features, len(sizes)


def _rows(labels, logits, features, at):
    return labels[at], logits[at], None if features is None else {'w': features['w'][at]}


def _per_key(head, codes, labels, logits, features, n_keys):
    """One `BinaryClassState` per key, updated with the key's rows in one batch."""
    states = []
    for k in range(n_keys):
        st = head.new_state()
        at = np.flatnonzero(codes == k)
        if at.size:
            st.update(*_rows(labels, logits, features, at))
        states.append(st)
    return states


def _assert_equal(block: BinaryClassBlock, states, exact=(), plots=True) -> None:
    """Every key's results, losses, counts and bounds (and plots) equal its state's, NaN and 0
    exactly where the state gives them; the keys in `exact` bit for bit."""
    assert block.n_keys == len(states)
    res = block.results()
    want = [st.result() for st in states]
    assert list(res) == list(want[0])
    got_b = block.bounds()
    want_b = [st.bounds() for st in states]
    assert list(got_b) == list(want_b[0])
    pairs = [(res[m], [r[m] for r in want], m) for m in res]
    for m in got_b:
        pairs.append((got_b[m][0], [b[m][0] for b in want_b], m + ' lower'))
        pairs.append((got_b[m][1], [b[m][1] for b in want_b], m + ' upper'))
    ex, wt = block.counts()
    pairs += [(block.losses(), [st.loss() for st in states], 'loss'),
              (ex, [st.counts()[0] for st in states], 'examples'),
              (wt, [st.counts()[1] for st in states], 'weights')]
    for got, expected, name in pairs:
        got, expected = np.asarray(got), np.asarray(expected, dtype=np.float64)
        assert got.shape == (len(states),), name
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, equal_nan=True,
                                   err_msg=name)
        # Degenerate values (NaN, 0) exactly as the state gives them, for every key.
        degenerate = np.isnan(expected) | (expected == 0)
        assert np.array_equal(got[degenerate], expected[degenerate], equal_nan=True), name
        for k in exact:
            assert np.array_equal(got[k], expected[k], equal_nan=True), (name, k)
    if plots:
        for k, st in enumerate(states):
            _assert_plots_equal(block.state(k).plots(), st.plots())


def _assert_plots_equal(got, want) -> None:
    assert list(got) == list(want)
    for col, v in want.items():
        if v.dtype == object:
            assert got[col].tolist() == v.tolist(), col
        else:
            np.testing.assert_allclose(got[col], v, rtol=RTOL, atol=ATOL, equal_nan=True,
                                       err_msg=col)


def _same_arrays(a: BinaryClassBlock, b: BinaryClassBlock) -> bool:
    """Whether two blocks hold the same sums, bit for bit."""
    if not np.array_equal(a.sums, b.sums, equal_nan=True):
        return False
    for ta, tb in zip((a.auc, a.histogram, a.calibration), (b.auc, b.histogram, b.calibration)):
        if not all(np.array_equal(x, y, equal_nan=True)
                   for x, y in zip(ta.entries(), tb.entries())):
            return False
    return True


def _block(head, codes, labels, logits, features, n_keys, batches=1, rng=None):
    block = head.new_block()
    for at in np.array_split(np.arange(codes.size), batches):
        if rng is not None:  # a block sized to the keys seen so far
            n_keys_now = int(codes[:at[-1] + 1].max()) + 1 if at.size else 0
            n = max(n_keys_now, int(rng.integers(0, n_keys + 1)))
        else:
            n = n_keys
        block.add(codes[at], n, *_rows(labels, logits, features, at))
    block.grow(n_keys)  # keys with no rows at the end
    return block


@pytest.mark.parametrize('kind', list(HEADS))
def test_one_add_answers_as_a_state_per_key(kind):
    head, codes, labels, logits, features, n_keys = _data(kind, 0)
    block = _block(head, codes, labels, logits, features, n_keys)
    states = _per_key(head, codes, labels, logits, features, n_keys)
    _assert_equal(block, states, exact=EMPTY + (ZERO_WEIGHTS,))
    one_class = block.results()
    for m in (k for k in one_class if k.split('/')[0] == 'auc'):  # Keras' ROC AUC: 0
        assert one_class[m][ONE_CLASS] == 0.0
    assert np.isnan(block.bounds()[next(iter(block.bounds()))][0][ONE_CLASS])


@pytest.mark.parametrize('kind', list(HEADS))
@pytest.mark.parametrize('seed', range(2))
def test_many_adds_answer_as_one(kind, seed):
    head, codes, labels, logits, features, n_keys = _data(kind, seed)
    rng = np.random.default_rng(seed)
    block = _block(head, codes, labels, logits, features, n_keys, batches=int(rng.integers(3, 20)),
                   rng=rng)
    _assert_equal(block, _per_key(head, codes, labels, logits, features, n_keys),
                  exact=EMPTY, plots=seed == 0)


@pytest.mark.parametrize('kind', ['weighted', 'vocabulary_sum', 'soft', 'edges'])
@pytest.mark.parametrize('seed', range(3))
def test_partial_blocks_merged_in_any_order_through_index_maps(kind, seed):
    head, codes, labels, logits, features, n_keys = _data(kind, seed)
    rng = np.random.default_rng(100 + seed)
    perm = rng.permutation(n_keys)  # key k of the data is key perm[k] of the merged block
    cuts = np.sort(rng.integers(0, codes.size + 1, int(rng.integers(1, 8))))
    parts = []
    for at in np.split(np.arange(codes.size), cuts):  # each numbering the keys it saw in order
        keys = np.unique(codes[at][codes[at] >= 0])
        parts.append(partial(head.new_block, np.where(codes[at] >= 0, perm[codes[at]], -1),
                             perm[keys], _rows(labels, logits, features, at),
                             n_adds=int(rng.integers(1, 4))))
    before = [pickle.loads(pickle.dumps(p)) for p, _ in parts]
    states = _per_key(head, codes, labels, logits, features, n_keys)
    inverse = np.argsort(perm)
    merge_in_orders(head.new_block, parts, n_keys, rng, lambda merged: _assert_equal(
        merged, [states[inverse[j]] for j in range(n_keys)], exact=tuple(perm[list(EMPTY)]),
        plots=seed == 0), trials=1)
    assert all(_same_arrays(p, b) for (p, _), b in zip(parts, before))  # merged: unchanged


@pytest.mark.parametrize('kind', ['weighted', 'edges'])
def test_merge_adds_keys_together_and_a_block_into_itself(kind):
    head, codes, labels, logits, features, n_keys = _data(kind, 3)
    block = _block(head, codes, labels, logits, features, n_keys)
    folded = head.new_block().merge(block, np.arange(n_keys) % 3)  # keys k, k+3, ... into k % 3
    together = np.where(codes >= 0, codes % 3, -1)
    _assert_equal(folded, _per_key(head, together, labels, logits, features, 3))
    states = _per_key(head, codes, labels, logits, features, n_keys)
    copy = pickle.loads(pickle.dumps(block))
    copy.merge(copy, np.arange(n_keys) + n_keys)  # a block into itself, as new keys
    _assert_equal(copy, states + states, plots=False)
    block.merge(block, np.arange(n_keys))  # every row twice
    twice = np.concatenate([codes, codes])
    rows = _rows(labels, logits, features, np.concatenate([np.arange(codes.size)] * 2))
    _assert_equal(block, _per_key(head, twice, *rows, n_keys), plots=False)


@pytest.mark.parametrize('kind', ['weighted', 'edges', 'soft'])
def test_take_then_merge_back(kind):
    head, codes, labels, logits, features, n_keys = _data(kind, 4)
    block = _block(head, codes, labels, logits, features, n_keys, batches=5)
    states = _per_key(head, codes, labels, logits, features, n_keys)
    rng = np.random.default_rng(4)
    keys = rng.permutation(n_keys)
    some, rest = keys[:n_keys // 2], keys[n_keys // 2:]
    _assert_equal(block.take(some), [states[k] for k in some])
    again = rng.integers(0, n_keys, 30)  # keys repeated, in any order
    _assert_equal(block.take(again), [states[k] for k in again], plots=False)
    assert block.take(np.array([], dtype=np.int64)).n_keys == 0
    back = head.new_block().merge(block.take(rest), rest).merge(block.take(some), some)
    _assert_equal(back, states, exact=EMPTY)


@pytest.mark.parametrize('kind', list(HEADS))
def test_pickle_round_trip(kind):
    head, codes, labels, logits, features, n_keys = _data(kind, 5)
    block = _block(head, codes, labels, logits, features, n_keys, batches=4)
    states = _per_key(head, codes, labels, logits, features, n_keys)
    data = pickle.dumps(block, protocol=5)
    copy = pickle.loads(data)
    assert isinstance(copy, BinaryClassBlock) and copy.face.signature == block.face.signature
    _assert_equal(copy, states, exact=EMPTY, plots=False)
    # A copy takes more rows as the original does.
    extra = _data(kind, 6)
    for b in (block, copy):
        b.add(extra[1], n_keys, *extra[2:5])
    assert _same_arrays(copy, block)
    # Compact: arrays, not an object per key — much smaller than the states' pickles.
    assert len(data) < len(pickle.dumps(states, protocol=5)) / 2


def test_empty_block_and_keys_without_rows():
    head = HEADS['weighted']()
    block = head.new_block()
    assert block.n_keys == 0
    assert all(v.shape == (0,) for v in block.results().values())
    assert all(a.shape == (0,) for pair in block.bounds().values() for a in pair)
    assert block.losses().shape == (0,) and block.counts()[0].shape == (0,)
    empty = head.new_state()
    block.add(np.full(3, -1), 4, np.zeros((3, 1)), np.zeros((3, 1), np.float32),
              {'w': np.ones((3, 1))})
    _assert_equal(block, [empty] * 4, exact=range(4))
    assert pickle.loads(pickle.dumps(block)).n_keys == 4


def test_head_and_face_make_blocks():
    head = HEADS['weighted']()
    block = head.new_block()
    assert isinstance(block, BinaryClassBlock)
    assert block.face.signature == head._array_face().signature
    assert isinstance(head._array_face().new_block(), BinaryClassBlock)
    other = HEADS['plain']().new_block()
    with pytest.raises(ValueError, match='Cannot merge'):
        block.merge(other, np.array([], dtype=np.int64))


def _short_for_four_rows(labels, logits):
    """A loss_fn returning the wrong shape for a batch of 4 rows."""
    return logits[:2] if len(logits) == 4 else logits


def _bad_batches():
    """(name, head kind, labels, logits, features) each rejected by `BinaryClassState.update`."""
    x = np.zeros((4, 1), np.float32)
    y = np.array([[0], [1], [1], [0]])
    w = {'w': np.ones((4, 1))}
    return [
        ('label too large', 'weighted', np.array([[0], [2], [1], [0]]), x, w),
        ('label negative', 'weighted', np.array([[0], [-1], [1], [0]]), x, w),
        ('logits shape', 'weighted', y, np.zeros((4, 2), np.float32), w),
        ('labels shape', 'weighted', np.zeros((3, 1)), x, w),
        ('missing weight', 'weighted', y, x, {}),
        ('weight shape', 'weighted', y, x, {'w': np.ones((4, 3))}),
        ('not in vocabulary', 'vocabulary_sum', np.array([['no'], ['maybe'], ['yes'], ['no']]),
         x, w),
        ('loss_fn shape', 'loss_fn', y, x, w),
    ]


@pytest.mark.parametrize('case', _bad_batches(), ids=lambda c: c[0])
def test_rejected_batches_raise_as_the_state_and_change_nothing(case):
    name, kind, labels, logits, features = case
    head, codes, good_labels, good_logits, good_features, n_keys = _data(kind, 7)
    if kind == 'loss_fn':
        head = BinaryClassHead(weight_column='w', loss_fn=_short_for_four_rows)
    block = _block(head, codes, good_labels, good_logits, good_features, n_keys)
    before = pickle.loads(pickle.dumps(block))
    with pytest.raises(Exception) as want:
        head.new_state().update(labels, logits, features)
    with pytest.raises(type(want.value), match='^' + re.escape(str(want.value)) + '$'):
        block.add(np.zeros(len(logits), np.int64), n_keys + 5, labels, logits, features)
    assert _same_arrays(block, before) and block.n_keys == n_keys


def test_bad_codes_and_index_maps_change_nothing():
    head, codes, labels, logits, features, n_keys = _data('weighted', 8)
    block = _block(head, codes, labels, logits, features, n_keys)
    before = pickle.loads(pickle.dumps(block))
    rows = _rows(labels, logits, features, np.arange(5))
    with pytest.raises(ValueError, match='4 key codes for a batch of 5 examples'):
        block.add(np.zeros(4, np.int64), n_keys, *rows)
    with pytest.raises(ValueError, match='out of range'):
        block.add(np.full(5, n_keys), n_keys, *rows)
    with pytest.raises(ValueError, match='indices for a block'):
        block.merge(block.take(np.arange(3)), np.arange(2))
    with pytest.raises(ValueError, match='negative key index'):
        block.merge(block.take(np.arange(3)), np.array([0, -1, 2]))
    with pytest.raises(IndexError):
        block.take(np.array([n_keys]))
    with pytest.raises(IndexError):
        block.state(n_keys)
    assert _same_arrays(block, before) and block.n_keys == n_keys


def test_many_keys_stay_sparse():
    """50k keys of one or two rows each: memory follows the (key, bucket) pairs in use, and any
    sample of keys answers as its states."""
    head = HEADS['weighted']()
    rng = np.random.default_rng(9)
    n, n_keys = 80_000, 50_000
    codes = rng.integers(0, n_keys, n)
    x = rng.normal(0, 2, (n, 1)).astype(np.float32)
    y = (rng.random((n, 1)) < 0.3).astype(np.int64)
    features = {'w': rng.random((n, 1))}
    block = head.new_block().add(codes, n_keys, y, x, features)
    for table in (block.auc, block.histogram, block.calibration):
        assert table.consolidate().nbytes <= n * (8 + 8 * table.n_values)
    sample = np.sort(rng.choice(n_keys, 40, replace=False))
    local = np.where(np.isin(codes, sample), np.searchsorted(sample, codes), -1)
    _assert_equal(block.take(sample), _per_key(head, local, y, x, features, sample.size))


# -- SparseCells, the blocks' bucketed components ---------------------------------------------

def _dense_reference(keys, buckets, values, n_keys, width):
    out = np.zeros((n_keys, width, values.shape[1]))
    np.add.at(out, (keys, buckets), values)
    return out


@pytest.mark.parametrize('n_keys', [3, 5000])
def test_sparse_cells_sum_take_merge_and_pickle(n_keys):
    rng = np.random.default_rng(n_keys)
    width, n = 50, 4000
    keys, buckets = rng.integers(0, n_keys, n), rng.integers(0, width, n)
    values = rng.normal(size=(n, 2))
    values[rng.random(n) < 0.2] = 0.0
    table = SparseCells(width, 2)
    for at in np.array_split(np.arange(n), 7):  # few keys: summed on add; many: pending rows
        table.add(keys[at], buckets[at], values[at])
    want = _dense_reference(keys, buckets, values, n_keys, width)
    np.testing.assert_allclose(table.dense(0, n_keys), want, rtol=RTOL, atol=ATOL)
    got_keys, got_buckets, got_values = table.entries()
    assert np.all(np.diff(got_keys * width + got_buckets) > 0)  # sorted, unique
    assert np.all((got_values != 0).any(axis=1))                 # no empty pair kept
    pick = rng.integers(0, n_keys, 9)
    np.testing.assert_allclose(table.take(pick).dense(0, 9), want[pick], rtol=RTOL, atol=ATOL)
    index = rng.integers(0, 4, n_keys)  # keys summed into 4, through the pending parts
    merged = SparseCells(width, 2)
    merged.merge(table, index)
    folded = np.zeros((4, width, 2))
    np.add.at(folded, index, want)
    np.testing.assert_allclose(merged.dense(0, 4), folded, rtol=RTOL, atol=ATOL)
    copy = pickle.loads(pickle.dumps(table))
    assert all(np.array_equal(a, b) for a, b in zip(copy.entries(), table.entries()))


def test_sparse_cells_codes_beyond_32_bits_and_nan_survive_pickles():
    table = SparseCells(8194, 2)
    keys = np.array([3_000_000, 3_000_000, 7, 2_000_000_000])
    table.add(keys, np.array([5, 8193, 0, 1]), np.array([[1.0, 0], [np.nan, 2], [0, 3], [4, 0]]))
    copy = pickle.loads(pickle.dumps(table))
    for a, b in zip(copy.entries(), table.entries()):
        assert np.array_equal(a, b, equal_nan=True)
    assert copy.entries()[0].tolist() == [7, 3_000_000, 3_000_000, 2_000_000_000]


def test_ragged_positions_and_packing():
    assert ragged_positions(np.array([5, 0, 10, 3]), np.array([2, 0, 3, 1])).tolist() == [
        5, 6, 10, 11, 12, 3]
    assert ragged_positions(np.array([4]), np.array([0])).size == 0
    a = np.array([[0.0, 1.5, np.nan], [0.0, 0.0, -2.0]])
    assert np.array_equal(unpack_nonzero(pack_nonzero(a)), a, equal_nan=True)
    assert unpack_nonzero(pack_nonzero(np.zeros((0, 3)))).shape == (0, 3)
