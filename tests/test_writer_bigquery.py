"""The BigQuery sink of the metrics table, offline: schema, row conversion, table names, the
Dataflow graph with the sink (built, never submitted), and the rows a DirectRunner run hands to it.

Expected schemas and rows are written out by hand; table names are cross-checked with Beam's own
parser. Nothing here talks to Google Cloud.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import pickle

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import cli, schema
from pipeline.config import ConfigError
from pipeline.writers import bigquery

UTC = datetime.timezone.utc
AT = datetime.datetime(2026, 11, 23, 9, 0, 5, 250000, tzinfo=UTC)
# `--dry_run` keeps Beam's option validation off the network.
DATAFLOW_ARGS = ['--runner', 'DataflowRunner', '--project', 'headstream-test',
                 '--region', 'us-central1', '--temp_location', 'gs://headstream-test/tmp',
                 '--dry_run', 'True']


def test_schema_is_metrics_plus_window_and_step_columns():
    assert bigquery.bigquery_schema() == {'fields': [
        {'name': 'run_id', 'type': 'STRING', 'mode': 'REQUIRED'},
        {'name': 'evaluated_at', 'type': 'TIMESTAMP', 'mode': 'REQUIRED'},
        {'name': 'slice', 'type': 'STRING', 'mode': 'REQUIRED'},
        {'name': 'slice_columns', 'type': 'STRING', 'mode': 'REQUIRED'},
        {'name': 'slice_values', 'type': 'STRING', 'mode': 'REQUIRED'},
        {'name': 'head', 'type': 'STRING', 'mode': 'REQUIRED'},
        {'name': 'model', 'type': 'STRING', 'mode': 'NULLABLE'},
        {'name': 'metric', 'type': 'STRING', 'mode': 'REQUIRED'},
        {'name': 'value', 'type': 'FLOAT64', 'mode': 'NULLABLE'},
        {'name': 'lower_bound', 'type': 'FLOAT64', 'mode': 'NULLABLE'},
        {'name': 'upper_bound', 'type': 'FLOAT64', 'mode': 'NULLABLE'},
        {'name': 'ci_lower', 'type': 'FLOAT64', 'mode': 'NULLABLE'},
        {'name': 'ci_upper', 'type': 'FLOAT64', 'mode': 'NULLABLE'},
        {'name': 'standard_error', 'type': 'FLOAT64', 'mode': 'NULLABLE'},
        {'name': 'example_count', 'type': 'INT64', 'mode': 'NULLABLE'},
        {'name': 'weighted_example_count', 'type': 'FLOAT64', 'mode': 'NULLABLE'},
        {'name': 'window_start', 'type': 'TIMESTAMP', 'mode': 'NULLABLE'},
        {'name': 'window_end', 'type': 'TIMESTAMP', 'mode': 'NULLABLE'},
        {'name': 'step', 'type': 'INT64', 'mode': 'NULLABLE'},
    ]}


# The column the rows below leave out: they are the candidate's rows.
_DEFAULTS = {'model': 'candidate'}


def _metrics(rows, windowed=False, stepped=False):
    full = schema.with_extras(schema.METRICS, windowed, stepped)
    names = [n for n in full.names if n not in _DEFAULTS]
    cols = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    cols.update({n: [v] * len(rows) for n, v in _DEFAULTS.items()})
    return pa.table(cols, schema=full)


ROWS = [('r1', AT, 'Overall', '', '', 'click', 'auc', 0.75, 0.74, 0.76, 0.7, 0.8, 0.025, 10,
         12.5),
        ('r1', AT, 'country:US', 'country', 'US', 'click', 'loss', math.nan, None, None, None,
         None, None, 3, 3.0),
        ('r1', AT, 'Overall', '', '', 'click', 'x', math.inf, None, None, None, None, None, 0,
         -math.inf)]
W0 = datetime.datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
W1 = datetime.datetime(2026, 11, 23, 8, 1, tzinfo=UTC)


def _same(a, b):
    """Row equality with NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and math.isnan(a[k]) and isinstance(b[k], float)
         and math.isnan(b[k])) or a[k] == b[k] for k in a)


