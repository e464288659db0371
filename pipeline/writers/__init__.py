"""Output writers. Each takes pyarrow Tables in `pipeline.schema` layout, never head states, so any
of them can be re-run from the Parquet tables alone.

- `parquet`: metrics/, plots/, errors/ tables and summary.json, through Beam FileSystems.
- `tfma`, `tensorboard`: optional writers, imported only when a run uses them.
"""
