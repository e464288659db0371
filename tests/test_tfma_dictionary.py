"""The TFMA writer on a metrics table whose text columns are dictionaries (as `WriteRun` hands it
over) writes the same bytes as on the same table with plain string columns: every file of
`tfma/`, compared byte for byte, with dictionaries that are shuffled, hold repeated and unused
entries and differ between the table's chunks; the metrics records are also checked against the
message-by-message build (`tfma_protos.metrics_records_by_message`) of the string table, and the
refusals (undeclared head or slice, a repeated metric) name the same row.
"""
from __future__ import annotations

import datetime
import math
import os

import numpy as np
import pyarrow as pa
import pytest

from pipeline import schema
from pipeline.writers import tfma as tfma_writer
from pipeline.writers import tfma_metric_bytes, tfma_protos, tfma_slice_keys

SLICES = [[], ['user'], ['country', 'device'], ['device', 'country']]
HEADS = ['click', 'buy']
AT = datetime.datetime(2026, 11, 23, 9, 0, tzinfo=datetime.timezone.utc)
TEXT = ('run_id', 'slice', 'slice_columns', 'slice_values', 'head', 'metric', 'model')
METRICS = ('auc', 'loss', 'auc/class1', 'accuracy', 'example_count')


def _rows(n_users: int, seed: int, steps: bool) -> list[dict]:
    rng = np.random.default_rng(seed)
    specials = [0.0, -0.0, math.nan, None, 1.0]
    keys = [('', '')] + [('user', str(u)) for u in range(n_users)] + [
        ('user', '0%d' % u) for u in range(3)] + [
        ('country_X_device', 'US_X_mobile'), ('device_X_country', 'mobile_X_US'),
        ('country_X_device', 'DE_X_tv')]
    out = []
    for step in ((100, 200) if steps else (None,)):
        for c, v in keys:
            count = int(rng.integers(0, 50))
            for head in HEADS:
                for metric in METRICS[:int(rng.integers(1, len(METRICS) + 1))]:
                    def pick():
                        return (specials[rng.integers(len(specials))] if rng.random() < 0.2
                                else float(rng.normal()))
                    out.append({'slice_columns': c, 'slice_values': v, 'head': head,
                                'metric': metric, 'value': pick(), 'lower_bound': pick(),
                                'upper_bound': pick(), 'example_count': count,
                                'weighted_example_count': pick(), 'step': step,
                                'ci_lower': pick() if rng.random() < 0.3 else None,
                                'ci_upper': pick(), 'standard_error': pick()})
    order = rng.permutation(len(out)) if seed % 2 else np.arange(len(out))
    return [out[i] for i in order.tolist()]


def _string_table(rows: list[dict], steps: bool) -> pa.Table:
    table_schema = schema.with_extras(schema.METRICS, stepped=steps)
    n = len(rows)
    cols = {name: [r.get(name) for r in rows] for name in table_schema.names}
    cols['run_id'] = ['r'] * n
    cols['evaluated_at'] = [AT] * n
    cols['model'] = ['candidate'] * n
    cols['slice'] = [schema.OVERALL if not r['slice_columns'] else
                     r['slice_columns'] + ':' + r['slice_values'] for r in rows]
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in table_schema},
                    schema=table_schema)


def _odd_dictionary(values: pa.Array, rng: np.random.Generator) -> pa.DictionaryArray:
    """`values` as a dictionary array whose dictionary is shuffled and holds each value once or
    twice (rows pointing at either copy) and some values no row has."""
    distinct = list(dict.fromkeys(values.to_pylist()))
    entries = distinct + [d for d in distinct if rng.random() < 0.5] + ['unused-1', 'unused-2']
    entries = [entries[i] for i in rng.permutation(len(entries)).tolist()]
    where: dict[str, list[int]] = {}
    for j, e in enumerate(entries):
        where.setdefault(e, []).append(j)
    codes = [where[v][int(rng.integers(len(where[v])))] for v in values.to_pylist()]
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()),
                                          pa.array(entries, pa.string()))


def _dictionary_table(table: pa.Table, seed: int, chunks: int = 2) -> pa.Table:
    """The table with its text columns as dictionaries, in `chunks` chunks of their own
    dictionaries."""
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, table.num_rows, chunks + 1).astype(int)
    fields = [pa.field(f.name, pa.dictionary(pa.int32(), pa.string()) if f.name in TEXT
                       else f.type, f.nullable) for f in table.schema]
    batches = []
    for a, b in zip(bounds, bounds[1:]):
        part = table.slice(a, b - a)
        arrays = [_odd_dictionary(part.column(f.name).combine_chunks(), rng) if f.name in TEXT
                  else part.column(f.name).combine_chunks() for f in table.schema]
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)))
    out = pa.Table.from_batches(batches, schema=pa.schema(fields))
    assert pa.types.is_dictionary(out.schema.field('slice_values').type)
    for name in TEXT:  # the same texts
        assert out.column(name).cast(pa.string()).equals(table.column(name))
    return out


