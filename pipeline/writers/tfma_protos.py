"""The tables' rows as TFMA's protos: slice keys, metric keys, `MetricsForSlice`, `PlotsForSlice`
and the `EvalRun` config, serialized for pipeline/writers/tfma.py (which owns the files).

How the tables map onto TFMA's protos:

- Slice: TFMA's slice key, a tuple of (column, value) pairs sorted by column; `()` for Overall.
  Columns and values come from the rows' `slice_columns` and `slice_values` (unescaped by
  `schema.split_slice_parts`), never from the display string `slice`. A run passes the values as
  it sliced them (`typed`): integers (and integral floats, which the pipeline makes integers)
  become `int64_value`, other floats `float_value`, text `bytes_value` (UTF-8), as TFMA's slicer
  writes features. Without them (tables read back), a value written as a plain decimal integer
  ("30", "-2", not "030") becomes an `int64_value` and any other value a `bytes_value`.
- Metric row → `MetricKeyAndValue`: `output_name` = the head's name, `example_weighted` = true
  (a head's metrics always use its weight column; without one every weight is 1), `name` = the
  metric key. Per-class keys follow TFMA's convention of one name with a `SubKey`:
  `auc/class2` → name `auc`, `sub_key.class_id` = 2 (so TFMA shows it under sub key
  "classId:2"); every other key (`accuracy/positive_threshold_0.5`, `loss`, ...) is the name as
  is. A row with `ci_lower` and `ci_upper` (a run with `confidence:`) carries them, and its
  `standard_error`, as the value's `confidence_interval` (where TFMA's own writer puts its
  bootstrap / jackknife intervals): TFMA shows it as a bounded value. Otherwise a row with
  `lower_bound` and `upper_bound` carries those there (for `auc` the bucketing bound on the exact
  AUC, not a sampling interval; the metrics table keeps both). A null value is written as NaN.
- Per (slice, head), two more metrics as TFMA's own: `example_count` (example_weighted false) and
  `weighted_example_count` (example_weighted true), from the rows' count columns.
- Plots: per (slice, head, sub_key) one `PlotKeyAndValue` with an unnamed `PlotKey` (as TFMA's
  writer leaves its default confusion-matrix and calibration plots, so both land in one
  `PlotData`): `confusion_matrix_at_thresholds` from the confusion rows (threshold, tp, fp, tn,
  fn, precision, recall, false_positive_rate; sorted by threshold) and
  `calibration_histogram_buckets` from the calibration rows (sorted by bucket). A sub key
  `classN` becomes `sub_key.class_id` = N; any other class tag (a vocabulary name) cannot be a
  TFMA sub key, so that curve is filed under the output name `<head>/<tag>`.

Building them imports neither TensorFlow nor TFMA's package. TFMA's `__init__` imports
TensorFlow (seconds of a run's end), while the protos need only TFMA's generated proto modules
and version, which depend on protobuf alone: `tfma_module` loads those files from TFMA's
installed package directory under private module names, leaving `tensorflow_model_analysis`
itself unimported. The message classes are protobuf's, one per descriptor, so a later
`import tensorflow_model_analysis` in the same process works and shares them. Slice keys are
serialized here as TFMA's `serialize_slice_key` does.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import re
import sys
import threading
import types
from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa

from pipeline import schema

UNKNOWN = '<unknown>'

_CLASS_KEY = re.compile(r'^(?P<name>.+)/class(?P<id>\d+)$')
_CLASS_TAG = re.compile(r'^class(?:Id:)?(?P<id>\d+)$')  # plots' `classId:2` (or `class2`)
_INT_VALUE = re.compile(r'^(0|-?[1-9][0-9]*)$')
_INT64_MAX = 2 ** 63 - 1


# -------------------------------------------------------------------------------------------------
# TFMA's modules without TFMA's package.
# -------------------------------------------------------------------------------------------------

_TFMA = 'tensorflow_model_analysis'
_PRIVATE_PREFIX = '_headstream_tfma.'
_loaded: dict[str, types.ModuleType] = {}
_load_lock = threading.Lock()


def tfma_module(name: str) -> types.ModuleType:
    """TFMA's module `tensorflow_model_analysis.<name>` without running TFMA's package `__init__`.

    For modules that import nothing of TFMA's or TensorFlow's (the generated `proto.*_pb2`, and
    `version`). When TFMA is already imported, its own module is returned. Otherwise the module's
    file is executed from TFMA's package directory under a private name (never registered as
    `tensorflow_model_analysis.*`, so a later real import loads TFMA as usual). A proto module
    registers its descriptors in protobuf's default pool; TFMA's own copy registers the identical
    file again, which protobuf accepts, and both get the same message classes.

    Args:
      name: the dotted name below `tensorflow_model_analysis`, e.g. `proto.metrics_for_slice_pb2`.

    Raises:
      ImportError: TFMA is not installed (with `e.name` = 'tensorflow_model_analysis').
    """
    full = '%s.%s' % (_TFMA, name)
    if full in sys.modules:
        return sys.modules[full]
    with _load_lock:
        if name in _loaded:
            return _loaded[name]
        # find_spec of a top-level package locates it without executing it.
        spec = importlib.util.find_spec(_TFMA)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError('%s is not installed' % _TFMA, name=_TFMA)
        relative = os.path.join(*name.split('.')) + '.py'
        paths = [os.path.join(d, relative) for d in spec.submodule_search_locations]
        path = next((p for p in paths if os.path.isfile(p)), None)
        if path is None:
            # Not a plain source file (a zipped or compiled install): import TFMA itself.
            return importlib.import_module(full)
        # The generated protos depend on protobuf's well-known types; the pool must hold them.
        from google.protobuf import any_pb2, wrappers_pb2  # noqa: F401
        file_spec = importlib.util.spec_from_file_location(_PRIVATE_PREFIX + name, path)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        _loaded[name] = module
        return module


def slice_key_proto(key: tuple[tuple[str, Any], ...]) -> Any:
    """TFMA's `SliceKey` proto of a slice key, as `slicer_lib.serialize_slice_key` builds it:
    text as UTF-8 `bytes_value`, integers as `int64_value`, floats as `float_value`."""
    mfs = tfma_module('proto.metrics_for_slice_pb2')
    out = mfs.SliceKey()
    for column, value in key:
        single = out.single_slice_keys.add()
        single.column = column
        if isinstance(value, bytes):
            single.bytes_value = value
        elif isinstance(value, str):
            single.bytes_value = value.encode('utf-8')
        elif isinstance(value, int):
            single.int64_value = value
        elif isinstance(value, float):
            single.float_value = value
        else:
            raise TypeError('tfma: slice %r: value %r is not text or a number' % (column, value))
    return out


# -------------------------------------------------------------------------------------------------
# Keys.
# -------------------------------------------------------------------------------------------------

TypedValues = Mapping[tuple[str, str], Sequence[Any]]


def slice_key(slice_columns: str, slice_values: str, slices: Sequence[Sequence[str]],
              typed: TypedValues | None = None) -> tuple[tuple[str, Any], ...]:
    """TFMA's slice key for a table row: ((column, value), ...) sorted by column; () for Overall.

    The columns and values come from the row's `slice_columns` and `slice_values` cells
    (`schema.split_slice_parts`, the exact inverse of their escaping), never from `slice`.
    `typed` maps a row's (slice_columns, slice_values) to the values as the pipeline sliced them
    (int, float or str); a row it does not cover falls back to the text rule (`_slice_value`).

    Raises:
      ValueError: the row's slice columns are not one of `slices`, or its values are not one per
        column.
    """
    columns = schema.split_slice_parts(slice_columns)
    if not columns:
        return ()
    if not any(list(spec) == columns for spec in slices):
        raise ValueError('tfma: slice columns %r are not one of the configured slices %r'
                         % (slice_columns, [list(s) for s in slices]))
    values = (typed or {}).get((slice_columns, slice_values))
    if values is None:
        values = [_slice_value(v) for v in schema.split_slice_parts(slice_values)]
    if len(values) != len(columns):
        raise ValueError('tfma: slice %r: values %r are not one value per column %r'
                         % (slice_columns, slice_values, columns))
    return tuple(sorted(zip(columns, values), key=lambda cv: cv[0]))


def _slice_value(text: str) -> int | str:
    """A value's type from its text alone: a plain decimal integer is an int, the rest text."""
    if _INT_VALUE.match(text) and abs(int(text)) <= _INT64_MAX:
        return int(text)
    return text


