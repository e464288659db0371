"""`MultiClassBlock` (heads/array/multi_class_block.py): many keys of one `MultiClassHead` as one
matrix, against one `MultiClassState` per key; and `SumsBlock` (heads/array/sums_block.py), the
base it shares with `RegressionBlock`.

The reference is `tests/_reference_block.ReferenceBlock` — per-key states (checked elsewhere
against tf.estimator 2.15 recordings) behind the block interface, each updated on its own rows.
Data are seeded: keys of very different sizes, weights with zeros, rows in no key (the key codes
and the comparison are `tests/_block_cases`'); n_classes 3 and 5, integer labels of
both ranks and a label vocabulary, every loss reduction, named heads, a custom loss_fn reading
features and rank-3 logits.
"""
from __future__ import annotations

import numpy as np
import pytest

import heads
from heads.array.multi_class import MultiClassState
from heads.array.multi_class_block import MultiClassBlock
from heads.array.regression_block import RegressionBlock
from heads.array.sums_block import SumsBlock

from _block_cases import (BROKEN, Fed, assert_counts_are_copies, assert_parts_merge_as_reference,
                          assert_same, with_value)

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


def _fed(case: str, seed: int) -> Fed:
    """A block of the case's head and its reference, fed the case's seeded batches."""
    return Fed(_face(case), lambda rng, n: _batch(rng, case, n), np.random.default_rng(seed))


@pytest.mark.parametrize('case', list(CASES))
def test_one_add_and_many_adds_give_the_per_key_states(case):
    fed = _fed(case, 100 + list(CASES).index(case))
    fed.add_growing((3000, 1, 7, 0, 500, 64, 2000), 400)  # more keys as batches come
    fed.assert_states(_components, MultiClassState, losses=True)
    assert list(fed.block.results()) == list(fed.face.new_state().result())


@pytest.mark.parametrize('case', ['k3', 'k5_vocab_sum', 'k3_loss_fn'])
def test_blocks_merged_in_any_order_with_shuffled_index_maps(case):
    """Partial blocks, each numbering its keys its own way (pickled as between workers), merged
    into one in different orders and by way of a merged part, equal one block of every row."""
    parts = assert_parts_merge_as_reference(_face(case), lambda rng, n: _batch(rng, case, n), 17)
    part = parts[1][0]
    dst = _face(case).new_block().merge(part, np.zeros(part.n_keys, np.int64))
    assert dst.counts()[0][0] == part.counts()[0].sum()  # repeated targets add each


def test_take_then_merge_back_and_pickle():
    fed = _fed('k5_auto_named', 23).add_seeded(2500, 500)
    fed.assert_take_merge_back_and_pickle(np.random.default_rng(0).permutation(500)[:350], 8 * 8)


def test_small_batches_into_many_keys_rank3_logits_and_empty_blocks():
    """Few rows into a block of many keys (the path summing only the keys it holds), logits
    [D0, D1, k] with a code per first-axis row, and an empty block's reads."""
    fed = _fed('k3', 5)
    block, face, rng = fed.block, fed.face, fed.rng
    assert block.n_keys == 0 and block.losses().shape == (0,)
    assert list(block.results()) == list(face.new_state().result())
    fed.add_scattered(20, 20000)
    labels = rng.integers(0, 3, (60, 4, 1))
    logits = rng.normal(size=(60, 4, 3)).astype(np.float32)
    features = {'w': rng.uniform(0, 2, (60, 4, 1))}
    fed.add(rng.integers(-1, 20500, 60), 20500, labels, logits, features)
    assert_same(block, fed.ref)
    assert block.results()['accuracy'][-1] == face.new_state().result()['accuracy'] == 0.0


# Batches the state rejects: name → (labels, logits, features) → the batch.
BROKEN_MULTI_CLASS = dict(
    BROKEN,
    label_too_large=lambda labels, logits, features: (with_value(labels, 7, 3), logits,
                                                      features),
    label_negative=lambda labels, logits, features: (with_value(labels, 3, -1), logits,
                                                     features),
    float_labels=lambda labels, logits, features: (np.zeros((50, 1), np.float32), logits,
                                                   features),
    unknown_word=lambda labels, logits, features: (with_value(labels, 4, 'yak'), logits,
                                                   features),
    ids_with_vocabulary=lambda labels, logits, features: (np.zeros((50, 1), np.int64), logits,
                                                          features),
    # the loss comes back [n, n]
    loss_fn_shape=lambda labels, logits, features: (labels, logits,
                                                    dict(features, s=features['s'][:, 0])))


@pytest.mark.parametrize('bad', list(BROKEN_MULTI_CLASS))
def test_validation_errors_are_the_states_and_leave_the_block_unchanged(bad):
    case = {'unknown_word': 'k5_vocab_sum', 'ids_with_vocabulary': 'k5_vocab_sum',
            'loss_fn_shape': 'k3_loss_fn'}.get(bad, 'k3')
    _fed(case, 2).assert_rejects_as_state(BROKEN_MULTI_CLASS[bad])


def test_bad_codes_and_foreign_merges_are_refused_before_any_change():
    _fed('k3', 4).add_seeded(30, 5).assert_bad_codes_and_merges_refused(
        _face('k3_flat_labels_named').new_block(),
        heads.RegressionHead(weight_column='w').new_block())


def test_every_batch_adds_columnar(monkeypatch):
    """No Python loop over keys: the per-key fallback is never taken, whatever the case."""
    monkeypatch.setattr(SumsBlock, '_per_key_sums',
                        lambda *a: pytest.fail('a multi-class batch updated key by key'))
    for case in CASES:
        assert_counts_are_copies(_fed(case, 1).add_seeded(100, 30).block)


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
