"""Both faces of every head against values recorded from the real tf.estimator 2.15.

`tests/golden/tf215_cases.json` was written by `tests/golden/record_tf215.py` running TensorFlow
2.15.1 + tensorflow-estimator 2.15.0 in eager mode (see tests/golden/README.md). Each case holds a
head's constructor arguments, one or two input batches, and what tf.estimator returned: `loss` of
the first batch for each loss reduction, `loss_concat` of all batches as one, `predictions` of the
first batch, `metrics` after each successive `update_metrics` call on one metrics dict (streaming),
and `metrics_concat` after one update with all batches concatenated. Error cases hold the exact
exception tf.estimator raised for an invalid input; `regularized` cases the loss and metrics with
regularization losses (TF face only), `nonfinite` cases NaN / ±inf logits.

TF face (marked `tf`): `heads.X(...).loss / predictions / update_metrics(metrics(), ...)` give the
recorded values. Array face (no TensorFlow): `new_state().update(...)` once per recorded batch gives
the recorded metrics after each update, `state.loss()` the recorded loss of the concatenated batches
for the head's reduction, `array_predictions` the recorded predictions, and `array_loss` sums to the
recorded loss for each reduction.

One documented difference: after several updates a MultiHead's array state accumulates every head's
metrics over all data (dataset semantics), whereas tf.estimator's eager `update_metrics` keeps only
the last batch's per-head metrics; the array face of a MultiHead is therefore held, after the last
update, to `metrics_concat` (tf.estimator on the concatenated data as one batch).
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

import heads

GOLDEN_PATH = os.path.join(os.path.dirname(__file__), 'golden', 'tf215_cases.json')
with open(GOLDEN_PATH) as _f:
    GOLDEN = json.load(_f)
CASES = GOLDEN['cases']
ERRORS = GOLDEN['errors']
NONFINITE = GOLDEN['nonfinite']
REGULARIZED = GOLDEN['regularized']
CASES_BY_ID = {c['id']: c for c in CASES}
REDUCTIONS = ('sum', 'sum_over_batch_size', 'auto')

RTOL = 1e-5
ATOL = 1e-6


# ---------------------------------------------------------------------------------------------
# Decoding the recording.
# ---------------------------------------------------------------------------------------------

def to_numpy(enc: Any) -> Any:
    """A recorded value for the array face: ndarray (strings as object arrays of str), per-row
    lists of class ids / names for sparse labels, dicts of those."""
    if enc is None:
        return None
    if 'dtype' not in enc:
        return {k: to_numpy(v) for k, v in enc.items()}
    if enc.get('sparse'):
        rows: list[list[Any]] = [[] for _ in range(enc['dense_shape'][0])]
        for (row, _), value in zip(enc['indices'], enc['values']):
            rows[row].append(value)
        return rows
    if enc['dtype'] == 'str':
        return np.array(enc['data'], dtype=object).reshape(enc['shape'])
    return np.array(enc['data'], dtype=enc['dtype']).reshape(enc['shape'])


def to_tf(enc: Any) -> Any:
    """A recorded value for the TF face: tf.Tensor / tf.SparseTensor, dicts of those."""
    import tensorflow as tf
    if enc is None:
        return None
    if 'dtype' not in enc:
        return {k: to_tf(v) for k, v in enc.items()}
    if enc.get('sparse'):
        dtype = tf.string if enc['dtype'] == 'str' else tf.int64
        return tf.SparseTensor(
            indices=tf.constant(enc['indices'], tf.int64, shape=(len(enc['values']), 2)),
            values=tf.constant(enc['values'], dtype), dense_shape=enc['dense_shape'])
    if enc['dtype'] == 'str':
        return tf.constant(np.array(enc['data'], dtype=object).reshape(enc['shape']), tf.string)
    return tf.constant(to_numpy(enc))


def build_head(spec: dict, reduction: str | None = None) -> heads.Head:
    """headstream's head for a recorded spec, optionally with another loss reduction."""
    if spec['class'] == 'MultiHead':
        return heads.MultiHead([build_head(s, reduction) for s in spec['heads']],
                               head_weights=spec.get('head_weights'))
    args = dict(spec.get('args', {}))
    if reduction is not None:
        args['loss_reduction'] = reduction
    return getattr(heads, spec['class'])(**args)


