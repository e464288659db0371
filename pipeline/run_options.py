"""`RunOptions`: how one batch run runs, in one frozen object (what it evaluates is the config).

    options = RunOptions(run_id, started_at, bad_records='dead_letter', write_predictions=True)
    build_pipeline(p, config, files, options)            # pipeline/graph.py

`pipeline.run.evaluate` builds it from its keywords once the config is validated; the graph's
steps (`pipeline.graph.build_pipeline`, `pipeline.run_outputs.WriteRun`) read it, and it travels
pickled with them to the workers.
"""
from __future__ import annotations

import dataclasses
import datetime


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The options of one batch run.

    Attributes:
      run_id: stamped on every output row; names the run's staging directory and lock.
      started_at: the run's start (UTC), stamped as `evaluated_at` and in summary.json.
      bad_records: 'fail' (the first bad row stops the run) or 'dead_letter' (bad rows go to
        errors/ and the rest is evaluated).
      write_predictions: also write predictions/ (each head's predictions and per-example loss).
      bigquery_table: also append the metrics rows to this BigQuery table
        (`[PROJECT:]DATASET.TABLE`), or None.
      overwrite: publish into an output directory holding files no headstream run wrote.
      dictionary_columns: Parquet string columns read dictionary-encoded (`pipeline.run.prepare`
        finds them: slicing by a dictionary-encoded column is cheap).
      precombine: `ApplyHeads` keeps one partial state per key for each bundle (False: one per
        batch).
    """
    run_id: str
    started_at: datetime.datetime
    bad_records: str = 'fail'
    write_predictions: bool = False
    bigquery_table: str | None = None
    overwrite: bool = False
    dictionary_columns: tuple[str, ...] = ()
    precombine: bool = True

    def __post_init__(self) -> None:
        # Any sequence of names is taken; the stored tuple keeps the options hashable.
        object.__setattr__(self, 'dictionary_columns', tuple(self.dictionary_columns))
