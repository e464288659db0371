"""The TFMA metrics file's `MetricsForSlice` records assembled as bytes, every row at once.

Building one `MetricKeyAndValue` message per metrics row costs ~10 µs: at 100,000 slices (1.3M
rows) that is most of a run's writing. The records are instead assembled from bytes: each row's
`MetricKey` is one of a few (head, metric) keys, serialized once by protobuf; its value and
interval are `DoubleValue`s, each encoded as protobuf encodes it (a tag and 8 little-endian bytes;
nothing for +0.0, which proto3 leaves out). Rows with the same key and the same layout (which
bounds, which values are +0.0) encode to the same number of bytes, so each such kind is filled
column by column with numpy and scattered into one buffer in output order; a slice's record is
its `SliceKey` field followed by its rows' bytes. The result is byte for byte what serializing
the messages (tfma_protos.py's mapping) gives: fields in number order, each length a varint.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from pipeline.writers import tfma_protos as protos
from pipeline.writers.tfma_slice_keys import (SliceIndex, column_codes, field, slice_groups,
                                              text_codes, varint)

# MetricsForSlice.metric_keys_and_values is field 51 (a two-byte tag).
_KV_TAG = bytes([(51 << 3 | 2) & 0x7F | 0x80, (51 << 3 | 2) >> 7])
_SLICES_CHUNK = 200_000  # rows scattered at a time (bounds the index arrays' memory)
CHUNK_ROWS = 500_000  # metrics rows assembled at a time (whole slices)
# Row layouts: which interval a row carries (none; lower and upper; and a standard error).
NO_CI, BOUNDS, BOUNDS_SE = 0, 1, 2


def _metric_value(zero: bool) -> tuple[bytes, int | None]:
    """A `MetricValue` {double_value {value}}: its bytes with 8 placeholder bytes and where they
    are (None: the value is +0.0, which proto3 does not write)."""
    if zero:
        return field(1, b''), None
    return field(1, b'\x09' + bytes(8)), 3


def _layout(key: bytes, zeros: Sequence[bool], ci: int) -> tuple[bytes, list[int | None]]:
    """One kind of row: the bytes of `metric_keys_and_values` (tag, length, MetricKeyAndValue)
    with placeholders, and the offsets of its value, upper, lower and standard error (None where
    absent or +0.0)."""
    slots: list[int | None] = [None, None, None, None]
    body = bytearray(field(1, key))
    value, at = _metric_value(zeros[0])
    body += varint(2 << 3 | 2) + varint(len(value))
    slots[0] = None if at is None else len(body) + at
    body += value
    if ci != NO_CI:
        interval = bytearray()
        inner_slots = []
        for number, slot in ((1, 1), (2, 2), (3, 3))[:3 if ci == BOUNDS_SE else 2]:
            bound, at = _metric_value(zeros[slot])
            interval += varint(number << 3 | 2) + varint(len(bound))
            inner_slots.append((slot, None if at is None else len(interval) + at))
            interval += bound
        body += varint(3 << 3 | 2) + varint(len(interval))
        for slot, at in inner_slots:
            slots[slot] = None if at is None else len(body) + at
        body += interval
    head = _KV_TAG + varint(len(body))
    return head + bytes(body), [None if s is None else s + len(head) for s in slots]


def _is_zero(a: np.ndarray) -> np.ndarray:
    """Whether each double is +0.0 exactly (bit pattern 0): the value proto3 omits."""
    return np.ascontiguousarray(a, '<f8').view(np.uint64) == 0


def _floats(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A column as float64 (nulls 0.0) and its null mask; a column absent is all null."""
    if name not in table.column_names:
        return np.zeros(table.num_rows), np.ones(table.num_rows, bool)
    col = table.column(name).combine_chunks() if table.num_rows else pa.array([], pa.float64())
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    return col.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False), nulls


def _head_ranks(table: pa.Table, rows: np.ndarray | None, head_names: Sequence[str]
                ) -> np.ndarray:
    """Each row's head as its place in `head_names` (int8/16; a head not there is refused, naming
    the first such row of the metrics table: `rows[i]` for the table's row i, None: i)."""
    codes, names = text_codes(table.column('head'))
    order = {h: i for i, h in enumerate(head_names)}
    bad = [c for c, name in enumerate(names) if name not in order]
    if bad and table.num_rows:
        at = np.flatnonzero(np.isin(codes, bad))
        if at.size:
            i = int(at[0])
            protos.check_head(names[codes[i]], head_names, 'metrics',
                              i if rows is None else int(rows[i]))
    ranks = np.asarray([order.get(n, 0) for n in names], np.int16)
    return ranks[codes]


