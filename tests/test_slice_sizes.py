"""`min_slice_size` and the many-slices warning: which slices stay, what the summary counts.

The expected slices and counts are written out from the data built here (how many rows each
country has), never read from the code under test.
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.elements import Key
from pipeline.results import KeyResult
from pipeline.run import evaluate

from _helpers import RUNNER, WEIGHTED_CLICK_HEAD
from pipeline.slice_sizes import apply_min_slice_size, many_slices_warnings, slices_per_spec

BINARY = WEIGHTED_CLICK_HEAD


def _result(columns: tuple, values: tuple, count: int, head: int = 0,
            window: int | None = None) -> KeyResult:
    return KeyResult(Key(columns, values, head, window, None), [('loss', 1.0, None, None)],
                     count, float(count), 1.0, {})


def _names(results: list[KeyResult]) -> set:
    return {(r.key.slice_columns, r.key.slice_values, r.key.head, r.key.window_start)
            for r in results}


def test_zero_min_slice_size_keeps_every_slice():
    results = [_result((), (), 3), _result(('c',), ('a',), 1), _result(('c',), ('b',), 0)]
    kept, left_out = apply_min_slice_size(results, 0)
    assert _names(kept) == _names(results) and left_out == {}


def test_slices_below_the_size_go_with_every_head_and_are_counted_per_spec():
    results = [_result((), (), 16), _result((), (), 16, head=1),
               _result(('c',), ('a',), 10), _result(('c',), ('a',), 10, head=1),
               _result(('c',), ('b',), 4), _result(('c',), ('b',), 4, head=1),
               _result(('c',), ('z',), 2), _result(('c',), ('z',), 2, head=1),
               _result(('c', 'd'), ('a', 1), 5), _result(('c', 'd'), ('a', 1), 5, head=1)]
    kept, left_out = apply_min_slice_size(results, 5)
    assert _names(kept) == {((), (), 0, None), ((), (), 1, None),
                            (('c',), ('a',), 0, None), (('c',), ('a',), 1, None),
                            (('c', 'd'), ('a', 1), 0, None), (('c', 'd'), ('a', 1), 1, None)}
    # c=b (4 rows) and c=z (2 rows) are left out: 2 slices, 4 + 2 rows.
    assert left_out == {'c': {'slices': 2, 'rows': 6}}


def test_overall_stays_even_when_smaller_than_the_size():
    kept, left_out = apply_min_slice_size([_result((), (), 1), _result(('c',), ('a',), 1)], 2)
    assert _names(kept) == {((), (), 0, None)}
    assert left_out == {'c': {'slices': 1, 'rows': 1}}


def test_a_slice_is_judged_per_window():
    results = [_result(('c',), ('a',), 3, window=0), _result(('c',), ('a',), 1, window=60)]
    kept, left_out = apply_min_slice_size(results, 2)
    assert _names(kept) == {(('c',), ('a',), 0, 0)}
    assert left_out == {'c': {'slices': 1, 'rows': 1}}


def test_a_slice_with_no_rows_in_one_head_is_sized_by_the_largest_head():
    results = [_result(('c',), ('a',), 0), _result(('c',), ('a',), 7, head=1)]
    kept, left_out = apply_min_slice_size(results, 7)
    assert len(kept) == 2 and left_out == {}


def test_no_results_leave_nothing_out():
    assert apply_min_slice_size([], 10) == ([], {})


def test_specs_with_more_than_the_limit_of_slices_are_warned_about(caplog):
    results = [_result((), (), 9)] + [_result(('u',), (i,), 1) for i in range(4)] + [
        _result(('u',), (0,), 1, window=60)]
    counts = slices_per_spec(results)
    assert counts == {'': 1, 'u': 4}  # one value in two windows is one slice
    with caplog.at_level(logging.WARNING):
        warnings = many_slices_warnings(counts, limit=3)
    assert len(warnings) == 1 and 'u yields 4 slices (more than 3)' in warnings[0]
    assert 'u yields 4 slices' in caplog.text
    assert many_slices_warnings(counts, limit=4) == []


# -------------------------------------------------------------------------------------------------
# End to end: a run with min_slice_size.
# -------------------------------------------------------------------------------------------------

# Rows per country: US 40, JP 5, DE 1 (the one-row slice), FR 6.
COUNTRY_ROWS = {'US': 40, 'JP': 5, 'DE': 1, 'FR': 6}


def _write_countries(root) -> int:
    countries = np.concatenate([np.full(n, c) for c, n in COUNTRY_ROWS.items()])
    n = len(countries)
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, n).astype(np.float32)
    table = pa.table({'country': countries, 'x': x, 'y': (rng.random(n) < 0.5).astype(np.int64),
                      'w': rng.uniform(0.5, 1.5, n).astype(np.float32)})
    os.makedirs(root / 'in')
    pq.write_table(table, str(root / 'in' / 'part-0.parquet'))
    return n


@pytest.fixture(scope='module')
def small_slices_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('minsize')
    n = _write_countries(root)
    config = {'input': {'pattern': str(root / 'in' / '*.parquet')}, 'heads': [BINARY],
              'slices': [[], ['country']], 'output': str(root / 'out'), 'min_slice_size': 6}
    summary = evaluate(config, RUNNER)
    return summary, root / 'out', n


def test_a_run_writes_at_most_max_runs_tensorboard_runs_overall_and_the_largest(tmp_path):
    _write_countries(tmp_path)
    config = {'input': {'pattern': str(tmp_path / 'in' / '*.parquet')}, 'heads': [BINARY],
              'slices': [[], ['country']], 'output': str(tmp_path / 'out'),
              'tensorboard': {'max_runs': 3}}
    summary = evaluate(config, RUNNER)
    runs = sorted(os.listdir(str(tmp_path / 'out' / 'tensorboard')))
    # Countries by rows: US 40, FR 6, JP 5, DE 1 → Overall, US and FR.
    assert runs == ['Overall', 'country=FR', 'country=US']
    assert summary['tensorboard_runs_left_out'] == 2
    metrics = pq.read_table(str(tmp_path / 'out' / 'metrics' / 'metrics.parquet'))
    assert len(set(metrics.column('slice').to_pylist())) == 5  # the tables keep every slice


def test_a_run_leaves_small_slices_out_of_every_table_and_counts_them(small_slices_run):
    summary, out, n = small_slices_run
    metrics = pq.read_table(str(out / 'metrics' / 'metrics.parquet')).to_pylist()
    assert {r['slice'] for r in metrics} == {'Overall', 'country:US', 'country:FR'}
    overall = [r for r in metrics if r['slice'] == 'Overall']
    assert overall[0]['example_count'] == n == 52  # the left-out rows stay in Overall
    plots = pq.read_table(str(out / 'plots' / 'plots.parquet')).column('slice').to_pylist()
    assert set(plots) == {'Overall', 'country:US', 'country:FR'}
    # JP (5 rows) and DE (1 row) are below 6.
    assert summary['slices_left_out'] == {'country': {'slices': 2, 'rows': 6}}
    assert summary['min_slice_size'] == 6
    assert summary['slices_per_spec'] == {'': 1, 'country': 4}
    with open(str(out / 'summary.json')) as f:
        assert json.load(f)['slices_left_out'] == summary['slices_left_out']


def test_a_run_names_the_left_out_slices_in_its_report(small_slices_run):
    _, out, _ = small_slices_run
    page = (out / 'report.html').read_text()
    assert 'country: 2 slices (6 rows) below min_slice_size 6 left out' in page
    assert 'country:JP' not in page and 'country:DE' not in page


def test_tensorboard_max_runs_defaults_to_1000_and_must_be_a_positive_whole_number():
    from pipeline.config import ConfigError, parse_config
    base = {'input': {'pattern': '/nowhere/*.parquet'}, 'heads': [BINARY], 'output': '/o'}
    assert parse_config(dict(base, tensorboard={})).tensorboard.max_runs == 1000
    assert parse_config(dict(base, tensorboard={'max_runs': 5})).tensorboard.max_runs == 5
    for bad in (0, -1, 2.5, True, '10'):
        with pytest.raises(ConfigError, match='tensorboard.max_runs'):
            parse_config(dict(base, tensorboard={'max_runs': bad}))
