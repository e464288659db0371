"""`method: bootstrap` (issue 17): Poisson-bootstrap replicates kept beside a head's state. The
counts are Poisson(1) and a function of each example's content only, so the intervals do not
depend on how the data are split, grouped or merged; their standard errors agree with the
analytic ones; degenerate data give None.
"""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy import stats

from heads import BinaryClassHead, MultiClassHead, MultiLabelHead, RegressionHead
from heads.array.bootstrap import (REPLICATES, ROW_ID, BootstrapState, poisson_counts,
                                   row_hashes, row_ids)
from heads.state import load_state_arrays, state_arrays
from _helpers import assert_same_intervals  # noqa: E402


def _binary(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 1)) < 0.3).astype(np.float32)
    x = (rng.normal(size=(n, 1)) + y).astype(np.float32)
    w = rng.uniform(0.2, 3.0, (n, 1))
    return y, x, {'w': w}


def _flat(est: dict) -> dict:
    return {k: None if v is None else tuple(v) for k, v in est.items()}


def test_counts_are_poisson_1_and_a_function_of_the_row_only():
    rng = np.random.default_rng(0)
    rows = {'x': rng.normal(size=200_000).astype(np.float32), 'w': np.ones(200_000)}
    hashes = row_hashes(rows, 200_000)
    counts = poisson_counts(hashes, 3)
    for j in range(4):  # P(count = j) = e^-1 / j!, within 4 standard errors
        p = math.exp(-1) / math.factorial(j)
        assert abs(np.mean(counts == j) - p) < 4 * math.sqrt(p * (1 - p) / 200_000)
    assert not np.array_equal(counts, poisson_counts(hashes, 4))  # replicates differ
    order = rng.permutation(200_000)
    again = row_hashes({'x': rows['x'][order], 'w': rows['w'][order]}, 200_000)
    np.testing.assert_array_equal(again, hashes[order])


@pytest.mark.parametrize('head, make', [
    (BinaryClassHead(weight_column='w', thresholds=[0.5]), lambda n, s: _binary(n, s)),
    (MultiClassHead(3), lambda n, s: (np.random.default_rng(s).integers(0, 3, (n, 1)),
                                      np.random.default_rng(s + 1).normal(size=(n, 3)), None)),
    (MultiLabelHead(3, classes_for_class_based_metrics=[1]),
     lambda n, s: ((np.random.default_rng(s).random((n, 3)) < 0.5).astype(np.int64),
                   np.random.default_rng(s + 1).normal(size=(n, 3)).astype(np.float32), None)),
    (RegressionHead(label_dimension=2),
     lambda n, s: (np.random.default_rng(s).normal(size=(n, 2)).astype(np.float32),
                   np.random.default_rng(s + 1).normal(size=(n, 2)).astype(np.float32), None)),
])
def test_intervals_do_not_depend_on_the_split_or_the_grouping(head, make):
    batches = [make(n, i) for i, n in enumerate((700, 1500, 3, 400))]
    whole = BootstrapState(head.new_state(), 5)
    cat = [np.concatenate([b[i] for b in batches]) for i in range(2)]
    features = (None if batches[0][2] is None else
                {'w': np.concatenate([b[2]['w'] for b in batches])})
    whole.update(cat[0], cat[1], features)
    merged = BootstrapState(head.new_state(), 5)
    for b in reversed(batches):
        merged.merge(BootstrapState(head.new_state(), 5).update(*b))
    assert_same_intervals(_flat(merged.interval_estimates()), _flat(whole.interval_estimates()))
    codes = np.random.default_rng(9).integers(0, 3, cat[0].shape[0])
    states = [BootstrapState(head.new_state(), 5) for _ in range(3)]
    assert BootstrapState.update_groups(states, codes, cat[0], cat[1], features)
    alone = BootstrapState(head.new_state(), 5).update(
        cat[0][codes == 1], cat[1][codes == 1],
        None if features is None else {'w': features['w'][codes == 1]})
    assert_same_intervals(_flat(states[1].interval_estimates()), _flat(alone.interval_estimates()))
    reloaded = pickle.loads(pickle.dumps(merged))
    assert_same_intervals(_flat(reloaded.interval_estimates()), _flat(merged.interval_estimates()))
    fresh = load_state_arrays(BootstrapState(head.new_state(), 5), state_arrays(merged))
    assert_same_intervals(_flat(fresh.interval_estimates()), _flat(merged.interval_estimates()))


