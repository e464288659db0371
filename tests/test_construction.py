"""Head constructors validate exactly as tf.estimator 2.15 did: the same checks, in the same order,
with the same messages. Ids X1–X18 in the docstrings name tf.estimator 2.15's construction test
vectors; each test writes the inputs and the expected message out in full.

Pure Python: no TensorFlow is imported by building a head.
"""
from __future__ import annotations

import functools
import subprocess
import sys

import pytest

import heads

from _helpers import HEADS_WITH_REDUCTION  # every head, built with a loss_reduction


def _loss_labels_logits(labels, logits):
    return labels


@pytest.mark.parametrize('thresholds', [(0., 0.5), (0.5, 1.)])
def test_binary_thresholds_outside_the_open_unit_interval_are_refused(thresholds):
    """Vector X1."""
    with pytest.raises(ValueError, match=r'thresholds not in \(0, 1\)'):
        heads.BinaryClassHead(thresholds=thresholds)


def test_an_invalid_loss_reduction_is_refused_by_name():
    """Vector X2."""
    with pytest.raises(ValueError, match='Invalid loss_reduction: invalid_loss_reduction'):
        heads.BinaryClassHead(loss_reduction='invalid_loss_reduction')


@pytest.mark.parametrize('make', list(HEADS_WITH_REDUCTION.values()))
def test_reduction_none_is_refused_by_every_head(make):
    """Vector X3."""
    with pytest.raises(ValueError, match='Invalid loss_reduction: none'):
        make('none')


def test_a_loss_fn_needs_labels_and_logits_and_no_other_arguments():
    """Vectors X4–X6."""
    with pytest.raises(ValueError, match=r"loss_fn must contain argument: labels\. "
                                         r"Given arguments: \('logits',\)"):
        heads.BinaryClassHead(loss_fn=lambda logits: logits)
    with pytest.raises(ValueError, match=r"loss_fn must contain argument: logits\. "
                                         r"Given arguments: \('labels',\)"):
        heads.BinaryClassHead(loss_fn=lambda labels: labels)
    with pytest.raises(ValueError, match=r"loss_fn has unexpected args: \['name'\]"):
        heads.BinaryClassHead(loss_fn=lambda labels, logits, name=None: labels)


def test_loss_fn_with_features_and_partial_is_accepted():
    heads.BinaryClassHead(loss_fn=lambda labels, logits, features: labels)
    heads.BinaryClassHead(loss_fn=functools.partial(_loss_labels_logits))


def test_multi_class_head_needs_more_than_two_classes():
    """Vector X7."""
    with pytest.raises(ValueError, match='n_classes cannot be None'):
        heads.MultiClassHead(None)
    with pytest.raises(ValueError, match='n_classes must be > 2'):
        heads.MultiClassHead(2)


def test_multi_class_vocabulary_must_have_n_classes_names():
    """Vector X8."""
    with pytest.raises(ValueError):
        heads.MultiClassHead(3, label_vocabulary=['a', 'b', 'c', 'd'])


def test_multi_label_head_refuses_bad_classes_thresholds_and_vocabulary():
    """Vectors X9–X14."""
    for n in (None, 1):
        with pytest.raises(ValueError, match=r'n_classes must be > 1 for multi-label '
                                             r'classification\. Given: {}'.format(n)):
            heads.MultiLabelHead(n)
    with pytest.raises(ValueError, match=r'thresholds must be in \(0, 1\) range\. Given: 0\.0'):
        heads.MultiLabelHead(2, thresholds=[0., .5])
    with pytest.raises(ValueError, match=r'thresholds must be in \(0, 1\) range\. Given: 1\.0'):
        heads.MultiLabelHead(2, thresholds=[.5, 1.0])
    with pytest.raises(ValueError, match=r"label_vocabulary must be a list or tuple\. "
                                         r"Given type: <(type|class) 'dict'>"):
        heads.MultiLabelHead(2, label_vocabulary={'foo': 'bar'})
    with pytest.raises(ValueError, match=r'Length of label_vocabulary must be n_classes \(3\)\. '
                                         r'Given: 2'):
        heads.MultiLabelHead(3, label_vocabulary=['foo', 'bar'])
    with pytest.raises(ValueError, match=r'All classes_for_class_based_metrics must be in range '
                                         r'\[0, 2\]\. Given: -1'):
        heads.MultiLabelHead(3, classes_for_class_based_metrics=[2, -1])
    with pytest.raises(ValueError, match="'z' is not in list"):
        heads.MultiLabelHead(3, label_vocabulary=['a', 'b', 'c'],
                             classes_for_class_based_metrics=['c', 'z'])


def test_multi_label_class_names_resolve_to_ids():
    head = heads.MultiLabelHead(3, label_vocabulary=['a', 'b', 'c'],
                                classes_for_class_based_metrics=['c', 'a'])
    assert list(head.classes_for_class_based_metrics) == [2, 0]


@pytest.mark.parametrize('dim', [0, -1])
def test_regression_label_dimension_must_be_positive(dim):
    """Vector X15."""
    with pytest.raises(ValueError, match='Invalid label_dimension'):
        heads.RegressionHead(label_dimension=dim)


def test_multi_head_needs_named_heads_and_one_weight_per_head():
    """Vectors X16–X18."""
    with pytest.raises(ValueError, match=r'Must specify heads\. Given: \[\]'):
        heads.MultiHead([])
    with pytest.raises(ValueError, match=r'All given heads must have name specified\.'):
        heads.MultiHead([heads.MultiLabelHead(2, name='head1'), heads.MultiLabelHead(3)])
    with pytest.raises(ValueError, match=r'heads and head_weights must have the same size\. '
                                         r'Given len\(heads\): 2\. Given len\(head_weights\): 1\.'):
        heads.MultiHead([heads.MultiLabelHead(2, name='a'), heads.MultiLabelHead(3, name='b')],
                        head_weights=[1.])


def test_multi_head_name_joins_head_names_and_sums_dimensions():
    mh = heads.MultiHead([heads.MultiLabelHead(2, name='head1'),
                          heads.MultiLabelHead(3, name='head2')])
    assert mh.name == 'head1_head2'
    assert mh.logits_dimension == 5


def test_defaults_match_tf_estimator():
    assert heads.BinaryClassHead().loss_reduction == 'sum_over_batch_size'
    assert heads.BinaryClassHead().logits_dimension == 1
    assert heads.MultiClassHead(4).logits_dimension == 4
    assert heads.RegressionHead(label_dimension=3).logits_dimension == 3
    assert heads.LogisticRegressionHead().logits_dimension == 1
    assert heads.ModeKeys.PREDICT == 'infer'


def test_building_heads_does_not_import_tensorflow():
    code = ('import sys, heads\n'
            'heads.MultiHead([heads.BinaryClassHead(name="a"), heads.MultiClassHead(3, name="b"),'
            ' heads.MultiLabelHead(4, name="c"), heads.RegressionHead(name="d"),'
            ' heads.PoissonRegressionHead(name="e"), heads.LogisticRegressionHead(name="f")])\n'
            'print("tensorflow" in sys.modules)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'
