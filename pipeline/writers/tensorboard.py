"""TensorBoard output: one run per slice, scalars per metric row, PR curves and probability
histograms per head, written with the `tensorboard` package's protos (never TensorFlow).

Layout under the log directory (see docs/tensorboard.md):

    <logdir>/Overall/events.out.tfevents.headstream.<run_id>
    <logdir>/country=US/...
    <logdir>/country=US,device=mobile/...
    <logdir>/Overall/step=120000/...        (runs with windows and a step: one run per step)

- Every metrics row becomes a scalar tagged `<head>/<metric>` (`click/auc`,
  `click/accuracy/positive_threshold_0.5`, `click/loss`) at the row's step: a float32 tensor with
  the scalars plugin's metadata (TensorBoard keeps scalars in float32; its data server ignores
  scalar tensors of other dtypes), so it shows the row's value rounded to float32.
- Every (head, sub_key) with confusion rows becomes a PR curve tagged `<head>/pr_curve` (or
  `<head>/pr_curve/<sub_key>`) through the pr_curves plugin: its [6, n] float32 tensor holds the
  rows' tp, fp, tn, fn, precision and recall as the tables have them (not recomputed), ordered by
  increasing threshold. The plugin labels point i with threshold i / (n - 1), so the curve is
  built from the evenly spaced rows only: a head's confusion rows hold the AUC's n thresholds
  (Keras's grid: 0 − ε, 1/(n−1), …, (n−2)/(n−1), 1 + ε) with the head's own thresholds (0.3,
  0.5, ...) sorted among them, and the writer keeps the largest such grid found among a group's
  thresholds (`even_threshold_rows`), dropping the others (they remain in the metrics scalars
  and the plots table). A group without such a grid (tables written by other means) is plotted
  whole, its threshold readout then being the plugin's.
- Every (head, sub_key) with calibration rows becomes a histogram of predicted probabilities
  tagged `<head>/predictions` (or `<head>/predictions/<sub_key>`): buckets [bucket_lower,
  bucket_upper) with the weighted example count Σw (histograms plugin, float64 [k, 3] tensor).

Steps: for windowed runs, the window's end in whole seconds since the epoch (so TensorBoard's step
axis is event time); otherwise the tables' `step` column when present; otherwise 0. Wall time is
the row's `evaluated_at`.

Windows and a step together (`window:` plus `tensorboard.step`, an int or a column): every window
of every step is kept. The step axis is then event time (the window's end, as in any windowed run)
and each step gets its own run nested under the slice's run, `<slice run>/step=<step>`
(`Overall/step=120000`): one curve per checkpoint over event time, which the run selector can
compare. TensorBoard keeps one value per (run, tag, step), so windows at one step of one run, or
steps at one window end, would otherwise overwrite each other.

Run names: `Overall`, or `column=value` pairs joined by `,` in the slice's column order. Each
column and value is percent-escaped (`urllib.parse.quote`, only letters, digits and `_.-~` kept),
so `/`, `=`, `,`, `%`, spaces and the like cannot split or confuse the directory name:
`path=/a b` → run `path=%2Fa%20b`. Columns and values are taken from `slice_columns` and
`slice_values` (unescaped by `schema.split_slice_parts`), never by splitting `slice`. A name
longer than 200 bytes (`MAX_RUN_BYTES`; file systems allow 255, and 29 CJK characters escape to
261) is cut after at most 183 bytes, between two characters (never inside one's `%XX` escapes),
followed by `~` and the first
16 hex digits of the SHA-256 of the slice (`slice_columns:slice_values`), so two long values
never share a run.

Paths: files are written through Beam's `FileSystems`, so `logdir` may be local or `gs://...`
(then TensorBoard reads it with `tensorboard --logdir gs://...`). Each file is written under a
temporary name without "tfevents" in it (TensorBoard ignores it) and then renamed. The file name
carries the run id, so writing the same run again replaces its files rather than duplicating
points, while runs with other ids (other checkpoints) add theirs next to them.
"""
from __future__ import annotations

import datetime
import hashlib
import urllib.parse
import uuid
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from pipeline import fileio, schema

OVERALL = 'Overall'
FILE_VERSION = 'brain.Event:2'
MAX_RUN_BYTES = 200  # a run's directory name; file systems allow 255 bytes


