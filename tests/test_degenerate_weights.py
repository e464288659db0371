"""Issue 20 item 10: degenerate weights. A slice whose weights are all 0 has no AUC (a 0/0 the head
reports as 0, as tf.estimator does): no interval, and the report does not rank it worst; a
negative weight is a bad record in the pipeline (the heads keep taking it, as tf.estimator did)."""
from __future__ import annotations

import json
import os
import re

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import heads
from pipeline.apply import ApplyHeads
from pipeline.config import parse_config
from pipeline.elements import ERRORS_TAG, BadRecordError, SourceBatch
from pipeline.report import data as report_data
from pipeline.report import page as report_page
from pipeline.results import state_result

HEAD = {'type': 'BinaryClassHead', 'args': {'name': 'click', 'weight_column': 'w'},
        'logits': 'x', 'labels': 'y'}


def _config(pattern='f.parquet', output='o', slices=None):
    raw = {'input': {'pattern': pattern, 'format': 'parquet'}, 'output': output, 'heads': [HEAD]}
    if slices is not None:
        raw['slices'] = slices
    return raw


def _batch(w):
    n = len(w)
    return pa.record_batch({'x': np.linspace(-1, 1, n).astype(np.float32),
                            'y': np.arange(n) % 2, 'w': np.asarray(w, np.float64)})


def _apply(batch, mode, first_row=100):
    dofn = ApplyHeads(parse_config(_config()), 'run', bad_records=mode)
    dofn.setup()
    dofn.start_bundle()
    return [o.value for o in dofn.process(SourceBatch('f.parquet', first_row, batch))
            if isinstance(o, beam.pvalue.TaggedOutput) and o.tag == ERRORS_TAG]


# -- Negative weights. -----------------------------------------------------------------------------

def test_a_negative_weight_is_a_bad_record_naming_file_row_and_column():
    w = np.ones(10)
    w[[3, 7]] = [-1.0, -0.5]
    # Row 3 of a batch whose first row is file row 100: file row 103.
    with pytest.raises(BadRecordError, match=r'^bad record: file f\.parquet, row 103, column w: '
                                             r'negative weight'):
        _apply(_batch(w), 'fail')
    errors, = _apply(_batch(w), 'dead_letter')
    assert errors.column('row').to_pylist() == [103, 107]
    assert set(errors.column('column').to_pylist()) == {'w'}
    assert [json.loads(v)['w'] for v in errors.column('values').to_pylist()] == [-1.0, -0.5]
    # Zero weights are fine (a row that counts for nothing), and so is NaN's own reason kept.
    assert _apply(_batch(np.zeros(10)), 'dead_letter') == []
    w[5] = np.nan
    errors, = _apply(_batch(w), 'dead_letter')
    reasons = dict(zip(errors.column('row').to_pylist(), errors.column('reason').to_pylist()))
    assert sorted(reasons) == [103, 105, 107] and 'negative' not in reasons[105]


def test_the_heads_still_take_negative_weights_as_tf_estimator_did():
    head = heads.BinaryClassHead(weight_column='w')
    labels, logits = np.array([[1.], [0.]]), np.array([[1.], [-2.]])
    assert head.invalid_rows(labels, logits, {'w': np.array([1., -1.])}) == []
    lo, hi = head.new_state().update(labels, logits, {'w': np.array([1., -1.])}).bounds()['auc']
    assert np.isnan(lo) and np.isnan(hi)  # documented: no interval with a negative weight


# -- Zero total weight: the metrics table. -------------------------------------------------------

def _result(labels, weights):
    head = heads.BinaryClassHead(name='click', weight_column='w')
    state = head.new_state().update(np.asarray(labels, np.float64).reshape(-1, 1),
                                    np.linspace(-1, 1, len(labels)).reshape(-1, 1),
                                    {'w': np.asarray(weights, np.float64)})
    r = state_result(((), (), 0, None, None), state, ['click'])
    return r, {m: (v, lo, hi) for m, v, lo, hi in r.metrics}


def test_a_slice_of_zero_weight_has_its_head_value_and_no_auc_interval():
    r, rows = _result([1, 0, 1, 0], [0, 0, 0, 0])
    assert (r.example_count, r.weighted_example_count) == (4, 0.0)
    value, lo, hi = rows['auc']
    assert value == 0.0                # tf.estimator's div_no_nan, kept for compatibility
    assert (lo, hi) == (None, None)    # was [0, 0]: an "interval" holding no AUC
    # One class only: the exact AUC is a 0/0 too.
    _, one_class = _result([1, 1, 1], [1, 2, 3])
    assert one_class['auc'][1:] == (None, None)
    # An ordinary slice keeps its interval around the exact AUC (1: the scores rank the labels).
    _, rows = _result([0, 0, 1, 1], [1, 1, 1, 1])
    assert rows['auc'][1] <= 1.0 <= rows['auc'][2] and rows['auc'][1] > 0.99


