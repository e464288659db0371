"""Builds and runs the evaluation pipeline: config → source → ApplyHeads → CombinePerKey → writers.

    evaluate(config, ['--runner=DirectRunner']) -> summary dict

The graph (every transform is a Create, ParDo, GroupByKey or Flatten, so every runner, the
DaskRunner included, can translate it):

    Read (Create files → plan → Reshuffle → read) → Progress (counts rows)
      → ApplyHeads (partial states per bundle)
      ├─ states → CombinePerKey(HeadStateCombineFn) → state_result ─┐
      ├─ errors (dead_letter rows) ──────────────────────────────────┤→ Flatten → one group → WriteRun
      ├─ stats (rows read / rejected per bundle) ────────────────────┤   (GroupByKey on key 0)
      └─ (a marker, so an empty input still writes empty tables) ────┘

`WriteRun` runs inside the pipeline (a Dataflow launcher does not wait for the job): it writes
metrics/, plots/, errors/ and summary.json, then the optional TFMA, TensorBoard and report writers.
With `bigquery_table`, it also emits the metrics rows, which `WriteToBigQuery` appends to that
table (pipeline/writers/bigquery.py).

Outputs are published all at once. Every file of a run (predictions/ from `ApplyHeads`, then the
tables, summary.json, tfma/, tensorboard/ and report.html from `WriteRun`) is written under
`<output>/.staging-<run_id>/`. Before the pipeline runs, `evaluate` takes the output's lock
(`<output>/.headstream.lock`), recovers what dead runs left, refuses an output holding files no
headstream run wrote (unless `overwrite`) and claims its staging directory. Only when all
writers have succeeded does `WriteRun` publish (`publish_locked`, pipeline/writers/publish.py):
the old run's summary.json and then its files (those its summary lists: nothing else is ever
deleted) move into a journaled backup `<output>/.previous-<run_id>/`, the staged files move in,
summary.json last, and the backup and staging directory are deleted. So:
- summary.json is the completion marker: whenever one is visible, every file it lists is there
  and of its run, and a rerun never mixes in an earlier run's files;
- a run failing anywhere, including in the TFMA, TensorBoard or report writers or while
  publishing (rolled back at once), publishes nothing: the output keeps the earlier complete
  run, and `evaluate` discards the staging directory (later writes into it fail);
- a run killed while publishing leaves its backup and journal: the next run rolls it back (or
  forward, when the new summary.json was in place) once the owner pid is dead;
- Ctrl-C (KeyboardInterrupt): the staging directory is discarded, again once the local workers
  stopped; the CLI prints one line and exits 130.
A TensorBoard `dir:` outside the output directory is written in place before publishing (its
event files are named by run id, so runs there never overwrite each other).

While `evaluate` waits for the job, `Progress` logs the rows read so far every 30 s (the `Progress`
step counts them for a local run; Dataflow's job reports its `headstream/rows_read` counter).
"""
from __future__ import annotations

import datetime
import importlib
import logging
import os
import re
import threading
import time
import uuid
from typing import Any, Iterable, Mapping, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import config as config_lib
from pipeline import sources
from pipeline.apply import BAD_RECORD, ERRORS_TAG, STATS_TAG, ApplyHeads, BadRecordError
from pipeline.combine import CombineStates
from pipeline.results import KeyResult, build_tables, state_result, typed_slice_values
from pipeline.writers import parquet as parquet_writer
from pipeline.writers import publish as publish_lib

DEFAULT_RUNNER = 'DirectRunner'
_log = logging.getLogger(__name__)
BIGQUERY_TAG = 'bigquery_rows'
PROGRESS_EVERY_S = 30.0
# Runners re-raise a worker's error wrapped or as text; these are the one-line errors to recover.
_ONE_LINE_ERRORS = (
    (re.compile(re.escape(BAD_RECORD) + r': file .*?, row \d+, column [^\n]*'), BadRecordError),
    (re.compile(r'(?<=UnreadableFileError: )cannot read \w+ file [^\n]*'),
     sources.UnreadableFileError),
    (re.compile(r'(?<=ForeignFilesError: )[^\n]*'), publish_lib.ForeignFilesError),
    (re.compile(r'(?<=OutputBusyError: )[^\n]*'), publish_lib.OutputBusyError),
)