def test_bootstrap_standard_errors_agree_with_the_analytic_ones():
    y, x, f = _binary(5000, 4)
    head = BinaryClassHead(weight_column='w')
    boot = BootstrapState(head.new_state(), 300).update(y, x, f).interval_estimates()
    analytic = head.new_state(intervals=True).update(y, x, f).interval_estimates()
    # sd of 300 replicates: relative standard error 1/sqrt(2·299) = 4%; allow 5 of them.
    for key in ('auc', 'label/mean', 'prediction/mean', 'accuracy', 'precision', 'recall'):
        ratio = boot[key].standard_error / analytic[key].standard_error
        assert 0.8 < ratio < 1.2, (key, ratio)
    z = stats.t.ppf(0.975, 299)
    value = head.new_state().update(y, x, f).result()['auc_precision_recall']
    e = boot['auc_precision_recall']  # a metric without a closed form gets one too
    assert (e.lower, e.upper) == pytest.approx((value - z * e.standard_error,
                                                value + z * e.standard_error), rel=1e-9)


def test_degenerate_data_give_none_never_nan():
    head = BinaryClassHead(weight_column='w')
    assert set(BootstrapState(head.new_state()).interval_estimates().values()) == {None}
    one = BootstrapState(head.new_state()).update(np.ones((1, 1), np.float32),
                                                  np.ones((1, 1), np.float32), {'w': [[1.0]]})
    assert set(one.interval_estimates().values()) == {None}
    zero = BootstrapState(head.new_state()).update(*_binary(50, 1)[:2], {'w': np.zeros((50, 1))})
    assert set(zero.interval_estimates().values()) == {None}
    reg = BootstrapState(RegressionHead(label_dimension=2, weight_column='w').new_state())
    x = np.ones((4, 2), np.float32)
    reg.update(x, x, {'w': np.ones((4, 2))})  # Keras' broadcasting path: no replicates
    assert set(reg.interval_estimates().values()) == {None}
    ones = np.ones((30, 1), np.float32)
    ids = row_ids('f.parquet', np.arange(30))  # identical rows, told apart by their identity
    all_pos = BootstrapState(head.new_state()).update(ones, ones,
                                                      {'w': np.ones((30, 1)), ROW_ID: ids})
    est = all_pos.interval_estimates()
    assert est['auc'] is None and est['label/mean'] == (1.0, 1.0, 0.0)  # no spread: documented
    with pytest.raises(ValueError, match='Cannot merge'):
        BootstrapState(head.new_state(), 5).merge(BootstrapState(head.new_state(), 6))


def test_row_identities_decide_the_counts_and_identical_rows_without_them_move_together():
    ones = np.ones((200, 1), np.float32)
    y = np.concatenate([ones[:100], 0 * ones[:100]])
    head = BinaryClassHead()
    ids = row_ids('part-0.parquet', np.arange(200))
    with_ids = BootstrapState(head.new_state(), 50).update(y, ones, {ROW_ID: ids})
    # Two distinct rows, 100 copies each: label/mean = 1/2 with se sqrt(1/4 / 200) = 0.035.
    se = with_ids.interval_estimates()['label/mean'].standard_error
    assert 0.025 < se < 0.045
    # By content, the copies share counts: the replicates resample 2 rows, not 200.
    by_content = BootstrapState(head.new_state(), 50).update(y, ones)
    assert by_content.interval_estimates()['label/mean'].standard_error > 0.2
    assert not np.array_equal(row_ids('part-0.parquet', np.arange(5)),
                              row_ids('part-1.parquet', np.arange(5)))
    with pytest.raises(ValueError, match=ROW_ID):
        BootstrapState(head.new_state()).update(y, ones, {ROW_ID: ids[:5]})


def test_on_a_few_rows_proportions_keep_to_0_1_and_other_metrics_are_not_cut():
    """Six rows: the replicates' AUC and accuracy spread so widely that value ± t·sd reaches past
    [0, 1]; those intervals end at 0 and 1, while a mean of logits-scale losses is not cut."""
    head = BinaryClassHead(weight_column='w')
    y = np.array([[0], [1], [0], [1], [1], [0]], np.float32)
    x = np.array([[-0.2], [0.1], [0.3], [-0.4], [2.0], [-2.0]], np.float32)
    state = BootstrapState(head.new_state()).update(
        y, x, {'w': np.ones((6, 1)), ROW_ID: row_ids('few.parquet', np.arange(6))})
    est = state.interval_estimates()
    values = state.result()
    z = stats.t.ppf(0.975, REPLICATES - 1)
    cut = 0
    for key in ('auc', 'accuracy', 'precision', 'recall'):
        e = est[key]
        assert 0.0 <= e.lower <= values[key] <= e.upper <= 1.0, key
        uncut = (values[key] - z * e.standard_error, values[key] + z * e.standard_error)
        # (the state's t quantile agrees with scipy's to ~1e-6)
        assert e.lower == pytest.approx(max(uncut[0], 0.0), abs=1e-5), key
        assert e.upper == pytest.approx(min(uncut[1], 1.0), abs=1e-5), key
        cut += uncut[0] < 0.0 or uncut[1] > 1.0
    assert cut > 0  # the data reach past the range, so the cut is exercised
    loss = est['average_loss']
    assert loss.upper - loss.lower == pytest.approx(2 * z * loss.standard_error, rel=1e-5)
