"""The TFMA writer's slice index reads the values of an integer slice column (a spec whose
values `TypedValues.int_spec` says are all ints) at once from their texts: it numbers the rows and
encodes the slice keys exactly as it does one slice at a time from a plain mapping of the same
typed values, including texts that `int` reads alike ('7', '007'), values too long for the
vectorised reading, null values, and a spec the config does not declare (refused at the same row
with the same message)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.writers import tfma_protos, tfma_slice_keys

SLICES = [[], ['user'], ['country']]


class IntSpecs(dict):
    """A typed mapping with the int-spec fact: the slices of `specs` are `(int(text),)`."""

    def __init__(self, specs: set[str], others: dict):
        super().__init__(others)
        self.specs = specs

    def int_spec(self, columns: str) -> bool:
        return columns in self.specs

    def get(self, key, default=None):
        if key[0] in self.specs:
            try:
                return (int(key[1]),)
            except (TypeError, ValueError):
                return default
        return super().get(key, default)


def _table(cells: list[tuple[str, str | None]]) -> pa.Table:
    return pa.table({'slice_columns': pa.array([c for c, _ in cells], pa.string()),
                     'slice_values': pa.array([v for _, v in cells], pa.string())})


def _both(cells, specs=frozenset({'user'})):
    others = {('country', 'US'): ('US',), ('country', 'DE'): ('DE',)}
    plain = dict(others)
    for c, v in cells:
        if c in specs and v is not None:
            try:
                plain[(c, v)] = (int(v),)
            except ValueError:
                pass
    table = _table(cells)
    fast = tfma_slice_keys.SliceIndex(table, SLICES, IntSpecs(set(specs), others),
                                      tfma_protos.slice_key)
    slow = tfma_slice_keys.SliceIndex(table, SLICES, plain, tfma_protos.slice_key)
    return fast, slow


def _reference(cells):
    """Each row's slice numbered by first appearance of its TFMA key, and each key's field as
    protobuf serializes the SliceKey message."""
    keys: dict[tuple, int] = {}
    group = []
    for c, v in cells:
        key = () if not c else ((c, int(v)) if c == 'user' else (c, v),)
        group.append(keys.setdefault(key, len(keys)))
    fields = []
    for key in keys:
        body = tfma_protos.slice_key_proto(key).SerializeToString()
        fields.append(b'\x0a' + bytes([len(body)]) + body)
    return np.asarray(group), fields


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_an_int_spec_read_at_once_equals_the_keys_made_one_by_one(seed):
    rng = np.random.default_rng(seed)
    values = ['0', '7', '007', '-5', '123456789012345678', '-9223372036854775808',
              '9223372036854775807', '42'] + [str(int(v)) for v in rng.integers(-10**6, 10**6, 300)]
    cells = [('', '')] + [('user', values[int(i)]) for i in rng.integers(0, len(values), 2000)] \
        + [('country', 'US'), ('country', 'DE')]
    cells = [cells[i] for i in rng.permutation(len(cells)).tolist()]
    fast, slow = _both(cells)
    group, fields = _reference(cells)
    assert fast.bad is None and slow.bad is None
    np.testing.assert_array_equal(fast.group, group)
    np.testing.assert_array_equal(slow.group, group)
    assert fast.fields == fields == slow.fields
    # '7' and '007' are one TFMA slice, as int() reads them.
    assert fast.group[cells.index(('user', '7'))] == fast.group[cells.index(('user', '007'))]


def test_null_values_and_undeclared_specs_take_the_one_by_one_way():
    cells = [('user', '3'), ('user', None), ('item', '5'), ('user', '4')]
    fast, slow = _both(cells, specs={'user', 'item'})
    np.testing.assert_array_equal(fast.group, slow.group)
    assert fast.fields == slow.fields
    assert fast.bad is not None and slow.bad is not None
    assert fast.bad[0] == slow.bad[0] and str(fast.bad[1]) == str(slow.bad[1])
    assert fast.bad[0] == 1  # the null value: no value per column


def test_texts_that_are_not_plain_decimals_are_left_to_slice_key():
    ints, ok = tfma_slice_keys._decimal_ints(pa.array(
        ['12', '-3', '+5', ' 5', '1_0', '1234567890123456789', 'x', None, '-0', '']))
    assert ok.tolist() == [True, True, False, False, False, False, False, False, True, False]
    assert ints[ok].tolist() == [12, -3, 0]
