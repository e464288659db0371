"""Small states (issue 21): a state holding its rows (`HeadState.small`, `RowBuffer`) or rows
pending beside parked components must answer exactly as the dense state updated with the same
rows — for every head family, through grouped updates of thousands of keys, random splits,
merge orders and pickles, with weights, NaN and edge values, and across the thresholds at which
rows become components.

The reference is the state as it was before small states: `BUFFER_ROWS = 0`, so every state is
dense from its first row and every batch goes through the family's dense grouped update.
"""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from heads import (BinaryClassHead, MultiClassHead, MultiHead, MultiLabelHead,
                   PoissonRegressionHead, RegressionHead)
from heads.array.binary import BinaryClassState
from heads.array.multi_label import MultiLabelState
from heads.metrics import Groups
from heads.metrics.groups import group_order
from heads.metrics.rows import RowBuffer, as_records
from heads.state import load_state_arrays, state_arrays

BUFFERED = (BinaryClassState, MultiLabelState)
KINDS = ['binary', 'binary_soft', 'binary_edges', 'multi_label', 'multi_label_soft',
         'multi_class', 'regression', 'regression_3', 'poisson', 'multi_head']


# -- data ------------------------------------------------------------------------------------------

def _binary_head():
    return BinaryClassHead(weight_column='w', thresholds=[0.25, 0.5, 0.8], name='click')


def _multi_label_head():
    return MultiLabelHead(n_classes=4, weight_column='w', thresholds=[0.3, 0.6],
                          classes_for_class_based_metrics=[0, 2], name='tags')


def _data(kind: str, n: int, rng: np.random.Generator):
    """(head, labels, logits, features) of n rows: weights with zeros, NaN and edge logits where
    the head takes them."""
    w = rng.uniform(0.0, 2.0, n)
    w[rng.random(n) < 0.05] = 0.0
    features = {'w': w[:, None]}
    if kind.startswith('binary'):
        x = rng.normal(0.0, 3.0, (n, 1)).astype(np.float32)
        y = (rng.random((n, 1)) < 0.4).astype(np.float32)
        if kind == 'binary_soft':
            y = np.round(rng.random((n, 1)), 2).astype(np.float32)
        if kind == 'binary_edges':
            r = rng.random(n)
            x[r < 0.05, 0] = np.nan           # NaN scores: counted, in no bucket
            x[(r >= 0.05) & (r < 0.1), 0] = 40.0   # probability exactly 1
            x[(r >= 0.1) & (r < 0.15), 0] = -200.0  # probability exactly 0
            x[(r >= 0.15) & (r < 0.2), 0] = 0.0     # ties at the class threshold
        return _binary_head(), y, x, features
    if kind.startswith('multi_label'):
        x = rng.normal(0.0, 2.0, (n, 4)).astype(np.float32)
        y = (rng.random((n, 4)) < 0.3).astype(np.int64)
        if kind == 'multi_label_soft':
            y = np.round(rng.random((n, 4)), 1)
        return _multi_label_head(), y, x, features
    if kind == 'multi_class':
        return (MultiClassHead(n_classes=4, weight_column='w'), rng.integers(0, 4, (n, 1)),
                rng.normal(size=(n, 4)).astype(np.float32), features)
    if kind == 'regression_3':
        return (RegressionHead(label_dimension=3, weight_column='w'), rng.normal(size=(n, 3)),
                rng.normal(size=(n, 3)).astype(np.float32), features)
    if kind == 'poisson':
        return (PoissonRegressionHead(weight_column='w'),
                rng.poisson(2.0, (n, 1)).astype(np.float64),
                rng.normal(size=(n, 1)).astype(np.float32), features)
    if kind == 'multi_head':
        head = MultiHead([_binary_head(), _multi_label_head(),
                          RegressionHead(weight_column='w', name='watch')])
        labels = {'click': (rng.random((n, 1)) < 0.4).astype(np.float32),
                  'tags': (rng.random((n, 4)) < 0.3).astype(np.int64),
                  'watch': rng.normal(size=(n, 1))}
        logits = rng.normal(0.0, 2.0, (n, 6)).astype(np.float32)
        return head, labels, logits, features
    return (RegressionHead(weight_column='w'), rng.normal(size=(n, 1)),
            rng.normal(size=(n, 1)).astype(np.float32), features)


def _take(value, idx):
    if isinstance(value, dict):
        return {k: _take(v, idx) for k, v in value.items()}
    return value[idx]


# -- answers -----------------------------------------------------------------------------------

def _answers(state) -> dict:
    """Everything a state says (a deep copy is asked, so the state itself is left as it is)."""
    s = copy.deepcopy(state)
    return {'result': s.result(), 'loss': s.loss(), 'counts': s.counts(), 'bounds': s.bounds(),
            'plots': s.plots()}