def head_reduction(spec: dict) -> str:
    if spec['class'] == 'MultiHead':
        return head_reduction(spec['heads'][0])
    return spec.get('args', {}).get('loss_reduction', 'sum_over_batch_size')


def concat_batches(batches: list[dict], role: str) -> Any:
    """All recorded batches' `role` values as one (the data `loss_concat` was recorded on)."""
    parts = [to_numpy(b[role]) for b in batches]
    if isinstance(parts[0], dict):
        return {k: _concat([p[k] for p in parts]) for k in parts[0]}
    return _concat(parts)


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], list):
        return [row for p in parts for row in p]
    return np.concatenate(parts, axis=0)


def assert_metrics_close(actual: dict, expected: dict, what: str) -> None:
    actual = {k: float(v) for k, v in actual.items()}
    assert sorted(actual) == sorted(expected), what
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=RTOL, atol=ATOL,
                                   err_msg='{}: {}'.format(what, key))


def prediction_key(recorded_key: Any) -> Any:
    return tuple(recorded_key) if isinstance(recorded_key, list) else recorded_key


def assert_prediction_equal(actual: np.ndarray, enc: dict, what: str) -> None:
    """Strings compare as str exactly; numbers by dtype, shape and value (rtol 1e-5)."""
    expected = to_numpy(enc)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, what
    if enc['dtype'] == 'str':
        if actual.dtype == object and actual.size and isinstance(actual.flat[0], bytes):
            pytest.fail('{}: strings are bytes, expected str'.format(what))
        np.testing.assert_array_equal(actual.astype(str), expected.astype(str), err_msg=what)
    else:
        assert actual.dtype == expected.dtype, '{}: dtype {} != {}'.format(
            what, actual.dtype, expected.dtype)
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)


def case_params(cases: list[dict], exclude_multi: bool = False) -> list:
    return [pytest.param(c, id=c['id']) for c in cases
            if not (exclude_multi and c['head']['class'] == 'MultiHead')]


def test_recording_is_complete():
    """The recording covers every head class, both label forms of MultiLabelHead, streaming and
    degenerate batches, and carries the version it was recorded with."""
    assert GOLDEN['recorded_with']['tensorflow'].startswith('2.15')
    assert GOLDEN['recorded_with']['tensorflow_estimator'].startswith('2.15')
    classes = {c['head']['class'] for c in CASES}
    assert classes == {'BinaryClassHead', 'MultiClassHead', 'MultiLabelHead', 'RegressionHead',
                       'PoissonRegressionHead', 'LogisticRegressionHead', 'MultiHead'}
    assert len(CASES) >= 40 and len(ERRORS) >= 10
    assert sum(len(c['batches']) == 2 for c in CASES) >= 30
    assert any(b['labels'].get('sparse') for c in CASES for b in c['batches']
               if 'dtype' in b['labels'])
    ids = [c['id'] for c in CASES] + [e['id'] for e in ERRORS]
    assert len(ids) == len(set(ids))


def test_recording_agrees_with_hand_derivations():
    """Spot checks of the recorder against arithmetic (vectors B1 and E6, whose
    expected values the cases' notes state)."""
    by_id = {c['id']: c for c in CASES}
    b1 = by_id['binary/spec_b1']
    # logits [45, -41], labels [1, 1]: per-example loss [~0, 41 + log(1 + e^-41)] -> sum 41.
    assert b1['loss'] == {'sum': 41.0, 'sum_over_batch_size': 41.0 / 2, 'auto': 41.0 / 2}
    assert b1['metrics'][0]['accuracy'] == 0.5 and b1['metrics'][0]['auc'] == 0.0
    e6 = by_id['multihead/spec_e6_streaming']['metrics'][1]
    sce_2 = np.log1p(np.exp(-2.0))  # sigmoid cross-entropy of logit 2, label 1
    np.testing.assert_allclose(e6['loss/a'], (sce_2 + (2.0 + sce_2)) / 2, rtol=1e-6)
    assert e6['loss/b'] == (1.0 ** 2 + 3.0 ** 2) / 2
    assert e6['average_loss/b'] == 9.0  # the last batch only: tf.estimator's eager quirk


