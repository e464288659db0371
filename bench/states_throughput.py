"""Array-face throughput: `state.update` on one 1M-row batch, per head, on one core.

    .venv/bin/python bench/states_throughput.py [--rows 1000000] [--repeat 5]

Prints rows/s per head (best of `--repeat` runs, after one warm-up update) and writes
bench/out/states_throughput.json. The numbers measure the metric states alone: no I/O, no Beam.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import heads

HERE = os.path.dirname(os.path.abspath(__file__))


def workloads(n: int, rng: np.random.Generator) -> dict[str, tuple]:
    """(head, labels, logits, features) per head, with a weight column `w`."""
    w = rng.uniform(0.5, 2.0, n)
    features = {'w': w}
    binary_logits = rng.normal(size=(n, 1)).astype(np.float32)
    binary_labels = (rng.random((n, 1)) < 0.3).astype(np.float32)
    return {
        'BinaryClassHead(thresholds=[0.5])': (
            heads.BinaryClassHead(weight_column='w', thresholds=[0.5]), binary_labels,
            binary_logits, features),
        'MultiClassHead(10)': (
            heads.MultiClassHead(10, weight_column='w'), rng.integers(0, 10, (n, 1)),
            rng.normal(size=(n, 10)).astype(np.float32), features),
        'MultiLabelHead(20)': (
            heads.MultiLabelHead(20, weight_column='w'),
            (rng.random((n, 20)) < 0.1).astype(np.int64),
            rng.normal(size=(n, 20)).astype(np.float32), features),
        'RegressionHead()': (
            heads.RegressionHead(weight_column='w'), rng.normal(size=(n, 1)).astype(np.float32),
            rng.normal(size=(n, 1)).astype(np.float32), features),
        'PoissonRegressionHead()': (
            heads.PoissonRegressionHead(weight_column='w'),
            rng.poisson(2.0, (n, 1)).astype(np.float32),
            rng.normal(size=(n, 1)).astype(np.float32), features),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rows', type=int, default=1_000_000)
    parser.add_argument('--repeat', type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = {}
    for name, (head, labels, logits, features) in workloads(args.rows, rng).items():
        head.new_state().update(labels, logits, features)  # warm-up (allocations, caches)
        best = float('inf')
        for _ in range(args.repeat):
            state = head.new_state()
            start = time.perf_counter()
            state.update(labels, logits, features)
            best = min(best, time.perf_counter() - start)
        results[name] = args.rows / best
        print('%-36s %12.0f rows/s  (%.3f s per %d rows)' % (name, results[name], best, args.rows))
    os.makedirs(os.path.join(HERE, 'out'), exist_ok=True)
    with open(os.path.join(HERE, 'out', 'states_throughput.json'), 'w') as f:
        json.dump({'rows': args.rows, 'rows_per_s': results,
                   'loadavg': os.getloadavg()}, f, indent=2)


if __name__ == '__main__':
    main()