def test_rows_keep_every_column_in_schema_order():
    got = bigquery.metric_rows(_metrics(ROWS))
    common = {'run_id': 'r1', 'evaluated_at': AT, 'head': 'click',
              'window_start': None, 'window_end': None, 'step': None, **_DEFAULTS}
    want = [
        dict(common, slice='Overall', slice_columns='', slice_values='', metric='auc',
             value=0.75, lower_bound=0.74, upper_bound=0.76, ci_lower=0.7, ci_upper=0.8,
             standard_error=0.025, example_count=10,
             weighted_example_count=12.5),
        dict(common, slice='country:US', slice_columns='country', slice_values='US',
             metric='loss', value=math.nan, lower_bound=None, upper_bound=None, ci_lower=None,
             ci_upper=None, standard_error=None, example_count=3,
             weighted_example_count=3.0),
        dict(common, slice='Overall', slice_columns='', slice_values='', metric='x',
             value=math.inf, lower_bound=None, upper_bound=None, ci_lower=None, ci_upper=None,
             standard_error=None, example_count=0,
             weighted_example_count=-math.inf),
    ]
    assert len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want)), got
    assert list(got[0]) == [f['name'] for f in bigquery.bigquery_schema()['fields']]
    assert got[0]['evaluated_at'].utcoffset() == datetime.timedelta(0)

    both = _metrics([ROWS[0] + (W0, W1, 120000)], windowed=True, stepped=True)
    (row,) = bigquery.metric_rows(both)
    assert (row['window_start'], row['window_end'], row['step']) == (W0, W1, 120000)
    assert bigquery.metric_rows(_metrics([])) == []
    with pytest.raises(ValueError, match="no 'metric' column"):
        bigquery.metric_rows(_metrics(ROWS).drop(['metric']))


def test_rows_survive_the_avro_files_beam_stages_for_the_load_job(tmp_path):
    """Beam's own writer of the load job's Avro files, read back with fastavro."""
    import fastavro
    from apache_beam.io.gcp.bigquery_tools import AvroRowWriter

    rows = bigquery.metric_rows(_metrics(ROWS)) + bigquery.metric_rows(
        _metrics([ROWS[0] + (W0, W1, 120000)], windowed=True, stepped=True))
    path = str(tmp_path / 'rows.avro')
    with open(path, 'wb') as f:
        writer = AvroRowWriter(f, bigquery.bigquery_schema())
        for row in rows:
            writer.write(row)
        writer.close()
    with open(path, 'rb') as f:
        back = list(fastavro.reader(f))
    assert len(back) == len(rows)
    for got, want in zip(back, rows):
        assert _same(got, want), (got, want)  # NaN, infinities, timestamps and nulls intact
    assert back[1]['value'] != back[1]['value'] and back[2]['value'] == math.inf
    assert back[3]['window_start'] == W0 and back[3]['step'] == 120000


@pytest.mark.parametrize('spec, parts', [
    ('my-project:evals.metrics', ('my-project', 'evals', 'metrics')),
    ('evals.metrics', (None, 'evals', 'metrics')),
    ('example.com:my-project:evals.metrics', ('example.com:my-project', 'evals', 'metrics')),
    ('my-project.evals.metrics_v2', ('my-project', 'evals', 'metrics_v2')),
    ('p1:d_2.t-3$20261123', ('p1', 'd_2', 't-3$20261123')),
])
def test_accepted_table_specs_parse_as_beam_parses_them(spec, parts):
    from apache_beam.io.gcp.bigquery_tools import parse_table_reference
    assert bigquery.check_table_spec(spec) == spec
    ref = parse_table_reference(spec)
    assert (ref.projectId, ref.datasetId, ref.tableId) == parts


@pytest.mark.parametrize('spec', ['', 'metrics', 'My-Project:evals.metrics', 'p:evals.',
                                  'gs://b/t', 'my-project:evals.metrics\n', 'a:b:c',
                                  'my-project:ev als.metrics', None])
def test_other_table_specs_are_rejected_naming_the_option(spec):
    with pytest.raises(ValueError, match='--bigquery_table: .*PROJECT:DATASET.TABLE'):
        bigquery.check_table_spec(spec)


def _dataset(tmp_path):
    """Eight rows, two countries; a regression head whose label/mean is easy to derive."""
    os.makedirs(tmp_path / 'in', exist_ok=True)
    pq.write_table(pa.table({
        'x': pa.array([0.5, 1.5, 2.0, -1.0, 3.0, 0.0, 1.0, 2.5], pa.float32()),
        'y': pa.array([1.0, 1.0, 0.0, 0.0, 2.0, 1.0, 1.0, 2.0], pa.float32()),
        'country': ['US', 'US', 'JP', 'JP', 'US', 'JP', 'US', 'US']}),
        str(tmp_path / 'in' / 'part-0.parquet'))
    return {'input': {'pattern': str(tmp_path / 'in' / '*.parquet')},
            'heads': [{'type': 'RegressionHead', 'args': {'name': 'click'}, 'logits': 'x',
                       'labels': 'y'}],
            'slices': [[], ['country']], 'output': str(tmp_path / 'out')}


