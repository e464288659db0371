"""The metrics table built from every key's arrays at once (`pipeline.metrics_table`) holds the
rows the spec names, cell for cell: per key the candidate's rows, then the baseline's and the
diffs; a bound the state lacks, an undefined interval and a baseline row's bounds null; a NaN
value NaN; id cells (slice spellings with escaping, head, counts) repeated over the key's rows.

The expected rows are written out here from the KeyResults (a row-by-row reading of the spec),
never from the code under test.
"""
from __future__ import annotations

import datetime
import math

import numpy as np
import pytest

from pipeline.config import parse_config
from pipeline.elements import Key
from pipeline.metric_rows import MetricRows
from pipeline.results import KeyResult, build_tables
from pipeline.key_columns import KeyColumns
from pipeline.results_frame import TypedValues, slice_texts

AT = datetime.datetime(2026, 12, 6, 4, 0, tzinfo=datetime.timezone.utc)
CONFIG = parse_config({
    'input': {'pattern': 'x.parquet'},
    'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click'}, 'logits': 'a',
               'labels': 'b'},
              {'type': 'BinaryClassHead', 'args': {'name': 'buy'}, 'logits': 'c',
               'labels': 'd'}],
    'slices': [[], ['user'], ['country', 'x:y']]})


def _key(columns, values, head):
    return Key(columns, values, head, None, None)


def _results() -> list[KeyResult]:
    rows = MetricRows([('auc', 0.75, 0.7, 0.8), ('loss', 0.5, None, None),
                       ('accuracy', math.nan, None, None)])
    return [
        KeyResult(_key((), (), 0), rows, 10, 12.5, 0.5, {}),
        KeyResult(_key((), (), 1), MetricRows([('loss', 1.5, None, None)]), 10, 12.5, 1.5, {},
                  {'loss': (1.0, 2.0, 0.25)},
                  (('baseline', 'loss', 1.25, None, None, None),
                   ('diff', 'loss', 0.25, -0.5, None, 0.1), ('diff', 'auc', None, None, None,
                                                           None))),
        KeyResult(_key(('user',), (7,), 0), rows, 3, 3.0, 0.5, {}),
        KeyResult(_key(('user',), (-12,), 0), [('loss', 2.0, None, None)], 2, None, 2.0, {},
                  {'loss': (None, None, None)}),
        KeyResult(_key(('country', 'x:y'), ('U_XS', '50%'), 1), rows, 1, 0.5, 0.5, {}),
    ]


def _expected(results: list[KeyResult]) -> list[dict]:
    """Row by row, as the spec reads: keys in table order (Overall, then slices by config order
    and value, heads in order)."""
    spelled = {(): ('Overall', '', ''), ('user', 7): ('user:7', 'user', '7'),
               ('user', -12): ('user:-12', 'user', '-12'),
               ('country', 'x:y', 'U_XS', '50%'): ('country_X_x%3Ay:U_%58S_X_50%25',
                                                   'country_X_x%3Ay', 'U_%58S_X_50%25')}
    out = []
    for r in results:
        name, columns, values = spelled[tuple(r.key.slice_columns) + tuple(r.key.slice_values)]
        ids = {'run_id': 'r1', 'evaluated_at': AT, 'slice': name, 'slice_columns': columns,
               'slice_values': values, 'head': ('click', 'buy', 'click_buy')[r.key.head],
               'example_count': r.example_count,
               'weighted_example_count': r.weighted_example_count}
        for metric, value, lo, hi in r.metrics:
            ci = r.intervals.get(metric, (None, None, None))
            out.append(dict(ids, model='candidate', metric=metric, value=value, lower_bound=lo,
                            upper_bound=hi, ci_lower=ci[0], ci_upper=ci[1],
                            standard_error=ci[2]))
        for model, metric, value, lo, hi, se in r.compared:
            out.append(dict(ids, model=model, metric=metric, value=value, lower_bound=None,
                            upper_bound=None, ci_lower=lo, ci_upper=hi, standard_error=se))
    return out


def _same(a, b) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
            ) or a == b


def test_the_metrics_table_holds_every_keys_rows_cell_for_cell():
    results = _results()
    metrics, plots = build_tables(CONFIG, results[::-1], 'r1', AT)
    # Overall's MultiHead loss: 0.5 + 1.5 (head weights 1), both heads' counts.
    multi = KeyResult(_key((), (), 2), [('loss', 2.0, None, None)], 10, 12.5, 2.0, {})
    in_order = [results[i] for i in (0, 1)] + [multi] + [results[i] for i in (3, 2, 4)]
    got, want = metrics.to_pylist(), _expected(in_order)  # users by value: -12 before 7
    assert len(got) == len(want) == 3 + 4 + 1 + 1 + 3 + 3
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        assert all(_same(g[k], w[k]) for k in w), (g, w)
    assert plots.num_rows == 0


