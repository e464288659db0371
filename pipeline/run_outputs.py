"""`WriteRun`: a batch run's last step, from the one group of its results to its published outputs.

    (0, [('result', KeyResult) | ('results', ResultsPack) | ('errors', Table)
         | ('stats', tuple) | ('marker', None), ...])
      → metrics/, plots/, errors/, summary.json, tfma/, tensorboard/, report.html
        under <output>/.staging-<run_id>/ → published (`publish_locked`) → the summary dict
        (and, with a BigQuery table, the metrics rows on the `BIGQUERY_TAG` output)

It runs inside the pipeline (a Dataflow launcher does not wait for the job). The TFMA,
TensorBoard and report writers are optional: a missing module is skipped with a warning
(`_optional_writer`). Publishing itself, with the output's lock, is `pipeline/writers/publish.py`;
the protocol around the whole run is in `pipeline/run.py`'s docstring.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import datetime
import importlib
import logging
import sys
import threading
from typing import Any, Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipeline import fileio
from pipeline import config as config_lib
from pipeline import slice_sizes
from pipeline import schema as schema_lib
from pipeline.results import KeyResult, plot_tables, table_ids
from pipeline.results_frame import ResultsFrame, TypedValues, plain_table
from pipeline.metrics_table import candidate_rows
from pipeline.packed_plots import plot_rows
from pipeline.run_options import RunOptions
from pipeline import validation
from pipeline.schema import ERRORS
from pipeline.writers import parquet as parquet_writer
from pipeline.writers import publish as publish_lib

_log = logging.getLogger(__name__)
BIGQUERY_TAG = 'bigquery_rows'


@dataclasses.dataclass
class RunPieces:
    """Every piece of a run's results, gathered from the group `WriteRun` receives: the keys'
    results as columns (`frame`; packs stay arrays), errors and counts."""
    results: list[KeyResult] = dataclasses.field(default_factory=list)
    packs: list[Any] = dataclasses.field(default_factory=list)
    errors: list[pa.Table] = dataclasses.field(default_factory=list)
    rows: int = 0
    bad: int = 0
    # Per slice spec ('_X_'-joined columns), evaluated rows with a null slice value.
    unsliced: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def gather(cls, pieces: Iterable[tuple[str, Any]]) -> 'RunPieces':
        """Sorts the tagged pieces (`pipeline.graph.build_pipeline` tags them) by kind."""
        out = cls()
        for kind, piece in pieces:
            if kind == 'result':
                out.results.append(piece)
            elif kind == 'results':  # a shard block's keys (`block_results.ResultsPack`)
                out.packs.append(piece)
            elif kind == 'errors':
                out.errors.append(piece)
            elif kind == 'stats':
                out.rows += piece[0]
                out.bad += piece[1]
                for columns, count in piece[2]:
                    name = '_X_'.join(columns)
                    out.unsliced[name] = out.unsliced.get(name, 0) + count
        return out


class WriteRun(beam.DoFn):
    """Writes a run's outputs from the one group holding every piece of the run's results."""

    # Up to this many metrics rows, the TFMA writer runs beside the others; beyond, after them
    # (at 10^6 slices, 1.3·10^7 rows, side by side held ~0.4 GB more at the peak).
    SIDE_BY_SIDE_ROWS = 4_000_000

    def __init__(self, config: config_lib.EvalConfig, options: RunOptions, n_files: int):
        self._config = config
        self._options = options
        self._n_files = n_files

    def process(self, group: tuple[Any, Iterable[tuple[str, Any]]]) -> Iterable[Any]:
        config, options = self._config, self._options
        pieces = RunPieces.gather(group[1])
        for name, count in sorted(pieces.unsliced.items()):
            _log.warning('headstream: %d evaluated rows have a null %s: they are in Overall but '
                         'in no %s slice', count, name, name)
        frame = ResultsFrame.concat([ResultsFrame.from_pack(p) for p in pieces.packs]
                                    + [ResultsFrame.from_results(pieces.results)])
        pieces.packs = pieces.results = []  # the frame holds them now
        _release(group[1])
        counts = frame.keys.spec_counts()
        too_many = slice_sizes.many_slices_warnings(counts)
        keep, left_out = frame.keys.small_slices(config.min_slice_size)
        if left_out:
            frame = frame.take(np.flatnonzero(keep))
        frame = frame.with_multi_head(config.head_weights, len(config.heads))
        frame = frame.take(frame.keys.order(config.slices))
        # plots.max_slices: only Overall and the largest slices keep their plots, before any
        # plot is written (Parquet, TFMA, TensorBoard, report).
        keep, without_plots = frame.keys.plot_limit(config.plots.max_slices)
        frame.drop_plots(keep)
        m_schema = schema_lib.with_extras(schema_lib.METRICS, config.windowed, config.stepped)
        ids = table_ids(config, options.run_id, options.started_at)
        # Text columns as dictionaries (10^7 rows at 10^6 slices); files are written as strings.
        metrics = frame.metrics_table(m_schema, ids, dictionary=True)
        typed = TypedValues(frame.keys)
        # The plots, far larger (a few hundred rows a key), are built and written in pieces.
        plots = _PlotPieces(config, frame.plot_results(), options.run_id, options.started_at)
        frame = None
        # Everything is written under the run's staging directory and published at the end.
        out = parquet_writer.staging_dir(config.output, options.run_id)
        tables = (pieces, metrics, m_schema, plots, out, counts, left_out, too_many,
                  without_plots)
        if metrics.num_rows <= self.SIDE_BY_SIDE_ROWS and plots.small:
            # The TFMA writer works from the tables in memory on a thread of its own, beside the
            # Parquet files, the summary and the writers that read those files (its numpy work
            # and file writes leave the GIL: at 10^5 slices, ~2.4 s of writers one after the
            # other take ~1.7 s).
            with concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix='headstream-tfma') as pool:
                tfma = pool.submit(_write_tfma, config, out, metrics, plots, typed)
                try:
                    summary = self._write_tables(*tables)
                except BaseException:  # raised once the TFMA writer is done; its error logged
                    if tfma.exception() is not None:
                        _log.error('headstream: the TFMA writer failed too: %s',
                                   tfma.exception())
                    raise
                tfma.result()
        else:  # one after the other: the writers' memory does not add up (nor a plots table
            # of more than KEEP_ROWS rows, built on each reading, get built twice at once)
            summary = self._write_tables(*tables)
            return_freed_memory()
            _write_tfma(config, out, metrics, plots, typed)
        return_freed_memory()
        # The summary was written before the other writers (the report shows it); now that they
        # are done too, record the run's whole wall time, keeping the tables' time apart.
        finished = datetime.datetime.now(datetime.timezone.utc)
        summary['tables_written_s'] = summary['wall_time_s']
        summary['finished_at'] = finished.isoformat()
        summary['wall_time_s'] = round((finished - options.started_at).total_seconds(), 3)
        # Every file of the run: what a later run may replace (publish_lib.our_files).
        summary['files'] = [rel for rel in parquet_writer.list_files(out)
                            if rel not in (fileio.SUMMARY_FILE, publish_lib.OWNER_FILE)]
        parquet_writer.write_json(summary, fileio.join(out, fileio.SUMMARY_FILE))
        publish_locked(out, config.output, options.run_id, options.overwrite)
        _log.info('headstream: run %s wrote %d metric rows to %s (%d rows read, %d bad)',
                  options.run_id, metrics.num_rows, config.output, pieces.rows, pieces.bad)
        if options.bigquery_table:
            from pipeline.writers import bigquery
            for row in bigquery.metric_rows(metrics):
                yield beam.pvalue.TaggedOutput(BIGQUERY_TAG, row)
        yield summary

    def _write_tables(self, pieces: RunPieces, metrics: pa.Table, m_schema: pa.Schema,
                      plots: '_PlotPieces', out: str, counts: dict[str, int],
                      left_out: dict[str, dict[str, int]], too_many: list[str],
                      without_plots: int) -> dict[str, Any]:
        """The Parquet tables, validation, summary.json, TensorBoard and the report, into the
        staging dir `out`; returns the summary."""
        config = self._config
        # The plots table first: the TFMA writer, on its thread, reads it from its start.
        plots.keep()
        written = parquet_writer.write_outputs(out, metrics, None, self._error_table(pieces),
                                               schema=m_schema)
        return_freed_memory()
        plots_path = fileio.join(out, parquet_writer.PLOTS_FILE)
        plots.rows = parquet_writer.write_table_pieces(plots(), plots.schema, plots_path)
        written.insert(1, plots_path)
        summary = self._summary(pieces, metrics, plots.rows, [
            p[len(out.rstrip('/')) + 1:] for p in written])
        summary.update(_slice_summary(config, counts, left_out, too_many))
        summary['plots'] = {'max_slices': config.plots.max_slices,
                            'slices_without_plots': without_plots}
        summary_path = fileio.join(out, fileio.SUMMARY_FILE)
        verdict = validation.check_rules(config, metrics, left_out)
        if verdict is not None:
            summary['outputs'] += validation.write_validation(out, verdict, config)
            summary['validation'] = {'blessed': verdict['blessed'],
                                     'checks': len(verdict['checks']),
                                     'failing': validation.failing(verdict),
                                     'line': validation.verdict_line(verdict)}
        parquet_writer.write_json(summary, summary_path)
        summary.update(_write_optional_outputs(config, out, metrics, m_schema, plots))
        return summary

    def _error_table(self, pieces: RunPieces) -> pa.Table | None:
        """errors/'s table (dead_letter mode: by file and row); None in fail mode."""
        if self._options.bad_records != 'dead_letter':
            return None
        table = pa.concat_tables(pieces.errors) if pieces.errors else ERRORS.empty_table()
        return table.sort_by([('file', 'ascending'), ('row', 'ascending')])

    def _summary(self, pieces: RunPieces, metrics: pa.Table, plots_rows: int,
                 outputs: list[str]) -> dict[str, Any]:
        """summary.json's content once the tables are written."""
        config, options = self._config, self._options
        finished = datetime.datetime.now(datetime.timezone.utc)
        return {
            'run_id': options.run_id,
            'started_at': options.started_at.isoformat(),
            'finished_at': finished.isoformat(),
            'wall_time_s': round((finished - options.started_at).total_seconds(), 3),
            'input': {'pattern': config.pattern, 'format': config.format,
                      'files': self._n_files},
            'rows_read': pieces.rows,
            'bad_rows': pieces.bad,
            'rows_evaluated': pieces.rows - pieces.bad,
            # Per slice spec, evaluated rows with a null slice value (in no slice of that spec).
            'rows_outside_slices': dict(sorted(pieces.unsliced.items())),
            'bad_records': options.bad_records,
            'heads': config.head_names,
            'multi_head': config.multi_head_name,
            'head_weights': list(config.head_weights) if config.head_weights else None,
            'slices': [list(s) for s in config.slices],
            'window': config.to_dict().get('window'),
            'tensorboard': config.to_dict().get('tensorboard'),
            'metrics_rows': metrics.num_rows,
            'plots_rows': plots_rows,
            'outputs': outputs,
            'write_predictions': options.write_predictions,
            'bigquery_table': options.bigquery_table,
            'config': config.to_dict(),
        }


