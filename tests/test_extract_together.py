"""Reading many keys' results at once (issue 21): `pipeline.results.state_results` makes the small
states of many slices dense in one grouped update (`heads.extract.densify_together`) and must say
exactly what each state says when read on its own (`state_result`, which builds one state's
components from its own rows) — metrics, bounds, loss, counts, plots and intervals, for every head
family, with weights, zero weights, one row, one class and NaN scores. The pipeline's
`ExtractResults` step does this `BATCH` keys at a time and must lose no key at a bundle's end.
"""
from __future__ import annotations

import copy
import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to

from heads import BinaryClassHead, MultiHead, MultiLabelHead
from heads.extract import densify_together, small_states
from pipeline.graph import ExtractResults
from pipeline.results import KeyResult, state_result, state_results
from test_small_states import KINDS, _data, _take

LEVEL = 0.9


def _key(i: int, head: int = 0) -> tuple:
    return (('user',), (i,), head, None, None)


def _slices(kind: str, n_keys: int, intervals: bool, seed: int) -> list:
    """Small states of n_keys slices of 1-12 rows (the first: one row; the second: weights all
    0; the third: one class where the head has classes), each updated as the pipeline does."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 13, n_keys)
    sizes[0] = 1
    head, labels, logits, features = _data(kind, int(sizes.sum()), rng)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    features['w'][bounds[1]:bounds[2]] = 0.0
    if kind.startswith('binary'):
        labels[bounds[2]:bounds[3]] = 1.0
    states = []
    for g in range(n_keys):
        idx = np.arange(bounds[g], bounds[g + 1])
        state = head.new_state(intervals=True) if intervals else head.new_state()
        state.update(_take(labels, idx), _take(logits, idx), _take(features, idx))
        states.append(state)
    return head, states


def _same_value(got, want, what: str) -> None:
    if want is None or got is None:
        assert got is None and want is None, what
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), what
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), what


def _assert_same_result(got: KeyResult, want: KeyResult) -> None:
    assert got.key == want.key
    assert [m[0] for m in got.metrics] == [m[0] for m in want.metrics]
    for g, w in zip(got.metrics, want.metrics):
        for a, b in zip(g[1:], w[1:]):
            _same_value(a, b, w[0])
    assert (got.example_count, got.weighted_example_count) == pytest.approx(
        (want.example_count, want.weighted_example_count), rel=1e-12)
    _same_value(got.loss, want.loss, 'loss')
    assert got.intervals.keys() == want.intervals.keys()
    for name, interval in want.intervals.items():
        for a, b in zip(got.intervals[name], interval):
            _same_value(a, b, name)
    mine, theirs = got.plots.arrays(), want.plots.arrays()
    assert mine.keys() == theirs.keys()
    for col, values in theirs.items():
        if values.dtype.kind == 'f':
            np.testing.assert_allclose(mine[col], values, rtol=1e-9, atol=1e-12,
                                       equal_nan=True, err_msg=col)
        else:
            assert mine[col].tolist() == values.tolist(), col


@pytest.mark.parametrize('intervals', [False, True], ids=['plain', 'intervals'])
@pytest.mark.parametrize('kind', KINDS)
def test_results_read_together_equal_each_state_read_on_its_own(kind, intervals):
    head, states = _slices(kind, 140, intervals, seed=len(kind) * 7 + intervals)
    names = [head.name or '']
    level = LEVEL if intervals else None
    want = [state_result(_key(i), copy.deepcopy(s), names, level) for i, s in enumerate(states)]
    got = state_results([(_key(i), s) for i, s in enumerate(states)], names, level)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        _assert_same_result(g, w)


def test_every_small_state_is_made_dense_and_dense_states_are_left_as_they_are():
    head, states = _slices('binary', 5, False, seed=3)
    big = head.new_state()
    rng = np.random.default_rng(4)
    n = 3000
    big.update((rng.random((n, 1)) < 0.5).astype(np.float32),
               rng.normal(size=(n, 1)).astype(np.float32), {'w': np.ones((n, 1))})
    assert not big.is_small and all(s.is_small for s in states)
    before = copy.deepcopy(big).result()
    densify_together(states + [big, states[0]])  # a state listed twice is made dense once
    assert not any(s.is_small for s in states)
    assert big.result() == before


def test_the_member_states_of_a_multi_head_are_found_and_made_dense():
    head = MultiHead([BinaryClassHead(name='click'), MultiLabelHead(n_classes=3, name='tags')])
    state = head.new_state()
    state.update({'click': np.array([[1.0], [0.0]], np.float32),
                  'tags': np.array([[1, 0, 1], [0, 0, 0]])},
                 np.zeros((2, 4), np.float32))
    assert len(small_states(state)) == 2
    densify_together([state])
    assert small_states(state) == []


def test_states_of_two_heads_of_one_family_are_made_dense_each_with_its_own_head():
    wide = MultiLabelHead(n_classes=4, name='wide', thresholds=[0.3])
    narrow = MultiLabelHead(n_classes=2, name='narrow', classes_for_class_based_metrics=[1])
    rng = np.random.default_rng(5)
    pairs = []
    for i, head in enumerate([wide, narrow, wide, narrow]):
        n_classes = 4 if head is wide else 2
        state = head.new_state()
        state.update((rng.random((3, n_classes)) < 0.5).astype(np.int64),
                     rng.normal(size=(3, n_classes)).astype(np.float32))
        pairs.append((_key(i, head=int(head is narrow)), state))
    names = ['wide', 'narrow']
    want = [state_result(k, copy.deepcopy(s), names) for k, s in pairs]
    for g, w in zip(state_results(pairs, names), want):
        _assert_same_result(g, w)


def test_no_state_reads_as_no_result():
    assert state_results([], ['']) == []


def test_the_extract_step_emits_every_key_once_across_batches_and_bundle_ends():
    head, states = _slices('binary', ExtractResults.BATCH + 37, False, seed=11)
    pairs = [(_key(i), s) for i, s in enumerate(states)]
    # Which keys come out, each once with its counts and metric names (the values are the
    # first test's).
    want = [(k[1], s.counts()[0], tuple(m[0] for m in state_result(k, copy.deepcopy(s),
                                                                    [''])[1]))
            for k, s in pairs]

    def strip(kv):
        tag, result = kv[1]
        assert kv[0] == 0 and tag == 'result'
        return (result.key.slice_values, result.example_count,
                tuple(m[0] for m in result.metrics))

    with BeamPipeline() as p:
        out = (p | beam.Create(pairs) | beam.ParDo(ExtractResults([''], None))
               | beam.Map(strip))
        assert_that(out, equal_to(want))
