"""`RegressionBlock` (heads/array/regression_block.py): many keys of one regression-family head as
one matrix, against one `RegressionState` per key.

The reference is `tests/_reference_block.ReferenceBlock` — per-key states (checked elsewhere
against tf.estimator 2.15 recordings) behind the block interface, each updated on its own rows.
Data are seeded: keys of very different sizes (a few large, many of one or two rows, some empty),
weights with zeros, rows in no key; every loss reduction, named heads, label_dimension 3 with
weights per example and per logit, Poisson (full loss or not) and logistic heads, a custom loss_fn
reading features and inverse links (one of another shape, the path that updates per key).
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import heads
from heads.array.regression import RegressionState
from heads.array.regression_block import RegressionBlock

from _reference_block import ReferenceBlock

RTOL, ATOL = 1e-9, 1e-12


def _loss_with_features(labels, logits, features):
    """A custom loss that reads a feature: |labels - logits| · (1 + s)."""
    return np.abs(labels - logits) * (1.0 + np.asarray(features['s'], np.float64))


def _exp(logits):
    return np.exp(logits)


def _row_mean(logits):
    """An inverse link of another shape ([..,d] → [..]): the state's general path."""
    return logits.mean(axis=-1)


# name → (head factory, label kind, per-logit weights)
CASES = {
    'mse': (lambda: heads.RegressionHead(weight_column='w'), 'normal', False),
    'mse_named_sum': (lambda: heads.RegressionHead(weight_column='w', name='v',
                                                   loss_reduction='sum'), 'normal', False),
    'mse_auto': (lambda: heads.RegressionHead(weight_column='w', loss_reduction='auto'),
                 'normal', False),
    'mse_unweighted': (lambda: heads.RegressionHead(name='u'), 'normal', False),
    'dim3': (lambda: heads.RegressionHead(label_dimension=3, weight_column='w', name='d3'),
             'normal', False),
    'dim3_per_logit': (lambda: heads.RegressionHead(label_dimension=3, weight_column='w',
                                                    loss_reduction='sum'), 'normal', True),
    'poisson': (lambda: heads.PoissonRegressionHead(weight_column='w', name='p'), 'counts',
                False),
    'poisson_partial_sum': (lambda: heads.PoissonRegressionHead(
        label_dimension=2, weight_column='w', compute_full_loss=False, loss_reduction='sum'),
        'counts', False),
    'logistic': (lambda: heads.LogisticRegressionHead(weight_column='w', name='g'), 'unit',
                 False),
    'logistic_sum': (lambda: heads.LogisticRegressionHead(loss_reduction='sum'), 'unit', False),
    'loss_fn_link': (lambda: heads.RegressionHead(label_dimension=2, weight_column='w',
                                                  loss_fn=_loss_with_features,
                                                  inverse_link_fn=_exp), 'normal', False),
    'link_other_shape': (lambda: heads.RegressionHead(label_dimension=2, weight_column='w',
                                                      inverse_link_fn=_row_mean),
                         'normal', False),
}


def _batch(rng: np.random.Generator, case: str, n: int) -> tuple:
    """(labels, logits, features) of n rows for a case."""
    make, kind, per_logit = CASES[case]
    d = make().logits_dimension
    logits = rng.normal(0.3, 1.0, (n, d)).astype(np.float32)
    if kind == 'counts':
        labels = rng.poisson(2.0, (n, d)).astype(np.float32)
    elif kind == 'unit':
        labels = rng.random((n, d)).astype(np.float32)
    else:
        labels = rng.normal(1.0, 2.0, (n, d)).astype(np.float32)
    w = rng.uniform(0.0, 2.0, (n, d) if per_logit else n)
    w[rng.random(w.shape) < 0.2] = 0.0  # zero weights
    return labels, logits, {'w': w, 's': rng.random((n, d))}


