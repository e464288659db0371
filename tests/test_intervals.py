"""Confidence intervals (issue 17): every interval a state gives equals its formula applied
directly to the rows (written here in numpy / scipy, independently of the states), whatever the
split, merge order, grouped update or small-state path; degenerate data gives None, never a NaN
or an exception; a state without intervals holds and gives nothing more.
"""
from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
from scipy import stats

from heads import BinaryClassHead, MultiClassHead, MultiHead, MultiLabelHead, RegressionHead
from heads.array.binary import BinaryClassIntervalState
from heads.metrics import intervals as ci
from heads.state import load_state_arrays, state_arrays
from _helpers import assert_same_intervals  # noqa: E402

Z95 = float(stats.norm.ppf(0.975))


# -- reference implementations (slow, direct) ----------------------------------------------------

def ref_wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """The roots in π of (p − π)² = z²·π(1 − π)/n (Wilson's defining equation)."""
    a = 1.0 + z * z / n
    b = -(2.0 * p + z * z / n)
    c = p * p
    roots = np.sort(np.roots([a, b, c]).real)
    for _ in range(3):  # Newton steps: np.roots (eigenvalues) is good to ~1e-9 only
        roots = roots - (a * roots ** 2 + b * roots + c) / (2 * a * roots + b)
    return float(roots[0]), float(roots[1])


def ref_mean(x: np.ndarray, w: np.ndarray, z: float) -> tuple[float, float, float]:
    """Weighted mean ± z·se, se² = n_eff/(n_eff − 1)·Σw²(x − m)²/(Σw)²."""
    m = np.sum(w * x) / np.sum(w)
    n_eff = np.sum(w) ** 2 / np.sum(w * w)
    se = math.sqrt(n_eff / (n_eff - 1) * np.sum(w * w * (x - m) ** 2) / np.sum(w) ** 2)
    return m - z * se, m + z * se, se


def ref_delong(scores: np.ndarray, positive: np.ndarray, w: np.ndarray, z: float
               ) -> tuple[float, float, float, float]:
    """(auc, lower, upper, se) by DeLong's structural components over every pair, weighted means
    over the other class and Kish's effective sizes (DeLong 1988 for unit weights)."""
    xs, wx = scores[positive], w[positive]
    ys, wy = scores[~positive], w[~positive]
    psi = (xs[:, None] > ys[None, :]) + 0.5 * (xs[:, None] == ys[None, :])
    v10 = psi @ wy / wy.sum()
    v01 = wx @ psi / wx.sum()
    auc = float(np.sum(wx * v10) / wx.sum())
    m = wx.sum() ** 2 / np.sum(wx * wx)
    n = wy.sum() ** 2 / np.sum(wy * wy)
    s10 = np.sum(wx * (v10 - auc) ** 2) / wx.sum() * m / (m - 1)
    s01 = np.sum(wy * (v01 - auc) ** 2) / wy.sum() * n / (n - 1)
    se = math.sqrt(s10 / m + s01 / n)
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se), se


def unweighted_delong(scores: np.ndarray, positive: np.ndarray) -> float:
    """DeLong's se as usually written: S10 / m + S01 / n with sample variances (ddof 1)."""
    xs, ys = scores[positive], scores[~positive]
    psi = (xs[:, None] > ys[None, :]) + 0.5 * (xs[:, None] == ys[None, :])
    return math.sqrt(np.var(psi.mean(axis=1), ddof=1) / xs.size
                     + np.var(psi.mean(axis=0), ddof=1) / ys.size)


# -- data ----------------------------------------------------------------------------------------

def binary_data(n: int, seed: int = 0, weighted: bool = True):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.float32)
    # Logits on a grid of 25 values: exact ties, each value in a histogram entry of its own.
    x = (rng.integers(-12, 13, n) / 4.0 + y).astype(np.float32)
    # Weights as the heads read them: float32 values (tf.estimator's feature columns).
    w = rng.uniform(0.2, 3.0, n).astype(np.float32).astype(np.float64) if weighted else np.ones(n)
    return y[:, None], x[:, None], w