def _scored_logits(spec: dict, logits: Any) -> list[tuple[np.ndarray, dict]]:
    """(logits, head spec) of every sigmoid-scored head (binary, multi-label) of a case."""
    if spec['class'] in ('BinaryClassHead', 'MultiLabelHead'):
        return [(logits, spec)]
    if spec['class'] != 'MultiHead':
        return []
    out, offset = [], 0
    for sub in spec['heads']:
        args = sub.get('args', {})
        dim = {'BinaryClassHead': 1}.get(sub['class'], args.get('n_classes',
                                                                 args.get('label_dimension', 1)))
        part = logits[sub['args']['name']] if isinstance(logits, dict) else \
            logits[..., offset:offset + dim]
        offset += dim
        out.extend(_scored_logits(sub, part))
    return out


def test_recorded_scores_keep_clear_of_float32_edges():
    """No recorded score lies within 16 float32 ulp of an AUC bucket edge i/199 or of a threshold
    (exact scores aside: logit 0 gives 0.5, |logit| > 17 saturates). TF's float32 sigmoid differs
    by a few ulp between versions and machines (README.md), so an input that close would make the
    golden AUC or thresholded values depend on the sigmoid's last bits rather than on the head."""
    checked = 0
    for case in CASES:
        for batch in case['batches']:
            for logits, spec in _scored_logits(case['head'], to_numpy(batch['logits'])):
                x = np.asarray(logits, dtype=np.float64).ravel()
                p = 1.0 / (1.0 + np.exp(-x))
                ulp = np.spacing(p.astype(np.float32)).astype(np.float64)
                edges = [np.round(p * 199) / 199] + [
                    np.float64(np.float32(t)) for t in spec['args'].get('thresholds', []) + [0.5]]
                dist = np.min([np.abs(p - e) / ulp for e in edges], axis=0)
                exact = (x == 0) | (np.abs(x) > 17)
                assert np.all(dist[~exact] > 16), case['id']
                checked += int((~exact).sum())
    assert checked > 500


# ---------------------------------------------------------------------------------------------
# TF face.
# ---------------------------------------------------------------------------------------------

@pytest.mark.tf
@pytest.mark.parametrize('case', case_params(CASES))
def test_tf_face_loss(case):
    """loss() of the first batch and of all batches as one, for every loss reduction."""
    first = case['batches'][0]
    whole = {role: _concat_tf(case['batches'], role) for role in ('labels', 'logits', 'features')}
    for reduction in REDUCTIONS:
        head = build_head(case['head'], reduction)
        loss = head.loss(to_tf(first['labels']), to_tf(first['logits']), to_tf(first['features']))
        np.testing.assert_allclose(float(loss), case['loss'][reduction], rtol=RTOL, atol=ATOL,
                                   err_msg='first batch, ' + reduction)
        loss = head.loss(whole['labels'], whole['logits'], whole['features'])
        np.testing.assert_allclose(float(loss), case['loss_concat'][reduction], rtol=RTOL,
                                   atol=ATOL, err_msg='all batches, ' + reduction)


def _concat_tf(batches: list[dict], role: str) -> Any:
    """The concatenated batches as TF values (sparse labels re-encoded as one SparseTensor)."""
    import tensorflow as tf
    value = concat_batches(batches, role)

    def convert(v):
        if isinstance(v, list):  # per-row class ids / names -> SparseTensor
            indices = [[i, j] for i, row in enumerate(v) for j in range(len(row))]
            values = [x for row in v for x in row]
            dtype = tf.string if values and isinstance(values[0], str) else tf.int64
            return tf.SparseTensor(tf.constant(indices, tf.int64, shape=(len(values), 2)),
                                   tf.constant(values, dtype),
                                   [len(v), max([len(r) for r in v] + [1])])
        if v.dtype == object:
            return tf.constant(v, tf.string)
        return tf.constant(v)

    if isinstance(value, dict):
        return {k: convert(v) for k, v in value.items()}
    return convert(value)


@pytest.mark.tf
@pytest.mark.parametrize('case', case_params(CASES))
def test_tf_face_predictions(case):
    _check_tf_predictions(case)


def _check_tf_predictions(case: dict) -> None:
    head = build_head(case['head'])
    preds = head.predictions(to_tf(case['batches'][0]['logits']))
    expected = {prediction_key(p['key']): p['value'] for p in case['predictions']}
    assert sorted(map(str, preds)) == sorted(map(str, expected))
    for key, enc in expected.items():
        value = preds[key].numpy()
        if enc['dtype'] == 'str':
            value = np.vectorize(lambda b: b.decode(), otypes=[object])(value) if value.size \
                else value.astype(str)
        assert_prediction_equal(value, enc, str(key))


