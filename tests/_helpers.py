"""What several test files share: slow, obviously correct references and the heads to build.

The AUC references are plain Python loops, one threshold at a time, in float64: an independent
source of golden values for the Keras 2 `AUC(num_thresholds=200)` the heads reproduce
(interpolated ROC and PR curves).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import heads

COUNTRIES = np.array(['US', 'JP', 'DE'])
RUNNER = ['--runner=DirectRunner']
# A weighted BinaryClassHead named click over columns x, y and w (the slice-size tests' head).
WEIGHTED_CLICK_HEAD = {'type': 'BinaryClassHead',
                       'args': {'name': 'click', 'weight_column': 'w', 'thresholds': [0.5]},
                       'logits': 'x', 'labels': 'y'}


def minimal_config(**extra: Any) -> dict:
    """The smallest raw config (one BinaryClassHead over x.parquet) with `extra` keys."""
    raw = {'input': {'pattern': 'x.parquet'},
           'heads': [{'type': 'BinaryClassHead', 'logits': 'logits', 'labels': 'label'}]}
    raw.update(extra)
    return raw


def pipeline_data(n: int, seed: int, ts_max: int = 600) -> pa.Table:
    """The pipeline tests' rows: a country slice, weights, binary logits `x` with labels `y` drawn
    from their sigmoid, a regression prediction `r` and label `ry`, epoch seconds `ts` in
    [0, ts_max) and a step column `gs`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, n).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    return pa.table({
        'country': rng.choice(COUNTRIES, n),
        'w': rng.uniform(0.5, 1.5, n).astype(np.float32),
        'x': x,
        'y': (rng.random(n) < p).astype(np.int64),
        'r': rng.normal(1.0, 1.0, n).astype(np.float32),
        'ry': rng.normal(1.0, 1.2, n).astype(np.float32),
        'ts': rng.integers(0, ts_max, n),
        'gs': rng.choice([100, 200], n),
    })


def write_shards(table: pa.Table, directory: Any, shards: int, row_group_size: int = 400) -> str:
    """`table` in `shards` Parquet files under `directory`; returns their glob pattern."""
    os.makedirs(directory, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, shards + 1).astype(int)
    for i in range(shards):
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]),
                       os.path.join(directory, 'part-%03d.parquet' % i),
                       row_group_size=row_group_size)
    return os.path.join(str(directory), 'part-*.parquet')


# Every single head, built with a given loss_reduction (by a short id for test names).
HEADS_WITH_REDUCTION: dict[str, Callable[[str], Any]] = {
    'binary': lambda r: heads.BinaryClassHead(loss_reduction=r),
    'multi_class': lambda r: heads.MultiClassHead(3, loss_reduction=r),
    'multi_label': lambda r: heads.MultiLabelHead(2, loss_reduction=r),
    'regression': lambda r: heads.RegressionHead(loss_reduction=r),
    'poisson': lambda r: heads.PoissonRegressionHead(loss_reduction=r),
    'logistic': lambda r: heads.LogisticRegressionHead(loss_reduction=r),
}


def keras_thresholds(n: int = 200) -> list[float]:
    """The `n` thresholds Keras builds for an AUC: −ε, i/(n−1) for i in 1..n−2, 1 + ε."""
    return [-1e-7] + [i / (n - 1) for i in range(1, n - 1)] + [1 + 1e-7]


def reference_confusion(labels: Iterable, scores: Iterable, weights: Iterable,
                        thresholds: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """Per threshold (tp, fp, tn, fn): positive = label != 0, predicted = clip(score, 0, 1) > t;
    a NaN score is predicted negative everywhere."""
    labels, scores, weights = list(labels), list(scores), list(weights)
    out = []
    for t in thresholds:
        tp = fp = tn = fn = 0.0
        for y, s, w in zip(labels, scores, weights):
            predicted = (not math.isnan(s)) and min(max(s, 0.0), 1.0) > t
            if y != 0:
                tp, fn = (tp + w, fn) if predicted else (tp, fn + w)
            else:
                fp, tn = (fp + w, tn) if predicted else (fp, tn + w)
        out.append((tp, fp, tn, fn))
    return out


def div_or_zero(a: float, b: float) -> float:
    """a / b, or 0 when b is 0 (tf.math.divide_no_nan)."""
    return a / b if b != 0 else 0.0


def reference_roc(conf: Sequence[tuple[float, float, float, float]]) -> float:
    """ROC AUC by the trapezoid rule over the thresholds' (FPR, TPR) points."""
    total = 0.0
    for (tp0, fp0, tn0, fn0), (tp1, fp1, tn1, fn1) in zip(conf[:-1], conf[1:]):
        r0, r1 = div_or_zero(tp0, tp0 + fn0), div_or_zero(tp1, tp1 + fn1)
        f0, f1 = div_or_zero(fp0, fp0 + tn0), div_or_zero(fp1, fp1 + tn1)
        total += (f0 - f1) * (r0 + r1) / 2
    return total


def reference_pr(conf: Sequence[tuple[float, float, float, float]]) -> float:
    """PR AUC with Keras's interpolation (Davis & Goadrich) between adjacent thresholds."""
    total = 0.0
    for (tp0, fp0, _, _), (tp1, fp1, _, fn1) in zip(conf[:-1], conf[1:]):
        p0, p1 = tp0 + fp0, tp1 + fp1
        d_tp, d_p = tp0 - tp1, p0 - p1
        slope = div_or_zero(d_tp, max(d_p, 0.0))
        intercept = tp1 - slope * p1
        ratio = p0 / p1 if (p0 > 0 and p1 > 0) else 1.0
        total += div_or_zero(slope * (d_tp + intercept * math.log(ratio)), max(tp1 + fn1, 0.0))
    return total


def reference_keras_auc(labels, scores, weights=None, n: int = 200) -> tuple[float, float]:
    """(ROC, PR) of Keras 2 `AUC(num_thresholds=n)` with interpolation, over the flattened
    arrays (weights 1 when none are given)."""
    labels = [float(v) for v in np.ravel(labels)]
    scores = [float(v) for v in np.ravel(scores)]
    weights = [1.0] * len(scores) if weights is None else [float(v) for v in np.ravel(weights)]
    conf = reference_confusion(labels, scores, weights, keras_thresholds(n))
    return reference_roc(conf), reference_pr(conf)


def assert_same_intervals(a: dict, b: dict) -> None:
    """Two states' `interval_estimates` (each as {key: tuple of floats | None}) agree to 1e-9:
    the same keys, None in the same places."""
    assert a.keys() == b.keys() and a
    for k in a:
        assert (a[k] is None) == (b[k] is None), k
        if a[k] is not None:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12, err_msg=k)


def binary_arrays(rng: np.random.Generator, n: int) -> Any:
    """n rows for the weighted BinaryClassHead (weight column 'w') as `HeadArrays`: labels 0/1,
    logits ~ N(0, 2), weights in [0.5, 1.5)."""
    from pipeline.elements import HeadArrays
    return HeadArrays(labels=rng.integers(0, 2, (n, 1)).astype(np.float32),
                      logits=rng.normal(0, 2, (n, 1)).astype(np.float32),
                      features={'w': rng.uniform(0.5, 1.5, (n, 1))})


def binary_key_block(columns: tuple = ('c',)) -> Any:
    """An empty `KeyBlock` of slice spec `columns` over the weighted BinaryClassHead's block."""
    from pipeline.key_blocks import KeyBlock
    return KeyBlock(columns, 0, heads.BinaryClassHead(weight_column='w').new_block())