def _assert_same(got: dict, want: dict) -> None:
    assert got['counts'][0] == want['counts'][0]
    assert got['counts'][1] == pytest.approx(want['counts'][1], rel=1e-12, abs=1e-12)
    assert got['loss'] == pytest.approx(want['loss'], rel=1e-9, abs=1e-12, nan_ok=True)
    assert got['result'].keys() == want['result'].keys()
    for key, value in got['result'].items():
        assert value == pytest.approx(want['result'][key], rel=1e-9, abs=1e-12, nan_ok=True), key
    assert got['bounds'].keys() == want['bounds'].keys()
    for key, bound in got['bounds'].items():
        np.testing.assert_allclose(bound, want['bounds'][key], rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=key)
    assert got['plots'].keys() == want['plots'].keys()
    for col, values in got['plots'].items():
        if values.dtype.kind == 'f':
            np.testing.assert_allclose(values, want['plots'][col], rtol=1e-9, atol=1e-9,
                                       equal_nan=True, err_msg=col)
        else:
            assert values.tolist() == want['plots'][col].tolist(), col


@pytest.fixture
def dense_only(monkeypatch):
    """A context making every state dense from its first row (the behaviour before small
    states)."""
    class Dense:
        def __enter__(self):
            for cls in BUFFERED:
                monkeypatch.setattr(cls, 'BUFFER_ROWS', 0)

        def __exit__(self, *exc):
            monkeypatch.undo()
    return Dense()


def _limits(monkeypatch, buffer_rows: int, pending_rows: int) -> None:
    """Small thresholds, so that random data crosses them often."""
    for cls in BUFFERED:
        monkeypatch.setattr(cls, 'BUFFER_ROWS', buffer_rows)
        monkeypatch.setattr(cls, 'PENDING_ROWS', pending_rows)


def _key_codes(rng: np.random.Generator, n: int, n_keys: int) -> np.ndarray:
    """Codes of n rows over n_keys keys: a few heavy keys, many light ones, some rows in none."""
    heavy = rng.random(n) < 0.5
    codes = np.where(heavy, rng.integers(0, 3, n), rng.integers(0, n_keys, n))
    codes[rng.random(n) < 0.03] = -1
    return codes


def _grouped(head, n_keys, batches):
    """States of n_keys keys updated with every (codes, labels, logits, features) batch."""
    states = [head.new_state() for _ in range(n_keys)]
    for codes, labels, logits, features in batches:
        used = np.unique(codes[codes >= 0])
        # The pipeline passes only the keys holding rows, in code order.
        remap = np.full(n_keys + 1, -1)
        remap[used] = np.arange(used.size)
        ok = type(states[0]).update_groups([states[i] for i in used], remap[codes], labels,
                                           logits, features)
        assert ok is True
    return states


def _per_key_reference(head, n_keys, batches, keys):
    """Dense states of `keys`, each updated with its own rows batch by batch."""
    out = {}
    for g in keys:
        state = head.new_state()
        for codes, labels, logits, features in batches:
            idx = np.flatnonzero(codes == g)
            if idx.size:
                state.update(_take(labels, idx), _take(logits, idx), _take(features, idx))
        out[g] = state
    return out


# -- grouped updates ---------------------------------------------------------------------------

@pytest.mark.parametrize('kind', KINDS)
def test_thousands_of_keys_in_grouped_updates_equal_dense_per_key_states(kind, dense_only):
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    n_keys = 3000
    batches = []
    for n in (6000, 2500, 9000):
        codes = _key_codes(rng, n, n_keys)
        head, labels, logits, features = _data(kind, n, rng)
        batches.append((codes, labels, logits, features))
    states = _grouped(head, n_keys, batches)
    # Heavy keys (0-2: thousands of rows, dense), light keys (a few rows, small), empty keys.
    keys = [0, 1, 2] + rng.choice(np.arange(3, n_keys), 12, replace=False).tolist()
    if kind != 'multi_head' and type(states[0]) in BUFFERED:
        assert not states[0].is_small and any(states[g].is_small for g in keys[3:])
    with dense_only:
        want = {g: _answers(s) for g, s in _per_key_reference(head, n_keys, batches,
                                                             keys).items()}
    for g in keys:
        _assert_same(_answers(states[g]), want[g])


