"""Runs the batch evaluation: `evaluate(config, ['--runner=DirectRunner'])` -> summary dict.

    evaluate: validate the config against its data (`prepare`) → RunOptions → claim the output
      (lock, recovery, ownership check, staging directory) → choose the runner (`make_runner`)
      → build the graph (`pipeline.graph.build_pipeline`) → run it, logging progress
      (`pipeline.progress`) → read the published summary.json; or, on failure, discard staging.

This module owns that sequence and the publishing protocol around it; the graph is
`pipeline/graph.py`, its last step (`WriteRun`: every output, then publishing) is
`pipeline/run_outputs.py`, publishing itself `pipeline/writers/publish.py`, and the process-wide
tuning of a local run (worker threads, state sampler) `pipeline/tuning.py`.

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
import logging
import re
import threading
import time
import uuid
from typing import Any, Mapping, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import fileio
from pipeline import config as config_lib
from pipeline import sources, tuning
from pipeline.elements import BAD_RECORD, BadRecordError
from pipeline.graph import build_pipeline
from pipeline.progress import PROGRESS_EVERY_S, Progress
from pipeline.readers import UnreadableFileError
from pipeline.run_options import RunOptions
from pipeline.writers import parquet as parquet_writer
from pipeline.writers import publish as publish_lib

DEFAULT_RUNNER = 'DirectRunner'
_log = logging.getLogger(__name__)
# Runners re-raise a worker's error wrapped or as text; these are the one-line errors to recover.
_ONE_LINE_ERRORS = (
    (re.compile(re.escape(BAD_RECORD) + r': file .*?, row \d+, column [^\n]*'), BadRecordError),
    (re.compile(r'(?<=UnreadableFileError: )cannot read \w+ file [^\n]*'), UnreadableFileError),
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


def make_runner(options: PipelineOptions) -> Any:
    """The runner object for `options`, or None to let Beam resolve `--runner` by name.

    A batch DirectRunner run goes straight to Beam's FnApiRunner (what the DirectRunner itself
    uses for batch pipelines): Beam 2.77's DirectRunner would first try to download and start the
    Prism runner, which needs network access and moves every element between processes; the run
    is tuned for this process (`tuning.use_every_core`, `tuning.end_bundles_promptly`).
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
        tuning.use_every_core(options)
        tuning.end_bundles_promptly()
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))
    return None


def new_run_id(now: datetime.datetime | None = None) -> str:
    """A run id from the start time plus a short random tag: `20261123T083522Z-1a2b3c`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return '%s-%s' % (now.strftime('%Y%m%dT%H%M%SZ'), uuid.uuid4().hex[:6])


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
        never), see `pipeline.progress.Progress`.
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
    _check_arguments(bad_records, bigquery_table, run_id)
    config, files, dictionary_columns = prepare(config, output)
    started_at = datetime.datetime.now(datetime.timezone.utc)
    options = RunOptions(run_id=run_id or new_run_id(started_at), started_at=started_at,
                         bad_records=bad_records, write_predictions=write_predictions,
                         bigquery_table=bigquery_table, overwrite=overwrite,
                         dictionary_columns=tuple(dictionary_columns))
    locked = _claim_output(config.output, options.run_id, overwrite, wait)
    try:
        return _run(config, files, options, pipeline_args, wait, progress_every_s)
    finally:
        if locked:
            publish_lib.release_lock(config.output, options.run_id)


def _check_arguments(bad_records: str, bigquery_table: str | None, run_id: str | None) -> None:
    """Refuses `evaluate`'s invalid keywords before the config is read (ConfigError)."""
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


def _run(config: config_lib.EvalConfig, files: Sequence[str], options: RunOptions,
         pipeline_args: Sequence[str], wait: bool, progress_every_s: float | None) -> dict:
    """Builds and runs the pipeline (`evaluate` holds the output's lock)."""
    beam_options = pipeline_options(pipeline_args)
    _log.info('headstream: run %s: %d files, %s', options.run_id, len(files),
              config_lib.config_summary(config))
    start = time.monotonic()
    runner = make_runner(beam_options)
    p = beam.Pipeline(runner=runner, options=beam_options)
    build_pipeline(p, config, files, options)
    if type(runner).__name__ == 'FnApiRunner':
        # A local batch run writes its report in this process: compile the page template
        # meanwhile (on a core the evaluation leaves idle at times).
        from pipeline.report import template as report
        report.prepare_in_background()
    progress = Progress(options.run_id, progress_every_s if wait else None).start()
    try:
        _run_job(p, progress, wait)
    except BaseException as e:
        # Nothing was published (publishing is the run's last step, and rolls back when it
        # fails); the staging directory holds the failed run's partial files.
        _discard_staging(config.output, options.run_id)
        if isinstance(e, KeyboardInterrupt):
            # The runner's worker threads may still be in a bundle: once they stopped, whatever
            # they wrote goes too (writes under a discarded staging directory already fail).
            _wait_for_worker_threads()
            _discard_staging(config.output, options.run_id)
        raise
    finally:
        progress.stop()
        if wait:
            tuning.restore_sampling_period()
    if not wait:
        return {'run_id': options.run_id, 'output': config.output, 'state': 'submitted'}
    summary = _read_summary(config.output)
    _log.info('headstream: run %s done in %.1f s', options.run_id, time.monotonic() - start)
    return summary


def _run_job(p: beam.Pipeline, progress: Progress, wait: bool) -> None:
    """Runs the pipeline and, when `wait`, waits for it, reporting its progress; a worker's error
    that the command line prints in one line is re-raised as itself (`_ONE_LINE_ERRORS`)."""
    try:
        result = p.run()
        if not wait:
            return
        progress.attach(result)
        result.wait_until_finish()
    except Exception as e:  # noqa: BLE001 -- runners wrap DoFn errors; recover our one line
        for pattern, error in _ONE_LINE_ERRORS:
            match = pattern.search(str(e))
            if match:
                raise error(re.sub(r" \[while running .*$", '', match.group(0))) from None
        raise


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
    with FileSystems.open(fileio.join(output, fileio.SUMMARY_FILE)) as f:
        return json.loads(f.read().decode('utf-8'))
