"""ApplyHeads: the Beam DoFn over `pipeline.evaluate.BatchEvaluator`.

Owns only the mapping of the evaluator's plain results onto Beam: per `SourceBatch`, rejected rows
on the `errors` output (and the `headstream/bad_rows` counter), predictions written as Parquet
under `predictions_dir`, and (key, SubBatch) pairs or early-flushed (key, state) pairs on the main
output; per bundle, every key's state on the main output and the `BundleStats` on the `stats`
output, in the global window (`finish_bundle` outputs must be windowed values). Keys are emitted
as plain tuples, which Beam's deterministic key coder encodes without a fallback.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import apache_beam as beam

from pipeline.config import EvalConfig
from pipeline.block_results import key_counts
from pipeline.elements import ERRORS_TAG, PLOT_COUNTS_TAG, STATS_TAG, SourceBatch
from pipeline.key_blocks import is_block_key
from pipeline.evaluate import BatchEvaluator, check_bad_records
from pipeline.predictions import predictions_path


class ApplyHeads(beam.DoFn):
    """SourceBatch → ((Key), state) partial states per bundle, plus `errors` and `stats` outputs.

    Args:
      config: the validated config.
      run_id: stamped on error rows.
      bad_records: 'fail' or 'dead_letter'.
      precombine: True (default) keeps one state per key for the bundle and emits it in
        finish_bundle; False emits a `SubBatch` per key and batch (the CombineFn updates).
      predictions_dir: when set, each batch's predictions are written there as Parquet.
      derive_overall: with the pre-combine, build the Overall slice's states by merging another
        spec's (`pipeline.evaluate`); False updates them with every row.
      slice_kinds: (reference file, its slice columns' `config.slice_kind`s): every batch's slice
        columns must hold the same kinds (formats without a footer to check beforehand); a batch
        that does not raises `ConfigError` naming its file and the column.
      blocks: many keys of a spec as one columnar block per (spec, head) (`BatchEvaluator`).
      plot_counts: also emit, on the `PLOT_COUNTS_TAG` output, the key counts of each block part
        handed on (`block_results.key_counts`, (0, counts)), made before the part is emitted.
    """

    def __init__(self, config: EvalConfig, run_id: str, bad_records: str = 'fail',
                 precombine: bool = True, predictions_dir: str | None = None,
                 derive_overall: bool = True,
                 slice_kinds: tuple[str, Mapping[str, str]] | None = None,
                 blocks: bool = False, plot_counts: bool = False):
        check_bad_records(bad_records)
        self._config = config
        self._run_id = run_id
        self._bad_records = bad_records
        self._precombine = precombine
        self._predictions_dir = predictions_dir
        self._derive_overall = derive_overall
        self._slice_kinds = slice_kinds
        self._blocks = blocks
        self._plot_counts = plot_counts
        self._bad_counter = beam.metrics.Metrics.counter('headstream', 'bad_rows')
        self._evaluator: BatchEvaluator | None = None

    def setup(self) -> None:
        self._evaluator = BatchEvaluator(
            self._config, self._run_id, self._bad_records, precombine=self._precombine,
            predictions=self._predictions_dir is not None, derive_overall=self._derive_overall,
            slice_kinds=self._slice_kinds, blocks=self._blocks)

    def start_bundle(self) -> None:
        self._evaluator.start()

    def process(self, sb: SourceBatch) -> Iterator[Any]:
        out = self._evaluator.add(sb)
        if out.errors is not None:
            self._bad_counter.inc(out.errors.num_rows)
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, out.errors)
        if out.predictions is not None:
            from pipeline.writers.parquet import write_table
            write_table(out.predictions, predictions_path(self._predictions_dir, sb))
        for key, value in out.keyed:  # (states and block parts handed on early)
            yield from self._counts(key, value)
            yield tuple(key), value

    def _counts(self, key: Any, state: Any) -> Iterator[beam.pvalue.TaggedOutput]:
        """The key counts of a block part about to be handed on, when asked for: counted before
        it goes on, as a consumer may merge into it (its first deep copy is the part itself,
        `KeyBlock.__deepcopy__`)."""
        if self._plot_counts and is_block_key(key):
            yield beam.pvalue.TaggedOutput(PLOT_COUNTS_TAG, (0, key_counts(state)))

    def finish_bundle(self) -> Iterator[Any]:
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue
        window = GlobalWindow()
        ts = window.max_timestamp()
        out = self._evaluator.finish()
        for key, state in out.states.items():
            for counts in self._counts(key, state):
                yield beam.pvalue.TaggedOutput(PLOT_COUNTS_TAG, WindowedValue(
                    counts.value, ts, [window]))
            yield WindowedValue((tuple(key), state), ts, [window])
        if out.stats is not None:
            yield beam.pvalue.TaggedOutput(STATS_TAG, WindowedValue(out.stats, ts, [window]))
