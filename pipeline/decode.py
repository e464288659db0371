"""Arrow columns → the heads' numpy inputs, and the rows that cannot be evaluated.

Owns the decoding of a record batch's columns and the detection of bad rows while decoding:

* `Problems` collects (column, reason, row mask) in the order found; the first names a row.
* `scalar_column` (one value per row; lists of one as tf.Example scalars), `matrix_column`
  ([rows, d] from list columns, or CSV JSON-list strings), `id_lists` (multi-label ids, kept as
  an Arrow ListArray), `epoch_micros` (event times); nulls, ragged lists and unparsable cells are
  reported to a `Problems`, and their rows filled with zeros.
* `head_arrays`: every head's `HeadArrays` for a batch (each column decoded once);
  `negative_weights`: rows a weighted metric cannot take; `take_rows`: the rows of a head's arrays.
* `list_of_one`: a column's per-row value where tf.Example scalars are lists of one (slice and
  time columns).

Dictionary-encoded columns are decoded; list views are read as plain lists.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import EvalConfig
from pipeline.elements import HeadArrays, is_list

NEGATIVE_WEIGHT = 'negative weight (a weighted metric needs weights >= 0)'


class Problems:
    """Collects (column, reason, row mask) in the order found; the first one names a row."""

    def __init__(self, n: int):
        self.n = n
        self.items: list[tuple[str, str, np.ndarray]] = []

    def add(self, column: str, reason: str, mask: np.ndarray) -> None:
        """Notes `reason` for the rows of `mask` (any element of a row's entries marks it)."""
        if not self.n:
            return
        mask = np.asarray(mask, bool).reshape(self.n, -1).any(axis=1)
        if mask.any():
            self.items.append((column, reason, mask))

    def bad(self) -> np.ndarray:
        """Per row: True when any problem was found in it."""
        out = np.zeros(self.n, bool)
        for _, _, m in self.items:
            out |= m
        return out

    def first_reason(self) -> np.ndarray:
        """Per row: index into `items` of the first problem (-1 for good rows)."""
        which = np.full(self.n, -1, np.int64)
        for k, (_, _, m) in enumerate(self.items):
            which[(which < 0) & m] = k
        return which


# -------------------------------------------------------------------------------------------------
# Arrow arrays.
# -------------------------------------------------------------------------------------------------

def _plain_list(arr: pa.Array) -> pa.Array:
    """A list view as the plain list array of the same rows (other arrays unchanged); pyarrow's
    cast between the two layouts is not reliable."""
    t = arr.type
    large = pa.types.is_large_list_view(t)
    if not (large or pa.types.is_list_view(t)):
        return arr
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64 if large else np.int32)
    if large:
        return pa.LargeListArray.from_arrays(pa.array(offsets), arr.flatten(),
                                             type=pa.large_list(t.value_field), mask=arr.is_null())
    return pa.ListArray.from_arrays(pa.array(offsets), arr.flatten(),
                                    type=pa.list_(t.value_field), mask=arr.is_null())


