"""`plots.max_slices`: plots for Overall and, per slice spec (and window, step), only the largest
slices by example count, ties to the slice first in the tables' order; the rest counted in the
summary, logged once per spec, said in the report and written nowhere.

Which slices keep plots is worked out by hand from COUNTRY_ROWS below (rows per country) and
written into each test; nothing expected is read from the code under test.
"""
from __future__ import annotations

import json
import logging
import os
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, parse_config
from pipeline.elements import Key
from pipeline.results import KeyResult
from pipeline.run import evaluate

from _helpers import RUNNER, WEIGHTED_CLICK_HEAD, minimal_config
from pipeline.slice_sizes import limit_plots
from pipeline.writers.tfma_protos import tfma_module

BINARY = WEIGHTED_CLICK_HEAD

# Rows per country (11 slices). By size: K 9, then C, D and F tie at 7 (C and D come first in
# the tables' order, by value), then H 6, ...
COUNTRY_ROWS = {'A': 3, 'B': 2, 'C': 7, 'D': 7, 'E': 1, 'F': 7, 'G': 4, 'H': 6, 'I': 5, 'J': 2,
                'K': 9}


_minimal = minimal_config


# -------------------------------------------------------------------------------------------------
# Config.
# -------------------------------------------------------------------------------------------------

def test_max_slices_defaults_to_1000_and_takes_a_whole_number_or_null():
    assert parse_config(_minimal()).plots.max_slices == 1000
    assert parse_config(_minimal(plots={})).plots.max_slices == 1000
    assert parse_config(_minimal(plots={'max_slices': 3})).plots.max_slices == 3
    assert parse_config(_minimal(plots={'max_slices': 0})).plots.max_slices == 0
    assert parse_config(_minimal(plots={'max_slices': None})).plots.max_slices is None
    again = parse_config(parse_config(_minimal(plots={'max_slices': 7})).to_dict())
    assert again.plots.max_slices == 7


@pytest.mark.parametrize('bad', [{'max_slices': -1}, {'max_slices': 2.5}, {'max_slices': True},
                                 {'max_slices': '10'}, {'max_slice': 10}])
def test_a_bad_plots_section_is_a_config_error_naming_its_key(bad):
    with pytest.raises(ConfigError, match='plots.max_slice'):
        parse_config(_minimal(plots=bad))


# -------------------------------------------------------------------------------------------------
# The rule, on results in the tables' order.
# -------------------------------------------------------------------------------------------------

def _result(columns: tuple, values: tuple, count: int, head: int = 0,
            window: int | None = None) -> KeyResult:
    plots = {'threshold': np.array([0.5]), 'curve': np.array(['confusion'], object)}
    return KeyResult(Key(columns, values, head, window, None), [('loss', 1.0, None, None)],
                     count, float(count), 1.0, plots)


def _with_plots(results: list[KeyResult]) -> list[tuple]:
    return [(r.key.slice_values, r.key.head, r.key.window_start) for r in results if r.plots]


def _countries(counts: dict[str, int]) -> list[KeyResult]:
    return [_result((), (), sum(counts.values()))] + [
        _result(('country',), (c,), n) for c, n in sorted(counts.items())]


def test_overall_and_the_largest_keep_plots_ties_to_the_first_in_table_order():
    limited = limit_plots(_countries(COUNTRY_ROWS), 3)
    assert _with_plots(limited.results) == [((), 0, None), (('C',), 0, None), (('D',), 0, None),
                                            (('K',), 0, None)]
    assert limited.without_plots == {'country': 8}
    assert len(limited.results) == 12  # the metrics stay: only plots go


def test_every_head_of_a_slice_keeps_or_loses_its_plots_sized_by_its_largest_head():
    results = [_result((), (), 10), _result((), (), 10, head=1),
               _result(('c',), ('a',), 2), _result(('c',), ('a',), 2, head=1),
               _result(('c',), ('b',), 1), _result(('c',), ('b',), 5, head=1)]
    assert _with_plots(limit_plots(results, 1).results) == [((), 0, None), ((), 1, None),
                                                            (('b',), 0, None), (('b',), 1, None)]


def test_the_limit_works_per_spec_and_per_window():
    results = [_result((), (), 10, window=0), _result((), (), 10, window=60),
               _result(('c',), ('a',), 5, window=0), _result(('c',), ('b',), 3, window=0),
               _result(('c',), ('a',), 1, window=60), _result(('c',), ('b',), 4, window=60),
               _result(('d',), ('x',), 1, window=0), _result(('d',), ('y',), 2, window=0)]
    limited = limit_plots(results, 1)
    assert _with_plots(limited.results) == [
        ((), 0, 0), ((), 0, 60), (('a',), 0, 0), (('b',), 0, 60), (('y',), 0, 0)]
    assert limited.without_plots == {'c': 2, 'd': 1}


