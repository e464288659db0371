"""ApplyHeads: per record batch, every head's array face, bad-row handling and the key split.

Per `SourceBatch`:

1. Arrow columns → numpy: scalars to 1-D/2-D arrays, list columns to [rows, d] arrays (flatten and
   reshape), multi-label id lists kept as an Arrow ListArray, CSV JSON-list strings parsed.
2. Bad rows: nulls and ragged lists found here, then every head's `invalid_rows`, then negative
   weights (`negative_weights`: the heads take them as tf.estimator did; the pipeline does not).
   With `bad_records='fail'` the first one raises `BadRecordError` naming file, row, column and
   reason; with 'dead_letter' the row is dropped for every head and emitted on the `errors` output.
3. Keys: per slice spec, vectorised slice codes (dictionary codes; crosses by compacting combined
   codes), optionally crossed with window starts and step values: each row gets the code of its
   key.
4. Each head updates the states of all the spec's keys in one pass over the batch (its state's
   `update_groups`: per-key sums by bincount, no sort, no copies); a state without it, or more
   keys than it takes at once, gets per-key sub-batches from one stable argsort instead. States
   live for the bundle and are emitted in
   `finish_bundle` (a pre-combine: only small states cross the shuffle, on every runner), so the
   CombinePerKey downstream only merges; results cannot depend on bundling because merging is
   associative and commutative.
5. The Overall slice is not evaluated row by row when another slice spec is configured: the rows
   of a spec with non-null values are partitioned among that spec's keys, so Overall's state is the
   merge of those keys' states (per head, window and step) plus a state updated with only the rows
   whose value is null. Every row is then evaluated once per non-Overall spec instead of once more
   for Overall; merging a few states per bundle costs next to nothing.

Keys are `(slice_columns, slice_values, head_index, window_start_us | None, step | None)`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import EvalConfig, check_slice_kinds
from pipeline.sources import SourceBatch

BAD_RECORD = 'bad record'
ERRORS_TAG = 'errors'
STATS_TAG = 'stats'
# A bundle holding more keys than this hands its states on early (bounded memory).
MAX_BUNDLE_KEYS = 20000
_log = logging.getLogger(__name__)


class BadRecordError(RuntimeError):
    """A row no head can evaluate, with bad_records='fail'. The message is one line:
    `bad record: file F, row R, column C: reason`."""


class Key(NamedTuple):
    slice_columns: tuple[str, ...]
    slice_values: tuple[Any, ...]
    head: int
    window_start: int | None  # microseconds since the epoch, UTC
    step: int | None


class HeadArrays(NamedTuple):
    """One head's inputs for a batch (or sub-batch), as the array face takes them."""
    labels: Any                     # np.ndarray, or pa.Array of per-row id lists
    logits: np.ndarray
    features: dict[str, np.ndarray]


class BundleStats(NamedTuple):
    """Rows a bundle read, how many of them were rejected, and per slice spec how many evaluated
    rows fell in none of its slices (a null slice value: counted, as TFMA does not)."""
    rows: int
    bad: int
    unsliced: tuple[tuple[tuple[str, ...], int], ...] = ()


class SubBatch(NamedTuple):
    """Un-combined input for one key (the variant without the pre-combine)."""
    head: int
    arrays: HeadArrays


# -------------------------------------------------------------------------------------------------
# Arrow → numpy.
# -------------------------------------------------------------------------------------------------

