"""Paired states (heads/metrics/paired.py, heads/array/paired.py): the difference between a
candidate and a baseline scored on the same rows, and its paired interval.

Golden values come from slow references written here: DeLong's structural components by a loop
over every (positive, negative) pair, and the delta method's per-row influence values by a loop
over rows; scipy's normal quantile for the interval's width.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import heads
from heads.array.paired import BASELINE_LOGITS, ComparedHead, PairedState
from heads.metrics.paired import PairedAUC, normal_quantile


def _bin(x: float) -> int:
    """The paired AUC's bin of a logit, written out: width 0.25 on [−8, 8], tails outside."""
    return min(max(int(math.floor((x + 8.0) * 4.0)), 0), 63)


def _delong_reference(y, xc, xb, w) -> tuple[float, float, float]:
    """(Var(A_c − A_b), Var(A_c), Var(A_b)) by DeLong's structural components, pair by pair, with
    scores tied within a bin; weighted influence values (see heads/metrics/paired.py)."""
    pos = [i for i in range(len(y)) if y[i] != 0]
    neg = [j for j in range(len(y)) if y[j] == 0]
    wp = sum(w[i] for i in pos)
    wn = sum(w[j] for j in neg)

    def psi(a: int, b: int) -> float:
        return 1.0 if a > b else 0.5 if a == b else 0.0

    comps = {}
    for name, x in (('c', xc), ('b', xb)):
        bins = [_bin(v) for v in x]
        v10 = {i: sum(w[j] * psi(bins[i], bins[j]) for j in neg) / wn for i in pos}
        v01 = {j: sum(w[i] * psi(bins[i], bins[j]) for i in pos) / wp for j in neg}
        auc = sum(w[i] * v10[i] for i in pos) / wp
        comps[name] = ({i: v10[i] - auc for i in pos}, {j: v01[j] - auc for j in neg})
    (sc, tc), (sb, tb) = comps['c'], comps['b']
    diff = (sum(w[i] ** 2 * (sc[i] - sb[i]) ** 2 for i in pos) / wp ** 2
            + sum(w[j] ** 2 * (tc[j] - tb[j]) ** 2 for j in neg) / wn ** 2)
    var_c = (sum(w[i] ** 2 * sc[i] ** 2 for i in pos) / wp ** 2
             + sum(w[j] ** 2 * tc[j] ** 2 for j in neg) / wn ** 2)
    var_b = (sum(w[i] ** 2 * sb[i] ** 2 for i in pos) / wp ** 2
             + sum(w[j] ** 2 * tb[j] ** 2 for j in neg) / wn ** 2)
    return diff, var_c, var_b


def _ratio_diff_variance(n_c, d_c, n_b, d_b) -> float:
    """Var(Σn_c/Σd_c − Σn_b/Σd_b) by the delta method: Σ_i ψ_i², ψ_i row i's influence."""
    rc, rb = sum(n_c) / sum(d_c), sum(n_b) / sum(d_b)
    total = 0.0
    for i in range(len(n_c)):
        psi = (n_c[i] - rc * d_c[i]) / sum(d_c) - (n_b[i] - rb * d_b[i]) / sum(d_b)
        total += psi * psi
    return total


def _data(n: int, seed: int, weighted: bool = True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float32)
    xc = (1.4 * y + rng.normal(size=n)).astype(np.float32)
    xb = (1.0 * y + rng.normal(size=n)).astype(np.float32)
    w = rng.uniform(0.2, 3.0, n) if weighted else np.ones(n)
    return y, xc, xb, w


def _state(head, y, xc, xb, w) -> PairedState:
    return head.new_state().update(y.reshape(-1, 1), xc.reshape(-1, 1),
                                   {'w': w, BASELINE_LOGITS: xb.reshape(-1, 1)})


BINARY = ComparedHead(heads.BinaryClassHead(weight_column='w', thresholds=[0.3, 0.7]))


