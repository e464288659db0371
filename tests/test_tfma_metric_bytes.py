"""The TFMA metrics records assembled as bytes (`tfma_metric_bytes`) are byte for byte the
messages protobuf serializes for the same rows (`tfma_protos.metrics_records_by_message`, which
test_writer_tfma.py checks against TFMA's own loaders) — on rows with every value layout: +0.0
and -0.0, NaN, nulls, bounds, intervals with and without a standard error, per-class metrics,
several heads (out of order), a head with its own `example_count`, null counts, Overall, and two
slice specs naming the same TFMA slice key.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import pyarrow as pa

from pipeline import schema
from pipeline.writers import tfma_protos

SLICES = [[], ['country'], ['country', 'device'], ['device', 'country'], ['age']]
HEADS = ['click', 'buy', 'click_buy']

# (slice_columns, slice_values, head, metric, value, lower, upper, count, weighted,
#  ci_lower, ci_upper, standard_error)
ROWS = [
    ('', '', 'buy', 'auc/class2', 0.5, None, None, 10, 10.0, None, None, None),
    ('', '', 'click', 'auc', 0.75, 0.74, 0.76, 10, 12.5, 0.7, 0.8, 0.02),
    ('', '', 'click', 'loss', 0.0, None, None, 10, 12.5, 0.0, 0.1, None),
    ('', '', 'click', 'precision', -0.0, 0.0, -0.0, 10, 12.5, None, None, None),
    ('', '', 'buy', 'auc/class0', math.nan, None, None, 10, 10.0, None, 0.2, 0.1),
    ('', '', 'click_buy', 'loss', None, None, None, 10, None, None, None, None),
    ('country', 'US', 'click', 'auc', 1.0, 1.0, 1.0, 4, 5.0, 0.0, 1.0, 0.0),
    ('country', 'US', 'click', 'example_count', 4.0, None, None, 4, 5.0, None, None, None),
    ('country', 'US', 'buy', 'loss', math.inf, None, 2.0, None, 0.0, None, None, None),
    ('country_X_device', 'US_X_mobile', 'click', 'loss', 0.0625, None, None, 2, 2.0, None,
     None, None),
    ('device_X_country', 'mobile_X_US', 'buy', 'loss', 0.5, None, None, 2, 2.0, None, None,
     None),
    ('age', '30', 'buy', 'auc', 0.25, None, None, 0, 3.0, None, None, None),
    ('age', '030', 'buy', 'auc', 0.125, None, None, 1, -0.0, None, None, None),
]
NAMES = ('slice_columns', 'slice_values', 'head', 'metric', 'value', 'lower_bound',
         'upper_bound', 'example_count', 'weighted_example_count', 'ci_lower', 'ci_upper',
         'standard_error')


def _table(rows) -> pa.Table:
    cols = {name: [r[j] for r in rows] for j, name in enumerate(NAMES)}
    n = len(rows)
    cols.update(run_id=['r'] * n, evaluated_at=[None] * n, model=['candidate'] * n,
                slice=[c + ':' + v for c, v in zip(cols['slice_columns'],
                                                   cols['slice_values'])])
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in schema.METRICS},
                    schema=schema.METRICS)


def _both(table, rows, typed=None):
    want = tfma_protos.metrics_records_by_message(table, rows, SLICES, HEADS, typed)
    got = tfma_protos.metrics_records(table, rows, SLICES, HEADS, typed)
    return got, want


def test_every_value_layout_encodes_as_protobuf_serializes_it():
    table = _table(ROWS)
    got, want = _both(table, list(range(len(ROWS))))
    assert len(want) == 5  # Overall, US, US×mobile (both specs), age 30, age "030"
    assert got == want


def test_a_subset_of_rows_in_any_order_and_typed_values():
    table = _table(ROWS)
    rows = [12, 3, 0, 7, 6, 1, 10, 9]
    got, want = _both(table, rows, typed={('age', '030'): (30,)})
    assert got == want
    assert _both(table, [])[0] == []


def test_many_random_rows_encode_as_protobuf_serializes_them():
    rng = np.random.default_rng(7)
    rows = []
    specials = [0.0, -0.0, math.nan, 1.0, None, 0.5]
    for i in range(400):
        pick = lambda: (specials[rng.integers(len(specials))] if rng.random() < 0.3
                        else float(rng.normal()))
        c = ('', 'country', 'age')[i % 3]
        v = '' if not c else str(rng.integers(0, 40))
        rows.append((c, v, HEADS[rng.integers(3)], ('auc', 'loss', 'auc/class1', 'mean')[i % 4],
                     pick(), pick(), pick(), int(rng.integers(0, 5)), pick(), pick(), pick(),
                     pick()))
    table = _table(rows)
    got, want = _both(table, list(range(len(rows))))
    assert got == want


def test_the_writers_slice_keys_are_tfmas_sorted_typed_keys():
    from pipeline.writers.tfma import _SliceKeys
    typed = {('device_X_country', 'mobile_X_US'): ('mobile', 'US'), ('age', '30'): (30,),
             ('age', '31'): (31,), ('country_X_device', 'DE_X_tv'): ('DE', 'tv')}
    keys = _SliceKeys(SLICES, typed)
    for columns, values, want in [
            ('', '', ()), ('age', '30', (('age', 30),)), ('age', '31', (('age', 31),)),
            ('age', '030', (('age', '030'),)),
            ('device_X_country', 'mobile_X_US', (('country', 'US'), ('device', 'mobile'))),
            ('country_X_device', 'DE_X_tv', (('country', 'DE'), ('device', 'tv'))),
            ('country_X_device', 'FR_X_pc', (('country', 'FR'), ('device', 'pc')))]:
        assert keys(columns, values) == want
        assert keys(columns, values) == want  # made once, the same again


def test_records_assembled_a_few_rows_at_a_time_are_the_same(monkeypatch):
    from pipeline.writers import tfma_metric_bytes
    table = _table(ROWS)
    rows = list(range(len(ROWS)))
    whole = tfma_protos.metrics_records(table, rows, SLICES, HEADS, None)
    for chunk in (1, 3, 5):
        monkeypatch.setattr(tfma_metric_bytes, 'CHUNK_ROWS', chunk)
        assert tfma_protos.metrics_records(table, rows, SLICES, HEADS, None) == whole
        shuffled = [9, 0, 6, 10, 1, 7, 2, 8, 3, 4, 5, 11, 12]  # every row, slices' rows apart
        want = tfma_protos.metrics_records_by_message(table, shuffled, SLICES, HEADS, None)
        assert tfma_protos.metrics_records(table, shuffled, SLICES, HEADS, None) == want


def test_slice_keys_encode_as_protobuf_serializes_them():
    from pipeline.writers.tfma_slice_keys import _slice_key_bytes
    for key in [(), (('age', 0),), (('age', -5),), (('age', 2 ** 63 - 1),), (('age', -2 ** 63),),
                (('country', ''),), (('', 'x'),), (('city', 'Zürich'),), (('b', b'\x00\xff'),),
                (('a', 1), ('b', 'x' * 300)), (('price', 2.5),), (('flag', True),)]:
        assert _slice_key_bytes(key) == tfma_protos.slice_key_proto(key).SerializeToString()


def test_int_slice_key_fields_encode_as_protobuf_serializes_them():
    from pipeline.writers.tfma_slice_keys import field as _field, int_slice_fields
    values = [0, 1, -1, 127, 128, 300, 2 ** 31, -2 ** 31, 2 ** 62 + 5, 2 ** 63 - 1, -2 ** 63,
              16383, 16384, -129] + np.random.default_rng(1).integers(
                  -2 ** 63, 2 ** 63 - 1, 200, dtype=np.int64).tolist()
    for column in ('user', '', 'ü' * 40):
        got = int_slice_fields(column, np.asarray(values, np.int64))
        want = [_field(1, tfma_protos.slice_key_proto(((column, v),)).SerializeToString())
                for v in values]
        assert got == want
    # Through the index: a long column name (two-byte lengths) and a float beside the ints.
    import pyarrow as pa
    from pipeline.writers.tfma_slice_keys import SliceIndex
    cells = [('c' * 120, '5'), ('user', '7'), ('user', '2.5'), ('', ''), ('a_X_b', '1_X_2')]
    typed = {cells[0]: (5,), cells[1]: (7,), cells[2]: (2.5,), cells[4]: (1, 2)}
    keys = [(('c' * 120, 5),), (('user', 7),), (('user', 2.5),), (), (('a', 1), ('b', 2))]
    table = pa.table({'slice_columns': [c for c, _ in cells],
                      'slice_values': [v for _, v in cells]})
    index = SliceIndex(table, [[], ['c' * 120], ['user'], ['a', 'b']], typed,
                       tfma_protos.slice_key)
    assert index.bad is None and index.group.tolist() == [0, 1, 2, 3, 4]
    assert index.fields == [
        _field(1, tfma_protos.slice_key_proto(k).SerializeToString()) for k in keys]


@pytest.mark.parametrize('space', [10, 1000, 1 << 23, 1 << 30])
def test_first_rows_numbers_values_by_first_appearance(space):
    """Both ways (a dense table for a small code space, a sort for a large one) against a loop."""
    from pipeline.writers.tfma_slice_keys import _first_rows
    rng = np.random.default_rng(space % 97)
    for n in (0, 1, 50, 5000):
        codes = rng.integers(0, min(space, 3000), n)
        distinct, place = _first_rows(codes, space)
        seen: list[int] = []
        for c in codes.tolist():
            if c not in seen:
                seen.append(c)
        assert distinct.tolist() == seen
        assert place.tolist() == [seen.index(c) for c in codes.tolist()]
