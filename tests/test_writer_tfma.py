"""The TFMA writer: TFMA 0.52's own loaders read `tfma/` back with the tables' values.

The tables are built by hand; expected values are the input rows themselves, compared with what
`tfma.load_eval_result` / `load_metrics` / `load_plots` return (TFMA's parsing, not ours).
"""
from __future__ import annotations

import datetime
import json
import os
import struct

import pyarrow as pa
import pytest

from pipeline import fileio, schema
from pipeline.writers import tfma as tfma_writer
from pipeline.writers import tfma_protos

RUN = 'r1'
AT = datetime.datetime(2026, 11, 23, 9, 0, tzinfo=datetime.timezone.utc)
SLICES = [[], ['country'], ['country', 'device'], ['age']]
HEADS = ['click', 'buy', 'click_buy']

# (slice_columns, slice_values, head, metric, value, lower, upper, count, weighted count)
METRIC_ROWS = [
    ('', '', 'click', 'auc', 0.75, 0.74, 0.76, 10, 12.5),
    ('', '', 'click', 'accuracy/positive_threshold_0.5', 0.6, None, None, 10, 12.5),
    ('', '', 'click', 'loss', 0.4125, None, None, 10, 12.5),
    ('', '', 'buy', 'auc/class2', 0.5, None, None, 10, 10.0),
    ('', '', 'buy', 'auc', 0.875, None, None, 10, 10.0),
    ('', '', 'click_buy', 'loss', 1.25, None, None, 10, 10.0),
    ('country', 'US', 'click', 'auc', 1.0, 1.0, 1.0, 4, 5.0),
    ('country', 'US', 'click', 'loss', 0.125, None, None, 4, 5.0),
    ('country_X_device', 'US_X_mobile', 'click', 'loss', 0.0625, None, None, 2, 2.0),
    ('age', '30', 'buy', 'auc', 0.25, None, None, 3, 3.0),
    ('age', '030', 'buy', 'auc', 0.125, None, None, 1, 1.0),
]


def ids(rows, head_index=2):
    cols = {'run_id': [], 'evaluated_at': [], 'slice': [], 'slice_columns': [],
            'slice_values': [], 'head': []}
    for r in rows:
        c, v = r[0], r[1]
        cols['run_id'].append(RUN)
        cols['evaluated_at'].append(AT)
        cols['slice'].append(schema.slice_name(tuple(c.split('_X_')) if c else (),
                                               tuple(v.split('_X_')) if c else ()))
        cols['slice_columns'].append(c)
        cols['slice_values'].append(v)
        cols['head'].append(r[head_index])
    return cols


def metrics_table(rows=METRIC_ROWS, steps=None):
    cols = ids(rows)
    for name, j in (('metric', 3), ('value', 4), ('lower_bound', 5), ('upper_bound', 6),
                    ('example_count', 7), ('weighted_example_count', 8)):
        cols[name] = [r[j] for r in rows]
    cols['model'] = ['candidate'] * len(rows)
    for name, j in (('ci_lower', 9), ('ci_upper', 10), ('standard_error', 11)):
        cols[name] = [r[j] if len(r) > j else None for r in rows]  # a confidence run's rows
    s = schema.with_extras(schema.METRICS, stepped=steps is not None)
    if steps is not None:
        cols['step'] = steps
    return pa.table(cols, schema=s)


# Confusion rows: (slice_columns, slice_values, head, sub_key, threshold, tp, fp, tn, fn)
CONFUSION = [
    ('', '', 'click', '', 0.5, 3.0, 1.0, 4.0, 2.0),
    ('', '', 'click', '', 0.0, 5.0, 5.0, 0.0, 0.0),   # out of order: the writer sorts
    ('', '', 'click', '', 1.0, 0.0, 0.0, 5.0, 5.0),
    ('', '', 'buy', 'classId:2', 0.5, 1.0, 0.0, 8.0, 1.0),
    ('country', 'US', 'click', '', 0.5, 2.0, 0.0, 2.0, 0.0),
]
# Calibration rows: (..., head, sub_key, lower, upper, Σw, Σw·label, Σw·p)
CALIBRATION = [
    ('', '', 'click', '', 0.0, 0.5, 6.0, 1.5, 1.25),
    ('', '', 'click', '', 0.5, 1.0, 6.5, 5.0, 4.75),
]