def run_name(slice_columns: str, slice_values: str) -> str:
    """The run directory name of a slice: `Overall`, `country=US`, `country=US,device=mobile`.

    Columns and values come from the `slice_columns` and `slice_values` cells
    (`schema.split_slice_parts`) and are percent-escaped; a name longer than `MAX_RUN_BYTES` is
    cut (`_shorten`).
    """
    columns = schema.split_slice_parts(slice_columns)
    if not columns:
        return OVERALL
    values = schema.split_slice_parts(slice_values)
    pieces = []  # the name as escaped characters, to cut it between two of them
    for c, v in zip(columns, values):
        pieces += ([','] if pieces else []) + _escaped_chars(c) + ['='] + _escaped_chars(v)
    return _shorten(pieces, '%s:%s' % (slice_columns, slice_values))


def _escaped_chars(text: str) -> list[str]:
    return [_escape(ch) for ch in text]


def _shorten(pieces: list[str], whole: str) -> str:
    """The joined `pieces` when at most `MAX_RUN_BYTES` long, else the longest run of whole
    pieces (characters, never a part of one's escape) that leaves room for `~` + 16 hex digits
    of the SHA-256 of `whole` (the slice), so two long slices sharing their start keep apart."""
    name = ''.join(pieces)
    if len(name) <= MAX_RUN_BYTES:  # escaped: ASCII, one byte per character
        return name
    digest = hashlib.sha256(whole.encode('utf-8')).hexdigest()[:16]
    room = MAX_RUN_BYTES - len(digest) - 1
    kept = 0
    for n, piece in enumerate(pieces):
        if kept + len(piece) > room:
            return '%s~%s' % (''.join(pieces[:n]), digest)
        kept += len(piece)
    return name  # not reached: the whole name is longer than room


def _escape(text: str) -> str:
    return urllib.parse.quote(text, safe='')


def _epoch_seconds(t: datetime.datetime | None) -> float:
    return 0.0 if t is None else t.timestamp()


def _windowed_and_stepped(table: pa.Table) -> bool:
    return 'window_end' in table.column_names and 'step' in table.column_names


def _steps(table: pa.Table) -> list[int]:
    """Each row's TensorBoard step: the window end when windowed, else the `step` column, else 0."""
    if 'window_end' in table.column_names:
        return [int(_epoch_seconds(t) // 1) for t in table.column('window_end').to_pylist()]
    if 'step' in table.column_names:
        return [0 if s is None else int(s) for s in table.column('step').to_pylist()]
    return [0] * len(table)


def _runs(table: pa.Table) -> list[str]:
    """Each row's run: the slice's run, plus `/step=<step>` when the table has windows and steps."""
    # One name per distinct slice (a slice has hundreds of plot rows; escaping is per character).
    made: dict[tuple[str, str], str] = {}
    names = [made.get(key) or made.setdefault(key, run_name(*key))
             for key in zip(table.column('slice_columns').to_pylist(),
                            table.column('slice_values').to_pylist())]
    if not _windowed_and_stepped(table):
        return names
    return ['%s/step=%d' % (name, 0 if step is None else int(step))
            for name, step in zip(names, table.column('step').to_pylist())]


def _scalar_value(tag: str, value: float) -> Any:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.scalar import metadata
    from tensorboard.util import tensor_util
    return summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(display_name=tag, description=''),
        # float32, as every TensorBoard scalar: TensorBoard's data server (its default loader)
        # silently drops scalar tensors of any other dtype. Exact values are in the tables.
        tensor=tensor_util.make_tensor_proto(np.float32(value)))


def _pr_curve_value(tag: str, tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray,
                    precision: np.ndarray, recall: np.ndarray) -> Any:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.pr_curve import metadata
    from tensorboard.util import tensor_util
    data = np.stack([tp, fp, tn, fn, precision, recall]).astype(np.float32)
    return summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(
            display_name=tag, description='', num_thresholds=data.shape[1]),
        tensor=tensor_util.make_tensor_proto(data))


def _histogram_value(tag: str, lower: np.ndarray, upper: np.ndarray,
                     counts: np.ndarray) -> Any:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.histogram import metadata
    from tensorboard.util import tensor_util
    data = np.stack([lower, upper, counts], axis=1).astype(np.float64)
    return summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(display_name=tag, description=''),
        tensor=tensor_util.make_tensor_proto(data))


