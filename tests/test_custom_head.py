"""A user's own `Head` subclass, written against tf.estimator's interface only (the TF face).

It constructs and works eagerly, inside `tf.function` and in a TF1 graph; its array-face methods
raise NotImplementedError naming the method and the class; the pipeline's config refuses it.
Expected numbers are hand arithmetic: labels (1, 3), logits (2, 1) → squared errors (1, 4).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import heads
from heads.base import ARRAY_FACE_METHODS, missing_array_face
from pipeline import cli
from pipeline.config import parse as config_parse
from pipeline.config import ConfigError, parse_config

LABELS = np.array([[1.], [3.]], np.float32)
LOGITS = np.array([[2.], [1.]], np.float32)
MEAN_SQUARED_ERROR = (1. + 4.) / 2


class SquaredErrorHead(heads.Head):
    """A user's head: mean squared error, one `mse` metric; no array face."""

    def __init__(self, name: str | None = None):
        self._name = name

    @property
    def name(self):
        return self._name

    @property
    def logits_dimension(self):
        return 1

    @property
    def loss_reduction(self):
        return 'sum_over_batch_size'

    def loss(self, labels, logits, features=None, mode=None, regularization_losses=None):
        import tensorflow as tf
        error = tf.cast(labels, tf.float32) - tf.cast(logits, tf.float32)
        loss = tf.reduce_mean(tf.square(error))
        return loss + tf.add_n(regularization_losses) if regularization_losses else loss

    def predictions(self, logits, keys=None):
        import tensorflow as tf
        return {'predictions': tf.cast(logits, tf.float32)}

    def metrics(self, regularization_losses=None):
        from heads.tf_face import keras_metrics
        return {'mse': keras_metrics.Mean('mse')}

    def update_metrics(self, eval_metrics, features, logits, labels, mode=None,
                       regularization_losses=None):
        import tensorflow as tf
        error = tf.cast(labels, tf.float32) - tf.cast(logits, tf.float32)
        eval_metrics['mse'].update_state(tf.square(error))
        return eval_metrics


class ScoreHead(SquaredErrorHead):
    """A user's head whose predictions have none of the built-in heads' keys."""

    def predictions(self, logits, keys=None):
        import tensorflow as tf
        return {'score': tf.cast(logits, tf.float32)}


# ---------------------------------------------------------------------------------------------
# The TF face works.
# ---------------------------------------------------------------------------------------------

@pytest.mark.tf
def test_custom_head_constructs_and_computes_eagerly():
    head = SquaredErrorHead(name='sq')
    assert isinstance(head, heads.Head) and head.name == 'sq' and head.logits_dimension == 1
    assert float(head.loss(LABELS, LOGITS, {})) == pytest.approx(MEAN_SQUARED_ERROR)
    assert float(head.loss(LABELS, LOGITS, {}, regularization_losses=[0.5])) == pytest.approx(3.)
    metrics = head.update_metrics(head.metrics(), {}, LOGITS, LABELS)
    assert float(metrics['mse'].result()) == pytest.approx(MEAN_SQUARED_ERROR)


@pytest.mark.tf
def test_custom_head_inside_tf_function_and_tf1_graph():
    import tensorflow as tf
    head = SquaredErrorHead()
    in_function = tf.function(lambda lb, lg: head.loss(lb, lg, {}))(LABELS, LOGITS)
    assert float(in_function) == pytest.approx(MEAN_SQUARED_ERROR)
    graph = tf.compat.v1.Graph()
    with graph.as_default():
        spec = head.create_estimator_spec({}, heads.ModeKeys.EVAL, tf.constant(LOGITS),
                                          tf.constant(LABELS))
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(spec.eval_metric_ops['mse'][1])
            loss, mse = session.run([spec.loss, spec.eval_metric_ops['mse'][0]])
    assert (loss, mse) == pytest.approx((MEAN_SQUARED_ERROR, MEAN_SQUARED_ERROR))


