"""Streaming evaluation: metrics per event-time window, re-emitted as panes fire.

    evaluate_streaming(config, ['--runner=DataflowRunner', '--input_subscription=...', ...])

The graph (the config must have `window:`):

    source ──► ApplyHeads (the batch path's own DoFn: bad rows, slice / window keys, SubBatches)
           ──► timestamp each (key, SubBatch) at its key's window start
           ──► WindowInto(FixedWindows | one window per start for sliding windows,
                          AfterWatermark(early=AfterProcessingTime(early_firing),
                                         late=AfterCount(1)),
                          ACCUMULATING, allowed_lateness)
           ──► CombinePerKey over one key per window: every (slice, head) state of the window,
               each accumulated by `pipeline.combine.HeadStateCombineFn`
           ──► WritePane: per pane, the window's metrics and plots tables (`window_start`,
               `window_end`, `pane`, `pane_index` columns) as Parquet

Sources: Pub/Sub (`--input_subscription` or `--input_topic`; JSON messages holding one row each,
with the config's columns), or the config's `input.pattern` matched continuously
(`--poll_interval` seconds; Beam's `MatchContinuously`), both on Dataflow. A local directory is
better served by `headstream watch` (`pipeline/watch.py`), which needs no streaming runner.

Windows are assigned by `ApplyHeads` exactly as in batch runs (epoch-aligned, half-open
[start, start + size), a row in every sliding window holding it), so a window's pane holds exactly
the rows of that window that arrived before it fired. Panes accumulate: each pane's rows are the
full metrics of its window so far. Rows for a window whose end + `allowed_lateness` the watermark
has passed are dropped by Beam, as in every windowed streaming pipeline.

Files per pane (under `output`):
  panes/metrics/window-<start>-pane-<index>.parquet  every pane (`pane_index` 0, 1, ...)
  panes/plots/window-<start>-pane-<index>.parquet
  metrics/window-<start>.parquet                     the window's latest pane (replaced)
  plots/window-<start>.parquet
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import uuid
from typing import Any, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms import trigger as beam_trigger
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Duration, Timestamp

from pipeline import config as config_lib
from pipeline import sources
from pipeline.apply import ApplyHeads
from pipeline.combine import HeadStateCombineFn
from pipeline.elements import ERRORS_TAG, STATS_TAG, Key, SourceBatch
from pipeline.results import KeyResult, build_tables, state_result
from pipeline.writers import parquet as parquet_writer

_log = logging.getLogger(__name__)

# Pane timing names, as the `pane` column spells them.
EARLY, ON_TIME, LATE, UNKNOWN = 'early', 'on_time', 'late', 'unknown'
PANE_FIELDS = [pa.field('pane', pa.string(), nullable=False),
               pa.field('pane_index', pa.int64(), nullable=False)]
# Pub/Sub messages per Arrow record batch: small, so a pane never waits on a half-full batch.
MESSAGES_PER_BATCH = 1000


# -------------------------------------------------------------------------------------------------
# Tables with pane columns, file names.
# -------------------------------------------------------------------------------------------------

def pane_schema(table_schema: pa.Schema) -> pa.Schema:
    """A windowed table's schema plus the `pane` and `pane_index` columns."""
    return pa.schema(list(table_schema) + PANE_FIELDS)


def with_pane(table: pa.Table, timing: str, index: int) -> pa.Table:
    """`table` with constant `pane` (early | on_time | late | unknown) and `pane_index` columns."""
    n = table.num_rows
    return pa.Table.from_arrays(
        list(table.columns) + [pa.array([timing] * n, pa.string()),
                               pa.array(np.full(n, index, np.int64))],
        schema=pane_schema(table.schema))


def window_tag(start_us: int) -> str:
    """A window's start as a file-name stamp: `20261123T091000Z` (`...T091000.250000Z` when the
    start is not on a whole second)."""
    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        microseconds=int(start_us))
    stamp = t.strftime('%Y%m%dT%H%M%S')
    return stamp + ('.%06d' % t.microsecond if t.microsecond else '') + 'Z'