def test_many_dense_keys_go_through_chunks_of_max_groups(monkeypatch, dense_only):
    # More keys turning dense in one batch than one dense pass takes: sorted once, in chunks.
    monkeypatch.setattr(BinaryClassState, 'BUFFER_ROWS', 4)
    rng = np.random.default_rng(5)
    n_keys = 3 * BinaryClassState.MAX_GROUPS + 7
    codes = rng.integers(0, n_keys, 20 * n_keys)
    head, labels, logits, features = _data('binary', codes.size, rng)
    states = _grouped(head, n_keys, [(codes, labels, logits, features)])
    assert sum(not s.is_small for s in states) > 2 * BinaryClassState.MAX_GROUPS
    keys = rng.choice(n_keys, 10, replace=False).tolist()
    with dense_only:
        want = _per_key_reference(head, n_keys, [(codes, labels, logits, features)], keys)
        want = {g: _answers(s) for g, s in want.items()}
    for g in keys:
        _assert_same(_answers(states[g]), want[g])


@pytest.mark.parametrize('kind', ['binary', 'binary_edges', 'multi_label', 'multi_head'])
@pytest.mark.parametrize('seed', range(4))
def test_random_splits_merges_and_pickles_equal_the_dense_state(kind, seed, monkeypatch,
                                                                dense_only):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    head, labels, logits, features = _data(kind, n, rng)
    with dense_only:
        want = _answers(head.new_state().update(labels, logits, features))
    _limits(monkeypatch, buffer_rows=int(rng.integers(1, 40)),
            pending_rows=int(rng.integers(1, 90)))
    # Rows in random parts, each part's rows in random batches over a few states.
    parts = np.split(rng.permutation(n), np.sort(rng.integers(0, n + 1, rng.integers(0, 12))))
    pool = []
    for part in parts:
        state = head.new_state()
        for batch in np.array_split(part, int(rng.integers(1, 4))):
            if batch.size or rng.random() < 0.5:  # empty batches too
                state.update(_take(labels, batch), _take(logits, batch), _take(features, batch))
        if rng.random() < 0.3:
            state._densify()
        if rng.random() < 0.5:
            state = pickle.loads(pickle.dumps(state))
        pool.append(state)
    while len(pool) > 1:
        i, j = sorted(rng.choice(len(pool), 2, replace=False))
        b = pool.pop(j)
        a = pool.pop(i)
        before = _answers(b)
        assert a.merge(b) is a
        _assert_same(_answers(b), before)  # `other` unchanged
        pool.append(pickle.loads(pickle.dumps(a)) if rng.random() < 0.3 else a)
    _assert_same(_answers(pool[0]), want)


def test_the_comparison_sees_one_row_missing(dense_only):
    # The equality above is strict enough to notice a single row (the tests can fail).
    rng = np.random.default_rng(3)
    head, labels, logits, features = _data('binary', 50, rng)
    whole = head.new_state().update(labels, logits, features)
    idx = np.arange(1, 50)
    less = head.new_state().update(labels[idx], logits[idx], _take(features, idx))
    with pytest.raises(AssertionError):
        _assert_same(_answers(less), _answers(whole))


def test_thresholds_are_crossed_by_updates_and_merges(dense_only):
    head = _binary_head()
    rng = np.random.default_rng(8)
    limit = BinaryClassState.BUFFER_ROWS
    _, labels, logits, features = _data('binary', 3 * limit, rng)
    a = head.new_state().update(labels[:limit], logits[:limit], _take(features, slice(0, limit)))
    assert a.is_small and a._parked is None and a._buffer.n == limit
    b = head.new_state().update(labels[limit:limit + 5], logits[limit:limit + 5],
                                _take(features, slice(limit, limit + 5)))
    a.merge(b)  # past BUFFER_ROWS: dense
    assert not a.is_small and b.is_small and b._buffer.n == 5
    a.merge(b)  # a few more rows: pending beside the parked components
    assert a.is_small and a._parked is not None and a._buffer.n == 5
    a.update(labels[:3], logits[:3], _take(features, slice(0, 3)))  # a small batch: pending too
    assert a._buffer.n == 8
    a.update(labels, logits, features)  # a large one: every row added to the components
    assert not a.is_small
    batches = []
    for lab, lg, f in ((labels[:limit], logits[:limit], _take(features, slice(0, limit))),
                       (labels[limit:limit + 5], logits[limit:limit + 5],
                        _take(features, slice(limit, limit + 5))),
                       (labels[limit:limit + 5], logits[limit:limit + 5],
                        _take(features, slice(limit, limit + 5))),
                       (labels[:3], logits[:3], _take(features, slice(0, 3))),
                       (labels, logits, features)):
        batches.append((lab, lg, f))
    with dense_only:
        want = head.new_state()
        for lab, lg, f in batches:
            want.update(lab, lg, f)
        want = _answers(want)
    _assert_same(_answers(a), want)


