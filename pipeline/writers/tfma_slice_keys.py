"""The TFMA metrics file's slices: which rows are one TFMA slice, and each slice's `SliceKey`
field as bytes.

A metrics table's text columns are worked on as codes (`column_codes`: a dictionary column's own
indices, any other column dictionary-encoded). `SliceIndex` makes each distinct (slice_columns,
slice_values) pair's TFMA slice key once, numbers the table's rows by slice in order of first row,
and keeps the first row a declared slice refuses. The `slice_key` fields are encoded as protobuf
encodes them (`SingleSliceKey`s: column, then a text or int64 value; floats by protobuf itself),
the many int keys of one column at once with numpy (`int_slice_fields`).
`pipeline/writers/tfma_metric_bytes.py` assembles the records around these fields.
"""
from __future__ import annotations

import array
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.writers import tfma_protos as protos

_PAIRS_CHUNK = 65_536  # distinct slices whose texts are read at a time


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def field(number: int, body: bytes) -> bytes:
    """A length-delimited field (a message) `number` holding `body`."""
    return varint(number << 3 | 2) + varint(len(body)) + body


def column_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """A text column as int32 codes into its distinct values (null: `len(values)`) and those
    values: a dictionary column's own indices (its dictionary deduplicated), any other column
    dictionary-encoded. The values are in the dictionary's order (first appearance when
    encoded here)."""
    if isinstance(column, pa.ChunkedArray):
        column = (column.chunk(0) if column.num_chunks == 1 else
                  column.combine_chunks() if column.num_chunks else pa.array([], column.type))
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    values, indices = column.dictionary, column.indices
    n = len(values)
    if indices.null_count:
        indices = indices.fill_null(n)
    codes = indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    unique = values.dictionary_encode()
    if len(unique.dictionary) < n or unique.indices.null_count:  # repeated or null entries
        m = len(unique.dictionary)
        remap = np.append(unique.indices.fill_null(m).to_numpy(zero_copy_only=False), m)
        codes, values = remap.astype(np.int32)[codes], unique.dictionary
    return codes, values


def text_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """Codes into a column's distinct values and those values (a list; null: a last None)."""
    codes, values = column_codes(column)
    return codes, values.to_pylist() + [None]


