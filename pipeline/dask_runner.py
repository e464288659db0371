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
* `Create` puts one element per Dask partition (up to `MAX_CREATE_PARTITIONS`) unless
  `--dask_npartitions` / `--dask_partition_size` say otherwise, so a file list fans out over the
  workers: Beam's default packs 128 elements into one partition and replaces `Reshuffle` by an
  identity, so one worker would read every file.

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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import dask
import dask.bag as db
import distributed
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pipeline import AppliedPTransform, Pipeline, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import transform_evaluator as dask_ops
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.dask.overrides import (_Create, _Flatten, _GroupAlsoByWindow,
                                                _GroupByKeyOnly, dask_overrides)
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms import trigger as beam_trigger
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.sideinputs import SideInputMap

from pipeline.config import ConfigError

__all__ = [
    'DASK_RUNNER',
    'DaskUnsupportedError',
    'DaskWorkerLostError',
    'HeadstreamDaskOptions',
    'HeadstreamDaskRunner',
    'MAX_CREATE_PARTITIONS',
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

#: `Create` spreads its elements over at most this many Dask partitions by default.
MAX_CREATE_PARTITIONS = 1024

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


# --- translation -----------------------------------------------------------------------------


def _drain(partition: Iterator[Any]) -> list[Any]:
    """Consumes a leaf partition; its elements are never needed on the client."""
    for _ in partition:
        pass
    return []


def _select_tag(partition: Iterator[Any], tag: str | None) -> list[Any]:
    """The elements of one output tag (None: the main one) of a multi-output ParDo's partition."""
    out = []
    for item in partition:
        if isinstance(item, pvalue.TaggedOutput):
            if item.tag == tag:
                out.append(item.value.value)  # TaggedOutput(tag, WindowedValue)
        elif tag is None:
            out.append(item)
    return out


def _concat_partitions(partitions: Sequence[Sequence[Any]]) -> list[Any]:
    """Joins a bag's partitions into one list (a side input's contents)."""
    return [item for part in partitions for item in part]


class _SideInput:
    """What a task needs to rebuild one side input from its materialized contents."""

    def __init__(self, side: Any) -> None:
        self.view_class = type(side)
        self.view_options = side._view_options()
        self.window_fn = side._window_mapping_fn

    def build(self, values: Sequence[Any]) -> SideInputMap:
        windowed = [dask_ops.get_windowed_value(v, self.window_fn) for v in values]
        return SideInputMap(self.view_class, self.view_options, windowed)


def _run_bundle(items: Iterator[Any], transform_label: str, fn: beam.DoFn, window_fn: Any,
                args: Sequence[Any], kwargs: Mapping[str, Any],
                side_specs: Sequence[_SideInput], *side_values: Sequence[Any]) -> list[Any]:
    """Runs a DoFn over one Dask partition as one bundle, `finish_bundle`'s outputs included.

    Returns main outputs as plain values and other tags' as `TaggedOutput(tag, WindowedValue)`,
    as Beam's Dask translation represents them.
    """
    receivers = dask_ops.OneReceiver()
    handler = _OutputHandler(
        window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
        per_element_output_counter=None, output_batch_converter=None,
        process_yields_batches=False, process_batch_yields_elements=False)
    side_inputs = [spec.build(values) for spec, values in zip(side_specs, side_values)]
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn), handler, context=DoFnContext(transform_label, state=None),
        side_inputs=side_inputs, input_args=list(args), input_kwargs=dict(kwargs),
        user_state_context=None, bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(dask_ops.get_windowed_value(item, window_fn))
    invoker.invoke_finish_bundle()  # before collecting: Beam's translation loses these outputs
    invoker.invoke_teardown()
    return [v if isinstance(v, pvalue.TaggedOutput) else v.value for v in receivers.values]


