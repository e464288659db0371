"""The batch evaluation's Beam graph: `build_pipeline(p, config, files, options)`.

    Read (Create files → plan → Reshuffle → read) → Progress (counts rows)
      → ApplyHeads (partial states per bundle)
      ├─ states → CombinePerKey(HeadStateCombineFn) → ExtractResults ┐
      ├─ errors (dead_letter rows) ──────────────────────────────────┤→ Flatten → one group → WriteRun
      ├─ stats (rows read / rejected per bundle) ────────────────────┤   (GroupByKey on key 0)
      └─ (a marker, so an empty input still writes empty tables) ────┘

Every transform is a Create, ParDo, GroupByKey or Flatten, so every runner, the DaskRunner
included, can translate it. The steps are `pipeline.sources.ReadBatches`,
`pipeline.progress.CountRows`, `pipeline.apply.ApplyHeads`, `pipeline.combine.CombineStates`,
`ExtractResults` (below) and `pipeline.run_outputs.WriteRun`. With `plots.max_slices`, ApplyHeads
also emits the key counts of the block parts it hands on (`PLOT_COUNTS_TAG`), gathered into the
side input of ExtractResults naming the slices that get plots. With `options.bigquery_table`,
WriteRun also emits the metrics rows, which `WriteToBigQuery` appends to that table
(pipeline/writers/bigquery.py). How the graph runs (runner, lock, progress, publishing) is
`pipeline/run.py`.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import apache_beam as beam

from pipeline import fileio
from pipeline import config as config_lib
from pipeline import sources
from pipeline.apply import ApplyHeads
from pipeline.block_results import results_pack, winners_of_counts
from pipeline.elements import ERRORS_TAG, PLOT_COUNTS_TAG, STATS_TAG
from pipeline.key_blocks import is_block_key
from pipeline.combine import CombineStates
from pipeline.progress import CountRows
from pipeline.results import state_results
from pipeline.run_options import RunOptions
from pipeline.run_outputs import BIGQUERY_TAG, WriteRun
from pipeline.writers import parquet as parquet_writer


def build_pipeline(p: beam.Pipeline, config: config_lib.EvalConfig, files: Sequence[str],
                   options: RunOptions) -> beam.PCollection:
    """Adds the evaluation of `files` to `p`; returns the PCollection of the run summary (one
    dict).

    Args:
      p: the pipeline to add the steps to.
      config: the validated config (`pipeline.run.prepare`), with its output directory.
      files: the matched input files.
      options: how the run runs (bad records, predictions, BigQuery table, ...).
    """
    columns = None if options.write_predictions else config.columns()
    batches = (p
               | 'Read' >> sources.ReadBatches(files, config.format, columns,
                                               dictionary_columns=options.dictionary_columns)
               | 'Progress' >> beam.ParDo(CountRows(options.run_id)))
    predictions_dir = (fileio.join(
        parquet_writer.staging_dir(config.output, options.run_id), 'predictions')
        if options.write_predictions else None)
    apply_heads = ApplyHeads(config, options.run_id, options.bad_records,
                             precombine=options.precombine, predictions_dir=predictions_dir,
                             slice_kinds=_batch_slice_kinds(config, files),
                             blocks=options.precombine,
                             plot_counts=config.plots.max_slices is not None)
    applied = batches | 'ApplyHeads' >> beam.ParDo(apply_heads).with_outputs(
        ERRORS_TAG, STATS_TAG, PLOT_COUNTS_TAG, main='states')
    head_names = list(config.head_names)
    level = config.confidence_level
    # Every piece of the results is tagged with its kind and keyed by the one key (0) of the group
    # that gathers them all, in the same step (each step costs the pipeline's construction and
    # each run a few milliseconds).
    combined = applied.states | 'Combine' >> CombineStates(config)
    results = combined | 'Results' >> beam.ParDo(ExtractResults(head_names, level),
                                                 _plot_winners(p, applied[PLOT_COUNTS_TAG],
                                                               config))
    errors = applied[ERRORS_TAG] | 'TagErrors' >> beam.Map(lambda t: (0, ('errors', t)))
    stats = applied[STATS_TAG] | 'TagStats' >> beam.Map(lambda s: (0, ('stats', tuple(s))))
    marker = p | 'Marker' >> beam.Create([(0, ('marker', None))])
    written = ((results, errors, stats, marker)
               | 'Pieces' >> beam.Flatten()
               | 'Gather' >> beam.GroupByKey()
               | 'Write' >> beam.ParDo(WriteRun(config, options, len(files))
                                       ).with_outputs(BIGQUERY_TAG, main='summary'))
    if options.bigquery_table:
        from pipeline.writers import bigquery
        _ = written[BIGQUERY_TAG] | 'BigQuery' >> bigquery.WriteMetrics(options.bigquery_table)
    return written.summary


def _plot_winners(p: beam.Pipeline, counts: beam.PCollection, config: config_lib.EvalConfig
                  ) -> Any:
    """The side input naming, per spec, the keys of shard blocks that get plots
    (`block_results.winners_of_counts` over the `key_counts` ApplyHeads emits for every block
    part it hands on, `PLOT_COUNTS_TAG`); None: every key (no `plots.max_slices`). Counted from
    the parts, not from the combined blocks, so the combined blocks have one consumer
    (`ExtractResults`, in the combine's stage) and are not written out for a second one; and
    on an output of their own, so the parts have one consumer too (the combine, which merges
    into them). A marker makes the group exist when no block is handed on."""
    limit = config.plots.max_slices
    if limit is None:
        return None

    def winners(kv: tuple) -> dict:
        return winners_of_counts((part for part in kv[1] if part is not None), limit)
    marker = p | 'PlotMarker' >> beam.Create([(0, None)])
    found = ((counts, marker)
             | 'PlotPieces' >> beam.Flatten()
             | 'PlotGather' >> beam.GroupByKey()
             | 'PlotWinners' >> beam.Map(winners))
    return beam.pvalue.AsSingleton(found)


class ExtractResults(beam.DoFn):
    """(key, state) → (0, ('result', KeyResult)), `BATCH` keys at a time (`state_results`: their
    small states made dense in one grouped update rather than one each); the last keys of a
    bundle at its end, in the global window (the batch graph's only window). A shard's block
    (`pipeline.key_blocks`) gives every key's result at once (`block_results`: plots only for
    the keys the side input `winners` names; None: every key)."""

    BATCH = 256

    def __init__(self, head_names: Sequence[str], level: float | None) -> None:
        self._head_names = list(head_names)
        self._level = level
        self._pending: list[tuple[tuple, Any]] = []

    def start_bundle(self) -> None:
        self._pending = []

    def process(self, kv: tuple[tuple, Any], winners: dict | None = None) -> Iterator[tuple]:
        if is_block_key(kv[0]):  # the shard's keys in columns (`ResultsPack`), one element
            yield 0, ('results', results_pack(kv[1], self._head_names, winners))
            return
        self._pending.append(kv)
        if len(self._pending) >= self.BATCH:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue
        window = GlobalWindow()
        ts = window.max_timestamp()
        for out in self._flush():
            yield WindowedValue(out, ts, [window])

    def _flush(self) -> Iterator[tuple]:
        pending, self._pending = self._pending, []
        for result in state_results(pending, self._head_names, self._level):
            yield 0, ('result', result)


def _batch_slice_kinds(config: config_lib.EvalConfig, files: Sequence[str]
                       ) -> tuple[str, dict[str, str]] | None:
    """(first file, its slice columns' kinds) for ApplyHeads to check every batch against, for
    formats without a footer (CSV, JSONL, TFRecord: a type is only known once rows are read);
    None for Parquet, whose footers `prepare` checked."""
    if config.format == 'parquet' or not files:
        return None
    kinds = config_lib.slice_kinds(config, sources.read_schema(files[0], config.format))
    return (files[0], kinds) if kinds else None