class _Problems:
    """Collects (column, reason, row mask) in the order found; the first one names a row."""

    def __init__(self, n: int):
        self.n = n
        self.items: list[tuple[str, str, np.ndarray]] = []

    def add(self, column: str, reason: str, mask: np.ndarray) -> None:
        if not self.n:
            return
        mask = np.asarray(mask, bool).reshape(self.n, -1).any(axis=1)
        if mask.any():
            self.items.append((column, reason, mask))

    def bad(self) -> np.ndarray:
        out = np.zeros(self.n, bool)
        for _, _, m in self.items:
            out |= m
        return out

    def first_reason(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row: index into `items` of the first problem (-1 for good rows)."""
        which = np.full(self.n, -1, np.int64)
        for k, (_, _, m) in enumerate(self.items):
            which[(which < 0) & m] = k
        return which


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _decode(arr: pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _to_numpy(arr: pa.Array) -> np.ndarray:
    """A non-null Arrow array as numpy (strings as an object array of str)."""
    t = arr.type
    if pa.types.is_boolean(t):
        return arr.to_numpy(zero_copy_only=False).astype(np.float32)
    if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_string_view(t)):
        return np.asarray(arr.to_pylist(), dtype=object)
    return arr.to_numpy(zero_copy_only=False)


def _fill_null(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return arr.fill_null('')
    if pa.types.is_boolean(t):
        return arr.fill_null(False)
    return arr.fill_null(pa.scalar(0, type=t))


def scalar_column(arr: pa.Array, column: str, problems: _Problems) -> np.ndarray:
    """One value per row, shape [rows]; lists must hold exactly one value (tf.Example scalars)."""
    arr = _decode(arr)
    if _is_list(arr.type):
        lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
        problems.add(column, 'expected one value, got a list of another length', lengths != 1)
        if (lengths != 1).any():
            arr = pc.if_else(pa.array(lengths == 1), arr, pa.scalar([None], type=arr.type))
        arr = _decode(pc.list_element(arr, 0))
    if arr.null_count:
        problems.add(column, 'null value', arr.is_null().to_numpy(zero_copy_only=False))
        arr = _fill_null(arr)
    return _to_numpy(arr)


def _json_lists_fast(arr: pa.Array) -> pa.Array | None:
    """Parses a whole column of JSON-list cells at once with Arrow's JSON reader (the cells become
    the lines `{"v": <cell>}` of one JSON-lines buffer); None when any cell is null, not a list,
    or not JSON, and the caller falls back to finding the bad cells one by one."""
    import pyarrow.json as pjson
    if arr.null_count or len(arr) == 0:
        return None
    lines = pc.binary_join_element_wise('{"v":', arr.cast(pa.string()), '}\n', '')
    offsets = lines.buffers()[1]
    first, last = (np.frombuffer(offsets, np.int32)[lines.offset + i] for i in (0, len(lines)))
    document = lines.buffers()[2][first:last]
    try:
        table = pjson.read_json(pa.BufferReader(document), read_options=pjson.ReadOptions(
            use_threads=False, block_size=max(1 << 20, 2 * (last - first))),
            parse_options=pjson.ParseOptions(newlines_in_values=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.num_rows != len(arr) or table.column_names != ['v']:
        return None
    values = table.column('v').combine_chunks()
    if not _is_list(values.type) or values.null_count:
        return None
    if pa.types.is_null(values.type.value_type):  # every list empty: no element type to infer
        return None
    return values


def _json_lists(arr: pa.Array, column: str, problems: _Problems) -> pa.Array:
    """CSV cells holding JSON lists ("[0.1, -2]") as an Arrow list array (null where unparsable)."""
    fast = _json_lists_fast(arr)
    if fast is not None:
        return fast
    rows = []
    bad = np.zeros(len(arr), bool)
    for i, s in enumerate(arr.to_pylist()):
        try:
            v = json.loads(s) if s is not None else None
        except ValueError:
            v = None
        if v is not None and not isinstance(v, list):
            v = [v]
        if v is None:
            bad[i] = True
        rows.append(v)
    problems.add(column, 'not a JSON list of values', bad)
    try:
        return pa.array(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        problems.add(column, 'not a JSON list of values', np.ones(len(arr), bool))
        return pa.array([None] * len(arr), pa.list_(pa.float64()))


def matrix_column(arr: pa.Array, column: str, width: int, problems: _Problems) -> np.ndarray:
    """[rows, width] values: from a list column (each row `width` long) or a scalar (width 1)."""
    arr = _decode(arr)
    n = len(arr)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = _json_lists(arr, column, problems)
    if not _is_list(arr.type):
        return scalar_column(arr, column, problems).reshape(n, 1) if width == 1 else (
            _wrong_width(arr, column, width, problems))
    lengths = pc.list_value_length(arr).fill_null(-1).to_numpy(zero_copy_only=False)
    ok = lengths == width
    if (lengths < 0).any():
        problems.add(column, 'null value', lengths < 0)
    if (~ok & (lengths >= 0)).any():
        problems.add(column, 'expected a list of %d values' % width, ~ok & (lengths >= 0))
    values = _decode(arr.filter(pa.array(ok)).flatten() if not ok.all() else arr.flatten())
    if values.null_count:
        parents = pc.list_parent_indices(arr.filter(pa.array(ok)) if not ok.all() else arr)
        rows_with_null = np.unique(parents.filter(values.is_null()).to_numpy())
        good_rows = np.flatnonzero(ok)
        mask = np.zeros(n, bool)
        mask[good_rows[rows_with_null]] = True
        problems.add(column, 'null value in list', mask)
        values = _fill_null(values)
    flat = _to_numpy(values)
    if ok.all():
        return flat.reshape(n, width)
    out = np.zeros((n, width), dtype=flat.dtype)
    out[ok] = flat.reshape(-1, width)
    return out


def _wrong_width(arr: pa.Array, column: str, width: int, problems: _Problems) -> np.ndarray:
    problems.add(column, 'expected a list of %d values, got one value' % width,
                 np.ones(len(arr), bool))
    return np.zeros((len(arr), width), np.float32)


def id_lists(arr: pa.Array, column: str, problems: _Problems) -> pa.Array:
    """Per-row lists of class ids or names, kept as an Arrow list array (nulls become [])."""
    arr = _decode(arr)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = _json_lists(arr, column, problems)
    if arr.null_count:
        problems.add(column, 'null value', arr.is_null().to_numpy(zero_copy_only=False))
        arr = pc.if_else(arr.is_null(), pa.scalar([], type=arr.type), arr)
    values = arr.flatten()
    if values.null_count:
        problems.add(column, 'null value in list', np.isin(
            np.arange(len(arr)), pc.list_parent_indices(arr).filter(values.is_null()).to_numpy()))
    if pa.types.is_dictionary(arr.type.value_type):
        arr = arr.cast(pa.list_(arr.type.value_type.value_type))
    return arr


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    index = batch.schema.get_field_index(name)
    if index < 0:  # get_field_index gives -1, and column(-1) would be the last column
        raise KeyError('column %r is not in the batch (columns: %s)' % (
            name, ', '.join(batch.schema.names)))
    return batch.column(index)


def _is_vector_label(t: pa.DataType) -> bool:
    """A column holding a vector label per row: a list, or text (JSON list strings, as CSV)."""
    return _is_list(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def head_arrays(batch: pa.RecordBatch, config: EvalConfig, heads: Sequence[Any],
                problems: _Problems) -> list[HeadArrays]:
    """Every head's (labels, logits, features) for a batch; conversion problems go to `problems`."""
    out = []
    cache: dict[tuple, Any] = {}

    def cached(kind: str, col: str, fn):
        if (kind, col) not in cache:
            cache[(kind, col)] = fn()
        return cache[(kind, col)]

    for spec, head in zip(config.heads, heads):
        d = head.logits_dimension
        cols = spec.logits_columns
        if len(cols) == 1:
            logits = cached('m%d' % d, cols[0], lambda: matrix_column(
                _column(batch, cols[0]), cols[0], d, problems))
        else:
            logits = np.stack([cached('s', c, lambda c=c: scalar_column(
                _column(batch, c), c, problems)) for c in cols], axis=1)
        lab = _column(batch, spec.labels)
        if spec.type == 'MultiLabelHead':
            if spec.label_format == 'ids':
                labels = cached('ids', spec.labels, lambda: id_lists(lab, spec.labels, problems))
            else:
                labels = cached('m%d' % d, spec.labels, lambda: matrix_column(
                    lab, spec.labels, d, problems))
        elif d > 1 and spec.type != 'MultiClassHead' and _is_vector_label(_decode(lab).type):
            # A regression head's label_dimension values per row: a list column, or (in CSV) a
            # JSON list string. A MultiClassHead's label is one class per row even when stored as
            # a list of one (tf.Example features).
            labels = cached('m%d' % d, spec.labels,
                            lambda: matrix_column(lab, spec.labels, d, problems))
        else:
            labels = cached('s', spec.labels,
                            lambda: scalar_column(lab, spec.labels, problems)).reshape(-1, 1)
        features = {}
        if spec.weight_column:
            w = spec.weight_column
            features[w] = cached('s', w, lambda: scalar_column(_column(batch, w), w, problems))
        out.append(HeadArrays(labels, logits, features))
    return out


