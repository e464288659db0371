"""`heads.logistic_regression_head`: tf.contrib.estimator's function (seed page), its signature,
and the page's custom model_fn example run on TF 2.21.

Hand arithmetic: x = (1, 2), labels (1, 0), one weight w = 0 → logits 0, loss ln 2 per example;
d loss / dw = mean((σ(0) − z)·x) = ((0.5 − 1)·1 + (0.5 − 0)·2) / 2 = 0.25.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import heads


def test_signature_and_defaults_are_the_seed_pages():
    params = inspect.signature(heads.logistic_regression_head).parameters
    assert [(p.name, p.default) for p in params.values()] == [
        ('weight_column', None), ('loss_reduction', 'sum_over_batch_size'), ('name', None)]
    head = heads.logistic_regression_head()
    assert type(head) is heads.LogisticRegressionHead
    assert (head.weight_column, head.loss_reduction, head.name, head.logits_dimension) == (
        None, 'sum_over_batch_size', None, 1)
    named = heads.logistic_regression_head('w', 'sum', 'lr')
    assert (named.weight_column, named.loss_reduction, named.name) == ('w', 'sum', 'lr')


def test_tf1_reduction_strings_map_exactly_others_are_refused():
    assert heads.logistic_regression_head(
        loss_reduction='weighted_sum_over_batch_size').loss_reduction == 'sum_over_batch_size'
    assert heads.logistic_regression_head(loss_reduction='weighted_sum').loss_reduction == 'sum'
    with pytest.raises(ValueError, match=r'^Invalid loss_reduction: weighted_mean\.'):
        heads.logistic_regression_head(loss_reduction='weighted_mean')


@pytest.mark.tf
def test_the_seed_pages_model_fn_example_runs():
    import tensorflow as tf
    w = tf.Variable([[0.]])
    # Created outside tf.function: a Keras 3 optimizer makes variables when built.
    adagrad = tf.keras.optimizers.Adagrad(learning_rate=0.1)

    def _my_model_fn(features, labels, mode):  # the page's example; Keras model → one weight
        my_head = heads.logistic_regression_head()
        logits = tf.matmul(features['x'], w)
        return my_head.create_estimator_spec(
            features=features, mode=mode, labels=labels,
            optimizer=adagrad,
            trainable_variables=[w], logits=logits)

    @tf.function
    def train_step(x, y):
        spec = _my_model_fn({'x': x}, y, heads.ModeKeys.TRAIN)
        with tf.control_dependencies([spec.train_op]):
            return tf.identity(spec.loss)

    loss = train_step(tf.constant([[1.], [2.]]), tf.constant([[1.], [0.]]))
    assert float(loss) == pytest.approx(math.log(2.), abs=1e-6)
    # Adagrad: accumulator 0.1 + 0.25², step 0.1 · 0.25 / sqrt(accumulator).
    assert float(w[0, 0]) == pytest.approx(-0.1 * 0.25 / math.sqrt(0.1 + 0.25 ** 2), rel=1e-4)
    predict = _my_model_fn({'x': np.array([[1.]], np.float32)}, None, heads.ModeKeys.PREDICT)
    assert sorted(predict.predictions) == ['logits', 'predictions']
    assert isinstance(predict.export_outputs['serving_default'], heads.RegressionOutput)


@pytest.mark.tf
def test_the_seed_pages_tf1_optimizer_is_refused_clearly():
    import tensorflow as tf
    head = heads.logistic_regression_head()
    with pytest.raises(ValueError, match=r'^The given optimizer is not a '
                                         r'tf\.keras\.optimizers\.Optimizer instance\.'):
        head.create_estimator_spec({}, heads.ModeKeys.TRAIN, np.zeros([1, 1], np.float32),
                                   np.ones([1, 1], np.float32),
                                   optimizer=tf.compat.v1.train.AdagradOptimizer(0.1),
                                   trainable_variables=[])