class _DaskTranslator(PipelineVisitor):
    """Translates a Beam graph (after Beam's Dask overrides) into Dask bags, one per transform."""

    def __init__(self, bag_kwargs: Mapping[str, Any]) -> None:
        self.bag_kwargs = dict(bag_kwargs)
        self.bags: dict[AppliedPTransform, Any] = {}
        self.consumed: set[int] = set()

    def _bag_of(self, pcoll: pvalue.PValue) -> Any:
        """The bag of one PCollection: its producer's, narrowed to the PCollection's tag when the
        producer has several outputs; None for the pipeline's start."""
        if isinstance(pcoll, pvalue.PBegin):
            return None
        producer = pcoll.producer
        bag = self.bags.get(producer)
        if bag is not None and len(producer.outputs) > 1:
            tag = next(t for t, out in producer.outputs.items() if out is pcoll)
            bag = bag.map_partitions(_select_tag, tag, token='select-tag-%s' % (tag,))
        return bag

    def _create(self, node: AppliedPTransform) -> Any:
        bag_kwargs = self.bag_kwargs or {
            'npartitions': max(1, min(len(node.transform.values), MAX_CREATE_PARTITIONS))}
        return dask_ops.Create(node, bag_kwargs=bag_kwargs).apply(None)

    def _pardo(self, node: AppliedPTransform, input_bag: Any) -> Any:
        # Side inputs stand as placeholders in `args`, which the invoker fills (Beam's Dask
        # translation passes `raw_side_inputs`, the views themselves, to the DoFn).
        args, kwargs = node.transform.args, node.transform.kwargs
        main_input = next(iter(node.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, 'windowing') else None
        specs, side_lists = [], []
        for side in node.side_inputs:
            side_bag = self._bag_of(side.pvalue)
            if side_bag is None:
                side_bag = db.from_sequence([], npartitions=1)
            specs.append(_SideInput(side))
            # One task gathers the side input; every bundle then receives its result.
            side_lists.append(side_bag.reduction(list, _concat_partitions, split_every=False))
        return input_bag.map_partitions(
            _run_bundle, node.full_label, node.transform.fn, window_fn, args, kwargs, specs,
            *side_lists, token='pardo-' + node.full_label.replace('/', '-'))

    def visit_transform(self, node: AppliedPTransform) -> None:
        inputs = list(node.inputs)
        for value in inputs + [s.pvalue for s in node.side_inputs]:
            self.consumed.add(id(value))
        transform = node.transform
        if isinstance(transform, _Create):
            bag = self._create(node)
        elif isinstance(transform, _Flatten):
            bags = [b for b in map(self._bag_of, inputs) if b is not None]
            bag = dask_ops.Flatten(node, bag_kwargs=self.bag_kwargs).apply(bags)
        else:
            bag = self._bag_of(inputs[0]) if inputs else None
            if bag is None:
                pass
            elif isinstance(transform, _GroupByKeyOnly):
                bag = dask_ops.GroupByKey(node, bag_kwargs=self.bag_kwargs).apply(bag)
            elif isinstance(transform, beam.ParDo) and \
                    not isinstance(transform, (beam.WindowInto, _GroupAlsoByWindow)):
                bag = self._pardo(node, bag)
            # Anything else (Impulse, Beam's Reshuffle and Read stand-ins, WindowInto the global
            # window, grouping by window in the global window) is an identity, as in Beam's
            # translation; _GraphCheck has refused event-time windowing.
        self.bags[node] = bag

    def leaves(self) -> list[Any]:
        """Bags of the transforms whose outputs nobody consumes: computing them runs every sink."""
        return [bag for node, bag in self.bags.items() if bag is not None and
                not any(id(out) in self.consumed for out in node.outputs.values())]


def _translate(pipeline: Pipeline, bag_kwargs: Mapping[str, Any]) -> list[Any]:
    """The pipeline as Dask bags, one per leaf, each drained (computing them runs every sink)."""
    pipeline.replace_all(dask_overrides())
    translator = _DaskTranslator(bag_kwargs)
    # Group by key with the task-based shuffle, whatever the local config or client says: the
    # 'disk' shuffle only works when every worker shares this machine's disk.
    with dask.config.set({'dataframe.shuffle.method': 'tasks'}):
        pipeline.visit(translator)
    return [leaf.map_partitions(_drain, token='drain') for leaf in translator.leaves()]


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

            leaves = _translate(pipeline, bag_kwargs)
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
