"""Output writers. Each takes pyarrow Tables in `pipeline.schema` layout, never head states, so any
of them can be re-run from the Parquet tables alone. Files go through `pipeline.fileio`.

- `parquet`: metrics/, plots/, errors/ tables, summary.json and the run's staging directory.
- `publish`: the output lock and the all-at-once switch of a run's files (ownership, recovery).
- `tfma` (files) with `tfma_protos` (rows to TFMA's protos), `tensorboard`, `bigquery`: optional
  writers, imported only when a run uses them.
"""