NEGATIVE_WEIGHT = 'negative weight (a weighted metric needs weights >= 0)'


def negative_weights(config: EvalConfig, arrays: Sequence[HeadArrays],
                     problems: _Problems) -> None:
    """Adds the rows with a negative weight (per weight column, once) to `problems`.

    tf.estimator's heads take negative weights silently (their loss subtracts), so the heads'
    `invalid_rows` keep them; but a weighted metric, its AUC bounds and the weighted counts mean
    nothing then, so the pipeline rejects such a row as a bad record. NaN weights are the heads'
    (non-finite); -inf is reported as non-finite first."""
    seen = set()
    for spec, a in zip(config.heads, arrays):
        w = spec.weight_column
        if w and w not in seen:
            seen.add(w)
            x = np.asarray(a.features[w])
            if x.dtype.kind in 'iuf':  # other kinds are the heads' to reject (not numbers)
                problems.add(w, NEGATIVE_WEIGHT, x < 0)


def _take(x: Any, idx: np.ndarray) -> Any:
    if isinstance(x, (pa.Array, pa.ChunkedArray)):
        return x.take(pa.array(idx))
    # np.take along the first axis: the same rows as x[idx], several times faster on [rows, d]
    # arrays (fancy indexing goes through a general n-d path).
    return np.take(x, idx, axis=0)


