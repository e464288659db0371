"""Pipeline conformance: the Beam pipeline's metrics equal the TF face's on the same rows.

The oracle is the TF face (`head.loss` and one `update_metrics` call over a slice's rows,
concatenated, with the weight column), so these tests pin the pipeline to tf.estimator's
semantics: a metric over a slice is what the head reports when the whole slice is one batch.
Only the tests against the TF face and the TFMA loader need TensorFlow (marked `tf`); the others
hold the pipeline to the array face over the same rows, or compare runs with each other.

- Every head type (the six single heads in nine configurations: each label form, both loss
  reductions, weighted and unweighted) and their MultiHead with head_weights, on three Parquet
  shards with small row groups and two countries.
- Shard, row-group and bundle invariance: 1, 3 and 7 shards; row groups of 7 and 1000 rows;
  batches of 13 and 50 rows; one and three worker threads (1e-9 relative).
- The TFMA loader reads the run's tfma/ files and gives the same numbers.
- Every source format (Parquet, TFRecord of tf.Example, CSV with JSON list cells and with several
  numeric logits columns, JSONL) gives the same metrics on the same rows.
- Every bad-input case in both modes (Parquet; a few cases in each other format): 'fail' stops
  the run naming file, row and column and leaves no metrics/; 'dead_letter' writes the row to
  errors/ with a reason, counts it, and evaluates the other rows exactly as a clean run over them.
- A corrupt shard is an error naming the file; a run failing in a writer does not look complete.
- The CLI end to end in a subprocess (exit 0 and every output; a config error exits 2).
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import heads
from pipeline import sources
from pipeline.elements import BadRecordError
from pipeline.run import evaluate

RUNNER = ['--runner=DirectRunner']
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_ROWS = 240
COUNTRIES = ('US', 'JP')
TOPICS = ['news', 'sport', 'tech']
SLICES = [[], ['country']]
SLICE_NAMES = ['Overall'] + ['country:%s' % c for c in COUNTRIES]
# Several work items and batches per file even on a few hundred rows.
SMALL_TARGET_ROWS = 50

# One config entry per head: the six head types, each label form (numbers, vocabulary strings,
# class ids, multi-hot and id lists), both loss reductions, weighted and unweighted.
SPECS = {
    'click': {'type': 'BinaryClassHead',
              'args': {'name': 'click', 'weight_column': 'w', 'thresholds': [0.3, 0.7]},
              'logits': 'bx', 'labels': 'by'},
    'clickv': {'type': 'BinaryClassHead',
               'args': {'name': 'clickv', 'weight_column': 'w', 'label_vocabulary': ['no', 'yes']},
               'logits': 'bx', 'labels': 'bv'},
    'topic': {'type': 'MultiClassHead',
              'args': {'name': 'topic', 'n_classes': 3, 'weight_column': 'w',
                       'label_vocabulary': TOPICS},
              'logits': 'mc_logits', 'labels': 'mc_label'},
    'topicid': {'type': 'MultiClassHead',
                'args': {'name': 'topicid', 'n_classes': 3, 'weight_column': 'w'},
                'logits': 'mc_logits', 'labels': 'mc_id'},
    'tags': {'type': 'MultiLabelHead',
             'args': {'name': 'tags', 'n_classes': 3, 'weight_column': 'w', 'thresholds': [0.5],
                      'classes_for_class_based_metrics': [0, 2]},
             'logits': 'ml_logits', 'labels': 'ml_hot'},
    'tagids': {'type': 'MultiLabelHead',
               'args': {'name': 'tagids', 'n_classes': 3, 'weight_column': 'w'},
               'logits': 'ml_logits', 'labels': 'ml_ids', 'label_format': 'ids'},
    'watch': {'type': 'RegressionHead',
              'args': {'name': 'watch', 'label_dimension': 2, 'weight_column': 'w'},
              'logits': 'rg_logits', 'labels': 'rg_label'},
    'ctr': {'type': 'LogisticRegressionHead',
            'args': {'name': 'ctr', 'weight_column': 'w', 'loss_reduction': 'sum'},
            'logits': 'lr_x', 'labels': 'lr_y'},
    # Unweighted, among weighted heads.
    'visits': {'type': 'PoissonRegressionHead', 'args': {'name': 'visits'},
               'logits': 'ps_x', 'labels': 'ps_y'},
}
HEAD_NAMES = list(SPECS)
HEAD_WEIGHTS = [1.0, 0.6, 0.5, 1.25, 2.0, 0.25, 1.5, 3.0, 0.75]
MULTI_NAME = '_'.join(HEAD_NAMES)


# -------------------------------------------------------------------------------------------------
# Data.
# -------------------------------------------------------------------------------------------------

def _columns(n: int = N_ROWS, seed: int = 20261123) -> dict[str, list]:
    """Every head's logits and labels, as Python lists (one entry per row)."""
    rng = np.random.default_rng(seed)
    bx = rng.normal(0.0, 2.0, n).astype(np.float32)
    mc = rng.normal(0.0, 1.5, (n, 3)).astype(np.float32)
    ml = rng.normal(-0.3, 1.5, (n, 3)).astype(np.float32)
    hot = (rng.random((n, 3)) < 1.0 / (1.0 + np.exp(-ml))).astype(np.int64)
    rg = rng.normal(2.0, 1.0, (n, 2)).astype(np.float32)
    lr = rng.normal(0.0, 1.0, n).astype(np.float32)
    ps = rng.normal(0.5, 0.5, n).astype(np.float32)
    topic = np.argmax(mc + rng.gumbel(size=(n, 3)), axis=1)
    by = (rng.random(n) < 1.0 / (1.0 + np.exp(-bx))).astype(np.int64)
    return {
        'country': [COUNTRIES[i] for i in rng.integers(0, 2, n)],
        'w': rng.uniform(0.5, 1.5, n).astype(np.float32).tolist(),
        'bx': bx.tolist(),
        'by': by.tolist(),
        'bv': [('no', 'yes')[i] for i in by],
        'mc_logits': mc.tolist(),
        'mc_label': [TOPICS[i] for i in topic],
        'mc_id': topic.astype(np.int64).tolist(),
        'ml_logits': ml.tolist(),
        'ml_hot': hot.tolist(),
        'ml_ids': [np.flatnonzero(row).tolist() for row in hot],
        'rg_logits': rg.tolist(),
        'rg_label': (rg + rng.normal(0.0, 1.0, (n, 2))).astype(np.float32).tolist(),
        'lr_x': lr.tolist(),
        'lr_y': rng.random(n).astype(np.float32).tolist(),
        'ps_x': ps.tolist(),
        'ps_y': rng.poisson(np.exp(ps)).astype(np.float32).tolist(),
    }