@pytest.mark.tf
def test_custom_head_estimator_specs():
    head = SquaredErrorHead()
    evaluation = head.create_estimator_spec({}, heads.ModeKeys.EVAL, LOGITS, LABELS)
    assert float(evaluation.loss) == pytest.approx(MEAN_SQUARED_ERROR)
    assert float(evaluation.eval_metric_ops['mse'][0]) == pytest.approx(MEAN_SQUARED_ERROR)
    seen = []
    train = head.create_estimator_spec({}, heads.ModeKeys.TRAIN, LOGITS, LABELS,
                                       train_op_fn=lambda loss: seen.append(float(loss)) or 'op')
    assert train.train_op == 'op' and seen == [pytest.approx(MEAN_SQUARED_ERROR)]
    predict = head.create_estimator_spec({}, heads.ModeKeys.PREDICT, LOGITS)
    assert isinstance(predict.export_outputs['serving_default'], heads.RegressionOutput)
    # Unknown prediction keys: every prediction is served, by default and as `predict`.
    other = ScoreHead().create_estimator_spec({}, heads.ModeKeys.PREDICT, LOGITS)
    assert sorted(other.export_outputs) == ['predict', 'serving_default']
    served = other.export_outputs['serving_default']
    assert isinstance(served, heads.PredictOutput) and list(served.outputs) == ['score']


# ---------------------------------------------------------------------------------------------
# The array face says what is missing.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('method,args', [
    ('new_state', ()), ('array_predictions', (LOGITS,)), ('array_loss', (LABELS, LOGITS)),
    ('invalid_rows', (LABELS, LOGITS))])
def test_array_face_raises_naming_method_and_class(method, args):
    head = SquaredErrorHead()
    with pytest.raises(NotImplementedError, match=r'^SquaredErrorHead\.{}\(\) is not '
                                                  r'implemented: SquaredErrorHead implements '
                                                  r'only the TF face'.format(method)):
        getattr(head, method)(*args)


def test_missing_array_face_lists_what_the_head_leaves_out():
    assert missing_array_face(SquaredErrorHead) == list(ARRAY_FACE_METHODS)
    for head_type in (heads.BinaryClassHead, heads.MultiClassHead, heads.MultiLabelHead,
                      heads.RegressionHead, heads.LogisticRegressionHead,
                      heads.PoissonRegressionHead, heads.MultiHead):
        assert missing_array_face(head_type) == [], head_type


# ---------------------------------------------------------------------------------------------
# The pipeline's config refuses a head without an array face.
# ---------------------------------------------------------------------------------------------

def _raw(head_type: str) -> dict:
    return {'input': {'pattern': 'data/*.parquet'}, 'output': 'out',
            'heads': [{'type': head_type, 'logits': 'x', 'labels': 'y'}]}


def test_config_refuses_a_user_head_class_path_with_one_message(capsys):
    with pytest.raises(ConfigError, match=r"^heads\[0\]\.type: unknown head type "
                                          r"'mypkg\.SquaredErrorHead' \(one of BinaryClassHead, "
                                          r".*a user's own Head subclass cannot be evaluated: the "
                                          r"pipeline needs the array face, new_state, "
                                          r"array_predictions, array_loss, invalid_rows\)$"):
        parse_config(_raw('mypkg.SquaredErrorHead'))
    assert cli.main(['evaluate', '--config', json.dumps(_raw('mypkg.SquaredErrorHead'))]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "'mypkg.SquaredErrorHead'" in err


def test_config_refuses_a_head_type_without_the_array_face(monkeypatch, capsys):
    # A head type the config resolves (here patched in) but that implements only the TF face.
    monkeypatch.setattr(heads, 'SquaredErrorHead', SquaredErrorHead, raising=False)
    monkeypatch.setattr(config_parse, '_HEAD_TYPES',
                        config_parse._HEAD_TYPES + ('SquaredErrorHead',))
    message = (r'^heads\[0\]\.type: SquaredErrorHead does not implement the array face the '
               r'pipeline evaluates with \(new_state, array_predictions, array_loss, '
               r'invalid_rows\)$')
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw('SquaredErrorHead'))
    assert cli.main(['evaluate', '--config', json.dumps(_raw('SquaredErrorHead'))]) == 2
    assert capsys.readouterr().err.startswith('headstream: config error: heads[0].type: '
                                              'SquaredErrorHead does not implement')
