"""The pipeline evaluates with TensorFlow unimportable, as on a worker without it installed.

A fresh interpreter blocks `import tensorflow` (tests/_no_tensorflow.py: a finder first on
sys.meta_path, so the import fails as if TensorFlow were not installed), then runs `headstream
evaluate` over every head type in a MultiHead with head_weights, a slice, windows, a step column,
TensorBoard and TFMA output and the report. The run must succeed and give the array face's numbers
(computed here, without TensorFlow either). The whole TF-free part of the suite can be run the
same way: `HEADSTREAM_WITHOUT_TENSORFLOW=1 python -m pytest -m "not tf"` (tests/conftest.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import heads

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

_RUN = r'''
import json, sys
sys.path.insert(0, {tests!r})
import _no_tensorflow
_no_tensorflow.block()
try:
    import tensorflow
except ModuleNotFoundError:
    blocked = True
else:
    blocked = False
from pipeline import cli
code = cli.main(['evaluate', '--config', sys.argv[1], '--output', sys.argv[2], '--run_id', 'r1'])
print('RESULT ' + json.dumps({{'exit': code, 'blocked': blocked,
                              'tensorflow': 'tensorflow' in sys.modules}}))
'''

N = 60
HEADS = [
    {'type': 'BinaryClassHead', 'args': {'name': 'click', 'weight_column': 'w',
                                         'thresholds': [0.3], 'label_vocabulary': ['no', 'yes']},
     'logits': 'bx', 'labels': 'by'},
    {'type': 'MultiClassHead', 'args': {'name': 'topic', 'n_classes': 3, 'weight_column': 'w'},
     'logits': 'mc', 'labels': 'mcy'},
    {'type': 'MultiLabelHead', 'args': {'name': 'tags', 'n_classes': 3},
     'logits': 'ml', 'labels': 'mly', 'label_format': 'ids'},
    {'type': 'RegressionHead', 'args': {'name': 'watch', 'label_dimension': 2,
                                        'weight_column': 'w'},
     'logits': 'rg', 'labels': 'rgy'},
    {'type': 'PoissonRegressionHead', 'args': {'name': 'visits'}, 'logits': 'px',
     'labels': 'py'},
    {'type': 'LogisticRegressionHead', 'args': {'name': 'ctr', 'loss_reduction': 'sum'},
     'logits': 'lx', 'labels': 'ly'},
]
HEAD_WEIGHTS = [1.0, 0.5, 2.0, 0.25, 1.5, 3.0]


def _data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2021)
    return {
        'country': rng.choice(['US', 'JP'], N),
        'ts': np.arange(N) * 2,                     # windows [0, 60) and [60, 120)
        'gs': np.repeat([100, 200], N // 2),
        'w': rng.uniform(0.5, 1.5, N).astype(np.float32),
        'bx': rng.normal(0.0, 2.0, N).astype(np.float32),
        'by': rng.choice(['no', 'yes'], N),
        'mc': rng.normal(0.0, 1.5, (N, 3)).astype(np.float32),
        'mcy': rng.integers(0, 3, N),
        'ml': rng.normal(0.0, 1.5, (N, 3)).astype(np.float32),
        'mly': [sorted(set(rng.integers(0, 3, rng.integers(0, 3)).tolist())) for _ in range(N)],
        'rg': rng.normal(2.0, 1.0, (N, 2)).astype(np.float32),
        'rgy': rng.normal(2.0, 1.5, (N, 2)).astype(np.float32),
        'px': rng.normal(0.5, 0.5, N).astype(np.float32),
        'py': rng.poisson(2.0, N).astype(np.float32),
        'lx': rng.normal(0.0, 1.0, N).astype(np.float32),
        'ly': rng.random(N).astype(np.float32),
    }


def _table(d: dict) -> pa.Table:
    columns = {}
    for key, value in d.items():
        if key == 'mly':
            columns[key] = pa.array(value, pa.list_(pa.int64()))
        elif isinstance(value, np.ndarray) and value.ndim == 2:
            columns[key] = pa.array(list(value), pa.list_(pa.float32()))
        else:
            columns[key] = pa.array(value)
    return pa.table(columns)


def _array_face_overall(d: dict, window: np.ndarray) -> dict[tuple[str, str], float]:
    """{(head, metric): value} of each head's state fed the window's rows as one batch."""
    expected = {}
    features = {'w': d['w'][window].reshape(-1, 1)}
    for spec in HEADS:
        head = getattr(heads, spec['type'])(**spec['args'])
        labels = d[spec['labels']]
        labels = ([labels[i] for i in np.flatnonzero(window)] if spec['labels'] == 'mly'
                  else labels[window])
        logits = d[spec['logits']][window]
        if logits.ndim == 1:
            logits = logits.reshape(-1, 1)
        if isinstance(labels, np.ndarray) and labels.ndim == 1:
            labels = labels.reshape(-1, 1)
        state = head.new_state().update(labels, logits, features)
        suffix = '/' + head.name
        for key, value in state.result().items():
            expected[(head.name, key[:-len(suffix)])] = value
        expected[(head.name, 'loss')] = state.loss()
    return expected


def test_an_evaluation_runs_with_tensorflow_unimportable(tmp_path):
    d = _data()
    os.makedirs(tmp_path / 'in')
    pq.write_table(_table(d), str(tmp_path / 'in' / 'part-0.parquet'), row_group_size=16)
    config = {'input': {'pattern': str(tmp_path / 'in' / '*.parquet')}, 'heads': HEADS,
              'head_weights': HEAD_WEIGHTS, 'slices': [[], ['country']],
              'window': {'column': 'ts', 'size': 60}, 'tensorboard': {'step': 'gs'}}
    out = tmp_path / 'out'
    done = subprocess.run(
        [sys.executable, '-c', _RUN.format(tests=TESTS), json.dumps(config), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith('RESULT ')]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    assert json.loads(lines[0][len('RESULT '):]) == {'exit': 0, 'blocked': True,
                                                      'tensorflow': False}
    for name in ('metrics', 'plots', 'summary.json', 'report.html', 'tfma', 'tensorboard'):
        assert os.path.exists(out / name), name

    # The first window, [0, 60): its rows all have step 100.
    rows = pq.read_table(str(out / 'metrics')).to_pylist()
    first = d['ts'] < 60
    expected = _array_face_overall(d, first)
    got = {(r['head'], r['metric']): r['value'] for r in rows
           if r['slice'] == 'Overall' and r['head'] in {h['args']['name'] for h in HEADS}
           and r['window_start'].timestamp() == 0}
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-12, err_msg=str(key))
