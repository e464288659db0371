"""What `confidence:` costs: whole runs with and without it, and each head's state update alone.

    .venv/bin/python bench/intervals_cost.py [--sizes 5000000,20000000] [--five-head-rows 2000000]
                                             [--repeat 3] [--state-rows 1000000]
                                             [--method analytic|bootstrap]

1. The array face alone: `state.update` of a plain and of an interval state
   (`new_state(intervals=True)`) on one `--state-rows` batch, per head family (best of 5, after a
   warm-up), and the time of `interval_estimates()` on the result.
2. Whole CLI runs (`python -m pipeline evaluate`, DirectRunner) of bench/run.py's binary workload
   (one BinaryClassHead, slices Overall + country) at each size, and of its 5-head workload, each
   with and without `confidence: {level: 0.95}`, runs alternating, `--repeat` times each (median).

`--method bootstrap` measures `method: bootstrap` (20 Poisson-bootstrap replicates) instead.
Prints one JSON line per measurement and the ratios; writes bench/out/intervals_cost.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'out')
sys.path.insert(0, HERE)
import datagen  # noqa: E402
from run import BINARY_HEADS, FIVE_HEADS, PAUSE_S, measure  # noqa: E402
from states_throughput import workloads  # noqa: E402

from heads.array.bootstrap import BootstrapState  # noqa: E402


def state_costs(rows: int, method: str = 'analytic') -> list[dict]:
    """Per head: best update seconds of a plain and of an interval state on one batch."""
    out = []
    for name, (head, labels, logits, features) in workloads(rows, np.random.default_rng(0)
                                                             ).items():
        row = {'what': 'state_update', 'head': name, 'rows': rows}
        for kind, intervals in (('plain', False), ('intervals', True)):
            best = float('inf')
            for i in range(6):
                if not intervals:
                    state = head.new_state()
                elif method == 'bootstrap':
                    state = BootstrapState(head.new_state())
                else:
                    state = head.new_state(intervals=True)
                t0 = time.perf_counter()
                state.update(labels, logits, features)
                if i:  # the first is a warm-up
                    best = min(best, time.perf_counter() - t0)
            row[kind + '_s'] = best
            row['method'] = method
            if intervals:
                t0 = time.perf_counter()
                state.interval_estimates()
                row['estimates_s'] = time.perf_counter() - t0
        row['ratio'] = row['intervals_s'] / row['plain_s']
        out.append(row)
    return out


def run_config(pattern: str, heads: list, out_dir: str, confidence: str | None,
               head_weights: list | None = None) -> dict:
    config = {'input': {'pattern': pattern, 'format': 'parquet'}, 'heads': heads,
              'slices': [[], ['country']], 'output': out_dir}
    if head_weights:
        config['head_weights'] = head_weights
    if confidence:
        config['confidence'] = {'level': 0.95, 'method': confidence}
    path = out_dir.rstrip('/') + '.yaml'
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        yaml.safe_dump(config, f)
    return measure([sys.executable, '-m', 'pipeline', 'evaluate', '--config', path,
                    '--runner', 'DirectRunner'])


def paired_runs(label: str, pattern: str, heads: list, rows: int, repeat: int,
                head_weights: list | None = None, method: str = 'analytic') -> dict:
    """Runs without and with `confidence:` alternately; medians and their ratio."""
    seconds: dict[str, list[float]] = {'plain': [], 'intervals': []}
    rss: dict[str, float] = {'plain': 0.0, 'intervals': 0.0}
    for _ in range(repeat):
        for kind in ('plain', 'intervals'):
            time.sleep(PAUSE_S)
            m = run_config(pattern, heads, os.path.join(OUT, 'ci_%s_%s_%d' % (label, kind, rows)),
                           method if kind == 'intervals' else None, head_weights)
            seconds[kind].append(m['seconds'])
            rss[kind] = max(rss[kind], m['peak_rss_mb'])
    med = {k: float(np.median(v)) for k, v in seconds.items()}
    return {'what': 'run_' + label, 'method': method, 'rows': rows, 'plain_s': med['plain'],
            'intervals_s': med['intervals'], 'ratio': med['intervals'] / med['plain'],
            'all_plain_s': [round(s, 3) for s in seconds['plain']],
            'all_intervals_s': [round(s, 3) for s in seconds['intervals']],
            'peak_rss_mb': rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='5000000,20000000')
    parser.add_argument('--five-head-rows', type=int, default=2_000_000)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--state-rows', type=int, default=1_000_000)
    parser.add_argument('--method', default='analytic', choices=('analytic', 'bootstrap'))
    args = parser.parse_args()
    results = []

    def report(row: dict) -> None:
        results.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                          for k, v in row.items()}), flush=True)

    if args.state_rows:
        for row in state_costs(args.state_rows, args.method):
            report(row)
    for n in [int(s) for s in args.sizes.split(',') if s]:
        pattern = datagen.write_dataset(os.path.join(OUT, 'data', 'binary_%d' % n), n)
        report(paired_runs('binary', pattern, BINARY_HEADS, n, args.repeat,
                           method=args.method))
    n = args.five_head_rows
    if n:
        pattern = datagen.write_dataset(os.path.join(OUT, 'data', 'five_%d' % n), n,
                                        five_heads=True)
        report(paired_runs('five_heads', pattern, FIVE_HEADS, n, args.repeat,
                           head_weights=[1.0, 0.5, 0.5, 0.2, 0.2], method=args.method))
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, 'intervals_cost_%s.json' % args.method), 'w') as f:
        json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