def metric_name_and_class(metric: str) -> tuple[str, int | None]:
    """('auc', 2) for 'auc/class2'; (metric, None) for every other key."""
    m = _CLASS_KEY.match(metric)
    if m:
        return m.group('name'), int(m.group('id'))
    return metric, None


# -------------------------------------------------------------------------------------------------
# Rows.
# -------------------------------------------------------------------------------------------------

def check_head(head: str, head_names: Sequence[str], table: str, row: int) -> None:
    """Refuses a row whose head is not one of `head_names` (a ValueError naming table and row)."""
    if head not in head_names:
        raise ValueError('tfma: %s row %d: head %r is not one of %r'
                         % (table, row, head, list(head_names)))


def metrics_records(metrics: pa.Table, rows: list[int], slices: Sequence[Sequence[str]],
                    head_names: Sequence[str], typed: TypedValues | None,
                    keys: Any = None) -> list[bytes]:
    """One serialized `MetricsForSlice` per slice of the metrics table's `rows` (see the module
    docstring), heads in `head_names` order, then each head's example counts: assembled as bytes,
    all rows at once (pipeline/writers/tfma_metric_bytes.py). `keys`: a `slice_key` with the same
    arguments that remembers its answers (the writer's), else `slice_key` itself."""
    return list(iter_metrics_records(metrics, rows, slices, head_names, typed, keys))


