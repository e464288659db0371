-- headstream: DuckDB queries over a run's Parquet outputs (schemas in docs/tables.md).
--
-- From the repository root after `make demo` (its outputs are in demo_out/example):
--     duckdb < examples/duckdb_queries.sql
-- Any other run (a local directory, or gs://... with DuckDB's httpfs extension and a GCS secret):
--     duckdb -cmd "SET VARIABLE output = 'out/run1'" < examples/duckdb_queries.sql
-- From Python: duckdb.connect().execute("SET VARIABLE output = 'out/run1'"), then these statements.
--
-- Each query below starts with a `-- name:` line; tests/test_duckdb_example.py runs every one of
-- them on hand-made tables and checks the rows. Queries marked (windowed) need a run with
-- `window:` in its config (they read the window_start column).

SET VARIABLE output = COALESCE(getvariable('output'), 'demo_out/example');

-- Every file under metrics/ and plots/; union_by_name joins runs with and without window or
-- step columns. `metrics` holds the candidate model's rows (a run with a baseline also has
-- `baseline` and `diff` rows: the view `comparison` below).
CREATE OR REPLACE VIEW all_metrics AS
  SELECT * FROM read_parquet(getvariable('output') || '/metrics/*.parquet', union_by_name = true);
CREATE OR REPLACE VIEW metrics AS
  SELECT * FROM all_metrics WHERE model = 'candidate';
CREATE OR REPLACE VIEW plots AS
  SELECT * FROM read_parquet(getvariable('output') || '/plots/*.parquet', union_by_name = true);

-- name: overall
-- The headline: every head's metrics over the whole dataset.
SELECT head, metric, value, lower_bound, upper_bound, example_count
FROM metrics
WHERE slice = 'Overall'
ORDER BY head, metric;

-- name: worst_slices_by_auc
-- The 10 slices with the lowest auc per head, with their size and their gap to Overall.
-- (A batch run; for a windowed run add `AND s.window_start = o.window_start` to the join.)
SELECT s.head, s.slice, s.value AS auc, s.example_count, s.value - o.value AS vs_overall
FROM metrics AS s
JOIN metrics AS o ON o.head = s.head AND o.metric = s.metric AND o.slice = 'Overall'
WHERE s.metric = 'auc' AND s.slice <> 'Overall'
  AND s.weighted_example_count > 0   -- not a slice of weight 0 (its metrics are 0/0)
QUALIFY row_number() OVER (PARTITION BY s.head ORDER BY s.value ASC NULLS LAST, s.slice) <= 10
ORDER BY s.head, s.value ASC NULLS LAST, s.slice;

-- name: slice_size_filter
-- The same ranking restricted to slices big enough to trust: at least 1000 examples.
SELECT head, slice, value AS auc, example_count
FROM metrics
WHERE metric = 'auc' AND slice <> 'Overall' AND example_count >= 1000
  AND weighted_example_count > 0
ORDER BY head, value ASC NULLS LAST, slice;

-- name: auc_over_windows
-- (windowed) auc per window and slice, and its change since the slice's previous window.
SELECT head, slice, window_start, value AS auc, example_count,
       value - lag(value) OVER (PARTITION BY head, slice ORDER BY window_start) AS change
FROM metrics
WHERE metric = 'auc'
ORDER BY head, slice, window_start;

-- name: worst_slices_latest_window
-- (windowed) The slices with the lowest auc in the latest window.
SELECT head, slice, window_start, value AS auc, example_count
FROM metrics
WHERE metric = 'auc' AND slice <> 'Overall' AND weighted_example_count > 0
  AND window_start = (SELECT max(window_start) FROM metrics)
ORDER BY head, value ASC NULLS LAST, slice;

-- name: roc_curve
-- The points of a head's ROC and PR curves over the whole dataset, by threshold.
SELECT head, threshold, false_positive_rate, recall, precision, tp, fp, tn, fn
FROM plots
WHERE curve = 'confusion' AND slice = 'Overall' AND sub_key = ''
ORDER BY head, threshold;

-- name: calibration
-- Mean prediction against mean label per calibration bucket (empty buckets left out).
SELECT head, slice, bucket_lower, bucket_upper, weighted_examples,
       weighted_predictions / weighted_examples AS mean_prediction,
       weighted_labels / weighted_examples AS mean_label
FROM plots
WHERE curve = 'calibration' AND weighted_examples > 0
ORDER BY head, slice, bucket_lower;

-- name: comparison
-- Candidate vs baseline per slice (runs with `baseline_logits`), with the paired interval of the
-- difference (with `confidence:`).
SELECT c.head, c.slice, c.metric, c.value AS candidate, b.value AS baseline, d.value AS diff,
       d.ci_lower, d.ci_upper
FROM all_metrics AS c
JOIN all_metrics AS b ON b.model = 'baseline' AND b.head = c.head AND b.slice = c.slice
  AND b.metric = c.metric
JOIN all_metrics AS d ON d.model = 'diff' AND d.head = c.head AND d.slice = c.slice
  AND d.metric = c.metric
WHERE c.model = 'candidate'
ORDER BY c.head, c.slice, c.metric;
