"""`MultiClassBlock` (heads/array/multi_class_block.py): many keys of one `MultiClassHead` as one
matrix, against one `MultiClassState` per key; and `SumsBlock` (heads/array/sums_block.py), the
base it shares with `RegressionBlock`.

The reference is `tests/_reference_block.ReferenceBlock` — per-key states (checked elsewhere
against tf.estimator 2.15 recordings) behind the block interface, each updated on its own rows.
Data are seeded: keys of very different sizes, weights with zeros, rows in no key (the key codes
and the comparison are `tests/test_regression_block`'s); n_classes 3 and 5, integer labels of
both ranks and a label vocabulary, every loss reduction, named heads, a custom loss_fn reading
features and rank-3 logits.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import heads
from heads.array.multi_class import MultiClassState
from heads.array.multi_class_block import MultiClassBlock
from heads.array.regression_block import RegressionBlock
from heads.array.sums_block import SumsBlock

from _reference_block import ReferenceBlock
from test_regression_block import ATOL, RTOL, _codes, _error, assert_same

VOCAB5 = ('ant', 'bee', 'cat', 'dog', 'elk')


def _loss_with_features(labels, logits, features):
    """A custom loss [n, 1] that reads a feature: (1 + s) · (max logit − the label's logit)."""
    lg = np.asarray(logits, np.float64)
    picked = np.take_along_axis(lg, np.asarray(labels).reshape(-1, 1), axis=1)
    return (lg.max(axis=1, keepdims=True) - picked) * (1.0 + np.asarray(features['s']))


# name → (head factory, labels as [n] rather than [n, 1])
CASES = {
    'k3': (lambda: heads.MultiClassHead(3, weight_column='w'), False),
    'k3_flat_labels_named': (lambda: heads.MultiClassHead(3, weight_column='w', name='c'), True),
    'k5_vocab_sum': (lambda: heads.MultiClassHead(5, weight_column='w', label_vocabulary=VOCAB5,
                                                  loss_reduction='sum'), False),
    'k5_auto_named': (lambda: heads.MultiClassHead(5, weight_column='w', name='five',
                                                   loss_reduction='auto'), False),
    'k3_unweighted': (lambda: heads.MultiClassHead(3), True),
    'k3_loss_fn': (lambda: heads.MultiClassHead(3, weight_column='w',
                                                loss_fn=_loss_with_features), False),
}


def _face(case: str):
    return CASES[case][0]()._array_face()


def _batch(rng: np.random.Generator, case: str, n: int) -> tuple:
    """(labels, logits, features) of n rows for a case: logits that predict the label about half
    the time, weights with zeros."""
    make, flat = CASES[case]
    face = make()._array_face()
    k = face.n_classes
    ids = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k)).astype(np.float32)
    logits[np.arange(n), ids] += rng.choice([0.0, 2.0], n).astype(np.float32)
    labels = (np.array(face.label_vocabulary, dtype=object)[ids] if face.label_vocabulary
              else ids)
    labels = labels if flat else labels.reshape(n, 1)
    w = rng.uniform(0.0, 2.0, (n, 1))
    w[rng.random(n) < 0.2] = 0.0  # zero weights
    return labels, logits, {'w': w, 's': rng.random((n, 1))}


def _components(state: MultiClassState) -> list[float]:
    return [state.average_loss.total, state.average_loss.count, state.accuracy.total,
            state.accuracy.count, state.loss_sum.total, state.loss_sum.count,
            state.example_count, state.weighted_example_count]


def _fill(face, n_rows: int, n_keys: int, seed: int) -> tuple[MultiClassBlock, ReferenceBlock]:
    """A block and its reference, each given the same seeded batch."""
    rng = np.random.default_rng(seed)
    case = next(c for c in CASES if _face(c).signature == face.signature)
    labels, logits, features = _batch(rng, case, n_rows)
    codes = _codes(rng, n_rows, n_keys)
    return (face.new_block().add(codes, n_keys, labels, logits, features),
            ReferenceBlock(face).add(codes, n_keys, labels, logits, features))


@pytest.mark.parametrize('case', list(CASES))
def test_one_add_and_many_adds_give_the_per_key_states(case):
    rng = np.random.default_rng(100 + list(CASES).index(case))
    face = _face(case)
    block, ref = face.new_block(), ReferenceBlock(face)
    n_keys = 400
    for size in (3000, 1, 7, 0, 500, 64, 2000):  # more keys as batches come (and tiny batches)
        labels, logits, features = _batch(rng, case, size)
        codes = _codes(rng, size, n_keys)
        block.add(codes, n_keys, labels, logits, features)
        ref.add(codes, n_keys, labels, logits, features)
        if size == 3000:
            assert_same(block, ref)
        n_keys += int(rng.integers(0, 300))
    assert_same(block, ref)
    empty = face.new_state()
    examples = ref.counts()[0]
    assert (examples == 0).any()  # keys without rows read as an empty state
    for k in [0, int(np.argmax(examples)), int(np.argmin(examples))]:
        st = block.state(k)
        assert type(st) is MultiClassState and st.face is face
        np.testing.assert_allclose(_components(st), _components(ref.state(k)), rtol=RTOL,
                                   atol=ATOL)
        assert st.result() == pytest.approx(ref.state(k).result(), rel=RTOL, abs=ATOL)
        assert st.loss() == pytest.approx(ref.state(k).loss(), rel=RTOL, abs=ATOL)
    k = int(np.argmin(examples))
    assert block.state(k).result() == empty.result() and block.losses()[k] == empty.loss()
    assert list(block.results()) == list(empty.result())


