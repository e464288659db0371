"""`make demo`: evaluates the bundled example (examples/eval.yaml) and shows what came out.

    python -m pipeline.demo [--output DIR] [Beam options...]

Runs on the DirectRunner by default, writes under demo_out/example (next to the repository's
examples/), prints where each output is and the Overall metrics of each head.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_CONFIG = os.path.join(ROOT, 'examples', 'eval.yaml')


def _example_config(output: str) -> dict:
    import yaml
    with open(EXAMPLE_CONFIG) as f:
        raw = yaml.safe_load(f)
    # The config's paths are relative to the repository root; resolve them for any cwd.
    raw['input']['pattern'] = os.path.join(ROOT, raw['input']['pattern'])
    raw['output'] = output
    return raw


def _print_table(metrics_path: str) -> None:
    import pyarrow.parquet as pq
    table = pq.read_table(metrics_path).to_pylist()
    heads = list(dict.fromkeys(r['head'] for r in table))
    wanted = ('loss', 'auc', 'accuracy', 'average_loss', 'auc_precision_recall')
    print('\nOverall metrics (all slices are in metrics/metrics.parquet):')
    print('  %-18s %-22s %10s   %s' % ('head', 'metric', 'value', 'examples'))
    for head in heads:
        for r in table:
            if r['slice'] == 'Overall' and r['head'] == head and r['metric'] in wanted:
                print('  %-18s %-22s %10.4f   %d' % (head, r['metric'], r['value'],
                                                      r['example_count']))
    slices = sorted({r['slice'] for r in table})
    print('\n%d slices: %s%s' % (len(slices), ', '.join(slices[:6]),
                                 ', ...' if len(slices) > 6 else ''))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--output', default=os.path.join(ROOT, 'demo_out', 'example'))
    args, beam_args = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
    # The TFMA writer imports TensorFlow; its start-up chatter would bury the demo's output.
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from pipeline.run import evaluate
    summary = evaluate(_example_config(args.output), beam_args)
    out = args.output
    print('headstream demo: evaluated %d rows of %s in %.1f s (run %s)' % (
        summary['rows_read'], os.path.relpath(os.path.join(ROOT, 'examples', 'data')),
        summary['wall_time_s'], summary['run_id']))
    print('\nOutputs in %s:' % out)
    for name, what in (('metrics/metrics.parquet', 'one row per slice, head and metric'),
                       ('plots/plots.parquet', 'confusion matrices at thresholds, calibration'),
                       ('summary.json', 'rows read, bad rows, heads, slices, wall time'),
                       ('tfma', 'TFMA files (tensorflow_model_analysis.load_eval_result)'),
                       ('tensorboard', 'TensorBoard runs, one per slice'),
                       ('report.html', 'the HTML report')):
        path = os.path.join(out, name)
        if os.path.exists(path):
            print('  %-26s %s' % (name, what))
    _print_table(os.path.join(out, 'metrics', 'metrics.parquet'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
