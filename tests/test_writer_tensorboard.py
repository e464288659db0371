"""The TensorBoard writer, read back with TensorBoard's own EventAccumulator and its HTTP server.

Tables are built by hand; expected values are the rows themselves (scalars exactly, PR-curve
tensors at the plugin's float32), run names written out by hand.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 -- pa.compute
import pytest

from pipeline import schema
from pipeline.writers import tensorboard as tb_writer

UTC = datetime.timezone.utc
AT = datetime.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
RUN = '20261123T090000Z-abc123'

# (slice_columns, slice_values, head, metric, value, step)
METRIC_ROWS = [
    ('', '', 'click', 'auc', 0.75, 100),
    ('', '', 'click', 'auc', 0.8125, 200),
    ('', '', 'click', 'accuracy/positive_threshold_0.5', 0.1 + 0.2, 100),  # not float32-exact
    ('', '', 'click', 'loss', 0.4125, 100),
    ('', '', 'click_buy', 'loss', 1.25, 100),
    ('country', 'US', 'click', 'auc', 1.0, 100),
    ('country_X_device', 'US_X_mobile', 'click', 'loss', 0.0625, 100),
    ('path', 'a/b c,d=e', 'click', 'loss', 2.5, 100),
]
RUNS = {('', ''): 'Overall', ('country', 'US'): 'country=US',
        ('country_X_device', 'US_X_mobile'): 'country=US,device=mobile',
        ('path', 'a/b c,d=e'): 'path=a%2Fb%20c%2Cd%3De'}


def slice_of(c, v):
    return schema.slice_name(tuple(c.split('_X_')) if c else (), tuple(v.split('_X_')) if c else ())


def id_columns(keys):
    return {'run_id': [RUN] * len(keys), 'evaluated_at': [AT] * len(keys),
            'slice': [slice_of(c, v) for c, v, _ in keys],
            'slice_columns': [k[0] for k in keys], 'slice_values': [k[1] for k in keys],
            'head': [k[2] for k in keys]}


def metrics_table(rows=METRIC_ROWS, stepped=True, windows=None):
    cols = id_columns([r[:3] for r in rows])
    cols.update(metric=[r[3] for r in rows], value=[r[4] for r in rows],
                lower_bound=[None] * len(rows), upper_bound=[None] * len(rows),
                example_count=[10] * len(rows), weighted_example_count=[10.0] * len(rows),
                model=['candidate'] * len(rows), ci_lower=[None] * len(rows),
                ci_upper=[None] * len(rows), standard_error=[None] * len(rows))
    if windows is not None:
        cols['window_start'] = [w[0] for w in windows]
        cols['window_end'] = [w[1] for w in windows]
    if stepped:
        cols['step'] = [r[5] for r in rows]
    return pa.table(cols, schema=schema.with_extras(schema.METRICS, windows is not None, stepped))


# Confusion rows: (slice_columns, slice_values, head, sub_key, step, threshold, tp, fp, tn, fn)
CONFUSION = [
    ('', '', 'click', '', 100, 0.5, 3.0, 1.0, 4.0, 2.0),
    ('', '', 'click', '', 100, 0.0, 5.0, 5.0, 0.0, 0.0),  # out of order: the writer sorts
    ('', '', 'click', '', 100, 1.0, 0.0, 0.0, 5.0, 5.0),
    ('', '', 'click', '', 200, 0.0, 6.0, 4.0, 0.0, 0.0),
    ('', '', 'click', '', 200, 1.0, 0.0, 0.0, 4.0, 6.0),
    ('', '', 'buy', 'class2', 100, 0.5, 1.0, 0.0, 8.0, 1.0),
    ('country', 'US', 'click', '', 100, 0.5, 2.0, 0.0, 2.0, 0.0),
]
# Calibration rows: (..., head, sub_key, step, lower, upper, Σw, Σw·label, Σw·p)
CALIBRATION = [
    ('', '', 'click', '', 100, 0.5, 1.0, 6.5, 5.0, 4.75),
    ('', '', 'click', '', 100, 0.0, 0.5, 6.0, 1.5, 1.25),
]


def div(a, b):
    return a / b if b else 0.0


def plots_table(CONFUSION=CONFUSION, CALIBRATION=CALIBRATION):  # noqa: N803 -- the tables' names
    rows = CONFUSION + CALIBRATION
    cols = id_columns([r[:3] for r in rows])
    nc, nb = len(CONFUSION), len(CALIBRATION)
    cols['sub_key'] = [r[3] for r in rows]
    cols['curve'] = ['confusion'] * nc + ['calibration'] * nb
    cols['threshold'] = [r[5] for r in CONFUSION] + [None] * nb
    for name, j in (('tp', 6), ('fp', 7), ('tn', 8), ('fn', 9)):
        cols[name] = [r[j] for r in CONFUSION] + [None] * nb
    cols['precision'] = [div(r[6], r[6] + r[7]) for r in CONFUSION] + [None] * nb
    cols['recall'] = [div(r[6], r[6] + r[9]) for r in CONFUSION] + [None] * nb
    cols['false_positive_rate'] = [div(r[7], r[7] + r[8]) for r in CONFUSION] + [None] * nb
    for name, j in (('bucket_lower', 5), ('bucket_upper', 6), ('weighted_examples', 7),
                    ('weighted_labels', 8), ('weighted_predictions', 9)):
        cols[name] = [None] * nc + [r[j] for r in CALIBRATION]
    cols['step'] = [r[4] for r in rows]
    return pa.table(cols, schema=schema.with_extras(schema.PLOTS, stepped=True))


def test_run_names():
    assert tb_writer.run_name('', '') == 'Overall'
    assert tb_writer.run_name('country', 'US') == 'country=US'
    assert tb_writer.run_name('country_X_device', 'US_X_mobile') == 'country=US,device=mobile'
    assert tb_writer.run_name('p', '../x') == 'p=..%2Fx'
    # The cells are escaped (`schema.escape_slice_part`): `50%` is `50%25` there.
    assert tb_writer.run_name('p', '50%25') == 'p=50%25'
    # A value holding the separator: escaped in the cell, one value again in the run name.
    assert tb_writer.run_name('a_X_b', '1_%58_2_X_3') == 'a=1_X_2,b=3'


def test_long_slice_values_are_cut_and_hashed(tmp_path):
    """29 CJK characters escape to 261 bytes, more than a file name may hold (255): the run name
    is cut to 200 bytes and ends with a hash, distinct for two values sharing their start."""
    long_a, long_b = '中' * 29 + 'a', '中' * 29 + 'b'
    rows = [('', '', 'click', 'auc', 0.75, 100),
            ('city', long_a, 'click', 'auc', 0.5, 100),
            ('city', long_b, 'click', 'auc', 0.25, 100)]
    logdir = str(tmp_path / 'tb')
    written = tb_writer.write_tensorboard(logdir, metrics_table(rows), plots_table().slice(0, 0))
    runs = sorted(os.path.relpath(os.path.dirname(p), logdir) for p in written)
    assert len(runs) == 3 and runs[0] == 'Overall'
    escaped = 'city=' + '%E4%B8%AD' * 29  # 5 + 261 bytes
    for run in runs[1:]:
        assert len(run.encode('utf-8')) <= 200
        head, digest = run.split('~')
        assert escaped.startswith(head) and len(head) >= 150 and len(digest) == 16
        assert len(head) % 9 == 5  # 'city=' then whole 9-byte escapes only
    assert runs[1] != runs[2]


def test_duplicate_rows_and_empty_tables(tmp_path):
    dup = metrics_table([METRIC_ROWS[0], METRIC_ROWS[0]])
    with pytest.raises(ValueError, match="metrics row 1: run 'Overall' tag 'click/auc' step 100"):
        tb_writer.write_tensorboard(str(tmp_path / 'dup'), dup, plots_table().slice(0, 0))
    # Empty tables (empty input): nothing to show, no files, no error.
    assert tb_writer.write_tensorboard(str(tmp_path / 'empty'), metrics_table([]),
                                       plots_table().slice(0, 0)) == []


def load_tensors(run_dir):
    """{tag: [(step, ndarray)]} as TensorBoard's own accumulator reads the run."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util
    acc = pea.EventAccumulator(run_dir, size_guidance={pea.TENSORS: 0})
    acc.Reload()
    return {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
            for tag in acc.Tags()['tensors']}, acc