ARROW_TYPES = {
    'country': pa.string(), 'w': pa.float32(), 'bx': pa.float32(), 'by': pa.int64(),
    'bv': pa.string(),
    'mc_logits': pa.list_(pa.float32()), 'mc_label': pa.string(), 'mc_id': pa.int64(),
    'ml_logits': pa.list_(pa.float32()), 'ml_hot': pa.list_(pa.int64()),
    'ml_ids': pa.list_(pa.int64()), 'rg_logits': pa.list_(pa.float32()),
    'rg_label': pa.list_(pa.float32()), 'lr_x': pa.float32(), 'lr_y': pa.float32(),
    'ps_x': pa.float32(), 'ps_y': pa.float32(),
}


def _table(cols: dict[str, list]) -> pa.Table:
    return pa.table({k: pa.array(v, ARROW_TYPES[k]) for k, v in cols.items()})


def _write_parquet(table: pa.Table, directory, shards: int, row_group_size: int) -> str:
    os.makedirs(str(directory), exist_ok=True)
    bounds = np.linspace(0, table.num_rows, shards + 1).astype(int)
    for i in range(shards):
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]),
                       os.path.join(str(directory), 'part-%03d.parquet' % i),
                       row_group_size=row_group_size)
    return os.path.join(str(directory), 'part-*.parquet')


def _config(pattern: str, output, names=HEAD_NAMES, head_weights=HEAD_WEIGHTS, **extra) -> dict:
    raw = {'input': {'pattern': pattern}, 'heads': [SPECS[n] for n in names],
           'slices': SLICES, 'output': str(output)}
    if head_weights:
        raw['head_weights'] = list(head_weights)
    raw.update(extra)
    return raw


def _run(raw: dict, **kwargs) -> dict:
    """evaluate() with small work items, so every file is read as several batches."""
    old = sources.TARGET_ROWS
    sources.TARGET_ROWS = SMALL_TARGET_ROWS
    try:
        return evaluate(raw, RUNNER, **kwargs)
    finally:
        sources.TARGET_ROWS = old


def _rows(output) -> dict:
    """metrics/ as {(slice, head, metric): row}, checking each key appears once."""
    table = pq.read_table(os.path.join(str(output), 'metrics'))
    rows = {(r['slice'], r['head'], r['metric']): r for r in table.to_pylist()}
    assert len(rows) == table.num_rows, 'a (slice, head, metric) appears more than once'
    return rows


def _masks(cols: dict[str, list]) -> dict[str, np.ndarray]:
    country = np.asarray(cols['country'])
    masks = {'Overall': np.ones(len(country), bool)}
    masks.update({'country:%s' % c: country == c for c in COUNTRIES})
    return masks


# -------------------------------------------------------------------------------------------------
# The oracles: the TF face (and, without TensorFlow, the array face) over a slice's rows as one
# batch.
# -------------------------------------------------------------------------------------------------