def test_zero_keeps_overall_only_and_null_keeps_every_slice():
    results = _countries(COUNTRY_ROWS)
    zero = limit_plots(results, 0)
    assert _with_plots(zero.results) == [((), 0, None)]
    assert zero.without_plots == {'country': 11}
    every = limit_plots(results, None)
    assert len(_with_plots(every.results)) == 12 and every.without_plots == {}
    assert limit_plots(results, 11).without_plots == {}


def test_a_spec_that_loses_plots_is_logged_once(caplog):
    counts = {'U%05d' % i: 1 + i % 7 for i in range(2500)}
    with caplog.at_level(logging.WARNING):
        limit_plots(_countries(counts), 1000)
    lines = [r.getMessage() for r in caplog.records if 'plots.max_slices' in r.getMessage()]
    assert lines == ['headstream: plots.max_slices 1000: plots for Overall and the 1,000 largest '
                     'of 2,500 slices of country; raise plots.max_slices to plot more']


# -------------------------------------------------------------------------------------------------
# End to end: a run with 11 country slices.
# -------------------------------------------------------------------------------------------------

def _write_countries(root) -> int:
    countries = np.concatenate([np.full(n, c) for c, n in COUNTRY_ROWS.items()])
    n = len(countries)
    rng = np.random.default_rng(5)
    table = pa.table({'country': countries, 'x': rng.normal(0, 2, n).astype(np.float32),
                      'y': (rng.random(n) < 0.5).astype(np.int64),
                      'w': rng.uniform(0.5, 1.5, n).astype(np.float32)})
    os.makedirs(root / 'in')
    pq.write_table(table, str(root / 'in' / 'part-0.parquet'))
    return n


def _run(root, max_slices, caplog=None):
    _write_countries(root)
    config = {'input': {'pattern': str(root / 'in' / '*.parquet')}, 'heads': [BINARY],
              'slices': [[], ['country']], 'output': str(root / 'out'),
              'tensorboard': {}, 'plots': {'max_slices': max_slices}}
    return evaluate(config, RUNNER)


def _tfrecords(path) -> list[bytes]:
    """An independent TFRecord reader (length, length CRC, data, data CRC)."""
    with open(path, 'rb') as f:
        data = f.read()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack('<Q', data[pos:pos + 8])
        out.append(data[pos + 12:pos + 12 + n])
        pos += 12 + n + 4
    return out


def _plotted(out) -> set[str]:
    return set(pq.read_table(str(out / 'plots' / 'plots.parquet')).column('slice').to_pylist())


def test_a_run_with_max_slices_3_plots_overall_and_the_3_largest_only(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        summary = _run(tmp_path, 3)
    out = tmp_path / 'out'
    assert _plotted(out) == {'Overall', 'country:K', 'country:C', 'country:D'}
    metrics = pq.read_table(str(out / 'metrics' / 'metrics.parquet'))
    assert len(set(metrics.column('slice').to_pylist())) == 12  # every slice keeps its metrics
    assert summary['plots'] == {'max_slices': 3, 'slices_without_plots': {'country': 8}}
    with open(str(out / 'summary.json')) as f:
        assert json.load(f)['plots'] == summary['plots']
    assert sum('plots for Overall and the 3 largest of 11 slices of country' in r.getMessage()
               for r in caplog.records) == 1
    mfs = tfma_module('proto.metrics_for_slice_pb2')
    slices = set()
    for record in _tfrecords(out / 'tfma' / 'plots-00000-of-00001.tfrecord'):
        message = mfs.PlotsForSlice.FromString(record)
        slices.add(tuple(k.bytes_value for k in message.slice_key.single_slice_keys))
    assert slices == {(), (b'K',), (b'C',), (b'D',)}  # one PlotsForSlice per plotted slice
    page = (out / 'report.html').read_text()
    assert 'country: 8 slices without plots (plots.max_slices 3' in page


def test_a_run_with_max_slices_0_plots_overall_only_and_null_every_slice(tmp_path):
    summary = _run(tmp_path / 'zero', 0)
    assert _plotted(tmp_path / 'zero' / 'out') == {'Overall'}
    assert summary['plots']['slices_without_plots'] == {'country': 11}
    summary = _run(tmp_path / 'all', None)
    assert _plotted(tmp_path / 'all' / 'out') == {'Overall'} | {'country:' + c
                                                                for c in COUNTRY_ROWS}
    assert summary['plots'] == {'max_slices': None, 'slices_without_plots': {}}