def test_event_files_read_back_exactly(tmp_path):
    logdir = str(tmp_path / 'tb')
    written = tb_writer.write_tensorboard(logdir, metrics_table(), plots_table())
    assert sorted(os.listdir(logdir)) == sorted(RUNS.values())
    assert len(written) == len(RUNS)
    for path in written:  # event files directly in the run directory
        assert os.path.dirname(os.path.dirname(path)) == logdir
        assert 'tfevents' in os.path.basename(path)

    loaded = {run: load_tensors(os.path.join(logdir, run)) for run in RUNS.values()}
    # Every scalar equals its row (rounded to float32, TensorBoard's scalar type) at its step;
    # nothing else is a scalar.
    expected = {}
    for c, v, head, metric, value, step in METRIC_ROWS:
        expected.setdefault((RUNS[c, v], '%s/%s' % (head, metric)), []).append(
            (step, float(np.float32(value))))
    got = {}
    for run, (tensors, acc) in loaded.items():
        for tag in acc.PluginTagToContent('scalars'):
            assert all(a.dtype == np.float32 and a.shape == () for _, a in tensors[tag])
            got[run, tag] = [(s, float(a)) for s, a in tensors[tag]]
    assert got == {k: sorted(v) for k, v in expected.items()}
    assert got['Overall', 'click/auc'] == [(100, 0.75), (200, 0.8125)]  # two steps, two points
    assert got['Overall', 'click/accuracy/positive_threshold_0.5'] == [
        (100, float(np.float32(0.1 + 0.2)))]

    # PR curves: the rows' tp, fp, tn, fn, precision, recall by increasing threshold.
    tensors, acc = loaded['Overall']
    assert sorted(acc.PluginTagToContent('pr_curves')) == ['buy/pr_curve/class2',
                                                          'click/pr_curve']
    for tag, head, sub in (('click/pr_curve', 'click', ''), ('buy/pr_curve/class2', 'buy',
                                                              'class2')):
        points = tensors[tag]
        steps = sorted({r[4] for r in CONFUSION if r[:4] == ('', '', head, sub)})
        assert [s for s, _ in points] == steps
        for step, array in points:
            rows = sorted((r for r in CONFUSION if r[:5] == ('', '', head, sub, step)),
                          key=lambda r: r[5])
            want = np.array([[r[6] for r in rows], [r[7] for r in rows], [r[8] for r in rows],
                             [r[9] for r in rows], [div(r[6], r[6] + r[7]) for r in rows],
                             [div(r[6], r[6] + r[9]) for r in rows]], dtype=np.float32)
            assert array.dtype == np.float32
            np.testing.assert_array_equal(array, want)
    us_tensors, us_acc = loaded['country=US']
    assert list(us_acc.PluginTagToContent('pr_curves')) == ['click/pr_curve']
    np.testing.assert_array_equal(us_tensors['click/pr_curve'][0][1][:, 0],
                                  np.float32([2.0, 0.0, 2.0, 0.0, 1.0, 1.0]))

    # Histogram of predicted probabilities: buckets [lower, upper) with Σw, sorted.
    assert list(acc.PluginTagToContent('histograms')) == ['click/predictions']
    ((step, hist),) = tensors['click/predictions']
    assert step == 100
    np.testing.assert_array_equal(hist, [[0.0, 0.5, 6.0], [0.5, 1.0, 6.5]])