@pytest.mark.parametrize('weighted', [False, True])
def test_paired_auc_variances_equal_delong_pair_by_pair(weighted):
    y, xc, xb, w = _data(300, 1, weighted)
    state = PairedAUC()
    PairedAUC.add_spans([state], [(0, 0, y.size)], y != 0, xc, xb, w)
    expected = _delong_reference(y, xc, xb, w)
    np.testing.assert_allclose(state.variances(), expected, rtol=1e-9)
    # the same rows held small (a state of few rows keeps them) and merged piece by piece
    pieces = PairedAUC()
    for start in range(0, y.size, 100):
        part = PairedAUC()
        PairedAUC.add_spans([part], [(0, 0, 100)], y[start:start + 100] != 0,
                            xc[start:start + 100], xb[start:start + 100], w[start:start + 100])
        assert part._rows is not None  # 100 rows: small
        pieces.merge(part)
    assert pieces._rows is None  # 300 rows: dense
    np.testing.assert_allclose(pieces.variances(), expected, rtol=1e-9)


def test_auc_diff_interval_is_the_delong_se_times_the_normal_quantile():
    y, xc, xb, w = _data(300, 2)
    base, diffs, own = _state(BINARY, y, xc, xb, w).comparison(0.9)
    var_diff, var_c, _ = _delong_reference(y, xc, xb, w)
    d = diffs['auc']
    z = stats.norm.ppf(0.95)
    # (the head hands the weights on through its own input checks: rounding differs slightly)
    assert d.standard_error == pytest.approx(math.sqrt(var_diff), rel=1e-7)
    assert d.lower == pytest.approx(d.value - z * math.sqrt(var_diff), rel=1e-7)
    assert d.upper == pytest.approx(d.value + z * math.sqrt(var_diff), rel=1e-7)
    assert own['auc'][2] == pytest.approx(math.sqrt(var_c), rel=1e-7)
    assert normal_quantile(0.95) == pytest.approx(stats.norm.ppf(0.975), rel=1e-12)


def test_rate_and_mean_diffs_have_the_delta_method_variance_row_by_row():
    y, xc, xb, w = _data(400, 3)
    _, diffs, _ = _state(BINARY, y, xc, xb, w).comparison(0.95)
    pc = 1 / (1 + np.exp(-xc.astype(np.float64)))
    pb = 1 / (1 + np.exp(-xb.astype(np.float64)))
    pos = (y != 0).astype(float)
    ac, ab = (pc > 0.3).astype(float), (pb > 0.3).astype(float)
    cases = {
        # precision at 0.3: Σw·a·pos / Σw·a, different denominators per model
        'precision/positive_threshold_0.3': (w * ac * pos, w * ac, w * ab * pos, w * ab),
        # recall at 0.3: the positives' weight is both denominators
        'recall/positive_threshold_0.3': (w * ac * pos, w * pos, w * ab * pos, w * pos),
        # prediction/mean: the weighted mean of per-row differences
        'prediction/mean': (w * pc, w, w * pb, w),
        # accuracy: class id = logit > 0
        'accuracy': (w * ((xc > 0) == (y == 1)), w, w * ((xb > 0) == (y == 1)), w),
    }
    for metric, sums in cases.items():
        expected = _ratio_diff_variance(*[list(s) for s in sums])
        assert diffs[metric].standard_error ** 2 == pytest.approx(expected, rel=1e-6), metric


def test_diffs_are_candidate_minus_baseline_for_every_metric_both_have():
    y, xc, xb, w = _data(500, 4)
    state = _state(BINARY, y, xc, xb, w)
    base, diffs, _ = state.comparison(None)
    cand = heads.BinaryClassHead(weight_column='w', thresholds=[0.3, 0.7]).new_state().update(
        y.reshape(-1, 1), xc.reshape(-1, 1), {'w': w})
    alone = heads.BinaryClassHead(weight_column='w', thresholds=[0.3, 0.7]).new_state().update(
        y.reshape(-1, 1), xb.reshape(-1, 1), {'w': w})
    assert state.result() == cand.result()
    assert set(diffs) == set(cand.result()) | {'loss'}
    for k, v in cand.result().items():
        assert base[k] == alone.result()[k]
        assert diffs[k].value == pytest.approx(v - alone.result()[k], abs=1e-12)
        assert diffs[k].lower is None  # no level, no interval


def test_paired_state_is_exact_under_any_split_and_grouped_update():
    y, xc, xb, w = _data(3000, 5)
    whole = _state(BINARY, y, xc, xb, w)
    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 4, y.size)
    parts = [BINARY.new_state() for _ in range(4)]
    assert PairedState.update_groups(parts, codes, y.reshape(-1, 1), xc.reshape(-1, 1),
                                     {'w': w, BASELINE_LOGITS: xb.reshape(-1, 1)})
    rest = codes < 0
    tail = _state(BINARY, y[rest], xc[rest], xb[rest], w[rest])
    merged = parts[3].merge(parts[1]).merge(tail).merge(parts[0]).merge(parts[2])
    _, expected, _ = whole.comparison(0.95)
    _, got, _ = merged.comparison(0.95)
    for k, d in expected.items():
        for a, b in zip(d, got[k]):
            assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9, abs=1e-12), k