def _sub_tag(head: str, kind: str, sub_key: str) -> str:
    return '%s/%s/%s' % (head, kind, sub_key) if sub_key else '%s/%s' % (head, kind)


# A file's events: {(run dir, run_id): {step: (wall time, [Summary.Value])}}
_Events = dict[tuple[str, str], dict[int, tuple[float, list]]]


def _add(events: _Events, run: str, run_id: str, step: int, wall: float, value: Any) -> None:
    by_step = events.setdefault((run, run_id), {})
    old_wall, values = by_step.get(step, (wall, []))
    values.append(value)
    by_step[step] = (max(old_wall, wall), values)


def _metric_events(metrics: pa.Table, events: _Events) -> None:
    cols = {c: metrics.column(c).to_pylist() for c in
            ('run_id', 'evaluated_at', 'head', 'metric', 'value')}
    steps = _steps(metrics)
    runs = _runs(metrics)
    seen: set[tuple] = set()
    for i in range(len(metrics)):
        tag = '%s/%s' % (cols['head'][i], cols['metric'][i])
        key = (runs[i], cols['run_id'][i], tag, steps[i])
        if key in seen:
            raise ValueError('tensorboard: metrics row %d: run %r tag %r step %d appears twice '
                             '(one value per slice, head, metric, window and step)'
                             % (i, runs[i], tag, steps[i]))
        seen.add(key)
        value = cols['value'][i]
        _add(events, runs[i], cols['run_id'][i], steps[i],
             _epoch_seconds(cols['evaluated_at'][i]),
             _scalar_value(tag, np.nan if value is None else value))