def test_pr_curves_use_the_evenly_spaced_auc_thresholds_only(tmp_path):
    """A head's confusion rows: Keras's 200 AUC thresholds (0 − 1e-7, 1/199, ..., 198/199,
    1 + 1e-7) with the head's own 0.3, 0.5 and 0.7 sorted among them. The plugin labels point i
    as i / 199, so the curve holds the 200 grid rows, in order, and none of the head's rows."""
    grid = [0.0 - 1e-7] + [i / 199 for i in range(1, 199)] + [1.0 + 1e-7]
    # Grid row i: tp = 199 − i, fp = 2·(199 − i), tn = 2·i, fn = i (any distinct counts do).
    rows = [('', '', 'click', '', 100, t, 199.0 - i, 2.0 * (199 - i), 2.0 * i, float(i))
            for i, t in enumerate(grid)]
    # The head's thresholds: counts that no grid row has, so a leaked row shows.
    rows += [('', '', 'click', '', 100, t, 1000.0 + k, 0.0, 0.0, 0.0)
             for k, t in enumerate((0.3, 0.5, 0.7))]
    rows = rows[::-1]  # any order: the writer sorts
    logdir = str(tmp_path / 'tb')
    tb_writer.write_tensorboard(logdir, metrics_table([METRIC_ROWS[0]]),
                                plots_table(rows, []))
    tensors, _ = load_tensors(os.path.join(logdir, 'Overall'))
    ((step, array),) = tensors['click/pr_curve']
    assert step == 100 and array.shape == (6, 200)
    i = np.arange(200, dtype=np.float64)
    tp, fp, fn = 199.0 - i, 2.0 * (199 - i), i
    want = np.array([tp, fp, 2.0 * i, fn,
                     np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0),
                     np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)], dtype=np.float32)
    np.testing.assert_array_equal(array, want)
    assert not np.any(array[0] >= 1000.0)

    # Detection on its own: the grid among extra thresholds, a grid point shared with a head
    # threshold (first row kept), and no grid (every row).
    assert tb_writer.even_threshold_rows([0.0, 0.25, 0.3, 0.5, 0.75, 1.0]) == [0, 1, 3, 4, 5]
    assert tb_writer.even_threshold_rows([0.0, 0.5, 0.5, 1.0]) == [0, 1, 3]
    assert tb_writer.even_threshold_rows([0.2, 0.5, 0.7]) == [0, 1, 2]
    assert tb_writer.even_threshold_rows([0.0, 0.3, 1.0]) == [0, 2]
    assert tb_writer.even_threshold_rows([]) == []


