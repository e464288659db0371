"""The output tables' schemas: the contract between the pipeline, its writers, the report and users.

Every table is long and flat (one row per value), carries its own columns in every file (no
directory partitioning), and is read by DuckDB, pandas, BigQuery and `headstream report` alike.

metrics/*.parquet — one row per (slice, head, metric[, window_start][, step]):
  run_id, evaluated_at      which run wrote the row, and when (UTC)
  slice                     "Overall", "country:US", "country_X_device:US_X_mobile" (TFMA's spelling)
  slice_columns, slice_values  the same split for filtering: "" / "" for Overall,
                            "country_X_device" / "US_X_mobile" for a cross; each column and
                            value escaped (`escape_slice_part`: `%`→%25, `_X`→_%58, in columns
                            `:`→%3A), `split_slice_parts` gives them back
  head                      the head's name (a MultiHead's merged `loss` under the MultiHead's name)
  model                     "candidate" (the head's `logits`; also without a baseline),
                            "baseline" (its `baseline_logits`, same rows) or "diff"
                            (candidate − baseline, for every metric both have)
  metric                    tf.estimator's key without the "/head" suffix ("auc",
                            "accuracy/positive_threshold_0.5", "auc/class2", "loss")
  value                     float64
  lower_bound, upper_bound  for `auc` rows: an interval that provably contains the exact
                            (unbucketed, ties = 1/2) weighted ROC AUC; null elsewhere, and where
                            that AUC is undefined (weighted_example_count 0, or one class only)
  ci_lower, ci_upper        (runs with `confidence:`) the metric's confidence interval at the
                            configured level (DeLong for AUC, Wilson for rates, delta method for
                            means: docs/intervals.md); null for metrics without one (loss,
                            auc_precision_recall, ...), where the slice's data leave it undefined
                            (no weight, one row, one class for AUC), and in every row of a run
                            without `confidence:`. On `diff` rows the paired interval of the
                            difference (docs/validation.md)
  standard_error            the standard error the interval was built from (null alike)
  example_count             rows of the slice the head evaluated
  weighted_example_count    Σ weights of those rows
  window_start, window_end  (windowed runs only) timestamp[us, tz=UTC]
  step                      (runs with `tensorboard.step`) int64

plots/*.parquet — curves per (slice, head, sub_key): confusion matrices at thresholds and a
calibration histogram, one row per threshold / bucket:
  run_id, evaluated_at, slice, slice_columns, slice_values, head, [window_start, window_end], [step]
  sub_key                   "" for the head's pooled curve, or a class tag ("class2", a vocabulary name)
  curve                     "confusion" | "calibration"
  threshold, tp, fp, tn, fn, precision, recall, false_positive_rate     (confusion rows)
  bucket_lower, bucket_upper, weighted_examples, weighted_labels,
  weighted_predictions                                                  (calibration rows)

errors/*.parquet — one row per rejected input row (--bad_records=dead_letter):
  run_id, file, row (0-based within the file), column, reason, values (the row as JSON)
"""
from __future__ import annotations

import re
import urllib.parse
from typing import Sequence

import pyarrow as pa

TIMESTAMP = pa.timestamp('us', tz='UTC')

_ID_FIELDS = [
    pa.field('run_id', pa.string(), nullable=False),
    pa.field('evaluated_at', TIMESTAMP, nullable=False),
    pa.field('slice', pa.string(), nullable=False),
    pa.field('slice_columns', pa.string(), nullable=False),
    pa.field('slice_values', pa.string(), nullable=False),
    pa.field('head', pa.string(), nullable=False),
]
WINDOW_FIELDS = [pa.field('window_start', TIMESTAMP), pa.field('window_end', TIMESTAMP)]
STEP_FIELDS = [pa.field('step', pa.int64())]

MODELS = ('candidate', 'baseline', 'diff')

METRICS = pa.schema(_ID_FIELDS + [
    # Nullable: rows of tables written before the column existed (a BigQuery table appended to
    # across versions) read as the candidate's.
    pa.field('model', pa.string()),
    pa.field('metric', pa.string(), nullable=False),
    pa.field('value', pa.float64()),
    pa.field('lower_bound', pa.float64()),
    pa.field('upper_bound', pa.float64()),
    pa.field('ci_lower', pa.float64()),
    pa.field('ci_upper', pa.float64()),
    pa.field('standard_error', pa.float64()),
    pa.field('example_count', pa.int64()),
    pa.field('weighted_example_count', pa.float64()),
])