@pytest.mark.tf
@pytest.mark.parametrize('case', case_params(CASES))
def test_tf_face_update_metrics_streaming(case):
    """update_metrics on one metrics dict, batch after batch: tf.estimator's values after each."""
    head = build_head(case['head'])
    metrics = head.metrics()
    for i, (batch, expected) in enumerate(zip(case['batches'], case['metrics'])):
        head.update_metrics(metrics, to_tf(batch['features']), to_tf(batch['logits']),
                            to_tf(batch['labels']))
        assert_metrics_close({k: m.result() for k, m in metrics.items()}, expected,
                             'after batch {}'.format(i + 1))


@pytest.mark.tf
@pytest.mark.parametrize('case', case_params(CASES))
def test_tf_face_update_metrics_one_batch(case):
    """update_metrics once with all batches concatenated."""
    head = build_head(case['head'])
    metrics = head.update_metrics(head.metrics(), _concat_tf(case['batches'], 'features'),
                                  _concat_tf(case['batches'], 'logits'),
                                  _concat_tf(case['batches'], 'labels'))
    assert_metrics_close({k: m.result() for k, m in metrics.items()}, case['metrics_concat'],
                         'one batch')


@pytest.mark.tf
@pytest.mark.parametrize('err', [pytest.param(e, id=e['id']) for e in ERRORS])
def test_tf_face_errors(err):
    """Invalid inputs raise tf.estimator's exception with its exact message."""
    head = build_head(err['head'])
    exc_type = {'ValueError': ValueError, 'TypeError': TypeError}[err['error_type']]
    with pytest.raises(exc_type) as info:
        if err['call'] == 'predictions' and err['keys']:
            head.predictions(to_tf(err['logits']), err['keys'])
        elif err['call'] == 'predictions':
            head.predictions(to_tf(err['logits']))
        else:
            head.loss(to_tf(err['labels']), to_tf(err['logits']), to_tf(err['features']))
    assert str(info.value) == err['message']


@pytest.mark.tf
@pytest.mark.parametrize('reg', [pytest.param(r, id=r['id']) for r in REGULARIZED])
def test_tf_face_regularization_losses(reg):
    """loss() adds the regularization losses after reduction; metrics(regularization_losses)
    adds a `regularization_loss` mean (under the MultiHead's own name for a MultiHead)."""
    import tensorflow as tf
    case = CASES_BY_ID[reg['case']]
    reg_tf = [tf.constant(r, tf.float32) for r in reg['regularization_losses']]
    first = case['batches'][0]
    for reduction in REDUCTIONS:
        loss = build_head(case['head'], reduction).loss(
            to_tf(first['labels']), to_tf(first['logits']), to_tf(first['features']),
            regularization_losses=reg_tf)
        np.testing.assert_allclose(float(loss), reg['loss'][reduction], rtol=RTOL, atol=ATOL,
                                   err_msg=reduction)
    head = build_head(case['head'])
    metrics = head.metrics(regularization_losses=reg_tf)
    for i, (batch, expected) in enumerate(zip(case['batches'], reg['metrics'])):
        head.update_metrics(metrics, to_tf(batch['features']), to_tf(batch['logits']),
                            to_tf(batch['labels']), regularization_losses=reg_tf)
        assert_metrics_close({k: m.result() for k, m in metrics.items()}, expected,
                             'after batch {}'.format(i + 1))


@pytest.mark.tf
@pytest.mark.parametrize('case', case_params(NONFINITE))
def test_tf_face_nonfinite_logits(case):
    """NaN / ±inf logits: tf.estimator's NaN losses and metrics, silently (NaN equals NaN)."""
    batch = case['batches'][0]
    for reduction in REDUCTIONS:
        loss = build_head(case['head'], reduction).loss(
            to_tf(batch['labels']), to_tf(batch['logits']), to_tf(batch['features']))
        np.testing.assert_allclose(float(loss), case['loss'][reduction], err_msg=reduction)
    head = build_head(case['head'])
    metrics = head.update_metrics(head.metrics(), to_tf(batch['features']),
                                  to_tf(batch['logits']), to_tf(batch['labels']))
    assert_metrics_close({k: m.result() for k, m in metrics.items()}, case['metrics'][0], 'metrics')
    _check_tf_predictions(case)


