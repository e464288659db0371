"""Running headstream on a dask.distributed cluster.

`--runner DaskRunner` selects `HeadstreamDaskRunner`, Beam's DaskRunner
(`apache_beam.runners.dask.dask_runner.DaskRunner`) with the changes a multi-sink batch pipeline
needs on Beam 2.77:

* Beam's runner computes only the last transform it translates, so every other sink (the metrics
  table when the plots table happens to come last, say) silently never runs. This runner computes
  every leaf of the pipeline graph.
* Beam's runner hands every consumer of a multi-output ParDo all of its outputs, whatever their
  tag. This runner gives each consumer only its own tag's elements.
* Beam's runner drops what a DoFn emits from `finish_bundle`. This runner keeps it.
* Side inputs are materialized by the scheduler and handed to the tasks that read them, instead of
  being computed from inside a running task.
* `Create` puts one element per Dask partition (up to `MAX_CREATE_PARTITIONS`) unless
  `--dask_npartitions` / `--dask_partition_size` say otherwise, so a file list fans out over the
  workers (Beam's default packs 128 elements into one partition, i.e. one worker reads them all).

Without `--dask_client_address` or `--dask_scheduler_file`, the runner starts a private
`distributed.LocalCluster` (`--dask_local_workers` worker processes, one thread each, no dashboard)
for the run and shuts it down when the pipeline finishes (`local_dask_cluster`). The result's
`wait_until_finish` closes the client, and the private cluster, in every case; distributed's
shutdown chatter (closed comms, nanny messages) is kept out of the output.

The DaskRunner executes bounded pipelines in the global window only: `--streaming`, unbounded
sources and event-time windowing or triggers are refused before anything runs
(`check_dask_supported`, `DaskUnsupportedError`), naming the runners that do support them.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pipeline import AppliedPTransform, Pipeline, PipelineVisitor
from apache_beam.runners.dask import transform_evaluator as dask_ops
from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner, DaskRunnerResult
from apache_beam.runners.dask.overrides import (_Create, _Flatten, _GroupAlsoByWindow,
                                                _GroupByKeyOnly, dask_overrides)
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms import trigger as beam_trigger
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.sideinputs import SideInputMap

__all__ = [
    'DASK_RUNNER',
    'DaskUnsupportedError',
    'HeadstreamDaskOptions',
    'HeadstreamDaskRunner',
    'MAX_CREATE_PARTITIONS',
    'STREAMING_RUNNERS',
    'check_dask_supported',
    'is_dask_runner',
    'local_dask_cluster',
    'resolve_runner',
]

_LOGGER = logging.getLogger(__name__)

#: The fully qualified name `--runner DaskRunner` stands for.
DASK_RUNNER = 'pipeline.dask_runner.HeadstreamDaskRunner'

#: Every spelling of the Dask runner that selects `HeadstreamDaskRunner`.
_DASK_NAMES = frozenset({
    'daskrunner',
    'apache_beam.runners.dask.dask_runner.daskrunner',
    DASK_RUNNER.lower(),
})

#: Named in every refusal: where streaming runs instead.
STREAMING_RUNNERS = ('DataflowRunner (Pub/Sub or continuously matched files, with triggers); '
                     'locally, BundleBasedDirectRunner or DirectRunner for TestStream pipelines')

#: `Create` spreads its elements over at most this many Dask partitions by default.
MAX_CREATE_PARTITIONS = 1024

# Loggers that report a cluster's normal shutdown as warnings or errors (closed comms, nannies
# asked to close, heartbeats to a stopped scheduler).
_SHUTDOWN_LOGGERS = ('distributed', 'tornado', 'asyncio')


class DaskUnsupportedError(ValueError):
    """The pipeline or its options need something the DaskRunner cannot do."""


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


def resolve_runner(runner: str | None) -> str | None:
    """Maps the `DaskRunner` shorthand (and Beam's class path) to `DASK_RUNNER`.

    Args:
        runner: a `--runner` value, or None.

    Returns:
        `DASK_RUNNER` for every spelling of the Dask runner; any other value unchanged.
    """
    return DASK_RUNNER if is_dask_runner(runner) else runner


def check_dask_supported(streaming: bool = False, config: Any = None) -> None:
    """Refuses, before anything runs, what the DaskRunner cannot execute.

    Args:
        streaming: the `--streaming` flag.
        config: the evaluation config (`pipeline.config.EvalConfig`) or None; a `window:` with
            early firings (processing-time triggers) needs a streaming runner.

    Raises:
        DaskUnsupportedError: naming the option and the runners that support it.
    """
    if streaming:
        raise DaskUnsupportedError(
            '--streaming: the DaskRunner runs bounded (batch) pipelines only; streaming runs on '
            + STREAMING_RUNNERS)
    window = getattr(config, 'window', None)
    if window is not None and getattr(window, 'early_firing', None):
        raise DaskUnsupportedError(
            'window.early_firing: triggers fire panes in streaming runs, which the DaskRunner '
            'does not execute; run this config on ' + STREAMING_RUNNERS
            + ', or drop early_firing for a batch evaluation on Dask')


def _check_graph(pipeline: Pipeline) -> None:
    """Refuses graphs with unbounded collections, event-time windowing or triggers."""

    class _Checker(PipelineVisitor):

        def visit_transform(self, node: AppliedPTransform) -> None:
            for out in node.outputs.values():
                if isinstance(out, pvalue.PCollection) and not out.is_bounded:
                    raise DaskUnsupportedError(
                        '%s: produces an unbounded collection; the DaskRunner runs bounded '
                        '(batch) pipelines only; streaming runs on %s'
                        % (node.full_label, STREAMING_RUNNERS))
            transform = node.transform
            if isinstance(transform, beam.WindowInto):
                windowing = transform.get_windowing(None)
                if not isinstance(windowing.windowfn, beam_window.GlobalWindows) or \
                        not isinstance(windowing.triggerfn, beam_trigger.DefaultTrigger):
                    raise DaskUnsupportedError(
                        '%s: event-time windows and triggers are not executed by the DaskRunner '
                        '(it evaluates in the global window); run on %s'
                        % (node.full_label, STREAMING_RUNNERS))

    pipeline.visit(_Checker())


@contextlib.contextmanager
def quiet_shutdown() -> Iterator[None]:
    """Keeps distributed's normal-shutdown chatter (closed comms, nanny notices) out of the output.

    Errors raised by the pipeline itself are unaffected: they reach the caller as exceptions.
    """
    loggers = [logging.getLogger(name) for name in _SHUTDOWN_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _quiet_cluster_logs() -> Iterator[None]:
    """Keeps a private cluster's scheduler (it runs in this process) to warnings and errors."""
    logger = logging.getLogger('distributed')
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def local_dask_cluster(n_workers: int = 2) -> Iterator[str]:
    """A private dask.distributed cluster on this machine, for one run.

    The scheduler and its dashboard listen on 127.0.0.1 only (the dashboard on a free port), and
    workers are separate processes with one thread each (so DoFns never share an interpreter
    lock). On exit the workers,
    their nannies and the scheduler are stopped, quietly.

    Args:
        n_workers: worker processes.

    Yields:
        The scheduler's address, for `--dask_client_address`.
    """
    import distributed

    if n_workers < 1:
        raise ValueError('--dask_local_workers: expected at least 1 worker, got %d' % n_workers)
    with _quiet_cluster_logs():
        cluster = distributed.LocalCluster(
            n_workers=n_workers, processes=True, threads_per_worker=1, host='127.0.0.1',
            dashboard_address='127.0.0.1:0', silence_logs=logging.ERROR)
        try:
            yield cluster.scheduler_address
        finally:
            with quiet_shutdown():
                cluster.close()


def _close_client(client: Any) -> None:
    """Closes a distributed client without its shutdown chatter."""
    with quiet_shutdown():
        client.close()


class HeadstreamDaskResult(DaskRunnerResult):
    """Beam's Dask result that releases the client (and a private cluster) once the run is over.

    `wait_until_finish` and `cancel` close the client and, when the runner started one, the local
    cluster, whatever the outcome; a result whose run failed re-raises the workers' error.
    """

    def __init__(self, client: Any, futures: Sequence[Any],
                 resources: contextlib.ExitStack) -> None:
        super().__init__(client, futures)
        self._resources = resources

    def wait_until_finish(self, duration: int | None = None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            if self._state in (PipelineState.DONE, PipelineState.FAILED):
                self._release()

    def cancel(self) -> str:
        try:
            return super().cancel()
        finally:
            self._release()

    def _release(self) -> None:
        self._resources.close()


# --- translation -----------------------------------------------------------------------------


def _drain(partition: Iterator[Any]) -> list[Any]:
    """Consumes a leaf partition; its elements are never needed on the client."""
    for _ in partition:
        pass
    return []


def _select_tag(partition: Iterator[Any], tag: str | None) -> list[Any]:
    """The elements of one output tag of a multi-output ParDo's partition, as plain values."""
    out = []
    for item in partition:
        if isinstance(item, pvalue.TaggedOutput):
            if item.tag == tag:
                value = item.value
                out.append(value.value if hasattr(value, 'windows') else value)
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
    """Runs a DoFn over one Dask partition as one bundle, `finish_bundle` outputs included.

    Main outputs are returned as plain values, outputs to other tags as
    `TaggedOutput(tag, WindowedValue)`, as Beam's Dask translation represents them.
    """
    from apache_beam.runners.common import (DoFnContext, DoFnInvoker, DoFnSignature,
                                            _OutputHandler)

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
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return [v if isinstance(v, pvalue.TaggedOutput) else v.value for v in receivers.values]


class _DaskTranslator(PipelineVisitor):
    """Translates a Beam graph (after Beam's Dask overrides) into Dask bags, one per transform."""

    def __init__(self, bag_kwargs: Mapping[str, Any]) -> None:
        self.bag_kwargs = dict(bag_kwargs)
        self.bags: dict[AppliedPTransform, Any] = {}
        self.order: list[AppliedPTransform] = []
        self.consumed: set[int] = set()

    # Inputs ----------------------------------------------------------------------------------

    def _bag_of(self, pcoll: pvalue.PValue) -> Any:
        """The bag holding one PCollection: its producer's bag, narrowed to the PCollection's tag
        when the producer has several outputs."""
        if isinstance(pcoll, pvalue.PBegin):
            return None
        producer = pcoll.producer
        bag = self.bags.get(producer)
        if bag is None:
            return None
        tag = next((t for t, out in producer.outputs.items() if out is pcoll), None)
        if len(producer.outputs) > 1:
            bag = bag.map_partitions(_select_tag, tag, token='select-tag-%s' % (tag,))
        return bag

    # Operations ------------------------------------------------------------------------------

    def _create(self, node: AppliedPTransform) -> Any:
        import dask.bag as db

        items = list(node.transform.values)
        npartitions = self.bag_kwargs.get('npartitions')
        partition_size = self.bag_kwargs.get('partition_size')
        if not npartitions and not partition_size:
            npartitions = max(1, min(len(items), MAX_CREATE_PARTITIONS))
        if partition_size:
            return db.from_sequence(items, partition_size=partition_size)
        # from_sequence rounds its partition size up; spread evenly instead.
        size = max(1, math.ceil(len(items) / npartitions))
        return db.from_sequence(items, partition_size=size)

    def _pardo(self, node: AppliedPTransform, input_bag: Any) -> Any:
        import dask.bag as db

        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(node.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, 'windowing') else None
        specs, side_items = [], []
        for side in node.side_inputs:
            side_bag = self._bag_of(side.pvalue)
            if side_bag is None:
                side_bag = db.from_sequence([], npartitions=1)
            specs.append(_SideInput(side))
            side_items.append(side_bag.reduction(list, _concat_partitions,
                                                 split_every=False))
        return input_bag.map_partitions(
            _run_bundle, node.full_label, transform.fn, window_fn, args, kwargs, specs,
            *side_items, token='pardo-' + node.full_label.replace('/', '-'))

    # Visitor ---------------------------------------------------------------------------------

    def visit_transform(self, node: AppliedPTransform) -> None:
        for value in list(node.inputs) + [s.pvalue for s in node.side_inputs]:
            self.consumed.add(id(value))
        transform = node.transform
        main_inputs = [i for i in node.inputs]
        if isinstance(transform, _Create):
            bag = self._create(node)
        elif isinstance(transform, _Flatten):
            bags = [b for b in (self._bag_of(i) for i in main_inputs) if b is not None]
            bag = dask_ops.Flatten(node, bag_kwargs=self.bag_kwargs).apply(bags)
        else:
            input_bag = self._bag_of(main_inputs[0]) if main_inputs else None
            if isinstance(transform, beam.ParDo) and input_bag is not None and \
                    not isinstance(transform, (beam.WindowInto, _GroupAlsoByWindow)):
                bag = self._pardo(node, input_bag)
            elif isinstance(transform, _GroupByKeyOnly) and input_bag is not None:
                bag = dask_ops.GroupByKey(node, bag_kwargs=self.bag_kwargs).apply(input_bag)
            else:
                # Impulse, Beam's Reshuffle/Read stand-ins, global-window bookkeeping: identity
                # (the graph check has refused event-time windowing already).
                bag = input_bag
        self.bags[node] = bag
        self.order.append(node)

    def leaves(self) -> list[Any]:
        """Bags of the transforms nobody consumes: what must be computed for every sink to run."""
        out = []
        for node in self.order:
            bag = self.bags[node]
            if bag is None:
                continue
            if not any(id(o) in self.consumed for o in node.outputs.values()):
                out.append(bag)
        return out


class HeadstreamDaskRunner(DaskRunner):
    """Beam's DaskRunner with every sink computed and a private cluster when none is given.

    See the module docstring for how it differs from `apache_beam.runners.dask.dask_runner`.
    """

    def run_pipeline(self, pipeline: Pipeline, options: PipelineOptions) -> HeadstreamDaskResult:
        import dask
        import dask.bag as db
        import distributed

        check_dask_supported(streaming=options.view_as(StandardOptions).streaming)
        _check_graph(pipeline)

        dask_options = options.view_as(DaskOptions).get_all_options(
            drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        if bag_kwargs.get('npartitions') and bag_kwargs.get('partition_size'):
            raise DaskUnsupportedError(
                'give either --dask_npartitions or --dask_partition_size, not both')
        n_workers = options.view_as(HeadstreamDaskOptions).dask_local_workers

        resources = contextlib.ExitStack()
        try:
            if not dask_options.get('address') and not dask_options.get('scheduler_file'):
                dask_options['address'] = resources.enter_context(local_dask_cluster(n_workers))
            client = distributed.Client(**dask_options)
            resources.callback(_close_client, client)

            pipeline.replace_all(dask_overrides())
            translator = _DaskTranslator(bag_kwargs)
            pipeline.visit(translator)
            leaves = [leaf.map_partitions(_drain, token='drain') for leaf in translator.leaves()]
            if not leaves:
                futures = []
            else:
                (graph,) = dask.optimize(db.concat(leaves))
                futures = [client.compute(graph)]
        except BaseException:
            resources.close()
            raise
        return HeadstreamDaskResult(client, futures, resources)