def test_reading_a_small_state_builds_its_components_once():
    head = _binary_head()
    rng = np.random.default_rng(1)
    _, labels, logits, features = _data('binary', 10, rng)
    s = head.new_state().update(labels, logits, features)
    assert s.is_small and 'auc' not in s.__dict__
    assert s.counts()[0] == 10 and s.is_small  # counts need no components
    auc = s.auc  # any component: built from the rows
    assert not s.is_small and s.auc is auc
    with pytest.raises(AttributeError):
        s.no_such_thing
    with pytest.raises(AttributeError):
        BinaryClassState.small(s.face).__no_such_dunder__


def test_errors_leave_every_state_unchanged():
    head = _binary_head()
    rng = np.random.default_rng(2)
    _, labels, logits, features = _data('binary', 100, rng)
    states = [head.new_state() for _ in range(300)]
    codes = np.arange(100) % 300
    bad = labels.copy()
    bad[7, 0] = 3.0
    with pytest.raises(ValueError):
        BinaryClassState.update_groups(states, codes, bad, logits, features)
    with pytest.raises(ValueError, match='group codes'):
        BinaryClassState.update_groups(states, codes[:5], labels, logits, features)
    assert all(s.counts() == (0, 0.0) and s._buffer.n == 0 for s in states)


# -- size ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['binary', 'multi_label'])
def test_small_states_pickle_small_and_back(kind):
    rng = np.random.default_rng(4)
    head, labels, logits, features = _data(kind, 10, rng)
    small = head.new_state().update(labels, logits, features)
    dense = copy.deepcopy(small)
    dense._densify()
    data = pickle.dumps(small, protocol=pickle.HIGHEST_PROTOCOL)
    assert small.is_small and len(data) < 1500
    assert len(pickle.dumps(dense, protocol=pickle.HIGHEST_PROTOCOL)) > 3 * len(data)
    back = pickle.loads(data)
    assert back.is_small
    _assert_same(_answers(back), _answers(dense))
    # A state holding a few rows of a large shared block pickles its own rows only.
    many = [head.new_state() for _ in range(1000)]
    n = 5000
    _, labels, logits, features = _data(kind, n, rng)
    type(many[0]).update_groups(many, np.arange(n) % 1000, labels, logits, features)
    assert len(pickle.dumps(many[0], protocol=pickle.HIGHEST_PROTOCOL)) < 1500


def test_state_arrays_of_a_small_state_are_its_dense_arrays():
    head = _binary_head()
    rng = np.random.default_rng(6)
    _, labels, logits, features = _data('binary', 30, rng)
    small = head.new_state().update(labels, logits, features)
    arrays = state_arrays(small)
    assert small.is_small  # written as its dense equivalent, left as it is
    back = load_state_arrays(head.new_state(), arrays)
    _assert_same(_answers(back), _answers(small))


# -- primitives ----------------------------------------------------------------------------------

def test_group_order_is_a_stable_sort_by_code():
    rng = np.random.default_rng(9)
    for n_groups in (1, 7, 70_000):
        codes = rng.integers(-1, n_groups, 50_000)
        order, counts = group_order(codes, n_groups)
        valid = np.flatnonzero(codes >= 0)
        want = valid[np.argsort(codes[valid], kind='stable')]
        assert order.tolist() == want.tolist()
        assert counts.tolist() == np.bincount(codes[valid], minlength=n_groups).tolist()


def test_row_buffer_shares_blocks_and_compacts_short_references():
    rows = {'x': np.arange(10, dtype=np.float32), 'w': np.ones(10),
            'y': np.arange(20, dtype=np.float32).reshape(10, 2)}
    block = as_records(rows)
    assert not block.flags.writeable
    a = RowBuffer()
    for i in range(100):
        a.append(block, i % 10, i % 10 + 1)
    assert a.n == 100 and len(a._chunks) <= 33
    got = a.rows()
    assert sorted(got['x'].tolist()) == sorted(float(i % 10) for i in range(100))
    assert (got['y'][:, 0] == 2 * got['x']).all()
    b = RowBuffer()
    b.extend(a)
    assert b.n == 100 and a.n == 100
    back = pickle.loads(pickle.dumps(b))
    assert back.n == 100 and back.rows().tobytes() == b.rows().tobytes()
    assert pickle.loads(pickle.dumps(RowBuffer())).rows() is None


def test_grouped_update_of_one_group_equals_the_plain_update(dense_only):
    rng = np.random.default_rng(12)
    head, labels, logits, features = _data('multi_label', 200, rng)
    grouped = head.new_state()
    MultiLabelState.update_groups([grouped], np.zeros(200, np.int64), labels, logits, features)
    with dense_only:
        want = _answers(head.new_state().update(labels, logits, features))
    _assert_same(_answers(grouped), want)
    assert Groups.of(None, 1, 3).sum().tolist() == [3.0]