def take_rows(arrays: HeadArrays, idx: np.ndarray | None) -> HeadArrays:
    """The rows `idx` of a head's arrays (None: all rows, no copy)."""
    if idx is None:
        return arrays
    return HeadArrays(_take(arrays.labels, idx), _take(arrays.logits, idx),
                      {k: _take(v, idx) for k, v in arrays.features.items()})


# -------------------------------------------------------------------------------------------------
# Keys: slice codes, windows, steps.
# -------------------------------------------------------------------------------------------------

def _codes(values: np.ndarray | pa.Array, problems: _Problems | None = None
           ) -> tuple[np.ndarray, list]:
    """Dense int64 codes per row (-1 for null) and the value of each code."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if not pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_encode()
        dictionary = arr.dictionary.to_pylist()
        indices = arr.indices
        if not indices.null_count:
            idx = indices.to_numpy().astype(np.int64)
            used = np.flatnonzero(np.bincount(idx, minlength=len(dictionary)))
            if used.size == len(dictionary):  # every entry in use: the indices are the codes
                return idx, dictionary
        else:
            idx = indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        # Dense codes for the dictionary entries in use, in dictionary order, by counting (linear
        # time; a np.unique here would sort every row of every batch).
        shifted = idx + 1  # null (-1) → 0
        used = np.flatnonzero(np.bincount(shifted, minlength=len(dictionary) + 1)[1:])
        remap = np.full(len(dictionary) + 1, -1, np.int64)
        remap[used + 1] = np.arange(used.size)
        return remap[shifted], [dictionary[u] for u in used]
    used, inverse = np.unique(values, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), used.tolist()


def _slice_column(batch: pa.RecordBatch, col: str) -> pa.Array:
    arr = _column(batch, col)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if _is_list(arr.type):  # tf.Example scalars: lists of one (others count as null)
        lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
        arr = pc.if_else(pa.array(lengths == 1), arr, pa.scalar(None, type=arr.type))
        arr = pc.list_element(arr, 0)
    return arr


_INT64_LIMIT = 2.0 ** 63


def _number_value(v: Any) -> Any:
    """A slice value with an integral float as an int (0.0 and -0.0 → 0, 3.0 → 3; within int64);
    any other value as it is."""
    if isinstance(v, float) and v.is_integer() and -_INT64_LIMIT <= v < _INT64_LIMIT:
        return int(v)
    return v


def _slice_value_codes(batch: pa.RecordBatch, col: str) -> tuple[np.ndarray, list]:
    """`_codes` of a slice column, numbers unified whatever their Arrow type: int64 0, int32 0 and
    float64 0.0 are the value 0, so a slice does not depend on how its rows' shards were typed.
    Only the (few) dictionary entries of a floating column are looked at; entries that become
    equal share a code."""
    arr = _slice_column(batch, col)
    codes, values = _codes(arr)
    if not pa.types.is_floating(arr.type):
        return codes, values
    unified = [_number_value(v) for v in values]
    merged: dict[Any, int] = {}
    remap = np.array([merged.setdefault(v, len(merged)) for v in unified] + [-1], np.int64)
    if len(merged) == len(unified):
        return codes, unified
    return remap[codes], list(merged)  # code -1 (null) → remap[-1] = -1


def slice_codes(batch: pa.RecordBatch, columns: tuple[str, ...]) -> tuple[np.ndarray, list[tuple]]:
    """Per row, a code into the returned list of value tuples; -1 where a slice value is null (the
    row then belongs to no slice of this spec, as in TFMA). Numbers are unified
    (`_slice_value_codes`)."""
    n = batch.num_rows
    if not columns:
        return np.zeros(n, np.int64), [()]
    codes, values = _slice_value_codes(batch, columns[0])
    combos = [(v,) for v in values]
    for col in columns[1:]:
        c2, v2 = _slice_value_codes(batch, col)
        null = (codes < 0) | (c2 < 0)
        combined = np.where(null, -1, codes * max(len(v2), 1) + c2)
        used, inverse = np.unique(combined, return_inverse=True)
        inverse = inverse.reshape(-1)
        offset = 1 if used.size and used[0] < 0 else 0
        codes = inverse - offset
        combos = [combos[u // max(len(v2), 1)] + (v2[u % max(len(v2), 1)],)
                  for u in used[offset:]]
    return codes.astype(np.int64), combos


def epoch_micros(arr: pa.Array, column: str, problems: _Problems) -> np.ndarray:
    """Event times as int64 microseconds since the epoch (naive timestamps are UTC; numbers are
    epoch seconds)."""
    arr = _slice_column(pa.record_batch([arr], names=[column]), column)
    arr = _decode(arr)
    t = arr.type
    if arr.null_count:
        problems.add(column, 'null timestamp', arr.is_null().to_numpy(zero_copy_only=False))
        arr = _fill_null(arr)
    if pa.types.is_timestamp(t):
        return arr.cast(pa.timestamp('us', tz=t.tz)).cast(pa.int64()).to_numpy(
            zero_copy_only=False)
    if pa.types.is_date(t):
        return arr.cast(pa.date32()).cast(pa.int32()).to_numpy(
            zero_copy_only=False).astype(np.int64) * 86_400_000_000
    seconds = arr.to_numpy(zero_copy_only=False)
    if seconds.dtype.kind == 'f':
        problems.add(column, 'non-finite timestamp', ~np.isfinite(seconds))
        seconds = np.where(np.isfinite(seconds), seconds, 0.0)
        return np.floor(seconds * 1e6).astype(np.int64)
    return seconds.astype(np.int64) * 1_000_000


def window_starts(micros: np.ndarray, size_us: int, period_us: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(row index, window start) pairs: every window [start, start + size) holding each row.

    Fixed windows are aligned to the epoch; sliding windows start at multiples of the period.
    """
    n = micros.shape[0]
    if period_us is None or period_us == size_us:
        return np.arange(n), np.floor_divide(micros, size_us) * size_us
    last = np.floor_divide(micros, period_us) * period_us
    rows, starts = [], []
    for j in range(-(-size_us // period_us)):
        start = last - j * period_us
        inside = start + size_us > micros
        rows.append(np.flatnonzero(inside))
        starts.append(start[inside])
    return np.concatenate(rows), np.concatenate(starts)


def group_rows(codes: np.ndarray) -> Iterator[tuple[int, np.ndarray | None]]:
    """(code, row indices) per distinct non-negative code, one stable argsort for all; None as the
    indices when every row has the same code (no copy needed)."""
    valid = codes >= 0
    if not valid.any():
        return
    if valid.all() and (codes == codes[0]).all():
        yield int(codes[0]), None
        return
    # A stable sort of 16-bit keys is numpy's radix sort (linear, ~4x faster than on int64): slice
    # specs rarely have more than a few thousand values per batch.
    small = codes.size and -1 <= codes.min() and codes.max() < np.iinfo(np.int16).max
    order = np.argsort(codes.astype(np.int16) if small else codes, kind='stable')
    ordered = codes[order]
    cuts = np.flatnonzero(np.diff(ordered)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [ordered.size]])
    for s, e in zip(starts, ends):
        if e > s and ordered[s] >= 0:
            yield int(ordered[s]), order[s:e]


# -------------------------------------------------------------------------------------------------
# The DoFn.
# -------------------------------------------------------------------------------------------------

def _error_message(path: str, row: int, column: str, reason: str) -> str:
    return '%s: file %s, row %d, column %s: %s' % (BAD_RECORD, path, row, column, reason)


def _json_default(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return v.decode('utf-8', 'replace')
    return str(v)


class ApplyHeads(beam.DoFn):
    """SourceBatch → ((Key), state) partial states per bundle, plus `errors` and `stats` outputs.

    Args:
      config: the validated config.
      run_id: stamped on error rows.
      bad_records: 'fail' or 'dead_letter'.
      precombine: True (default) keeps one state per key for the bundle and emits it in
        finish_bundle; False emits a `SubBatch` per key and batch (the CombineFn updates).
      predictions_dir: when set, each batch's predictions are written there as Parquet.
      derive_overall: with the pre-combine, build the Overall slice's states by merging another
        spec's (see the module docstring); False updates them with every row.
      slice_kinds: (reference file, its slice columns' `config.slice_kind`s): every batch's slice
        columns must hold the same kinds (formats without a footer to check beforehand); a batch
        that does not raises `ConfigError` naming its file and the column.
    """

    def __init__(self, config: EvalConfig, run_id: str, bad_records: str = 'fail',
                 precombine: bool = True, predictions_dir: str | None = None,
                 derive_overall: bool = True,
                 slice_kinds: tuple[str, Mapping[str, str]] | None = None):
        if bad_records not in ('fail', 'dead_letter'):
            raise ValueError('bad_records must be fail or dead_letter, got %r' % bad_records)
        self._config = config
        self._run_id = run_id
        self._bad_records = bad_records
        self._precombine = precombine
        self._predictions_dir = predictions_dir
        self._derive_overall = derive_overall
        self._slice_kinds = slice_kinds
        self._bad_counter = beam.metrics.Metrics.counter('headstream', 'bad_rows')

    def setup(self) -> None:
        self._heads = self._config.build_heads()
        self._columns = self._config.columns()
        self._states: dict[Key, Any] = {}
        self._donor = overall_donor(self._config.slices) if (
            self._precombine and self._derive_overall) else None
        self._rows = 0
        self._bad = 0
        self._unsliced: dict[tuple[str, ...], int] = {}

    def start_bundle(self) -> None:
        self._states = {}
        self._rows = 0
        self._bad = 0
        self._unsliced = {}

    # -- per batch ----------------------------------------------------------------------------
    def process(self, sb: SourceBatch) -> Iterator[Any]:
        config = self._config
        batch = sb.batch
        n = batch.num_rows
        self._rows += n
        if n == 0:
            return
        missing = [c for c in self._columns if batch.schema.get_field_index(c) < 0]
        if missing:
            # A shard without a column the config reads (the first shard's schema was checked):
            # every row of it is bad, with that reason; never another column read in its place.
            problems = _Problems(n)
            problems.add(missing[0], 'column missing from this file', np.ones(n, bool))
            if self._bad_records == 'fail':
                raise BadRecordError(_error_message(sb.path, sb.first_row, missing[0],
                                                    'column missing from this file'))
            self._bad += n
            self._bad_counter.inc(n)
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, self._error_rows(sb, problems, np.ones(n, bool)))
            return
        if self._slice_kinds is not None:
            reference, kinds = self._slice_kinds
            check_slice_kinds(kinds, batch.schema, config.format, sb.path, reference)
        problems = _Problems(n)
        arrays = head_arrays(batch, config, self._heads, problems)
        for spec, head, a in zip(config.heads, self._heads, arrays):
            for role, reason, mask in head.invalid_rows(a.labels, a.logits, a.features):
                column = {'logits': ','.join(spec.logits_columns),
                          'labels': spec.labels}.get(role, role)
                problems.add(column, reason, mask)
        negative_weights(config, arrays, problems)
        micros = None
        if config.window:
            micros = epoch_micros(_column(batch, config.window.column), config.window.column,
                                  problems)
        steps = None
        if config.step_column:
            steps = scalar_column(_column(batch, config.step_column), config.step_column,
                                  problems).astype(np.int64)
        keep: np.ndarray | None = None
        if problems.items:
            bad = problems.bad()
            if self._bad_records == 'fail':
                row = int(np.flatnonzero(bad)[0])
                which = problems.first_reason()[row]
                column, reason, _ = problems.items[which]
                raise BadRecordError(_error_message(sb.path, sb.first_row + row, column, reason))
            n_bad = int(bad.sum())
            self._bad += n_bad
            self._bad_counter.inc(n_bad)
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, self._error_rows(sb, problems, bad))
            keep = np.flatnonzero(~bad)
            if keep.size == 0:
                return
            arrays = [take_rows(a, keep) for a in arrays]
            batch = batch.take(pa.array(keep))
            micros = micros[keep] if micros is not None else None
            steps = steps[keep] if steps is not None else None

        if self._predictions_dir:
            self._write_predictions(sb, batch, arrays, keep)
        if self._precombine:
            for keys, codes, base_rows in self._key_codes(batch, micros, steps, self._donor):
                split: list = []  # the rows of each code, found once for all heads that need them
                for h, a in enumerate(arrays):
                    self._update_states(h, keys, codes, take_rows(a, base_rows), split)
        else:
            for key, idx in self._split(batch, micros, steps):
                for h, a in enumerate(arrays):
                    yield (tuple(Key(key[0], key[1], h, key[2], key[3])),
                           SubBatch(h, take_rows(a, idx)))
        if len(self._states) > MAX_BUNDLE_KEYS:
            yield from self._flush()

    def _split(self, batch: pa.RecordBatch, micros: np.ndarray | None, steps: np.ndarray | None,
               donor: tuple[str, ...] | None = None
               ) -> Iterator[tuple[tuple, np.ndarray | None]]:
        """((slice columns, slice values, window start, step), row indices) per key of a batch.

        With a `donor` spec, the Overall keys get only the rows where the donor's value is null
        (the rest of Overall is merged from the donor's states in `_flush`)."""
        for keys, codes, base_rows in self._key_codes(batch, micros, steps, donor):
            for code, idx in group_rows(codes):
                if base_rows is not None:
                    idx = base_rows if idx is None else base_rows[idx]
                yield keys[code], idx

    def _key_codes(self, batch: pa.RecordBatch, micros: np.ndarray | None,
                   steps: np.ndarray | None, donor: tuple[str, ...] | None = None
                   ) -> Iterator[tuple[list[tuple], np.ndarray, np.ndarray | None]]:
        """Per slice spec: (keys, codes, base_rows). Row j of the (row, window) pairs — batch row
        `base_rows[j]`, or row j when base_rows is None (one window or none per row) — belongs to
        `keys[codes[j]]` ((slice columns, slice values, window start, step)), or to no key when
        codes[j] < 0. Only keys holding rows are listed, in code order.

        With a `donor` spec, the Overall keys get only the rows where the donor's value is null
        (the rest of Overall is merged from the donor's states in `_flush`)."""
        config = self._config
        n = batch.num_rows
        base_rows = None  # row index of each (row, window) pair; None: one pair per row
        win: np.ndarray | None = None
        if config.window:
            size = int(round(config.window.size * 1e6))
            period = (int(round(config.window.period * 1e6))
                      if config.window.period is not None else None)
            rows, win = window_starts(micros, size, period)
            if not (rows.size == n and (rows == np.arange(n)).all()):
                base_rows = rows
        extra_codes = np.zeros(n if base_rows is None else base_rows.size, np.int64)
        extra_values: list[tuple] = [(None, None)]
        if win is not None or steps is not None:
            parts = [win if win is not None else np.zeros_like(extra_codes),
                     (steps if base_rows is None else steps[base_rows]) if steps is not None
                     else np.zeros_like(extra_codes)]
            # Codes of (window, step) pairs in (window, step) order: two 1-D uniques and one of
            # their combined codes (np.unique over rows, axis=0, is ~20x slower).
            (wu, wi), (su, si) = (np.unique(x, return_inverse=True) for x in parts)
            used, inverse = np.unique(wi.reshape(-1) * su.size + si.reshape(-1),
                                      return_inverse=True)
            extra_codes = inverse.reshape(-1).astype(np.int64)
            extra_values = [(int(wu[u // su.size]) if win is not None else None,
                             int(su[u % su.size]) if steps is not None else None) for u in used]
        n_extra = len(extra_values)
        donor_split = slice_codes(batch, donor) if donor is not None else None
        for columns in config.slices:
            if donor_split is not None and columns == donor:
                codes, combos = donor_split
            else:
                codes, combos = slice_codes(batch, columns)
            if columns:
                outside = int(np.count_nonzero(codes < 0))
                if outside:
                    self._unsliced[columns] = self._unsliced.get(columns, 0) + outside
            if not columns and donor_split is not None:
                codes = np.where(donor_split[0] < 0, 0, -1)
            if base_rows is not None:
                codes = codes[base_rows]
            if n_extra == 1:
                # slice_codes are dense over the values present; only a derived Overall (rows
                # with a null donor value) may hold no row.
                if not combos or (not columns and donor_split is not None
                                  and not (codes >= 0).any()):
                    continue
                yield [(columns, v) + extra_values[0] for v in combos], codes, base_rows
                continue
            combined = np.where(codes < 0, -1, codes * n_extra + extra_codes)
            # Dense codes over the (slice value, window, step) combinations holding rows: by
            # counting (linear), unless the combinations far outnumber the rows.
            n_combined = len(combos) * n_extra
            if n_combined <= 4 * combined.size + 1024:
                present = np.bincount(combined + 1, minlength=n_combined + 1)[1:]
                used = np.flatnonzero(present)
                if used.size < n_combined:
                    remap = np.full(n_combined + 1, -1, np.int64)
                    remap[used + 1] = np.arange(used.size)
                    combined = remap[combined + 1]
            else:
                used, inverse = np.unique(combined, return_inverse=True)
                inverse = inverse.reshape(-1).astype(np.int64)
                if used.size and used[0] < 0:
                    used, inverse = used[1:], inverse - 1
                combined = inverse
            if not used.size:
                continue
            keys = []
            for code in used:
                w, s = extra_values[code % n_extra]
                keys.append((columns, combos[code // n_extra], w, s))
            yield keys, combined, base_rows

    def _update_states(self, h: int, keys: list[tuple], codes: np.ndarray, a: HeadArrays,
                       split: list) -> None:
        """Adds row j of head h's arrays to the bundle state of `keys[codes[j]]`: all keys in one
        pass when the head's state has a grouped update, else per key on its own rows (`split`:
        the (code, rows) pairs of `codes`, filled by the first head that needs them)."""
        states = []
        for columns, values, w, s in keys:
            full_key = Key(columns, values, h, w, s)
            state = self._states.get(full_key)
            if state is None:
                state = self._states[full_key] = self._heads[h].new_state()
            states.append(state)
        features = a.features or None
        grouped = getattr(type(states[0]), 'update_groups', None)  # optional in the interface
        if grouped is not None and grouped(states, codes, a.labels, a.logits, features):
            return
        if not split:
            split.extend(group_rows(codes))
        for code, idx in split:
            sub = take_rows(a, idx)
            states[code].update(sub.labels, sub.logits, sub.features or None)

    def _error_rows(self, sb: SourceBatch, problems: _Problems, bad: np.ndarray) -> pa.Table:
        from pipeline.schema import ERRORS
        rows = np.flatnonzero(bad)
        which = problems.first_reason()[rows]
        values = sb.batch.take(pa.array(rows)).to_pylist()
        return pa.Table.from_pydict({
            'run_id': [self._run_id] * rows.size,
            'file': [sb.path] * rows.size,
            'row': (rows + sb.first_row).astype(np.int64),
            'column': [problems.items[k][0] for k in which],
            'reason': [problems.items[k][1] for k in which],
            'values': [json.dumps(v, default=_json_default) for v in values],
        }, schema=ERRORS)

    def _write_predictions(self, sb: SourceBatch, batch: pa.RecordBatch,
                           arrays: list[HeadArrays], keep: np.ndarray | None) -> None:
        from pipeline.writers.parquet import write_table
        table = predictions_table(self._config, self._heads, batch, arrays, sb.path,
                                  rows=(np.arange(batch.num_rows) if keep is None else keep)
                                  + sb.first_row)
        stem = os.path.basename(sb.path).split('.')[0] or 'part'
        tag = hashlib.sha1(sb.path.encode('utf-8')).hexdigest()[:8]
        path = '%s/%s-%s-%012d.parquet' % (self._predictions_dir.rstrip('/'), stem, tag,
                                           sb.first_row)
        write_table(table, path)

    # -- per bundle ---------------------------------------------------------------------------
    def _flush(self) -> Iterator[Any]:
        states, self._states = self._states, {}
        if self._donor is not None:
            states = derive_overall_states(states, self._donor, self._heads)
        for key, state in states.items():
            # A plain tuple: Beam's deterministic key coder encodes it without a fallback.
            yield tuple(key), state

    def finish_bundle(self) -> Iterator[Any]:
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue
        window = GlobalWindow()
        ts = window.max_timestamp()
        for kv in self._flush():
            yield WindowedValue(kv, ts, [window])
        if self._rows or self._bad:
            stats = BundleStats(self._rows, self._bad, tuple(sorted(self._unsliced.items())))
            yield beam.pvalue.TaggedOutput(STATS_TAG, WindowedValue(stats, ts, [window]))
        self._rows = self._bad = 0
        self._unsliced = {}


def overall_donor(slices: Sequence[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The spec whose states the Overall slice's are merged from: the configured spec with the
    fewest columns (first in config order), or None when Overall is not configured or alone."""
    if () not in slices:
        return None
    others = [s for s in slices if s]
    return min(others, key=len) if others else None


def derive_overall_states(states: dict[Key, Any], donor: tuple[str, ...],
                          heads: Sequence[Any]) -> dict[Key, Any]:
    """`states` with each Overall key's state completed: per (head, window, step), a new state
    merged with every `donor` key's state and the Overall key's own state (its rows with a null
    donor value), if any. Donor states are left unchanged."""
    derived: dict[Key, Any] = {}
    for key, state in states.items():
        if tuple(key.slice_columns) == donor:
            overall = Key((), (), key.head, key.window_start, key.step)
            acc = derived.get(overall)
            if acc is None:
                acc = heads[key.head].new_state()
            derived[overall] = acc.merge(state)
    out = dict(states)
    for key, acc in derived.items():
        own = out.get(key)
        out[key] = acc if own is None else acc.merge(own)
    return out


def _prediction_column(values: Any) -> pa.Array:
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.dtype == object:
        values = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v,
                              otypes=[object])(values) if values.size else values
    if values.ndim == 1:
        return pa.array(values.tolist() if values.dtype == object else values)
    flat = pa.array(values.reshape(-1).tolist() if values.dtype == object
                    else values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def predictions_table(config: EvalConfig, heads: Sequence[Any], batch: pa.RecordBatch,
                      arrays: Sequence[HeadArrays], path: str, rows: np.ndarray) -> pa.Table:
    """The input's non-logit columns, `_file` and `_row` (the row's file and 0-based row in it,
    as errors/ names rows), and per head its predictions and per-example `loss`, as
    `<head>/<key>` columns (bare keys for an unnamed head)."""
    logit_cols = {c for spec in config.heads for c in spec.logits_columns}
    cols: dict[str, pa.Array] = {'_file': pa.array([path] * rows.size, pa.string()),
                                 '_row': pa.array(rows.astype(np.int64))}
    for name, col in zip(batch.schema.names, batch.columns):
        if name not in logit_cols:
            cols[name] = col
    for name, head, a in zip(config.head_names, heads, arrays):
        prefix = name + '/' if name else ''
        preds = head.array_predictions(a.logits)
        for k, v in preds.items():
            cols[prefix + str(k)] = _prediction_column(v)
        loss = np.asarray(head.array_loss(a.labels, a.logits, a.features or None))
        cols[prefix + 'loss'] = _prediction_column(loss.reshape(loss.shape[0], -1))
    return pa.table(cols)
