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

This module owns that graph (windowing, triggers, the per-window combine, `EvaluateWindows`) and
its entry point. Sources (`pipeline/streaming_sources.py`): Pub/Sub (`--input_subscription` or
`--input_topic`; JSON messages holding one row each, with the config's columns), or the config's
`input.pattern` matched continuously (`--poll_interval` seconds; Beam's `MatchContinuously`),
both on Dataflow; the flags are parsed by `pipeline.cli_args.streaming_parser`. A local directory
is better served by `headstream watch` (`pipeline/watch.py`), which needs no streaming runner.

Windows are assigned by `ApplyHeads` exactly as in batch runs (epoch-aligned, half-open
[start, start + size), a row in every sliding window holding it), so a window's pane holds exactly
the rows of that window that arrived before it fired. Panes accumulate: each pane's rows are the
full metrics of its window so far. Rows for a window whose end + `allowed_lateness` the watermark
has passed are dropped by Beam, as in every windowed streaming pipeline.

Files per pane (under `output`; written by `pipeline/writers/panes.py`):
  panes/metrics/window-<start>-pane-<index>.parquet  every pane (`pane_index` 0, 1, ...)
  panes/plots/window-<start>-pane-<index>.parquet
  metrics/window-<start>.parquet                     the window's latest pane (replaced)
  plots/window-<start>.parquet
"""
from __future__ import annotations

import argparse
import copy
import datetime
import logging
import uuid
from typing import Any, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms import trigger as beam_trigger
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Duration, Timestamp

from pipeline import fileio
from pipeline import config as config_lib
from pipeline import sources
from pipeline.apply import ApplyHeads
from pipeline.cli_args import streaming_parser
from pipeline.combine import HeadStateCombineFn
from pipeline.elements import ERRORS_TAG, STATS_TAG, Key
from pipeline.pane_results import write_pane
from pipeline.results import state_result
from pipeline.streaming_sources import ReadNewFiles, ReadPubSubBatches
from pipeline.writers import parquet as parquet_writer
from pipeline.writers.panes import EARLY, LATE, ON_TIME, UNKNOWN, window_tag

_log = logging.getLogger(__name__)


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

    def get_window_coder(self) -> Any:
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
            results.append(state_result(key, state, names, self._config.confidence_level))
        summary = write_pane(self._config, results, self._run_id, start, _timing_name(pane),
                             int(getattr(pane, 'index', 0)))
        _log.info('headstream: window %s pane %d (%s): %d metric rows%s',
                  window_tag(start), summary['pane_index'], summary['pane'],
                  summary['metrics_rows'],
                  '; ' + summary['validation'] if 'validation' in summary else '')
        yield summary


class WriteErrors(beam.DoFn):
    """Rejected rows (dead_letter mode): one errors/errors-<uuid>.parquet per table."""

    def __init__(self, output: str):
        self._output = output

    def process(self, table: pa.Table) -> Iterator[str]:
        path = fileio.join(self._output, 'errors/errors-%s.parquet' % uuid.uuid4().hex)
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
# Entry point.
# -------------------------------------------------------------------------------------------------

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
    known, rest = _streaming_flags(pipeline_args, bad_records, run_id)
    config = _windowed_config(config, output)
    if known.input_subscription and known.input_topic:
        raise config_lib.ConfigError('--input_subscription and --input_topic: give one')
    options, runner = _streaming_runner(rest)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    from pipeline.run import new_run_id
    run_id = known.run_id or new_run_id(started_at)
    p = beam.Pipeline(runner=runner, options=options)
    batches = p | 'Source' >> _source(config, known)
    _ = batches | 'Evaluate' >> EvaluateWindows(config, run_id, known.bad_records)
    _log.info('headstream: streaming run %s: %s', run_id, config_lib.config_summary(config))
    result = p.run()
    if wait:
        result.wait_until_finish()
        return {'run_id': run_id, 'output': config.output, 'state': str(result.state)}
    return {'run_id': run_id, 'output': config.output, 'state': 'submitted'}


def _streaming_flags(pipeline_args: Sequence[str], bad_records: str | None,
                     run_id: str | None) -> tuple[argparse.Namespace, list[str]]:
    """(headstream's streaming flags, with the keyword overrides; the Beam args left)."""
    known, rest = streaming_parser().parse_known_args(list(pipeline_args))
    known.bad_records = bad_records or known.bad_records
    known.run_id = run_id or known.run_id
    if known.bad_records not in ('fail', 'dead_letter'):
        raise config_lib.ConfigError('--bad_records: %r is not fail or dead_letter'
                                     % known.bad_records)
    return known, rest


def _windowed_config(config: config_lib.EvalConfig | str | Mapping[str, Any],
                     output: str | None) -> config_lib.EvalConfig:
    """The loaded config with `output` applied; refused without `window:` or an output."""
    if not isinstance(config, config_lib.EvalConfig):
        config = config_lib.load_config(config, output=output)
    else:
        config = config.with_output(output)
    if config.window is None:
        raise config_lib.ConfigError('window: streaming evaluation needs `window:` '
                                     '(column and size)')
    if not config.output:
        raise config_lib.ConfigError('output: missing; set `output:` or pass --output')
    return config


def _streaming_runner(args: Sequence[str]) -> tuple[PipelineOptions, Any]:
    """(the streaming pipeline options, the runner object or None to let Beam resolve it);
    refuses runners that cannot run the graph (`evaluate_streaming`'s Raises)."""
    options = PipelineOptions(list(args))
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
    return options, runner


def _source(config: config_lib.EvalConfig, known: argparse.Namespace) -> beam.PTransform:
    """Pub/Sub when a subscription or topic is given, else the config's pattern matched
    continuously (after checking the columns of the files already there)."""
    columns = config.columns()
    if known.input_subscription or known.input_topic:
        return ReadPubSubBatches(
            columns, subscription=known.input_subscription, topic=known.input_topic,
            timestamp_attribute=known.pubsub_timestamp_attribute,
            time_column=config.window.column)
    _check_existing_files(config)
    return ReadNewFiles(config.pattern, config.format, columns, known.poll_interval)


def _check_existing_files(config: config_lib.EvalConfig) -> None:
    """Validates the columns against the first file already there (none yet is fine)."""
    try:
        files = sources.match_files(config.pattern)
    except config_lib.ConfigError:
        return
    config_lib.check_columns(config, sources.read_schema(files[0], config.format), files[0])

