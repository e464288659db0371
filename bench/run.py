"""headstream's benchmark: headstream vs TFMA 0.52 vs a numpy floor, on the same Parquet shards.

    .venv/bin/python bench/run.py [--sizes 2000000,10000000,20000000] [--tfma-rows 50000]
                                  [--five-head-rows 2000000] [--runner-args '--runner DirectRunner']
                                  [--dask] [--repeat 3]

For each size N: data in 8 Parquet shards (bench/datagen.py, cached under bench/out/data), then
  1. headstream: the whole CLI process (`python -m pipeline evaluate`), one BinaryClassHead
     (thresholds=[0.5], weight column w), slices Overall + country;
  2. the numpy floor (bench/numpy_floor.py) on the same shards;
then TFMA once on a smaller N (it is ~1000x slower; `--tfma-rows 0` skips it), and the 5-head
workload (binary, multi-class 10, multi-label 20, regression, Poisson, with head_weights). Prints
examples/s, ratios, peak RSS (the whole process tree, sampled every 50 ms) and the 1-minute load
average at the start of each measurement (the machine may be shared), then the targets met or not,
and writes bench/out/results.json. headstream and the floor run `--repeat` times per measurement
(each after a 2 s pause) and report the median (every run's seconds in `all_seconds`). Every rate is rows / wall seconds of the whole process (start-up
included), except `tfma_pipeline_examples_per_s`, TFMA's rate inside its Beam pipeline (imports
excluded): headstream's `x_tfma` is against that, the higher of TFMA's two rates.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from typing import Any

import psutil
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, 'out')
PAUSE_S = 2.0  # before each measurement
sys.path.insert(0, HERE)
import datagen  # noqa: E402

BINARY_HEADS = [{'type': 'BinaryClassHead',
                 'args': {'name': 'click', 'weight_column': 'w', 'thresholds': [0.5]},
                 'logits': 'click_logit', 'labels': 'click_label'}]
FIVE_HEADS = BINARY_HEADS + [
    {'type': 'MultiClassHead', 'args': {'n_classes': 10, 'name': 'topic', 'weight_column': 'w'},
     'logits': 'topic_logits', 'labels': 'topic_label'},
    {'type': 'MultiLabelHead', 'args': {'n_classes': 20, 'name': 'tags', 'weight_column': 'w'},
     'logits': 'tags_logits', 'labels': 'tags_labels'},
    {'type': 'RegressionHead', 'args': {'name': 'watch', 'weight_column': 'w'},
     'logits': 'watch_logit', 'labels': 'watch_label'},
    {'type': 'PoissonRegressionHead', 'args': {'name': 'count', 'weight_column': 'w'},
     'logits': 'count_logit', 'labels': 'count_label'},
]


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Runs cmd; returns wall seconds, peak RSS of the process tree (MB) and its stdout."""
    load = os.getloadavg()[0]
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [ps] + ps.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError('%s failed (%d):\n%s' % (' '.join(cmd), proc.returncode, err[-3000:]))
    return {'seconds': time.time() - start, 'peak_rss_mb': peak / 2**20, 'stdout': out,
            'load_1min': load}