def div(a, b):
    return a / b if b else 0.0


def plots_table(steps=None):
    rows = [r[:4] for r in CONFUSION] + [r[:4] for r in CALIBRATION]
    cols = ids(rows)
    n_conf = len(CONFUSION)
    cols['sub_key'] = [r[3] for r in rows]
    cols['curve'] = ['confusion'] * n_conf + ['calibration'] * len(CALIBRATION)
    nan = [None] * len(CALIBRATION)
    cols['threshold'] = [r[4] for r in CONFUSION] + nan
    for name, j in (('tp', 5), ('fp', 6), ('tn', 7), ('fn', 8)):
        cols[name] = [r[j] for r in CONFUSION] + nan
    cols['precision'] = [div(r[5], r[5] + r[6]) for r in CONFUSION] + nan
    cols['recall'] = [div(r[5], r[5] + r[8]) for r in CONFUSION] + nan
    cols['false_positive_rate'] = [div(r[6], r[6] + r[7]) for r in CONFUSION] + nan
    none = [None] * n_conf
    for name, j in (('bucket_lower', 4), ('bucket_upper', 5), ('weighted_examples', 6),
                    ('weighted_labels', 7), ('weighted_predictions', 8)):
        cols[name] = none + [r[j] for r in CALIBRATION]
    s = schema.with_extras(schema.PLOTS, stepped=steps is not None)
    if steps is not None:
        cols['step'] = steps
    return pa.table(cols, schema=s)


def expected_slice_key(c, v):
    """TFMA's slice key for a row, derived by hand: sorted columns, integer text as int."""
    if not c:
        return ()
    pairs = zip(c.split('_X_'), v.split('_X_'))
    return tuple(sorted((col, int(val) if val in ('30',) else val) for col, val in pairs))


def test_slice_key_spelling():
    assert tfma_protos.slice_key('', '', SLICES) == ()
    assert tfma_protos.slice_key('country_X_device', 'US_X_mobile', SLICES) == (
        ('country', 'US'), ('device', 'mobile'))
    # Sorted by column, as TFMA's slicer keys are.
    assert tfma_protos.slice_key('b_X_a', '1_X_x', [['b', 'a']]) == (('a', 'x'), ('b', 1))
    assert tfma_protos.slice_key('age', '-7', SLICES) == (('age', -7),)
    assert tfma_protos.slice_key('age', '07', SLICES) == (('age', '07'),)
    assert tfma_protos.slice_key('age', '1.5', SLICES) == (('age', '1.5'),)
    with pytest.raises(ValueError, match="'region'"):
        tfma_protos.slice_key('region', 'EU', SLICES)
    with pytest.raises(ValueError, match='US_X_a_X_b'):
        tfma_protos.slice_key('country_X_device', 'US_X_a_X_b', SLICES)
    # Escaped cells (docs/tables.md): a value holding `_X_` or `%` is one value.
    assert tfma_protos.slice_key('country_X_device', 'US_X_a_%58_b%25', SLICES) == (
        ('country', 'US'), ('device', 'a_X_b%'))
    # The run's own values, typed as TFMA's slicer types features.
    typed = {('age', '30'): ('30',), ('age', '1.5'): (1.5,)}
    assert tfma_protos.slice_key('age', '30', SLICES, typed) == (('age', '30'),)
    assert tfma_protos.slice_key('age', '1.5', SLICES, typed) == (('age', 1.5),)