def pipeline_options(pipeline_args: Sequence[str]) -> PipelineOptions:
    """The Beam options for a run: the pass-through args, with the DirectRunner by default.

    This is the one place where the runner is chosen; callers that add runners (a Dask cluster, a
    Flex Template launcher) wrap or replace this function. Args are Beam's own flags
    (`--runner DataflowRunner --project ...`), in `--flag value` or `--flag=value` form.
    """
    options = PipelineOptions(list(pipeline_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_RUNNER
    return options


def make_runner(options: PipelineOptions):
    """The runner object for `options`, or None to let Beam resolve `--runner` by name.

    A batch DirectRunner run goes straight to Beam's FnApiRunner (what the DirectRunner itself
    uses for batch pipelines): Beam 2.77's DirectRunner would first try to download and start the
    Prism runner, which needs network access and moves every element between processes.
    `--runner DaskRunner` is `pipeline.dask_runner.HeadstreamDaskRunner`, Beam's DaskRunner made
    to run every sink and every output of a multi-output step.
    """
    standard = options.view_as(StandardOptions)
    runner = standard.runner
    if isinstance(runner, str) and 'dask' in runner.lower():
        from pipeline import dask_runner  # only here: other runs never import dask
        if dask_runner.is_dask_runner(runner):
            dask_runner.check_dask_supported(standard.streaming)
            return dask_runner.HeadstreamDaskRunner()
    if isinstance(runner, str) and runner.split('.')[-1] in ('DirectRunner', 'direct') and (
            not standard.streaming):
        _use_every_core(options)
        _end_bundles_promptly()
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))
    return None


# What Beam's FnApiRunner logs on every run with several in-memory workers (see _use_every_core).
_IN_MEMORY_WORKERS_WARNING = 'If direct_num_workers is not equal to 1, direct_running_mode'


def _not_the_in_memory_workers_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_IN_MEMORY_WORKERS_WARNING)


def _chosen(options: PipelineOptions, name: str) -> bool:
    """Whether the options were given `--name` (also when its value is the default, which
    `get_all_options(drop_default=True)` leaves out: `--direct_num_workers=1`)."""
    if name in options.get_all_options(drop_default=True):
        return True
    flags = getattr(options, '_flags', None) or ()  # the flags Beam parsed the options from
    return any(f == '--' + name or f.startswith('--%s=' % name) for f in flags)


def _use_every_core(options: PipelineOptions) -> None:
    """Unless the user chose otherwise, a local run processes bundles on one thread per core.

    The work per batch is numpy and pyarrow, which release the GIL for their large steps, so
    threads overlap reading and evaluating (5 heads over 10M rows on 2 cores: 13.8 s on one
    thread, 10.4 s on two). The threads are in-memory workers: Beam's FnApiRunner splits each
    bundle into one part per worker and runs the parts on a thread pool, each on its own
    in-process worker, calling it directly. Its `multi_threading` mode runs the same parts on
    threads too, but behind an in-process gRPC server that every element and instruction goes
    through (Beam's run of the binary benchmark on 2 cores, medians: 200,000 rows 0.27 s in
    memory against 0.35 s through gRPC; 10M rows 0.89 s against 0.87 s; 20M rows 1.58 s against
    1.69 s, with 11% less CPU time). Beam warns on every run that in-memory workers would not run
    in parallel; they do, each on its own thread (one worker took 1.51 s for the 10M rows), and
    that warning is filtered out. Processes were about 3x slower still: the multi-processing
    mode moves every element between processes. Results do not depend on any of this (the
    states merge in any order).
    """
    from apache_beam.options.pipeline_options import DirectOptions
    direct = options.view_as(DirectOptions)
    if not _chosen(options, 'direct_num_workers') and not _chosen(options, 'direct_running_mode'):
        direct.direct_num_workers = max(1, min(os.cpu_count() or 1, 8))
        direct.direct_running_mode = 'in_memory'
        runner_log = logging.getLogger('apache_beam.runners.portability.fn_api_runner.fn_runner')
        if _not_the_in_memory_workers_warning not in runner_log.filters:
            runner_log.addFilter(_not_the_in_memory_workers_warning)


