"""headstream heads: tf.estimator 2.15's Head family on current TensorFlow, and in numpy.

`import heads` never imports TensorFlow; the TF face imports it on first use.
"""
from heads.base import Head
from heads.binary_class_head import BinaryClassHead
from heads.contrib import logistic_regression_head
from heads.keys import MetricKeys, ModeKeys, PredictionKeys, Reduction, ServingKeys
from heads.multi_class_head import MultiClassHead, binary_or_multi_class_head
from heads.multi_head import MultiHead
from heads.multi_label_head import MultiLabelHead
from heads.regression_head import (LogisticRegressionHead, PoissonRegressionHead,
                                   RegressionHead)
from heads.spec import ClassificationOutput, EstimatorSpec, PredictOutput, RegressionOutput

__all__ = [
    'Head', 'BinaryClassHead', 'MultiClassHead', 'MultiLabelHead', 'RegressionHead',
    'LogisticRegressionHead', 'PoissonRegressionHead', 'MultiHead', 'ModeKeys', 'EstimatorSpec',
    'MetricKeys', 'PredictionKeys', 'ServingKeys', 'Reduction', 'ClassificationOutput',
    'RegressionOutput', 'PredictOutput', 'binary_or_multi_class_head', 'logistic_regression_head',
]


def __getattr__(name: str):
    """`heads.HeadModel` and `heads.keras_adapter` import TensorFlow and Keras on first access."""
    if name in ('HeadModel', 'keras_adapter'):
        import importlib
        module = importlib.import_module('heads.keras_adapter')
        return module if name == 'keras_adapter' else module.HeadModel
    raise AttributeError('module {!r} has no attribute {!r}'.format(__name__, name))