def test_a_table_with_no_keys_is_empty_with_the_schema():
    metrics, _ = build_tables(CONFIG, [], 'r1', AT)
    assert metrics.num_rows == 0 and 'standard_error' in metrics.column_names


@pytest.mark.parametrize('values, expected', [
    ((7,), ('user:7', 'user', '7')), (('a_Xb',), ('user:a_%58b', 'user', 'a_%58b')),
    ((2.5,), ('user:2.5', 'user', '2.5')), ((True,), ('user:True', 'user', 'True'))])
def test_slice_spellings_are_made_once_per_slice_and_escaped(values, expected):
    results = [KeyResult(_key(('user',), values, h), [], 1, 1.0, 0.0, {}) for h in (0, 1)]
    results.append(KeyResult(_key((), (), 0), [], 1, 1.0, 0.0, {}))
    texts = slice_texts(KeyColumns.from_results(results))
    cells = [tuple(texts[c][0][int(texts[c][1][i])].as_py()
                   for c in ('slice', 'slice_columns', 'slice_values')) for i in range(3)]
    assert cells == [expected, expected, ('Overall', '', '')]
    # once per slice: the two heads' keys share one text of each column
    assert len(texts['slice'][0]) == 2 and texts['slice'][1][0] == texts['slice'][1][1]


def test_many_keys_of_one_head_share_their_names():
    rows = MetricRows([('auc', 0.5, None, None), ('loss', 1.0, None, None)])
    results = [KeyResult(_key(('user',), (i,), 0), rows, i, float(i), 1.0, {})
               for i in range(1000)]
    metrics, _ = build_tables(CONFIG, results, 'r1', AT)
    assert metrics.column('metric').to_pylist() == ['auc', 'loss'] * 1000
    assert metrics.column('example_count').to_pylist() == list(np.repeat(np.arange(1000), 2))
    assert metrics.column('slice').to_pylist()[-1] == 'user:999'


def test_keys_are_in_table_order_spec_then_values_numbers_first_then_window_step_head():
    from pipeline.results import prepare_results
    config = parse_config({'input': {'pattern': 'x.parquet'},
                           'heads': [{'type': 'BinaryClassHead', 'logits': 'a', 'labels': 'b'}],
                           'slices': [['user'], []]})

    def r(columns, values, head=0, window=None, step=None):
        return KeyResult(Key(columns, values, head, window, step), [], 1, 1.0, 0.0, {})
    keys = [r(('user',), ('a',)), r(('user',), (10,)), r(('user',), (2.5,), window=60),
            r(('user',), (2.5,), window=0, step=5), r(('user',), (2.5,), window=0, step=1),
            r(('user',), ('B',)), r((), ()), r(('user',), (-1,))]
    got = [(k.key.slice_values, k.key.window_start, k.key.step)
           for k in prepare_results(config, keys)]
    # Specs in config order ([user] first here), values numbers first then text ('B' < 'a').
    assert got == [((-1,), None, None), ((2.5,), 0, 1), ((2.5,), 0, 5), ((2.5,), 60, None),
                   ((10,), None, None), (('B',), None, None), (('a',), None, None),
                   ((), None, None)]


def test_typed_values_map_each_slice_spelling_to_its_values():
    typed = TypedValues(KeyColumns.from_results(_results()))
    expected = {('', ''): (), ('user', '7'): (7,), ('user', '-12'): (-12,),
                ('country_X_x%3Ay', 'U_%58S_X_50%25'): ('U_XS', '50%')}
    assert {k: typed.get(k) for k in expected} == expected
    assert typed.get(('user', 'x7')) is None and typed.get(('device', '7')) is None
    # 'user' holds only ints: the TFMA writer may read all its values at once.
    assert typed.int_spec('user') and not typed.int_spec('country_X_x%3Ay')
    assert not typed.int_spec('') and not typed.int_spec('device')


def test_typed_values_of_a_spec_with_ints_and_text_come_from_each_slice():
    results = [KeyResult(_key(('user',), (v,), 0), [], 1, 1.0, 0.0, {}) for v in (7, '8')]
    typed = TypedValues(KeyColumns.from_results(results))
    assert typed.get(('user', '7')) == (7,) and typed.get(('user', '8')) == ('8',)
    assert not typed.int_spec('user')


def test_all_null_is_pa_nulls():
    """The calloc'd null column is the same array as Arrow's own, valid to its last bit."""
    import pyarrow as pa
    from pipeline.metrics_table import all_null
    for n in (0, 1, 7, 8, 9, 1000):
        column = all_null(n)
        column.validate(full=True)
        assert column.equals(pa.nulls(n, pa.float64())) and column.null_count == n
