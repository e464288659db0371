"""The rules on keys (`pipeline.key_columns.KeyColumns`) agree with their plain reading, written
here key by key in Python: the tables' order (Overall, specs in config order, values numbers
before text, window, step, head), `min_slice_size`, the MultiHead loss and `plots.max_slices`,
on random keys of mixed value types, windows, steps, NaN and ints beyond int64. A run's tables
built from columnar packs equal those built from one KeyResult per key, and a table with
dictionary text columns writes the same Parquet file as one with strings.
"""
from __future__ import annotations

import datetime
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.block_results import ResultsPack
from pipeline.config import parse_config
from pipeline.elements import Key
from pipeline.key_columns import KeyColumns, values_order
from pipeline.metric_rows import MetricRows
from pipeline.results import KeyResult, build_tables, table_ids
from pipeline.results_frame import ResultsFrame
from pipeline.writers import parquet as parquet_writer
from pipeline.writers.parquet import write_table

NAN = float('nan')
SPECS = [(), ('user',), ('country', 'device')]
AT = datetime.datetime(2026, 12, 6, 7, 0, tzinfo=datetime.timezone.utc)


def _random_keys(seed: int, n: int = 300, heads: int = 2) -> list[KeyResult]:
    rng = random.Random(seed)
    # (no True beside 1: a column holds one type, and True == 1 in Python)
    pool = [1, 2, -3, 2 ** 70, 2.5, 'a', 'B', '10', NAN]
    seen, out = set(), []
    while len(out) < n:
        spec = rng.choice(SPECS)
        values = tuple(rng.choice(pool) for _ in spec)
        window = rng.choice([None, 0, 60])
        step = rng.choice([None, 1, 5])
        ident = (spec, tuple('nan' if v != v else (type(v), v) for v in values), window, step)
        if ident in seen:
            continue
        seen.add(ident)
        for h in range(heads if rng.random() < 0.9 else 1):  # some slices miss a head
            weighted = rng.choice([None, 2.0, 3.0])
            out.append(KeyResult(Key(spec, values, h, window, step),
                                 [('loss', 1.0 + h, None, None)], rng.randint(0, 9), weighted,
                                 rng.random(), {}))
    rng.shuffle(out)
    return out


def _slice(r: KeyResult) -> tuple:
    """A key's slice, NaN spelled out (NaN equals nothing)."""
    k = r.key
    return (tuple(k.slice_columns), tuple('nan' if v != v else (v,) for v in k.slice_values),
            k.window_start, k.step)


def _reference_order(results: list[KeyResult], slices: list[tuple]) -> list[KeyResult]:
    def sort_key(r):
        k = r.key
        return (slices.index(tuple(k.slice_columns)), values_order(k.slice_values),
                k.window_start or 0, k.step or 0, k.head)
    return sorted(results, key=sort_key)


@pytest.mark.parametrize('seed', range(5))
def test_keys_are_ordered_as_the_tables_order_them(seed):
    results = [r for r in _random_keys(seed) if not any(v != v for v in r.key.slice_values)]
    slices = [SPECS[2], (), SPECS[1]]
    order = KeyColumns.from_results(results).order(slices)
    got = [results[i] for i in order.tolist()]
    # Ties between distinct but equal-ordering values (1 and True) may fall either way; compare
    # the sort keys.
    def sort_key(r):
        k = r.key
        return (slices.index(tuple(k.slice_columns)), values_order(k.slice_values),
                k.window_start or 0, k.step or 0, k.head)
    assert [sort_key(r) for r in got] == [sort_key(r) for r in
                                          _reference_order(results, slices)]


@pytest.mark.parametrize('seed', range(5))
def test_min_slice_size_leaves_out_whole_small_slices_but_never_overall(seed):
    results = _random_keys(seed)
    size: dict[tuple, int] = {}
    for r in results:
        size[_slice(r)] = max(size.get(_slice(r), 0), r.example_count)
    small = {s for s, n in size.items() if s[0] and n < 5}
    expected_keep = [_slice(r) not in small for r in results]
    expected_out: dict[str, dict[str, int]] = {}
    for s in small:
        e = expected_out.setdefault('_X_'.join(s[0]), {'slices': 0, 'rows': 0})
        e['slices'] += 1
        e['rows'] += size[s]
    keep, left_out = KeyColumns.from_results(results).small_slices(5)
    assert keep.tolist() == expected_keep
    assert left_out == dict(sorted(expected_out.items()))