def median_of(repeat: int, run: Any) -> dict:
    """Calls `run()` `repeat` times, a short pause before each (so that one measurement's
    teardown, e.g. a Dask cluster's, does not load the next); returns the run with the median
    wall time, with every run's seconds under `all_seconds`."""
    rows = []
    for _ in range(max(1, repeat)):
        time.sleep(PAUSE_S)
        rows.append(run())
    rows.sort(key=lambda r: r['seconds'])
    best = dict(rows[len(rows) // 2])
    best['all_seconds'] = [round(r['seconds'], 3) for r in rows]
    return best


def headstream(pattern: str, heads: list, out_dir: str, runner_args: list[str],
               head_weights: list | None = None) -> dict:
    config = {'input': {'pattern': pattern, 'format': 'parquet'}, 'heads': heads,
              'slices': [[], ['country']], 'output': out_dir}
    if head_weights:
        config['head_weights'] = head_weights
    path = out_dir.rstrip('/') + '.yaml'
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        yaml.safe_dump(config, f)
    return measure([sys.executable, '-m', 'pipeline', 'evaluate', '--config', path] + runner_args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', default='2000000,10000000,20000000')
    parser.add_argument('--tfma-rows', type=int, default=50_000)
    parser.add_argument('--five-head-rows', type=int, default=2_000_000)
    parser.add_argument('--runner-args', default='--runner DirectRunner')
    parser.add_argument('--dask', action='store_true',
                        help='also the DaskRunner, on a private local cluster of 2 workers')
    parser.add_argument('--repeat', type=int, default=3,
                        help='runs per measurement of headstream and the floor (median reported)')
    args = parser.parse_args()
    runner_args = args.runner_args.split()
    results: dict = {'machine': {'cpus': os.cpu_count()}, 'runs': []}

    def report(row: dict) -> None:
        results['runs'].append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                          for k, v in row.items() if k != 'stdout'}), flush=True)

    tfma_rate = None
    if args.tfma_rows:
        tfma_pattern = datagen.write_dataset(
            os.path.join(OUT, 'data', 'tfma_%d' % args.tfma_rows), args.tfma_rows)
        tfma = measure([sys.executable, os.path.join(HERE, 'tfma_baseline.py'), tfma_pattern,
                        os.path.join(OUT, 'tfma_out')])
        inside = json.loads(tfma['stdout'].strip().splitlines()[-1])['seconds']
        tfma_rate = args.tfma_rows / inside
        report({'what': 'tfma', 'rows': args.tfma_rows, 'seconds': tfma['seconds'],
                'examples_per_s': args.tfma_rows / tfma['seconds'],
                'tfma_pipeline_seconds': inside, 'tfma_pipeline_examples_per_s': tfma_rate,
                'peak_rss_mb': tfma['peak_rss_mb'], 'load_1min': tfma['load_1min']})

    for n in [int(s) for s in args.sizes.split(',')]:
        pattern = datagen.write_dataset(os.path.join(OUT, 'data', 'binary_%d' % n), n)
        floor = median_of(args.repeat, lambda: measure(
            [sys.executable, os.path.join(HERE, 'numpy_floor.py'), pattern]))
        report({'what': 'numpy_floor', 'rows': n, 'seconds': floor['seconds'],
                'all_seconds': floor['all_seconds'],
                'examples_per_s': n / floor['seconds'], 'peak_rss_mb': floor['peak_rss_mb'],
                'load_1min': floor['load_1min']})
        hs = median_of(args.repeat, lambda: headstream(
            pattern, BINARY_HEADS, os.path.join(OUT, 'hs_binary_%d' % n), runner_args))
        report({'what': 'headstream_binary', 'rows': n, 'seconds': hs['seconds'],
                'all_seconds': hs['all_seconds'],
                'examples_per_s': n / hs['seconds'], 'peak_rss_mb': hs['peak_rss_mb'],
                'load_1min': hs['load_1min'],
                'x_tfma': n / hs['seconds'] / tfma_rate if tfma_rate else None,
                'wall_vs_floor': hs['seconds'] / floor['seconds']})
        if args.dask:
            dk = headstream(pattern, BINARY_HEADS, os.path.join(OUT, 'hs_dask_%d' % n),
                            ['--runner', 'DaskRunner', '--dask_local_workers', '2'])
            report({'what': 'headstream_binary_dask', 'rows': n, 'seconds': dk['seconds'],
                    'examples_per_s': n / dk['seconds'], 'peak_rss_mb': dk['peak_rss_mb'],
                    'load_1min': dk['load_1min']})

    n = args.five_head_rows
    if n:
        pattern = datagen.write_dataset(os.path.join(OUT, 'data', 'five_%d' % n), n,
                                        five_heads=True)
        hs = median_of(args.repeat, lambda: headstream(
            pattern, FIVE_HEADS, os.path.join(OUT, 'hs_five_%d' % n), runner_args,
            head_weights=[1.0, 0.5, 0.5, 0.2, 0.2]))
        report({'what': 'headstream_five_heads', 'rows': n, 'seconds': hs['seconds'],
                'all_seconds': hs['all_seconds'],
                'examples_per_s': n / hs['seconds'], 'peak_rss_mb': hs['peak_rss_mb'],
                'load_1min': hs['load_1min']})
    results['targets'] = targets(results['runs'])
    for line in results['targets']:
        print(line)
    with open(os.path.join(OUT, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1, default=str)


def targets(runs: list[dict]) -> list[str]:
    """The issue's targets, each with the measured value and whether it is met (never asserted:
    timings depend on the machine and its load)."""
    def verdict(ok: bool) -> str:
        return 'MET' if ok else 'NOT MET'

    lines = []
    binary = [r for r in runs if r['what'] == 'headstream_binary']
    floors = {r['rows']: r for r in runs if r['what'] == 'numpy_floor'}
    if binary and binary[-1].get('x_tfma') is not None:
        x = binary[-1]['x_tfma']
        lines.append('target headstream >= 1000x TFMA (at %d rows): %.0fx  %s'
                     % (binary[-1]['rows'], x, verdict(x >= 1000)))
    if binary:
        r = binary[-1]
        ratio = r['seconds'] / floors[r['rows']]['seconds']
        lines.append('target wall <= 1.5x numpy floor (at %d rows): %.2fx  %s'
                     % (r['rows'], ratio, verdict(ratio <= 1.5)))
        peaks = [b['peak_rss_mb'] for b in binary]
        lines.append('target peak RSS <= 1536 MB: max %.0f MB  %s'
                     % (max(peaks), verdict(max(peaks) <= 1536)))
        if len(binary) > 1:
            growth = peaks[-1] / peaks[0]
            lines.append('target RSS flat from %d to %d rows: %.0f -> %.0f MB (x%.2f)  %s'
                         % (binary[0]['rows'], binary[-1]['rows'], peaks[0], peaks[-1], growth,
                            verdict(growth <= 1.25)))
    five = [r for r in runs if r['what'] == 'headstream_five_heads']
    if five:
        rate = five[-1]['examples_per_s']
        lines.append('target 5-head workload >= 1M examples/s: %.0f/s  %s'
                     % (rate, verdict(rate >= 1e6)))
    return lines


if __name__ == '__main__':
    main()