def _decode(arr: pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return _plain_list(arr)


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


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def batch_column(batch: pa.RecordBatch, name: str) -> pa.Array:
    """The column `name` of a batch (KeyError naming the batch's columns when absent)."""
    index = batch.schema.get_field_index(name)
    if index < 0:  # get_field_index gives -1, and column(-1) would be the last column
        raise KeyError('column %r is not in the batch (columns: %s)' % (
            name, ', '.join(batch.schema.names)))
    return batch.column(index)


def list_of_one(arr: pa.Array) -> pa.Array:
    """Each row's value, where a list column holds tf.Example scalars (lists of one: their
    element; lists of other lengths: null). Other columns unchanged (dictionaries kept)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = _plain_list(arr)
    if is_list(arr.type):
        lengths = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False)
        arr = pc.if_else(pa.array(lengths == 1), arr, pa.scalar(None, type=arr.type))
        arr = pc.list_element(arr, 0)
    return arr


# -------------------------------------------------------------------------------------------------
# Columns.
# -------------------------------------------------------------------------------------------------

def scalar_column(arr: pa.Array, column: str, problems: Problems) -> np.ndarray:
    """One value per row, shape [rows]; lists must hold exactly one value (tf.Example scalars)."""
    arr = _decode(arr)
    if is_list(arr.type):
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
    if not is_list(values.type) or values.null_count:
        return None
    if pa.types.is_null(values.type.value_type):  # every list empty: no element type to infer
        return None
    return values


def _json_lists(arr: pa.Array, column: str, problems: Problems) -> pa.Array:
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


def matrix_column(arr: pa.Array, column: str, width: int, problems: Problems) -> np.ndarray:
    """[rows, width] values: from a list column (each row `width` long) or a scalar (width 1)."""
    arr = _decode(arr)
    n = len(arr)
    if _is_text(arr.type):
        arr = _json_lists(arr, column, problems)
    if not is_list(arr.type):
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


def _wrong_width(arr: pa.Array, column: str, width: int, problems: Problems) -> np.ndarray:
    problems.add(column, 'expected a list of %d values, got one value' % width,
                 np.ones(len(arr), bool))
    return np.zeros((len(arr), width), np.float32)


def id_lists(arr: pa.Array, column: str, problems: Problems) -> pa.Array:
    """Per-row lists of class ids or names, kept as an Arrow list array (nulls become [])."""
    arr = _decode(arr)
    if _is_text(arr.type):
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


def epoch_micros(arr: pa.Array, column: str, problems: Problems) -> np.ndarray:
    """Event times as int64 microseconds since the epoch (naive timestamps are UTC; numbers are
    epoch seconds)."""
    arr = _decode(list_of_one(arr))
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


# -------------------------------------------------------------------------------------------------
# Every head's inputs.
# -------------------------------------------------------------------------------------------------

def _is_vector_label(t: pa.DataType) -> bool:
    """A column holding a vector label per row: a list, or text (JSON list strings, as CSV)."""
    return is_list(t) or _is_text(t)


def head_arrays(batch: pa.RecordBatch, config: EvalConfig, heads: Sequence[Any],
                problems: Problems) -> list[HeadArrays]:
    """Every head's (labels, logits, features) for a batch; conversion problems go to `problems`.
    A column read the same way by several heads is decoded once."""
    cache: dict[tuple[str, str], Any] = {}

    def cached(kind: str, col: str, fn: Callable[[], Any]) -> Any:
        if (kind, col) not in cache:
            cache[(kind, col)] = fn()
        return cache[(kind, col)]

    def scalar(col: str) -> np.ndarray:
        return cached('s', col, lambda: scalar_column(batch_column(batch, col), col, problems))

    def matrix(col: str, d: int) -> np.ndarray:
        return cached('m%d' % d, col, lambda: matrix_column(batch_column(batch, col), col, d,
                                                            problems))

    out = []
    for spec, head in zip(config.heads, heads):
        d = head.logits_dimension
        cols = spec.logits_columns
        logits = (matrix(cols[0], d) if len(cols) == 1
                  else np.stack([scalar(c) for c in cols], axis=1))
        lab = batch_column(batch, spec.labels)
        if spec.type == 'MultiLabelHead':
            labels = (cached('ids', spec.labels, lambda: id_lists(lab, spec.labels, problems))
                      if spec.label_format == 'ids' else matrix(spec.labels, d))
        elif d > 1 and spec.type != 'MultiClassHead' and _is_vector_label(_decode(lab).type):
            # A regression head's label_dimension values per row: a list column, or (in CSV) a
            # JSON list string. A MultiClassHead's label is one class per row even when stored as
            # a list of one (tf.Example features).
            labels = matrix(spec.labels, d)
        else:
            labels = scalar(spec.labels).reshape(-1, 1)
        features = {}
        if spec.weight_column:
            features[spec.weight_column] = scalar(spec.weight_column)
        if spec.baseline_columns:
            from heads.array.paired import BASELINE_LOGITS
            base = spec.baseline_columns
            features[BASELINE_LOGITS] = (matrix(base[0], d) if len(base) == 1
                                         else np.stack([scalar(c) for c in base], axis=1))
        out.append(HeadArrays(labels, logits, features))
    return out


def negative_weights(config: EvalConfig, arrays: Sequence[HeadArrays],
                     problems: Problems) -> None:
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