def test_metric_name_and_class():
    assert tfma_protos.metric_name_and_class('auc/class2') == ('auc', 2)
    assert tfma_protos.metric_name_and_class('auc_precision_recall/class10') == (
        'auc_precision_recall', 10)
    assert tfma_protos.metric_name_and_class('accuracy/positive_threshold_0.5') == (
        'accuracy/positive_threshold_0.5', None)
    assert tfma_protos.metric_name_and_class('loss') == ('loss', None)


def read_records(path):
    """An independent TFRecord reader (no CRC check: TFMA's loader checks them)."""
    out = []
    with open(path, 'rb') as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack('<Q', data[pos:pos + 8])
        out.append(data[pos + 12:pos + 12 + n])
        pos += 12 + n + 4
    return out


def test_unknown_head_and_duplicates_are_errors(tmp_path):
    bad = metrics_table([('', '', 'other', 'auc', 0.5, None, None, 1, 1.0)])
    with pytest.raises(ValueError, match="metrics row 0: head 'other'"):
        tfma_writer.write_tfma(str(tmp_path), bad, plots_table().slice(0, 0), SLICES, HEADS)
    dup = metrics_table([METRIC_ROWS[0], METRIC_ROWS[0]])
    with pytest.raises(ValueError, match="metrics row 1: .*'Overall'.*metric 'auc'.*twice"):
        tfma_writer.write_tfma(str(tmp_path), dup, plots_table().slice(0, 0), SLICES, HEADS)
    bad_slice = metrics_table([('region', 'EU', 'click', 'auc', 0.5, None, None, 1, 1.0)])
    with pytest.raises(ValueError, match="slice columns 'region'"):
        tfma_writer.write_tfma(str(tmp_path), bad_slice, plots_table().slice(0, 0), SLICES, HEADS)
    bad_plot = plots_table()
    bad_plot = bad_plot.set_column(bad_plot.schema.get_field_index('head'), 'head',
                                   pa.array(['nope'] * len(bad_plot)))
    with pytest.raises(ValueError, match="plots row 0: head 'nope'"):
        tfma_writer.write_tfma(str(tmp_path), metrics_table(), bad_plot, SLICES, HEADS)
    assert not os.path.exists(tmp_path / 'tfma')  # nothing written


