"""Coverage of the paired intervals of `diff` rows: on simulated data with known true metrics,
how often each 95% interval of candidate − baseline covers the true difference.

    PYTHONPATH=$PWD .venv/bin/python bench/paired_coverage.py [--replicates 400] [--rows 4000]

Binormal scores sharing a common component (so the models are correlated, as two models of the
same rows are): logit = μ·y + (s + e)/√2 with s shared, e each model's own, s, e ~ N(0, 1), labels
balanced; μ = 1.2 (candidate), 1.0 (baseline). Each model's true ROC AUC is Φ(μ/√2), its true
accuracy (class id = logit > 0) ½Φ(μ) + ¼; the prediction mean's truth is estimated once from 4M
rows. Weighted replicates draw weights uniform on [0.5, 1.5] (independent of the rows, so the
truths are the same).
"""
from __future__ import annotations

import argparse
import math
from statistics import NormalDist

import numpy as np

import heads
from heads.array.paired import BASELINE_LOGITS, ComparedHead

MU_C, MU_B = 1.2, 1.0
PHI = NormalDist().cdf


def _rows(rng: np.random.Generator, n: int, weighted: bool):
    y = rng.integers(0, 2, n).astype(np.float32)
    s = rng.normal(size=n)
    xc = (MU_C * y + (s + rng.normal(size=n)) / math.sqrt(2)).astype(np.float32)
    xb = (MU_B * y + (s + rng.normal(size=n)) / math.sqrt(2)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n) if weighted else np.ones(n)
    return y, xc, xb, w


def _truth() -> dict[str, float]:
    """True differences: AUC in closed form; accuracy (P(logit > 0 | y = 1) = Φ(μ), P(logit ≤ 0 |
    y = 0) = ½ with unit-variance noise, labels balanced) in closed form; prediction/mean by a
    4M-row Monte Carlo."""
    out = {'auc': PHI(MU_C / math.sqrt(2)) - PHI(MU_B / math.sqrt(2)),
           'accuracy': 0.5 * (PHI(MU_C) - PHI(MU_B))}
    rng = np.random.default_rng(12345)
    y, xc, xb, _ = _rows(rng, 4_000_000, False)
    out['prediction/mean'] = float(np.mean(1 / (1 + np.exp(-xc.astype(np.float64)))
                                           - 1 / (1 + np.exp(-xb.astype(np.float64)))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--replicates', type=int, default=400)
    parser.add_argument('--rows', type=int, default=4000)
    args = parser.parse_args()
    truth = _truth()
    head = ComparedHead(heads.BinaryClassHead(weight_column='w'))
    for weighted in (False, True):
        covered = {m: 0 for m in truth}
        rng = np.random.default_rng(7 + weighted)
        for _ in range(args.replicates):
            y, xc, xb, w = _rows(rng, args.rows, weighted)
            state = head.new_state().update(y.reshape(-1, 1), xc.reshape(-1, 1),
                                            {'w': w, BASELINE_LOGITS: xb.reshape(-1, 1)})
            _, diffs, _ = state.comparison(0.95)
            for m, t in truth.items():
                covered[m] += diffs[m].lower <= t <= diffs[m].upper
        print('%s, %d replicates of %d rows: %s' % (
            'weighted' if weighted else 'unweighted', args.replicates, args.rows,
            ', '.join('%s %.1f%%' % (m, 100.0 * c / args.replicates)
                      for m, c in covered.items())))


if __name__ == '__main__':
    main()