def _float_columns(table: pa.Table, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Numeric columns as float64 arrays, null as NaN."""
    import pyarrow.compute as pc
    return {c: pc.fill_null(table.column(c).cast(pa.float64()), np.nan).to_numpy()
            for c in names}


def _codes(values: Any) -> np.ndarray:
    """Codes of a column's (or list's) values: equal values, equal codes."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else pa.array(values)
    return array.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _plot_groups(plots: pa.Table, runs: list[str], steps: list[int]) -> list[np.ndarray]:
    """The plots rows per (run, run_id, step, head, sub_key, curve), each group's rows in table
    order and the groups in order of their first row."""
    keys = np.stack([_codes(runs), _codes(plots.column('run_id')),
                     np.asarray(steps, np.int64)] +
                    [_codes(plots.column(c)) for c in ('head', 'sub_key', 'curve')])
    _, first, inverse = np.unique(keys, axis=1, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    group = rank[inverse.ravel()]
    order = np.argsort(group, kind='stable')
    return np.split(order, np.searchsorted(group[order], np.arange(1, len(first))))


def _plot_events(plots: pa.Table, events: _Events) -> None:
    """A PR curve per confusion group and a histogram per calibration group (see the module
    docstring), grouped with numpy: a run capped at `max_runs` slices still has 300k rows."""
    if plots.num_rows == 0:
        return
    curves = plots.column('curve').to_pylist()
    bad = [i for i, c in enumerate(curves) if c not in ('confusion', 'calibration')][:1]
    if bad:
        raise ValueError('tensorboard: plots row %d: curve %r is not confusion or calibration'
                         % (bad[0], curves[bad[0]]))
    nums = _float_columns(plots, ('threshold', 'tp', 'fp', 'tn', 'fn', 'precision', 'recall',
                                  'bucket_lower', 'bucket_upper', 'weighted_examples'))
    micros = plots.column('evaluated_at').cast(pa.int64()).to_numpy(zero_copy_only=False)
    walls = np.where(np.isnan(micros.astype(np.float64)), 0.0, micros / 1e6)
    text = {c: plots.column(c).to_pylist() for c in ('run_id', 'head', 'sub_key')}
    runs, steps = _runs(plots), _steps(plots)
    for rows in _plot_groups(plots, runs, steps):
        i = int(rows[0])
        head, sub_key, curve = text['head'][i], text['sub_key'][i], curves[i]
        if curve == 'confusion':
            rows = rows[np.argsort(nums['threshold'][rows], kind='stable')]
            rows = rows[even_threshold_rows(nums['threshold'][rows].tolist())]
            value = _pr_curve_value(_sub_tag(head, 'pr_curve', sub_key),
                                    **{c: nums[c][rows] for c in ('tp', 'fp', 'tn', 'fn',
                                                                   'precision', 'recall')})
        else:
            rows = rows[np.argsort(nums['bucket_lower'][rows], kind='stable')]
            value = _histogram_value(_sub_tag(head, 'predictions', sub_key),
                                     nums['bucket_lower'][rows], nums['bucket_upper'][rows],
                                     nums['weighted_examples'][rows])
        _add(events, runs[i], text['run_id'][i], steps[i], float(walls[rows].max()), value)


# Tolerances for recognising the AUC's threshold grid in stored float64 thresholds: its ends are
# 0 − 1e-7 and 1 + 1e-7 (Keras's epsilon); its inner points are i / (n − 1) computed in float64.
_GRID_END_TOL = 1e-6
_GRID_POINT_TOL = 1e-9


def even_threshold_rows(thresholds: Sequence[float]) -> list[int]:
    """Positions, in `thresholds` (sorted ascending), of the rows forming an evenly spaced grid.

    The grid is the largest n ≥ 2 whose points 0 (within 1e-6, or below), i / (n − 1) for
    0 < i < n − 1 (within 1e-9) and 1 (within 1e-6, or above) are all present; each grid point
    takes the first row at it. Without such a grid, every position (the group is plotted whole).
    """
    t = np.asarray(thresholds, dtype=np.float64)
    m = t.size
    every = list(range(m))
    if m < 2 or not (t[0] <= _GRID_END_TOL and t[-1] >= 1.0 - _GRID_END_TOL):
        return every
    first = 0
    last = int(np.flatnonzero(t >= 1.0 - _GRID_END_TOL)[0])
    for n in range(m, 1, -1):
        inner = np.arange(1, n - 1, dtype=np.float64) / (n - 1)
        at = np.searchsorted(t, inner - _GRID_POINT_TOL)
        if np.any(at >= m):
            continue
        if np.all(np.abs(t[np.minimum(at, m - 1)] - inner) <= _GRID_POINT_TOL):
            return [first] + [int(j) for j in at] + [last]
    return every


def _event_file(by_step: dict[int, tuple[float, list]]) -> bytes:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    first_wall = min(w for w, _ in by_step.values()) if by_step else 0.0
    records = [event_pb2.Event(wall_time=first_wall, file_version=FILE_VERSION)
               .SerializeToString()]
    for step in sorted(by_step):
        wall, values = by_step[step]
        records.append(event_pb2.Event(wall_time=wall, step=step,
                                       summary=summary_pb2.Summary(value=values))
                       .SerializeToString())
    return fileio.tfrecord_bytes(records)


def _write_file(directory: str, name: str, data: bytes) -> str:
    directory = directory.rstrip('/')
    path = fileio.join(directory, name)
    # No "tfevents" in the temporary name: a TensorBoard watching the directory skips it.
    fileio.write_bytes(path, data,
                       tmp=fileio.join(directory, '.headstream-tmp-%s' % uuid.uuid4().hex[:12]))
    return path


def write_tensorboard(logdir: str, metrics: pa.Table, plots: pa.Table) -> list[str]:
    """Writes one TensorBoard run per slice under `logdir` (see the module docstring).

    Args:
      logdir: the log directory, local or gs://.
      metrics: the metrics table (`pipeline.schema.METRICS`, with window / step columns if any).
      plots: the plots table (`pipeline.schema.PLOTS`, likewise).

    Returns:
      The event files written, one per (slice, run id).

    Raises:
      ValueError: naming the row, for a (slice, head, metric, window, step) that appears twice,
        or a plots row whose curve is neither confusion nor calibration.
    """
    events: _Events = {}
    _metric_events(metrics, events)
    _plot_events(plots, events)
    written = []
    for (run, run_id), by_step in sorted(events.items()):
        data = _event_file(by_step)
        # Named after the run id alone (run ids start with their start time, so they sort in time
        # order): rewriting a run, even at a later wall time, replaces its file.
        name = 'events.out.tfevents.headstream.%s' % _escape(run_id)
        written.append(_write_file(fileio.join(logdir, run), name, data))
    return written