@pytest.mark.parametrize('case', ['k3', 'k5_vocab_sum', 'k3_loss_fn'])
def test_blocks_merged_in_any_order_with_shuffled_index_maps(case):
    """Partial blocks, each numbering its keys its own way (pickled as between workers), merged
    into one in different orders and by way of a merged part, equal one block of every row."""
    rng = np.random.default_rng(17)
    face = _face(case)
    n_keys, ref, parts = 300, ReferenceBlock(face), []
    for _ in range(5):
        labels, logits, features = _batch(rng, case, int(rng.integers(0, 900)))
        codes = _codes(rng, labels.shape[0], n_keys)
        ref.add(codes, n_keys, labels, logits, features)
        global_of = rng.permutation(np.unique(codes[codes >= 0]))  # local key → global key
        local = np.full(n_keys, -1)
        local[global_of] = np.arange(global_of.size)
        part = face.new_block().add(np.where(codes >= 0, local[codes], -1), global_of.size,
                                    labels, logits, features)
        parts.append((pickle.loads(pickle.dumps(part)), global_of))
    for _ in range(3):
        merged = face.new_block()
        for i in rng.permutation(len(parts)).tolist():
            merged.merge(*parts[i])
        merged._grow(n_keys)  # keys no part holds: empty
        assert_same(merged, ref)
    # (a + b) + c == a + (b + c): every part into the first, by global keys, then into a block.
    first = parts[0][0].take(np.arange(parts[0][0].n_keys))
    slot = {g: i for i, g in enumerate(parts[0][1].tolist())}
    for part, global_of in parts[1:]:
        for g in global_of.tolist():
            slot.setdefault(g, len(slot))
        first.merge(part, np.array([slot[g] for g in global_of.tolist()], np.int64))
    whole = face.new_block().merge(first, np.array(list(slot), np.int64))
    whole._grow(n_keys)
    assert_same(whole, ref)
    dst = face.new_block().merge(parts[1][0], np.zeros(parts[1][0].n_keys, np.int64))
    assert dst.counts()[0][0] == parts[1][0].counts()[0].sum()  # repeated targets add each


def test_take_then_merge_back_and_pickle():
    face = _face('k5_auto_named')
    block, ref = _fill(face, 2500, 500, 23)
    keys = np.random.default_rng(0).permutation(500)[:350]
    taken = block.take(keys)
    assert type(taken) is MultiClassBlock
    assert_same(taken, ref, keys)
    before = block.sums.copy()
    taken.merge(taken.take(np.arange(350)), np.arange(350))  # a copy: the block is unchanged
    assert np.array_equal(block.sums, before)
    back = face.new_block()
    for part in np.array_split(np.arange(500), 4):  # shards merged back into one
        back.merge(block.take(part), part)
    assert_same(back, ref)
    restored = pickle.loads(pickle.dumps(block))
    assert_same(restored, ref)
    assert restored.face.signature == face.signature
    assert len(pickle.dumps(block)) < 500 * 8 * 8 + 4096  # the used rows only
    labels, logits, features = _batch(np.random.default_rng(1), 'k5_auto_named', 10)
    restored.add(np.arange(10), 600, labels, logits, features)  # grows after a round trip
    assert restored.n_keys == 600


def test_small_batches_into_many_keys_rank3_logits_and_empty_blocks():
    """Few rows into a block of many keys (the path summing only the keys it holds), logits
    [D0, D1, k] with a code per first-axis row, and an empty block's reads."""
    face = _face('k3')
    rng = np.random.default_rng(5)
    block, ref = face.new_block(), ReferenceBlock(face)
    assert block.n_keys == 0 and block.losses().shape == (0,)
    assert list(block.results()) == list(face.new_state().result())
    for _ in range(20):
        labels, logits, features = _batch(rng, 'k3', int(rng.integers(1, 40)))
        codes = rng.integers(-1, 20000, labels.shape[0])
        block.add(codes, 20000, labels, logits, features)
        ref.add(codes, 20000, labels, logits, features)
    labels = rng.integers(0, 3, (60, 4, 1))
    logits = rng.normal(size=(60, 4, 3)).astype(np.float32)
    features = {'w': rng.uniform(0, 2, (60, 4, 1))}
    codes = rng.integers(-1, 20500, 60)
    block.add(codes, 20500, labels, logits, features)
    ref.add(codes, 20500, labels, logits, features)
    assert_same(block, ref)
    assert block.results()['accuracy'][-1] == face.new_state().result()['accuracy'] == 0.0


