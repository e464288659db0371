"""What a baseline costs: array-level throughput of a BinaryClassHead's state alone, against the
same head compared with a baseline (`ComparedHead`: the baseline's own state plus the paired
states), one state and 50 grouped states, in batches as the pipeline hands them over.

    PYTHONPATH=$PWD .venv/bin/python bench/paired_cost.py [--rows 2000000] [--batch 65536]
    PYTHONPATH=$PWD .venv/bin/python bench/paired_cost.py --pipeline DIR [--rows 2000000]

Prints rows/s per configuration and the paired overhead; `--pipeline DIR` instead times whole
DirectRunner runs (Parquet under DIR, slices Overall and country, `confidence:`) without and with
`baseline_logits`. Numbers go to bench/README.md.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import heads
from heads.array.paired import BASELINE_LOGITS, ComparedHead


def _batches(rows: int, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        y = rng.integers(0, 2, n).astype(np.float32).reshape(-1, 1)
        x = (1.2 * y + rng.normal(size=(n, 1))).astype(np.float32)
        b = (1.0 * y + rng.normal(size=(n, 1))).astype(np.float32)
        out.append((y, x, b, rng.integers(0, 50, n)))
    return out


def _time(head, batches, groups: int, compared: bool) -> float:
    states = [head.new_state() for _ in range(groups)]
    cls = type(states[0])
    start = time.perf_counter()
    for y, x, b, codes in batches:
        features = {BASELINE_LOGITS: b} if compared else {}
        if groups == 1:
            states[0].update(y, x, features)
        else:
            assert cls.update_groups(states, codes % groups, y, x, features)
    for s in states:
        s.comparison(0.95) if compared else s.result()
    return time.perf_counter() - start


def _pipeline(directory: str, rows: int) -> None:
    """Whole runs (best of two each) without and with a baseline."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.run import evaluate
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    shards = 4
    for i in range(shards):
        n = rows // shards
        y = rng.integers(0, 2, n).astype(np.float64)
        pq.write_table(pa.table({
            'x': 1.2 * y + rng.normal(size=n), 'b': 1.0 * y + rng.normal(size=n), 'y': y,
            'country': rng.choice(['US', 'JP', 'DE', 'FR', 'BR'], n)}),
            os.path.join(directory, 'part-%d.parquet' % i), row_group_size=65536)
    head = {'type': 'BinaryClassHead', 'args': {'thresholds': [0.3, 0.5, 0.7]}, 'logits': 'x',
            'labels': 'y'}
    times = {}
    for name, extra in (('candidate only', {}), ('with baseline', {'baseline_logits': 'b'})):
        raw = {'input': {'pattern': os.path.join(directory, 'part-*.parquet')},
               'heads': [dict(head, **extra)], 'slices': [[], ['country']],
               'confidence': {'level': 0.95}, 'output': os.path.join(directory, 'out')}
        best = float('inf')
        for attempt in range(2):
            start = time.perf_counter()
            evaluate(raw, ['--runner=DirectRunner'], run_id='bench-%d' % attempt,
                     overwrite=True)
            best = min(best, time.perf_counter() - start)
        times[name] = best
        print('%s: %.2f s (%.2f M rows/s)' % (name, best, rows / best / 1e6))
    print('with baseline / candidate only: %.2fx'
          % (times['with baseline'] / times['candidate only']))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--rows', type=int, default=2_000_000)
    parser.add_argument('--batch', type=int, default=65536)
    parser.add_argument('--pipeline', help='time whole runs with their data under this directory')
    args = parser.parse_args()
    if args.pipeline:
        _pipeline(args.pipeline, args.rows)
        return
    batches = _batches(args.rows, args.batch)
    plain = heads.BinaryClassHead(thresholds=[0.3, 0.5, 0.7])
    compared = ComparedHead(heads.BinaryClassHead(thresholds=[0.3, 0.5, 0.7]))
    for groups in (1, 50):
        t_plain = _time(plain, batches, groups, False)
        t_comp = _time(compared, batches, groups, True)
        print('%2d state(s): candidate only %.2f M rows/s; with baseline + paired %.2f M rows/s '
              '(%.2fx the time; two heads\' states alone would be 2x)'
              % (groups, args.rows / t_plain / 1e6, args.rows / t_comp / 1e6, t_comp / t_plain))


if __name__ == '__main__':
    main()
