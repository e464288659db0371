"""The run's writers at 100k–1M slices (issue 21), alone: `WriteRun.process` on `ResultsPack`s
made here, each part's seconds and the process's RSS after it, and the peak.

    .venv/bin/python bench/writers_at_scale.py [--keys 100000 1000000] [--json PATH]
    .venv/bin/python bench/writers_at_scale.py --root DIR    # another checkout's writers
    .venv/bin/python bench/writers_at_scale.py --validation --tensorboard   # those writers too
    .venv/bin/python bench/writers_at_scale.py --keys 1000000 --keep DIR    # keep the output

Each K runs in a process of its own (a child of this one), so every peak is that K's alone.

The input is what a batch run's gather hands `WriteRun` for a high-cardinality spec: per shard
(`--shards`, 8) a `pipeline.block_results.ResultsPack` of its keys (binary head `click`, slice
`user:<i>`, i = 0..K-1 dealt to the shards round robin), plus Overall as a `KeyResult` with
plots. The metric rows are real: the 13 rows (names and values) `state_results` gives 16 small
BinaryClassHead states (thresholds [0.5], weighted, 5–40 examples each), key i taking template
i mod 16's rows; each key its own example count (i * 7919 mod 997 + 1, so sizes tie and vary)
and weighted count. As the block path leaves them, only the `--plotted` (1,000) largest keys carry
plots (a template's packed plots) and the config's `plots.max_slices` is 1,000. Every pack goes
through pickle, as it crosses the gather. Config: Overall + `user`, no validation rule and no
TensorBoard unless asked (`--validation`: auc ≥ 0.2 on every slice; `--tensorboard`: 1,000 runs).

Measured: the entry points `WriteRun.process` reaches are wrapped (`PARTS`), each part's end
recorded with the process's RSS then; a thread samples the RSS every 20 ms for each part's
highest. Printed per K (one JSON line, also appended to `--json`): `parts` in order, each with
seconds, CPU seconds (user + system, the whole process's), RSS after it and the highest RSS seen in it (MB) — `frame` (from the call to the
metrics table: the packs gathered into a `ResultsFrame`, min_slice_size, order, plot limit),
`metrics_table`, `parquet` (metrics, errors and plots files), `summary`, `tfma`, `report`, then
`publish`; `process_s`, the CPU seconds of the process (user + system, in `process_cpu_s`),
`rss_before_mb` (the packs built, before `process`) and `peak_rss_mb` (ru_maxrss of the child).
"""
from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import numpy as np
import psutil

