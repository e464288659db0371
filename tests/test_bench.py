"""The benchmark's own pieces: the data it generates, the numpy floor's metrics, the target lines;
and that the evaluation's worker modules do not import TensorFlow."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name: str):
    """A bench/ script as a module under a private name (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location('_bench_' + name,
                                                  os.path.join(ROOT, 'bench', name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


datagen = _load('datagen')
numpy_floor = _load('numpy_floor')
bench_run = _load('run')


def test_datagen_is_deterministic_and_sharded(tmp_path):
    pattern = datagen.write_dataset(str(tmp_path / 'a'), 1003, shards=4)
    again = datagen.write_dataset(str(tmp_path / 'b'), 1003, shards=4)
    files = sorted(tmp_path.glob('a/part-*.parquet'))
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [251, 251, 251, 250]
    for f, g in zip(files, sorted(tmp_path.glob('b/part-*.parquet'))):
        assert pq.read_table(f).equals(pq.read_table(g))
    assert pattern.endswith('part-*.parquet') and again.endswith('part-*.parquet')


def test_numpy_floor_metrics_match_direct_formulas(tmp_path):
    pattern = datagen.write_dataset(str(tmp_path), 3000, shards=3)
    got = numpy_floor.evaluate(pattern)
    t = pq.read_table(sorted(tmp_path.glob('part-*.parquet'))).to_pydict()
    w = np.asarray(t['w'], np.float64)
    x = np.asarray(t['click_logit'], np.float64)
    y = np.asarray(t['click_label'], np.float64)
    p = 1.0 / (1.0 + np.exp(-x))
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    pred = p > 0.5
    tp, fp = np.sum(w * y * pred), np.sum(w * (1 - y) * pred)
    tn, fn = np.sum(w * (1 - y) * ~pred), np.sum(w * y * ~pred)
    o = got['overall']
    assert got['rows'] == 3000
    assert o['weighted_example_count'] == pytest.approx(np.sum(w), rel=1e-12)
    assert o['mean_label'] == pytest.approx(np.sum(w * y) / np.sum(w), rel=1e-12)
    assert o['mean_prediction'] == pytest.approx(np.sum(w * p) / np.sum(w), rel=1e-6)
    assert o['calibration'] == pytest.approx(np.sum(w * p) / np.sum(w * y), rel=1e-6)
    assert o['binary_crossentropy'] == pytest.approx(np.sum(w * bce) / np.sum(w), rel=1e-9)
    assert o['binary_accuracy'] == pytest.approx((tp + tn) / np.sum(w), rel=1e-12)
    assert o['precision'] == pytest.approx(tp / (tp + fp), rel=1e-12)
    assert o['recall'] == pytest.approx(tp / (tp + fn), rel=1e-12)
    # 10,000 probability buckets: within a bucket's worth of the exact weighted AUC.
    assert o['auc'] == pytest.approx(roc_auc_score(y, x, sample_weight=w), abs=2e-3)
    assert 0.0 < o['auc_pr'] <= 1.0


def test_target_lines_say_met_or_not():
    runs = [
        {'what': 'numpy_floor', 'rows': 10, 'seconds': 1.0},
        {'what': 'headstream_binary', 'rows': 10, 'seconds': 1.2, 'peak_rss_mb': 300.0,
         'x_tfma': 1500.0},
        {'what': 'numpy_floor', 'rows': 20, 'seconds': 1.0},
        {'what': 'headstream_binary', 'rows': 20, 'seconds': 2.0, 'peak_rss_mb': 600.0,
         'x_tfma': 900.0},
        {'what': 'headstream_five_heads', 'rows': 20, 'examples_per_s': 2e6},
    ]
    lines = bench_run.targets(runs)
    assert lines[0].startswith('target headstream >= 1000x TFMA') and 'NOT MET' in lines[0]
    assert '2.00x' in lines[1] and 'NOT MET' in lines[1]      # 2.0 s against a 1.0 s floor
    assert lines[2].endswith(' MET') and 'NOT' not in lines[2]  # 600 MB <= 1536 MB
    assert 'x2.00' in lines[3] and 'NOT MET' in lines[3]      # 300 -> 600 MB is not flat
    assert 'NOT' not in lines[4]


def test_evaluation_modules_do_not_import_tensorflow():
    code = ('import sys\n'
            'import pipeline.apply, pipeline.combine, pipeline.results, pipeline.run\n'
            'import pipeline.sources, pipeline.writers.parquet\n'
            'print(sorted(m for m in sys.modules if m.split(".")[0] in '
            '("tensorflow", "keras", "tensorflow_model_analysis")))\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == '[]'