def _codes(rng: np.random.Generator, n: int, n_keys: int) -> np.ndarray:
    """Codes for n rows: a few large keys, a long tail of tiny ones, rows in no key (-1); the
    last tenth of the keys gets no row."""
    live = max(1, n_keys - n_keys // 10)
    p = 1.0 / np.arange(1, live + 1) ** 1.3
    codes = rng.choice(live, n, p=p / p.sum())
    perm = rng.permutation(live)  # the large keys anywhere in the table
    codes = perm[codes]
    codes[rng.random(n) < 0.05] = -1
    return codes.astype(np.int64)


def _face(case: str):
    return CASES[case][0]()._array_face()


def assert_same(block, ref, keys=None) -> None:
    """Results, losses, counts and bounds of `block` equal the reference's (at `keys` of the
    reference when given), keys in the same order."""
    pick = (lambda a: a) if keys is None else (lambda a: a[keys])
    n = ref.n_keys if keys is None else len(keys)
    assert block.n_keys == n
    got, want = block.results(), ref.results()
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], pick(want[k]), rtol=RTOL, atol=ATOL, err_msg=k)
    np.testing.assert_allclose(block.losses(), pick(ref.losses()), rtol=RTOL, atol=ATOL)
    for g, w in zip(block.counts(), ref.counts()):
        np.testing.assert_allclose(g, pick(w), rtol=RTOL, atol=ATOL)
    assert block.bounds() == ref.bounds() == {}


def _components(state: RegressionState) -> list[float]:
    return [state.loss_sum.total, state.loss_sum.count, state.average_loss.total,
            state.average_loss.count, state.prediction_mean.total, state.prediction_mean.count,
            state.label_mean.total, state.label_mean.count, state.example_count,
            state.weighted_example_count]


@pytest.mark.parametrize('case', list(CASES))
def test_one_add_and_many_adds_give_the_per_key_states(case):
    rng = np.random.default_rng(list(CASES).index(case))
    face = _face(case)
    block, ref = face.new_block(), ReferenceBlock(face)
    labels, logits, features = _batch(rng, case, 3000)
    codes = _codes(rng, 3000, 400)
    block.add(codes, 400, labels, logits, features)
    ref.add(codes, 400, labels, logits, features)
    assert_same(block, ref)
    n_keys = 400
    for size in (1, 7, 0, 500, 64, 2000):  # more keys as batches come (and a tiny batch)
        n_keys += int(rng.integers(0, 300))
        labels, logits, features = _batch(rng, case, size)
        codes = _codes(rng, size, n_keys)
        block.add(codes, n_keys, labels, logits, features)
        ref.add(codes, n_keys, labels, logits, features)
    assert_same(block, ref)
    empty = face.new_state()
    assert (ref.counts()[0] == 0).any()  # keys without rows read as an empty state
    for k in [0, int(np.argmax(ref.counts()[0])), int(np.argmin(ref.counts()[0]))]:
        st = block.state(k)
        assert type(st) is RegressionState and st.face is face
        np.testing.assert_allclose(_components(st), _components(ref.state(k)), rtol=RTOL,
                                   atol=ATOL)
        assert st.result() == pytest.approx(ref.state(k).result(), rel=RTOL, abs=ATOL)
    k = int(np.argmin(ref.counts()[0]))
    assert block.state(k).result() == empty.result() and block.losses()[k] == empty.loss()


@pytest.mark.parametrize('case', ['mse_named_sum', 'dim3_per_logit', 'poisson', 'logistic',
                                  'loss_fn_link', 'link_other_shape'])
def test_blocks_merged_in_any_order_with_shuffled_index_maps(case):
    """Partial blocks, each numbering its keys its own way, merged into one in different
    orders (and by way of each other) equal one block of every row."""
    rng = np.random.default_rng(7)
    face = _face(case)
    n_keys, ref = 300, ReferenceBlock(face)
    parts = []
    for _ in range(5):
        labels, logits, features = _batch(rng, case, int(rng.integers(0, 900)))
        codes = _codes(rng, labels.shape[0], n_keys)
        ref.add(codes, n_keys, labels, logits, features)
        seen = np.unique(codes[codes >= 0])
        extra = rng.choice(np.setdiff1d(np.arange(n_keys), seen), 3, replace=False)
        global_of = rng.permutation(np.concatenate([seen, extra]))  # local key → global key
        local = np.full(n_keys, -1)
        local[global_of] = np.arange(global_of.size)
        part = face.new_block().add(np.where(codes >= 0, local[codes], -1), global_of.size,
                                    labels, logits, features)
        parts.append((pickle.loads(pickle.dumps(part)), global_of))
    for trial in range(3):
        merged = face.new_block()
        for i in rng.permutation(len(parts)).tolist():
            merged.merge(*parts[i])
        merged.merge(face.new_block(), np.zeros(0, np.int64))
        merged._grow(n_keys)  # keys no part holds: empty
        assert_same(merged, ref)
    # (a + b) + c == a + (b + c): parts merged into a part first.
    a, ia = parts[0]
    first = a.take(np.arange(a.n_keys))
    for b, ib in parts[1:]:
        local_a = {g: i for i, g in enumerate(ia.tolist())}
        ext = [g for g in ib.tolist() if g not in local_a]
        ia = np.concatenate([ia, np.array(ext, np.int64)])
        local_a.update({g: len(local_a) + j for j, g in enumerate(ext)})
        first.merge(b, np.array([local_a[g] for g in ib.tolist()], np.int64))
    whole = face.new_block().merge(first, ia)
    whole._grow(n_keys)
    assert_same(whole, ref)
    for part, _ in parts:  # merging leaves the other block unchanged
        assert part.sums.shape[0] == part.n_keys