def pane_paths(output: str, start_us: int, index: int) -> dict[str, str]:
    """The files one pane of one window is written to (see the module docstring)."""
    tag = window_tag(start_us)
    join = parquet_writer.join
    return {
        'metrics': join(output, 'metrics/window-%s.parquet' % tag),
        'plots': join(output, 'plots/window-%s.parquet' % tag),
        'pane_metrics': join(output, 'panes/metrics/window-%s-pane-%04d.parquet' % (tag, index)),
        'pane_plots': join(output, 'panes/plots/window-%s-pane-%04d.parquet' % (tag, index)),
    }


def _latest_index(path: str) -> int:
    """The pane index of the window's latest-pane file at `path` (-1 when there is none)."""
    from apache_beam.io.filesystems import FileSystems
    if not FileSystems.exists(path):
        return -1
    import pyarrow.parquet as pq
    with FileSystems.open(path) as f:
        column = pq.read_table(pa.BufferReader(f.read()), columns=['pane_index']).column(0)
    return int(column[0].as_py()) if len(column) else -1


def write_pane(config: config_lib.EvalConfig, results: Sequence[KeyResult], run_id: str,
               start_us: int, timing: str, index: int) -> dict[str, Any]:
    """Writes one pane of one window: its history files and the window's latest tables.

    Args:
      config: the windowed config (its output directory receives the files).
      results: every (slice, head) result of the window, keys carrying `window_start = start_us`.
      run_id: stamped on every row.
      start_us: the window's start, microseconds since the epoch.
      timing: early | on_time | late | unknown.
      index: the pane's index within its window (0 for the first pane).

    Returns:
      {'window_start', 'pane', 'pane_index', 'metrics_rows', 'paths'}.
    """
    evaluated_at = datetime.datetime.now(datetime.timezone.utc)
    metrics, plots = build_tables(config, results, run_id, evaluated_at)
    metrics = with_pane(metrics, timing, index)
    plots = with_pane(plots, timing, index)
    paths = pane_paths(config.output, start_us, index)
    # History first: the latest-pane file is only ever replaced by a pane that is also on record,
    # and never by an older pane (a runner may hand a window's panes over out of order).
    parquet_writer.write_table(metrics, paths['pane_metrics'])
    parquet_writer.write_table(plots, paths['pane_plots'])
    if _latest_index(paths['metrics']) <= index:
        parquet_writer.write_table(metrics, paths['metrics'])
        parquet_writer.write_table(plots, paths['plots'])
    return {'window_start': int(start_us), 'pane': timing, 'pane_index': int(index),
            'metrics_rows': metrics.num_rows, 'paths': paths}


# -------------------------------------------------------------------------------------------------
# Windowing and combining.
# -------------------------------------------------------------------------------------------------

def _micros(seconds: float) -> int:
    return int(round(seconds * 1e6))


class WindowAtStart(beam_window.NonMergingWindowFn):
    """One window [t, t + size) for an element timestamped t.

    `ApplyHeads` has already split rows by window (a row of a sliding window appears once per
    window holding it, keyed by that window's start); each piece is timestamped at its window's
    start and needs exactly that window, which Beam's SlidingWindows (every window holding the
    timestamp) would not give.
    """

    def __init__(self, size_us: int):
        self._size_us = int(size_us)

    def assign(self, context: beam_window.WindowFn.AssignContext) -> list:
        start = context.timestamp.micros
        return [beam_window.IntervalWindow(Timestamp(micros=start),
                                           Timestamp(micros=start + self._size_us))]

    def get_window_coder(self):
        from apache_beam.coders.coders import IntervalWindowCoder
        return IntervalWindowCoder()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WindowAtStart) and other._size_us == self._size_us

    def __hash__(self) -> int:
        return hash((WindowAtStart, self._size_us))


def window_fn(window: config_lib.WindowSpec) -> beam_window.WindowFn:
    """FixedWindows for fixed windows; `WindowAtStart` for sliding ones (see its docstring)."""
    size_us = _micros(window.size)
    if window.period is None or _micros(window.period) == size_us:
        return beam_window.FixedWindows(Duration(micros=size_us))
    return WindowAtStart(size_us)


def window_trigger(window: config_lib.WindowSpec) -> beam_trigger.TriggerFn:
    """After the watermark, with early firings every `early_firing` seconds of processing time
    (when set; whole seconds, at least 1) and a late firing for every late element."""
    # Beam carries the delay as whole seconds (its runner API rounds milliseconds down to them).
    early = (beam_trigger.AfterProcessingTime(max(1, int(round(window.early_firing))))
             if window.early_firing else None)
    return beam_trigger.AfterWatermark(early=early, late=beam_trigger.AfterCount(1))


