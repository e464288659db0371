"""The report at any number of slices: a spec with 100,000 slices shows the worst, best and largest
50 of them, says how many it left out, and the page stays under 5 MB. TensorBoard's run cap.

Which slices are worst, best and largest is known from how the tables are built here (value and
example count are functions of the slice's index), not from the code under test.
"""
from __future__ import annotations

import datetime
import logging
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import report, schema
from pipeline.report.select import MAX_SLICES_PER_SPEC, select_slices
from pipeline.slice_sizes import cap_runs

AT = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
N = 100_000
THRESHOLDS = 5


def _slice_table(n: int) -> dict:
    """Overall plus user:U000000 … : auc of user i is (i + 1) / (n + 1) (so the 50 worst are users
    0..49, the
    50 best n-50..n-1), its example count 1 + min(i, n - 1 - i) (the largest are in the middle)."""
    i = np.arange(n)
    users = np.char.add('U', np.char.zfill(i.astype(str), 6))
    return {'slice': np.concatenate([['Overall'], np.char.add('user:', users)]),
            'slice_columns': np.concatenate([[''], np.full(n, 'user')]),
            'slice_values': np.concatenate([[''], users]),
            'auc': np.concatenate([[0.7], (i + 1) / (n + 1)]),
            'count': np.concatenate([[10 * n], 1 + np.minimum(i, n - 1 - i)])}


def _write_tables(out: str, n: int) -> None:
    t = _slice_table(n)
    k = len(t['slice'])
    metrics = {'slice': np.repeat(t['slice'], 2), 'slice_columns': np.repeat(t['slice_columns'], 2),
               'slice_values': np.repeat(t['slice_values'], 2),
               'metric': np.tile(['auc', 'loss'], k),
               'value': np.stack([t['auc'], np.ones(k)], axis=1).ravel(),
               'example_count': np.repeat(t['count'], 2)}
    m = len(metrics['slice'])
    columns = {'run_id': ['r'] * m, 'evaluated_at': [AT] * m, 'head': ['click'] * m,
               'lower_bound': [None] * m, 'upper_bound': [None] * m, 'model': ['candidate'] * m,
               'ci_lower': [None] * m, 'ci_upper': [None] * m, 'standard_error': [None] * m,
               'weighted_example_count': metrics['example_count'].astype(float)}
    columns.update(metrics)
    os.makedirs(os.path.join(out, 'metrics'))
    pq.write_table(pa.table({f.name: pa.array(columns[f.name], f.type) for f in schema.METRICS},
                            schema=schema.METRICS), os.path.join(out, 'metrics', 'm.parquet'))
    p = k * THRESHOLDS
    thresholds = np.tile(np.linspace(0, 1, THRESHOLDS), k)
    plot_cols = {'run_id': np.full(p, 'r'), 'evaluated_at': pa.array(np.full(p, AT)),
                 'head': np.full(p, 'click'), 'sub_key': np.full(p, ''),
                 'curve': np.full(p, 'confusion')}
    for c in ('slice', 'slice_columns', 'slice_values'):
        plot_cols[c] = np.repeat(t[c], THRESHOLDS)
    for c in ('threshold', 'tp', 'fp', 'tn', 'fn', 'precision', 'recall',
              'false_positive_rate'):
        plot_cols[c] = thresholds
    for c in ('bucket_lower', 'bucket_upper', 'weighted_examples', 'weighted_labels',
              'weighted_predictions'):
        plot_cols[c] = pa.nulls(p, pa.float64())
    os.makedirs(os.path.join(out, 'plots'))
    pq.write_table(pa.table({f.name: pa.array(plot_cols[f.name], f.type) for f in schema.PLOTS},
                            schema=schema.PLOTS), os.path.join(out, 'plots', 'p.parquet'),
                   row_group_size=50_000)


def test_a_report_of_100k_slices_shows_the_worst_best_and_largest_and_says_what_it_left_out(
        tmp_path):
    out = str(tmp_path)
    _write_tables(out, N)
    page = open(report.write_report(out), encoding='utf-8').read()
    assert len(page.encode('utf-8')) <= 5 * 2**20
    n = MAX_SLICES_PER_SPEC
    shown = set(re.findall(r'user:U\d{6}', page))
    worst = {'user:U%06d' % i for i in range(n)}
    best = {'user:U%06d' % i for i in range(N - n, N)}
    largest = {'user:U%06d' % i for i in range(N // 2 - n // 2 - 1, N // 2 + n // 2 + 1)}
    assert worst <= shown and best <= shown
    # The 50 largest: counts 1 + min(i, N-1-i) peak at i = 49999 and 50000 (50,000 each).
    order = sorted(range(N), key=lambda i: (-(1 + min(i, N - 1 - i)), i))[:n]
    assert {'user:U%06d' % i for i in order} <= shown and len(largest) >= n
    assert len(shown) == 3 * n
    assert ('user: showing 150 of 100,000 slices (per head the 50 worst and 50 best by auc and '
            'the 50 largest); 99,850 left out of this page') in page
    assert 'Overall' in page


def test_a_spec_with_few_slices_is_shown_whole():
    t = _slice_table(3 * MAX_SLICES_PER_SPEC)
    k = len(t['slice'])
    metrics = pa.table({'slice': t['slice'], 'slice_columns': t['slice_columns'],
                        'head': ['h'] * k, 'metric': ['auc'] * k, 'value': t['auc'],
                        'example_count': t['count']})
    assert select_slices(metrics) == (None, [])


def test_tensorboard_keeps_overall_and_the_largest_slices_up_to_max_runs(caplog):
    t = _slice_table(10)
    metrics = pa.table({'slice': t['slice'], 'example_count': t['count']})
    with caplog.at_level(logging.WARNING):
        kept, left_out = cap_runs(metrics, 3)
    # Counts of users 0..9: 1 2 3 4 5 5 4 3 2 1 → the largest are users 4 and 5.
    assert kept.column('slice').to_pylist() == ['Overall', 'user:U000004', 'user:U000005']
    assert left_out == 8
    assert '11 slices would make 11 runs, more than tensorboard.max_runs 3' in caplog.text
    same, none = cap_runs(metrics, 11)
    assert same is metrics and none == 0
    assert cap_runs(metrics.slice(0, 0), 1)[1] == 0