def _array_inputs(name: str, cols: dict[str, list], idx: np.ndarray):
    """(labels, logits) for one head as numpy arrays (id lists as a list of per-row lists)."""

    def take(col, dtype):
        return np.asarray([cols[col][i] for i in idx], dtype)

    if name == 'click':
        return take('by', np.int64).reshape(-1, 1), take('bx', np.float32).reshape(-1, 1)
    if name == 'clickv':
        return take('bv', object).reshape(-1, 1), take('bx', np.float32).reshape(-1, 1)
    if name == 'topic':
        return take('mc_label', object).reshape(-1, 1), take('mc_logits', np.float32)
    if name == 'topicid':
        return take('mc_id', np.int64).reshape(-1, 1), take('mc_logits', np.float32)
    if name == 'tags':
        return take('ml_hot', np.int64), take('ml_logits', np.float32)
    if name == 'tagids':
        return [cols['ml_ids'][i] for i in idx], take('ml_logits', np.float32)
    if name == 'watch':
        return take('rg_label', np.float32), take('rg_logits', np.float32)
    if name == 'ctr':
        return take('lr_y', np.float32).reshape(-1, 1), take('lr_x', np.float32).reshape(-1, 1)
    if name == 'visits':
        return take('ps_y', np.float32).reshape(-1, 1), take('ps_x', np.float32).reshape(-1, 1)
    raise KeyError(name)


def _tf_inputs(name: str, cols: dict[str, list], idx: np.ndarray):
    """(labels, logits) for one head, as tf.estimator takes them (id lists as a SparseTensor)."""
    labels, logits = _array_inputs(name, cols, idx)
    if name == 'tagids':
        import tensorflow as tf
        labels = tf.ragged.constant(labels, dtype=tf.int64, ragged_rank=1).to_sparse()
    return labels, logits