@pytest.mark.tf
def test_tfma_loads_every_value(tmp_path):
    import tensorflow_model_analysis as tfma

    out = str(tmp_path / 'run')
    tfma_writer.write_tfma(out, metrics_table(), plots_table(), SLICES, HEADS)
    path = os.path.join(out, 'tfma')
    assert sorted(os.listdir(path)) == ['eval_config.json', 'metrics-00000-of-00001.tfrecord',
                                        'plots-00000-of-00001.tfrecord']
    with open(os.path.join(path, 'eval_config.json')) as f:
        run = json.load(f)
    assert run['version']

    result = tfma.load_eval_result(path)
    assert result.config.metrics_specs[0].output_names == HEADS
    assert [list(s.feature_keys) for s in result.config.slicing_specs] == SLICES
    got = dict(result.slicing_metrics)
    expected_keys = [expected_slice_key(r[0], r[1]) for r in METRIC_ROWS]
    assert sorted(got, key=repr) == sorted(set(expected_keys), key=repr)
    assert (('age', 30),) in got and (('age', '030'),) in got
    for r, key in zip(METRIC_ROWS, expected_keys):
        c, v, head, metric, value, lo, hi, count, weighted = r
        if metric == 'auc/class2':
            sub, name = 'classId:2', 'auc'
        else:
            sub, name = '', metric
        entry = got[key][head][sub][name]
        if lo is None:
            assert entry == {'doubleValue': value}
        else:
            bounded = entry['boundedValue']
            assert (bounded['value'], bounded['lowerBound'], bounded['upperBound']) == (
                value, lo, hi)
        assert got[key][head][''].get('example_count') == {'doubleValue': count}
        assert got[key][head][''].get('weighted_example_count') == {'doubleValue': weighted}
    # Nothing beyond the rows and the two counts per (slice, head).
    n_values = sum(len(m) for outputs in got.values() for subs in outputs.values()
                   for m in subs.values())
    n_heads = len({(r[0], r[1], r[2]) for r in METRIC_ROWS})
    assert n_values == len(METRIC_ROWS) + 2 * n_heads

    # MetricKeys as TFMA writes them: example_weighted set, class ids as sub keys.
    metrics = list(tfma.load_metrics(path))
    assert len(metrics) == len(got)
    overall = [m for m in metrics if not m.slice_key.single_slice_keys][0]
    keys = {(kv.key.output_name, kv.key.name, kv.key.sub_key.class_id.value
             if kv.key.HasField('sub_key') else None): kv.key for kv in
            overall.metric_keys_and_values}
    assert keys[('click', 'auc', None)].example_weighted.value is True
    assert keys[('click', 'auc', None)].HasField('example_weighted')
    assert keys[('buy', 'auc', 2)].sub_key.HasField('class_id')
    assert keys[('click', 'example_count', None)].HasField('example_weighted')
    assert keys[('click', 'example_count', None)].example_weighted.value is False

    # Plots: per slice / head / sub key, every confusion and calibration row.
    plots = dict(result.plots)
    assert set(plots) == {(), (('country', 'US'),)}
    assert sorted(plots[()]) == ['buy', 'click']
    for c, v, head, sub, *_ in CONFUSION:
        key = expected_slice_key(c, v)
        tfma_sub = 'classId:2' if sub == 'classId:2' else ''
        matrices = plots[key][head][tfma_sub]['confusionMatrixAtThresholds']['matrices']
        rows = sorted((r for r in CONFUSION if r[:4] == (c, v, head, sub)), key=lambda r: r[4])
        assert len(matrices) == len(rows)
        for m, r in zip(matrices, rows):
            # MessageToDict leaves out fields equal to 0.
            assert m.get('threshold', 0.0) == r[4]
            assert (m.get('truePositives', 0.0), m.get('falsePositives', 0.0),
                    m.get('trueNegatives', 0.0), m.get('falseNegatives', 0.0)) == r[5:9]
            assert m.get('precision', 0.0) == div(r[5], r[5] + r[6])
            assert m.get('recall', 0.0) == div(r[5], r[5] + r[8])
            assert m.get('falsePositiveRate', 0.0) == div(r[6], r[6] + r[7])
    buckets = plots[()]['click']['']['calibrationHistogramBuckets']['buckets']
    assert [(b.get('lowerThresholdInclusive', 0.0), b['upperThresholdExclusive'],
             b['numWeightedExamples'], b['totalWeightedLabel'],
             b['totalWeightedRefinedPrediction']) for b in buckets] == [
        r[4:9] for r in CALIBRATION]  # wrapper values render as plain numbers
    assert 'calibrationHistogramBuckets' not in plots[()]['buy']['classId:2']
    assert len(list(tfma.load_plots(path))) == 2