def test_dataflow_graph_builds_with_the_sink(tmp_path):
    from apache_beam.io.gcp.bigquery import WriteToBigQuery

    from pipeline import graph, run
    from pipeline.run_options import RunOptions

    config, files, dictionary_columns = run.prepare(_dataset(tmp_path))
    options = run.pipeline_options(DATAFLOW_ARGS)
    p = beam.Pipeline(runner=run.make_runner(options), options=options)
    assert type(p.runner).__name__ == 'DataflowRunner'
    graph.build_pipeline(p, config, files, RunOptions(
        'run-1', AT, bigquery_table='headstream-test:evals.metrics',
        dictionary_columns=dictionary_columns))
    sinks = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            if isinstance(node.transform, WriteToBigQuery):
                sinks.append(node)

    p.visit(Visitor())
    (node,) = sinks
    sink = node.transform
    assert node.full_label == 'BigQuery/WriteToBigQuery'
    ref = sink.table_reference
    assert (ref.projectId, ref.datasetId, ref.tableId) == ('headstream-test', 'evals', 'metrics')
    assert sink.create_disposition == 'CREATE_IF_NEEDED'
    assert sink.write_disposition == 'WRITE_APPEND'
    assert sink.method == 'FILE_LOADS' and sink._temp_file_format == 'AVRO'
    assert sink.schema == bigquery.bigquery_schema()
    # a table created by an earlier version gains the newer nullable columns (model, ci_*)
    assert sink.additional_bq_parameters == {'schemaUpdateOptions': ['ALLOW_FIELD_ADDITION']}
    # Beam turns it into the TableSchema it sends with the load jobs.
    from apache_beam.io.gcp.bigquery_tools import get_bq_tableschema
    table_schema = get_bq_tableschema(sink.schema)
    assert [(f.name, f.type, f.mode) for f in table_schema.fields][-3:] == [
        ('window_start', 'TIMESTAMP', 'NULLABLE'), ('window_end', 'TIMESTAMP', 'NULLABLE'),
        ('step', 'INT64', 'NULLABLE')]
    # The sink reads the run writer's extra output.
    (rows,) = node.inputs
    assert rows.producer.full_label == 'Write/ParDo(WriteRun)' and rows.tag == 'bigquery_rows'
    proto = p.to_runner_api()  # what Dataflow would receive
    labels = {t.unique_name for t in proto.components.transforms.values()}
    assert 'BigQuery/WriteToBigQuery' in labels and 'Write' in labels


def _dump(rows, path):
    with open(path, 'wb') as f:
        pickle.dump(rows, f)


class _RowsToFile(beam.PTransform):
    """Stands in for the BigQuery sink: the rows it receives, pickled in one file."""

    def __init__(self, table_spec):
        super().__init__()
        self.path = _RowsToFile.path

    def expand(self, rows):
        path = self.path
        return rows | beam.combiners.ToList() | beam.Map(_dump, path)


def test_a_run_hands_every_metrics_row_to_the_sink(tmp_path, monkeypatch):
    from pipeline.run import evaluate

    _RowsToFile.path = str(tmp_path / 'rows.pickle')
    monkeypatch.setattr(bigquery, 'WriteMetrics', _RowsToFile)
    summary = evaluate(_dataset(tmp_path), ['--runner=DirectRunner'], run_id='r1',
                       bigquery_table='headstream-test:evals.metrics')
    assert summary['bigquery_table'] == 'headstream-test:evals.metrics'
    with open(_RowsToFile.path, 'rb') as f:
        rows = pickle.load(f)
    metrics = pq.read_table(str(tmp_path / 'out' / 'metrics'))
    assert len(rows) == metrics.num_rows > 0
    key = lambda r: (r['slice'], r['head'], r['metric'])  # noqa: E731
    assert sorted(rows, key=key) == sorted(bigquery.metric_rows(metrics), key=key)
    by_key = {key(r): r for r in rows}
    # label/mean over the US rows (0, 1, 4, 6, 7): (1 + 1 + 2 + 1 + 2) / 5.
    assert by_key['country:US', 'click', 'label/mean']['value'] == pytest.approx(7.0 / 5)
    assert by_key['country:US', 'click', 'label/mean']['example_count'] == 5
    assert all(r['run_id'] == 'r1' and r['step'] is None for r in rows)


def test_a_bad_table_is_a_config_error_before_anything_runs(tmp_path, capsys):
    from pipeline.run import evaluate

    raw = _dataset(tmp_path)
    with pytest.raises(ConfigError, match="--bigquery_table: 'metrics' is not"):
        evaluate(raw, ['--runner=DirectRunner'], bigquery_table='metrics')
    assert cli.main(['evaluate', '--config', json.dumps(raw), '--bigquery_table', 'a b']) == 2
    assert '--bigquery_table' in capsys.readouterr().err
    assert cli.main(['evaluate', '--config', json.dumps(raw), '--bigquery_table', 'p1:d.t',
                     '--streaming']) == 2
    assert 'batch runs only' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'out')