# How often the local worker's state sampler wakes (Beam's default: 200 ms); see below.
STATE_SAMPLING_PERIOD_MS = 10


def _end_bundles_promptly() -> None:
    """Makes the state sampler of a local run's bundles wake every 10 ms instead of 200 ms.

    Beam's SDK worker starts a sampler thread for every bundle (it times the bundle's steps)
    and, at the bundle's end, waits for that thread to wake up and see it is done. The thread's
    sleep grows from 2 ms to the sampling period, Beam's 200 ms, so a bundle lasting over a
    second (the read-and-evaluate bundle of a large local run) ends on average 0.1 s late on
    each worker: 20M rows, binary benchmark, the run took 1.38 s with 200 ms and 1.23 s with
    10 ms (medians of 3, load 0.7). Waking more often costs nothing measurable: the thread reads
    a clock and adds to a counter under its own lock, without the GIL. No pipeline option sets
    the period; it is the default argument of Beam's `StateSampler`, changed here for a local
    batch run (a worker elsewhere keeps Beam's), only if it is still Beam's own default, and
    given back when the run is over (`_restore_sampling_period`).
    """
    from apache_beam.runners.worker import statesampler
    init = statesampler.StateSampler.__init__
    if init.__defaults__ == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,):
        init.__defaults__ = (STATE_SAMPLING_PERIOD_MS,)


def _restore_sampling_period() -> None:
    """Gives Beam's `StateSampler` its own default period back after a local run, so that a later
    pipeline in the same process (a caller's own) samples as Beam does."""
    from apache_beam.runners.worker import statesampler
    init = statesampler.StateSampler.__init__
    if init.__defaults__ == (STATE_SAMPLING_PERIOD_MS,):
        init.__defaults__ = (statesampler.DEFAULT_SAMPLING_PERIOD_MS,)


# -------------------------------------------------------------------------------------------------
# Progress while a run runs.
# -------------------------------------------------------------------------------------------------

# Rows read per run id by workers in this process (the DirectRunner's): Beam's counters reach the
# pipeline result only when a local run is over, so they cannot show its progress.
_rows_read: dict[str, int] = {}
_rows_read_lock = threading.Lock()


def _note_rows_read(run_id: str, n: int) -> None:
    with _rows_read_lock:
        _rows_read[run_id] = _rows_read.get(run_id, 0) + n


class CountRows(beam.DoFn):
    """Passes batches through, adding their rows to this process's tally for the run's progress."""

    def __init__(self, run_id: str):
        self._run_id = run_id

    def process(self, sb: sources.SourceBatch) -> Iterable[sources.SourceBatch]:
        _note_rows_read(self._run_id, sb.batch.num_rows)
        yield sb


def _result_counters(result: Any) -> dict[str, int]:
    """The `headstream` counters a running job's result reports so far (rows_read, bad_rows)."""
    from apache_beam.metrics.metric import MetricsFilter
    out: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace('headstream'))[
            'counters']:
        # Dataflow reports attempted values while the job runs; committed ones may lag or be None.
        value = counter.attempted if counter.attempted is not None else counter.committed
        name = counter.key.metric.name
        out[name] = out.get(name, 0) + int(value or 0)
    return out


