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

import numpy as np
import pytest

import heads
from heads.array.regression import RegressionState
from heads.array.regression_block import RegressionBlock

from _block_cases import (BROKEN, Fed, assert_counts_are_copies, assert_parts_merge_as_reference,
                          assert_same, codes_for, with_value)
from _reference_block import ReferenceBlock


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


def _face(case: str):
    return CASES[case][0]()._array_face()


def _fed(case: str, seed: int) -> Fed:
    """A block of the case's head and its reference, fed the case's seeded batches."""
    return Fed(_face(case), lambda rng, n: _batch(rng, case, n), np.random.default_rng(seed))


def _components(state: RegressionState) -> list[float]:
    return [state.loss_sum.total, state.loss_sum.count, state.average_loss.total,
            state.average_loss.count, state.prediction_mean.total, state.prediction_mean.count,
            state.label_mean.total, state.label_mean.count, state.example_count,
            state.weighted_example_count]


@pytest.mark.parametrize('case', list(CASES))
def test_one_add_and_many_adds_give_the_per_key_states(case):
    fed = _fed(case, list(CASES).index(case))
    fed.add_growing((3000, 1, 7, 0, 500, 64, 2000), 400)  # more keys as batches come
    fed.assert_states(_components, RegressionState)


@pytest.mark.parametrize('case', ['mse_named_sum', 'dim3_per_logit', 'poisson', 'logistic',
                                  'loss_fn_link', 'link_other_shape'])
def test_blocks_merged_in_any_order_with_shuffled_index_maps(case):
    """Partial blocks, each numbering its keys (and 3 keys without rows) its own way, merged
    into one in different orders (and by way of each other) equal one block of every row."""
    parts = assert_parts_merge_as_reference(_face(case), lambda rng, n: _batch(rng, case, n), 7,
                                            extra=3)
    for part, _ in parts:  # merging leaves the other block unchanged
        assert part.sums.shape[0] == part.n_keys


def test_merge_with_repeated_targets_adds_each():
    rng = np.random.default_rng(3)
    labels, logits, features = _batch(rng, 'mse', 200)
    codes = codes_for(rng, 200, 20)
    src = _face('mse').new_block().add(codes, 20, labels, logits, features)
    dst = _face('mse').new_block().merge(src, np.zeros(20, np.int64))
    assert_same(dst, ReferenceBlock(_face('mse')).add(np.where(codes >= 0, 0, -1), 1, labels,
                                                      logits, features))


@pytest.mark.parametrize('case', ['mse', 'dim3', 'poisson_partial_sum'])
def test_take_then_merge_back_and_pickle(case):
    fed = _fed(case, 11).add_seeded(2500, 500)
    fed.assert_take_merge_back_and_pickle(fed.rng.permutation(500)[:350], 10 * 8)


def test_small_batches_into_many_keys_and_empty_blocks():
    """A batch of few rows into a block of many keys (the path summing only the keys it holds),
    and an empty block's reads."""
    fed = _fed('poisson', 5)
    block, face = fed.block, fed.face
    assert block.n_keys == 0 and block.losses().shape == (0,)
    assert all(v.shape == (0,) for v in block.results().values())
    assert list(block.results()) == list(face.new_state().result())
    fed.add_scattered(30, 20000)
    assert_same(block, fed.ref)
    fed.add(np.full(3, -1), 20500)  # rows of no key: grows only
    assert_same(block, fed.ref)
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
    fed = Fed(face, None, rng).add(codes, 8, labels, logits, features)
    assert_same(fed.block, fed.ref)
    assert fed.block.counts()[0].sum() == 3 * np.count_nonzero(codes >= 0)


# Batches the state rejects: name → (labels, logits, features) → the batch.
BROKEN_REGRESSION = dict(
    BROKEN,
    logistic_range=lambda labels, logits, features: (with_value(labels, 7, 1.5), logits,
                                                     features),
    string_labels=lambda labels, logits, features: (labels.astype(str), logits, features))


@pytest.mark.parametrize('bad', list(BROKEN_REGRESSION))
def test_validation_errors_are_the_states_and_leave_the_block_unchanged(bad):
    _fed('logistic' if bad == 'logistic_range' else 'mse', 2).assert_rejects_as_state(
        BROKEN_REGRESSION[bad])


def test_bad_codes_and_foreign_merges_are_refused_before_any_change():
    _fed('mse', 4).add_seeded(30, 5).assert_bad_codes_and_merges_refused(
        _face('mse_named_sum').new_block())


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
    block = _fed(case, 1).add_seeded(100, 30).block
    assert bool(calls) == (case == 'link_other_shape')
    assert_counts_are_copies(block)
