"""Translating a Beam graph into Dask bags, for `pipeline.dask_runner.HeadstreamDaskRunner`.

    leaves = translate(pipeline, bag_kwargs)   # one drained bag per leaf of the graph

Beam's own Dask translation (`apache_beam.runners.dask.transform_evaluator`) is reused for
Create, GroupByKey and Flatten, with these changes for a multi-output, multi-sink batch pipeline
on Beam 2.77:

* every leaf of the graph is computed (Beam's runner computes only the last transform it
  translates, so a sink elsewhere silently never runs);
* each bundle of a ParDo is run here (`_run_bundle`), `finish_bundle`'s outputs included, and
  each consumer of a multi-output ParDo gets only its own tag's elements;
* a side input is materialized once by the scheduler and handed to the tasks that read it;
* `Create` puts one element per Dask partition (up to `MAX_CREATE_PARTITIONS`) unless
  `--dask_npartitions` / `--dask_partition_size` say otherwise, so a file list fans out over the
  workers.

Anything else (Impulse, Beam's Reshuffle and Read stand-ins, WindowInto the global window) is an
identity, as in Beam's translation; the runner refuses event-time windowing before this runs.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import dask
import dask.bag as db
from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform, Pipeline, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import transform_evaluator as dask_ops
from apache_beam.runners.dask.overrides import (_Create, _Flatten, _GroupAlsoByWindow,
                                                _GroupByKeyOnly, dask_overrides)
from apache_beam.transforms.sideinputs import SideInputMap

#: `Create` spreads its elements over at most this many Dask partitions by default.
MAX_CREATE_PARTITIONS = 1024


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


def translate(pipeline: Pipeline, bag_kwargs: Mapping[str, Any]) -> list[Any]:
    """The pipeline as Dask bags, one per leaf, each drained (computing them runs every sink)."""
    pipeline.replace_all(dask_overrides())
    translator = _DaskTranslator(bag_kwargs)
    # Group by key with the task-based shuffle, whatever the local config or client says: the
    # 'disk' shuffle only works when every worker shares this machine's disk.
    with dask.config.set({'dataframe.shuffle.method': 'tasks'}):
        pipeline.visit(translator)
    return [leaf.map_partitions(_drain, token='drain') for leaf in translator.leaves()]