@pytest.mark.parametrize('seed', range(5))
def test_the_multi_head_loss_is_the_weighted_sum_over_slices_holding_every_head(seed):
    results = _random_keys(seed)
    weights = [0.25, 2.0]
    by_slice: dict[tuple, dict[int, KeyResult]] = {}
    for r in results:
        by_slice.setdefault(_slice(r), {})[r.key.head] = r
    expected = {}
    for s, heads in by_slice.items():
        if len(heads) == 2:
            ws = [heads[h].weighted_example_count for h in (0, 1)]
            agree = None not in ws and ws[0] == ws[1]
            expected[s] = (0.25 * heads[0].loss + 2.0 * heads[1].loss, heads[0].example_count,
                           ws[0] if agree else None)
    multi, at = KeyColumns.from_results(results).multi_head(weights)
    got = {}
    for i in range(len(multi)):
        s = _slice(results[int(at[i])])
        got[s] = (float(multi.loss[i]), int(multi.example_count[i]),
                  None if multi.weighted_null[i] else float(multi.weighted[i]))
        assert multi.head[i] == 2
    assert got.keys() == expected.keys()
    for s in expected:
        assert got[s][0] == pytest.approx(expected[s][0], rel=1e-12)
        assert got[s][1:] == expected[s][1:]


@pytest.mark.parametrize('seed,limit', [(0, 1), (1, 2), (2, 0), (3, 3)])
def test_plots_stay_with_overall_and_the_largest_slices_of_each_spec_window_and_step(seed, limit):
    results = [r for r in _random_keys(seed) if not any(v != v for v in r.key.slice_values)]
    slices = list(SPECS)
    results = _reference_order(results, slices)
    units: list[tuple] = []
    for r in results:
        if _slice(r) not in units:
            units.append(_slice(r))
    size = {u: max(r.example_count for r in results if _slice(r) == u) for u in units}
    kept = set()
    for group in {(u[0], u[2], u[3]) for u in units}:
        members = [u for u in units if (u[0], u[2], u[3]) == group]
        members.sort(key=lambda u: (-size[u], units.index(u)))
        kept |= set(members if not group[0] else members[:limit])
    keep, without = KeyColumns.from_results(results).plot_limit(limit)
    assert keep.tolist() == [_slice(r) in kept for r in results]
    lost: dict[str, int] = {}
    for u in units:
        if u not in kept:
            lost['_X_'.join(u[0])] = lost.get('_X_'.join(u[0]), 0) + 1
    assert without == dict(sorted(lost.items()))


def test_nan_values_of_one_slice_make_one_slice_whatever_their_objects():
    a = KeyResult(Key(('x',), (float('nan'),), 0, None, None), [], 3, 1.0, 0.0, {})
    b = KeyResult(Key(('x',), (float('nan'),), 1, None, None), [], 9, 1.0, 0.0, {})
    keys = KeyColumns.from_results([a, b])
    assert keys.spec_counts() == {'x': 1}
    assert keys.small_slices(5)[0].tolist() == [True, True]  # one slice of 9 rows


CONFIG = parse_config({
    'input': {'pattern': 'x.parquet'}, 'output': '/tmp/unused',
    'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click'}, 'logits': 'a',
               'labels': 'b'},
              {'type': 'BinaryClassHead', 'args': {'name': 'buy'}, 'logits': 'c', 'labels': 'd'}],
    'slices': [[], ['user']]})
NAMES = ('auc', 'accuracy', 'loss')