def _small_unique(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(codes, return_inverse=True)` of non-negative codes, by a count table when
    their range is small (a few (head, metric) pairs or row layouts), else by a sort."""
    if len(codes) and 0 <= codes.min() and codes.max() < max(1 << 16, 2 * len(codes)):
        distinct = np.flatnonzero(np.bincount(codes))
        place = np.empty(int(distinct[-1]) + 1, np.int64)
        place[distinct] = np.arange(len(distinct))
        return distinct, place[codes]
    distinct, inverse = np.unique(codes, return_inverse=True)
    return distinct, inverse.ravel()


class _Rows:
    """The records' rows (metric rows, then per slice and head its example counts) as parallel
    arrays: slice, section (0 metric, 1 count), head rank, position, key bytes index, value,
    upper, lower, standard error and interval layout."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, **columns: np.ndarray) -> None:
        self.parts.append(columns)

    def column(self, name: str) -> np.ndarray:
        return np.concatenate([p[name] for p in self.parts])


def _metric_rows(table: pa.Table, out: _Rows, group: np.ndarray, rank: np.ndarray,
                 keys: dict[tuple, int]) -> tuple[np.ndarray, list[str]]:
    """Adds the metric rows to `out`; returns each row's metric code and each code's name
    without its class (for the counts)."""
    head_codes, head_names = text_codes(table.column('head'))
    metric_codes, metric_values = column_codes(table.column('metric'))
    metrics = metric_values.to_pylist() + ['']
    split = [protos.metric_name_and_class(m) for m in metrics]
    pair = head_codes.astype(np.int64) * max(len(metrics), 1) + metric_codes
    distinct, inverse = _small_unique(pair)
    key_of_pair = np.asarray([keys.setdefault(
        (head_names[p // max(len(metrics), 1)],) + split[p % max(len(metrics), 1)] + (True,),
        len(keys)) for p in distinct.tolist()], np.int64)
    value, value_null = _floats(table, 'value')
    value = np.where(value_null, np.nan, value)  # a null value is written as NaN
    ci_lo, ci_lo_null = _floats(table, 'ci_lower')
    ci_hi, ci_hi_null = _floats(table, 'ci_upper')
    se, se_null = _floats(table, 'standard_error')
    lo, lo_null = _floats(table, 'lower_bound')
    hi, hi_null = _floats(table, 'upper_bound')
    has_ci = ~(ci_lo_null | ci_hi_null)
    lo, hi = np.where(has_ci, ci_lo, lo), np.where(has_ci, ci_hi, hi)
    has_bounds = np.where(has_ci, True, ~(lo_null | hi_null))
    ci = np.where(has_bounds, np.where(has_ci & ~se_null, BOUNDS_SE, BOUNDS), NO_CI)
    n = table.num_rows
    out.add(group=group, section=np.zeros(n, np.int64), rank=rank,
            position=np.arange(n, dtype=np.int64), key=key_of_pair[inverse.ravel()],
            value=value, upper=hi, lower=lo, se=se, ci=ci)
    return metric_codes, [name for name, _ in split]


def _count_rows(table: pa.Table, out: _Rows, group: np.ndarray, rank: np.ndarray,
                metric: tuple[np.ndarray, list[str]], keys: dict[tuple, int],
                head_names: Sequence[str]) -> None:
    """Adds per slice and head its `example_count` and `weighted_example_count` rows: from the
    head's first row in the slice, unless null or the head has a metric of that name."""
    n_heads = max(len(head_names), 1)
    pair = group.astype(np.int64) * n_heads + rank
    distinct, first = np.unique(pair, return_index=True)
    for which, (name, column, weighted) in enumerate((
            ('example_count', 'example_count', False),
            ('weighted_example_count', 'weighted_example_count', True))):
        value, null = _floats(table, column)
        codes, names = metric
        own = np.unique(pair[np.isin(codes, [c for c, m in enumerate(names) if m == name])])
        keep = ~null[first] & ~np.isin(distinct, own)
        at = first[keep]
        heads = rank[at]
        key = np.asarray([keys.setdefault((head_names[h], name, None, weighted), len(keys))
                          for h in range(len(head_names))] or [0], np.int64)[heads]
        m = len(at)
        out.add(group=group[at], section=np.ones(m, np.int64), rank=heads,
                position=np.full(m, which, np.int64), key=key, value=value[at],
                upper=np.zeros(m), lower=np.zeros(m), se=np.zeros(m),
                ci=np.full(m, NO_CI, np.int64))


def _key_bytes(keys: dict[tuple, int]) -> list[bytes]:
    """Each (head, name, class id, example_weighted) key's serialized `MetricKey`."""
    mfs = protos.tfma_module('proto.metrics_for_slice_pb2')
    out = []
    for head, name, class_id, weighted in keys:
        key = mfs.MetricKey(name=name, output_name=head)
        if class_id is not None:
            key.sub_key.class_id.value = class_id
        key.example_weighted.value = weighted
        key.example_weighted.SetInParent()  # a false flag is still set (TFMA's writer sets it)
        out.append(key.SerializeToString())
    return out


def _assemble(rows: _Rows, key_bytes: list[bytes], n_groups: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Every row's bytes in output order (slice, its metric rows by head, then its counts) in one
    buffer, and where each slice's rows start and end in it."""
    group, section, rank = rows.column('group'), rows.column('section'), rows.column('rank')
    order = np.lexsort((rows.column('position'), rank, section, group))
    values = np.stack([rows.column(c)[order] for c in ('value', 'upper', 'lower', 'se')], 1)
    ci, key = rows.column('ci')[order], rows.column('key')[order]
    zeros = _is_zero(values)
    kind = ((key * 3 + ci) * 16 + zeros @ np.array([1, 2, 4, 8]))
    kinds, inverse = _small_unique(kind)
    layouts = [_layout(key_bytes[k // 48], [bool(k % 16 >> j & 1) for j in range(4)],
                       int(k // 16 % 3)) for k in kinds.tolist()]
    widths = np.asarray([len(t) for t, _ in layouts], np.int64)[inverse]
    starts = np.concatenate(([0], np.cumsum(widths)))
    buffer = np.empty(int(starts[-1]), np.uint8)
    for u, (template, slots) in enumerate(layouts):
        where = np.flatnonzero(inverse == u)
        for a in range(0, len(where), _SLICES_CHUNK):
            part = where[a:a + _SLICES_CHUNK]
            block = np.empty((len(part), len(template)), np.uint8)
            block[:] = np.frombuffer(template, np.uint8)
            for j, slot in enumerate(slots):
                if slot is not None:
                    block[:, slot:slot + 8] = np.ascontiguousarray(
                        values[part, j], '<f8').view(np.uint8).reshape(len(part), 8)
            buffer[starts[part][:, None] + np.arange(len(template))] = block
    bounds = starts[np.searchsorted(group[order], np.arange(n_groups + 1))]
    return buffer, bounds


def _records(table: pa.Table, group: np.ndarray, rank: np.ndarray, slice_fields: list[bytes],
             head_names: Sequence[str]) -> list[bytes]:
    """The records of the slices `slice_fields` (rows of `table` in `group` 0, 1, ...)."""
    keys: dict[tuple, int] = {}
    out = _Rows()
    metric = _metric_rows(table, out, group, rank, keys)
    _count_rows(table, out, group, rank, metric, keys, head_names)
    buffer, bounds = _assemble(out, _key_bytes(keys), len(slice_fields))
    data = buffer.tobytes()
    ends = bounds.tolist()
    return [key + data[a:b] for key, a, b in zip(slice_fields, ends, ends[1:])]


def iter_metrics_records(metrics: pa.Table, rows: Sequence[int] | None,
                         slices: Sequence[Sequence[str]], head_names: Sequence[str],
                         typed: protos.TypedValues | None,
                         slice_key: Callable = protos.slice_key,
                         index: SliceIndex | None = None) -> Iterator[bytes]:
    """One serialized `MetricsForSlice` per slice of the metrics table's `rows` (None: every
    row, in order; records in order of their slices' first row), each head's rows in
    `head_names` order, then each head's example counts: the bytes
    `tfma_protos.metrics_records_by_message` builds message by message. Text columns may be
    strings or dictionaries (worked on as codes). Assembled `CHUNK_ROWS` rows (whole slices) at a
    time, so the working arrays of a table of millions of rows stay small. `index`: the whole
    table's `SliceIndex`, when the caller made it (its refusals already raised)."""
    positions = None if rows is None else np.asarray(rows, np.int64)
    if positions is not None and (len(positions) == metrics.num_rows and len(positions)
                                  and positions[0] == 0
                                  and bool(np.all(np.diff(positions) == 1))):
        positions = None  # every row, in order: no copy
    n = metrics.num_rows if positions is None else len(positions)
    if n == 0:
        return
    table = metrics if positions is None else metrics.take(pa.array(positions))
    if index is None:
        group, slice_fields = slice_groups(table, slices, typed, slice_key)
    else:
        group, slice_fields = index.rows(positions)
    rank = _head_ranks(table, positions, head_names)
    if n <= CHUNK_ROWS:
        yield from _records(table, group, rank, slice_fields, head_names)
        return
    grouped = bool(np.all(group[1:] >= group[:-1]))  # each slice's rows together, in order
    order = None if grouped else np.argsort(group, kind='stable')
    starts = np.searchsorted(group if grouped else group[order],
                             np.arange(len(slice_fields) + 1))
    g = 0
    while g < len(slice_fields):
        end = int(np.searchsorted(starts, starts[g] + CHUNK_ROWS, side='right')) - 1
        end = min(max(end, g + 1), len(slice_fields))
        a, b = int(starts[g]), int(starts[end])
        if grouped:
            yield from _records(table.slice(a, b - a), group[a:b] - g, rank[a:b],
                                slice_fields[g:end], head_names)
        else:
            part = order[a:b]
            yield from _records(table.take(pa.array(part)), group[part] - g, rank[part],
                                slice_fields[g:end], head_names)
        g = end


def metrics_records(metrics: pa.Table, rows: Sequence[int] | None, slices: Sequence[Sequence[str]],
                    head_names: Sequence[str], typed: protos.TypedValues | None,
                    slice_key: Callable = protos.slice_key) -> list[bytes]:
    """`iter_metrics_records` as a list."""
    return list(iter_metrics_records(metrics, rows, slices, head_names, typed, slice_key))
