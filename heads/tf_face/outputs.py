"""The TF face's prediction helpers and PREDICT-mode export outputs.

Prediction key checks with tf.estimator's message, class-id and class-name tables, and the export
outputs (`heads.spec`) a single head's PREDICT spec carries.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import tensorflow as tf

from heads.keys import PredictionKeys, ServingKeys
from heads.spec import ClassificationOutput, PredictOutput, RegressionOutput

__all__ = ['check_prediction_keys', 'all_class_strings', 'all_class_ids', 'class_strings',
           'export_outputs']

def check_prediction_keys(keys: Sequence[str], valid_keys: Sequence[str]) -> None:
    """Rejects unknown prediction keys with tf.estimator's message."""
    for key in keys:
        if key not in valid_keys:
            raise ValueError('Prediction key must be in PredictionKeys, given: {}.'
                             'Valid prediction keys include {}.'.format(key, list(valid_keys)))


def all_class_strings(logits: tf.Tensor, n_classes: int,
                      label_vocabulary: Sequence[str] | None) -> tf.Tensor:
    """Every class name (vocabulary or '0'..'n-1'), tiled to `[D0, n]` (first dim only)."""
    if label_vocabulary:
        names = tf.constant(list(label_vocabulary), dtype=tf.string)
    else:
        names = tf.strings.as_string(tf.range(n_classes))
    return tf.tile(names[tf.newaxis, :], [tf.shape(logits)[0], 1])


def all_class_ids(logits: tf.Tensor, n_classes: int) -> tf.Tensor:
    """int32 `[D0, n]` table of class ids 0..n-1."""
    return tf.tile(tf.range(n_classes, dtype=tf.int32)[tf.newaxis, :], [tf.shape(logits)[0], 1])


def class_strings(class_ids: tf.Tensor, label_vocabulary: Sequence[str] | None) -> tf.Tensor:
    """String class of each id: `str(id)` or `label_vocabulary[id]`."""
    if label_vocabulary:
        return tf.gather(tf.constant(list(label_vocabulary), dtype=tf.string), class_ids)
    return tf.strings.as_string(class_ids)


def export_outputs(head: Any, predictions: Mapping[Any, Any]) -> dict[str, Any]:
    """PREDICT-mode export outputs of a single head, chosen from its prediction keys.

    A head may define `_tf_export_outputs(predictions)` to decide itself. Otherwise: regression
    heads (a `predictions` key) export RegressionOutput as default and `regression`; classifiers
    export ClassificationOutput(probabilities, every class) as default and `classification`, and
    the binary head (a `logistic` key) adds RegressionOutput(logistic) as `regression`. Every head
    adds `predict` = PredictOutput(all predictions), also the default of a (user's) head with
    neither a `predictions` nor a `probabilities` key.
    """
    own = getattr(head, '_tf_export_outputs', None)
    if own is not None:
        return own(predictions)
    keys = PredictionKeys
    outputs: dict[str, Any] = {}
    if keys.PREDICTIONS in predictions:
        regression = RegressionOutput(value=predictions[keys.PREDICTIONS])
        outputs[ServingKeys.DEFAULT_SERVING] = regression
        outputs[ServingKeys.REGRESS] = regression
    elif keys.PROBABILITIES in predictions:
        classes = predictions.get(keys.ALL_CLASSES, predictions.get(keys.CLASSES))
        classification = ClassificationOutput(
            scores=predictions[keys.PROBABILITIES], classes=classes)
        outputs[ServingKeys.DEFAULT_SERVING] = classification
        outputs[ServingKeys.CLASSIFY] = classification
        if keys.LOGISTIC in predictions:
            outputs[ServingKeys.REGRESS] = RegressionOutput(value=predictions[keys.LOGISTIC])
    predict = PredictOutput(outputs=dict(predictions))
    # A user's head with other prediction keys serves all its predictions by default.
    outputs.setdefault(ServingKeys.DEFAULT_SERVING, predict)
    outputs[ServingKeys.PREDICT] = predict
    return outputs