@pytest.mark.tf
def test_steps_become_loadable_subdirectories_and_empty_tables_load(tmp_path):
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2

    rows = [METRIC_ROWS[2], METRIC_ROWS[2]]
    steps = [100, 200]
    table = metrics_table(rows, steps=steps)
    table = table.set_column(table.schema.get_field_index('value'), 'value',
                             pa.array([0.5, 0.25], pa.float64()))
    out = str(tmp_path / 'run')
    tfma_writer.write_tfma(out, table, plots_table(steps=[100] * 7), SLICES, HEADS)
    base = os.path.join(out, 'tfma')
    assert sorted(os.listdir(base)) == ['eval_config.json', 'metrics-00000-of-00001.tfrecord',
                                        'plots-00000-of-00001.tfrecord', 'step=100', 'step=200']

    def loss_at(path):
        (record,) = read_records(os.path.join(path, 'metrics-00000-of-00001.tfrecord'))
        m = metrics_for_slice_pb2.MetricsForSlice.FromString(record)
        return [kv.value.double_value.value for kv in m.metric_keys_and_values
                if kv.key.name == 'loss'][0]

    assert loss_at(os.path.join(base, 'step=100')) == 0.5
    assert loss_at(os.path.join(base, 'step=200')) == 0.25
    assert loss_at(base) == 0.25  # the latest step
    assert read_records(os.path.join(base, 'step=200', 'plots-00000-of-00001.tfrecord')) == []
    assert len(read_records(os.path.join(base, 'step=100', 'plots-00000-of-00001.tfrecord'))) == 2

    # Empty tables (empty input): an empty but loadable result.
    empty = str(tmp_path / 'empty')
    tfma_writer.write_tfma(empty, metrics_table([]), plots_table().slice(0, 0), SLICES, HEADS)
    result = tfma.load_eval_result(os.path.join(empty, 'tfma'))
    assert result.slicing_metrics == [] and result.plots == []


def test_windows_get_their_own_directories(tmp_path):
    w0 = datetime.datetime(2026, 11, 23, 8, 0, tzinfo=datetime.timezone.utc)
    w1 = w0 + datetime.timedelta(minutes=1)
    w2 = w1 + datetime.timedelta(minutes=1)
    table = metrics_table([METRIC_ROWS[2], METRIC_ROWS[2]])
    cols = {name: table.column(name) for name in table.column_names}
    cols['window_start'] = pa.array([w1, w0], schema.TIMESTAMP)  # the later window first
    cols['window_end'] = pa.array([w2, w1], schema.TIMESTAMP)
    cols['value'] = pa.array([0.25, 0.5])
    windowed = pa.table(cols, schema=schema.with_extras(schema.METRICS, windowed=True))
    plots = plots_table().slice(0, 0)
    plots = pa.table({**{n: plots.column(n) for n in plots.column_names},
                      'window_start': pa.array([], schema.TIMESTAMP),
                      'window_end': pa.array([], schema.TIMESTAMP)},
                     schema=schema.with_extras(schema.PLOTS, windowed=True))
    out = str(tmp_path / 'run')
    tfma_writer.write_tfma(out, windowed, plots, SLICES, HEADS)
    base = os.path.join(out, 'tfma')
    assert sorted(d for d in os.listdir(base) if d.startswith('window=')) == [
        'window=20261123T080000Z', 'window=20261123T080100Z']
    for sub, loss in (('window=20261123T080000Z', 0.5), ('window=20261123T080100Z', 0.25),
                      ('', 0.25)):
        (record,) = read_records(os.path.join(base, sub, 'metrics-00000-of-00001.tfrecord'))
        assert b'loss' in record
        # The loss value's float64 bytes are in the record, the other window's are not.
        assert struct.pack('<d', loss) in record
        assert struct.pack('<d', 0.75 - loss) not in record


def test_window_directory_names():
    t = datetime.datetime(2026, 11, 23, 8, 0, tzinfo=datetime.timezone.utc)
    assert tfma_writer._evaluation_dir(t, None) == 'window=20261123T080000Z'
    assert tfma_writer._evaluation_dir(t, 5) == 'step=5,window=20261123T080000Z'
    assert tfma_writer._evaluation_dir(t.replace(microsecond=500000), None) == (
        'window=20261123T080000.500000Z')


def test_writing_leaves_tensorflow_and_tfma_unimported(tmp_path):
    # A fresh interpreter (this one may hold TensorFlow already): writing every file of tfma/
    # imports neither TensorFlow nor TFMA's package.
    import subprocess
    import sys
    code = '\n'.join([
        'import sys',
        'sys.path.insert(0, %r)' % os.path.dirname(os.path.abspath(__file__)),
        'import test_writer_tfma as t',
        't.tfma_writer.write_tfma(%r, t.metrics_table(), t.plots_table(), t.SLICES, t.HEADS)'
        % str(tmp_path / 'run'),
        'assert "tensorflow" not in sys.modules, "tensorflow"',
        'assert "tensorflow_model_analysis" not in sys.modules, "tfma"'])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / 'run' / 'tfma')) == [
        'eval_config.json', 'metrics-00000-of-00001.tfrecord', 'plots-00000-of-00001.tfrecord']