def iter_metrics_records(metrics: pa.Table, rows: Sequence[int],
                         slices: Sequence[Sequence[str]], head_names: Sequence[str],
                         typed: TypedValues | None, keys: Any = None) -> Iterator[bytes]:
    """`metrics_records` one after another, assembled a few 100,000 rows at a time (for a file
    written as they come)."""
    from pipeline.writers import tfma_metric_bytes
    return tfma_metric_bytes.iter_metrics_records(metrics, rows, slices, head_names, typed,
                                                  keys or slice_key)


def metrics_records_by_message(metrics: pa.Table, rows: list[int],
                               slices: Sequence[Sequence[str]], head_names: Sequence[str],
                               typed: TypedValues | None) -> list[bytes]:
    """`metrics_records` built message by message (~10 µs a row): the mapping as protobuf
    calls, the reference the assembled bytes are checked against."""
    from google.protobuf import wrappers_pb2
    mfs = tfma_module('proto.metrics_for_slice_pb2')
    cols = {name: metrics.column(name).to_pylist() for name in
            ('slice_columns', 'slice_values', 'head', 'metric', 'value', 'lower_bound',
             'upper_bound', 'example_count', 'weighted_example_count')}
    for name in ('ci_lower', 'ci_upper', 'standard_error'):  # absent from older tables
        cols[name] = (metrics.column(name).to_pylist() if name in metrics.column_names
                      else [None] * metrics.num_rows)
    order = {h: i for i, h in enumerate(head_names)}
    by_slice: dict[tuple, list[int]] = {}
    for i in rows:
        key = slice_key(cols['slice_columns'][i], cols['slice_values'][i], slices, typed)
        check_head(cols['head'][i], head_names, 'metrics', i)
        by_slice.setdefault(key, []).append(i)
    records = []
    for key, slice_rows in by_slice.items():
        out = mfs.MetricsForSlice(slice_key=slice_key_proto(key))
        counts: dict[str, tuple[Any, Any]] = {}
        names_by_head: dict[str, set[str]] = {}
        for i in sorted(slice_rows, key=lambda i: order[cols['head'][i]]):
            head, metric = cols['head'][i], cols['metric'][i]
            name, class_id = metric_name_and_class(metric)
            names_by_head.setdefault(head, set()).add(name)
            kv = out.metric_keys_and_values.add()
            kv.key.name = name
            kv.key.output_name = head
            kv.key.example_weighted.value = True
            if class_id is not None:
                kv.key.sub_key.class_id.value = class_id
            value = cols['value'][i]
            kv.value.double_value.value = math.nan if value is None else float(value)
            lo, hi = cols['ci_lower'][i], cols['ci_upper'][i]
            if lo is None or hi is None:
                lo, hi = cols['lower_bound'][i], cols['upper_bound'][i]
            elif cols['standard_error'][i] is not None:
                kv.confidence_interval.standard_error.double_value.value = float(
                    cols['standard_error'][i])
            if lo is not None and hi is not None:
                kv.confidence_interval.lower_bound.double_value.value = float(lo)
                kv.confidence_interval.upper_bound.double_value.value = float(hi)
            counts.setdefault(head, (cols['example_count'][i], cols['weighted_example_count'][i]))
        for head in sorted(counts, key=order.get):
            count, weighted = counts[head]
            for name, value, weighted_flag in (('example_count', count, False),
                                               ('weighted_example_count', weighted, True)):
                if value is None or name in names_by_head[head]:
                    continue  # a head's own metric of that name wins
                kv = out.metric_keys_and_values.add()
                kv.key.name = name
                kv.key.output_name = head
                kv.key.example_weighted.CopyFrom(wrappers_pb2.BoolValue(value=weighted_flag))
                kv.value.double_value.value = float(value)
        records.append(out.SerializeToString())
    return records


def eval_run_json(slices: Sequence[Sequence[str]], head_names: Sequence[str]) -> bytes:
    """TFMA's `EvalRun` (eval_config.json) of the configured slices and heads, as JSON."""
    from google.protobuf import json_format
    config_pb2 = tfma_module('proto.config_pb2')

    eval_config = config_pb2.EvalConfig(
        model_specs=[config_pb2.ModelSpec()],
        slicing_specs=[config_pb2.SlicingSpec(feature_keys=list(s)) for s in slices],
        metrics_specs=[config_pb2.MetricsSpec(output_names=list(head_names))])
    run = config_pb2.EvalRun(eval_config=eval_config, version=tfma_module('version').VERSION,
                             data_location=UNKNOWN, file_format=UNKNOWN,
                             model_locations={'': UNKNOWN})
    return json_format.MessageToJson(run).encode('utf-8')
