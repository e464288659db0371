"""Running headstream on a dask.distributed cluster.

`--runner DaskRunner` selects `HeadstreamDaskRunner`: Beam's DaskRunner
(`apache_beam.runners.dask.dask_runner.DaskRunner`), whose translation of Create, GroupByKey and
Flatten it reuses, with the changes a multi-output, multi-sink batch pipeline needs on Beam 2.77:

* Beam's runner computes only the last transform it translates, so a sink elsewhere in the graph
  silently never runs. This runner computes every leaf of the graph.
* Beam's runner hands every consumer of a multi-output ParDo all of its outputs, whatever their
  tag, and drops what a DoFn emits from `finish_bundle`. This runner runs each bundle itself and
  gives each consumer only its own tag's elements.
* Beam's runner computes a side input from inside every task that reads it. This runner lets the
  scheduler materialize it once and hands it to those tasks.
* `Create` puts one element per Dask partition (up to
  `pipeline.dask_translate.MAX_CREATE_PARTITIONS`) unless `--dask_npartitions` /
  `--dask_partition_size` say otherwise, so a file list fans out over the workers: Beam's default
  packs 128 elements into one partition and replaces `Reshuffle` by an identity, so one worker
  would read every file.

This module owns the runner, its options, its refusals and the private cluster; the translation
of the graph into Dask bags is `pipeline/dask_translate.py`.

Beam's own `--dask_*` options pass through (`--dask_client_address`, `--dask_scheduler_file`,
`--dask_connection_timeout`, `--dask_client_name`, `--dask_connection_limit`,
`--dask_npartitions`, `--dask_partition_size`); `--dask_local_workers` is added here. Without
`--dask_client_address` or `--dask_scheduler_file`, the runner starts a private
`distributed.LocalCluster` on 127.0.0.1 (`--dask_local_workers` worker processes, one thread
each) for the run. The result's `wait_until_finish` closes the client, and the private cluster,
whatever the outcome, keeping distributed's normal-shutdown chatter out of the output.

A worker lost mid-run costs time, not correctness: the scheduler recomputes its tasks, whose
results replace (never add to) the lost ones. A task lost more often than the scheduler's
`distributed.scheduler.allowed-failures` fails the run with `DaskWorkerLostError`, in one line.

The DaskRunner executes bounded pipelines in the global window only: `--streaming`, unbounded
collections and event-time windowing or triggers are refused before anything runs
(`DaskUnsupportedError`), naming the runners that do support them. A batch evaluation with
`window:` needs no Beam windowing (windows are part of the metric keys), so it runs on Dask, with
the streaming-only `allowed_lateness` and `early_firing` ignored as on every batch runner.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import dask
import dask.bag as db
import distributed
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pipeline import AppliedPTransform, Pipeline, PipelineVisitor
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms import trigger as beam_trigger
from apache_beam.transforms import window as beam_window

from pipeline.config import ConfigError
from pipeline.dask_translate import translate

__all__ = [
    'DASK_RUNNER',
    'DaskUnsupportedError',
    'DaskWorkerLostError',
    'HeadstreamDaskOptions',
    'HeadstreamDaskRunner',
    'STREAMING_RUNNERS',
    'check_dask_supported',
    'is_dask_runner',
    'local_dask_cluster',
]

_LOGGER = logging.getLogger(__name__)

#: The fully qualified name `--runner DaskRunner` stands for.
DASK_RUNNER = 'pipeline.dask_runner.HeadstreamDaskRunner'

#: Every spelling of `--runner` that selects `HeadstreamDaskRunner`.
_DASK_NAMES = frozenset({
    'daskrunner',
    'dask',
    'apache_beam.runners.dask.dask_runner.daskrunner',
    DASK_RUNNER.lower(),
})

#: Named in every refusal: where streaming runs instead.
STREAMING_RUNNERS = ('DataflowRunner (Pub/Sub or continuously matched files, with triggers; '
                     'docs/streaming.md); for shards arriving in a local directory, '
                     '`headstream watch` needs no streaming runner')

# Loggers that report a cluster's normal shutdown as warnings or errors (closed comms, nannies
# asked to close, heartbeats to a stopped scheduler).
_SHUTDOWN_LOGGERS = ('distributed', 'tornado', 'asyncio')


class DaskUnsupportedError(ConfigError):
    """The pipeline or its options need something the DaskRunner cannot do.

    A `ConfigError`, so the command line reports it in one line with exit status 2.
    """


class DaskWorkerLostError(RuntimeError):
    """The run failed because worker processes kept dying while running one task.

    Dask recomputes the tasks of a worker that dies (their results are deterministic, and a
    recomputed result replaces the lost one, never adds to it), so a single lost worker costs time,
    not correctness. A task whose workers died more often than the scheduler's
    `distributed.scheduler.allowed-failures` (3 by default) fails the run with this error, in one
    line naming the task and the last worker.
    """


class HeadstreamDaskOptions(PipelineOptions):
    """Options of headstream's Dask support beyond Beam's own `--dask_*` options."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument(
            '--dask_local_workers', type=int, default=2,
            help='Worker processes of the local Dask cluster started when neither '
                 '--dask_client_address nor --dask_scheduler_file is given (one thread each).')