@pytest.mark.parametrize('bad', ['label_too_large', 'label_negative', 'float_labels',
                                 'unknown_word', 'ids_with_vocabulary', 'labels_shape',
                                 'logits_dim', 'missing_weight', 'weight_shape', 'loss_fn_shape'])
def test_validation_errors_are_the_states_and_leave_the_block_unchanged(bad):
    rng = np.random.default_rng(2)
    case = {'unknown_word': 'k5_vocab_sum', 'ids_with_vocabulary': 'k5_vocab_sum',
            'loss_fn_shape': 'k3_loss_fn'}.get(bad, 'k3')
    face = _face(case)
    labels, logits, features = _batch(rng, case, 50)
    block = face.new_block().add(_codes(rng, 50, 10), 10, labels, logits, features)
    labels = labels.copy()
    if bad == 'label_too_large':
        labels[7] = 3
    elif bad == 'label_negative':
        labels[3] = -1
    elif bad in ('float_labels', 'ids_with_vocabulary'):
        labels = np.zeros((50, 1), np.float32 if bad == 'float_labels' else np.int64)
    elif bad == 'unknown_word':
        labels[4] = 'yak'
    elif bad == 'labels_shape':
        labels = labels[:40]
    elif bad == 'logits_dim':
        logits = np.concatenate([logits, logits], axis=1)
    elif bad == 'missing_weight':
        features = {'s': features['s']}
    elif bad == 'weight_shape':
        features = {'w': features['w'][:, None, None], 's': features['s']}
    else:
        features = dict(features, s=features['s'][:, 0])  # the loss comes back [n, n]
    expected = _error(lambda: face.new_state().update(labels, logits, features))
    sums = block.sums.copy()
    assert _error(lambda: block.add(np.zeros(50, np.int64), 20, labels, logits,
                                    features)) == expected
    assert block.n_keys == 10 and np.array_equal(block.sums, sums)


def test_bad_codes_and_foreign_merges_are_refused_before_any_change():
    face = _face('k3')
    block, _ = _fill(face, 30, 5, 4)
    labels, logits, features = _batch(np.random.default_rng(4), 'k3', 30)
    sums = block.sums.copy()
    with pytest.raises(ValueError, match='29 key codes for a batch of 30'):
        block.add(np.zeros(29, np.int64), 5, labels, logits, features)
    with pytest.raises(ValueError, match='key code 7 out of range for 6 keys'):
        block.add(np.full(30, 7), 6, labels, logits, features)
    for other in (_face('k3_flat_labels_named').new_block(), ReferenceBlock(face),
                  heads.RegressionHead(weight_column='w').new_block()):
        with pytest.raises(ValueError, match='Cannot merge'):
            block.merge(other, np.zeros(0, np.int64))
    with pytest.raises(ValueError, match='index of 4 keys for a block of 5'):
        face.new_block().merge(block, np.arange(4))
    assert block.n_keys == 5 and np.array_equal(block.sums, sums)


def test_every_batch_adds_columnar(monkeypatch):
    """No Python loop over keys: the per-key fallback is never taken, whatever the case."""
    monkeypatch.setattr(SumsBlock, '_per_key_sums',
                        lambda *a: pytest.fail('a multi-class batch updated key by key'))
    rng = np.random.default_rng(1)
    for case in CASES:
        labels, logits, features = _batch(rng, case, 100)
        block = _face(case).new_block().add(_codes(rng, 100, 30), 30, labels, logits, features)
        examples, weighted = block.counts()
        examples[:] = weighted[:] = -1.0  # the arrays read are the caller's
        assert (block.counts()[0] >= 0).all() and (block.counts()[1] >= 0).all()


def test_the_head_and_face_make_blocks_on_the_shared_base():
    head = heads.MultiClassHead(4, weight_column='w', name='m')
    block = head.new_block()
    assert type(block) is MultiClassBlock and block.n_keys == 0
    assert block.face.signature == head._array_face().signature
    assert isinstance(block, SumsBlock) and isinstance(heads.RegressionHead().new_block(),
                                                       SumsBlock)
    # The layouts: each component a (total, count) pair, then the counts.
    assert MultiClassBlock.N_COLS == 8 and RegressionBlock.N_COLS == 10
    assert MultiClassBlock.columns('loss_sum') == (4, 5)
    assert (MultiClassBlock.EX, MultiClassBlock.WEX) == (6, 7)
