"""TFMA-compatible output: `<output>/tfma/`, read by `tensorflow_model_analysis.load_eval_result`.

The files are those TFMA 0.52's default writers produce (`tfma.default_writers(...,
output_file_format='tfrecord')`):

    tfma/eval_config.json                    EvalRun as JSON (non-empty `version`)
    tfma/metrics-00000-of-00001.tfrecord     one MetricsForSlice per slice
    tfma/plots-00000-of-00001.tfrecord       one PlotsForSlice per slice (that has curves)

so `load_eval_result(path)`, `load_metrics(path)` and `load_plots(path)` read them with their
default arguments, and TFMA's notebook views render them.

This module owns the files: checking the tables' rows, splitting them into evaluations, and
writing each evaluation's three files (TFRecord framing by `pipeline.fileio`). How rows become
TFMA's protos (slice keys, metric keys) is pipeline/writers/tfma_protos.py, plots tfma_plots.py.

Windows and steps: TFMA has neither. When the tables hold several evaluations (several
window_start or step values), each is written to its own loadable directory,
`tfma/step=120000/`, `tfma/window=20261123T080000Z/` (or `tfma/step=...,window=.../`), the
layout `tfma.load_eval_results([...])` takes for a time series; `tfma/` itself then holds the
latest one (highest step, then latest window). With a single evaluation, only `tfma/`.

Writing imports neither TensorFlow nor TFMA's package (see tfma_protos.py).
"""
from __future__ import annotations

import datetime
import math
import struct
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np
import pyarrow as pa

from pipeline import fileio, schema
from pipeline.writers import tfma_metric_bytes, tfma_plots, tfma_slice_keys
from pipeline.writers import tfma_protos as protos

TFMA_DIR = 'tfma'
METRICS_FILE = 'metrics-00000-of-00001.tfrecord'
PLOTS_FILE = 'plots-00000-of-00001.tfrecord'
EVAL_CONFIG_FILE = 'eval_config.json'


def _evaluation_dir(window_start: datetime.datetime | None, step: int | None) -> str:
    """An evaluation's directory name under tfma/: `step=5`, `window=20261123T080000Z`, both."""
    parts = []
    if step is not None:
        parts.append('step=%d' % step)
    if window_start is not None:
        t = window_start.astimezone(datetime.timezone.utc)
        text = t.strftime('%Y%m%dT%H%M%S')
        if t.microsecond:
            text += '.%06d' % t.microsecond
        parts.append('window=%sZ' % text)
    return ','.join(parts)


def _evaluations(table: pa.Table) -> dict[tuple[Any, Any], np.ndarray | None]:
    """The table's rows (ascending positions; None: all of them) per evaluation (window_start,
    step): one evaluation (None, None) of every row when the table has neither column; else
    grouped with numpy."""
    n = table.num_rows
    columns = [c for c in ('window_start', 'step') if c in table.column_names]
    if not n:
        return {}
    if not columns:
        return {(None, None): None}
    parts = []
    for c in columns:
        col = table.column(c).combine_chunks()
        parts.append(col.is_null().to_numpy(zero_copy_only=False).astype(np.int64))
        parts.append(col.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False))
    _, first, inverse = np.unique(np.stack(parts), axis=1, return_index=True,
                                  return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind='stable')
    splits = np.searchsorted(inverse[order], np.arange(1, len(first)))
    out: dict[tuple[Any, Any], np.ndarray | None] = {}
    if len(first) == 1:
        key = tuple(table.column(c)[0].as_py() if c in columns else None
                    for c in ('window_start', 'step'))
        return {key: None}
    for g, rows in enumerate(np.split(order, splits)):
        row = int(first[g])
        key = tuple(table.column(c)[row].as_py() if c in columns else None
                    for c in ('window_start', 'step'))
        out[key] = rows
    return out