def _files(root: str) -> dict[str, bytes]:
    out = {}
    for d, _, names in os.walk(root):
        for name in names:
            path = os.path.join(d, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def _records(path: str) -> list[bytes]:
    data = open(path, 'rb').read()
    out, at = [], 0
    while at < len(data):
        n = int.from_bytes(data[at:at + 8], 'little')
        out.append(data[at + 12:at + 12 + n])
        at += 16 + n
    return out


@pytest.mark.parametrize('seed,steps,chunk_rows', [
    (1, False, None), (2, False, 37), (3, True, None), (4, True, 29), (5, False, 1)])
def test_dictionary_columns_write_the_same_bytes_as_strings(tmp_path, monkeypatch, seed, steps,
                                                            chunk_rows):
    if chunk_rows is not None:  # records assembled a few rows at a time
        monkeypatch.setattr(tfma_metric_bytes, 'CHUNK_ROWS', chunk_rows)
    strings = _string_table(_rows(40, seed, steps), steps)
    coded = _dictionary_table(strings, seed)
    empty_plots = schema.PLOTS.empty_table()
    typed = {('user', str(u)): (u,) for u in range(0, 40, 2)}  # typed ints for half the users
    a, b = str(tmp_path / 'strings'), str(tmp_path / 'dictionary')
    tfma_writer.write_tfma(a, strings, empty_plots, SLICES, HEADS, typed)
    tfma_writer.write_tfma(b, coded, empty_plots, SLICES, HEADS, typed)
    want, got = _files(a), _files(b)
    assert sorted(got) == sorted(want)
    assert len(want) == (9 if steps else 3)
    for name in want:
        assert got[name] == want[name], name
    # ... and the records are the messages protobuf builds from the string rows.
    step = strings.column('step').to_pylist() if steps else [None] * strings.num_rows
    last = max(s for s in step if s is not None) if steps else None
    rows = [i for i, s in enumerate(step) if s == last]
    reference = tfma_protos.metrics_records_by_message(strings, rows, SLICES, HEADS, typed)
    assert _records(os.path.join(b, 'tfma', tfma_writer.METRICS_FILE)) == reference


def test_records_of_a_dictionary_table_equal_the_message_build_on_a_subset_of_rows():
    strings = _string_table(_rows(30, 7, False), False)
    coded = _dictionary_table(strings, 7, chunks=3)
    rows = np.random.default_rng(0).permutation(strings.num_rows)[:200].tolist()
    want = tfma_protos.metrics_records_by_message(strings, rows, SLICES, HEADS, None)
    assert tfma_protos.metrics_records(coded, rows, SLICES, HEADS, None) == want


@pytest.mark.parametrize('change,message', [
    ({'head': 'nope'}, 'metrics row 57: head'),
    ({'slice_columns': 'city', 'slice_values': 'x'}, 'slice columns'),
    ({'slice_columns': 'user', 'slice_values': 'a_X_b'}, 'one value per column')])
def test_dictionary_tables_are_refused_as_string_tables_are(tmp_path, change, message):
    rows = _rows(10, 8, False)
    rows[57] = dict(rows[57], **change)
    rows[90] = dict(rows[90], head='other')
    strings = _string_table(rows, False)
    errors = []
    for table in (strings, _dictionary_table(strings, 8)):
        with pytest.raises(ValueError) as e:
            tfma_writer.write_tfma(str(tmp_path), table, schema.PLOTS.empty_table(), SLICES,
                                   HEADS)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and message in errors[0]


def test_a_repeated_metric_is_refused_in_a_dictionary_table(tmp_path):
    rows = _rows(10, 9, False)
    rows.append(dict(rows[3]))
    strings = _string_table(rows, False)
    errors = []
    for table in (strings, _dictionary_table(strings, 9)):
        with pytest.raises(ValueError, match='appears twice') as e:
            tfma_writer.write_tfma(str(tmp_path), table, schema.PLOTS.empty_table(), SLICES,
                                   HEADS)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and 'row %d' % (len(rows) - 1) in errors[0]


def test_column_codes_give_one_code_per_distinct_text_whatever_the_dictionary():
    rng = np.random.default_rng(3)
    texts = [['a', 'b', 'a', None, 'c', 'b'], ['c', 'd', None, 'a']]
    chunks = [_odd_dictionary(pa.array([t for t in part if t is not None], pa.string()), rng)
              for part in texts]
    # nulls put back in: a null index
    with_nulls = []
    for part, chunk in zip(texts, chunks):
        codes = iter(chunk.indices.to_pylist())
        with_nulls.append(pa.DictionaryArray.from_arrays(
            pa.array([None if t is None else next(codes) for t in part], pa.int32()),
            chunk.dictionary))
    for column, flat in ((pa.chunked_array(with_nulls), texts[0] + texts[1]),
                         (with_nulls[0], texts[0]),  # one chunk: its dictionary as it is
                         (pa.chunked_array([pa.array(p, pa.string()) for p in texts]),
                          texts[0] + texts[1])):
        codes, values = tfma_slice_keys.column_codes(column)
        values = values.to_pylist()
        assert len(set(values)) == len(values)
        assert [None if c == len(values) else values[c] for c in codes.tolist()] == flat
