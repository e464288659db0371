"""The plain batch evaluator (pipeline/evaluate.py) and the decoder's list types (decode.py).

`ApplyHeads` is a thin DoFn over `BatchEvaluator`; these tests drive the evaluator without Beam and
check that the DoFn emits exactly what it returns.
"""
from __future__ import annotations

import os
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from pipeline import config as config_lib
from pipeline.apply import ApplyHeads
from pipeline.config import parse_config
from pipeline.decode import Problems, list_of_one, matrix_column, scalar_column
from pipeline.elements import BadRecordError, BundleStats, Key, SourceBatch, SubBatch, is_list
from pipeline.evaluate import BatchEvaluator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(slices=([], ['country'])):
    return parse_config({
        'input': {'pattern': 'f.parquet', 'format': 'parquet'}, 'output': 'o',
        'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click', 'weight_column': 'w'},
                   'logits': 'x', 'labels': 'y'}],
        'slices': [list(s) for s in slices]})


def _batch(n: int, seed: int) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, n).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n)
    w[::7] = -1.0  # bad rows: negative weights
    country = rng.choice(np.array(['US', 'JP', None], dtype=object), n)
    return pa.record_batch({'x': x, 'y': (rng.random(n) < 0.5).astype(np.int64), 'w': w,
                            'country': pa.array(country.tolist(), pa.string())})


def test_evaluator_imports_no_beam():
    code = ('import sys\nimport pipeline.evaluate\n'
            'print(sorted(m for m in sys.modules if m.split(".")[0] == "apache_beam"))\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.stdout.strip() == '[]'


def test_evaluator_returns_states_errors_and_stats():
    evaluator = BatchEvaluator(_config(), 'run', bad_records='dead_letter')
    outs = [evaluator.add(SourceBatch('f%d' % i, 10, _batch(50, i))) for i in range(2)]
    for out in outs:
        assert out.errors.column('row').to_pylist() == list(range(10, 60, 7))
        assert set(out.errors.column('column').to_pylist()) == {'w'}
        assert out.predictions is None and list(out.keyed) == []
    done = evaluator.finish()
    assert done.stats.rows == 100 and done.stats.bad == 16
    assert dict(done.stats.unsliced)[('country',)] > 0
    overall = done.states[Key((), (), 0, None, None)]
    assert overall.counts()[0] == 100 - 16
    by_country = [s.counts()[0] for k, s in done.states.items() if k.slice_columns]
    assert sum(by_country) + dict(done.stats.unsliced)[('country',)] == 84
    # finish starts the next bundle: nothing carried over.
    assert evaluator.finish() == ({}, None)


def test_evaluator_fails_on_the_first_bad_row():
    evaluator = BatchEvaluator(_config(), 'run')
    with pytest.raises(BadRecordError, match=r'^bad record: file f, row 3, column w: negative'):
        evaluator.add(SourceBatch('f', 3, _batch(20, 0)))


def test_without_the_precombine_sub_batches_per_key_and_head():
    evaluator = BatchEvaluator(_config(), 'run', bad_records='dead_letter', precombine=False,
                               predictions=True)
    out = evaluator.add(SourceBatch('f', 0, _batch(30, 1)))
    assert out.predictions.num_rows == 30 - 5
    assert out.predictions.column('_row').to_pylist() == [i for i in range(30) if i % 7]
    pairs = list(out.keyed)
    assert all(isinstance(k, Key) and isinstance(v, SubBatch) for k, v in pairs)
    overall = [v for k, v in pairs if not k.slice_columns]
    assert len(overall) == 1 and overall[0].arrays.logits.shape[0] == 25
    assert evaluator.finish().states == {}


def test_apply_heads_emits_what_the_evaluator_returns():
    config = _config()
    batches = [SourceBatch('f%d' % i, 0, _batch(40, i)) for i in range(3)]
    evaluator = BatchEvaluator(config, 'run', bad_records='dead_letter')
    errors = [evaluator.add(sb).errors for sb in batches]
    want = evaluator.finish()
    dofn = ApplyHeads(config, 'run', bad_records='dead_letter')
    dofn.setup()
    dofn.start_bundle()
    got_errors = [o.value for sb in batches for o in dofn.process(sb)]
    assert [t.to_pylist() for t in got_errors] == [t.to_pylist() for t in errors]
    states, stats = {}, []
    for out in dofn.finish_bundle():
        if isinstance(out, beam.pvalue.TaggedOutput):
            stats.append(out.value.value)
        else:
            key, state = out.value
            assert type(key) is tuple  # plain tuples for Beam's deterministic key coder
            states[key] = state
    assert stats == [want.stats] and isinstance(stats[0], BundleStats)
    assert set(states) == {tuple(k) for k in want.states}
    for key, state in want.states.items():
        assert states[tuple(key)].result() == state.result()


# -------------------------------------------------------------------------------------------------
# One list-type test for the config check and the decoder: list views are lists.
# -------------------------------------------------------------------------------------------------

def _list_view(rows, large=False):
    t = (pa.large_list_view if large else pa.list_view)(pa.float64())
    return pa.array(rows, t)


def test_config_and_decoder_share_is_list():
    from pipeline.config import columns as config_columns
    assert config_columns._is_list is is_list
    for t in (pa.list_(pa.int64()), pa.large_list(pa.int64()), pa.list_(pa.int64(), 2),
              pa.list_view(pa.int64()), pa.large_list_view(pa.int64())):
        assert is_list(t), t
    assert not is_list(pa.int64()) and not is_list(pa.string())


@pytest.mark.parametrize('large', [False, True])
def test_list_views_decode_as_lists(large):
    rows = [[1.0, 2.0], [3.0], None, [4.0, None]]
    problems = Problems(4)
    got = matrix_column(_list_view(rows, large), 'v', 2, problems)
    np.testing.assert_array_equal(got[[0]], [[1.0, 2.0]])
    assert [(c, r, m.tolist()) for c, r, m in problems.items] == [
        ('v', 'null value', [False, False, True, False]),
        ('v', 'expected a list of 2 values', [False, True, False, False]),
        ('v', 'null value in list', [False, False, False, True])]
    problems = Problems(4)
    scalars = scalar_column(_list_view([[1.0], [2.0], [5.0, 6.0], None], large), 's', problems)
    assert scalars[:2].tolist() == [1.0, 2.0]
    assert [m.tolist() for _, _, m in problems.items] == [[False, False, True, True],
                                                          [False, False, True, True]]
    assert list_of_one(_list_view([[1.0], [2.0, 3.0], None], large)).to_pylist() == [
        1.0, None, None]