def _features(cols: dict[str, list], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {'w': np.asarray([cols['w'][i] for i in idx], np.float32).reshape(-1, 1)}


def _build(name: str):
    spec = SPECS[name]
    return getattr(heads, spec['type'])(**spec['args'])


def _array_expected(name: str, cols: dict[str, list], idx: np.ndarray) -> dict[str, float]:
    """{metric (without '/name'): value} of one head state updated once, plus `loss`."""
    labels, logits = _array_inputs(name, cols, idx)
    state = _build(name).new_state().update(labels, logits, _features(cols, idx))
    suffix = '/' + name
    out = {}
    for key, value in state.result().items():
        assert key.endswith(suffix), key
        out[key[:-len(suffix)]] = value
    out['loss'] = state.loss()
    return out


def _tf_expected(name: str, cols: dict[str, list], idx: np.ndarray) -> dict[str, float]:
    """{metric (without '/name'): value} from one update_metrics call, plus `loss`."""
    head = _build(name)
    labels, logits = _tf_inputs(name, cols, idx)
    features = _features(cols, idx)
    metrics = head.update_metrics(head.metrics(), features, logits, labels)
    suffix = '/' + name
    out = {}
    for key, metric in metrics.items():
        assert key.endswith(suffix), key
        out[key[:-len(suffix)]] = float(metric.result())
    out['loss'] = float(head.loss(labels, logits, features))
    return out


def _assert_head_rows(rows: dict, slice_name: str, head: str, expected: dict, rtol: float,
                      count: int | None = None) -> None:
    got = {k[2]: r for k, r in rows.items() if k[:2] == (slice_name, head)}
    assert sorted(got) == sorted(expected), (slice_name, head)
    for metric, value in expected.items():
        np.testing.assert_allclose(got[metric]['value'], value, rtol=rtol, atol=1e-7,
                                   err_msg='%s %s %s' % (slice_name, head, metric))
    if count is not None:
        assert got['loss']['example_count'] == count, (slice_name, head)


# -------------------------------------------------------------------------------------------------
# Every head type against the TF face; the MultiHead; the TFMA loader.
# -------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def data():
    return _columns()


@pytest.fixture(scope='module')
def main_run(data, tmp_path_factory):
    """All nine heads with head_weights, 3 shards, row groups of 7 rows."""
    root = tmp_path_factory.mktemp('main')
    pattern = _write_parquet(_table(data), root / 'in', 3, 7)
    summary = _run(_config(pattern, root / 'out'))
    return summary, root / 'out'


@pytest.mark.tf  # the TF face is the oracle
@pytest.mark.parametrize('name', HEAD_NAMES)
def test_each_head_equals_the_tf_face_per_slice(name, data, main_run):
    summary, out = main_run
    assert (summary['rows_read'], summary['bad_rows']) == (N_ROWS, 0)
    rows = _rows(out)
    for slice_name, mask in _masks(data).items():
        idx = np.flatnonzero(mask)
        expected = _tf_expected(name, data, idx)
        _assert_head_rows(rows, slice_name, name, expected, rtol=1e-5, count=idx.size)


@pytest.mark.parametrize('name', HEAD_NAMES)
def test_each_head_equals_its_array_face_on_the_whole_slice(name, data, main_run):
    """The same check without TensorFlow: the array face over the slice's rows as one batch (which
    tests/test_faces_agree.py holds to the TF face)."""
    _, out = main_run
    rows = _rows(out)
    for slice_name, mask in _masks(data).items():
        idx = np.flatnonzero(mask)
        _assert_head_rows(rows, slice_name, name, _array_expected(name, data, idx), rtol=1e-9,
                          count=idx.size)


def test_multi_head_loss_equals_the_array_multi_head(data, main_run):
    _, out = main_run
    rows = _rows(out)
    multi = heads.MultiHead([_build(n) for n in HEAD_NAMES], head_weights=HEAD_WEIGHTS)
    for slice_name, mask in _masks(data).items():
        idx = np.flatnonzero(mask)
        logits, labels = {}, {}
        for n in HEAD_NAMES:
            labels[n], logits[n] = _array_inputs(n, data, idx)
        state = multi.new_state().update(labels, logits, _features(data, idx))
        assert [k for k in rows if k[:2] == (slice_name, MULTI_NAME)] == [
            (slice_name, MULTI_NAME, 'loss')]
        np.testing.assert_allclose(rows[(slice_name, MULTI_NAME, 'loss')]['value'], state.loss(),
                                   rtol=1e-9)


@pytest.mark.tf  # the TF face is the oracle
def test_multi_head_equals_the_tf_multi_head(data, main_run):
    _, out = main_run
    rows = _rows(out)
    multi = heads.MultiHead([_build(n) for n in HEAD_NAMES], head_weights=HEAD_WEIGHTS)
    assert multi.name == MULTI_NAME
    for slice_name, mask in _masks(data).items():
        idx = np.flatnonzero(mask)
        logits, labels = {}, {}
        for n in HEAD_NAMES:
            labels[n], logits[n] = _tf_inputs(n, data, idx)
        features = _features(data, idx)
        # One update over the whole slice, so tf.estimator's per-batch quirk does not arise.
        metrics = multi.update_metrics(multi.metrics(), features, logits, labels)
        checked = 0
        for key, metric in metrics.items():
            head = key.rsplit('/', 1)[-1]
            assert head in SPECS, key
            got = rows[(slice_name, head, key[:-len(head) - 1])]['value']
            np.testing.assert_allclose(got, float(metric.result()), rtol=1e-5, atol=1e-7,
                                       err_msg='%s %s' % (slice_name, key))
            checked += 1
        # Every per-head row is one of the MultiHead's keys (its 'loss/<head>' is the head's loss).
        assert checked == sum(1 for k in rows if k[0] == slice_name and k[1] in SPECS), (
            slice_name)
        # The MultiHead's loss: Σ head_weight · head loss, under the joined name, and nothing else.
        expected = float(multi.loss(labels, logits, features))
        assert [k for k in rows if k[:2] == (slice_name, MULTI_NAME)] == [
            (slice_name, MULTI_NAME, 'loss')]
        np.testing.assert_allclose(rows[(slice_name, MULTI_NAME, 'loss')]['value'], expected,
                                   rtol=1e-5)
        assert rows[(slice_name, MULTI_NAME, 'loss')]['example_count'] == idx.size


def _tfma_value(entry: dict) -> float:
    if 'boundedValue' in entry:
        return entry['boundedValue']['value']
    return entry['doubleValue']


@pytest.mark.tf  # TFMA's loader imports TensorFlow
def test_tfma_loader_gives_the_same_numbers(main_run):
    import tensorflow_model_analysis as tfma
    _, out = main_run
    rows = _rows(out)
    result = tfma.load_eval_result(os.path.join(str(out), 'tfma'))
    loaded = dict(result.slicing_metrics)
    slice_keys = {'Overall': ()}
    slice_keys.update({'country:%s' % c: (('country', c),) for c in COUNTRIES})
    assert sorted(loaded, key=repr) == sorted(slice_keys.values(), key=repr)
    for (slice_name, head, metric), row in rows.items():
        by_sub = loaded[slice_keys[slice_name]][head]
        per_class = re.fullmatch(r'(.*)/class(\d+)', metric)
        if per_class and metric not in by_sub.get('', {}):
            entry = by_sub['classId:%s' % per_class.group(2)][per_class.group(1)]
        else:
            entry = by_sub[''][metric]
        assert _tfma_value(entry) == pytest.approx(row['value'], rel=1e-9, abs=1e-12), (
            slice_name, head, metric)
        if metric == 'loss':
            assert by_sub['']['example_count'] == {'doubleValue': row['example_count']}, (
                slice_name, head)
    # The plots load too: the binary head's curves for every slice.
    plots = dict(result.plots)
    assert sorted(plots, key=repr) == sorted(slice_keys.values(), key=repr)
    for key in slice_keys.values():
        assert plots[key]['click']['']['confusionMatrixAtThresholds']['matrices'], key


# -------------------------------------------------------------------------------------------------
# Shard count and row-group size do not change any number.
# -------------------------------------------------------------------------------------------------

def _assert_same_rows(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        for col in ('value', 'lower_bound', 'upper_bound', 'example_count',
                    'weighted_example_count'):
            x, y = a[key][col], b[key][col]
            assert (x is None) == (y is None), (what, key, col)
            if x is not None:
                assert x == pytest.approx(y, rel=1e-9, abs=1e-12), (what, key, col)


@pytest.mark.parametrize('shards,row_group_size,target_rows,args', [
    (1, 1000, SMALL_TARGET_ROWS, []),
    (7, 7, SMALL_TARGET_ROWS, []),
    (3, 1000, SMALL_TARGET_ROWS, []),
    # Batches of 13 rows spread over three worker threads: other bundles, another merge order.
    (7, 7, 13, ['--direct_num_workers=3', '--direct_running_mode=multi_threading']),
], ids=['1-shard', '7-shards-rg7', '3-shards-rg1000', '7-shards-3-threads-batches-13'])
def test_results_do_not_depend_on_shards_or_row_groups(shards, row_group_size, target_rows, args,
                                                       data, main_run, tmp_path):
    pattern = _write_parquet(_table(data), tmp_path / 'in', shards, row_group_size)
    old = sources.TARGET_ROWS
    sources.TARGET_ROWS = target_rows
    try:
        summary = evaluate(_config(pattern, tmp_path / 'out'), RUNNER + args)
    finally:
        sources.TARGET_ROWS = old
    assert summary['input']['files'] == shards
    _assert_same_rows(_rows(tmp_path / 'out'), _rows(main_run[1]),
                      '%d shards, row groups of %d' % (shards, row_group_size))


# -------------------------------------------------------------------------------------------------
# Every source format gives the same metrics on the same rows.
# -------------------------------------------------------------------------------------------------

FORMAT_SPLIT = (0, 100, N_ROWS)   # two files of unequal length


def _parts(cols: dict[str, list]) -> list[tuple[int, int]]:
    """The row ranges of the two files: the first 100 rows, then the rest."""
    n = len(cols['w'])
    return [(0, FORMAT_SPLIT[1]), (FORMAT_SPLIT[1], n)]


def _write_tfrecord(cols: dict[str, list], directory) -> str:
    """tf.Example records: every feature a list (scalars as lists of one, strings as bytes)."""
    from apache_beam.io.tfrecordio import _TFRecordUtil
    from tfx_bsl.coders import example_coder

    def feature(name: str, values: list) -> pa.Array:
        t = ARROW_TYPES[name]
        if pa.types.is_string(t):
            return pa.array([[v.encode()] for v in values], pa.large_list(pa.large_binary()))
        if pa.types.is_list(t):
            return pa.array(values, pa.large_list(t.value_type))
        # None: the feature is missing from that example; a list: several values.
        return pa.array([v if v is None or isinstance(v, list) else [v] for v in values],
                        pa.large_list(t))

    batch = pa.record_batch({k: feature(k, v) for k, v in cols.items()})
    os.makedirs(str(directory))
    encoder = example_coder.RecordBatchToExamplesEncoder()
    for part, (lo, hi) in enumerate(_parts(cols)):
        with open(os.path.join(str(directory), 'part-%d.tfrecord' % part), 'wb') as f:
            for record in encoder.encode(batch.slice(lo, hi - lo)):
                _TFRecordUtil.write_record(f, record)
    return os.path.join(str(directory), 'part-*.tfrecord')


def _write_csv(cols: dict[str, list], directory) -> str:
    """List cells as JSON lists; the MultiClassHead's logits as three numeric columns."""
    names = [k for k in cols if k != 'mc_logits'] + ['mc0', 'mc1', 'mc2']
    os.makedirs(str(directory))
    for part, (lo, hi) in enumerate(_parts(cols)):
        with open(os.path.join(str(directory), 'part-%d.csv' % part), 'w', newline='') as f:
            out = csv.writer(f)
            out.writerow(names)
            for i in range(lo, hi):
                row = []
                for k in names:
                    v = cols['mc_logits'][i][int(k[2])] if k.startswith('mc') and k[2:].isdigit() \
                        else cols[k][i]
                    # repr of a float32 value's float64 is exact; lists as JSON.
                    row.append(json.dumps(v) if isinstance(v, list) else
                               repr(v) if isinstance(v, float) else v)
                out.writerow(row)
    return os.path.join(str(directory), 'part-*.csv')


def _write_jsonl(cols: dict[str, list], directory) -> str:
    os.makedirs(str(directory))
    for part, (lo, hi) in enumerate(_parts(cols)):
        with open(os.path.join(str(directory), 'part-%d.jsonl' % part), 'w') as f:
            for i in range(lo, hi):
                f.write(json.dumps({k: v[i] for k, v in cols.items()}) + '\n')
    return os.path.join(str(directory), 'part-*.jsonl')


WRITERS = {'tfrecord': _write_tfrecord, 'csv': _write_csv, 'jsonl': _write_jsonl}


def _format_config(fmt: str, names: list[str], pattern: str, output) -> dict:
    """The config for `names` over a `fmt` input (in CSV, the topic logits as three columns)."""
    all_heads = list(names) == HEAD_NAMES
    raw = _config(pattern, output, names=names, head_weights=HEAD_WEIGHTS if all_heads else None)
    if fmt == 'csv':
        raw['heads'] = [dict(s, logits=['mc0', 'mc1', 'mc2']) if s['logits'] == 'mc_logits'
                        else s for s in raw['heads']]
    return raw



@pytest.mark.parametrize('fmt,names', [
    ('tfrecord', HEAD_NAMES),
    ('jsonl', HEAD_NAMES),
    ('csv', HEAD_NAMES),
])
def test_every_format_gives_the_parquet_numbers(fmt, names, data, main_run, tmp_path):
    pattern = WRITERS[fmt](data, tmp_path / 'in')
    all_heads = list(names) == HEAD_NAMES
    summary = _run(_format_config(fmt, names, pattern, tmp_path / 'out'))
    assert (summary['input']['format'], summary['input']['files']) == (fmt, 2)
    assert (summary['rows_read'], summary['bad_rows']) == (N_ROWS, 0)
    # Per-head rows do not depend on which other heads run (no row is rejected here); a subset
    # of heads has a MultiHead of its own, so only the heads' rows are compared then.
    keep = set(names) | ({MULTI_NAME} if all_heads else set())
    got = {k: r for k, r in _rows(tmp_path / 'out').items() if k[1] in keep}
    expected = {k: r for k, r in _rows(main_run[1]).items() if k[1] in keep}
    _assert_same_rows(got, expected, fmt)


# -------------------------------------------------------------------------------------------------
# Bad input, in both modes.
# -------------------------------------------------------------------------------------------------

def _set(column: str, value):
    def mutate(cols: dict[str, list], row: int) -> None:
        cols[column][row] = value
    return mutate


# (id, the column the error names, how the row is spoiled)
BAD_CASES = [
    ('nan-logit', 'bx', _set('bx', float('nan'))),
    ('inf-logit', 'lr_x', _set('lr_x', float('inf'))),
    ('binary-label-2', 'by', _set('by', 2)),
    ('unknown-vocabulary-string', 'mc_label', _set('mc_label', 'weather')),
    ('unknown-binary-vocabulary-string', 'bv', _set('bv', 'maybe')),
    ('class-id-not-below-n-classes', 'mc_id', _set('mc_id', 3)),
    ('negative-class-id', 'mc_id', _set('mc_id', -1)),
    ('label-id-not-below-n-classes', 'ml_ids', _set('ml_ids', [0, 3])),
    ('multi-hot-value-2', 'ml_hot', _set('ml_hot', [0, 2, 1])),
    ('negative-poisson-label', 'ps_y', _set('ps_y', -1.0)),
    ('wrong-logits-width', 'mc_logits', _set('mc_logits', [0.25, -0.5])),
    ('null-cell', 'w', _set('w', None)),
    ('null-in-list', 'rg_label', _set('rg_label', [1.0, None])),
]
BAD_IDS = [c[0] for c in BAD_CASES]
# Where each case's row goes in the dead-letter run: both files, first and last rows included.
DEAD_ROWS = [0, 37, 80, 119, 120, 161, 200, 239, 15, 140, 222, 60, 181]
HALF = N_ROWS // 2


def _spoiled(case_ids: list[str], rows: list[int]) -> dict[str, list]:
    cols = {k: list(v) for k, v in _columns().items()}
    for case_id, row in zip(case_ids, rows):
        BAD_CASES[BAD_IDS.index(case_id)][2](cols, row)
    return cols


@pytest.mark.parametrize('case_id', BAD_IDS)
def test_fail_mode_names_file_row_and_column_and_writes_no_metrics(case_id, tmp_path):
    column = BAD_CASES[BAD_IDS.index(case_id)][1]
    row = HALF + 100                    # row 100 of the second file (a later work item)
    pattern = _write_parquet(_table(_spoiled([case_id], [row])), tmp_path / 'in', 2, 7)
    with pytest.raises(BadRecordError) as info:
        _run(_config(pattern, tmp_path / 'out'))
    message = str(info.value)
    assert '\n' not in message.strip(), message
    assert re.search(r'file \S*part-001\.parquet, row 100, column %s: \S' % re.escape(column),
                     message), message
    assert not os.path.exists(str(tmp_path / 'out' / 'metrics'))
    assert not os.path.exists(str(tmp_path / 'out' / 'summary.json'))


@pytest.fixture(scope='module')
def dead_letter_runs(tmp_path_factory):
    """Every bad case once (a run with --bad_records=dead_letter), and a clean run without them."""
    root = tmp_path_factory.mktemp('dead')
    cols = _spoiled(BAD_IDS, DEAD_ROWS)
    pattern = _write_parquet(_table(cols), root / 'in', 2, 7)
    summary = _run(_config(pattern, root / 'out'), bad_records='dead_letter')
    keep = np.setdiff1d(np.arange(N_ROWS), DEAD_ROWS)
    clean = {k: [v[i] for i in keep] for k, v in _columns().items()}
    _run(_config(_write_parquet(_table(clean), root / 'clean_in', 2, 7), root / 'clean_out'))
    errors = pq.read_table(os.path.join(str(root / 'out'), 'errors')).to_pylist()
    return summary, errors, _rows(root / 'out'), _rows(root / 'clean_out')


@pytest.mark.parametrize('case_id', BAD_IDS)
def test_dead_letter_mode_writes_the_row_with_its_reason(case_id, dead_letter_runs):
    _, errors, _, _ = dead_letter_runs
    i = BAD_IDS.index(case_id)
    column, row = BAD_CASES[i][1], DEAD_ROWS[i]
    part, local = divmod(row, HALF)
    got = [e for e in errors
           if os.path.basename(e['file']) == 'part-%03d.parquet' % part and e['row'] == local]
    assert len(got) == 1, (case_id, errors)
    assert got[0]['column'] == column, got[0]
    assert got[0]['reason'].strip(), got[0]
    assert column in json.loads(got[0]['values']), got[0]


def test_dead_letter_mode_counts_and_evaluates_the_other_rows(dead_letter_runs):
    summary, errors, rows, clean = dead_letter_runs
    assert len(errors) == len(BAD_CASES)
    assert (summary['rows_read'], summary['bad_rows'], summary['rows_evaluated']) == (
        N_ROWS, len(BAD_CASES), N_ROWS - len(BAD_CASES))
    _assert_same_rows(rows, clean, 'dead-lettered vs clean')
    for name in HEAD_NAMES + [MULTI_NAME]:
        assert rows[('Overall', name, 'loss')]['example_count'] == N_ROWS - len(BAD_CASES)


# Bad cells of the other formats: (column, value) per case, at TEXT_ROWS of the two files
# (FORMAT_SPLIT), i.e. rows 10 and 99 of part-0 and rows 0 and 130 of part-1.
TEXT_BAD = {
    'tfrecord': [('bx', None), ('by', 2), ('w', [1.0, 2.0]), ('mc_label', 'weather')],
    'csv': [('bx', None), ('ml_logits', '[0.5, oops'), ('by', 2), ('ml_logits', [0.5])],
    'jsonl': [('bx', None), ('by', 2), ('rg_logits', [1.0]), ('ml_ids', [0, 3])],
}
TEXT_ROWS = [10, 99, 100, 230]
TEXT_NAMES = {'csv': [n for n in HEAD_NAMES if n != 'watch'], 'jsonl': HEAD_NAMES,
              'tfrecord': HEAD_NAMES}


def _text_file_row(row: int) -> tuple[str, int]:
    part = 0 if row < FORMAT_SPLIT[1] else 1
    return 'part-%d' % part, row - FORMAT_SPLIT[part]


@pytest.mark.parametrize('fmt', ['tfrecord', 'csv', 'jsonl'])
def test_other_formats_fail_mode_names_file_row_and_column(fmt, tmp_path):
    cols = _columns()
    cols['bx'][150] = None
    pattern = WRITERS[fmt](cols, tmp_path / 'in')
    with pytest.raises(BadRecordError) as info:
        _run(_format_config(fmt, TEXT_NAMES[fmt], pattern, tmp_path / 'out'))
    assert re.search(r'file \S*part-1\.%s, row 50, column bx: \S' % fmt, str(info.value)), (
        str(info.value))
    assert not os.path.exists(str(tmp_path / 'out' / 'metrics'))


@pytest.mark.parametrize('fmt', ['tfrecord', 'csv', 'jsonl'])
def test_other_formats_dead_letter_mode(fmt, tmp_path):
    cols = _columns()
    for (column, value), row in zip(TEXT_BAD[fmt], TEXT_ROWS):
        cols[column][row] = value
    names = TEXT_NAMES[fmt]
    summary = _run(_format_config(fmt, names, WRITERS[fmt](cols, tmp_path / 'in'),
                                  tmp_path / 'out'), bad_records='dead_letter')
    errors = pq.read_table(str(tmp_path / 'out' / 'errors')).to_pylist()
    got = sorted((os.path.basename(e['file']), e['row'], e['column']) for e in errors)
    expected = sorted(('%s.%s' % (_text_file_row(row)[0], fmt), _text_file_row(row)[1], column)
                      for (column, _), row in zip(TEXT_BAD[fmt], TEXT_ROWS))
    assert got == expected
    assert all(e['reason'].strip() for e in errors), errors
    assert (summary['rows_read'], summary['bad_rows']) == (N_ROWS, len(TEXT_ROWS))
    keep = np.setdiff1d(np.arange(N_ROWS), TEXT_ROWS)
    clean = {k: [v[i] for i in keep] for k, v in _columns().items()}
    _run(_format_config(fmt, names, WRITERS[fmt](clean, tmp_path / 'clean_in'),
                        tmp_path / 'clean_out'))
    _assert_same_rows(_rows(tmp_path / 'out'), _rows(tmp_path / 'clean_out'), fmt)


# -------------------------------------------------------------------------------------------------
# A corrupt shard is an error naming the file.
# -------------------------------------------------------------------------------------------------

def _garbage(path: str) -> None:
    with open(path, 'wb') as f:
        f.write(b'this is not a parquet file\n' * 40)


def _damage_pages(path: str) -> None:
    """Overwrites the data pages between the header magic and the middle of the file; the footer
    stays valid, so the file plans fine and fails only when its rows are read."""
    with open(path, 'rb') as f:
        raw = bytearray(f.read())
    raw[200:len(raw) // 2] = b'\xab' * (len(raw) // 2 - 200)
    with open(path, 'wb') as f:
        f.write(bytes(raw))


@pytest.mark.parametrize('shard,spoil', [
    pytest.param('part-000.parquet', _garbage, id='garbage-first'),
    pytest.param('part-001.parquet', _garbage, id='garbage-later'),
    pytest.param('part-001.parquet', _damage_pages, id='damaged-pages'),
])
def test_a_corrupt_shard_is_an_error_naming_the_file(shard, spoil, data, tmp_path):
    pattern = _write_parquet(_table(data), tmp_path / 'in', 3, 50)
    bad = str(tmp_path / 'in' / shard)
    spoil(bad)
    with pytest.raises(Exception) as info:
        _run(_config(pattern, tmp_path / 'out'))
    assert bad in str(info.value), str(info.value)[-2000:]
    assert 'cannot read parquet file' in str(info.value)
    assert not os.path.exists(str(tmp_path / 'out' / 'metrics'))


# -------------------------------------------------------------------------------------------------
# The command line end to end (a subprocess, as a user runs it).
# -------------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'pipeline', 'evaluate', *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_cli_end_to_end_writes_every_output(data, main_run, tmp_path):
    pattern = _write_parquet(_table(data), tmp_path / 'in', 3, 7)
    config = tmp_path / 'eval.yaml'
    # `output` in the file is overridden by --output; JSON is YAML.
    config.write_text(json.dumps(_config(pattern, tmp_path / 'ignored')))
    out = tmp_path / 'out'
    done = _cli('--config', str(config), '--output', str(out), '--bad_records', 'dead_letter',
                '--run_id=cli-run', *RUNNER)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'headstream: run cli-run: %d rows read, 0 bad' % N_ROWS in done.stdout, done.stdout
    for name in ('metrics/metrics.parquet', 'plots/plots.parquet', 'errors/errors.parquet',
                 'summary.json', 'report.html', 'tfma/eval_config.json'):
        assert os.path.isfile(str(out / name)), name
    assert not os.path.exists(str(tmp_path / 'ignored'))
    assert pq.read_table(str(out / 'errors')).num_rows == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert (summary['run_id'], summary['rows_read'], summary['bad_rows']) == ('cli-run', N_ROWS, 0)
    rows = _rows(out)
    assert {r['run_id'] for r in rows.values()} == {'cli-run'}
    # The same numbers as the in-process run (so the TF face's, checked above).
    _assert_same_rows(rows, _rows(main_run[1]), 'cli')


CONFIG_ERRORS = {
    'unknown-key': (lambda raw: raw.update(slicez=[[]]), 'slicez'),
    'missing-column': (lambda raw: raw['heads'][0].update(labels='no_such_column'),
                       'no_such_column'),
    'bad-head-args': (lambda raw: raw['heads'][1]['args'].update(n_classes=4), 'n_classes'),
    'bad-head-weights': (lambda raw: raw.update(head_weights=[1.0, 2.0]), 'head_weights'),
}


def test_cli_config_error_exits_2_naming_the_key(data, tmp_path):
    """One config error through a real process; the others in-process (test below)."""
    pattern = _write_parquet(_table(data), tmp_path / 'in', 1, 1000)
    raw = _config(pattern, tmp_path / 'out')
    spoil, named = CONFIG_ERRORS['unknown-key']
    spoil(raw)
    done = _cli('--config', json.dumps(raw), *RUNNER)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [ln for ln in done.stderr.splitlines() if 'config error' in ln]
    assert len(errors) == 1 and named in errors[0], done.stderr[-3000:]
    assert not os.path.exists(str(tmp_path / 'out'))


@pytest.mark.parametrize('case', [c for c in CONFIG_ERRORS if c != 'unknown-key'])
def test_config_errors_exit_2_naming_the_key(case, data, tmp_path, capsys):
    from pipeline import cli
    pattern = _write_parquet(_table(data), tmp_path / 'in', 1, 1000)
    raw = json.loads(json.dumps(_config(pattern, tmp_path / 'out')))
    spoil, named = CONFIG_ERRORS[case]
    spoil(raw)
    assert cli.main(['evaluate', '--config', json.dumps(raw)] + RUNNER) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if 'config error' in ln]
    assert len(errors) == 1 and named in errors[0], errors
    assert not os.path.exists(str(tmp_path / 'out'))


# -------------------------------------------------------------------------------------------------
# A run that fails while writing its outputs does not look complete.
# -------------------------------------------------------------------------------------------------

def test_a_run_failing_in_a_writer_leaves_no_complete_looking_output(data, tmp_path,
                                                                      monkeypatch):
    from pipeline.writers import tfma as tfma_writer

    def full_disk(*args, **kwargs):
        raise OSError('no space left on device')

    # The DirectRunner runs the writer in this process, so the replaced function is the one used.
    monkeypatch.setattr(tfma_writer, 'write_tfma', full_disk)
    pattern = _write_parquet(_table(data), tmp_path / 'in', 2, 50)
    with pytest.raises(Exception, match='no space left on device'):
        _run(_config(pattern, tmp_path / 'out'))
    out = tmp_path / 'out'
    assert not (os.path.exists(str(out / 'metrics')) and os.path.exists(str(out / 'summary.json')))
