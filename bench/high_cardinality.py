"""High-cardinality slicing: the same rows sliced by columns of 5, 100k or 1M values, through the
real pipeline (`python -m pipeline evaluate` on the DirectRunner, as bench/run.py runs it).

    .venv/bin/python bench/high_cardinality.py [--rows 1000000] [--values 5,100000]
        [--heads binary|five] [--timeout 1800] [--max-rss-mb 12000] [--repeat 1]
    .venv/bin/python bench/high_cardinality.py --quick   # 200k rows: 5, 2k, 20k values
    .venv/bin/python bench/high_cardinality.py --big     # 10M rows: 1M values (issue 21's target)
    .venv/bin/python bench/high_cardinality.py --phases [--root DIR] ...  # in-process, see below

Data (bench/out/data/highcard_<rows>[_five]/, cached): bench/datagen.py's columns (a binary head's
logit, label and weight `w`; with `--heads five` also the 5-head workload's columns) in 8 Parquet
shards, plus int64 slice columns `s<K>` for K in 5, 2k, 20k, 100k, 1M: row i of the whole dataset
holds value `perm(i) mod K` (a fixed random permutation), so every value has rows/K or rows/K + 1
rows (as many distinct values as rows when K > rows).

`--phases` measures the state work alone, in this process, on the same data and config (no Beam,
no writers): `apply` (`ApplyHeads` over every batch, one bundle per file, as a local run bundles
them, its states emitted at the bundle's end or when it holds too many keys), `pickle` (each
emitted state pickled and unpickled, as it crosses to the combine), `combine`
(`HeadStateCombineFn` per key, as each state arrives) and `extract`
(`pipeline.results.state_results` over `ExtractResults.BATCH` keys at a time, as the pipeline's
step: the metrics, bounds and plots of every state, each result dropped once read; a `--root`
checkout without it: `state_result` per key; a head with columnar blocks
(`pipeline.key_blocks`): each shard's block read at once into a `ResultsPack` and pickled, as
`ExtractResults` hands it to the gather (`plotted_keys`, `pack_mb`)), each with its
seconds and the process's RSS after it, plus the pickled bytes and the process's peak RSS (`maxrss_mb`). `--root DIR` imports
`heads` and `pipeline` from another checkout (e.g. main, for the numbers before a change).

Each measurement is one whole CLI process (start-up, reading, evaluation, every writer: metrics,
plots, summary, the TFMA output and report.html; `--core-writers`: the TFMA output and the
report replaced by no-ops), slices Overall + `s<K>`. Printed (one JSON line
each, all also in bench/out/high_cardinality.json): wall seconds, rows/s, the peak RSS of the
process tree (sampled every 50 ms, as bench/run.py) and the process's own maximum RSS from the
kernel (`os.wait4`'s ru_maxrss), the metrics rows written and the sizes of the plots table and of
report.html. A run exceeding `--timeout` seconds or `--max-rss-mb` is killed and reported as such
(`killed`), with what it had used until then. Then the issue's targets, MET or NOT MET (measured,
never asserted): K=100k ≤ 3x the time of K=5 on the same rows with peak RSS ≤ 2 GB; K=1M on 10M
rows completes with peak RSS ≤ 4 GB.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, 'out')
sys.path.insert(0, HERE)
import datagen  # noqa: E402
from run import BINARY_HEADS, FIVE_HEADS  # noqa: E402

CARDINALITIES = (5, 2_000, 20_000, 100_000, 1_000_000)
SHARDS = 8
PAUSE_S = 2.0


def slice_column(name_k: int) -> str:
    return 's%d' % name_k


def write_dataset(rows: int, five_heads: bool = False) -> str:
    """`rows` rows in 8 Parquet shards (datagen's columns plus the `s<K>` slice columns); returns
    the glob pattern. Idempotent."""
    directory = os.path.join(OUT, 'data', 'highcard_%d%s' % (rows, '_five' if five_heads else ''))
    os.makedirs(directory, exist_ok=True)
    marker = os.path.join(directory, '_COMPLETE')
    pattern = os.path.join(directory, 'part-*.parquet')
    if os.path.exists(marker):
        return pattern
    perm = np.random.default_rng(21).permutation(rows)
    per_shard = np.full(SHARDS, rows // SHARDS)
    per_shard[: rows % SHARDS] += 1
    start = 0
    for i, n in enumerate(per_shard):
        table = datagen.make_shard(int(n), seed=2100 + i, five_heads=five_heads)
        ids = perm[start:start + n]
        for k in CARDINALITIES:
            table = table.append_column(slice_column(k), pa.array((ids % k).astype(np.int64)))
        pq.write_table(table, os.path.join(directory, 'part-%05d.parquet' % i),
                       row_group_size=256 * 1024)
        start += n
    open(marker, 'w').close()
    return pattern


def measure(cmd: list[str], timeout: float, max_rss_mb: float) -> dict:
    """Runs cmd; wall seconds, the peak RSS of its process tree (sampled) and its own ru_maxrss
    (MB); kills it past `timeout` seconds or `max_rss_mb`."""
    load = os.getloadavg()[0]
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.time()
    os.makedirs(OUT, exist_ok=True)
    err_file = open(os.path.join(OUT, 'high_cardinality.stderr'), 'w+')
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file, env=env, cwd=ROOT,
                            start_new_session=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    killed = None
    while True:
        # wait4: this child's own rusage (its maximum RSS as the kernel counted it).
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            tree = [ps] + ps.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        if killed is None and time.time() - start > timeout:
            killed = 'timeout after %.0f s' % timeout
            os.killpg(proc.pid, signal.SIGKILL)
        elif killed is None and peak > max_rss_mb * 2**20:
            killed = 'RSS above %.0f MB' % max_rss_mb
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.time() - start
    err_file.seek(0)
    err = err_file.read()
    err_file.close()
    if killed is None and proc.returncode != 0:
        raise RuntimeError('%s failed (%d):\n%s' % (' '.join(cmd), proc.returncode,
                                                      err[-3000:]))
    return {'seconds': seconds, 'peak_rss_mb': peak / 2**20,
            'maxrss_mb': usage.ru_maxrss / 1024.0, 'cpu_s': usage.ru_utime + usage.ru_stime,
            'load_1min': load, 'killed': killed}


# `python -m pipeline` with the TFMA writer and the report replaced by no-op stand-ins (the
# metrics and plots tables and summary.json are still written).
CORE_WRITERS = (
    "import sys, types\n"
    "for name, fns in (('pipeline.writers.tfma', ('write_tfma',)),\n"
    "                  ('pipeline.report', ('write_report', 'prepare_in_background')),\n"
    "                  ('pipeline.report.template', ('prepare_in_background',))):\n"
    "    stub = types.ModuleType(name)\n"
    "    for fn in fns:\n"
    "        setattr(stub, fn, lambda *a, **k: None)\n"
    "    sys.modules[name] = stub\n"
    "sys.modules['pipeline.report'].template = sys.modules['pipeline.report.template']\n"
    "sys.argv = ['headstream'] + sys.argv[1:]\n"
    "from pipeline.cli import main\n"
    "sys.exit(main())\n")


def headstream(pattern: str, k: int, heads: str, out_dir: str, timeout: float,
               max_rss_mb: float, core_writers: bool = False) -> dict:
    config = {'input': {'pattern': pattern, 'format': 'parquet'},
              'heads': FIVE_HEADS if heads == 'five' else BINARY_HEADS,
              'slices': [[], [slice_column(k)]], 'output': out_dir}
    if heads == 'five':
        config['head_weights'] = [1.0, 0.5, 0.5, 0.2, 0.2]
    path = out_dir.rstrip('/') + '.yaml'
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        yaml.safe_dump(config, f)
    command = [sys.executable] + (['-c', CORE_WRITERS] if core_writers else ['-m', 'pipeline'])
    row = measure(command + ['evaluate', '--config', path, '--runner', 'DirectRunner',
                             '--overwrite'], timeout, max_rss_mb)
    row['writers'] = 'core' if core_writers else 'all'
    row['config'] = path
    if not row['killed']:
        row.update(_outputs(out_dir))
    return row


def _outputs(out_dir: str) -> dict:
    """Sizes of what the run wrote: metrics rows, plots rows and bytes, report.html bytes."""
    def rows_and_bytes(table: str) -> tuple[int, int]:
        files = glob.glob(os.path.join(out_dir, table, '*.parquet'))
        return (sum(pq.ParquetFile(f).metadata.num_rows for f in files),
                sum(os.path.getsize(f) for f in files))
    metrics_rows, metrics_bytes = rows_and_bytes('metrics')
    plots_rows, plots_bytes = rows_and_bytes('plots')
    report = os.path.join(out_dir, 'report.html')
    return {'metrics_rows': metrics_rows, 'metrics_mb': metrics_bytes / 2**20,
            'plots_rows': plots_rows, 'plots_mb': plots_bytes / 2**20,
            'report_mb': os.path.getsize(report) / 2**20 if os.path.exists(report) else None}


def phases(pattern: str, k: int, heads: str, root: str | None) -> dict:
    """The state work of a run in-process, by phase (see the module docstring)."""
    import gc
    import pickle
    import resource
    if root:
        sys.path.insert(0, root)
    else:
        sys.path.insert(0, ROOT)
    from pipeline import run as run_lib
    from pipeline import sources
    from pipeline.apply import ApplyHeads
    from pipeline.combine import HeadStateCombineFn
    from pipeline import graph, results as results_lib
    from pipeline.results import state_result
    # A checkout from before the extraction in batches (--root) reads one key at a time.
    many = getattr(results_lib, 'state_results', None)
    extract_step = getattr(graph, 'ExtractResults', None)

    out_dir = os.path.join(OUT, 'hc_phases')
    config = {'input': {'pattern': pattern, 'format': 'parquet'},
              'heads': FIVE_HEADS if heads == 'five' else BINARY_HEADS,
              'slices': [[], [slice_column(k)]], 'output': out_dir}
    if heads == 'five':
        config['head_weights'] = [1.0, 0.5, 0.5, 0.2, 0.2]
    path = out_dir + '.yaml'
    with open(path, 'w') as f:
        yaml.safe_dump(config, f)
    config, files, dictionary_columns = run_lib.prepare(path)
    def read(file: str) -> list:
        batches = []
        for item in sources.plan_file(file, config.format):
            batches.extend(sources.read_item(item, config.columns(),
                                             dictionary_columns=dictionary_columns))
        return batches

    def rss_mb() -> float:
        return psutil.Process().memory_info().rss / 2**20

    row: dict = {'what': 'high_cardinality_phases', 'heads': heads, 'values': k,
                 'root': root or ROOT, 'rss_mb_loaded': rss_mb()}
    gc.collect()
    # Streamed as a runner would: each emitted state pickled, unpickled and combined at once
    # (keeping every partial state of 10M rows would take more memory than the run).
    timers = {'apply': 0.0, 'pickle': 0.0, 'combine': 0.0}
    nbytes = n_partial = 0
    combine = HeadStateCombineFn(config)
    combine.setup()
    accumulators: dict = {}
    import inspect
    blocks = 'blocks' in inspect.signature(ApplyHeads).parameters  # a --root checkout may not
    dofn = ApplyHeads(config, 'bench', **({'blocks': True} if blocks else {}))
    dofn.setup()

    def consume(outputs) -> None:
        nonlocal nbytes, n_partial
        it = iter(outputs)
        while True:
            t0 = time.perf_counter()
            out = next(it, None)
            t1 = time.perf_counter()
            timers['apply'] += t1 - t0
            if out is None:
                return
            value = getattr(out, 'value', out)
            if not isinstance(value, tuple) or len(value) != 2:
                continue
            key, state = value
            data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
            state = pickle.loads(data)
            t2 = time.perf_counter()
            accumulators[key] = combine.add_input(accumulators.get(key), state)
            timers['pickle'] += t2 - t1
            timers['combine'] += time.perf_counter() - t2
            nbytes += len(data)
            n_partial += 1

    rows = 0
    for file in files:  # one bundle per file, read first (not timed)
        batches = read(file)
        rows += sum(b.batch.num_rows for b in batches)
        t0 = time.perf_counter()
        dofn.start_bundle()
        timers['apply'] += time.perf_counter() - t0
        for b in batches:
            consume(dofn.process(b))
        consume(dofn.finish_bundle())
        del batches
    row['rows'] = rows
    for name, seconds in timers.items():
        row[name + '_s'] = seconds
    row['partial_states'] = n_partial
    row['pickled_mb'] = nbytes / 2**20
    row['keys'] = len(accumulators)
    row['rss_mb_combine'] = rss_mb()
    t = time.perf_counter()
    names = config.head_names
    plot_rows = 0
    batch = getattr(extract_step, 'BATCH', 1)
    if blocks:  # a shard's block: every key's result at once, as ExtractResults
        from pipeline import block_results as block_lib
        from pipeline.key_blocks import is_block_key
        limit = config.plots.max_slices
        block_keys = [key for key in accumulators if is_block_key(key)]
        # (The pipeline counts the parts ApplyHeads hands on; here the merged blocks, the same
        # sums. A --root checkout without `key_counts` picks them from per-shard candidates.)
        if limit is None:
            winners = None
        elif hasattr(block_lib, 'key_counts'):
            winners = block_lib.winners_of_counts(
                [block_lib.key_counts(accumulators[key]) for key in block_keys], limit)
        else:
            winners = block_lib.plot_winners(
                [c for key in block_keys
                 for c in block_lib.plot_candidates(accumulators[key], limit)], limit)
        pack_of = getattr(block_lib, 'results_pack', None)
        for key in block_keys:
            if pack_of is None:  # a --root checkout without packs: the KeyResults
                results = block_lib.block_results(accumulators.pop(key), names, winners)
                row['keys'] += len(results) - 1
                plot_rows += sum(len(r.plots.get('curve', ())) for r in results)
                del results
                continue
            # As ExtractResults: the shard's ResultsPack, pickled as it crosses to the gather.
            pack = pack_of(accumulators.pop(key), names, winners)
            row['keys'] += len(pack.keys) + len(pack.extra) - 1
            row['plotted_keys'] = row.get('plotted_keys', 0) + len(pack.plots) + sum(
                1 for r in pack.extra if r.plots)
            row['pack_mb'] = row.get('pack_mb', 0.0) + len(
                pickle.dumps(pack, protocol=pickle.HIGHEST_PROTOCOL)) / 2**20
            del pack
    while accumulators:  # read BATCH at a time and dropped, as the pipeline's ExtractResults
        pairs = [accumulators.popitem() for _ in range(min(batch, len(accumulators)))]
        if many is None:
            results = [state_result(key, state, names) for key, state in pairs]
        else:
            results = many(pairs, names)
        plot_rows += sum(len(r.plots.get('curve', ())) for r in results)
        del pairs, results
    row['extract_s'] = time.perf_counter() - t
    row['extract_us_per_key'] = row['extract_s'] / max(row['keys'], 1) * 1e6
    row['rss_mb_extract'] = rss_mb()
    row['plot_rows'] = plot_rows
    row['maxrss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    row['when'] = time.strftime('%Y-%m-%d %H:%M')
    return row


def targets(runs: list[dict]) -> list[str]:
    """The issue's targets, each with its measured value (never asserted)."""
    def verdict(ok: bool) -> str:
        return 'MET' if ok else 'NOT MET'

    lines = []
    by = {(r['rows'], r['values'], r['heads']): r for r in runs}
    for (rows, values, heads), r in sorted(by.items()):
        if values != 100_000:
            continue
        base = by.get((rows, 5, heads))
        if base and not base['killed']:
            ratio = r['seconds'] / base['seconds']
            lines.append('target K=100k <= 3x the time of K=5 (%d rows, %s): %.2fx%s  %s'
                         % (rows, heads, ratio, ' (killed)' if r['killed'] else '',
                            verdict(ratio <= 3 and not r['killed'])))
        lines.append('target K=100k peak RSS <= 2048 MB (%d rows, %s): %.0f MB  %s'
                     % (rows, heads, r['peak_rss_mb'],
                        verdict(r['peak_rss_mb'] <= 2048 and not r['killed'])))
    for (rows, values, heads), r in sorted(by.items()):
        if values == 1_000_000 and rows >= 10_000_000:
            lines.append('target K=1M on %d rows completes with peak RSS <= 4096 MB (%s): '
                         '%.0f MB%s  %s' % (rows, heads, r['peak_rss_mb'],
                                            ' (killed: %s)' % r['killed'] if r['killed'] else '',
                                            verdict(r['peak_rss_mb'] <= 4096
                                                    and not r['killed'])))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rows', type=int, default=1_000_000)
    parser.add_argument('--values', default='5,100000',
                        help='slice cardinalities, of %s' % (CARDINALITIES,))
    parser.add_argument('--heads', choices=('binary', 'five'), default='binary')
    parser.add_argument('--quick', action='store_true', help='200k rows: 5, 2k and 20k values')
    parser.add_argument('--big', action='store_true', help='10M rows, 1M values')
    parser.add_argument('--timeout', type=float, default=1800.0)
    parser.add_argument('--max-rss-mb', type=float, default=12000.0)
    parser.add_argument('--repeat', type=int, default=1, help='runs per measurement (median)')
    parser.add_argument('--tag', default='', help='a label stored with the results')
    parser.add_argument('--core-writers', action='store_true',
                        help='skip the TFMA writer and report.html (no-op stand-ins)')
    parser.add_argument('--phases', action='store_true',
                        help='the state work alone, in-process, by phase (no Beam, no writers)')
    parser.add_argument('--root', default=None,
                        help='with --phases: import heads and pipeline from this checkout')
    args = parser.parse_args()
    if args.quick:
        args.rows, args.values = 200_000, '5,2000,20000'
    if args.big:
        args.rows, args.values = 10_000_000, '1000000'
    values = [int(v) for v in args.values.split(',')]
    if any(v not in CARDINALITIES for v in values):
        parser.error('--values must be among %s' % (CARDINALITIES,))
    pattern = write_dataset(args.rows, five_heads=args.heads == 'five')
    path = os.path.join(OUT, 'high_cardinality.json')
    results = json.load(open(path)) if os.path.exists(path) else {'runs': []}
    runs = []
    if args.phases:
        for k in values:
            row = phases(pattern, k, args.heads, args.root)
            row['tag'] = args.tag
            runs.append(row)
            print(json.dumps({k2: (round(v, 3) if isinstance(v, float) else v)
                              for k2, v in row.items()}), flush=True)
        results['runs'].extend(runs)
        with open(path, 'w') as f:
            json.dump(results, f, indent=1, default=str)
        return
    for k in values:
        out_dir = os.path.join(OUT, 'hc_%s_%d_%d' % (args.heads, args.rows, k))
        tries = []
        for _ in range(max(1, args.repeat)):
            time.sleep(PAUSE_S)
            tries.append(headstream(pattern, k, args.heads, out_dir, args.timeout,
                                    args.max_rss_mb, args.core_writers))
            if tries[-1]['killed']:
                break
        tries.sort(key=lambda r: r['seconds'])
        row = dict(tries[len(tries) // 2])
        row.update({'what': 'high_cardinality', 'tag': args.tag, 'heads': args.heads,
                    'rows': args.rows, 'values': k, 'slices': min(k, args.rows),
                    'examples_per_s': args.rows / row['seconds'],
                    'all_seconds': [round(r['seconds'], 2) for r in tries],
                    'when': time.strftime('%Y-%m-%d %H:%M')})
        runs.append(row)
        print(json.dumps({k2: (round(v, 3) if isinstance(v, float) else v)
                          for k2, v in row.items()}), flush=True)
    for line in targets(runs):
        print(line)
    results['runs'].extend(runs)
    os.makedirs(OUT, exist_ok=True)
    with open(path, 'w') as f:
        json.dump(results, f, indent=1, default=str)


if __name__ == '__main__':
    main()