class Progress:
    """Logs a run's rows read so far every `every_s` seconds while it runs, and once at the end.

    The count comes from the job's own Beam counters (`headstream/rows_read`, `bad_rows`) once
    the runner returned a result before the job finished (Dataflow, portable runners), else from
    the rows that `CountRows` saw in this process (the DirectRunner, whose `run()` returns when
    the job is done). Remote workers' rows reach only the first source.
    """

    def __init__(self, run_id: str, every_s: float | None, clock=time.monotonic):
        self._run_id = run_id
        self._every_s = every_s
        self._clock = clock
        self._started = clock()
        self._result: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> 'Progress':
        if self._every_s and self._every_s > 0:
            self._thread = threading.Thread(target=self._loop, name='headstream-progress',
                                            daemon=True)
            self._thread.start()
        return self

    def attach(self, result: Any) -> None:
        """Reads the counts from `result` (a running job's PipelineResult) from now on."""
        self._result = result

    def counts(self) -> tuple[int | None, int | None]:
        """(rows read, bad rows) so far; None where no source knows."""
        if self._result is not None:
            try:
                counters = _result_counters(self._result)
            except Exception as e:  # noqa: BLE001 -- progress must never fail the run
                _log.debug('headstream: progress: cannot query the job\'s metrics: %s', e)
            else:
                if 'rows_read' in counters:
                    return counters['rows_read'], counters.get('bad_rows', 0)
        with _rows_read_lock:
            read = _rows_read.get(self._run_id)
        return read, None

    def report(self, final: bool = False) -> str:
        """Logs (and returns) one progress line."""
        elapsed = self._clock() - self._started
        read, bad = self.counts()
        if read is None:
            line = 'headstream: run %s: %s after %.0f s' % (
                self._run_id, 'stopped' if final else 'running', elapsed)
        else:
            line = 'headstream: run %s: %d rows read%s%s in %.0f s (%.0f rows/s)' % (
                self._run_id, read, '' if bad is None else ', %d bad' % bad,
                '' if final else ' so far', elapsed, read / max(elapsed, 1e-9))
        _log.info(line)
        return line

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            self.report()

    def stop(self) -> None:
        """Stops the periodic lines; logs the final count; forgets the run's tally."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.report(final=True)
        with _rows_read_lock:
            _rows_read.pop(self._run_id, None)


def new_run_id(now: datetime.datetime | None = None) -> str:
    """A run id from the start time plus a short random tag: `20261123T083522Z-1a2b3c`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return '%s-%s' % (now.strftime('%Y%m%dT%H%M%SZ'), uuid.uuid4().hex[:6])


