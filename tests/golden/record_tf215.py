"""Records golden values from the real tf.estimator 2.15 heads into `tf215_cases.json`.

Runs only in a side virtualenv holding TensorFlow 2.15.1 and tensorflow-estimator 2.15.0
(see README.md in this directory); the tests that read the JSON need neither.

For every case the file holds the head's constructor arguments, the input batches (deterministic:
a fixed numpy seed per case, the values themselves written into the JSON), and what tf.estimator
returned in eager mode:

* `loss`: `head.loss()` on the first batch, for each loss reduction (the head rebuilt with it);
* `loss_concat`: the same on all batches concatenated into one;
* `predictions`: `head.predictions()` of the first batch's logits, every key (bytes as str);
* `metrics`: `update_metrics()` results after the first batch and after each further batch, on one
  metrics dict (tf.estimator's streaming accumulation);
* `metrics_concat`: `update_metrics()` results after one update with all batches concatenated.

Error cases hold the exception type and message tf.estimator raised for an invalid input.

Usage: /work/tf215/bin/python tests/golden/record_tf215.py [output.json]
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

REDUCTIONS = ('sum', 'sum_over_batch_size', 'auto')
HEAD_CLASSES = {
    'BinaryClassHead': tf.estimator.BinaryClassHead,
    'MultiClassHead': tf.estimator.MultiClassHead,
    'MultiLabelHead': tf.estimator.MultiLabelHead,
    'RegressionHead': tf.estimator.RegressionHead,
    'PoissonRegressionHead': tf.estimator.PoissonRegressionHead,
    'LogisticRegressionHead': tf.estimator.LogisticRegressionHead,
}


# ---------------------------------------------------------------------------------------------
# JSON encoding of arrays. An array is {"dtype", "shape", "data"}; a sparse label tensor of class
# ids or names is {"sparse": true, "dtype", "indices", "values", "dense_shape"}.
# ---------------------------------------------------------------------------------------------

def encode(value: Any) -> Any:
    """Encodes an ndarray, a list of per-row id lists (sparse labels) or a dict of those."""
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, SparseRows):
        return value.encode()
    arr = np.asarray(value)
    if arr.dtype.kind in 'OUS':
        data = np.vectorize(_as_str, otypes=[object])(arr).tolist() if arr.size else arr.tolist()
        return {'dtype': 'str', 'shape': list(arr.shape), 'data': data}
    return {'dtype': str(arr.dtype), 'shape': list(arr.shape), 'data': arr.tolist()}


def _as_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class SparseRows:
    """Multi-label labels given as class ids (or names) per row: a SparseTensor in TF."""

    def __init__(self, rows: list[list[Any]], dtype: str):
        self.rows = rows
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, s: slice) -> 'SparseRows':
        return SparseRows(self.rows[s], self.dtype)

    def width(self) -> int:
        return max([len(r) for r in self.rows] + [1])

    def encode(self) -> dict:
        indices = [[i, j] for i, r in enumerate(self.rows) for j in range(len(r))]
        values = [v for r in self.rows for v in r]
        return {'sparse': True, 'dtype': self.dtype, 'indices': indices, 'values': values,
                'dense_shape': [len(self.rows), self.width()]}

    def to_tf(self) -> tf.SparseTensor:
        enc = self.encode()
        dtype = tf.string if self.dtype == 'str' else tf.int64
        indices = tf.constant(enc['indices'], tf.int64, shape=(len(enc['values']), 2))
        return tf.SparseTensor(indices=indices, values=tf.constant(enc['values'], dtype),
                               dense_shape=enc['dense_shape'])


def concat(parts: list[Any]) -> Any:
    """Concatenates batches (arrays, SparseRows or dicts of them) along the first axis."""
    if isinstance(parts[0], dict):
        return {k: concat([p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], SparseRows):
        return SparseRows([r for p in parts for r in p.rows], parts[0].dtype)
    return np.concatenate(parts, axis=0)


def take(value: Any, s: slice) -> Any:
    if isinstance(value, dict):
        return {k: take(v, s) for k, v in value.items()}
    return value[s]


def to_tf(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: to_tf(v) for k, v in value.items()}
    if isinstance(value, SparseRows):
        return value.to_tf()
    arr = np.asarray(value)
    if arr.dtype.kind in 'OUS':
        return tf.constant(arr.astype(object).astype(bytes) if arr.size else arr.astype(bytes),
                           tf.string)
    return tf.constant(arr)


# ---------------------------------------------------------------------------------------------
# Heads from JSON specs.
# ---------------------------------------------------------------------------------------------

def build_head(spec: dict, reduction: str | None = None):
    """Builds the tf.estimator head of `spec`, optionally with another loss reduction."""
    if spec['class'] == 'MultiHead':
        subs = [build_head(s, reduction) for s in spec['heads']]
        return tf.estimator.MultiHead(subs, head_weights=spec.get('head_weights'))
    args = dict(spec.get('args', {}))
    if reduction is not None:
        args['loss_reduction'] = reduction
    return HEAD_CLASSES[spec['class']](**args)


def float_dict(metrics: dict) -> dict[str, float]:
    return {k: float(m.result().numpy()) for k, m in metrics.items()}


def predictions_of(head, logits) -> list[dict]:
    """Every prediction key of `head` on `logits`, as a list of {key, value} (MultiHead keys are
    [head name, key] pairs)."""
    preds = head.predictions(to_tf(logits))
    out = []
    for key, value in preds.items():
        out.append({'key': list(key) if isinstance(key, tuple) else key,
                    'value': encode(value.numpy())})
    return out


# ---------------------------------------------------------------------------------------------
# Deterministic inputs.
# ---------------------------------------------------------------------------------------------

def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def logits_normal(rng, shape, scale=2.0, loc=0.0) -> np.ndarray:
    # Rounded to 1/64 so that the JSON holds short, exactly representable float32 values.
    return f32(np.round(rng.normal(loc, scale, shape) * 64) / 64)


def weights_of(rng, n, rank1=False, zero_frac=0.0) -> np.ndarray:
    w = f32(np.round(rng.uniform(0.1, 3.0, n) * 8) / 8)
    if zero_frac:
        w[rng.random_sample(n) < zero_frac] = 0.0
    return w if rank1 else w.reshape(n, 1)


def case(cid: str, head: dict, logits, labels, features=None, sizes=(6, 5), note: str = '') -> dict:
    return {'id': cid, 'head': head, 'logits': logits, 'labels': labels,
            'features': features or {}, 'sizes': list(sizes), 'note': note}


def H(cls: str, **args) -> dict:
    return {'class': cls, 'args': args}


def build_cases() -> list[dict]:
    """All the recorded cases; inputs cover all rows of all batches (`sizes` splits them)."""
    rng = np.random.RandomState(2015)
    cases: list[dict] = []
    n = 11

    # -- BinaryClassHead --------------------------------------------------------------------
    lg = logits_normal(rng, (n, 1))
    lg[2, 0] = 0.0  # a logit of exactly 0: class_id 0, probability 0.5
    lb = rng.randint(0, 2, (n, 1)).astype(np.int64)
    cases.append(case('binary/basic', H('BinaryClassHead'), lg, lb))
    cases.append(case('binary/weights', H('BinaryClassHead', weight_column='w'), lg, lb,
                      {'w': weights_of(rng, n)}))
    cases.append(case('binary/weights_rank1_labels_rank1',
                      H('BinaryClassHead', weight_column='w', name='click'),
                      lg, lb.reshape(-1).astype(np.float32), {'w': weights_of(rng, n, rank1=True)}))
    cases.append(case('binary/thresholds', H('BinaryClassHead', weight_column='w',
                                             thresholds=[0.25, 0.5, 0.75]),
                      lg, lb, {'w': weights_of(rng, n)}))
    cases.append(case('binary/thresholds_unusual', H('BinaryClassHead', thresholds=[1 / 3, 0.999999,
                                                                                    1e-5]),
                      lg, lb, note='%g formatting of thresholds'))
    vocab_lb = np.array(['neg', 'pos'], dtype=object)[rng.randint(0, 2, (n, 1))]
    cases.append(case('binary/vocabulary', H('BinaryClassHead', label_vocabulary=['neg', 'pos'],
                                             name='clk'), lg, vocab_lb))
    soft = f32(np.round(rng.random_sample((n, 1)) * 16) / 16)
    cases.append(case('binary/soft_labels', H('BinaryClassHead', thresholds=[0.5]), lg, soft))
    cases.append(case('binary/sum', H('BinaryClassHead', loss_reduction='sum', weight_column='w'),
                      lg, lb, {'w': weights_of(rng, n, zero_frac=0.3)}))
    lg3 = logits_normal(rng, (4, 3, 1))
    lb3 = rng.randint(0, 2, (4, 3, 1)).astype(np.int64)
    cases.append(case('binary/rank3_logits', H('BinaryClassHead', weight_column='w'), lg3, lb3,
                      {'w': weights_of(rng, 12).reshape(4, 3)}, sizes=(2, 2)))
    cases.append(case('binary/all_positive', H('BinaryClassHead'), lg, np.ones((n, 1), np.int64),
                      note='no negatives: auc 0, auc_precision_recall 1'))
    cases.append(case('binary/all_negative', H('BinaryClassHead'), lg, np.zeros((n, 1), np.int64),
                      note='no positives'))
    zw = weights_of(rng, n)
    zw[:6] = 0.0
    cases.append(case('binary/zero_weights', H('BinaryClassHead', weight_column='w'), lg, lb,
                      {'w': zw}, note='first batch entirely zero-weighted'))
    cases.append(case('binary/negative_weights', H('BinaryClassHead', weight_column='w'), lg, lb,
                      {'w': f32(rng.uniform(-1, 2, (n, 1)).round(2))}))
    cases.append(case('binary/single_example', H('BinaryClassHead', thresholds=[0.5]),
                      f32([[0.75], [-1.25]]), np.array([[1], [0]], np.int64), sizes=(1, 1)))
    cases.append(case('binary/empty_batch', H('BinaryClassHead', weight_column='w'),
                      np.zeros((3, 1), np.float32) + f32([[1.5], [-0.5], [2.0]]),
                      np.array([[1], [0], [0]], np.int64),
                      {'w': f32([[1.0], [2.0], [0.5]])}, sizes=(0, 3),
                      note='first batch has no rows'))
    big = logits_normal(rng, (40, 1), scale=3.0)
    cases.append(case('binary/larger',
                      H('BinaryClassHead', thresholds=[0.1, 0.9], weight_column='w'),
                      big, (rng.random_sample((40, 1)) < 1 / (1 + np.exp(-big))).astype(np.int64),
                      {'w': weights_of(rng, 40)}, sizes=(25, 15)))

    # -- MultiClassHead ---------------------------------------------------------------------
    lg = logits_normal(rng, (n, 3))
    lg[4] = [1.0, 1.0, -1.0]  # a tie: argmax takes the first
    lb = rng.randint(0, 3, (n, 1)).astype(np.int64)
    cases.append(case('multiclass/basic', H('MultiClassHead', n_classes=3), lg, lb))
    cases.append(case('multiclass/weights', H('MultiClassHead', n_classes=3, weight_column='w',
                                              name='topic'), lg, lb, {'w': weights_of(rng, n)}))
    cases.append(case('multiclass/labels_rank1_sum', H('MultiClassHead', n_classes=3,
                                                       loss_reduction='sum'),
                      lg, lb.reshape(-1).astype(np.int32)))
    vocab = ['a', 'b', 'c', 'd']
    lg4 = logits_normal(rng, (n, 4))
    cases.append(case('multiclass/vocabulary', H('MultiClassHead', n_classes=4,
                                                 label_vocabulary=vocab, weight_column='w'),
                      lg4, np.array(vocab, dtype=object)[rng.randint(0, 4, (n, 1))],
                      {'w': weights_of(rng, n, rank1=True)}))
    cases.append(case('multiclass/rank3_logits', H('MultiClassHead', n_classes=3),
                      logits_normal(rng, (4, 2, 3)), rng.randint(0, 3, (4, 2, 1)).astype(np.int64),
                      sizes=(3, 1)))
    cases.append(case('multiclass/single_example', H('MultiClassHead', n_classes=3),
                      f32([[0.5, 2.0, -1.0]]), np.array([[2]], np.int64), sizes=(1,)))
    cases.append(case('multiclass/zero_weights',
                      H('MultiClassHead', n_classes=3, weight_column='w'),
                      lg, lb, {'w': np.zeros((n, 1), np.float32)}, note='all weights zero'))

    # -- MultiLabelHead ---------------------------------------------------------------------
    k = 4
    lg = logits_normal(rng, (n, k), loc=-0.5)
    lb = (rng.random_sample((n, k)) < 0.4).astype(np.int64)
    cases.append(case('multilabel/basic', H('MultiLabelHead', n_classes=k), lg, lb))
    cases.append(case('multilabel/all_args',
                      H('MultiLabelHead', n_classes=k, weight_column='w',
                        thresholds=[0.3, 0.5, 0.7], classes_for_class_based_metrics=[0, 2],
                        name='tags'),
                      lg, lb, {'w': weights_of(rng, n)}))
    vocab = ['w', 'x', 'y', 'z']
    cases.append(case('multilabel/vocabulary_dense',
                      H('MultiLabelHead', n_classes=k, label_vocabulary=vocab,
                        classes_for_class_based_metrics=['x', 'z'], thresholds=[0.5]),
                      lg, lb, note='dense labels ignore the vocabulary; per-class keys use names'))
    id_rows = [sorted(rng.choice(k, rng.randint(0, 3), replace=False).tolist()) for _ in range(n)]
    id_rows[3] = []  # a row without any label
    cases.append(case('multilabel/sparse_ids', H('MultiLabelHead', n_classes=k, weight_column='w',
                                                 classes_for_class_based_metrics=[1]),
                      lg, SparseRows(id_rows, 'int64'), {'w': weights_of(rng, n, rank1=True)}))
    name_rows = [[vocab[i] for i in r] for r in reversed(id_rows)]
    cases.append(case('multilabel/sparse_names', H('MultiLabelHead', n_classes=k,
                                                   label_vocabulary=vocab, thresholds=[0.4]),
                      lg, SparseRows(name_rows, 'str')))
    cases.append(case('multilabel/soft_labels', H('MultiLabelHead', n_classes=k, thresholds=[0.5]),
                      lg, f32(np.round(rng.random_sample((n, k)) * 4) / 4)))
    cases.append(case('multilabel/rank3_logits', H('MultiLabelHead', n_classes=3, weight_column='w',
                                                   thresholds=[0.5]),
                      logits_normal(rng, (4, 2, 3)),
                      (rng.random_sample((4, 2, 3)) < 0.5).astype(np.int64),
                      {'w': weights_of(rng, 8).reshape(4, 2)}, sizes=(2, 2)))
    cases.append(case('multilabel/all_positive', H('MultiLabelHead', n_classes=3,
                                                   classes_for_class_based_metrics=[0]),
                      logits_normal(rng, (5, 3)), np.ones((5, 3), np.int64), sizes=(3, 2)))
    zw = weights_of(rng, n)
    zw[:6] = 0.0
    cases.append(case('multilabel/zero_weights', H('MultiLabelHead', n_classes=k, weight_column='w',
                                                   thresholds=[0.5],
                                                   classes_for_class_based_metrics=[3]),
                      lg, lb, {'w': zw}, note='first batch entirely zero-weighted'))
    cases.append(case('multilabel/sum_single',
                      H('MultiLabelHead', n_classes=2, loss_reduction='sum'),
                      f32([[1.0, -1.0]]), np.array([[1, 0]], np.int64), sizes=(1,)))

    # -- RegressionHead and the GLM heads ---------------------------------------------------
    lg = logits_normal(rng, (n, 1), loc=1.0)
    lb = f32(np.round((lg + rng.normal(0, 1, (n, 1))) * 8) / 8)
    cases.append(case('regression/basic', H('RegressionHead'), lg, lb))
    cases.append(case('regression/weights', H('RegressionHead', weight_column='w', name='watch'),
                      lg, lb, {'w': weights_of(rng, n)}))
    cases.append(case('regression/labels_rank1_sum', H('RegressionHead', loss_reduction='sum',
                                                       weight_column='w'),
                      lg, lb.reshape(-1), {'w': weights_of(rng, n, rank1=True)}))
    cases.append(case('regression/int_labels', H('RegressionHead'), lg,
                      np.round(lb).astype(np.int64)))
    lg2 = logits_normal(rng, (n, 2), loc=1.0)
    lb2 = f32(np.round((lg2 + rng.normal(0, 1, (n, 2))) * 8) / 8)
    cases.append(case('regression/label_dimension2', H('RegressionHead', label_dimension=2,
                                                       weight_column='w'),
                      lg2, lb2, {'w': weights_of(rng, n)}))
    cases.append(case('regression/per_logit_weights', H('RegressionHead', label_dimension=2,
                                                        weight_column='w'),
                      lg2, lb2, {'w': f32(np.round(rng.uniform(0, 2, (n, 2)) * 4) / 4)}))
    cases.append(case('regression/rank3_logits', H('RegressionHead', label_dimension=2),
                      logits_normal(rng, (4, 3, 2)), logits_normal(rng, (4, 3, 2)), sizes=(1, 3)))
    cases.append(case('regression/zero_weights', H('RegressionHead', weight_column='w'), lg, lb,
                      {'w': np.zeros((n, 1), np.float32)}))
    cases.append(case('regression/single_example', H('RegressionHead'), f32([[2.5]]), f32([[1.0]]),
                      sizes=(1,)))
    rates = logits_normal(rng, (n, 1), scale=0.7, loc=0.5)
    counts = rng.poisson(np.exp(rates)).astype(np.float32)
    counts[0, 0] = 0.0
    counts[1, 0] = 1.0
    cases.append(case('poisson/basic', H('PoissonRegressionHead', weight_column='w'), rates, counts,
                      {'w': weights_of(rng, n)}))
    rates2 = logits_normal(rng, (n, 2), scale=0.7, loc=0.5)
    cases.append(case('poisson/partial_dim2', H('PoissonRegressionHead', label_dimension=2,
                                                compute_full_loss=False, name='count'),
                      rates2, rng.poisson(np.exp(rates2)).astype(np.float32)))
    cases.append(case('poisson/full_dim2', H('PoissonRegressionHead', label_dimension=2),
                      rates2, rng.poisson(np.exp(rates2)).astype(np.float32)))
    probs = f32(np.round(rng.random_sample((n, 1)) * 8) / 8)
    probs[0, 0] = 0.0
    probs[1, 0] = 1.0
    cases.append(case('logistic/basic', H('LogisticRegressionHead'), lg, probs))
    cases.append(case('logistic/weights_sum', H('LogisticRegressionHead', weight_column='w',
                                                loss_reduction='sum', name='ctr'),
                      lg, probs, {'w': weights_of(rng, n)}))

    # -- MultiHead --------------------------------------------------------------------------
    lgb = logits_normal(rng, (n, 1))
    lbb = rng.randint(0, 2, (n, 1)).astype(np.int64)
    lgr = logits_normal(rng, (n, 1), loc=1.0)
    lbr = f32(np.round((lgr + rng.normal(0, 1, (n, 1))) * 8) / 8)
    cases.append(case('multihead/binary_regression',
                      {'class': 'MultiHead', 'heads': [H('BinaryClassHead', name='a'),
                                                       H('RegressionHead', name='b')]},
                      {'a': lgb, 'b': lgr}, {'a': lbb, 'b': lbr}))
    lgm = logits_normal(rng, (n, 3))
    lbm = rng.randint(0, 3, (n, 1)).astype(np.int64)
    cases.append(case('multihead/head_weights',
                      {'class': 'MultiHead', 'head_weights': [1.0, 2.5],
                       'heads': [H('BinaryClassHead', name='click', weight_column='w',
                                   thresholds=[0.5]),
                                 H('MultiClassHead', n_classes=3, name='topic')]},
                      {'click': lgb, 'topic': lgm}, {'click': lbb, 'topic': lbm},
                      {'w': weights_of(rng, n)}))
    lgl = logits_normal(rng, (n, 3))
    lbl = (rng.random_sample((n, 3)) < 0.5).astype(np.int64)
    lgr2 = logits_normal(rng, (n, 2))
    cases.append(case('multihead/one_logits_tensor',
                      {'class': 'MultiHead', 'head_weights': [0.5, 2.0],
                       'heads': [H('MultiLabelHead', n_classes=3, name='tags',
                                   classes_for_class_based_metrics=[1]),
                                 H('RegressionHead', label_dimension=2, name='size')]},
                      np.concatenate([lgl, lgr2], axis=1),
                      {'tags': lbl, 'size': f32(np.round(lgr2 * 4) / 4 + 0.25)},
                      note='logits as one [B, 5] tensor split in head order'))
    cases.append(case('multihead/three_heads_sum',
                      {'class': 'MultiHead', 'head_weights': [1.0, 0.5, 3.0],
                       'heads': [H('BinaryClassHead', name='a', loss_reduction='sum'),
                                 H('PoissonRegressionHead', name='p', loss_reduction='sum'),
                                 H('LogisticRegressionHead', name='l', loss_reduction='sum')]},
                      {'a': lgb, 'p': rates, 'l': lg}, {'a': lbb, 'p': counts, 'l': probs}))
    # -- Thresholds that print alike, a head reducing with 'auto', a MultiHead mixing label forms.
    # (Scores placed exactly on AUC bucket edges i/199 are deliberately absent: TF 2.15's own
    # float32 sigmoid varies by up to 2 ulp with an element's position in the batch, so the bucket
    # of such a score is not well defined even there; see README.md.)
    cases.append(case('binary/thresholds_colliding',
                      H('BinaryClassHead', thresholds=[0.3, 0.30000001, 0.7]), lg,
                      rng.randint(0, 2, (n, 1)).astype(np.int64),
                      note='0.3 and 0.30000001 both format as 0.3: the later one wins'))
    cases.append(case('regression/auto', H('RegressionHead', loss_reduction='auto',
                                           weight_column='w'),
                      lg, lb, {'w': weights_of(rng, n)}))
    cases.append(case('multihead/sparse_and_vocabulary',
                      {'class': 'MultiHead',
                       'heads': [H('MultiLabelHead', n_classes=k, name='tags', weight_column='w'),
                                 H('BinaryClassHead', name='buy', label_vocabulary=['no', 'yes'],
                                   weight_column='w')]},
                      {'tags': logits_normal(rng, (n, k)), 'buy': logits_normal(rng, (n, 1))},
                      {'tags': SparseRows(id_rows, 'int64'),
                       'buy': np.array(['no', 'yes'], dtype=object)[rng.randint(0, 2, (n, 1))]},
                      {'w': weights_of(rng, n, rank1=True)}))

    # -- Two hand-checked vectors (B1, E6; values in the notes), as a check of the recorder -----
    cases.append(case('binary/spec_b1', H('BinaryClassHead'), np.array([[45], [-41]], np.int32),
                      np.array([[1], [1]], np.int32), sizes=(2,),
                      note='spec B1: loss 20.5, accuracy 0.5, auc 0.0, auc_precision_recall 1.0'))
    cases.append(case('multihead/spec_e6_streaming',
                      {'class': 'MultiHead', 'heads': [H('BinaryClassHead', name='a'),
                                                       H('RegressionHead', name='b')]},
                      {'a': f32([[2.], [-2.]]), 'b': f32([[1.], [3.]])},
                      {'a': f32([[1.], [1.]]), 'b': f32([[0.], [0.]])}, sizes=(1, 1),
                      note='spec E6: loss/a 1.126928 over both batches, per-head metrics of the '
                           'last batch only'))
    return cases


def record_case(c: dict) -> dict:
    """Runs one case through tf.estimator and returns its JSON record."""
    spec = c['head']
    sizes = c['sizes']
    edges = np.cumsum([0] + sizes)
    slices = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
    batches = [{'logits': take(c['logits'], s), 'labels': take(c['labels'], s),
                'features': take(c['features'], s)} for s in slices]
    whole = {'logits': c['logits'], 'labels': c['labels'], 'features': c['features']}

    def loss_of(head, b) -> float:
        loss = head.loss(to_tf(b['labels']), to_tf(b['logits']), to_tf(b['features']))
        return float(loss.numpy())

    head = build_head(spec)
    out: dict[str, Any] = {'id': c['id'], 'head': spec, 'note': c['note']}
    out['batches'] = [{k: encode(v) for k, v in b.items()} for b in batches]
    out['loss'] = {r: loss_of(build_head(spec, r), batches[0]) for r in REDUCTIONS}
    out['loss_concat'] = {r: loss_of(build_head(spec, r), whole) for r in REDUCTIONS}
    out['predictions'] = predictions_of(head, batches[0]['logits'])
    metrics = head.metrics()
    out['metrics'] = []
    for b in batches:
        head.update_metrics(metrics, to_tf(b['features']), to_tf(b['logits']), to_tf(b['labels']))
        out['metrics'].append(float_dict(metrics))
    fresh = head.metrics()
    head.update_metrics(fresh, to_tf(whole['features']), to_tf(whole['logits']),
                        to_tf(whole['labels']))
    out['metrics_concat'] = float_dict(fresh)
    return out


# ---------------------------------------------------------------------------------------------
# Invalid inputs: the exception tf.estimator raises.
# ---------------------------------------------------------------------------------------------

def error_cases() -> list[dict]:
    """Invalid inputs; `call` is 'loss' (also reached by update_metrics) or 'predictions'."""
    two = f32([[0.5], [-1.0]])
    e = []

    def err(cid, head, call, logits, labels=None, features=None, keys=None):
        e.append({'id': cid, 'head': head, 'call': call, 'logits': logits, 'labels': labels,
                  'features': features or {}, 'keys': keys})

    err('binary/logits_dimension', H('BinaryClassHead'), 'loss', f32([[1., 2.], [3., 4.]]),
        np.array([[1], [0]], np.int64))
    err('binary/predictions_logits_dimension', H('BinaryClassHead'), 'predictions',
        f32([[1., 2.], [3., 4.]]))
    err('binary/predictions_unknown_key', H('BinaryClassHead'), 'predictions', two,
        keys=['probabilities', 'some_invalid_key'])
    err('multiclass/predictions_logistic_key', H('MultiClassHead', n_classes=3), 'predictions',
        f32([[1., 2., 3.]]), keys=['logistic'])
    err('multilabel/predictions_class_ids_key', H('MultiLabelHead', n_classes=2), 'predictions',
        f32([[1., 2.]]), keys=['class_ids'])
    err('binary/logits_rank1', H('BinaryClassHead'), 'loss', f32([1., 2.]),
        np.array([[1], [0]], np.int64))
    err('binary/label_above_range', H('BinaryClassHead'), 'loss', two,
        np.array([[2], [0]], np.int64))
    err('binary/label_below_range', H('BinaryClassHead'), 'loss', two, f32([[-0.5], [0.]]))
    err('binary/unknown_vocabulary_string', H('BinaryClassHead', label_vocabulary=['neg', 'pos']),
        'loss', two, np.array([['pos'], ['maybe']], dtype=object))
    err('binary/label_dimension', H('BinaryClassHead'), 'loss', two, f32([[1., 0.], [0., 1.]]))
    err('binary/labels_shape', H('BinaryClassHead'), 'loss', two, f32([[1.], [0.], [1.]]))
    err('binary/weights_shape', H('BinaryClassHead', weight_column='w'), 'loss', two,
        np.array([[1], [0]], np.int64), {'w': f32([[1., 2.], [3., 4.]])})
    err('binary/weights_missing', H('BinaryClassHead', weight_column='w'), 'loss', two,
        np.array([[1], [0]], np.int64), {'x': f32([1., 2.])})
    err('multiclass/label_out_of_range', H('MultiClassHead', n_classes=3), 'loss',
        f32([[1., 2., 3.], [0., 0., 1.]]), np.array([[3], [0]], np.int64))
    err('multiclass/label_negative', H('MultiClassHead', n_classes=3), 'loss',
        f32([[1., 2., 3.], [0., 0., 1.]]), np.array([[-1], [0]], np.int64))
    err('multiclass/float_labels', H('MultiClassHead', n_classes=3), 'loss',
        f32([[1., 2., 3.], [0., 0., 1.]]), f32([[1.], [0.]]))
    err('multiclass/unknown_vocabulary_string',
        H('MultiClassHead', n_classes=3, label_vocabulary=['a', 'b', 'c']), 'loss',
        f32([[1., 2., 3.], [0., 0., 1.]]), np.array([['a'], ['q']], dtype=object))
    err('multiclass/logits_dimension', H('MultiClassHead', n_classes=3), 'loss',
        f32([[1., 2.], [0., 1.]]), np.array([[1], [0]], np.int64))
    err('multilabel/dense_label_out_of_range', H('MultiLabelHead', n_classes=2), 'loss',
        f32([[1., 2.], [0., 1.]]), np.array([[2, 0], [1, 1]], np.int64))
    err('multilabel/sparse_id_out_of_range', H('MultiLabelHead', n_classes=2), 'loss',
        f32([[1., 2.], [0., 1.]]), SparseRows([[2, 0], [1]], 'int64'))
    err('multilabel/label_dimension', H('MultiLabelHead', n_classes=2), 'loss',
        f32([[1., 2.], [0., 1.]]), np.array([[1], [1]], np.int64))
    err('multilabel/weights_shape', H('MultiLabelHead', n_classes=2, weight_column='w'), 'loss',
        f32([[1., 2.], [0., 1.]]), np.array([[1, 0], [0, 1]], np.int64),
        {'w': f32([[1., 2.], [3., 4.]])})
    err('regression/logits_dimension', H('RegressionHead', label_dimension=2), 'loss',
        f32([[1.], [2.]]), f32([[1., 2.], [3., 4.]]))
    err('regression/weights_shape', H('RegressionHead', label_dimension=2, weight_column='w'),
        'loss', f32([[1., 2.], [3., 4.]]), f32([[1., 2.], [3., 4.]]),
        {'w': f32([[1., 2., 3.], [4., 5., 6.]])})
    err('logistic/label_out_of_range', H('LogisticRegressionHead'), 'loss', two, f32([[1.5], [0.]]))
    err('multihead/split_logits',
        {'class': 'MultiHead', 'heads': [H('MultiLabelHead', n_classes=2, name='h1'),
                                         H('MultiLabelHead', n_classes=3, name='h2')]},
        'loss', f32([[1., 2., 3., 4.]]),
        {'h1': np.array([[1, 0]], np.int64), 'h2': np.array([[0, 1, 1]], np.int64)})
    err('multihead/missing_logits',
        {'class': 'MultiHead', 'heads': [H('BinaryClassHead', name='a'),
                                         H('RegressionHead', name='b')]},
        'loss', {'a': two}, {'a': np.array([[1], [0]], np.int64), 'b': two})
    err('multihead/missing_labels',
        {'class': 'MultiHead', 'heads': [H('BinaryClassHead', name='a'),
                                         H('RegressionHead', name='b')]},
        'loss', {'a': two, 'b': two}, {'a': np.array([[1], [0]], np.int64)})
    return e


def record_error(c: dict) -> dict:
    head = build_head(c['head'])
    out = {'id': c['id'], 'head': c['head'], 'call': c['call'], 'logits': encode(c['logits']),
           'labels': None if c['labels'] is None else encode(c['labels']),
           'features': encode(c['features']), 'keys': c['keys']}
    try:
        if c['call'] == 'predictions':
            if c['keys']:
                head.predictions(to_tf(c['logits']), c['keys'])
            else:
                head.predictions(to_tf(c['logits']))
        else:
            head.loss(to_tf(c['labels']), to_tf(c['logits']), to_tf(c['features']))
    except Exception as exc:  # noqa: BLE001 -- the point is to record whatever tf.estimator raised
        out['error_type'] = type(exc).__name__
        out['message'] = str(exc)
        return out
    raise AssertionError('error case {} did not raise'.format(c['id']))


# ---------------------------------------------------------------------------------------------
# Regularization losses (TF face only: the array face has no regularization).
# ---------------------------------------------------------------------------------------------

REGULARIZED = [  # (case id whose inputs are reused, regularization losses)
    ('binary/weights', [1.5, 0.5]),
    ('multilabel/all_args', [0.25]),
    ('regression/label_dimension2', [2.0, 1.0, 0.125]),
    ('multihead/head_weights', [1.5, 0.5]),
]


def record_regularized(recorded: dict[str, dict]) -> list[dict]:
    """loss() with regularization_losses on the first batch for each reduction, and
    update_metrics() with them after each batch (a `regularization_loss` key appears)."""
    out = []
    for cid, reg in REGULARIZED:
        c = recorded[cid]
        batches = [{k: decode(v) for k, v in b.items()} for b in c['batches']]
        reg_tf = [tf.constant(r, tf.float32) for r in reg]
        first = batches[0]
        loss = {r: float(build_head(c['head'], r).loss(
            to_tf(first['labels']), to_tf(first['logits']), to_tf(first['features']),
            regularization_losses=reg_tf).numpy()) for r in REDUCTIONS}
        head = build_head(c['head'])
        metrics = head.metrics(regularization_losses=reg_tf)
        results = []
        for b in batches:
            head.update_metrics(metrics, to_tf(b['features']), to_tf(b['logits']),
                                to_tf(b['labels']), regularization_losses=reg_tf)
            results.append(float_dict(metrics))
        out.append({'id': 'regularized/' + cid, 'case': cid, 'regularization_losses': reg,
                    'loss': loss, 'metrics': results})
    return out


def decode(enc: dict) -> Any:
    """Inverse of `encode` (the recorder reuses recorded inputs)."""
    if 'dtype' not in enc:
        return {k: decode(v) for k, v in enc.items()}
    if enc.get('sparse'):
        rows: list[list[Any]] = [[] for _ in range(enc['dense_shape'][0])]
        for (row, _), value in zip(enc['indices'], enc['values']):
            rows[row].append(value)
        return SparseRows(rows, enc['dtype'])
    if enc['dtype'] == 'str':
        return np.array(enc['data'], dtype=object).reshape(enc['shape'])
    return np.array(enc['data'], dtype=enc['dtype']).reshape(enc['shape'])


# ---------------------------------------------------------------------------------------------
# Non-finite logits: tf.estimator gives NaN losses silently (vectors E2, E3).
# ---------------------------------------------------------------------------------------------

def nonfinite_cases() -> list[dict]:
    return [
        case('nonfinite/binary_nan', H('BinaryClassHead'), f32([[np.nan], [1.], [-0.5]]),
             np.array([[1], [0], [0]], np.int64), sizes=(3,)),
        case('nonfinite/binary_inf', H('BinaryClassHead', thresholds=[0.5]),
             f32([[np.inf], [-np.inf], [0.25]]), np.array([[1], [0], [1]], np.int64), sizes=(3,)),
        case('nonfinite/multilabel_nan', H('MultiLabelHead', n_classes=2),
             f32([[np.nan, 1.], [1., -1.]]), np.array([[1, 0], [0, 1]], np.int64), sizes=(2,)),
        case('nonfinite/regression_inf', H('RegressionHead'), f32([[np.inf], [1.]]),
             f32([[0.], [2.]]), sizes=(2,)),
    ]


def main(argv: list[str]) -> None:
    path = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                        'tf215_cases.json')
    assert tf.__version__.startswith('2.15'), tf.__version__
    tf.config.run_functions_eagerly(True)
    record = {
        'recorded_with': {'tensorflow': tf.__version__,
                          'tensorflow_estimator': _estimator_version(),
                          'numpy': np.__version__, 'mode': 'eager'},
        'cases': [record_case(c) for c in build_cases()],
        'errors': [record_error(c) for c in error_cases()],
        'nonfinite': [record_case(c) for c in nonfinite_cases()],
    }
    record['regularized'] = record_regularized({c['id']: c for c in record['cases']})
    with open(path, 'w') as f:
        f.write(dump_one_per_line(record))
    print('wrote {} cases, {} error cases, {} non-finite and {} regularized cases to {}'.format(
        len(record['cases']), len(record['errors']), len(record['nonfinite']),
        len(record['regularized']), path))


def dump_one_per_line(record: dict) -> str:
    """JSON with one case per line: small enough to review, and diffs show which cases changed."""
    lines = ['{', ' "recorded_with": ' + json.dumps(record['recorded_with']) + ',']
    keys = ('cases', 'errors', 'nonfinite', 'regularized')
    for key in keys:
        items = [json.dumps(item, separators=(',', ':')) for item in record[key]]
        lines.append(' "{}": ['.format(key))
        lines.append(',\n'.join('  ' + item for item in items))
        lines.append(' ]' + (',' if key != keys[-1] else ''))
    lines.append('}')
    return '\n'.join(lines) + '\n'


def _estimator_version() -> str:
    from importlib.metadata import version
    return version('tensorflow-estimator')


if __name__ == '__main__':
    main(sys.argv)
