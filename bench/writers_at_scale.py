"""The run's writers at 100k–1M slices (issue 21), alone: `WriteRun.process` on KeyResults made
here, each of its parts timed, and the memory of the gathered results.

    .venv/bin/python bench/writers_at_scale.py [--keys 100000] [--plotted 1000] [--json PATH]
    .venv/bin/python bench/writers_at_scale.py --big         # 1,000,000 keys
    .venv/bin/python bench/writers_at_scale.py --root DIR    # another checkout's writers

The KeyResults are real: `pipeline.results.state_results` of 16 small BinaryClassHead states
(thresholds [0.5], weighted; 5–40 rows each, as most slices of a high-cardinality column), each
pickled and unpickled (as it crosses the pipeline's gather) and given a slice `user:<i>` and an
example count of its own (i * 7919 mod 997 + 1, so sizes tie and vary); as the columnar state path
leaves them, only the `--plotted` largest slices carry plots (the others `plots == {}`). Overall
is one more key, with plots. The config: Overall + `user`, a `validation:` rule (auc ≥ 0.2 on
every slice: 100k checks, all passing), `tensorboard:` (capped at 1000 runs),
`plots.max_slices` 1000.

Printed (one JSON line, also in `--json`): seconds per part of `WriteRun.process` — `prepare`
(slice counts, min_slice_size, prepare_results, plots.max_slices), `metrics_table`
(build_tables), `parquet` (metrics, plots and errors files), `validation`, `summary`
(summary.json, twice), `tfma_metrics`, `tfma_plots`, `tensorboard`, `report`, `publish`, the
whole `process`; the gathered results' bytes per key (tracemalloc, after the pickle round trip)
and the process's peak RSS (ru_maxrss) after building and after writing.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import json
import os
import pickle
import resource
import shutil
import sys
import tempfile
import time
import threading
import tracemalloc
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
from pipeline.elements import Key  # noqa: E402
from pipeline.results import KeyResult, state_results  # noqa: E402
from pipeline.run_options import RunOptions  # noqa: E402

TEMPLATES = 16


def _config(out: str) -> config_lib.EvalConfig:
    return config_lib.parse_config({
        'input': {'pattern': 'x.parquet'},
        'heads': [{'type': 'BinaryClassHead',
                   'args': {'name': 'click', 'weight_column': 'w', 'thresholds': [0.5]},
                   'logits': 'x', 'labels': 'y'}],
        'slices': [[], ['user']], 'output': out, 'tensorboard': {},
        'validation': [{'head': 'click', 'metric': 'auc', 'slices': [[], ['user']], 'min': 0.2}],
        'plots': {'max_slices': 1000}})


def _templates() -> list[KeyResult]:
    """Real results of small states (5–40 rows each)."""
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


def make_results(keys: int, plotted: int) -> list[KeyResult]:
    """Overall and `keys` user slices (see the module docstring), each pickled and unpickled."""
    templates = _templates()
    counts = np.arange(keys, dtype=np.int64) * 7919 % 997 + 1
    with_plots = set(np.argsort(-counts, kind='stable')[:plotted].tolist())
    overall = templates[0]._replace(key=Key((), (), 0, None, None),
                                    example_count=int(counts.sum()))
    made = [overall]
    for i in range(keys):
        t = templates[i % TEMPLATES]
        # Each key its own objects (as each arrives pickled on its own), so that pickling many
        # at once below shares nothing that the gather would not share.
        made.append(t._replace(key=Key(tuple(['user']), (i,), 0, None, None),
                               metrics=pickle.loads(pickle.dumps(t.metrics)),
                               example_count=int(counts[i]), loss=float(str(t.loss)),
                               weighted_example_count=float(str(t.weighted_example_count)),
                               plots=copy.copy(t.plots) if i in with_plots else {}))
    # Through pickle 10,000 keys at a time (as the gather receives them: names and plot layouts
    # shared between keys), list by list rather than key by key.
    out = []
    for a in range(0, len(made), 10_000):
        out += pickle.loads(pickle.dumps(made[a:a + 10_000], protocol=pickle.HIGHEST_PROTOCOL))
        made[a:a + 10_000] = [None] * len(made[a:a + 10_000])
    return out


class Timers:
    """Seconds spent in wrapped functions, by part (a part's nested calls counted once)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.rss_mb: dict[str, float] = {}  # per part, the highest RSS sampled while in it
        self._depth: dict[str, int] = {}
        self._active: list[str] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(0.02):
            rss = process.memory_info().rss / 2 ** 20
            for part in list(self._active):
                self.rss_mb[part] = max(self.rss_mb.get(part, 0.0), rss)

    def stop(self) -> None:
        self._stop.set()
        self._sampler.join()

    def wrap(self, part: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            outer = self._depth.get(part, 0) == 0
            self._depth[part] = self._depth.get(part, 0) + 1
            self._active.append(part)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._active.remove(part)
                self._depth[part] -= 1
                if outer:
                    self.seconds[part] = (self.seconds.get(part, 0.0)
                                          + time.perf_counter() - start)
        return timed


@contextlib.contextmanager
def patched(timers: Timers):
    """Wraps the writers' entry points as `WriteRun.process` reaches them."""
    from pipeline import report, slice_sizes, validation
    from pipeline.writers import parquet, tensorboard, tfma
    targets = [(run_outputs, 'prepare_results', 'prepare'),
               (slice_sizes, 'slices_per_spec', 'prepare'),
               (slice_sizes, 'apply_min_slice_size', 'prepare'),
               (slice_sizes, 'limit_plots', 'prepare'),
               (run_outputs, 'build_tables', 'metrics_table'),
               (parquet, 'write_outputs', 'parquet'), (parquet, 'write_table_pieces', 'parquet'),
               (validation, 'check_rules', 'validation'),
               (validation, 'write_validation', 'validation'),
               (parquet, 'write_json', 'summary'),
               (tfma, '_write_plot_records', 'tfma_plots'),
               (tfma, 'write_tfma', 'tfma_metrics'),
               (tensorboard, 'write_tensorboard', 'tensorboard'),
               (slice_sizes, 'cap_runs', 'tensorboard'),
               (report, 'write_report', 'report'),
               (run_outputs, 'publish_locked', 'publish')]
    # (A checkout from before a part existed lacks it: not timed.)
    targets = [t for t in targets if hasattr(t[0], t[1])]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in targets]
    try:
        for mod, name, part in targets:
            setattr(mod, name, timers.wrap(part, getattr(mod, name)))
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


def measure(keys: int, plotted: int) -> dict:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    results = make_results(keys, plotted)
    built_s = time.perf_counter() - start
    per_key = (tracemalloc.get_traced_memory()[0] - before) / len(results)
    tracemalloc.stop()
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    root = tempfile.mkdtemp(prefix='writers_at_scale_')
    try:
        config = _config(os.path.join(root, 'out'))
        options = RunOptions('bench', datetime.datetime.now(datetime.timezone.utc))
        timers = Timers()
        pieces = [('result', r) for r in results] + [('stats', (keys * 20, 0, []))]
        del results
        write = run_outputs.WriteRun(config, options, 1)
        with patched(timers):
            start = time.perf_counter()
            (summary,) = [s for s in write.process((None, pieces)) if isinstance(s, dict)]
            total = time.perf_counter() - start
        timers.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    seconds = dict(timers.seconds)
    # write_tfma's time includes its plot records: the rest is the metrics' (and checks').
    seconds['tfma_metrics'] = seconds.get('tfma_metrics', 0.0) - seconds.get('tfma_plots', 0.0)
    return {'keys': keys, 'plotted': plotted, 'build_s': round(built_s, 2),
            'gathered_bytes_per_key': round(per_key),
            'process_s': round(total, 3),
            'parts_s': {k: round(v, 3) for k, v in sorted(seconds.items())},
            'parts_peak_rss_mb': {k: round(v) for k, v in sorted(timers.rss_mb.items())},
            'failing_checks': (summary.get('validation') or {}).get('failing'),
            'metrics_rows': summary['metrics_rows'], 'plots_rows': summary['plots_rows'],
            'rss_after_build_mb': round(rss_built),
            'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--keys', type=int, default=100_000)
    parser.add_argument('--plotted', type=int, default=1000)
    parser.add_argument('--big', action='store_true', help='1,000,000 keys')
    parser.add_argument('--root', default=None, help='checkout to import (default: this one)')
    parser.add_argument('--json', default=None, help='also append the line to this file')
    args = parser.parse_args()
    line = json.dumps(measure(1_000_000 if args.big else args.keys, args.plotted))
    print(line)
    if args.json:
        with open(args.json, 'a') as f:
            f.write(line + '\n')


if __name__ == '__main__':
    main()