class WindowStatesCombineFn(beam.CombineFn):
    """Accumulates every (slice, head) state of a window: a dict key → head state, each entry
    accumulated by `HeadStateCombineFn` (so a key's state is what the batch path computes).

    Inputs are `(key, SubBatch | partial state)` pairs; one accumulator per window means one pane
    holds the whole window, and its tables are written together.
    """

    def __init__(self, config: config_lib.EvalConfig):
        self._inner = HeadStateCombineFn(config)

    def setup(self) -> None:
        self._inner.setup()

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, accumulator: dict, element: tuple) -> dict:
        key, value = element
        accumulator[key] = self._inner.add_input(accumulator.get(key), value)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        it = iter(accumulators)
        merged = next(it, None)
        if merged is None:
            return {}
        for acc in it:  # only the first accumulator is mutated
            for key, state in acc.items():
                merged[key] = self._inner.merge_accumulators([merged.get(key), state])
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        # Copies: with accumulating panes the accumulator lives on and keeps changing after this
        # pane's output has been handed downstream.
        return {key: copy.deepcopy(state) for key, state in accumulator.items()}


def _timing_name(pane: Any) -> str:
    from apache_beam.utils.windowed_value import PaneInfoTiming
    return {PaneInfoTiming.EARLY: EARLY, PaneInfoTiming.ON_TIME: ON_TIME,
            PaneInfoTiming.LATE: LATE}.get(getattr(pane, 'timing', None), UNKNOWN)


class WritePane(beam.DoFn):
    """(window key, {key: state}) → the pane's Parquet files; yields `write_pane`'s summary."""

    def __init__(self, config: config_lib.EvalConfig, run_id: str):
        self._config = config
        self._run_id = run_id

    def process(self, element: tuple[Any, Mapping[tuple, Any]],
                window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam) -> Iterator[dict]:
        start = window.start.micros
        names = list(self._config.head_names)
        results = []
        for key, state in sorted(element[1].items(), key=lambda kv: repr(kv[0])):
            key = Key(*key)
            if key.window_start != start:
                raise RuntimeError('state for window start %s arrived in window %s'
                                   % (key.window_start, window))
            results.append(state_result(key, state, names))
        summary = write_pane(self._config, results, self._run_id, start, _timing_name(pane),
                             int(getattr(pane, 'index', 0)))
        _log.info('headstream: window %s pane %d (%s): %d metric rows',
                  window_tag(start), summary['pane_index'], summary['pane'],
                  summary['metrics_rows'])
        yield summary


class WriteErrors(beam.DoFn):
    """Rejected rows (dead_letter mode): one errors/errors-<uuid>.parquet per table."""

    def __init__(self, output: str):
        self._output = output

    def process(self, table: pa.Table) -> Iterator[str]:
        path = parquet_writer.join(self._output, 'errors/errors-%s.parquet' % uuid.uuid4().hex)
        parquet_writer.write_table(table, path)
        yield path


def _at_window_start(kv: tuple) -> beam_window.TimestampedValue:
    return beam_window.TimestampedValue(kv, Timestamp(micros=kv[0][3]))


class EvaluateWindows(beam.PTransform):
    """SourceBatch PCollection (streaming or not) → one summary dict per pane written.

    Args:
      config: a config with `window:` and an output directory.
      run_id: stamped on every row.
      bad_records: 'fail' or 'dead_letter' (rejected rows written under errors/).
    """

    def __init__(self, config: config_lib.EvalConfig, run_id: str,
                 bad_records: str = 'dead_letter'):
        super().__init__()
        if config.window is None:
            raise config_lib.ConfigError('window: streaming evaluation needs `window:` '
                                         '(column and size)')
        if not config.output:
            raise config_lib.ConfigError('output: missing; set `output:` or pass --output')
        self._config = config
        self._run_id = run_id
        self._bad_records = bad_records

    def expand(self, batches):
        config = self._config
        w = config.window
        applied = batches | 'ApplyHeads' >> beam.ParDo(
            ApplyHeads(config, self._run_id, self._bad_records, precombine=False)
        ).with_outputs(ERRORS_TAG, STATS_TAG, main='states')
        panes = (applied.states
                 | 'AtWindowStart' >> beam.Map(_at_window_start)
                 | 'Window' >> beam.WindowInto(
                     window_fn(w), trigger=window_trigger(w),
                     accumulation_mode=beam_trigger.AccumulationMode.ACCUMULATING,
                     allowed_lateness=w.allowed_lateness)
                 | 'OnePerWindow' >> beam.Map(lambda kv: (0, kv))
                 | 'Combine' >> beam.CombinePerKey(WindowStatesCombineFn(config))
                 | 'WritePane' >> beam.ParDo(WritePane(config, self._run_id)))
        if self._bad_records == 'dead_letter':
            _ = applied[ERRORS_TAG] | 'WriteErrors' >> beam.ParDo(WriteErrors(config.output))
        return panes