CLASSIFIER_CASES = [pytest.param(c, id=c['id']) for c in CASES if c['head']['class'] in
                    ('BinaryClassHead', 'MultiClassHead', 'MultiLabelHead')]


@pytest.mark.tf
@pytest.mark.parametrize('case', CLASSIFIER_CASES)
def test_tf_face_predictions_keys_subset(case):
    """predictions(logits, keys) returns just those keys (classifiers: RegressionHead has no
    `keys` argument, a MultiHead ignores it)."""
    expected = {p['key']: p['value'] for p in case['predictions'][-2:]}
    preds = build_head(case['head']).predictions(to_tf(case['batches'][0]['logits']),
                                                 list(expected))
    assert sorted(preds) == sorted(expected)
    for key, enc in expected.items():
        value = preds[key].numpy()
        if enc['dtype'] == 'str':
            value = np.vectorize(lambda b: b.decode(), otypes=[object])(value)
        assert_prediction_equal(value, enc, key)


# ---------------------------------------------------------------------------------------------
# Array face (no TensorFlow).
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('case', case_params(CASES))
def test_array_face_state(case):
    """One state update per recorded batch: result() after each update, loss() at the end."""
    head = build_head(case['head'])
    multi = case['head']['class'] == 'MultiHead'
    state = head.new_state()
    n = len(case['batches'])
    for i, (batch, expected) in enumerate(zip(case['batches'], case['metrics'])):
        state = state.update(to_numpy(batch['labels']), to_numpy(batch['logits']),
                             to_numpy(batch['features']))
        if multi and i > 0:
            # Dataset semantics (see the module docstring): all data seen so far as one batch. The
            # recording has that value for the last update only.
            if i == n - 1:
                assert_metrics_close(state.result(), case['metrics_concat'],
                                     'after batch {} (as one batch)'.format(i + 1))
            continue
        assert_metrics_close(state.result(), expected, 'after batch {}'.format(i + 1))
    np.testing.assert_allclose(state.loss(), case['loss_concat'][head_reduction(case['head'])],
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('case', case_params(CASES))
def test_array_face_state_one_batch(case):
    """All batches concatenated in a single update give tf.estimator's single-batch values."""
    head = build_head(case['head'])
    state = head.new_state().update(concat_batches(case['batches'], 'labels'),
                                    concat_batches(case['batches'], 'logits'),
                                    concat_batches(case['batches'], 'features'))
    assert_metrics_close(state.result(), case['metrics_concat'], 'one batch')
    np.testing.assert_allclose(state.loss(), case['loss_concat'][head_reduction(case['head'])],
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('case', case_params(CASES))
def test_array_face_state_merge(case):
    """One state per batch, merged last-to-first: the concatenated data's values, and merging
    leaves the merged-in state unchanged."""
    head = build_head(case['head'])
    states = [head.new_state().update(to_numpy(b['labels']), to_numpy(b['logits']),
                                      to_numpy(b['features'])) for b in case['batches']]
    first_alone = states[0].result()
    merged = states[-1]
    for state in reversed(states[:-1]):
        merged = merged.merge(state)
    assert_metrics_close(merged.result(), case['metrics_concat'], 'merged')
    np.testing.assert_allclose(merged.loss(), case['loss_concat'][head_reduction(case['head'])],
                               rtol=RTOL, atol=ATOL)
    if len(states) > 1:
        assert states[0].result() == first_alone


@pytest.mark.parametrize('case', case_params(CASES))
def test_array_face_predictions(case):
    _check_array_predictions(case)


def _check_array_predictions(case: dict) -> None:
    head = build_head(case['head'])
    preds = head.array_predictions(to_numpy(case['batches'][0]['logits']))
    expected = {prediction_key(p['key']): p['value'] for p in case['predictions']}
    assert sorted(map(str, preds)) == sorted(map(str, expected))
    for key, enc in expected.items():
        assert_prediction_equal(preds[key], enc, str(key))


@pytest.mark.parametrize('case', case_params(CASES, exclude_multi=True))
def test_array_face_array_loss(case):
    """Per-example weighted unreduced loss: its sum is the 'sum' loss, its mean over elements the
    'sum_over_batch_size' (and 'auto') loss, on the first batch and on all batches as one."""
    head = build_head(case['head'])
    first = case['batches'][0]
    whole = tuple(concat_batches(case['batches'], role)
                  for role in ('labels', 'logits', 'features'))
    inputs = [((to_numpy(first['labels']), to_numpy(first['logits']), to_numpy(first['features'])),
               case['loss'], 'first batch'),
              (whole, case['loss_concat'], 'all batches')]
    for (labels, logits, features), expected, what in inputs:
        per_example = np.asarray(head.array_loss(labels, logits, features), dtype=np.float64)
        assert per_example.shape[:-1] == logits.shape[:-1], what
        np.testing.assert_allclose(per_example.sum(), expected['sum'], rtol=RTOL, atol=ATOL,
                                   err_msg=what + ', sum')
        mean = per_example.sum() / per_example.size if per_example.size else 0.0
        for reduction in ('sum_over_batch_size', 'auto'):
            np.testing.assert_allclose(mean, expected[reduction], rtol=RTOL, atol=ATOL,
                                       err_msg=what + ', ' + reduction)


@pytest.mark.parametrize('err', [pytest.param(e, id=e['id']) for e in ERRORS])
def test_array_face_errors(err):
    """The array face refuses the same inputs with the same exception type, its message holding
    tf.estimator's (it may add where the value came from)."""
    head = build_head(err['head'])
    exc_type = {'ValueError': ValueError, 'TypeError': TypeError}[err['error_type']]
    with pytest.raises(exc_type) as info:
        if err['call'] == 'predictions':
            head.array_predictions(to_numpy(err['logits']), err['keys'])
        else:
            head.new_state().update(to_numpy(err['labels']), to_numpy(err['logits']),
                                    to_numpy(err['features']))
    assert err['message'] in str(info.value)


@pytest.mark.parametrize('case', case_params(NONFINITE))
def test_array_face_nonfinite_predictions(case):
    """Non-finite logits: the same predictions as tf.estimator (NaN equals NaN)."""
    _check_array_predictions(case)


@pytest.mark.parametrize('case', case_params(NONFINITE))
def test_array_face_nonfinite_invalid_rows(case):
    """invalid_rows reports exactly the rows holding non-finite logits, under the role 'logits'
    (the TF face computes NaN silently; the pipeline refuses such rows)."""
    batch = case['batches'][0]
    logits = to_numpy(batch['logits'])
    head = build_head(case['head'])
    found = [(role, mask) for role, _, mask in head.invalid_rows(
        to_numpy(batch['labels']), logits, to_numpy(batch['features']))]
    roles = [role for role, _ in found]
    assert roles == ['logits'], found
    expected = ~np.isfinite(logits).reshape(len(logits), -1).all(axis=1)
    np.testing.assert_array_equal(np.asarray(found[0][1], dtype=bool), expected)


def _sparse_cases() -> list:
    def has_sparse(labels):
        if 'dtype' not in labels:
            return any(has_sparse(v) for v in labels.values())
        return bool(labels.get('sparse'))
    return [pytest.param(c, id=c['id']) for c in CASES if has_sparse(c['batches'][0]['labels'])]


@pytest.mark.parametrize('form', ['object_array', 'arrow_list'])
@pytest.mark.parametrize('case', _sparse_cases())
def test_array_face_class_id_label_forms(case, form):
    """Class ids (or names) per row as an object array of lists or an Arrow ListArray give the
    same values as per-row Python lists."""
    import pyarrow as pa

    def convert(v):
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        if not isinstance(v, list):
            return v
        if form == 'arrow_list':
            return pa.array(v)
        arr = np.empty(len(v), dtype=object)
        arr[:] = [list(row) for row in v]
        return arr

    head = build_head(case['head'])
    state = head.new_state().update(convert(concat_batches(case['batches'], 'labels')),
                                    concat_batches(case['batches'], 'logits'),
                                    concat_batches(case['batches'], 'features'))
    assert_metrics_close(state.result(), case['metrics_concat'], form)
    np.testing.assert_allclose(state.loss(), case['loss_concat'][head_reduction(case['head'])],
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('case', CLASSIFIER_CASES)
def test_array_face_predictions_keys_subset(case):
    """array_predictions(logits, keys) returns just those keys, with tf.estimator's values."""
    expected = {p['key']: p['value'] for p in case['predictions'][-2:]}
    head = build_head(case['head'])
    preds = head.array_predictions(to_numpy(case['batches'][0]['logits']), list(expected))
    assert sorted(preds) == sorted(expected)
    for key, enc in expected.items():
        assert_prediction_equal(preds[key], enc, key)
