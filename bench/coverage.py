"""Coverage of the confidence intervals on simulated data whose true metrics are known.

    .venv/bin/python bench/coverage.py [--replicates 1000] [--rows 2000] [--level 0.95]
                                       [--method analytic|bootstrap]

Each replicate draws `--rows` examples: label 1 with probability PREVALENCE, logit ~ N(+Δ/2, 1)
for positives and N(−Δ/2, 1) for negatives (binormal, equal variances), so that

    AUC = Φ(Δ/√2),  recall = accuracy = Φ(Δ/2) (class id: logit > 0),
    precision = π·Φ(Δ/2) / (π·Φ(Δ/2) + (1 − π)·(1 − Φ(Δ/2))),  label/mean = π,
    prediction/mean = π·E[σ(N(Δ/2, 1))] + (1 − π)·E[σ(N(−Δ/2, 1))]  (numerical integral).

Weighted replicates draw each example's weight from a lognormal (σ = 0.7) independent of
everything else, so the weighted population metrics are the same numbers. All replicates of a
setting go through one grouped update (`update_groups`, one state per replicate) of
`BinaryClassHead(weight_column='w')` interval states; each interval at `--level` is checked for
the truth (`--method bootstrap`: `BootstrapState`s of 20 Poisson-bootstrap replicates, rows
identified by their index). Prints a markdown table (coverage, its Monte Carlo standard error, mean width) and
writes bench/out/coverage.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics

import numpy as np

import heads
from heads.array.bootstrap import ROW_ID, BootstrapState, row_ids

HERE = os.path.dirname(os.path.abspath(__file__))
PREVALENCE = 0.3
DELTA = 1.5
METRICS = ('auc', 'accuracy', 'precision', 'recall', 'label/mean', 'prediction/mean')


def truths(delta: float = DELTA, prevalence: float = PREVALENCE) -> dict[str, float]:
    """The population value of each metric (formulas in the module docstring)."""
    phi = statistics.NormalDist().cdf
    hit = phi(delta / 2.0)
    # E[σ(N(μ, 1))] by the trapezoid rule on a fine grid over ±12 standard deviations.
    z = np.linspace(-12.0, 12.0, 200001)
    density = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

    def mean_sigmoid(mu: float) -> float:
        return float(np.trapezoid(density / (1.0 + np.exp(-(mu + z))), z))

    return {
        'auc': phi(delta / math.sqrt(2.0)),
        'accuracy': hit,
        'precision': prevalence * hit / (prevalence * hit + (1 - prevalence) * (1 - hit)),
        'recall': hit,
        'label/mean': prevalence,
        'prediction/mean': (prevalence * mean_sigmoid(delta / 2.0)
                            + (1 - prevalence) * mean_sigmoid(-delta / 2.0)),
    }


def simulate(replicates: int, rows: int, weighted: bool, level: float, seed: int,
             method: str = 'analytic') -> dict[str, dict[str, float]]:
    """{metric: {coverage, mc_se, mean_width, undefined}} over `replicates` replicates."""
    rng = np.random.default_rng(seed)
    head = heads.BinaryClassHead(weight_column='w')
    truth = truths()
    hits = {m: 0 for m in METRICS}
    widths = {m: 0.0 for m in METRICS}
    undefined = {m: 0 for m in METRICS}
    chunk = 100  # replicates per grouped update (bounded memory)
    for r0 in range(0, replicates, chunk):
        k = min(chunk, replicates - r0)
        n = k * rows
        y = (rng.random(n) < PREVALENCE).astype(np.float32)
        x = (rng.normal(size=n) + DELTA * (y - 0.5)).astype(np.float32)
        w = rng.lognormal(0.0, 0.7, n) if weighted else np.ones(n)
        codes = np.repeat(np.arange(k), rows)
        features = {'w': w}
        if method == 'bootstrap':
            states = [BootstrapState(head.new_state()) for _ in range(k)]
            features[ROW_ID] = row_ids('replicates-%d' % r0, np.arange(n))
        else:
            states = [head.new_state(intervals=True) for _ in range(k)]
        type(states[0]).update_groups(states, codes, y[:, None], x[:, None], features)
        for st in states:
            est = st.intervals(level)
            for m in METRICS:
                e = est.get(m)
                if e is None:
                    undefined[m] += 1
                    continue
                hits[m] += e[0] <= truth[m] <= e[1]
                widths[m] += e[1] - e[0]
    out = {}
    for m in METRICS:
        defined = replicates - undefined[m]
        cov = hits[m] / defined if defined else float('nan')
        out[m] = {'truth': truth[m], 'coverage': cov,
                  'mc_se': math.sqrt(cov * (1 - cov) / defined) if defined else float('nan'),
                  'mean_width': widths[m] / defined if defined else float('nan'),
                  'undefined': undefined[m]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--replicates', type=int, default=1000)
    parser.add_argument('--rows', type=int, default=2000)
    parser.add_argument('--level', type=float, default=0.95)
    parser.add_argument('--seed', type=int, default=17)
    parser.add_argument('--method', default='analytic', choices=('analytic', 'bootstrap'))
    args = parser.parse_args()
    results = {name: simulate(args.replicates, args.rows, weighted, args.level, args.seed + i,
                              args.method)
               for i, (name, weighted) in enumerate((('unweighted', False), ('weighted', True)))}
    print('%s: %d replicates of %d rows, level %g, binormal Δ = %g, prevalence %g'
          % (args.method, args.replicates, args.rows, args.level, DELTA, PREVALENCE))
    print('| metric | truth | coverage (unweighted) | coverage (weighted) | mean width (unw. / w.) |')
    print('|---|---|---|---|---|')
    for m in METRICS:
        u, w = results['unweighted'][m], results['weighted'][m]
        print('| %s | %.4f | %.1f%% ± %.1f | %.1f%% ± %.1f | %.4f / %.4f |'
              % (m, u['truth'], 100 * u['coverage'], 100 * u['mc_se'], 100 * w['coverage'],
                 100 * w['mc_se'], u['mean_width'], w['mean_width']))
    os.makedirs(os.path.join(HERE, 'out'), exist_ok=True)
    with open(os.path.join(HERE, 'out', 'coverage_%s.json' % args.method), 'w') as f:
        json.dump({'args': vars(args), 'results': results}, f, indent=1)


if __name__ == '__main__':
    main()
