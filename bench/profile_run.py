"""Where a headstream run's time goes: `python -m pipeline evaluate` in-process, timed by phase.

    .venv/bin/python bench/profile_run.py CONFIG.yaml [--no-tfma-writer] [--no-report]
                                          [--plain-imports] [--cprofile OUT.prof] [--top 25]

Phases: start-up (importing the pipeline and Beam, as the `headstream` command does: skipping
the modules no command uses and, for a local run, Google Cloud's clients, see
`pipeline.tuning.skip_unused_imports`; `--plain-imports` imports everything Beam finds installed,
as a program importing `pipeline.run` does), prepare (matching files, reading the schema), the
pipeline's construction and its Beam run (read + apply + combine + writers, split by the profile
when `--cprofile` is given). The interpreter's exit is not measured here: time the whole process
for it. `--no-tfma-writer` / `--no-report` skip those
optional writers (as if they were not installed), to see what they cost. With `--cprofile` the
run is profiled and the top functions by cumulative and internal time are printed; the profile is
saved for snakeviz or pstats.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

T0 = time.perf_counter()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Functions whose cumulative time names a phase of the Beam run (file suffix, function name).
PHASES = [
    ('read', 'pipeline/sources.py', 'process'),
    ('apply (whole DoFn)', 'pipeline/apply.py', 'process'),
    ('  arrow -> numpy', 'pipeline/decode.py', 'head_arrays'),
    ('  key codes', 'pipeline/keys.py', 'key_codes'),
    ('  apply finish_bundle', 'pipeline/apply.py', 'finish_bundle'),
    ('combine add_input', 'pipeline/combine.py', 'add_input'),
    ('combine merge', 'pipeline/combine.py', 'merge_accumulators'),
    ('state_result', 'pipeline/results.py', 'state_result'),
    ('write (whole WriteRun)', 'pipeline/run_outputs.py', 'process'),
    ('  build_tables', 'pipeline/results.py', 'build_tables'),
    ('  parquet tables', 'pipeline/writers/parquet.py', 'write_outputs'),
    ('  tfma writer', 'pipeline/writers/tfma.py', 'write_tfma'),
    ('  report writer', 'pipeline/report/__init__.py', 'write_report'),
]


def _phase_times(stats: pstats.Stats) -> list[tuple[str, float]]:
    out = []
    for label, suffix, name in PHASES:
        total = 0.0
        for (path, _, func), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
            if func == name and path.endswith(suffix):
                total += cum
        out.append((label, total))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--no-tfma-writer', action='store_true')
    parser.add_argument('--no-report', action='store_true')
    parser.add_argument('--cprofile', default=None, help='save the profile here')
    parser.add_argument('--top', type=int, default=25)
    parser.add_argument('--runner-args', default='--runner DirectRunner')
    parser.add_argument('--plain-imports', action='store_true',
                        help="import what Beam finds installed (no skipping, no gc.freeze)")
    args = parser.parse_args()
    if args.no_tfma_writer:
        sys.modules['pipeline.writers.tfma'] = None  # type: ignore[assignment]
    if args.no_report:
        sys.modules['pipeline.report'] = None  # type: ignore[assignment]

    from pipeline import tuning  # noqa: E402 -- the imports are what is timed
    runner_args = args.runner_args.split()
    if not args.plain_imports:  # as the command does at its start
        tuning.skip_unused_imports(
            cloud=not tuning.needs_google_cloud(['--config', args.config] + runner_args))
        tuning.settle_imports()
    from pipeline import run as run_lib  # noqa: E402
    timings = {'start-up (python + imports)': time.perf_counter() - T0}
    t = time.perf_counter()
    config, files, dictionary_columns = run_lib.prepare(args.config)
    timings['prepare'] = time.perf_counter() - t

    profiler = cProfile.Profile() if args.cprofile else None
    t = time.perf_counter()
    if profiler:
        profiler.enable()
    summary = run_lib.evaluate(config, runner_args)
    if profiler:
        profiler.disable()
    timings['evaluate (build + run)'] = time.perf_counter() - t
    timings['total'] = time.perf_counter() - T0
    rows = summary['rows_read']
    print('rows: %d   load: %s' % (rows, ' '.join('%.2f' % v for v in os.getloadavg())))
    for k, v in timings.items():
        print('%-32s %8.3f s' % (k, v))
    print('%-32s %8.0f rows/s' % ('rate (total)', rows / timings['total']))
    if profiler:
        profiler.dump_stats(args.cprofile)
        stats = pstats.Stats(args.cprofile)
        print('\nphases of the run (cumulative, profiled, so inflated):')
        for label, v in _phase_times(stats):
            print('  %-30s %8.3f s' % (label, v))
        stats.sort_stats('cumulative').print_stats(args.top)
        stats.sort_stats('tottime').print_stats(args.top)


if __name__ == '__main__':
    main()