def _release(values: Iterable[Any]) -> None:
    """Lets go of the group's pieces once `WriteRun` has taken what it needs from them: the
    runner's list of decoded pieces (10^6 keys' results: ~0.7 GB) would otherwise live until the
    run's last writer is done. (A retried bundle decodes its input again.)"""
    if isinstance(values, list):
        values.clear()
    return_freed_memory()


def return_freed_memory() -> None:
    """Hands the heap's free pages back to the system (glibc's `malloc_trim`; elsewhere
    nothing). After the state work, ~1 GB of a 10^6-slice run is freed but kept by malloc in
    pieces too small for it to return on its own; the writers would add to that."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL('libc.so.6')
        return libc if hasattr(libc, 'malloc_trim') else None
    except OSError:
        return None


_LIBC = _glibc() if sys.platform.startswith('linux') else None


def _slice_summary(config: config_lib.EvalConfig, counts: dict[str, int],
                   left_out: dict[str, dict[str, int]], warnings: list[str]) -> dict[str, Any]:
    """summary.json's slice keys: slices per spec, those `min_slice_size` left out (per spec: slices
    and rows) and the warnings about specs with very many slices."""
    return {'slices_per_spec': counts,
            'min_slice_size': config.min_slice_size,
            'slices_left_out': left_out,
            'slice_warnings': warnings}


class _PlotPieces:
    """The run's plots table in pieces (`results.plot_tables`); called with a set of slice names,
    only those slices' pieces. A table of at most `KEEP_ROWS` rows (the default
    `plots.max_slices` gives ~300k) is built whole on its first reading and kept for the next (the
    TFMA writer, on a thread of its own, reads it beside Parquet: a lock makes one of them build
    it, the other wait); a larger one is built anew on every call, a piece at a time."""

    KEEP_ROWS = 1_000_000

    def __init__(self, config: config_lib.EvalConfig, prepared: list[KeyResult], run_id: str,
                 evaluated_at: datetime.datetime):
        # Only keys with plots make plot rows (most keys of a run with many slices have none).
        plotted = [r for r in prepared if r.plots]
        self._args = (config, plotted, run_id, evaluated_at)
        self.schema = schema_lib.with_extras(schema_lib.PLOTS, config.windowed, config.stepped)
        self.rows = 0
        # At most KEEP_ROWS rows: the table is built once and kept.
        self.small = sum(plot_rows(r.plots) for r in plotted) <= self.KEEP_ROWS
        self._kept: list[pa.Table] | None = None
        self._lock = threading.Lock()

    def __call__(self, slices: set[str] | None = None) -> Iterable[pa.Table]:
        config, prepared, run_id, evaluated_at = self._args
        if slices is not None:
            prepared = [r for r in prepared if schema_lib.slice_name(
                tuple(r.key.slice_columns), tuple(r.key.slice_values)) in slices]
            return plot_tables(config, prepared, run_id, evaluated_at)
        if not self.small:
            return plot_tables(config, prepared, run_id, evaluated_at)
        return iter(self.keep())

    def keep(self) -> list[pa.Table] | None:
        """The whole table's pieces, built now if not yet, for a table of at most `KEEP_ROWS`
        rows; None for a larger one (built on every call)."""
        if not self.small:
            return None
        config, prepared, run_id, evaluated_at = self._args
        with self._lock:
            if self._kept is None:
                self._kept = list(plot_tables(config, prepared, run_id, evaluated_at))
        return self._kept


def _write_tfma(config: config_lib.EvalConfig, out: str, metrics: pa.Table,
                plots: _PlotPieces, typed: TypedValues) -> None:
    """The TFMA writer (when installed) on the candidate rows, into the staging dir `out`."""
    names = list(config.head_names) + ([config.multi_head_name]
                                       if config.multi_head_name else [])
    _optional_writer('pipeline.writers.tfma', 'write_tfma', out, candidate_rows(metrics), plots,
                     [list(s) for s in config.slices], names, typed)


def _write_optional_outputs(config: config_lib.EvalConfig, out: str, metrics: pa.Table,
                            m_schema: pa.Schema, plots: _PlotPieces) -> dict[str, Any]:
    """The TensorBoard (when configured) and report writers, into the staging dir `out` (the
    report from the tables in memory, as the files written there hold them); returns what they
    add to the summary."""
    extra: dict[str, Any] = {}
    if config.tensorboard is not None:
        # TensorBoard takes at most `max_runs` runs (slices): the metrics are capped first, and
        # only their slices' plots are built. (Baseline and diff rows: the tables and report.)
        tb_metrics, left_out = slice_sizes.cap_runs(candidate_rows(metrics),
                                                    config.tensorboard.max_runs)
        tb_metrics = plain_table(tb_metrics, schema_lib.with_extras(
            schema_lib.METRICS, config.windowed, config.stepped))
        extra['tensorboard_runs_left_out'] = left_out
        tb_plots = pa.concat_tables(list(plots(set(tb_metrics.column('slice').to_pylist()))))
        _optional_writer('pipeline.writers.tensorboard', 'write_tensorboard',
                         _tensorboard_dir(config.tensorboard.dir, config.output, out),
                         tb_metrics, tb_plots)
    _optional_writer('pipeline.report', 'write_report', out, config.output, metrics=metrics,
                     metrics_schema=m_schema, plots=plots)
    return extra


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
        return fileio.join(staging, 'tensorboard')
    base = output.rstrip('/') + '/'
    path = configured.rstrip('/')
    if path.startswith(base):
        return fileio.join(staging, path[len(base):])
    return configured


def _optional_writer(module: str, function: str, *args: Any, **kwargs: Any) -> None:
    """Calls module.function(*args, **kwargs); a missing module is skipped with a warning, any
    other error (including an ImportError raised from inside the module) fails the run."""
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        if e.name != module:
            raise
        _log.warning('headstream: %s is not installed; skipping %s', module, function)
        return
    getattr(mod, function)(*args, **kwargs)