def test_windowed_and_unstepped_steps(tmp_path):
    rows = [('', '', 'click', 'auc', 0.5, None), ('', '', 'click', 'auc', 0.25, None)]
    w0 = datetime.datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    w1 = datetime.datetime(2026, 11, 23, 8, 1, tzinfo=UTC)
    w2 = datetime.datetime(2026, 11, 23, 8, 2, tzinfo=UTC)
    windowed = metrics_table(rows, stepped=False, windows=[(w0, w1), (w1, w2)])
    logdir = str(tmp_path / 'w')
    tb_writer.write_tensorboard(logdir, windowed, plots_table().slice(0, 0).drop(['step']))
    tensors, _ = load_tensors(os.path.join(logdir, 'Overall'))
    # Window end in epoch seconds: 2026-11-23T08:01:00Z = 1795420860.
    assert [(s, float(a)) for s, a in tensors['click/auc']] == [(1795420860, 0.5),
                                                               (1795420860 + 60, 0.25)]

    # Windows and steps (config `window:` plus `tensorboard.step`): one run per step under the
    # slice's run, event time on the step axis; every (window, step) keeps its own point.
    w3 = datetime.datetime(2026, 11, 23, 8, 3, tzinfo=UTC)
    both = metrics_table([('', '', 'click', 'auc', 0.5, 1000), ('', '', 'click', 'auc', 0.25, 1000),
                          ('', '', 'click', 'auc', 0.125, 2000),
                          ('country', 'US', 'click', 'auc', 0.75, 1000)],
                         windows=[(w1, w2), (w0, w1), (w1, w2), (w2, w3)])
    conf = plots_table().filter(pa.compute.equal(pa.compute.field('step'), 200))  # 2 rows
    conf = conf.drop(['step'])
    conf = pa.concat_tables([conf, conf.set_column(conf.schema.get_field_index('tp'), 'tp',
                                                   pa.array([9.0, 9.0]))])
    conf = pa.table({**{n: conf.column(n) for n in conf.column_names},
                     'window_start': pa.array([w0, w0, w1, w1], schema.TIMESTAMP),
                     'window_end': pa.array([w1, w1, w2, w2], schema.TIMESTAMP),
                     'step': pa.array([1000] * 4, pa.int64())},
                    schema=schema.with_extras(schema.PLOTS, windowed=True, stepped=True))
    logdir = str(tmp_path / 'ws')
    written = tb_writer.write_tensorboard(logdir, both, conf)
    assert sorted(os.path.relpath(os.path.dirname(p), logdir) for p in written) == [
        'Overall/step=1000', 'Overall/step=2000', 'country=US/step=1000']
    tensors, _ = load_tensors(os.path.join(logdir, 'Overall', 'step=1000'))
    # Window ends 08:01 and 08:02: 1795420860 and 1795420860 + 60, both kept.
    assert [(s, float(a)) for s, a in tensors['click/auc']] == [(1795420860, 0.25),
                                                               (1795420860 + 60, 0.5)]
    assert [(s, a[0].tolist()) for s, a in tensors['click/pr_curve']] == [
        (1795420860, [6.0, 0.0]), (1795420860 + 60, [9.0, 9.0])]  # each window's own tp
    tensors, _ = load_tensors(os.path.join(logdir, 'Overall', 'step=2000'))
    assert [(s, float(a)) for s, a in tensors['click/auc']] == [(1795420860 + 60, 0.125)]
    assert 'click/pr_curve' not in tensors
    tensors, _ = load_tensors(os.path.join(logdir, 'country=US', 'step=1000'))
    assert [(s, float(a)) for s, a in tensors['click/auc']] == [(1795420860 + 120, 0.75)]
    # The same (window, step) twice is still an error naming the row.
    dup = metrics_table([('', '', 'click', 'auc', 0.5, 1000)] * 2, windows=[(w0, w1)] * 2)
    with pytest.raises(ValueError, match="metrics row 1: run 'Overall/step=1000' tag 'click/auc' "
                                         "step 1795420860 appears twice"):
        tb_writer.write_tensorboard(str(tmp_path / 'dup'), dup, conf.slice(0, 0))

    plain = metrics_table(rows[:1], stepped=False)
    logdir = str(tmp_path / 'p')
    tb_writer.write_tensorboard(logdir, plain, plots_table().slice(0, 0).drop(['step']))
    tensors, _ = load_tensors(os.path.join(logdir, 'Overall'))
    assert [(s, float(a)) for s, a in tensors['click/auc']] == [(0, 0.5)]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode('utf-8'))