def _dictionary(column: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """A column as codes (a dictionary column's own indices; null its own, last code) and the
    values."""
    codes, values = tfma_slice_keys.column_codes(column)
    return codes.astype(np.int64), values.to_pylist() + [None]


def _row_codes(table: pa.Table, columns: Sequence[str]
               ) -> tuple[np.ndarray | None, list[tuple[np.ndarray, pa.Array]]]:
    """One int64 per row, equal for rows equal in `columns` (the columns' codes combined in
    mixed radix; None when that would overflow), and each column's codes and distinct values
    (`tfma_slice_keys.column_codes`: a value's code is its place, null the last code)."""
    encoded = [tfma_slice_keys.column_codes(table.column(c)) for c in columns]
    if math.prod(len(values) + 1 for _, values in encoded) >= 2 ** 62:
        return None, encoded
    combined = np.zeros(table.num_rows, np.int64)
    for codes, values in encoded:
        combined *= len(values) + 1
        combined += codes
    return combined, encoded


def _distinct_rows(table: pa.Table, columns: Sequence[str]) -> Iterable[tuple]:
    """(first row, *values) of each distinct combination of `columns`, by first row."""
    if table.num_rows == 0:
        return []
    combined, encoded = _row_codes(table, columns)
    if combined is None:  # too many combinations for one int64: let Arrow group
        indexed = table.select(list(columns)).append_column(
            '_row', pa.array(np.arange(table.num_rows, dtype=np.int64)))
        groups = indexed.group_by(list(columns), use_threads=False).aggregate([('_row', 'min')])
        return sorted(zip(groups.column('_row_min').to_pylist(),
                          *(groups.column(c).to_pylist() for c in columns)))
    _, first = tfma_slice_keys.first_of(
        combined, math.prod(len(values) + 1 for _, values in encoded))
    texts = [values.to_pylist() + [None] for _, values in encoded]
    return ((i,) + tuple(values[codes[i]] for (codes, _), values in zip(encoded, texts))
            for i in first.tolist())


class _SliceKeys:
    """`protos.slice_key` of each distinct (slice_columns, slice_values) for the checks and the
    records (a run with many slices has millions of rows, 100,000s of slices): a slice of a spec
    seen before, with its typed values, is put together without parsing; any other is parsed
    once and remembered."""

    def __init__(self, slices: Sequence[Sequence[str]], typed: protos.TypedValues | None):
        self.slices, self.typed = slices, typed or {}
        self._made: dict[tuple[str, str], tuple] = {}
        # slice_columns → (its columns, their positions sorted by column), once checked
        self._specs: dict[str, tuple[list[str], list[int]]] = {}

    def __call__(self, columns: str, values: str, slices: Any = None, typed: Any = None
                 ) -> tuple:
        spec, typed_values = self._specs.get(columns), self.typed.get((columns, values))
        if spec is not None and typed_values is not None and len(typed_values) == len(spec[0]):
            # Put together each time: remembering 1M such keys would cost ~300 MB.
            return tuple((spec[0][j], typed_values[j]) for j in spec[1])
        key = self._made.get((columns, values))
        if key is None:
            key = self._made[(columns, values)] = protos.slice_key(columns, values, self.slices,
                                                                   self.typed)
            names = schema.split_slice_parts(columns)
            self._specs[columns] = (names, sorted(range(len(names)), key=names.__getitem__))
        return key


def _check_slices_and_heads(table: pa.Table, name: str, head_names: Sequence[str],
                            keys: _SliceKeys) -> None:
    """Refuses the first row (in table order) whose slice or head is not declared, as checking
    row by row would: each distinct slice and each distinct head at its first row."""
    bad = None
    for i, columns, values in _distinct_rows(table, ('slice_columns', 'slice_values')):
        try:
            keys(columns, values)
        except ValueError as e:
            bad = (i, e)
            break
    for i, head in _distinct_rows(table, ('head',)):
        if head not in head_names and (bad is None or i < bad[0]):
            protos.check_head(head, head_names, name, i)
    if bad is not None:
        raise bad[1]


def _check_duplicates(metrics: pa.Table) -> None:
    """Refuses a (slice, head, metric) that appears twice in one evaluation, naming its second
    row (looked for row by row only when counting the combined codes finds one)."""
    columns = [c for c in ('window_start', 'step') if c in metrics.column_names]
    columns += ['slice', 'head', 'metric']
    if metrics.num_rows == 0:
        return
    combined, encoded = _row_codes(metrics, columns)
    if combined is not None:
        space = math.prod(len(values) + 1 for _, values in encoded)
        if space <= 4 * metrics.num_rows + (1 << 20):  # counted in a dense table
            if np.bincount(combined, minlength=space).max() <= 1:
                return
        else:
            ordered = np.sort(combined)
            if not np.any(ordered[1:] == ordered[:-1]):
                return
    elif metrics.select(columns).group_by(columns, use_threads=False).aggregate(
            []).num_rows == metrics.num_rows:
        return
    del combined, encoded
    seen: set[tuple] = set()
    for i, key in enumerate(zip(*(metrics.column(c).to_pylist() for c in columns))):
        if key in seen:
            raise ValueError('tfma: metrics row %d: (slice %r, head %r, metric %r) appears twice '
                             'in one evaluation' % (i, key[-3], key[-2], key[-1]))
        seen.add(key)


def _check_metrics(metrics: pa.Table, head_names: Sequence[str],
                   index: tfma_slice_keys.SliceIndex) -> None:
    """`_check_slices_and_heads` of the metrics table, its slices already keyed by `index`."""
    bad = index.bad
    for i, head in _distinct_rows(metrics, ('head',)):
        if head not in head_names and (bad is None or i < bad[0]):
            protos.check_head(head, head_names, 'metrics', i)
    if bad is not None:
        raise bad[1]


def _check_plots(plots: pa.Table, head_names: Sequence[str], keys: _SliceKeys) -> None:
    """Checks every plots row's slice, head and curve."""
    _check_slices_and_heads(plots, 'plots', head_names, keys)
    for i, curve in _distinct_rows(plots, ('curve',)):
        if curve not in ('confusion', 'calibration'):
            raise ValueError('tfma: plots row %d: curve %r is not confusion or calibration'
                             % (i, curve))


# The plots as one table, or as a callable giving the plots table's pieces (each slice whole in
# one piece) anew on every call, so a run with many slices never holds all its plots at once.
Plots = Union[pa.Table, Callable[[], Iterable[pa.Table]]]


def _pieces(plots: Plots) -> Iterable[pa.Table]:
    return [plots] if isinstance(plots, pa.Table) else plots()


class _Framer:
    """TFRecord framing of records (length, its masked CRC-32C, the record, its masked CRC),
    many records joined at a time; the length's checksum made once per distinct length."""

    def __init__(self) -> None:
        from apache_beam.io.tfrecordio import _TFRecordUtil
        self._masked = _TFRecordUtil._masked_crc32c
        self._heads: dict[int, bytes] = {}

    def frame(self, records: Iterable[bytes]) -> bytes:
        parts = []
        heads, masked, pack = self._heads, self._masked, struct.pack
        for record in records:
            n = len(record)
            head = heads.get(n)
            if head is None:
                length = pack('<Q', n)
                head = heads[n] = length + pack('<I', masked(length))
            parts += (head, record, pack('<I', masked(record)))
        return b''.join(parts)


def _write_records(path: str, records: Iterable[bytes], batch: int = 4096) -> None:
    """Streams TFRecord records into the file at `path` as they come, `batch` records framed
    and written at a time (a metrics file of many slices is hundreds of MB: never held
    whole)."""
    framer = _Framer()

    def write(f: Any) -> None:
        pending: list[bytes] = []
        for record in records:
            pending.append(record)
            if len(pending) >= batch:
                f.write(framer.frame(pending))
                pending = []
        if pending:
            f.write(framer.frame(pending))
    fileio.write_atomically(path, write)


def _write_plot_records(path: str, plots: Plots, evaluation: tuple[Any, Any],
                        slices: Sequence[Sequence[str]], head_names: Sequence[str],
                        typed: protos.TypedValues | None) -> None:
    """Streams one evaluation's PlotsForSlice records into the TFRecord file at `path`, piece
    by piece."""
    framer = _Framer()

    def write(f: Any) -> None:
        for piece in _pieces(plots):
            evaluations = _evaluations(piece)
            rows = evaluations.get(evaluation, np.empty(0, np.int64))
            rows = list(range(piece.num_rows)) if rows is None else rows.tolist()
            f.write(framer.frame(tfma_plots.plots_records(piece, rows, slices, head_names,
                                                          typed)))
    fileio.write_atomically(path, write)


def write_tfma(output_dir: str, metrics: pa.Table, plots: Plots, slices: list[list[str]],
               head_names: list[str], typed: protos.TypedValues | None = None) -> None:
    """Writes `<output_dir>/tfma/` for TFMA's loaders (the mapping is in tfma_protos.py).

    Args:
      output_dir: the run's output directory, local or gs://.
      metrics: the metrics table (`pipeline.schema.METRICS`, with window / step columns if any).
      plots: the plots table (`pipeline.schema.PLOTS`, likewise), or a callable giving its
        pieces (each slice whole in one piece), read once per evaluation and streamed.
      slices: the configured slices, each a list of columns (`[]` is Overall): every row's
        `slice_columns` must be one of them.
      head_names: every head name the tables may hold (the MultiHead's included), in output order.
      typed: (slice_columns, slice_values) → the slice's values as the pipeline sliced them (int,
        float, str), for typed slice keys (`typed_slice_values`); rows it does not cover are typed
        from their text.

    Raises:
      ValueError: naming the table, row and value, for a head or slice the arguments do not
        declare, or a (slice, head, metric) that appears twice in one evaluation.
    """
    plot_keys: set[tuple[Any, Any]] = set()
    checked = False
    keys = _SliceKeys(slices, typed)
    # Each distinct slice of the metrics keyed once, for the checks and every evaluation.
    index = tfma_slice_keys.SliceIndex(metrics, slices, typed, keys)
    _check_metrics(metrics, head_names, index)
    for piece in _pieces(plots):  # each piece checked (as a table of its own) and dropped
        _check_plots(piece, head_names, keys)
        if not checked:
            _check_duplicates(metrics)
        checked = True
        plot_keys |= set(_evaluations(piece))
    if not checked:
        _check_duplicates(metrics)
    base = fileio.join(output_dir, TFMA_DIR)
    metric_rows = _evaluations(metrics)
    evaluations = sorted(set(metric_rows) | set(plot_keys),
                         key=lambda ws: (ws[1] is not None, ws[1] or 0,
                                         ws[0] is not None, ws[0] or 0))
    if not evaluations:
        evaluations = [(None, None)]  # empty tables: an empty but loadable result
    config_json = protos.eval_run_json(slices, head_names)
    for n, evaluation in enumerate(evaluations):
        m_rows = metric_rows.get(evaluation, np.empty(0, np.int64))
        targets = []
        if len(evaluations) > 1:
            targets.append(fileio.join(base, _evaluation_dir(*evaluation)))
        if n == len(evaluations) - 1:
            targets.append(base)  # the latest evaluation is also tfma/ itself
        for target in targets:
            fileio.write_bytes(fileio.join(target, EVAL_CONFIG_FILE), config_json)
            _write_records(fileio.join(target, METRICS_FILE),
                           tfma_metric_bytes.iter_metrics_records(
                               metrics, m_rows, slices, head_names, typed, keys, index))
            _write_plot_records(fileio.join(target, PLOTS_FILE), plots, evaluation, slices,
                                head_names, typed)