def _pack_and_results(head: int) -> tuple[ResultsPack, list[KeyResult]]:
    rng = np.random.default_rng(head)
    k = 50
    # The same users for both heads (in another order), so each has a MultiHead loss.
    keys = [((int(v),), None, None) for v in rng.permutation(np.arange(0, 2000, 40))]
    values = rng.normal(size=(k, len(NAMES), 3))
    values[rng.random((k, len(NAMES), 3)) < 0.2] = np.nan
    counts = rng.integers(1, 20, k)
    weighted = rng.random(k) * 10
    pack = ResultsPack(('user',), head, keys, NAMES, values, counts, weighted, {}, [])
    results = []
    for i, (vals, w, s) in enumerate(keys):
        rows = MetricRows([(NAMES[j],) + tuple(None if math.isnan(x) and c else float(x)
                                                for c, x in enumerate(values[i, j]))
                           for j in range(len(NAMES))])
        results.append(KeyResult(Key(('user',), vals, head, w, s), rows, int(counts[i]),
                                 float(weighted[i]), float(values[i, -1, 0]), {}))
    return pack, results


def test_a_run_built_from_packs_equals_one_built_from_a_key_result_per_key(tmp_path):
    packs, results = zip(*(_pack_and_results(h) for h in (0, 1)))
    overall = [KeyResult(Key((), (), h, None, None), MetricRows([('loss', 0.5, None, None)]),
                         100, 50.0, 0.5, {}) for h in (0, 1)]
    expected, _ = build_tables(CONFIG, [r for rs in results for r in rs] + overall, 'r', AT)
    frame = ResultsFrame.concat([ResultsFrame.from_pack(p) for p in packs]
                                + [ResultsFrame.from_results(overall)])
    frame = frame.with_multi_head(None, 2)
    frame = frame.take(frame.keys.order(CONFIG.slices))
    ids = table_ids(CONFIG, 'r', AT)
    m_schema = schema.METRICS
    plain = frame.metrics_table(m_schema, ids)
    coded = frame.metrics_table(m_schema, ids, dictionary=True)
    assert plain.num_rows == 2 * 50 * 3 + 2 + 51  # + Overall's rows and the MultiHead losses
    assert _same(plain, expected)
    assert pa.types.is_dictionary(coded.schema.field('slice').type)
    assert _same(coded.cast(m_schema), expected)
    write_table(plain, str(tmp_path / 'a.parquet'))
    write_table(coded, str(tmp_path / 'b.parquet'), m_schema)
    a, b = pq.read_table(tmp_path / 'a.parquet'), pq.read_table(tmp_path / 'b.parquet')
    assert _same(a, b) and _same(a, expected)


def _same(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and cells (NaN equal to NaN; null only to null)."""
    def cells(t, c):
        return [('nan',) if isinstance(x, float) and x != x else x
                for x in t.column(c).to_pylist()]
    return a.schema.equals(b.schema) and all(cells(a, c) == cells(b, c) for c in a.column_names)


@pytest.mark.parametrize('large', [None, 1])
def test_dictionary_columns_write_as_the_schema_says(tmp_path, monkeypatch, large):
    """A table whose text columns are dictionaries (nulls included) is written as `table_schema`:
    read back with string columns, the window and step columns' types, the same cells (also
    when its dictionaries count as large: written without Parquet's dictionary pages)."""
    if large is not None:
        monkeypatch.setattr(parquet_writer, 'LARGE_DICTIONARY', large)
    m_schema = schema.with_extras(schema.METRICS, True, True)
    n = 7
    texts = pa.array(['a', 'b', None, 'a', 'c', 'b', 'a'], pa.string())
    cells = {}
    for f in m_schema:
        if f.type == pa.string():
            cells[f.name] = texts if f.nullable else texts.fill_null('z')
        elif f.type == schema.TIMESTAMP:
            cells[f.name] = pa.array([1_700_000_000_000_000 + j for j in range(n)],
                                     pa.int64()).cast(f.type)
        elif f.type == pa.int64():
            cells[f.name] = pa.array([j if j % 3 else None for j in range(n)], pa.int64())
        else:
            cells[f.name] = pa.array([0.5 * j if j % 2 else None for j in range(n)], f.type)
    plain = pa.Table.from_pydict(cells, schema=m_schema)
    coded = pa.table({name: c.dictionary_encode() if c.type == pa.string() else c
                      for name, c in zip(plain.column_names, plain.columns)})
    write_table(coded, str(tmp_path / 'coded.parquet'), m_schema)
    back = pq.read_table(tmp_path / 'coded.parquet')
    assert back.schema.equals(m_schema)
    assert _same(back, plain)
