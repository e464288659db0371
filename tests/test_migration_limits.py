"""docs/migration.md's list of what cannot work on TF 2.21: each refusal is a clear error."""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

import heads  # noqa: E402

pytestmark = pytest.mark.tf

TRAIN_ARGS = ({}, heads.ModeKeys.TRAIN, np.array([[1.]], np.float32), np.array([[1]]))
NOT_KERAS = r'^The given optimizer is not a tf\.keras\.optimizers\.Optimizer instance\. '


class Keras2StyleOptimizer:
    """What tf.estimator 2.15 called: `get_updates(loss, params)` returning update ops."""

    def get_updates(self, loss, params):  # pragma: no cover - never called
        raise AssertionError('get_updates must not be called')


def test_the_estimator_training_loop_is_gone():
    assert not hasattr(tf, 'estimator')
    assert not hasattr(heads, 'Estimator')


def test_keras2_get_updates_optimizer_is_refused_clearly():
    with pytest.raises(ValueError, match=NOT_KERAS + r".*Keras2StyleOptimizer'>\. It looks like "
                                         r'a Keras 2 optimizer \(it has get_updates\)'):
        heads.BinaryClassHead().create_estimator_spec(*TRAIN_ARGS, optimizer=Keras2StyleOptimizer(),
                                                      trainable_variables=[])


def test_legacy_keras_optimizers_cannot_be_built():
    with pytest.raises(ImportError, match='keras.optimizers.legacy. is not supported in Keras 3'):
        tf.keras.optimizers.legacy.SGD(0.1)


def test_tf1_optimizer_is_refused_clearly():
    with pytest.raises(ValueError, match=NOT_KERAS + r'.*TF 1\.x optimizers'):
        heads.RegressionHead().create_estimator_spec(
            *TRAIN_ARGS, optimizer=tf.compat.v1.train.GradientDescentOptimizer(0.1),
            trainable_variables=[])


def test_eager_optimizer_training_needs_a_graph():
    with pytest.raises(ValueError, match=r'^An optimizer needs the loss as a graph tensor'):
        heads.RegressionHead().create_estimator_spec(
            *TRAIN_ARGS, optimizer=tf.keras.optimizers.SGD(0.1),
            trainable_variables=[tf.Variable(1.)])