# `--root DIR` (first): import heads and pipeline from another checkout (the numbers before).
ROOT = (sys.argv[sys.argv.index('--root') + 1] if '--root' in sys.argv else
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from heads import BinaryClassHead  # noqa: E402
from pipeline import config as config_lib  # noqa: E402
from pipeline import run_outputs  # noqa: E402
from pipeline.block_results import ResultsPack  # noqa: E402
from pipeline.elements import Key  # noqa: E402
from pipeline.packed_plots import PackedPlots  # noqa: E402
from pipeline.results import KeyResult, state_results  # noqa: E402
from pipeline.run_options import RunOptions  # noqa: E402

TEMPLATES = 16


def _config(out: str, validation: bool, tensorboard: bool) -> config_lib.EvalConfig:
    raw: dict[str, Any] = {
        'input': {'pattern': 'x.parquet'},
        'heads': [{'type': 'BinaryClassHead',
                   'args': {'name': 'click', 'weight_column': 'w', 'thresholds': [0.5]},
                   'logits': 'x', 'labels': 'y'}],
        'slices': [[], ['user']], 'output': out, 'plots': {'max_slices': 1000}}
    if validation:
        raw['validation'] = [{'head': 'click', 'metric': 'auc', 'slices': [[], ['user']],
                              'min': 0.2}]
    if tensorboard:
        raw['tensorboard'] = {}
    return config_lib.parse_config(raw)


def _templates() -> list[KeyResult]:
    """Real results of small states (5–40 examples each), with plots."""
    head = BinaryClassHead(weight_column='w', thresholds=[0.5], name='click')
    rng = np.random.default_rng(21)
    pairs = []
    for t in range(TEMPLATES):
        n = 5 + (t * 7) % 36
        state = head.new_state()
        state.update((rng.random((n, 1)) < 0.4).astype(np.float32),
                     rng.normal(0, 2, (n, 1)).astype(np.float32),
                     {'w': rng.uniform(0.5, 1.5, (n, 1))})
        pairs.append(((('user',), (t,), 0, None, None), state))
    return state_results(pairs, ['click'])


def make_pieces(keys: int, plotted: int, shards: int) -> list[tuple[str, Any]]:
    """The gather's pieces: one pickled `ResultsPack` per shard, Overall and the run's stats."""
    templates = _templates()
    names = templates[0].metrics._names
    assert all(t.metrics._names == names for t in templates)
    table = np.stack([np.frombuffer(t.metrics._data, np.float64).reshape(-1, 3)
                      for t in templates])  # (templates, metrics, 3)
    weighted_of = np.asarray([t.weighted_example_count for t in templates], np.float64)
    counts = np.arange(keys, dtype=np.int64) * 7919 % 997 + 1
    with_plots = np.zeros(keys, bool)
    with_plots[np.argsort(-counts, kind='stable')[:plotted]] = True
    pieces: list[tuple[str, Any]] = []
    for s in range(shards):
        ids = np.arange(s, keys, shards, dtype=np.int64)
        pack = ResultsPack(('user',), 0, [((i,), None, None) for i in ids.tolist()], names,
                           table[ids % TEMPLATES], counts[ids],
                           weighted_of[ids % TEMPLATES] * counts[ids] / 20.0,
                           {j: PackedPlots(templates[int(i) % TEMPLATES].plots)
                            for j, i in enumerate(ids.tolist()) if with_plots[i]}, [])
        pieces.append(('results', pickle.loads(pickle.dumps(pack, pickle.HIGHEST_PROTOCOL))))
    overall = templates[0]._replace(key=Key((), (), 0, None, None),
                                    example_count=int(counts.sum()))
    pieces.append(('result', pickle.loads(pickle.dumps(overall))))
    pieces.append(('stats', (int(counts.sum()), 0, [])))
    return pieces


def _rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2 ** 20


class Parts:
    """Each wrapped part's seconds, the RSS at its end and the highest RSS sampled in it."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.log: list[dict[str, Any]] = []  # in order of their ends
        self._open: dict[str, list] = {}  # part → [depth, start, highest RSS, CPU seconds]
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            rss = _rss_mb(self.process)
            for entry in list(self._open.values()):
                entry[2] = max(entry[2], rss)

    def stop(self) -> None:
        self._stop.set()
        self._sampler.join()

    def _cpu(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def begin(self, part: str) -> None:
        entry = self._open.get(part)
        if entry is not None:
            entry[0] += 1
        else:
            self._open[part] = [1, time.perf_counter(), _rss_mb(self.process), self._cpu()]

    def end(self, part: str) -> None:
        entry = self._open[part]
        entry[0] -= 1
        if entry[0]:
            return
        del self._open[part]
        rss = _rss_mb(self.process)
        self.log.append({'part': part, 's': time.perf_counter() - entry[1],
                         'cpu_s': self._cpu() - entry[3], 'rss_after_mb': rss, 'rss_peak_mb': max(entry[2], rss)})

    def wrap(self, part: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.begin(part)
            try:
                return fn(*args, **kwargs)
            finally:
                self.end(part)
        return timed


def _targets() -> list[tuple[Any, str, str]]:
    """(owner, attribute, part) of every entry point timed: each called by `WriteRun.process`
    through its module or class attribute, so wrapping the attribute times it."""
    from pipeline import report, results_frame, validation
    from pipeline.writers import parquet, tfma
    out = [(results_frame.ResultsFrame, 'metrics_table', 'metrics_table'),
           (parquet, 'write_outputs', 'parquet'), (parquet, 'write_table_pieces', 'parquet'),
           (validation, 'check_rules', 'validation'),
           (validation, 'write_validation', 'validation'),
           (parquet, 'write_json', 'summary'), (tfma, 'write_tfma', 'tfma'),
           (report, 'write_report', 'report'), (run_outputs, 'publish_locked', 'publish')]
    try:
        from pipeline.writers import tensorboard
        out.append((tensorboard, 'write_tensorboard', 'tensorboard'))
    except ImportError:
        pass
    return [t for t in out if hasattr(t[0], t[1])]


def _summed(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log with consecutive entries of one part merged (parquet's two calls; summary's)."""
    out: list[dict[str, Any]] = []
    for e in log:
        if out and out[-1]['part'] == e['part']:
            last = out[-1]
            last['s'] += e['s']
            last['cpu_s'] += e['cpu_s']
            last['rss_after_mb'] = e['rss_after_mb']
            last['rss_peak_mb'] = max(last['rss_peak_mb'], e['rss_peak_mb'])
        else:
            out.append(dict(e))
    return [{'part': e['part'], 's': round(e['s'], 3), 'cpu_s': round(e['cpu_s'], 2),
             'rss_after_mb': round(e['rss_after_mb']),
             'rss_peak_mb': round(e['rss_peak_mb'])} for e in out]


def measure(keys: int, plotted: int, shards: int, validation: bool, tensorboard: bool,
            keep: str | None = None) -> dict:
    """One K in this process (see the module docstring); with `keep`, the run's output
    directory is moved there rather than deleted."""
    start = time.perf_counter()
    pieces = make_pieces(keys, plotted, shards)
    built_s = time.perf_counter() - start
    gc.collect()
    root = tempfile.mkdtemp(prefix='writers_at_scale_')
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in _targets()]
    try:
        config = _config(os.path.join(root, 'out'), validation, tensorboard)
        options = RunOptions('bench', datetime.datetime.now(datetime.timezone.utc))
        write = run_outputs.WriteRun(config, options, 1)
        parts = Parts()
        for owner, name, part in _targets():
            setattr(owner, name, parts.wrap(part, getattr(owner, name)))
        rss_before = _rss_mb(parts.process)
        cpu = parts.process.cpu_times()
        parts.begin('frame')  # ended by the metrics table's start
        from pipeline.results_frame import ResultsFrame
        timed_table = ResultsFrame.metrics_table

        @functools.wraps(timed_table)
        def metrics_table(*args: Any, **kwargs: Any) -> Any:
            if 'frame' in parts._open:
                parts.end('frame')
            return timed_table(*args, **kwargs)
        ResultsFrame.metrics_table = metrics_table
        start = time.perf_counter()
        (summary,) = [s for s in write.process((None, pieces)) if isinstance(s, dict)]
        total = time.perf_counter() - start
        cpu_after = parts.process.cpu_times()
        parts.stop()
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
        if keep:
            shutil.move(os.path.join(root, 'out'), keep)
        shutil.rmtree(root, ignore_errors=True)
    return {'keys': keys, 'shards': shards, 'plotted': plotted, 'root': ROOT,
            'build_s': round(built_s, 2), 'process_s': round(total, 3),
            'process_cpu_s': round(cpu_after.user + cpu_after.system
                                   - cpu.user - cpu.system, 2),
            'parts': _summed(parts.log),
            'metrics_rows': summary['metrics_rows'], 'plots_rows': summary['plots_rows'],
            'rss_before_mb': round(rss_before),
            'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            'load_1min': round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--keys', type=int, nargs='+', default=[100_000, 1_000_000])
    parser.add_argument('--plotted', type=int, default=1000)
    parser.add_argument('--shards', type=int, default=8)
    parser.add_argument('--validation', action='store_true')
    parser.add_argument('--tensorboard', action='store_true')
    parser.add_argument('--root', default=None, help='checkout to import (default: this one)')
    parser.add_argument('--json', default=None, help='also append the lines to this file')
    parser.add_argument('--keep', default=None,
                        help='move the (last) run\'s output directory here (kept)')
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one K, in this process
        print(json.dumps(measure(args.keys[0], args.plotted, args.shards, args.validation,
                                 args.tensorboard, args.keep)))
        return
    for k in args.keys:
        command = [sys.executable, os.path.abspath(__file__), '--child', '--keys', str(k),
                   '--plotted', str(args.plotted), '--shards', str(args.shards)]
        command += ['--validation'] * args.validation + ['--tensorboard'] * args.tensorboard
        command += ['--root', ROOT] + (['--keep', args.keep] if args.keep else [])
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        line = done.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        if args.json:
            with open(args.json, 'a') as f:
                f.write(line + '\n')


if __name__ == '__main__':
    main()