PLOTS = pa.schema(_ID_FIELDS + [
    pa.field('sub_key', pa.string(), nullable=False),
    pa.field('curve', pa.string(), nullable=False),
    pa.field('threshold', pa.float64()),
    pa.field('tp', pa.float64()),
    pa.field('fp', pa.float64()),
    pa.field('tn', pa.float64()),
    pa.field('fn', pa.float64()),
    pa.field('precision', pa.float64()),
    pa.field('recall', pa.float64()),
    pa.field('false_positive_rate', pa.float64()),
    pa.field('bucket_lower', pa.float64()),
    pa.field('bucket_upper', pa.float64()),
    pa.field('weighted_examples', pa.float64()),
    pa.field('weighted_labels', pa.float64()),
    pa.field('weighted_predictions', pa.float64()),
])

ERRORS = pa.schema([
    pa.field('run_id', pa.string(), nullable=False),
    pa.field('file', pa.string(), nullable=False),
    pa.field('row', pa.int64(), nullable=False),
    pa.field('column', pa.string(), nullable=False),
    pa.field('reason', pa.string(), nullable=False),
    pa.field('values', pa.string()),
])

OVERALL = 'Overall'


def candidate_rows(metrics: pa.Table) -> pa.Table:
    """The metrics rows of the candidate model only (what the TFMA, TensorBoard and report
    writers show as the run's metrics): `model` 'candidate' or null; a table without a `model`
    column as it is."""
    if 'model' not in metrics.column_names:
        return metrics
    import pyarrow.compute as pc
    model = metrics.column('model')
    return metrics.filter(pc.or_kleene(pc.is_null(model), pc.equal(model, 'candidate')))


def with_extras(schema: pa.Schema, windowed: bool = False, stepped: bool = False) -> pa.Schema:
    """The schema plus the window and step columns a run carries."""
    fields = list(schema)
    if windowed:
        fields += WINDOW_FIELDS
    if stepped:
        fields += STEP_FIELDS
    return pa.schema(fields)


SLICE_SEP = '_X_'
_ESCAPED = re.compile(r'%|(?<=_)X')
_ESCAPED_COLUMN = re.compile(r'%|(?<=_)X|:')


def _escape_char(m: re.Match) -> str:
    return '%%%02X' % ord(m.group(0))


def slice_text(value: object) -> str:
    """A slice value as text: str(value) for text, integers and floats (the pipeline gives an
    integral number as an int, so int64 0 and float64 0.0 both read `0`)."""
    return value if isinstance(value, str) else str(value)


def escape_slice_part(text: str, column: bool = False) -> str:
    """One column or value as it appears in `slice`, `slice_columns` and `slice_values`: `%` and
    an `X` right after `_` are percent-encoded (`%25`, `%58`), and in a column also `:` (`%3A`),
    so no part contains the separator `_X_` and the first `:` of `slice` ends its columns.
    Ordinary values are unchanged (`US`, `mobile`, `30`, `12:30`)."""
    return (_ESCAPED_COLUMN if column else _ESCAPED).sub(_escape_char, text)


def join_slice_parts(parts: Sequence[object], columns: bool = False) -> str:
    """`slice_columns` (columns=True) / `slice_values` of a slice: its escaped parts joined by
    `_X_`."""
    return SLICE_SEP.join(escape_slice_part(slice_text(p), columns) for p in parts)


def split_slice_parts(joined: str) -> list[str]:
    """The exact inverse of `join_slice_parts` (for text parts): the columns or values of a
    `slice_columns` / `slice_values` cell; `[]` for Overall's ``."""
    if not joined:
        return []
    return [urllib.parse.unquote(p) for p in joined.split(SLICE_SEP)]


def slice_name(columns: Sequence[str], values: Sequence[object]) -> str:
    """TFMA's slice spelling: Overall, `country:US`, `country_X_device:US_X_mobile` (columns and
    values escaped by `escape_slice_part`)."""
    if not columns:
        return OVERALL
    return '%s:%s' % (join_slice_parts(columns, True), join_slice_parts(values))
