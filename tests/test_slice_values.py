"""Slice values as users have them (issue 20, items 6 and 7): any string is a slice value, and a
slice column typed differently from shard to shard gives the same slices and metrics.

Expected slices, counts and metrics come from the input rows themselves (counted and averaged
here with plain Python), and the escaped spellings are written out by hand from docs/tables.md.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from pipeline import cli, schema
from pipeline.run import evaluate

RUNNER = ['--runner=DirectRunner']
HEAD = {'type': 'RegressionHead', 'args': {'name': 'r'}, 'logits': 'x', 'labels': 'y'}
LONG_A, LONG_B = '中' * 29 + 'a', '中' * 29 + 'b'  # 29 CJK characters: 261 bytes escaped


def _config(pattern: str, output, slices) -> dict:
    return {'input': {'pattern': pattern}, 'heads': [HEAD], 'slices': slices,
            'output': str(output)}


def _metrics(output) -> pa.Table:
    return pq.read_table(os.path.join(str(output), 'metrics'))


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=n), rng.normal(size=n)


def _by_slice(metrics: pa.Table, metric: str) -> dict[str, tuple[float, int]]:
    return {s: (v, c) for s, m, v, c in zip(*(metrics.column(k).to_pylist() for k in
                                              ('slice', 'metric', 'value', 'example_count')))
            if m == metric}


# -------------------------------------------------------------------------------------------------
# Item 6: any string is a slice value.
# -------------------------------------------------------------------------------------------------

def test_escaping_round_trips_and_keeps_ordinary_values():
    assert schema.slice_name(('country', 'device'), ('US', 'mobile')) == \
        'country_X_device:US_X_mobile'
    assert schema.slice_name(('age',), (30,)) == 'age:30'
    assert schema.slice_name(('t',), ('12:30',)) == 't:12:30'
    assert schema.slice_name(('c',), ('a_X_b',)) == 'c:a_%58_b'
    assert schema.slice_name(('c',), ('50%',)) == 'c:50%25'
    assert schema.slice_name(('a:b',), ('c',)) == 'a%3Ab:c'
    for parts in (['a_X_b', 'x'], ['_X_X_', '_'], ['a_', 'X_b'], ['%58', '_%58_'], ['_X', 'X'],
                  [LONG_A, ''], ['', '']):
        joined = schema.join_slice_parts(parts)
        assert not any('_X_' in schema.escape_slice_part(p) for p in parts)
        assert schema.split_slice_parts(joined) == parts


@pytest.mark.tf  # TFMA's loader imports TensorFlow
def test_any_string_is_a_slice_value_in_every_output(tmp_path):
    """`_X_`, `%`, `:` and 29 CJK characters in slice values: the run completes; the tables, TFMA
    and TensorBoard see each value once, unsplit (today: `values 'a_X_b' do not split`, and
    `File name too long` with TensorBoard)."""
    import tensorflow_model_analysis as tfma

    cities = ['a_X_b', 'a', 'b', LONG_A, LONG_B, '50%', 'x:y']
    kinds = ['k_X_', 'k']
    n = 70
    x, y = _rows(n, 3)
    city = [cities[i % len(cities)] for i in range(n)]
    kind = [kinds[i % 2] for i in range(n)]
    os.makedirs(tmp_path / 'in')
    pq.write_table(pa.table({'x': x, 'y': y, 'city': city, 'kind': kind}),
                   tmp_path / 'in' / 'part-0.parquet')
    raw = _config(str(tmp_path / 'in' / '*.parquet'), tmp_path / 'out',
                  [[], ['city'], ['city', 'kind']])
    raw['tensorboard'] = {}
    evaluate(raw, RUNNER, run_id='r1')

    metrics = _metrics(tmp_path / 'out')
    got = _by_slice(metrics, 'average_loss')
    expected = {'Overall': list(range(n))}
    for c in cities:
        expected['city:' + _spelled(c)] = [i for i in range(n) if city[i] == c]
        for k in kinds:
            rows = [i for i in range(n) if city[i] == c and kind[i] == k]
            if rows:
                expected['city_X_kind:%s_X_%s' % (_spelled(c), _spelled(k))] = rows
    assert 'city:a_%58_b' in expected and 'city_X_kind:a_%58_b_X_k_%58_' in expected
    assert sorted(got) == sorted(expected)
    for s, rows in expected.items():
        mse = sum((x[i] - y[i]) ** 2 for i in rows) / len(rows)
        assert got[s][1] == len(rows)
        assert got[s][0] == pytest.approx(mse, rel=1e-5)  # the head computes in float32
    cells = set(zip(metrics.column('slice_columns').to_pylist(),
                    metrics.column('slice_values').to_pylist()))
    assert {tuple(schema.split_slice_parts(v)) for c, v in cells if c == 'city'} == \
        {(c,) for c in cities}

    result = tfma.load_eval_result(str(tmp_path / 'out' / 'tfma'))
    keys = set(dict(result.slicing_metrics))
    assert {k for k in keys if len(k) == 1} == {(('city', c),) for c in cities}
    assert (('city', 'a_X_b'), ('kind', 'k_X_')) in keys

    logdir = str(tmp_path / 'out' / 'tensorboard')
    runs = [os.path.relpath(d, logdir) for d, _, files in os.walk(logdir)
            if any('tfevents' in f for f in files)]
    assert len(runs) == len(expected)
    assert 'city=a_X_b' in runs and 'city=a_X_b,kind=k_X_' in runs and 'city=50%25' in runs
    assert max(len(r.encode('utf-8')) for r in runs) <= 200


def _spelled(value: str) -> str:
    """The escaping docs/tables.md documents, written out for the values of these tests."""
    return value.replace('%', '%25').replace('_X', '_%58')


# -------------------------------------------------------------------------------------------------
# Item 7: a slice column typed differently from shard to shard.
# -------------------------------------------------------------------------------------------------

COUNTRIES = [0, 1, 2, 0.5, 0, 1]  # row i has COUNTRIES[i % 6]


def _drifting(tmp_path, name: str, shards: list[tuple[list[int], pa.DataType]], fmt: str,
              x: np.ndarray, y: np.ndarray) -> str:
    """Writes the rows of each shard with its own type for `country`."""
    directory = tmp_path / name
    os.makedirs(directory)
    for j, (rows, t) in enumerate(shards):
        table = pa.table({'x': x[rows], 'y': y[rows],
                          'country': pa.array([COUNTRIES[i % 6] for i in rows]).cast(t)})
        path = str(directory / ('part-%d.%s' % (j, fmt)))
        if fmt == 'parquet':
            pq.write_table(table, path, row_group_size=7)
        else:
            pcsv.write_csv(table, path)
    return str(directory / ('part-*.' + fmt))


@pytest.mark.parametrize('fmt', ['parquet', 'csv'])
def test_numeric_slice_values_do_not_depend_on_shard_types(tmp_path, fmt):
    """int64 0, int32 0 and float64 0.0 are one slice `country:0`, and two ways of splitting the
    same rows over shards of drifting types give the same metrics (today: `country:0` and
    `country:0.0` apart, rows assigned by how shards fell)."""
    n = 120
    x, y = _rows(n, 11)
    integral = [i for i in range(n) if COUNTRIES[i % 6] != 0.5]
    fractional = [i for i in range(n) if COUNTRIES[i % 6] == 0.5]
    split_a = [(integral[:40], pa.int64()), (integral[40:] + fractional, pa.float64())]
    split_b = [(integral[::2] + fractional, pa.float64()), (integral[1::2][:20], pa.int32()),
               (integral[1::2][20:], pa.int64())]
    outputs = []
    for name, split in (('a', split_a), ('b', split_b)):
        pattern = _drifting(tmp_path, name, split, fmt, x, y)
        evaluate(_config(pattern, tmp_path / ('out_' + name), [[], ['country']]), RUNNER,
                 run_id='r-' + name)
        outputs.append(_by_slice(_metrics(tmp_path / ('out_' + name)), 'average_loss'))
    a, b = outputs
    assert sorted(a) == sorted(b) == ['Overall', 'country:0', 'country:0.5', 'country:1',
                                      'country:2']
    for s in a:
        assert a[s][1] == b[s][1]
        assert a[s][0] == pytest.approx(b[s][0], rel=1e-9, abs=1e-12)
    zero = [i for i in range(n) if COUNTRIES[i % 6] == 0]
    assert a['country:0'][1] == len(zero) == 40
    assert a['country:0'][0] == pytest.approx(
        sum((x[i] - y[i]) ** 2 for i in zero) / len(zero), rel=1e-5)


@pytest.mark.tf  # TFMA's loader imports TensorFlow
def test_typed_tfma_slice_keys(tmp_path):
    """TFMA's keys as its slicer types them: integral values int64, others float, text bytes."""
    import tensorflow_model_analysis as tfma
    x, y = _rows(12, 5)
    pattern = _drifting(tmp_path, 'in', [([0, 1, 2, 4, 5], pa.int64()),
                                         ([3] + list(range(6, 12)), pa.float64())], 'parquet',
                        x, y)
    evaluate(_config(pattern, tmp_path / 'out', [[], ['country']]), RUNNER)
    keys = set(dict(tfma.load_eval_result(str(tmp_path / 'out' / 'tfma')).slicing_metrics))
    assert keys == {(), (('country', 0),), (('country', 1),), (('country', 2),),
                    (('country', 0.5),)}
    assert all(type(k[0][1]) is int for k in keys if k and k[0][1] != 0.5)