def first_of(codes: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `codes` (ints in [0, space)) and the first row of each, by first
    row (a dense table when `space` is small, else a sort)."""
    n = len(codes)
    if space <= max(4 * n, 1 << 22):
        first = np.full(space, n, np.int64)
        first[codes[::-1]] = np.arange(n - 1, -1, -1, dtype=np.int64)  # the last write: first row
        distinct = np.flatnonzero(first < n)
        rows = first[distinct]
    else:
        distinct, rows = np.unique(codes, return_index=True)
    by_first = np.argsort(rows, kind='stable')
    return distinct[by_first], rows[by_first]


def _first_rows(codes: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of `codes` (ints in [0, space)) in order of first appearance
    (`first_of`), and each row's place in that order (int32)."""
    distinct, _ = first_of(codes, space)
    if space <= max(4 * len(codes), 1 << 22):
        place = np.empty(space, np.int32)
        place[distinct] = np.arange(len(distinct), dtype=np.int32)
        return distinct, place[codes]
    by_value = np.argsort(distinct).astype(np.int32)  # k-th smallest value: its place
    return distinct, by_value[np.searchsorted(distinct[by_value], codes)]


_REFUSED = object()  # the key of a slice `slice_key` refuses


class SliceIndex:
    """A metrics table's rows by TFMA slice: each row's slice (`group`, int32, numbered in order
    of first row) and each slice's `slice_key` field bytes (`fields`), made once per distinct
    (slice_columns, slice_values) on codes. `bad`: the (row, error) of the first row whose slice
    `slice_key` refuses (None when every slice is declared)."""

    def __init__(self, table: pa.Table, slices: Sequence[Sequence[str]],
                 typed: protos.TypedValues | None, slice_key: Callable) -> None:
        self.bad: tuple[int, Exception] | None = None
        if table.num_rows == 0:
            self.group, self.fields = np.empty(0, np.int32), []
            return
        columns, column_names = column_codes(table.column('slice_columns'))
        values, value_names = column_codes(table.column('slice_values'))
        width = len(value_names) + 1
        pair = columns.astype(np.int64) * width + values
        del columns, values
        distinct, pair_of_row = _first_rows(pair, (len(column_names) + 1) * width)
        del pair
        spec_names = column_names.to_pylist() + [None]
        # Keys of one column and an int64 value (the many slices of an integer column) are
        # kept as arrays (column, value, pair), any other key in a dict: no tuple a slice.
        int_columns: dict[str, int] = {}
        int_keys: list[list[np.ndarray]] = [[], [], []]  # column, value, pair: parsed at once
        one_int = [array.array('q') for _ in range(3)]  # and those made one at a time
        other: dict[tuple, int] = {}  # key → its first pair
        other_of_pair = np.full(len(distinct), -1, np.int64)  # its key's first pair; -1: int
        fast = _int_spec_codes(spec_names, slices, typed)
        for a in range(0, len(distinct), _PAIRS_CHUNK):
            part = distinct[a:a + _PAIRS_CHUNK]
            value_of = part % width
            null = value_of == width - 1
            spec_of = part // width
            slow = np.ones(len(part), bool)
            if fast:  # an int spec's values parsed at once: ((column, int(text)),) each
                at = np.flatnonzero(np.isin(spec_of, list(fast)) & ~null)
                ints, ok = _decimal_ints(value_names.take(pa.array(value_of[at])))
                at, ints = at[ok], ints[ok]
                slow[at] = False
                for c in np.unique(spec_of[at]).tolist():
                    mine = spec_of[at] == c
                    int_keys[0].append(np.full(int(mine.sum()), int_columns.setdefault(
                        fast[c], len(int_columns)), np.int64))
                    int_keys[1].append(ints[mine])
                    int_keys[2].append(a + at[mine])
            at = np.flatnonzero(slow)
            texts = value_names.take(pa.array(np.where(null[at], 0, value_of[at]))).to_pylist() \
                if width > 1 else [None] * len(at)
            for j in np.flatnonzero(null[at]).tolist():
                texts[j] = None
            for p, c, text in zip((a + at).tolist(), spec_of[at].tolist(), texts):
                try:
                    key = slice_key(spec_names[c], text, slices, typed)
                except ValueError as e:
                    if self.bad is None:
                        self.bad = (self._first_row(pair_of_row, p), e)
                    key = (_REFUSED, p)
                if len(key) == 1 and type(key[0][1]) is int and -2 ** 63 <= key[0][1] < 2 ** 63 \
                        and key[0][0] is not _REFUSED:
                    one_int[0].append(int_columns.setdefault(key[0][0], len(int_columns)))
                    one_int[1].append(key[0][1])
                    one_int[2].append(p)
                else:
                    other_of_pair[p] = other.setdefault(key, p)
        # Each distinct key's first pair; the keys numbered in that order.
        first_pair = other_of_pair
        columns_of, values_of, pairs_of = (
            np.concatenate(k + [np.frombuffer(one, np.int64)] if len(one) else k + [
                np.empty(0, np.int64)]) for k, one in zip(int_keys, one_int))
        if len(pairs_of):
            order = np.lexsort((pairs_of, values_of, columns_of))
            starts = np.ones(len(order), bool)
            starts[1:] = ((columns_of[order][1:] != columns_of[order][:-1])
                          | (values_of[order][1:] != values_of[order][:-1]))
            first = pairs_of[order][starts]  # each distinct int key's first pair
            first_pair[pairs_of[order]] = np.repeat(first, np.diff(
                np.append(np.flatnonzero(starts), len(order))))
        key_pairs = np.unique(first_pair)  # each distinct key by its first pair, in order
        group_of_pair = np.searchsorted(key_pairs, first_pair).astype(np.int32)
        self.group = group_of_pair[pair_of_row]
        del pair_of_row
        fields: list[bytes] = [b''] * len(key_pairs)
        names = {i: c for c, i in int_columns.items()}
        at_int = np.full(len(distinct), -1, np.int64)
        at_int[pairs_of] = np.arange(len(pairs_of))
        int_groups = group_of_pair[key_pairs[at_int[key_pairs] >= 0]] if len(pairs_of) else []
        if len(pairs_of):
            firsts = at_int[key_pairs[at_int[key_pairs] >= 0]]
            for i, column in names.items():
                mine = columns_of[firsts] == i
                for g, encoded in zip(np.asarray(int_groups)[mine].tolist(), _int_fields(
                        column, values_of[firsts[mine]])):
                    fields[g] = encoded
        for key, p in other.items():
            if not (key and key[0] is _REFUSED):
                fields[int(group_of_pair[p])] = field(1, _slice_key_bytes(key))
        self.fields = fields

    @staticmethod
    def _first_row(pair_of_row: np.ndarray, p: int) -> int:
        return int(np.argmax(pair_of_row == p))

    def rows(self, positions: np.ndarray | None) -> tuple[np.ndarray, list[bytes]]:
        """The slices of the table's rows at `positions` (None: all), renumbered in order of
        first row among them, and their fields."""
        if positions is None:
            return self.group, self.fields
        groups, group = _first_rows(self.group[positions], max(len(self.fields), 1))
        return group, [self.fields[g] for g in groups.tolist()]


def _int_spec_codes(spec_names: list, slices: Sequence[Sequence[str]],
                    typed: protos.TypedValues | None) -> dict[int, str]:
    """{code: column} of the slice specs `slice_key` keys as ((column, int(text)),): one configured
    column whose values `typed` knows are all ints (`TypedValues.int_spec`); a mapping without
    that fact names none."""
    int_spec = getattr(typed, 'int_spec', None)
    if int_spec is None:
        return {}
    out = {}
    for c, name in enumerate(spec_names):
        if name is None or not int_spec(name):
            continue
        columns = schema.split_slice_parts(name)
        if len(columns) == 1 and any(list(spec) == columns for spec in slices):
            out[c] = columns[0]
    return out


_DECIMAL = r'^-?[0-9]{1,18}$'  # int(text) of any such text fits int64 and equals its cast


def _decimal_ints(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values, whether each text is a plain decimal of at most 18 digits, which `int`
    reads as that value); the others (0 in values) are left to `slice_key` one by one."""
    ok = pc.fill_null(pc.match_substring_regex(texts, _DECIMAL), False)
    values = pc.cast(pc.if_else(ok, texts, '0'), pa.int64())
    return (values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False),
            ok.to_numpy(zero_copy_only=False).astype(bool, copy=False))


def slice_groups(table: pa.Table, slices: Sequence[Sequence[str]],
                  typed: protos.TypedValues | None, slice_key: Callable
                  ) -> tuple[np.ndarray, list[bytes]]:
    """Each row's slice (an index, in order of first appearance of its TFMA slice key) and each
    slice's `slice_key` field bytes."""
    index = SliceIndex(table, slices, typed, slice_key)
    if index.bad is not None:
        raise index.bad[1]
    return index.group, index.fields


def _int_fields(column: str, values: np.ndarray) -> list[bytes]:
    """`int_slice_fields`, or protobuf's lengths of two bytes for a long column name."""
    if len(column.encode('utf-8')) >= 100:
        return [field(1, _slice_key_bytes(((column, v),))) for v in values.tolist()]
    return int_slice_fields(column, values)


def int_slice_fields(column: str, values: np.ndarray) -> list[bytes]:
    """The `slice_key` fields of the keys ((column, v),) for int64 `values` (a column name of
    fewer than 100 UTF-8 bytes): field 1 {SliceKey {SingleSliceKey {column, int64_value v}}},
    lengths one byte each, v a varint of its 64-bit two's complement."""
    name = column.encode('utf-8')
    prefix = field(1, name) if name else b''
    v = values.astype(np.int64).view(np.uint64)
    shifts = np.arange(10, dtype=np.uint64) * np.uint64(7)
    groups = (v[:, None] >> shifts) & np.uint64(0x7F)  # (n, 10) 7-bit groups, low first
    nv = 1 + ((v[:, None] >> shifts[1:]) != 0).sum(axis=1)
    more = np.arange(10) < (nv - 1)[:, None]
    varint = (groups | np.where(more, np.uint64(0x80), np.uint64(0))).astype(np.uint8)
    single = len(prefix) + 1 + nv  # SingleSliceKey's length
    head = np.empty((len(v), 5 + len(prefix)), np.uint8)
    head[:, 0] = 0x0A
    head[:, 1] = single + 2  # SliceKey: its one SingleSliceKey field
    head[:, 2] = 0x0A
    head[:, 3] = single
    head[:, 4:4 + len(prefix)] = np.frombuffer(prefix, np.uint8)
    head[:, 4 + len(prefix)] = 0x20  # int64_value, a varint
    rows = np.concatenate([head, varint], axis=1)
    total = head.shape[1] + nv
    data = rows[np.arange(rows.shape[1]) < total[:, None]].tobytes()
    ends = np.cumsum(total).tolist()
    return [data[a:b] for a, b in zip([0] + ends[:-1], ends)]


def _slice_key_bytes(key: tuple) -> bytes:
    """A serialized `SliceKey`, as `protos.slice_key_proto` serializes it: per column a
    `SingleSliceKey` {column (left out when ''), then its value: a oneof member, so written even
    when 0 or empty}. Text and int64 values are encoded here; any other (a float) by protobuf."""
    out = []
    for column, value in key:
        name = column.encode('utf-8')
        single = field(1, name) if name else b''
        if isinstance(value, str):
            single += field(2, value.encode('utf-8'))
        elif isinstance(value, bytes):
            single += field(2, value)
        elif isinstance(value, int) and -2 ** 63 <= value < 2 ** 63:
            single += b'\x20' + varint(value & 0xFFFFFFFFFFFFFFFF)
        else:
            return protos.slice_key_proto(key).SerializeToString()
        out.append(field(1, single))
    return b''.join(out)