# -------------------------------------------------------------------------------------------------
# Streaming sources.
# -------------------------------------------------------------------------------------------------

def _parse_time(value: Any) -> Any:
    """An ISO 8601 string as a UTC datetime (naive means UTC); numbers pass through as epoch
    seconds; anything unparsable becomes None (then rejected as a null timestamp)."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            t = datetime.datetime.fromisoformat(value.replace('Z', '+00:00'))
        except ValueError:
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        return t.astimezone(datetime.timezone.utc)
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, (int, float)):
        return 'number'
    return type(value).__name__


def _column_array(values: list, name: str, time_column: str | None) -> pa.Array:
    """One column of JSON values as Arrow.

    Event times: ISO strings become timestamp[us, UTC] (with them, numbers are read as epoch
    seconds too). Values that do not share the first value's kind (number, string, bool, list) or
    Arrow type become null, so `ApplyHeads` rejects their rows by column; a column with no value
    at all is a float64 column of nulls (rejected the same way).
    """
    if name == time_column:
        parsed = [_parse_time(v) for v in values]
        if any(isinstance(v, datetime.datetime) for v in parsed):
            parsed = [v if isinstance(v, datetime.datetime) or v is None else
                      datetime.datetime.fromtimestamp(v, datetime.timezone.utc)
                      for v in parsed]
            return pa.array(parsed, pa.timestamp('us', tz='UTC'))
        values = parsed
    errors = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError)
    present = [v for v in values if v is not None]
    if not present:
        return pa.nulls(len(values), pa.float64())
    try:
        return pa.array(values)
    except errors:
        pass
    kind = _kind(present[0])
    kept = [v if v is not None and _kind(v) == kind else None for v in values]
    try:
        return pa.array(kept)
    except errors:
        pass
    first_type = pa.array([present[0]]).type

    def fits(v: Any) -> bool:
        try:
            return pa.array([present[0], v]).type == first_type
        except errors:
            return False

    try:
        return pa.array([v if v is not None and fits(v) else None for v in kept], first_type)
    except errors:
        return pa.nulls(len(values), first_type)  # every row of this column is rejected


def rows_to_batch(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                  time_column: str | None = None) -> pa.RecordBatch:
    """JSON rows (dicts) → one Arrow record batch with exactly `columns` (missing keys are null)."""
    arrays = [_column_array([r.get(c) for r in rows], c, time_column) for c in columns]
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


class JsonMessagesToBatches(beam.DoFn):
    """Pub/Sub payloads (one JSON object per message, with the config's columns) → `SourceBatch`es
    of up to `MESSAGES_PER_BATCH` rows, flushed at least once per bundle.

    A payload that is not a JSON object becomes a row of nulls, which `ApplyHeads` then rejects
    naming the row's column (so it reaches errors/ in dead_letter mode). The event-time column may
    hold epoch seconds or ISO 8601 strings ("2026-11-01T00:00:09Z"; without an offset, UTC).
    """

    def __init__(self, source: str, columns: Sequence[str], time_column: str | None = None):
        self._source = source
        self._columns = list(columns)
        self._time_column = time_column

    def start_bundle(self) -> None:
        self._rows: list[dict] = []
        self._min_ts: Timestamp | None = None
        self._batches = 0

    def process(self, payload: bytes, timestamp=beam.DoFn.TimestampParam) -> Iterator[Any]:
        try:
            row = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            row = None
        if not isinstance(row, dict):
            row = {}
        self._rows.append(row)
        if self._min_ts is None or timestamp < self._min_ts:
            self._min_ts = timestamp
        if len(self._rows) >= MESSAGES_PER_BATCH:
            yield beam_window.TimestampedValue(self._batch(), self._min_ts)
            self._rows, self._min_ts = [], None

    def _batch(self) -> SourceBatch:
        self._batches += 1
        name = '%s (batch %s-%d)' % (self._source, uuid.uuid4().hex[:8], self._batches)
        return SourceBatch(name, 0, rows_to_batch(self._rows, self._columns,
                                                  self._time_column))

    def finish_bundle(self) -> Iterator[Any]:
        from apache_beam.utils.windowed_value import WindowedValue
        if self._rows:
            yield WindowedValue(self._batch(), self._min_ts, [beam_window.GlobalWindow()])
            self._rows, self._min_ts = [], None


class ReadPubSubBatches(beam.PTransform):
    """Pub/Sub subscription or topic → `SourceBatch`es (see `JsonMessagesToBatches`)."""

    def __init__(self, columns: Sequence[str], subscription: str | None = None,
                 topic: str | None = None, timestamp_attribute: str | None = None,
                 time_column: str | None = None):
        super().__init__()
        self._columns = list(columns)
        self._time_column = time_column
        self._subscription = subscription
        self._topic = topic
        self._timestamp_attribute = timestamp_attribute

    def expand(self, pbegin):
        source = 'pubsub:%s' % (self._subscription or self._topic)
        return (pbegin
                | 'ReadPubSub' >> beam.io.ReadFromPubSub(
                    topic=self._topic, subscription=self._subscription,
                    timestamp_attribute=self._timestamp_attribute)
                | 'ToBatches' >> beam.ParDo(JsonMessagesToBatches(source, self._columns,
                                                                 self._time_column)))


class _ReadNewFile(beam.DoFn):
    """A newly matched file → its `SourceBatch`es (the batch path's planning and reading)."""

    def __init__(self, fmt: str, columns: Sequence[str]):
        self._fmt = fmt
        self._columns = list(columns)

    def process(self, path: str) -> Iterator[SourceBatch]:
        for item in sources.plan_file(path, self._fmt):
            yield from sources.read_item(item, self._columns)


class ReadNewFiles(beam.PTransform):
    """Files matching `pattern` as they appear (Beam's MatchContinuously; Dataflow) → batches."""

    def __init__(self, pattern: str, fmt: str, columns: Sequence[str], interval: float):
        super().__init__()
        self._pattern = pattern
        self._fmt = fmt
        self._columns = list(columns)
        self._interval = interval

    def expand(self, pbegin):
        from apache_beam.io import fileio
        return (pbegin
                | 'Match' >> fileio.MatchContinuously(self._pattern, interval=self._interval)
                | 'Path' >> beam.Map(lambda m: m.path)
                | 'Spread' >> beam.Reshuffle()
                | 'Read' >> beam.ParDo(_ReadNewFile(self._fmt, self._columns)))


# -------------------------------------------------------------------------------------------------
# Entry point.
# -------------------------------------------------------------------------------------------------

def streaming_parser() -> argparse.ArgumentParser:
    """headstream's own streaming flags; everything else passes through to Beam."""
    parser = argparse.ArgumentParser(prog='headstream evaluate --streaming', add_help=False)
    parser.add_argument('--input_subscription', default=None,
                        help='Pub/Sub subscription (projects/P/subscriptions/S) of JSON rows')
    parser.add_argument('--input_topic', default=None,
                        help='Pub/Sub topic (projects/P/topics/T) of JSON rows')
    parser.add_argument('--pubsub_timestamp_attribute', default=None,
                        help='message attribute holding the publish-side event time, which then '
                             'drives the watermark')
    parser.add_argument('--poll_interval', type=float, default=30.0,
                        help='seconds between matches of input.pattern (file source)')
    parser.add_argument('--bad_records', choices=('fail', 'dead_letter'), default='dead_letter',
                        help='dead_letter (default in streaming: a failing bundle would be '
                             'retried forever) or fail')
    parser.add_argument('--run_id', default=None)
    return parser


_LOCAL_RUNNERS = ('DirectRunner', 'direct', 'FnApiRunner', 'PrismRunner', 'prism')


def evaluate_streaming(config: config_lib.EvalConfig | str | Mapping[str, Any],
                       pipeline_args: Sequence[str] = (), *, output: str | None = None,
                       bad_records: str | None = None, run_id: str | None = None,
                       wait: bool = False) -> dict:
    """Starts a streaming evaluation; returns {'run_id', 'output', 'state'}.

    Args:
      config: an `EvalConfig`, a config path, inline JSON/YAML, or a dict; must have `window:`.
      pipeline_args: Beam options plus the flags of `streaming_parser` (`--input_subscription`,
        `--input_topic`, `--pubsub_timestamp_attribute`, `--poll_interval`, `--bad_records`).
        Without a Pub/Sub flag, the config's `input.pattern` is matched continuously.
      output: overrides the config's output directory.
      bad_records: overrides `--bad_records` ('dead_letter' by default: on a streaming runner a
        failing bundle is retried forever).
      run_id: overrides `--run_id`.
      wait: wait for the job to finish (a streaming job runs until cancelled).

    Raises:
      ConfigError: no `window:`, no output, or a runner that cannot run this graph (Beam 2.77's
        local DirectRunner falls back to a runner without streaming triggers; use
        `headstream watch` for a local directory).
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    known, rest = streaming_parser().parse_known_args(list(pipeline_args))
    known.bad_records = bad_records or known.bad_records
    known.run_id = run_id or known.run_id
    if known.bad_records not in ('fail', 'dead_letter'):
        raise config_lib.ConfigError('--bad_records: %r is not fail or dead_letter'
                                     % known.bad_records)
    if not isinstance(config, config_lib.EvalConfig):
        config = config_lib.load_config(config, output=output)
    else:
        config = config.with_output(output)
    if config.window is None:
        raise config_lib.ConfigError('window: streaming evaluation needs `window:` '
                                     '(column and size)')
    if not config.output:
        raise config_lib.ConfigError('output: missing; set `output:` or pass --output')
    if known.input_subscription and known.input_topic:
        raise config_lib.ConfigError('--input_subscription and --input_topic: give one')
    options = PipelineOptions(rest)
    standard = options.view_as(StandardOptions)
    standard.streaming = True
    runner_name = standard.runner if isinstance(standard.runner, str) else None
    if runner_name and 'dask' in runner_name.lower():
        from pipeline import dask_runner
        if dask_runner.is_dask_runner(runner_name):
            dask_runner.check_dask_supported(streaming=True)  # a ConfigError naming the way out
    if not standard.runner or (runner_name and runner_name.split('.')[-1] in _LOCAL_RUNNERS):
        raise config_lib.ConfigError(
            '--runner: streaming evaluation needs a streaming runner such as DataflowRunner '
            '(Beam\'s local DirectRunner does not fire streaming triggers); to evaluate shards '
            'arriving in a local directory use `headstream watch --config ...`')
    runner = None
    if runner_name and runner_name.split('.')[-1] == 'BundleBasedDirectRunner':
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
        runner = BundleBasedDirectRunner()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    from pipeline.run import new_run_id
    run_id = known.run_id or new_run_id(started_at)
    columns = config.columns()
    p = beam.Pipeline(runner=runner, options=options)
    if known.input_subscription or known.input_topic:
        batches = p | 'Source' >> ReadPubSubBatches(
            columns, subscription=known.input_subscription, topic=known.input_topic,
            timestamp_attribute=known.pubsub_timestamp_attribute,
            time_column=config.window.column)
    else:
        _check_existing_files(config)
        batches = p | 'Source' >> ReadNewFiles(config.pattern, config.format, columns,
                                               known.poll_interval)
    _ = batches | 'Evaluate' >> EvaluateWindows(config, run_id, known.bad_records)
    _log.info('headstream: streaming run %s: %s', run_id, config_lib.config_summary(config))
    result = p.run()
    if wait:
        result.wait_until_finish()
        return {'run_id': run_id, 'output': config.output, 'state': str(result.state)}
    return {'run_id': run_id, 'output': config.output, 'state': 'submitted'}


def _check_existing_files(config: config_lib.EvalConfig) -> None:
    """Validates the columns against the first file already there (none yet is fine)."""
    try:
        files = sources.match_files(config.pattern)
    except config_lib.ConfigError:
        return
    config_lib.check_columns(config, sources.read_schema(files[0], config.format), files[0])

