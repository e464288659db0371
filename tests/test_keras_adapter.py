"""heads.keras_adapter.HeadModel: training, evaluating and predicting with a head on Keras 3.

Expected values come from paths independent of the adapter: the head's own `update_metrics` and
`predictions` called eagerly on the same batches, and hand formulas in numpy (sigmoid
cross-entropy, L2 penalty, the SGD step).
"""
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')
keras = pytest.importorskip('keras')

import heads  # noqa: E402
from heads.keras_adapter import HeadModel, prediction_name  # noqa: E402

pytestmark = [pytest.mark.tf,
              pytest.mark.filterwarnings("ignore:Your input ran out of data:UserWarning")]

N, BATCH = 64, 16


class PickDense(keras.layers.Layer):
    """A body: one Dense layer on `features['x']` (other features, e.g. weights, pass by)."""

    def __init__(self, units, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(units, kernel_regularizer=kernel_regularizer)

    def call(self, features):
        return self.dense(features['x'])


def toy_data(seed=0):
    """Two features; classes are linearly separable (sign of x0 + x1, sign of x0 and of x1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, 2)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, size=(N, 1)).astype(np.float32)
    binary = (x[:, :1] + x[:, 1:] > 0).astype(np.float32)
    three = ((x[:, :1] > 0).astype(np.int64) + (x[:, 1:] > 0).astype(np.int64))
    target = (2.0 * x[:, :1] - x[:, 1:] + 0.5).astype(np.float32)
    return x, w, binary, three, target


def dataset(features, labels):
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(BATCH)


def make_model(head, units, seed=0, learning_rate=0.3, kernel_regularizer=None):
    keras.utils.set_random_seed(seed)
    model = HeadModel(PickDense(units, kernel_regularizer=kernel_regularizer), head)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    return model


def expected_metrics(model, head, ds):
    """The head's update_metrics over the same batches, eagerly, on persistent metric objects.

    For a MultiHead, `MultiHead.update_metrics` accumulates `loss/<head>` across calls while each
    call builds fresh per-head metrics; so the per-head keys come from every head's own
    `update_metrics` on metrics kept across batches (what an Estimator evaluation accumulated).
    """
    reg = list(model.losses) or None
    if isinstance(head, heads.MultiHead):
        multi = head.metrics(reg)
        per_head = {h.name: h.metrics() for h in head.heads}
        for features, labels in ds:
            logits = model.body(features)
            fresh = head.update_metrics(multi, features, logits, labels, regularization_losses=reg)
            split = tf.split(logits, [h.logits_dimension for h in head.heads], axis=-1)
            for sub, sub_logits in zip(head.heads, split):
                sub.update_metrics(per_head[sub.name], features, sub_logits, labels[sub.name])
        out = {key: fresh[key] for key in multi}
        for metrics in per_head.values():
            out.update(metrics)
    else:
        out = head.metrics(reg)
        for features, labels in ds:
            head.update_metrics(out, features, model.body(features), labels,
                                regularization_losses=reg)
    return {key: float(metric.result().numpy()) for key, metric in out.items()}


def assert_same_metrics(got, expected):
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


def check_predictions(model, head, ds):
    """predict returns the head's prediction keys (flattened) with the head's values."""
    got = model.predict(ds, verbose=0)
    parts = [head.predictions(model.body(features)) for features, _ in ds]
    expected = {prediction_name(key): np.concatenate([p[key].numpy() for p in parts])
                for key in parts[0]}
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key
        if value.dtype.kind in 'SO':
            assert got[key].tolist() == value.tolist(), key
        else:
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


# -------------------------------------------------------------------------------------------
# Import behaviour.
# -------------------------------------------------------------------------------------------

def test_import_heads_leaves_keras_adapter_and_tensorflow_out():
    code = ('import sys, heads\n'
            'heads.BinaryClassHead()\n'
            'print("tensorflow" in sys.modules, "heads.keras_adapter" in sys.modules)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ['False', 'False']


def test_lazy_attributes():
    assert heads.HeadModel is HeadModel
    assert heads.keras_adapter.HeadModel is HeadModel
    with pytest.raises(AttributeError, match='no_such_thing'):
        heads.no_such_thing  # noqa: B018


# -------------------------------------------------------------------------------------------
# Each head: loss goes down, evaluate = update_metrics, predict = predictions.
# -------------------------------------------------------------------------------------------

def test_binary_class_head_with_weight_column():
    x, w, binary, _, _ = toy_data()
    head = heads.BinaryClassHead(weight_column='w')
    ds = dataset({'x': x, 'w': w}, binary)
    model = make_model(head, 1)
    before = model.evaluate(ds, return_dict=True, verbose=0)
    history = model.fit(ds, epochs=5, verbose=0, shuffle=False).history
    losses = history['loss']
    assert sorted(history) == ['loss']  # no regularization, so no regularization_loss log
    assert len(losses) == 5 and losses[-1] < losses[0]
    after = model.evaluate(ds, return_dict=True, verbose=0)
    assert after['average_loss'] < before['average_loss']
    expected = expected_metrics(model, head, ds)
    assert_same_metrics(after, expected)
    assert 'regularization_loss' not in after
    # A second evaluation starts from reset metrics instead of accumulating on the first.
    assert_same_metrics(model.evaluate(ds, return_dict=True, verbose=0), expected)
    check_predictions(model, head, ds)
    # Degenerate evaluation sets: no positives (and half the weights zero), all weights zero.
    negatives = binary[:, 0] == 0
    half_zero = np.where(np.arange(N)[:, None] % 2 == 0, 0.0, w).astype(np.float32)[negatives]
    for weights in (half_zero, np.zeros_like(half_zero)):
        degenerate = dataset({'x': x[negatives], 'w': weights}, binary[negatives])
        got = model.evaluate(degenerate, return_dict=True, verbose=0)
        assert_same_metrics(got, expected_metrics(model, head, degenerate))
        assert got['label/mean'] == 0.0 and got['recall'] == 0.0
    assert model.evaluate(ds.take(0), return_dict=True, verbose=0) == {}  # no batch, no metrics


def test_multi_class_head():
    x, _, _, three, _ = toy_data(1)
    head = heads.MultiClassHead(3)
    ds = dataset({'x': x}, three)
    model = make_model(head, 3)
    losses = model.fit(ds, epochs=5, verbose=0, shuffle=False).history['loss']
    assert losses[-1] < losses[0]
    assert_same_metrics(model.evaluate(ds, return_dict=True, verbose=0),
                        expected_metrics(model, head, ds))
    check_predictions(model, head, ds)


def test_regression_head():
    x, _, _, _, target = toy_data(2)
    head = heads.RegressionHead()
    ds = dataset({'x': x}, target)
    model = make_model(head, 1, learning_rate=0.1)
    losses = model.fit(ds, epochs=4, verbose=0, shuffle=False).history['loss']
    assert losses[-1] < losses[0]
    got = model.evaluate(ds, return_dict=True, verbose=0)
    assert_same_metrics(got, expected_metrics(model, head, ds))
    check_predictions(model, head, ds)


def test_multi_head_dict_labels():
    x, _, binary, three, _ = toy_data(3)
    head = heads.MultiHead([heads.BinaryClassHead(name='click'),
                            heads.MultiClassHead(3, name='kind')], head_weights=[1.0, 0.5])
    labels = {'click': binary, 'kind': three}
    ds = dataset({'x': x}, labels)
    model = make_model(head, 4, kernel_regularizer=keras.regularizers.L2(0.001))
    history = model.fit(ds, epochs=5, verbose=0, shuffle=False).history
    assert sorted(history) == ['loss', 'regularization_loss']
    assert history['loss'][-1] < history['loss'][0]
    got = model.evaluate(ds, return_dict=True, verbose=0)
    for key in ('loss/click', 'auc/click', 'accuracy/kind', 'regularization_loss/click_kind'):
        assert key in got
    assert_same_metrics(got, expected_metrics(model, head, ds))
    # One batch: MultiHead.update_metrics called once is the whole reference.
    one = dataset({'x': x[:BATCH]}, {k: v[:BATCH] for k, v in labels.items()})
    features, batch_labels = next(iter(one))
    reg = list(model.losses)
    reference = head.update_metrics(head.metrics(reg), features, model.body(features),
                                    batch_labels, regularization_losses=reg)
    assert_same_metrics(model.evaluate(one, return_dict=True, verbose=0),
                        {k: float(m.result().numpy()) for k, m in reference.items()})
    check_predictions(model, head, ds)
    assert 'click/probabilities' in model.predict(one, verbose=0)


# -------------------------------------------------------------------------------------------
# Regularization, the training-loss definition and the gradient step, by hand.
# -------------------------------------------------------------------------------------------

def sigmoid_ce(z, y):
    """float64 sigmoid cross-entropy: max(z, 0) - z·y + log(1 + exp(-|z|))."""
    return np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))


def test_regularization_enters_loss_logs_and_gradient():
    x, _, binary, _, _ = toy_data(4)
    x2, y2 = x[:2 * BATCH].astype(np.float64), binary[:2 * BATCH].astype(np.float64)
    l2 = 0.05
    head = heads.BinaryClassHead()
    ds = dataset({'x': x[:2 * BATCH]}, binary[:2 * BATCH])

    # Learning rate 0: weights stay put, so every batch loss is computable from them.
    frozen = make_model(head, 1, learning_rate=0.0, kernel_regularizer=keras.regularizers.L2(l2))
    history = frozen.fit(ds, epochs=1, verbose=0, shuffle=False).history
    kernel, bias = (v.numpy().astype(np.float64) for v in frozen.body.dense.weights)
    penalty = l2 * np.sum(kernel ** 2)
    batch_losses = [np.mean(sigmoid_ce(x2[i:i + BATCH] @ kernel + bias, y2[i:i + BATCH]))
                    + penalty for i in (0, BATCH)]
    # `loss` = unweighted mean over the epoch's batches of the regularized batch loss.
    np.testing.assert_allclose(history['loss'][0], np.mean(batch_losses), rtol=1e-5)
    np.testing.assert_allclose(history['regularization_loss'][0], penalty, rtol=1e-5)
    # The same through the head itself and model.losses.
    features = {'x': tf.constant(x[:BATCH])}
    with_reg = head.loss(binary[:BATCH], frozen.body(features), features,
                         regularization_losses=list(frozen.losses))
    np.testing.assert_allclose(float(with_reg), batch_losses[0], rtol=1e-5)
    got = frozen.evaluate(ds, return_dict=True, verbose=0)
    np.testing.assert_allclose(got['regularization_loss'], penalty, rtol=1e-5)
    assert_same_metrics(got, expected_metrics(frozen, head, ds))

    # One SGD step on one batch: w ← w − lr·(Xᵀ(σ(Xw + b) − y)/B + 2·l2·w), b ← b − lr·mean(σ − y).
    lr = 0.5
    step = make_model(head, 1, learning_rate=lr, kernel_regularizer=keras.regularizers.L2(l2))
    one = dataset({'x': x[:BATCH]}, binary[:BATCH])
    step.body(features)  # build, to read the initial weights
    k0, b0 = (v.numpy().astype(np.float64) for v in step.body.dense.weights)
    step.fit(one, epochs=1, verbose=0, shuffle=False)
    k1, b1 = (v.numpy().astype(np.float64) for v in step.body.dense.weights)
    xb, yb = x2[:BATCH], y2[:BATCH]
    residual = 1.0 / (1.0 + np.exp(-(xb @ k0 + b0))) - yb
    np.testing.assert_allclose(k1, k0 - lr * (xb.T @ residual / BATCH + 2.0 * l2 * k0), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(b1, b0 - lr * np.mean(residual, axis=0), rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------------------------------
# Refusals.
# -------------------------------------------------------------------------------------------

def test_refusals():
    x, w, binary, _, _ = toy_data()
    head = heads.BinaryClassHead(weight_column='w')
    with pytest.raises(TypeError, match='head must be a heads.Head'):
        HeadModel(PickDense(1), 'binary')
    with pytest.raises(TypeError, match='body must be a keras.layers.Layer'):
        HeadModel(lambda features: features['x'], head)
    model = HeadModel(PickDense(1), head)
    with pytest.raises(ValueError, match='do not pass loss= to compile'):
        model.compile(optimizer='sgd', loss='mse')
    with pytest.raises(ValueError, match='do not pass metrics= to compile'):
        model.compile(optimizer='sgd', metrics=['accuracy'])
    model.compile(optimizer='sgd')
    weighted = tf.data.Dataset.from_tensor_slices(({'x': x, 'w': w}, binary, w[:, 0])).batch(16)
    with pytest.raises(ValueError, match="weight_column 'w' instead of passing sample_weight"):
        model.fit(weighted, epochs=1, verbose=0, shuffle=False)