def test_merge_with_repeated_targets_adds_each():
    face = _face('mse')
    rng = np.random.default_rng(3)
    labels, logits, features = _batch(rng, 'mse', 200)
    codes = _codes(rng, 200, 20)
    src = face.new_block().add(codes, 20, labels, logits, features)
    dst = face.new_block().merge(src, np.zeros(20, np.int64))
    ref = ReferenceBlock(face).add(np.where(codes >= 0, 0, -1), 1, labels, logits, features)
    assert_same(dst, ref)


@pytest.mark.parametrize('case', ['mse', 'dim3', 'poisson_partial_sum'])
def test_take_then_merge_back_and_pickle(case):
    rng = np.random.default_rng(11)
    face = _face(case)
    block, ref = face.new_block(), ReferenceBlock(face)
    labels, logits, features = _batch(rng, case, 2500)
    codes = _codes(rng, 2500, 500)
    block.add(codes, 500, labels, logits, features)
    ref.add(codes, 500, labels, logits, features)
    keys = rng.permutation(500)[:350]
    taken = block.take(keys)
    assert_same(taken, ref, keys)
    before = block.results()
    taken.add(np.zeros(len(labels), np.int64), 350, labels, logits, features)  # a copy
    assert all(np.array_equal(v, block.results()[k]) for k, v in before.items())
    back = face.new_block()
    for part in np.array_split(np.arange(500), 4):  # shards merged back into one
        back.merge(block.take(part), part)
    assert_same(back, ref)
    restored = pickle.loads(pickle.dumps(block))
    assert_same(restored, ref)
    assert restored.face.signature == face.signature
    assert len(pickle.dumps(block)) < 500 * 10 * 8 + 4096  # the used rows only
    restored.add(codes, 600, labels, logits, features)  # grows after a round trip
    assert restored.n_keys == 600


def test_small_batches_into_many_keys_and_empty_blocks():
    """A batch of few rows into a block of many keys (the path summing only the keys it holds),
    and an empty block's reads."""
    face = _face('poisson')
    rng = np.random.default_rng(5)
    block, ref = face.new_block(), ReferenceBlock(face)
    assert block.n_keys == 0 and block.losses().shape == (0,)
    assert all(v.shape == (0,) for v in block.results().values())
    assert list(block.results()) == list(face.new_state().result())
    for _ in range(30):
        labels, logits, features = _batch(rng, 'poisson', int(rng.integers(1, 40)))
        codes = rng.integers(-1, 20000, labels.shape[0])
        block.add(codes, 20000, labels, logits, features)
        ref.add(codes, 20000, labels, logits, features)
    assert_same(block, ref)
    block.add(np.full(3, -1), 20500, *_batch(rng, 'poisson', 3))  # rows of no key: grows only
    ref.add(np.full(3, -1), 20500, *_batch(rng, 'poisson', 3))
    assert_same(block, ref)
    empty = face.new_state()
    assert block.results()['average_loss/p'][-1] == empty.result()['average_loss/p'] == 0.0
    assert block.counts()[0][-1] == 0 and block.losses()[-1] == empty.loss()