def test_a_baseline_equal_to_the_candidate_gives_zero_diffs_with_zero_width():
    y, xc, _, w = _data(400, 6)
    _, diffs, _ = _state(BINARY, y, xc, xc, w).comparison(0.95)
    for k, d in diffs.items():
        assert d.value == 0.0, k
        if d.lower is not None:
            assert d.lower == pytest.approx(0.0, abs=1e-12) and d.upper == pytest.approx(
                0.0, abs=1e-12), k


def test_degenerate_slices_give_no_interval_never_an_exception():
    for y, w in ((np.ones(5, np.float32), np.ones(5)),           # positives only
                 (np.zeros(5, np.float32), np.ones(5)),          # no positives
                 (np.array([1, 0], np.float32), np.zeros(2)),    # zero weights
                 (np.array([1], np.float32), np.ones(1))):       # one row
        x = np.linspace(-1, 1, y.size).astype(np.float32)
        _, diffs, _ = _state(BINARY, y, x, -x, w).comparison(0.95)
        assert diffs['auc'].lower is None
        for d in diffs.values():
            assert d.lower is None or (math.isfinite(d.lower) and math.isfinite(d.upper))
    _, diffs, _ = BINARY.new_state().comparison(0.95)  # an empty state
    assert all(d.lower is None for d in diffs.values())


def test_other_heads_get_paired_average_loss_by_per_row_differences():
    rng = np.random.default_rng(7)
    n = 300
    labels = rng.integers(0, 3, n).reshape(-1, 1)
    lc, lb = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    head = ComparedHead(heads.MultiClassHead(3))
    state = head.new_state().update(labels, lc, {BASELINE_LOGITS: lb})
    _, diffs, _ = state.comparison(0.95)
    inner = heads.MultiClassHead(3)
    uc = np.asarray(inner.array_loss(labels, lc)).reshape(-1)
    ub = np.asarray(inner.array_loss(labels, lb)).reshape(-1)
    d = uc - ub
    expected = sum((di - d.mean()) ** 2 for di in d) / n ** 2
    assert diffs['average_loss'].value == pytest.approx(d.mean(), rel=1e-6)
    assert diffs['average_loss'].standard_error ** 2 == pytest.approx(expected, rel=1e-9)
    assert diffs['accuracy'].lower is None  # no paired form here: point estimate only


def test_compared_head_reports_bad_baseline_logits_under_their_own_role():
    y = np.array([[1.0], [0.0]], np.float32)
    x = np.array([[0.5], [0.1]], np.float32)
    b = np.array([[np.nan], [0.2]], np.float32)
    problems = BINARY.invalid_rows(y, x, {'w': np.ones(2), BASELINE_LOGITS: b})
    roles = [(role, list(mask)) for role, _, mask in problems if np.any(mask)]
    assert roles == [('baseline_logits', [True, False])]