def is_dask_runner(runner: Any) -> bool:
    """Whether a `--runner` value (a name, a class or an instance) selects the DaskRunner."""
    if runner is None:
        return False
    if isinstance(runner, str):
        return runner.strip().lower() in _DASK_NAMES
    cls = runner if isinstance(runner, type) else type(runner)
    return issubclass(cls, DaskRunner)


def check_dask_supported(streaming: bool = False) -> None:
    """Refuses, before anything runs, a streaming run on the DaskRunner.

    Args:
        streaming: the `--streaming` flag.

    Raises:
        DaskUnsupportedError: naming the option and the runners that support it.
    """
    if streaming:
        raise DaskUnsupportedError(
            '--streaming: the DaskRunner runs bounded (batch) pipelines only; streaming runs on '
            + STREAMING_RUNNERS)


class _GraphCheck(PipelineVisitor):
    """Refuses graphs with unbounded collections, event-time windowing or triggers."""

    def visit_transform(self, node: AppliedPTransform) -> None:
        for out in node.outputs.values():
            if isinstance(out, pvalue.PCollection) and not out.is_bounded:
                raise DaskUnsupportedError(
                    '%s: produces an unbounded collection; the DaskRunner runs bounded (batch) '
                    'pipelines only; streaming runs on %s' % (node.full_label, STREAMING_RUNNERS))
        if isinstance(node.transform, beam.WindowInto):
            windowing = node.transform.get_windowing(None)
            if not isinstance(windowing.windowfn, beam_window.GlobalWindows) or \
                    not isinstance(windowing.triggerfn, beam_trigger.DefaultTrigger):
                raise DaskUnsupportedError(
                    '%s: event-time windows and triggers are not executed by the DaskRunner (it '
                    'evaluates in the global window); run on %s'
                    % (node.full_label, STREAMING_RUNNERS))