def test_rank3_logits_take_a_code_per_first_axis_row():
    face = heads.RegressionHead(label_dimension=2, weight_column='w')._array_face()
    rng = np.random.default_rng(9)
    labels = rng.normal(size=(60, 3, 2)).astype(np.float32)
    logits = rng.normal(size=(60, 3, 2)).astype(np.float32)
    features = {'w': rng.uniform(0, 2, (60, 3))}
    codes = rng.integers(-1, 8, 60)
    block = face.new_block().add(codes, 8, labels, logits, features)
    ref = ReferenceBlock(face).add(codes, 8, labels, logits, features)
    assert_same(block, ref)
    assert block.counts()[0].sum() == 3 * np.count_nonzero(codes >= 0)


def _error(call) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize('bad', ['labels_shape', 'logits_dim', 'missing_weight', 'weight_shape',
                                 'logistic_range', 'string_labels'])
def test_validation_errors_are_the_states_and_leave_the_block_unchanged(bad):
    rng = np.random.default_rng(2)
    case = 'logistic' if bad == 'logistic_range' else 'mse'
    face = _face(case)
    labels, logits, features = _batch(rng, case, 50)
    block = face.new_block().add(_codes(rng, 50, 10), 10, labels, logits, features)
    if bad == 'labels_shape':
        labels = labels[:40]
    elif bad == 'logits_dim':
        logits = np.concatenate([logits, logits], axis=1)
    elif bad == 'missing_weight':
        features = {'s': features['s']}
    elif bad == 'weight_shape':
        features = {'w': features['w'][:, None, None]}
    elif bad == 'logistic_range':
        labels = labels.copy()
        labels[7] = 1.5
    else:
        labels = labels.astype(str)
    expected = _error(lambda: face.new_state().update(labels, logits, features))
    sums = block.sums.copy()
    assert _error(lambda: block.add(np.zeros(50, np.int64), 20, labels, logits,
                                    features)) == expected
    assert block.n_keys == 10 and np.array_equal(block.sums, sums)


def test_bad_codes_and_foreign_merges_are_refused_before_any_change():
    rng = np.random.default_rng(4)
    face = _face('mse')
    labels, logits, features = _batch(rng, 'mse', 30)
    block = face.new_block().add(_codes(rng, 30, 5), 5, labels, logits, features)
    sums = block.sums.copy()
    with pytest.raises(ValueError, match='29 key codes for a batch of 30'):
        block.add(np.zeros(29, np.int64), 5, labels, logits, features)
    with pytest.raises(ValueError, match='key code 7 out of range for 6 keys'):
        block.add(np.full(30, 7), 6, labels, logits, features)
    with pytest.raises(ValueError, match='Cannot merge'):
        block.merge(_face('mse_named_sum').new_block(), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match='Cannot merge'):
        block.merge(ReferenceBlock(face), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match='index of 4 keys for a block of 5'):
        face.new_block().merge(block, np.arange(4))
    assert block.n_keys == 5 and np.array_equal(block.sums, sums)


def test_every_regression_head_has_a_block():
    for head in (heads.RegressionHead(), heads.PoissonRegressionHead(name='p'),
                 heads.LogisticRegressionHead(weight_column='w')):
        block = head.new_block()
        assert type(block) is RegressionBlock and block.n_keys == 0
        assert block.face.signature == head._array_face().signature
    assert not hasattr(heads.BinaryClassHead, 'new_block') or \
        type(heads.BinaryClassHead().new_block()) is not RegressionBlock


@pytest.mark.parametrize('case', list(CASES))
def test_only_a_loss_or_link_of_another_shape_updates_key_by_key(case, monkeypatch):
    """Every batch the state adds columnar (and per-logit weights) is summed over keys at once:
    no Python loop over keys."""
    calls = []
    per_key = RegressionBlock._per_key_sums
    monkeypatch.setattr(RegressionBlock, '_per_key_sums',
                        lambda self, *a: calls.append(1) or per_key(self, *a))
    rng = np.random.default_rng(1)
    labels, logits, features = _batch(rng, case, 100)
    block = _face(case).new_block().add(_codes(rng, 100, 30), 30, labels, logits, features)
    assert bool(calls) == (case == 'link_other_shape')
    examples, weighted = block.counts()
    examples[:] = weighted[:] = -1.0  # the arrays read are the caller's
    assert (block.counts()[0] >= 0).all() and (block.counts()[1] >= 0).all()