@pytest.mark.tf
def test_slice_key_protos_and_framing_match_tfma_and_tensorflow(tmp_path):
    import tensorflow as tf
    from tensorflow_model_analysis.slicer import slicer_lib

    for key in [(), (('country', 'US'),), (('age', 30), ('country', 'ü/x')), (('p', -2),),
                (('f', 1.5),)]:
        assert (tfma_protos.slice_key_proto(key).SerializeToString()
                == slicer_lib.serialize_slice_key(key).SerializeToString()), key
    with pytest.raises(TypeError, match="slice 'c'"):
        tfma_protos.slice_key_proto((('c', None),))
    # TensorFlow's own reader checks both CRCs of every record.
    records = [b'', b'a', bytes(range(256)) * 3]
    framed = fileio.tfrecord_bytes(records)
    assert len(framed) == sum(len(r) + 16 for r in records)  # 8 len + 4 + data + 4
    path = str(tmp_path / 'framing.tfrecord')
    with open(path, 'wb') as f:
        f.write(framed)
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == records


@pytest.mark.tf
def test_tfma_module_is_tfmas_own_once_tfma_is_imported():
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2

    assert tfma_protos.tfma_module('proto.metrics_for_slice_pb2') is metrics_for_slice_pb2
    assert tfma_protos.tfma_module('version').VERSION == tfma.__version__


def test_confidence_intervals_are_the_values_confidence_interval_in_tfmas_loaders(tmp_path):
    import tensorflow_model_analysis as tfma

    rows = [('', '', 'click', 'auc', 0.75, 0.74, 0.76, 10, 12.5, 0.70, 0.80, 0.025),
            ('', '', 'click', 'accuracy', 0.6, None, None, 10, 12.5, 0.55, 0.64, 0.02),
            ('', '', 'click', 'loss', 0.4, None, None, 10, 12.5, None, None, None),
            ('country', 'US', 'click', 'auc', 1.0, 1.0, 1.0, 4, 5.0, None, None, None)]
    out = str(tmp_path / 'run')
    tfma_writer.write_tfma(out, metrics_table(rows), plots_table(), SLICES, HEADS)
    path = os.path.join(out, 'tfma')
    got = dict(tfma.load_eval_result(path).slicing_metrics)
    overall = got[()]['click']['']
    # A confidence interval takes the place of the AUC's bucketing bound (kept in the table).
    bounded = overall['auc']['boundedValue']
    assert (bounded['value'], bounded['lowerBound'], bounded['upperBound']) == (0.75, 0.70, 0.80)
    assert (overall['accuracy']['boundedValue']['lowerBound'],
            overall['accuracy']['boundedValue']['upperBound']) == (0.55, 0.64)
    assert overall['loss'] == {'doubleValue': 0.4}
    us = got[(('country', 'US'),)]['click']['']  # no interval: the bucketing bound as before
    assert (us['auc']['boundedValue']['lowerBound'], us['auc']['boundedValue']['upperBound']) == (
        1.0, 1.0)
    (metrics,) = [m for m in tfma.load_metrics(path) if not m.slice_key.single_slice_keys]
    by_name = {kv.key.name: kv for kv in metrics.metric_keys_and_values
               if kv.key.output_name == 'click'}
    ci = by_name['auc'].confidence_interval
    assert (ci.lower_bound.double_value.value, ci.upper_bound.double_value.value,
            ci.standard_error.double_value.value) == (0.70, 0.80, 0.025)
    assert not by_name['loss'].HasField('confidence_interval')
