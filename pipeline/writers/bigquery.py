"""The optional BigQuery sink of the metrics table (`headstream evaluate --bigquery_table ...`).

Every run appends its metrics rows to one BigQuery table, created on first use:

    headstream evaluate --config eval.yaml --bigquery_table my-project:evals.metrics \\
        --runner DataflowRunner --temp_location gs://bucket/tmp ...

- Schema: `pipeline.schema.METRICS` plus the window and step columns, always (NULLABLE), so runs
  with and without windows or steps append to the same table; the load jobs allow field
  addition, so a table created by an earlier version gains newer nullable columns (`model`,
  `ci_lower`, `ci_upper`, `standard_error`; its older rows read null there: the candidate's). Arrow types map to BigQuery's:
  string → STRING, timestamp[us, UTC] → TIMESTAMP, float64 → FLOAT64, int64 → INT64; a
  non-nullable Arrow field is REQUIRED.
- Rows: the metrics table's rows as they are written to metrics/ (timestamps as UTC datetimes,
  NaN and ±infinity kept).
- Writing: Beam's `WriteToBigQuery`, create-if-needed and append, through load jobs whose files
  Beam stages as Avro under the pipeline's gs:// temp_location. Avro rather than Beam's default
  JSON: JSON has no NaN or infinity (Beam refuses to encode them), while a slice's metric may be
  NaN. The run's Parquet outputs do not depend on the sink: metrics/ is written before the rows
  are handed to it.

Beam's BigQuery modules (seconds to import) are imported only when a table is given.
"""
from __future__ import annotations

import datetime
import re
from typing import Any

import apache_beam as beam
import pyarrow as pa

from pipeline import schema

# Beam's table reference pattern (bigquery_tools.parse_table_reference), table names restricted to
# ASCII letters, digits and `_-$`: [PROJECT(: or .)]DATASET.TABLE, the project optionally with a
# domain (`example.com:my-project`).
TABLE_SPEC = re.compile(r'^(?:(?P<project>(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]*[a-z0-9])[:.])?'
                        r'(?P<dataset>[A-Za-z0-9_]{1,1024})\.(?P<table>[A-Za-z0-9_$-]{1,1024})$')

_TYPES = (
    (pa.types.is_string, 'STRING'),
    (pa.types.is_timestamp, 'TIMESTAMP'),
    (pa.types.is_floating, 'FLOAT64'),
    (pa.types.is_integer, 'INT64'),
)


def check_table_spec(spec: str) -> str:
    """Returns `spec` if it names a table as `[PROJECT:]DATASET.TABLE`.

    Raises:
      ValueError: naming the spec and the expected form.
    """
    if not isinstance(spec, str) or not TABLE_SPEC.fullmatch(spec):
        raise ValueError('--bigquery_table: %r is not PROJECT:DATASET.TABLE (or DATASET.TABLE, '
                         'the project then from --project)' % (spec,))
    return spec


def table_fields() -> pa.Schema:
    """The Arrow schema of the BigQuery table: METRICS plus window and step columns."""
    return schema.with_extras(schema.METRICS, windowed=True, stepped=True)


def bigquery_schema() -> dict[str, list[dict[str, str]]]:
    """The table's BigQuery schema, as `WriteToBigQuery` takes it ({'fields': [...]})."""
    fields = []
    for field in table_fields():
        kind = next((name for test, name in _TYPES if test(field.type)), None)
        if kind is None:  # a new METRICS column needs a mapping here
            raise TypeError('bigquery: column %r has type %s, which has no BigQuery mapping'
                            % (field.name, field.type))
        fields.append({'name': field.name, 'type': kind,
                       'mode': 'NULLABLE' if field.nullable else 'REQUIRED'})
    return {'fields': fields}


def _timestamp(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # the tables' timestamps are UTC
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc)


def metric_rows(metrics: pa.Table) -> list[dict[str, Any]]:
    """The metrics table's rows as dicts with every column of `table_fields()`, in its order.

    Absent window and step columns are None; timestamps are UTC-aware datetimes; floats are as
    in the table (NaN included).

    Raises:
      ValueError: a required column is missing from the table.
    """
    fields = table_fields()
    n = metrics.num_rows
    columns: dict[str, list] = {}
    for field in fields:
        if field.name in metrics.column_names:
            values = metrics.column(field.name).to_pylist()
        elif field.nullable:
            values = [None] * n  # a run without windows or steps
        else:
            raise ValueError('bigquery: the metrics table has no %r column' % field.name)
        if pa.types.is_timestamp(field.type):
            values = [_timestamp(v) for v in values]
        columns[field.name] = values
    names = fields.names
    return [{name: columns[name][i] for name in names} for i in range(n)]


class WriteMetrics(beam.PTransform):
    """Appends metrics rows (`metric_rows`' dicts) to a BigQuery table, created if needed."""

    def __init__(self, table_spec: str) -> None:
        super().__init__()
        self._table = check_table_spec(table_spec)

    def expand(self, rows: beam.PCollection) -> Any:
        from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
        from apache_beam.io.gcp.bigquery_tools import FileFormat
        return rows | 'WriteToBigQuery' >> WriteToBigQuery(
            table=self._table, schema=bigquery_schema(),
            create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=BigQueryDisposition.WRITE_APPEND,
            method=WriteToBigQuery.Method.FILE_LOADS, temp_file_format=FileFormat.AVRO,
            # A table created by an earlier version gains the newer nullable columns (`model`,
            # `ci_lower`, ...) instead of refusing the rows.
            additional_bq_parameters={'schemaUpdateOptions': ['ALLOW_FIELD_ADDITION']})