# -- Zero total weight: the report's ranking. -----------------------------------------------------

def _row(slice_, metric, value, weighted, bounds=(None, None)):
    return {'slice': slice_, 'metric': metric, 'value': value, 'lower_bound': bounds[0],
            'upper_bound': bounds[1], 'example_count': 10, 'weighted_example_count': weighted}


def _cells():
    rows = [_row('Overall', 'auc', 0.8, 40.0, (0.79, 0.81)),
            _row('country:US', 'auc', 0.7, 20.0, (0.69, 0.71)),
            _row('country:DE', 'auc', 0.9, 20.0, (0.89, 0.91)),
            _row('country:FR', 'auc', 0.0, 0.0),        # all weights zero
            _row('country:JP', 'auc', 0.0, 5.0)]        # one class only
    rows += [_row(r['slice'], 'loss', 0.0 if r['weighted_example_count'] == 0 else 0.5,
                  r['weighted_example_count']) for r in rows]
    return rows, {(r['slice'], r['metric']): r for r in rows}


def test_ranking_leaves_out_slices_whose_value_is_a_zero_over_zero():
    rows, cell = _cells()
    slices = list(dict.fromkeys(r['slice'] for r in rows))
    ranked, left_out = report_data.rank_slices(slices, cell, 'auc')
    assert ranked == ['country:US', 'country:DE']   # worst first; FR's and JP's 0 are not auc
    assert left_out == [('country:FR', 'no weight'),
                        ('country:JP', 'auc undefined: one class only')]
    # loss (lower is better): FR's loss 0 would be the best; it is left out all the same.
    ranked, left_out = report_data.rank_slices(slices, cell, 'loss')
    assert 'country:FR' not in ranked and left_out == [('country:FR', 'no weight')]


def test_the_page_does_not_show_a_zero_weight_slice_as_worst():
    rows, _ = _cells()
    view = report_page._head_view('click', rows, [], None, 0)
    charted = re.findall(r'data-slice="([^"]+)"', view.comparison)
    assert charted == ['country:US', 'country:DE']
    assert view.not_ranked == ['country:FR (no weight)',
                               'country:JP (auc undefined: one class only)']
    notes = {r['label']: r['note'] for r in view.rows}
    assert notes['country:FR'] == 'no weight' and notes['country:US'] == ''


# -- End to end. -----------------------------------------------------------------------------------

def test_a_run_with_a_zero_weight_slice_and_a_negative_weight(tmp_path):
    from pipeline.run import evaluate
    n = 60
    country = np.array(['US', 'DE', 'FR'] * (n // 3), dtype=object)
    w = np.where(country == 'FR', 0.0, 1.0)
    w[4] = -2.0                                   # row 4 (DE): a bad record
    table = pa.table({'x': np.linspace(-2, 2, n).astype(np.float32), 'y': np.arange(n) % 2,
                      'w': w, 'country': country.tolist()})
    os.makedirs(tmp_path / 'in')
    pq.write_table(table, str(tmp_path / 'in' / 'part-0.parquet'))
    raw = _config(str(tmp_path / 'in' / '*.parquet'), str(tmp_path / 'out'), [[], ['country']])
    with pytest.raises(BadRecordError, match=r'part-0\.parquet, row 4, column w: negative'):
        evaluate(raw, ['--runner=DirectRunner'])
    summary = evaluate(raw, ['--runner=DirectRunner'], bad_records='dead_letter')
    assert summary['bad_rows'] == 1
    metrics = pq.read_table(str(tmp_path / 'out' / 'metrics')).to_pylist()
    auc = {r['slice']: r for r in metrics if r['metric'] == 'auc'}
    fr = auc['country:FR']
    assert (fr['weighted_example_count'], fr['lower_bound'], fr['upper_bound']) == (
        0.0, None, None)
    assert auc['Overall']['lower_bound'] is not None
    page = open(str(tmp_path / 'out' / 'report.html'), encoding='utf-8').read()
    comparison = page[page.index('data-chart="slices"'):]
    comparison = comparison[:comparison.index('</svg>')]
    assert 'country:FR' not in comparison and 'country:DE' in comparison
    assert 'country:FR (no weight)' in page