def _equal_quality(seed: int, n: int = 2000):
    """A candidate and a baseline of the same true quality: one true score, each model adding its
    own independent noise of the same size."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float32)
    score = 1.2 * y + rng.normal(size=n)
    xc = (score + 0.7 * rng.normal(size=n)).astype(np.float32)
    xb = (score + 0.7 * rng.normal(size=n)).astype(np.float32)
    return y, xc, xb, np.ones(n)


def test_a_max_decrease_0_gate_falsely_blocks_equal_models_about_5_percent_with_intervals():
    """Across 50 A/A data sets a `max_decrease: 0` rule blocks when the whole paired interval is
    below 0: a one-sided 2.5% test per metric. On point estimates it blocks about half."""
    head = ComparedHead(heads.BinaryClassHead())
    metrics = ('auc', 'accuracy', 'prediction/mean', 'average_loss')
    blocked_ci = {m: 0 for m in metrics}
    blocked_point = {m: 0 for m in metrics}
    for seed in range(50):
        y, xc, xb, w = _equal_quality(seed)
        _, diffs, _ = _state(head, y, xc, xb, w).comparison(0.95)
        for m in metrics:
            blocked_ci[m] += diffs[m].upper < 0
            blocked_point[m] += diffs[m].value < 0
    for m in metrics:
        assert blocked_ci[m] <= 4, (m, blocked_ci[m])     # ≤ 8% of 50 (2.5% expected)
        assert blocked_point[m] >= 15, (m, blocked_point[m])
    assert sum(blocked_ci.values()) <= 0.05 * 50 * len(metrics) + 3


def test_paired_states_pickle_and_persist_as_named_arrays():
    import pickle

    from heads.state import load_state_arrays, state_arrays
    y, xc, xb, w = _data(2000, 8)
    state = _state(BINARY, y, xc, xb, w)
    want = state.comparison(0.95)
    for back in (pickle.loads(pickle.dumps(state)),
                 load_state_arrays(BINARY.new_state(), state_arrays(state)),
                 pickle.loads(pickle.dumps(BINARY)).new_state().merge(state)):
        assert back.comparison(0.95) == want
    with pytest.raises(ValueError, match='Cannot merge'):
        BINARY.new_state().merge(BINARY.head.new_state())


@pytest.mark.parametrize('make', [lambda: heads.RegressionHead(weight_column='w'),
                                  lambda: heads.PoissonRegressionHead(weight_column='w')])
def test_regression_means_get_the_variance_of_weighted_per_row_differences(make):
    rng = np.random.default_rng(9)
    n = 400
    labels = rng.poisson(2.0, n).astype(np.float32).reshape(-1, 1)
    lc = rng.normal(size=(n, 1)).astype(np.float32)
    lb = rng.normal(size=(n, 1)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, n)
    head = ComparedHead(make())
    _, diffs, _ = head.new_state().update(labels, lc, {'w': w, BASELINE_LOGITS: lb}
                                          ).comparison(0.95)
    link = np.exp if isinstance(head.head, heads.PoissonRegressionHead) else (lambda v: v)
    pc = link(lc.astype(np.float64)).reshape(-1)
    pb = link(lb.astype(np.float64)).reshape(-1)
    d = pc - pb
    mean = float(np.sum(w * d) / np.sum(w))
    expected = sum(w[i] ** 2 * (d[i] - mean) ** 2 for i in range(n)) / np.sum(w) ** 2
    assert diffs['prediction/mean'].value == pytest.approx(mean, rel=1e-5)
    assert diffs['prediction/mean'].standard_error ** 2 == pytest.approx(expected, rel=1e-5)
    assert diffs['label/mean'].value == 0.0
    assert diffs['label/mean'].standard_error == pytest.approx(0.0, abs=1e-12)


def test_a_mean_loss_diff_has_the_variance_of_per_row_weighted_loss_differences():
    y, xc, xb, w = _data(400, 10)
    _, diffs, _ = _state(BINARY, y, xc, xb, w).comparison(0.95)
    # sigmoid cross-entropy per row: log(1 + e^x) − y·x; loss = Σ w·u / rows
    uc = np.logaddexp(0.0, xc.astype(np.float64)) - y * xc.astype(np.float64)
    ub = np.logaddexp(0.0, xb.astype(np.float64)) - y * xb.astype(np.float64)
    d = w * (uc - ub)
    n = y.size
    expected = sum((d[i] - d.mean()) ** 2 for i in range(n)) / n ** 2
    assert diffs['loss'].value == pytest.approx(d.mean(), rel=1e-5)
    assert diffs['loss'].standard_error ** 2 == pytest.approx(expected, rel=1e-5)
    summed = ComparedHead(heads.BinaryClassHead(weight_column='w', loss_reduction='sum'))
    _, diffs, _ = _state(summed, y, xc, xb, w).comparison(0.95)
    assert diffs['loss'].lower is None  # a sum over rows: no interval


def test_a_small_paired_state_stays_small_through_pickling_and_persists_as_the_dense_one():
    import pickle

    from heads.state import load_state_arrays, state_arrays
    y, xc, xb, w = _data(50, 11)
    state = _state(BINARY, y, xc, xb, w)
    data = pickle.dumps(state.auc)
    assert len(data) < 5000  # the rows, not the 66 kB arrays
    back = pickle.loads(data)
    assert back._rows is not None and back.variances() == state.auc.variances()
    loaded = load_state_arrays(BINARY.new_state(), state_arrays(state))
    assert loaded.comparison(0.95) == state.comparison(0.95)