def sigmoid32(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def binary_state(y, x, w, **kw):
    head = BinaryClassHead(weight_column='w', thresholds=[0.3, 0.7], **kw)
    return head.new_state(intervals=True).update(y, x, {'w': w[:, None]})


def assert_estimate(got, lower, upper, se=None, tol=1e-9):
    assert got is not None
    assert got.lower == pytest.approx(lower, abs=tol)
    assert got.upper == pytest.approx(upper, abs=tol)
    if se is not None:
        assert got.standard_error == pytest.approx(se, abs=tol)


# -- formulas ------------------------------------------------------------------------------------

def test_the_normal_quantile_of_a_level_is_scipys():
    for level in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
        assert ci.normal_quantile(level) == pytest.approx(stats.norm.ppf(0.5 + level / 2), 1e-12)
    with pytest.raises(ValueError, match='level'):
        ci.normal_quantile(1.0)


def test_the_student_t_quantile_is_scipys_to_1e_3():
    for df in (5, 10, 19, 99, 1000):
        for level in (0.8, 0.9, 0.95, 0.99) if df >= 10 else (0.8, 0.9, 0.95):
            assert ci.student_t_quantile(level, df) == pytest.approx(
                stats.t.ppf(0.5 + level / 2, df), abs=1e-3), (df, level)


def test_wilson_is_the_root_pair_of_its_defining_equation():
    for p, n in ((0.3, 50.0), (0.0, 10.0), (1.0, 7.5), (0.5, 1.0), (0.91, 1234.5)):
        lower, upper = ref_wilson(p, n, Z95)
        got = ci.wilson(p, n, Z95)
        assert_estimate(got, max(lower, 0.0), min(upper, 1.0), math.sqrt(p * (1 - p) / n))


def test_a_mean_interval_with_unit_weights_is_the_t_free_sem_interval():
    x = np.random.default_rng(1).normal(size=40)
    sem = stats.sem(x)
    got = ci.mean_interval(40.0, x.sum(), 40.0, x.sum(), (x * x).sum(), Z95)
    assert_estimate(got, x.mean() - Z95 * sem, x.mean() + Z95 * sem, sem)


def test_delong_with_unit_weights_is_delongs_sample_variance_formula():
    y, x, _ = binary_data(300, weighted=False)
    state = binary_state(y, x, np.ones(300))
    se = unweighted_delong(sigmoid32(x[:, 0]), y[:, 0] != 0)
    assert state.interval_estimates()['auc'].standard_error == pytest.approx(se, abs=1e-12)


def test_four_examples_whose_intervals_are_known_by_hand():
    """Labels 0, 0, 1, 1 with logits −2, 0, −1, 2 (order: neg < pos < neg < pos).
    AUC = 3/4. DeLong: positives' V10 = 1/2, 1; negatives' V01 = 1, 1/2; S10 = S01 =
    var([1/2, 1], ddof=1) = 1/8; Var = 1/8 / 2 + 1/8 / 2 = 1/8. label/mean = 1/2 with
    s² = 1/3, se² = 1/3 / 4 = 1/12. Accuracy (class id: logit > 0): 3 of 4."""
    state = BinaryClassHead().new_state(intervals=True).update(
        np.array([[0], [0], [1], [1]], np.float32), np.array([[-2], [0], [-1], [2]], np.float32))
    got = state.interval_estimates()
    se = math.sqrt(1 / 8)
    assert_estimate(got['auc'], 0.75 - Z95 * se, min(1.0, 0.75 + Z95 * se), se)
    se = math.sqrt(1 / 12)
    assert_estimate(got['label/mean'], 0.5 - Z95 * se, 0.5 + Z95 * se, se)
    center = (0.75 + Z95 ** 2 / 8) / (1 + Z95 ** 2 / 4)
    half = Z95 / (1 + Z95 ** 2 / 4) * math.sqrt(0.75 * 0.25 / 4 + Z95 ** 2 / 64)
    assert_estimate(got['accuracy'], center - half, center + half, math.sqrt(0.75 * 0.25 / 4))


# -- the binary state against direct formulas -----------------------------------------------------

@pytest.mark.parametrize('weighted', [False, True])
def test_binary_intervals_equal_their_formulas_on_the_rows(weighted):
    y, x, w = binary_data(400, seed=2, weighted=weighted)
    state = binary_state(y, x, w)
    got = state.interval_estimates(0.95)
    yy, p = y[:, 0].astype(np.float64), sigmoid32(x[:, 0]).astype(np.float64)
    loss = np.maximum(x[:, 0], 0) - x[:, 0] * yy + np.log1p(np.exp(-np.abs(x[:, 0])))
    for key, values in (('label/mean', yy), ('prediction/mean', p), ('average_loss', loss)):
        lower, upper, se = ref_mean(values, w, Z95)
        assert_estimate(got[key], lower, upper, se, tol=1e-7)  # loss: float32 logits
    auc, lower, upper, se = ref_delong(p, yy != 0, w, Z95)
    assert_estimate(got['auc'], lower, upper, se)

    def rate(hit, of):
        n_eff = w[of].sum() ** 2 / np.sum(w[of] ** 2)
        return ref_wilson(w[hit & of].sum() / w[of].sum(), n_eff, Z95)

    positive, predicted = yy == 1, x[:, 0] > 0
    assert_estimate(got['accuracy'], *rate(positive == predicted, np.ones(400, bool)))
    assert_estimate(got['precision'], *rate(positive, predicted))
    assert_estimate(got['recall'], *rate(predicted, positive))
    for t in (0.3, 0.7):
        above = p.astype(np.float32) > np.float32(t)
        assert_estimate(got['precision/positive_threshold_%g' % t], *rate(positive, above))
        assert_estimate(got['recall/positive_threshold_%g' % t], *rate(above, positive))
        assert_estimate(got['accuracy/positive_threshold_%g' % t],
                        *rate(positive == above, np.ones(400, bool)))
    assert 'auc_precision_recall' not in got and 'accuracy_baseline' not in got


def test_intervals_follow_the_level():
    y, x, w = binary_data(300)
    state = binary_state(y, x, w)
    wide, narrow = state.interval_estimates(0.99)['auc'], state.interval_estimates(0.8)['auc']
    assert wide.standard_error == narrow.standard_error
    ratio = (wide.upper - wide.lower) / (narrow.upper - narrow.lower)
    assert ratio == pytest.approx(stats.norm.ppf(0.995) / stats.norm.ppf(0.9), 1e-9)


# -- mergeable: splits, groups, small states ------------------------------------------------------

def _all_heads():
    return {
        'binary': (BinaryClassHead(weight_column='w', thresholds=[0.4]), 1, 'binary'),
        'multi_class': (MultiClassHead(3, weight_column='w'), 3, 'ids'),
        'multi_label': (MultiLabelHead(3, weight_column='w', thresholds=[0.5],
                                       classes_for_class_based_metrics=[1]), 3, 'indicator'),
        'regression': (RegressionHead(label_dimension=2, weight_column='w'), 2, 'real'),
    }


def _batch(kind: str, d: int, n: int, rng: np.random.Generator):
    x = rng.normal(size=(n, d)).astype(np.float32)
    if kind == 'binary' or kind == 'indicator':
        y = (rng.random((n, d)) < 0.5).astype(np.float32)
        x = x + y
    elif kind == 'ids':
        y = rng.integers(0, d, (n, 1))
    else:
        y = (x + rng.normal(size=(n, d))).astype(np.float32)
    return y, x, {'w': rng.uniform(0.1, 2.0, (n, 1))}


def _flat(est: dict) -> dict:
    return {k: None if v is None else tuple(float(a) for a in v) for k, v in est.items()}


@pytest.mark.parametrize('name', ['binary', 'multi_class', 'multi_label', 'regression'])
def test_intervals_do_not_depend_on_the_split_the_merge_order_or_small_states(name):
    head, d, kind = _all_heads()[name]
    rng = np.random.default_rng(5)
    batches = [_batch(kind, d, n, rng) for n in (7, 300, 1500, 1, 60)]
    whole = head.new_state(intervals=True)
    cat = [np.concatenate([b[i] for b in batches]) for i in range(2)]
    whole.update(cat[0], cat[1], {'w': np.concatenate([b[2]['w'] for b in batches])})
    parts = [head.new_state(intervals=True).update(*b) for b in batches]
    merged = head.new_state(intervals=True)
    for p in reversed(parts):
        merged.merge(p)
    sequential = head.new_state(intervals=True)
    for b in batches:
        sequential.update(*b)
    dense = type(whole)(whole.face)  # dense from the first row
    for b in batches:
        dense.update(*b)
    reloaded = pickle.loads(pickle.dumps(parts[0]))  # a small state's pickle
    reloaded.merge(parts[1])
    expected = _flat(whole.interval_estimates())
    for other in (merged, sequential, dense):
        assert_same_intervals(_flat(other.interval_estimates()), expected)
    check = head.new_state(intervals=True).merge(parts[0]).merge(parts[1])
    assert_same_intervals(_flat(reloaded.interval_estimates()), _flat(check.interval_estimates()))


@pytest.mark.parametrize('name', ['binary', 'multi_class', 'multi_label', 'regression'])
def test_a_grouped_update_gives_each_state_the_intervals_of_its_own_rows(name):
    head, d, kind = _all_heads()[name]
    rng = np.random.default_rng(6)
    y, x, f = _batch(kind, d, 3000, rng)
    codes = rng.integers(-1, 3, 3000)
    codes[:2000] = np.where(codes[:2000] == 2, 0, codes[:2000])  # state 2: few rows (small)
    states = [head.new_state(intervals=True) for _ in range(3)]
    assert type(states[0]).update_groups(states, codes, y, x, f)
    for g in range(3):
        rows = codes == g
        alone = head.new_state(intervals=True).update(y[rows], x[rows], {'w': f['w'][rows]})
        assert_same_intervals(_flat(states[g].interval_estimates()), _flat(alone.interval_estimates()))


def test_an_interval_state_survives_state_arrays_and_reload():
    y, x, w = binary_data(2000)
    state = binary_state(y, x, w)
    fresh = BinaryClassHead(weight_column='w', thresholds=[0.3, 0.7]).new_state(intervals=True)
    load_state_arrays(fresh, state_arrays(state))
    assert_same_intervals(_flat(fresh.interval_estimates()), _flat(state.interval_estimates()))


def test_a_multi_head_gives_its_members_intervals():
    head = MultiHead([BinaryClassHead(name='a'), RegressionHead(name='b')])
    rng = np.random.default_rng(7)
    y = (rng.random((500, 1)) < 0.5).astype(np.float32)
    x = rng.normal(size=(500, 2)).astype(np.float32)
    state = head.new_state(intervals=True).update({'a': y, 'b': x[:, :1]}, x)
    a = BinaryClassHead(name='a').new_state(intervals=True).update(y, x[:, :1])
    b = RegressionHead(name='b').new_state(intervals=True).update(x[:, :1], x[:, 1:])
    assert_same_intervals(_flat(state.interval_estimates()),
           {**_flat(a.interval_estimates()), **_flat(b.interval_estimates())})


# -- plain states and degenerate data ------------------------------------------------------------

def test_a_state_without_intervals_keeps_no_interval_sums_and_gives_none():
    for head, d, kind in _all_heads().values():
        plain = head.new_state().update(*_batch(kind, d, 50, np.random.default_rng(0)))
        assert plain.intervals() == {} and 'ci' not in plain.__dict__
        assert not plain.INTERVALS
        with pytest.raises(ValueError, match='Cannot merge'):
            head.new_state(intervals=True).merge(plain)


def _no_nan(est: dict) -> None:
    for k, v in est.items():
        assert v is None or all(math.isfinite(a) for a in v if a is not None), k


def test_degenerate_slices_give_none_or_a_documented_interval_never_nan():
    head = BinaryClassHead(weight_column='w', thresholds=[0.5])
    empty = head.new_state(intervals=True).interval_estimates()
    assert all(v is None for v in empty.values())
    ones = np.ones((20, 1), np.float32)
    all_pos = head.new_state(intervals=True).update(ones, ones, {'w': np.ones((20, 1))})
    est = all_pos.interval_estimates()
    _no_nan(est)
    assert est['auc'] is None and est['label/mean'] is not None  # zero spread: (1, 1)
    assert est['label/mean'][:2] == (1.0, 1.0)
    assert est['recall'] is not None and est['recall'].upper == 1.0
    one = head.new_state(intervals=True).update(ones[:1], ones[:1], {'w': np.ones((1, 1))})
    est = one.interval_estimates()
    _no_nan(est)
    assert est['label/mean'] is None and est['auc'] is None
    assert est['accuracy'] == ci.wilson(1.0, 1.0, Z95)  # Wilson on one trial: documented
    zero = head.new_state(intervals=True).update(ones, ones, {'w': np.zeros((20, 1))})
    assert all(v is None for v in zero.interval_estimates().values())
    nan = head.new_state(intervals=True).update(ones, np.full((20, 1), np.nan, np.float32),
                                                {'w': np.ones((20, 1))})
    _no_nan(nan.interval_estimates())


def test_one_positive_and_one_negative_give_no_auc_interval():
    head = BinaryClassHead()
    state = head.new_state(intervals=True).update(np.array([[1.0], [0.0]], np.float32),
                                                  np.array([[1.0], [-1.0]], np.float32))
    assert state.interval_estimates()['auc'] is None
    assert ci.delong_auc(np.array([0.0, 1.0]), np.array([1.0, 0.0]), 1.0, 1.0, Z95)[1] is None


def test_a_regression_batch_on_keras_broadcasting_path_gives_no_intervals():
    head = RegressionHead(label_dimension=2, weight_column='w')
    x = np.ones((4, 2), np.float32)
    state = head.new_state(intervals=True).update(x, x, {'w': np.ones((4, 2))})  # per logit
    assert set(state.interval_estimates().values()) == {None}
    state.result()  # the metrics themselves are unaffected


def test_interval_states_are_binary_interval_states_small_until_many_rows():
    state = BinaryClassHead().new_state(intervals=True)
    assert isinstance(state, BinaryClassIntervalState) and state.is_small
    copy.deepcopy(state).update(np.ones((3, 1), np.float32), np.ones((3, 1), np.float32))


def test_soft_labels_give_the_label_mean_interval_of_their_values():
    rng = np.random.default_rng(9)
    y = rng.random((500, 1)).astype(np.float32)
    x = rng.normal(size=(500, 1)).astype(np.float32)
    w = rng.uniform(0.2, 3.0, 500).astype(np.float32).astype(np.float64)
    hard = (y > 0.5).astype(np.float32)
    state = binary_state(y[:250], x[:250], w[:250])  # one soft batch, then one hard
    state.update(hard[250:], x[250:], {'w': w[250:, None]})
    labels = np.concatenate([y[:250, 0], hard[250:, 0]]).astype(np.float64)
    lower, upper, se = ref_mean(labels, w, Z95)
    assert_estimate(state.interval_estimates()['label/mean'], lower, upper, se)


@pytest.mark.slow
@pytest.mark.parametrize('weighted', [False, True])
def test_the_95_percent_intervals_cover_the_truth_about_95_percent_of_the_time(weighted):
    """bench/coverage.py on 400 replicates of 1000 rows: every metric's coverage within about
    three Monte Carlo standard errors (1.1%) of 95%."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench',
                        'coverage.py')
    spec = importlib.util.spec_from_file_location('_bench_coverage', path)
    coverage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(coverage)
    truth = coverage.truths()
    assert truth['auc'] == pytest.approx(stats.norm.cdf(coverage.DELTA / math.sqrt(2)), 1e-12)
    results = coverage.simulate(400, 1000, weighted, 0.95, seed=23)
    for metric, r in results.items():
        assert r['undefined'] == 0
        assert 0.915 <= r['coverage'] <= 0.985, (metric, r)


# -- the other families against direct formulas ---------------------------------------------------

def _grid_logits(rng: np.random.Generator, shape: tuple, shift: np.ndarray) -> np.ndarray:
    """Logits on a grid of quarter steps (exact ties, each value in a histogram entry of its
    own) shifted up for positives."""
    return (rng.integers(-12, 13, shape) / 4.0 + shift).astype(np.float32)


def _wilson_rate(hit: np.ndarray, of: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    n_eff = w[of].sum() ** 2 / np.sum(w[of] ** 2)
    return ref_wilson(w[hit & of].sum() / w[of].sum(), n_eff, Z95)


def test_multi_class_intervals_equal_their_formulas():
    rng = np.random.default_rng(11)
    n = 600
    ids = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    w = rng.uniform(0.2, 3.0, n).astype(np.float32).astype(np.float64)
    head = MultiClassHead(3, weight_column='w')
    got = head.new_state(intervals=True).update(ids[:, None], x, {'w': w[:, None]}
                                                ).interval_estimates()
    x64 = x.astype(np.float64)
    loss = np.log(np.exp(x64).sum(axis=1)) - x64[np.arange(n), ids]
    assert_estimate(got['average_loss'], *ref_mean(loss, w, Z95), tol=1e-7)
    assert_estimate(got['accuracy'], *_wilson_rate(np.argmax(x, axis=1) == ids,
                                                   np.ones(n, bool), w))


def test_regression_intervals_treat_each_example_as_one_unit():
    rng = np.random.default_rng(12)
    n, d = 300, 2
    y = rng.normal(size=(n, d)).astype(np.float32)
    p = (y + rng.normal(size=(n, d))).astype(np.float32)
    w = rng.uniform(0.2, 3.0, n).astype(np.float32).astype(np.float64)
    got = RegressionHead(label_dimension=d, weight_column='w').new_state(intervals=True).update(
        y, p, {'w': w[:, None]}).interval_estimates()
    for key, values in (('label/mean', y), ('prediction/mean', p),
                        ('average_loss', (y.astype(np.float64) - p) ** 2)):
        values = values.astype(np.float64)
        m = np.sum(w[:, None] * values) / (d * w.sum())
        # Linearization with the example as the unit: its residual w·Σ_d (x − m).
        resid = w * (values - m).sum(axis=1)
        n_eff = w.sum() ** 2 / np.sum(w * w)
        se = math.sqrt(n_eff / (n_eff - 1) * np.sum(resid ** 2) / (d * w.sum()) ** 2)
        assert_estimate(got[key], m - Z95 * se, m + Z95 * se, se, tol=1e-9)


def test_multi_label_intervals_equal_their_formulas():
    rng = np.random.default_rng(13)
    n, c = 500, 3
    y = (rng.random((n, c)) < 0.4).astype(np.int64)
    x = _grid_logits(rng, (n, c), y)
    w = rng.uniform(0.2, 3.0, n).astype(np.float32).astype(np.float64)
    head = MultiLabelHead(c, weight_column='w', thresholds=[0.5],
                          classes_for_class_based_metrics=[0, 2])
    got = head.new_state(intervals=True).update(y, x, {'w': w[:, None]}).interval_estimates()
    p = sigmoid32(x).astype(np.float64)
    pos = y == 1
    for k in (0, 2):
        assert_estimate(got['auc/class%d' % k], *ref_delong(p[:, k], pos[:, k], w, Z95)[1:])
        # float32 sigmoids may differ from the head's by an ulp: 1e-7.
        assert_estimate(got['probability_mean/class%d' % k], *ref_mean(p[:, k], w, Z95),
                        tol=1e-7)
    # Pooled: every (example, class) pair a unit with its example's weight.
    wp = np.repeat(w, c)
    assert_estimate(got['auc'], *ref_delong(p.reshape(-1), pos.reshape(-1), wp, Z95)[1:])
    above = (sigmoid32(x) > np.float32(0.5)).reshape(-1)
    assert_estimate(got['precision/positive_threshold_0.5'],
                    *_wilson_rate(pos.reshape(-1), above, wp))
    assert_estimate(got['recall/positive_threshold_0.5'],
                    *_wilson_rate(above, pos.reshape(-1), wp))
    match = (pos == (sigmoid32(x) > np.float32(0.5))).mean(axis=1)
    assert_estimate(got['accuracy/positive_threshold_0.5'], *ref_mean(match, w, Z95))
    x64 = x.astype(np.float64)
    loss = (np.maximum(x64, 0) - x64 * y + np.log1p(np.exp(-np.abs(x64)))).mean(axis=1)
    assert_estimate(got['average_loss'], *ref_mean(loss, w, Z95), tol=1e-7)
    assert 'auc_precision_recall' not in got