class WriteRun(beam.DoFn):
    """Writes a run's outputs from the one group holding every piece of the run's results."""

    def __init__(self, config: config_lib.EvalConfig, run_id: str,
                 started_at: datetime.datetime, files: Sequence[str], bad_records: str,
                 write_predictions: bool, bigquery_table: str | None = None,
                 overwrite: bool = False):
        self._config = config
        self._overwrite = overwrite
        self._bigquery_table = bigquery_table
        self._run_id = run_id
        self._started_at = started_at
        self._n_files = len(files)
        self._bad_records = bad_records
        self._write_predictions = write_predictions

    def process(self, group: tuple[Any, Iterable[tuple[str, Any]]]) -> Iterable[dict]:
        import pyarrow as pa
        from pipeline.schema import ERRORS
        config = self._config
        results: list[KeyResult] = []
        errors: list[pa.Table] = []
        rows = bad = 0
        unsliced: dict[str, int] = {}
        for kind, piece in group[1]:
            if kind == 'result':
                results.append(piece)
            elif kind == 'errors':
                errors.append(piece)
            elif kind == 'stats':
                rows += piece[0]
                bad += piece[1]
                for columns, count in piece[2]:
                    name = '_X_'.join(columns)
                    unsliced[name] = unsliced.get(name, 0) + count
        for name, count in sorted(unsliced.items()):
            _log.warning('headstream: %d evaluated rows have a null %s: they are in Overall but '
                         'in no %s slice', count, name, name)
        metrics, plots = build_tables(config, results, self._run_id, self._started_at)
        error_table = None
        if self._bad_records == 'dead_letter':
            error_table = (pa.concat_tables(errors) if errors else ERRORS.empty_table())
            error_table = error_table.sort_by([('file', 'ascending'), ('row', 'ascending')])
        final_out = config.output
        # Everything is written under the run's staging directory and published at the end.
        out = parquet_writer.staging_dir(final_out, self._run_id)
        written = parquet_writer.write_outputs(out, metrics, plots, error_table)
        finished = datetime.datetime.now(datetime.timezone.utc)
        summary = {
            'run_id': self._run_id,
            'started_at': self._started_at.isoformat(),
            'finished_at': finished.isoformat(),
            'wall_time_s': round((finished - self._started_at).total_seconds(), 3),
            'input': {'pattern': config.pattern, 'format': config.format,
                      'files': self._n_files},
            'rows_read': rows,
            'bad_rows': bad,
            'rows_evaluated': rows - bad,
            # Per slice spec, evaluated rows with a null slice value (in no slice of that spec).
            'rows_outside_slices': dict(sorted(unsliced.items())),
            'bad_records': self._bad_records,
            'heads': config.head_names,
            'multi_head': config.multi_head_name,
            'head_weights': list(config.head_weights) if config.head_weights else None,
            'slices': [list(s) for s in config.slices],
            'window': config.to_dict().get('window'),
            'tensorboard': config.to_dict().get('tensorboard'),
            'metrics_rows': metrics.num_rows,
            'plots_rows': plots.num_rows,
            'outputs': [p[len(out.rstrip('/')) + 1:] for p in written],
            'write_predictions': self._write_predictions,
            'bigquery_table': self._bigquery_table,
            'config': config.to_dict(),
        }
        parquet_writer.write_json(summary, parquet_writer.join(out, parquet_writer.SUMMARY_FILE))
        names = list(config.head_names) + ([config.multi_head_name]
                                           if config.multi_head_name else [])
        _optional_writer('pipeline.writers.tfma', 'write_tfma', out, metrics, plots,
                         [list(s) for s in config.slices], names, typed_slice_values(results))
        if config.tensorboard is not None:
            _optional_writer('pipeline.writers.tensorboard', 'write_tensorboard',
                             _tensorboard_dir(config.tensorboard.dir, final_out, out),
                             metrics, plots)
        _optional_writer('pipeline.report', 'write_report', out, final_out)
        # The summary was written before the other writers (the report shows it); now that they
        # are done too, record the run's whole wall time, keeping the tables' time apart.
        finished = datetime.datetime.now(datetime.timezone.utc)
        summary['tables_written_s'] = summary['wall_time_s']
        summary['finished_at'] = finished.isoformat()
        summary['wall_time_s'] = round((finished - self._started_at).total_seconds(), 3)
        # Every file of the run: what a later run may replace (publish_lib.our_files).
        summary['files'] = [rel for rel in parquet_writer.list_files(out)
                            if rel not in (parquet_writer.SUMMARY_FILE, publish_lib.OWNER_FILE)]
        parquet_writer.write_json(summary, parquet_writer.join(out, parquet_writer.SUMMARY_FILE))
        publish_locked(out, final_out, self._run_id, self._overwrite)
        _log.info('headstream: run %s wrote %d metric rows to %s (%d rows read, %d bad)',
                  self._run_id, metrics.num_rows, final_out, rows, bad)
        if self._bigquery_table:
            from pipeline.writers import bigquery
            for row in bigquery.metric_rows(metrics):
                yield beam.pvalue.TaggedOutput(BIGQUERY_TAG, row)
        yield summary


def publish_locked(staging: str, output: str, run_id: str, overwrite: bool) -> None:
    """Publishes the staged run holding the output's lock (taken here unless `evaluate` holds it
    for this run already), after checking again that the output takes it."""
    took = publish_lib.acquire_lock(output, run_id)
    try:
        publish_lib.check_output(output, overwrite)
        publish_lib.publish(staging, output, run_id)
    finally:
        if took:
            publish_lib.release_lock(output, run_id)


def _tensorboard_dir(configured: str | None, output: str, staging: str) -> str:
    """Where the TensorBoard writer writes: `tensorboard/` under the staging directory, or the
    configured `dir` (staged at its place under the output directory when it lies there)."""
    if not configured:
        return parquet_writer.join(staging, 'tensorboard')
    base = output.rstrip('/') + '/'
    path = configured.rstrip('/')
    if path.startswith(base):
        return parquet_writer.join(staging, path[len(base):])
    return configured