@contextlib.contextmanager
def _log_level(names: Sequence[str], level: int) -> Iterator[None]:
    """Sets loggers to `level` for the block, then restores theirs."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, saved):
            lg.setLevel(old)


@contextlib.contextmanager
def local_dask_cluster(n_workers: int = 2) -> Iterator[str]:
    """A private dask.distributed cluster on this machine, for one run.

    The scheduler runs in this process and listens on 127.0.0.1 only, its dashboard (which needs
    bokeh) on a free port, logged at INFO; workers are separate processes with one thread each (so
    DoFns never share an interpreter lock). On exit the workers, their nannies and the scheduler
    are stopped, quietly.

    Workers are started with multiprocessing's `spawn`: a script that runs a pipeline must do so
    under `if __name__ == '__main__':` (the `headstream` command does).

    Args:
        n_workers: worker processes.

    Yields:
        The scheduler's address, for `--dask_client_address`.

    Raises:
        ConfigError: `n_workers` is below 1.
    """
    if n_workers < 1:
        raise ConfigError('--dask_local_workers: expected at least 1 worker, got %d' % n_workers)
    # The scheduler runs in this process: it logs every client connection, and warns about its
    # garbage collections whenever the process is busy building or running the pipeline. Keep it
    # to errors.
    with _log_level(['distributed'], logging.ERROR):
        cluster = distributed.LocalCluster(
            n_workers=n_workers, processes=True, threads_per_worker=1, host='127.0.0.1',
            # A free port: None would still take (or warn about) the default 8787.
            dashboard_address='127.0.0.1:0',
            # A task's failure reaches the client as the run's exception (a bad record, one
            # line); the workers need not log it as well.
            silence_logs=logging.CRITICAL)
        _LOGGER.info('headstream: local Dask cluster of %d workers; dashboard at %s',
                     n_workers, cluster.dashboard_link)
        try:
            yield cluster.scheduler_address
        finally:
            with _log_level(_SHUTDOWN_LOGGERS, logging.CRITICAL):
                cluster.close()


class HeadstreamDaskResult(DaskRunnerResult):
    """Beam's Dask result that releases the client (and a private cluster) once the run is over.

    `wait_until_finish` (once the run is done or failed) and `cancel` close the client and, when
    the runner started one, the local cluster; a failed run re-raises the workers' error.
    """

    def __init__(self, client: Any, futures: Sequence[Any],
                 resources: contextlib.ExitStack) -> None:
        super().__init__(client, futures)
        self._resources = resources

    def wait_until_finish(self, duration: int | None = None) -> str:
        try:
            return super().wait_until_finish(duration)
        except distributed.KilledWorker as e:
            raise DaskWorkerLostError(_killed_worker_message(e)) from None
        finally:
            if self._state in (PipelineState.DONE, PipelineState.FAILED):
                self._resources.close()

    def cancel(self) -> str:
        try:
            return super().cancel()
        finally:
            self._resources.close()


def _killed_worker_message(error: Any) -> str:
    """One line for distributed's KilledWorker: the step, the task, the last worker, the limit."""
    task = error.task
    # Keys of bag partitions are (name, index, ...); the name carries the pipeline step.
    if isinstance(task, tuple) and len(task) > 1:
        index = task[1] if len(task) == 2 else ', '.join(map(str, task[1:]))
        where = 'task %s, partition %s' % (task[0], index)
    else:
        where = 'task %s' % (task,)
    worker = getattr(error.last_worker, 'address', error.last_worker)
    return ('DaskRunner: the run failed: %s was lost with a dying worker %d time(s), last on %s; '
            'the scheduler allows %d (distributed.scheduler.allowed-failures); outputs of this '
            'run, if any, are incomplete'
            % (where, error.allowed_failures + 1, worker, error.allowed_failures))


class HeadstreamDaskRunner(DaskRunner):
    """Beam's DaskRunner with every sink computed and a private cluster when none is given.

    See the module docstring for how it differs from `apache_beam.runners.dask.dask_runner`.
    """

    def run_pipeline(self, pipeline: Pipeline, options: PipelineOptions) -> HeadstreamDaskResult:
        check_dask_supported(streaming=options.view_as(StandardOptions).streaming)
        pipeline.visit(_GraphCheck())
        dask_options = options.view_as(DaskOptions).get_all_options(
            drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        n_workers = options.view_as(HeadstreamDaskOptions).dask_local_workers

        resources = contextlib.ExitStack()
        try:
            if not dask_options.get('address') and not dask_options.get('scheduler_file'):
                dask_options['address'] = resources.enter_context(local_dask_cluster(n_workers))
            client = distributed.Client(**dask_options)
            resources.callback(self._close_client, client)

            leaves = translate(pipeline, bag_kwargs)
            futures = []
            if leaves:
                (graph,) = dask.optimize(db.concat(leaves))
                futures.append(client.compute(graph))
        except BaseException:
            resources.close()
            raise
        return HeadstreamDaskResult(client, futures, resources)

    @staticmethod
    def _close_client(client: Any) -> None:
        with _log_level(_SHUTDOWN_LOGGERS, logging.CRITICAL):
            client.close()
