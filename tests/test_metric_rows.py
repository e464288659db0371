"""`MetricRows` (issue 21's compact gather): a key's metric rows held as one float64 array must
read back as exactly the tuples it was given — every float bit for bit, None bounds as None, NaN
values as NaN — also after a pickle, with the names shared between keys."""
from __future__ import annotations

import math
import pickle

import numpy as np

from pipeline.metric_rows import MetricRows

ROWS = [('auc', 0.1 + 0.2, 0.25, 0.5), ('accuracy', 1 / 3, None, None),
        ('label/mean', float('nan'), None, None), ('loss', -0.0, None, None),
        ('recall', 5e-324, 0.0, 1.0), ('huge', 1.7976931348623157e308, None, None)]


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[0] == w[0]
        for a, b in zip(g[1:], w[1:]):
            if b is None:
                assert a is None
            elif math.isnan(b):
                assert math.isnan(a)
            else:
                assert a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
                assert type(a) is float


def test_rows_read_back_as_the_tuples_given():
    rows = MetricRows(ROWS)
    _same(list(rows), ROWS)
    _same([rows[i] for i in range(len(rows))], ROWS)
    _same(rows[1:3], ROWS[1:3])
    assert rows[-1][0] == 'huge'


def test_rows_pickle_back_identical_and_share_their_names():
    a = pickle.loads(pickle.dumps(MetricRows(ROWS)))
    b = pickle.loads(pickle.dumps(MetricRows(ROWS)))
    _same(list(a), ROWS)
    assert a._names is b._names


def test_no_rows_and_one_row():
    assert list(MetricRows([])) == [] and len(MetricRows([])) == 0
    assert list(pickle.loads(pickle.dumps(MetricRows([])))) == []
    assert list(MetricRows([('loss', 2.5, None, None)])) == [('loss', 2.5, None, None)]


def test_rows_compare_equal_to_the_same_list_only():
    assert MetricRows(ROWS[:2]) == ROWS[:2]
    assert MetricRows(ROWS[:2]) != ROWS[:1]
    assert MetricRows(ROWS[:2]) != [('auc', 0.3, 0.25, 0.5), ROWS[1]]  # 0.1 + 0.2 != 0.3


def test_a_key_of_twenty_rows_is_small():
    rows = MetricRows([('m%d' % i, float(i), None, None) for i in range(20)])
    assert len(pickle.dumps(rows)) < 700
    assert isinstance(rows._values, np.ndarray) and rows._values.dtype == np.float64