def test_tensorboard_server_lists_runs_and_tags(tmp_path):
    logdir = str(tmp_path / 'tb')
    tb_writer.write_tensorboard(logdir, metrics_table(), plots_table())
    binary = os.path.join(os.path.dirname(sys.executable), 'tensorboard')
    port = free_port()
    log = open(tmp_path / 'tensorboard.log', 'wb')  # a file: a full pipe would block the server
    proc = subprocess.Popen([binary, '--logdir', logdir, '--host', '127.0.0.1', '--port',
                             str(port), '--reload_interval', '1'],
                            stdout=log, stderr=subprocess.STDOUT)
    base = 'http://127.0.0.1:%d' % port
    try:
        deadline = time.monotonic() + 90
        runs, tags = None, {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / 'tensorboard.log').read_text()[-2000:]
            try:
                runs = get_json(base + '/data/runs')
                tags = get_json(base + '/data/plugin/scalars/tags')
                if len(tags) == len(RUNS):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.5)
        assert sorted(runs) == sorted(RUNS.values())
        assert sorted(tags['Overall']) == ['click/accuracy/positive_threshold_0.5', 'click/auc',
                                           'click/loss', 'click_buy/loss']
        assert sorted(tags['path=a%2Fb%20c%2Cd%3De']) == ['click/loss']
        points = get_json(base + '/data/plugin/scalars/scalars?run=Overall&tag=click/auc')
        assert [(p[1], p[2]) for p in points] == [(100, 0.75), (200, 0.8125)]
        points = get_json(base + '/data/plugin/scalars/scalars?run=Overall&tag='
                          'click/accuracy/positive_threshold_0.5')
        assert [(p[1], p[2]) for p in points] == [(100, float(np.float32(0.1 + 0.2)))]
        pr_tags = get_json(base + '/data/plugin/pr_curves/tags')
        assert sorted(pr_tags['Overall']) == ['buy/pr_curve/class2', 'click/pr_curve']
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
    assert proc.poll() is not None


def test_writing_never_imports_tensorflow(tmp_path):
    # A fresh interpreter: in this one, other tests may already have imported TensorFlow.
    code = '\n'.join([
        'import sys',
        'sys.path.insert(0, %r)' % os.path.dirname(__file__),
        'import test_writer_tensorboard as t',
        'from pipeline.writers import tensorboard as tb',
        'assert len(tb.write_tensorboard(%r, t.metrics_table(), t.plots_table())) == 4'
        % str(tmp_path / 'tb'),
        'assert "tensorflow" not in sys.modules, "tensorflow was imported"',
    ])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / 'tb')) == sorted(RUNS.values())