@pytest.mark.parametrize('fmt', ['parquet', 'csv'])
def test_numbers_and_text_in_one_slice_column_exit_2_naming_file_and_column(
        tmp_path, capsys, fmt):
    """A column of numbers in one shard and text in another: one line naming the file and the
    column, exit 2 (Parquet: from the footers, before any row is read; CSV: once the shard's
    rows are decoded). Today: two slices spelled `country:0`, or a crash in the TFMA writer."""
    directory = tmp_path / 'in'
    os.makedirs(directory)
    tables = [pa.table({'x': [0.5, 1.5], 'y': [1.0, 2.0], 'country': [0, 1]}),
              pa.table({'x': [0.5, 1.5], 'y': [1.0, 2.0], 'country': ['0', 'US']})]
    for j, table in enumerate(tables):
        path = str(directory / ('part-%d.%s' % (j, fmt)))
        pq.write_table(table, path) if fmt == 'parquet' else pcsv.write_csv(table, path)
    raw = _config(str(directory / ('part-*.' + fmt)), tmp_path / 'out', [[], ['country']])
    capsys.readouterr()
    assert cli.main(['evaluate', '--config', json.dumps(raw)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "'country'" in err and str(directory / ('part-1.' + fmt)) in err
    assert err.startswith('headstream: config error: ') and 'while running' not in err
    assert not os.path.exists(tmp_path / 'out' / 'metrics')