def _optional_writer(module: str, function: str, *args: Any) -> None:
    """Calls module.function(*args); a missing module is skipped with a warning, any other error
    (including an ImportError raised from inside the module) fails the run."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        if e.name != module:
            raise
        _log.warning('headstream: %s is not installed; skipping %s', module, function)
        return
    getattr(mod, function)(*args)


def _batch_slice_kinds(config: config_lib.EvalConfig, files: Sequence[str]
                       ) -> tuple[str, dict[str, str]] | None:
    """(first file, its slice columns' kinds) for ApplyHeads to check every batch against, for
    formats without a footer (CSV, JSONL, TFRecord: a type is only known once rows are read);
    None for Parquet, whose footers `prepare` checked."""
    if config.format == 'parquet' or not files:
        return None
    kinds = config_lib.slice_kinds(config, sources.read_schema(files[0], config.format))
    return (files[0], kinds) if kinds else None


def build_pipeline(p: beam.Pipeline, config: config_lib.EvalConfig, files: Sequence[str],
                   run_id: str, started_at: datetime.datetime, bad_records: str = 'fail',
                   write_predictions: bool = False, dictionary_columns: Sequence[str] = (),
                   precombine: bool = True, bigquery_table: str | None = None,
                   overwrite: bool = False) -> beam.PCollection:
    """Adds the evaluation to `p`; returns the PCollection of the run summary (one dict).

    With `bigquery_table` (`[PROJECT:]DATASET.TABLE`), the metrics rows are also appended to
    that BigQuery table.
    """
    columns = None if write_predictions else config.columns()
    batches = (p
               | 'Read' >> sources.ReadBatches(files, config.format, columns,
                                               dictionary_columns=dictionary_columns)
               | 'Progress' >> beam.ParDo(CountRows(run_id)))
    predictions_dir = (parquet_writer.join(parquet_writer.staging_dir(config.output, run_id),
                                           'predictions') if write_predictions else None)
    apply_heads = ApplyHeads(config, run_id, bad_records, precombine=precombine,
                             predictions_dir=predictions_dir,
                             slice_kinds=_batch_slice_kinds(config, files))
    applied = batches | 'ApplyHeads' >> beam.ParDo(apply_heads).with_outputs(
        ERRORS_TAG, STATS_TAG, main='states')
    head_names = list(config.head_names)
    # Every piece of the results is tagged with its kind and keyed by the one key (0) of the group
    # that gathers them all, in the same step (each step costs the pipeline's construction and
    # each run a few milliseconds).
    results = (applied.states
               | 'Combine' >> CombineStates(config)
               | 'Results' >> beam.Map(lambda kv: (0, ('result', state_result(kv[0], kv[1],
                                                                              head_names)))))
    errors = applied[ERRORS_TAG] | 'TagErrors' >> beam.Map(lambda t: (0, ('errors', t)))
    stats = applied[STATS_TAG] | 'TagStats' >> beam.Map(lambda s: (0, ('stats', tuple(s))))
    marker = p | 'Marker' >> beam.Create([(0, ('marker', None))])
    written = ((results, errors, stats, marker)
               | 'Pieces' >> beam.Flatten()
               | 'Gather' >> beam.GroupByKey()
               | 'Write' >> beam.ParDo(WriteRun(config, run_id, started_at, files, bad_records,
                                                write_predictions, bigquery_table, overwrite)
                                       ).with_outputs(BIGQUERY_TAG, main='summary'))
    if bigquery_table:
        from pipeline.writers import bigquery
        _ = written[BIGQUERY_TAG] | 'BigQuery' >> bigquery.WriteMetrics(bigquery_table)
    return written.summary


def prepare(config: config_lib.EvalConfig | str | Mapping[str, Any], output: str | None = None
            ) -> tuple[config_lib.EvalConfig, list[str], list[str]]:
    """Validates a config against its data before anything runs.

    Returns:
      (config, matched files, Parquet string slice columns worth reading dictionary-encoded).

    Raises:
      ConfigError: naming the key, column or pattern at fault.
    """
    if not isinstance(config, config_lib.EvalConfig):
        config = config_lib.load_config(config, output=output)
    else:
        config = config.with_output(output)
        if not config.output:
            raise config_lib.ConfigError('output: missing; set `output:` or pass --output')
    files = sources.match_files(config.pattern)
    schema = sources.read_schema(files[0], config.format)
    config_lib.check_columns(config, schema, files[0])
    if config.format == 'parquet':
        check_shard_slice_types(config, files, schema)
    dictionary_columns = []
    if config.format == 'parquet':
        import pyarrow as pa
        for cols in config.slices:
            for c in cols:
                t = schema.field(c).type
                if pa.types.is_string(t) or pa.types.is_large_string(t):
                    dictionary_columns.append(c)
    return config, files, sorted(set(dictionary_columns))


FOOTER_READERS = 16  # Parquet footers read at once (object stores: one request each)


def check_shard_slice_types(config: config_lib.EvalConfig, files: Sequence[str],
                            schema: Any) -> None:
    """Checks every Parquet shard's footer (its schema only, no data) against the first
    shard's `schema` for the configured slice columns (`config_lib.check_slice_kinds`).

    Raises:
      ConfigError: naming the first file (in `files` order) and column at fault.
    """
    import concurrent.futures
    kinds = config_lib.slice_kinds(config, schema)
    if not kinds or len(files) < 2:
        return
    with concurrent.futures.ThreadPoolExecutor(FOOTER_READERS) as pool:
        schemas = pool.map(lambda f: sources.read_schema(f, 'parquet'), files[1:])
        for path, other in zip(files[1:], schemas):
            config_lib.check_slice_kinds(kinds, other, config.format, path, files[0])


def evaluate(config: config_lib.EvalConfig | str | Mapping[str, Any],
             pipeline_args: Sequence[str] = (), *, output: str | None = None,
             bad_records: str = 'fail', write_predictions: bool = False,
             run_id: str | None = None, wait: bool = True,
             bigquery_table: str | None = None,
             progress_every_s: float | None = PROGRESS_EVERY_S, overwrite: bool = False) -> dict:
    """Evaluates a config's heads over its input; returns the run summary.

    Args:
      config: an `EvalConfig`, a config path (local or gs://), inline JSON, or a dict.
      pipeline_args: Beam options (`--runner=DirectRunner`, `--project=...`, ...).
      output: overrides the config's output directory.
      bad_records: 'fail' (the first bad row stops the run) or 'dead_letter' (bad rows go to
        errors/ and the rest is evaluated).
      write_predictions: also write predictions/ (each head's predictions and per-example loss).
      run_id: stamped on every output row; default from the start time.
      wait: wait for the job (False: return once it is submitted, as a Flex Template launcher does).
      bigquery_table: also append the metrics rows to this BigQuery table
        (`[PROJECT:]DATASET.TABLE`; created if needed; needs a gs:// --temp_location).
      progress_every_s: while waiting, log the rows read so far this often (seconds; None or 0:
        never), see `Progress`.
      overwrite: publish into an output directory that holds files no headstream run wrote
        (they are kept; only files of an earlier run are replaced).

    Returns:
      summary.json's content when waiting; else {'run_id', 'output', 'state': 'submitted'}.

    Raises:
      ConfigError: an invalid config or run id (before anything runs); its subclasses
        `publish.OutputBusyError` (another run holds the output's lock) and
        `publish.ForeignFilesError` (the output holds files not ours).
      BadRecordError: with bad_records='fail', naming file, row, column and reason.
    """
    if bad_records not in ('fail', 'dead_letter'):
        raise config_lib.ConfigError('--bad_records: %r is not fail or dead_letter' % bad_records)
    if bigquery_table:
        from pipeline.writers import bigquery
        try:
            bigquery.check_table_spec(bigquery_table)
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from None
    if run_id is not None:
        config_lib.check_run_id(run_id)
    config, files, dictionary_columns = prepare(config, output)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    run_id = run_id or new_run_id(started_at)
    locked = _claim_output(config.output, run_id, overwrite, wait)
    try:
        return _run(config, files, dictionary_columns, pipeline_args, run_id, started_at,
                    bad_records, write_predictions, wait, bigquery_table, progress_every_s,
                    overwrite)
    finally:
        if locked:
            publish_lib.release_lock(config.output, run_id)


def _claim_output(output: str, run_id: str, overwrite: bool, wait: bool) -> bool:
    """Before a run: takes the output's lock (when waiting for the job: a job submitted without
    waiting takes it when it publishes), recovers what dead runs left, checks that the output
    takes the run and claims its staging directory. Returns whether the lock was taken."""
    if not wait:
        publish_lib.check_output(output, overwrite)
        return False
    publish_lib.acquire_lock(output, run_id)
    try:
        publish_lib.recover(output)
        publish_lib.check_output(output, overwrite)
        publish_lib.claim_staging(output, run_id)
    except BaseException:
        publish_lib.release_lock(output, run_id)
        raise
    return True


def _run(config: config_lib.EvalConfig, files: Sequence[str], dictionary_columns: Sequence[str],
         pipeline_args: Sequence[str], run_id: str, started_at: datetime.datetime,
         bad_records: str, write_predictions: bool, wait: bool, bigquery_table: str | None,
         progress_every_s: float | None, overwrite: bool) -> dict:
    """Builds and runs the pipeline (`evaluate` holds the output's lock)."""
    options = pipeline_options(pipeline_args)
    _log.info('headstream: run %s: %d files, %s', run_id, len(files),
              config_lib.config_summary(config))
    start = time.monotonic()
    runner = make_runner(options)
    p = beam.Pipeline(runner=runner, options=options)
    build_pipeline(p, config, files, run_id, started_at, bad_records, write_predictions,
                   dictionary_columns, bigquery_table=bigquery_table, overwrite=overwrite)
    if type(runner).__name__ == 'FnApiRunner':
        # A local batch run writes its report in this process: compile the page template
        # meanwhile (on a core the evaluation leaves idle at times).
        from pipeline.report import template as report
        report.prepare_in_background()
    progress = Progress(run_id, progress_every_s if wait else None).start()
    try:
        try:
            result = p.run()
            if not wait:
                return {'run_id': run_id, 'output': config.output, 'state': 'submitted'}
            progress.attach(result)
            result.wait_until_finish()
        except Exception as e:  # noqa: BLE001 -- runners wrap DoFn errors; recover our one line
            for pattern, error in _ONE_LINE_ERRORS:
                match = pattern.search(str(e))
                if match:
                    raise error(re.sub(r" \[while running .*$", '', match.group(0))) from None
            raise
    except BaseException as e:
        # Nothing was published (publishing is the run's last step, and rolls back when it
        # fails); the staging directory holds the failed run's partial files.
        _discard_staging(config.output, run_id)
        if isinstance(e, KeyboardInterrupt):
            # The runner's worker threads may still be in a bundle: once they stopped, whatever
            # they wrote goes too (writes under a discarded staging directory already fail).
            _wait_for_worker_threads()
            _discard_staging(config.output, run_id)
        raise
    finally:
        progress.stop()
        if wait:
            _restore_sampling_period()
    summary = _read_summary(config.output)
    _log.info('headstream: run %s done in %.1f s', run_id, time.monotonic() - start)
    return summary


# How long an interrupted run waits for the runner's worker threads to stop.
STOP_WAIT_S = 30.0


def _wait_for_worker_threads(timeout_s: float = STOP_WAIT_S) -> None:
    """Waits (at most `timeout_s` in all) for this process's other non-daemon threads: a local
    runner's workers, which a KeyboardInterrupt in the main thread does not stop."""
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))


def _discard_staging(output: str, run_id: str) -> None:
    """Deletes a failed run's staging directory (and refuses later writes into it in this
    process); a failure to do so is logged, never raised (the run's own error is the one to
    report)."""
    staging = parquet_writer.staging_dir(output, run_id)
    try:
        parquet_writer.discard(staging)
    except Exception as e:  # noqa: BLE001
        _log.warning('headstream: run %s: cannot delete %s: %s', run_id, staging, e)


def _read_summary(output: str) -> dict:
    import json
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(parquet_writer.join(output, parquet_writer.SUMMARY_FILE)) as f:
        return json.loads(f.read().decode('utf-8'))
