"""The batch split into per-key rows (slice codes and grouping), against slow references."""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from pipeline.apply import ApplyHeads
from pipeline.config import parse_config
from pipeline.decode import take_rows
from pipeline.elements import HeadArrays, SourceBatch
from pipeline.evaluate import overall_donor
from pipeline.keys import group_rows, slice_codes


def _reference_groups(codes: np.ndarray) -> dict[int, list[int]]:
    """Row indices per non-negative code, in row order: the obvious loop."""
    out: dict[int, list[int]] = {}
    for i, c in enumerate(codes.tolist()):
        if c >= 0:
            out.setdefault(c, []).append(i)
    return out


def _groups(codes: np.ndarray) -> dict[int, list[int]]:
    out = {}
    for code, idx in group_rows(codes):
        out[code] = list(range(codes.size)) if idx is None else idx.tolist()
    return out


@pytest.mark.parametrize('high', [1, 5, 300, 40_000, 2**40])
def test_group_rows_matches_a_loop_for_small_and_large_codes(high):
    # high >= 2**15 takes the int64 sort instead of the 16-bit one; -1 rows belong to no group.
    rng = np.random.default_rng(high)
    codes = rng.integers(-1, high, 5000).astype(np.int64)
    assert _groups(codes) == _reference_groups(codes)


def test_group_rows_degenerate_inputs():
    assert _groups(np.zeros(0, np.int64)) == {}
    assert _groups(np.full(4, -1, np.int64)) == {}
    assert list(group_rows(np.full(3, 7, np.int64))) == [(7, None)]  # one key: no copy
    assert _groups(np.array([3, -1, 3, 0])) == {0: [3], 3: [0, 2]}


def test_slice_codes_of_a_dictionary_column_with_nulls_and_unused_entries():
    # Dictionary ['JP', 'US', 'DE', 'FR']: 'DE' is never used, nulls belong to no slice.
    indices = pa.array([1, 0, None, 1, 3, 0, None], pa.int32())
    dictionary = pa.array(['JP', 'US', 'DE', 'FR'])
    arr = pa.DictionaryArray.from_arrays(indices, dictionary)
    batch = pa.record_batch([arr], names=['country'])
    codes, values = slice_codes(batch, ('country',))
    assert values == [('JP',), ('US',), ('FR',)]  # used entries, in dictionary order
    assert codes.tolist() == [1, 0, -1, 1, 2, 0, -1]
    assert codes.dtype == np.int64
    # The rows of each slice value are exactly the rows holding it.
    plain = ['US', 'JP', None, 'US', 'FR', 'JP', None]
    for code, rows in _groups(codes).items():
        assert {plain[r] for r in rows} == {values[code][0]}


@pytest.mark.parametrize('dictionary', [['JP', 'US', 'FR'], ['JP', 'US', 'DE', 'FR']])
def test_slice_codes_of_a_dictionary_column_without_nulls(dictionary):
    # Every entry used (codes are the indices) or one unused ('DE': codes compacted past it).
    names = ['US', 'JP', 'FR', 'US', 'JP']
    arr = pa.DictionaryArray.from_arrays(pa.array([dictionary.index(v) for v in names],
                                                  pa.int32()), pa.array(dictionary))
    codes, values = slice_codes(pa.record_batch([arr], names=['country']), ('country',))
    assert values == [('JP',), ('US',), ('FR',)]
    assert [values[c][0] for c in codes] == names
    assert codes.dtype == np.int64


def test_slice_codes_of_a_plain_string_column_and_a_cross():
    country = pa.array(['US', 'JP', None, 'US', 'JP', 'US'])
    device = pa.array([1, 2, 1, 1, None, 2], pa.int64())
    batch = pa.record_batch([country, device], names=['country', 'device'])
    codes, values = slice_codes(batch, ('country', 'device'))
    got = {i: (values[c] if c >= 0 else None) for i, c in enumerate(codes.tolist())}
    expected = {0: ('US', 1), 1: ('JP', 2), 2: None, 3: ('US', 1), 4: None, 5: ('US', 2)}
    assert got == expected
    assert len(values) == len(set(values)) == 3


def test_slice_codes_of_an_all_null_column():
    arr = pa.DictionaryArray.from_arrays(pa.array([None, None], pa.int32()), pa.array(['a']))
    codes, values = slice_codes(pa.record_batch([arr], names=['c']), ('c',))
    assert codes.tolist() == [-1, -1] and values == []


# -------------------------------------------------------------------------------------------------
# The Overall slice merged from another spec's states.
# -------------------------------------------------------------------------------------------------

def test_overall_donor_is_the_narrowest_other_spec():
    assert overall_donor([(), ('a',), ('a', 'b')]) == ('a',)
    assert overall_donor([('b', 'c'), (), ('d',), ('a',)]) == ('d',)  # first of the narrowest
    assert overall_donor([()]) is None               # Overall alone: evaluated row by row
    assert overall_donor([('a',), ('b',)]) is None   # no Overall to derive


def _bundle_states(config, batches, derive: bool) -> dict:
    """Runs ApplyHeads over `batches` as one bundle (no Beam); returns {key: state}."""
    dofn = ApplyHeads(config, 'run', derive_overall=derive)
    dofn.setup()
    dofn.start_bundle()
    for i, batch in enumerate(batches):
        assert list(dofn.process(SourceBatch('f%d' % i, 0, batch))) == []
    out = {}
    for wv in dofn.finish_bundle():
        if isinstance(wv, beam.pvalue.TaggedOutput):
            continue
        key, state = wv.value
        assert key not in out
        out[key] = state
    return out


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, n).astype(np.float32)
    country = rng.choice(np.array(['US', 'JP', 'DE'], dtype=object), n)
    country[rng.random(n) < 0.1] = None  # rows in no country slice, still in Overall
    return pa.table({
        'country': pa.array(country.tolist(), pa.string()).dictionary_encode(),
        'w': rng.uniform(0.5, 1.5, n).astype(np.float32),
        'x': x,
        'y': (rng.random(n) < 1.0 / (1.0 + np.exp(-x))).astype(np.int64),
        'ts': rng.integers(0, 600, n),
        'gs': rng.choice([100, 200], n),
    })


@pytest.mark.parametrize('windowed', [False, True])
def test_derived_overall_equals_overall_from_every_row(windowed):
    raw = {'input': {'pattern': 'x.parquet', 'format': 'parquet'}, 'output': 'o',
           'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click', 'weight_column': 'w'},
                      'logits': 'x', 'labels': 'y'}],
           'slices': [['country'], []]}
    if windowed:  # sliding windows (each row in two) crossed with a step column
        raw.update(window={'column': 'ts', 'size': 120, 'period': 60},
                   tensorboard={'step': 'gs'})
    config = parse_config(raw)
    tables = [_table(700, 1), _table(500, 2)]
    # The second batch has no null country (every row's Overall comes from country states).
    tables[1] = tables[1].set_column(0, 'country', pa.array(
        ['US'] * 500, pa.string()).dictionary_encode())
    batches = [t.to_batches()[0] for t in tables]
    derived = _bundle_states(config, batches, derive=True)
    direct = _bundle_states(config, batches, derive=False)
    assert set(derived) == set(direct)
    overall = [k for k in direct if k[0] == ()]
    assert overall and len(overall) == (1 if not windowed else len(overall))
    for key, state in direct.items():
        got = derived[key]
        assert got.counts()[0] == state.counts()[0], key
        want = state.result()
        for metric, value in got.result().items():
            assert value == pytest.approx(want[metric], rel=1e-12, abs=1e-15), (key, metric)
    # Independently of both paths: Overall's rows and weighted label mean per (window, step).
    t = pa.concat_tables([tb.cast(tables[0].schema) for tb in tables]).to_pydict()
    ts, gs = np.array(t['ts']), np.array(t['gs'])
    w, y = np.array(t['w'], np.float64), np.array(t['y'], np.float64)
    for key in overall:
        sel = np.ones(ts.size, bool)
        if windowed:
            start = key[3] // 1_000_000
            sel = (ts >= start) & (ts < start + 120) & (gs == key[4])
        state = derived[key]
        assert state.counts()[0] == sel.sum()
        assert state.result()['label/mean/click'] == pytest.approx(
            np.sum(w[sel] * y[sel]) / np.sum(w[sel]), rel=1e-9)


def test_take_rows_of_matrices_vectors_and_arrow_id_lists():
    logits = np.arange(12, dtype=np.float32).reshape(6, 2)
    labels = pa.array([[0], [1, 2], [], [2], [0, 1], [1]])
    w = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    arrays = HeadArrays(labels, logits, {'w': w})
    assert take_rows(arrays, None) is arrays
    got = take_rows(arrays, np.array([4, 1, 5]))
    assert got.logits.tolist() == [[8.0, 9.0], [2.0, 3.0], [10.0, 11.0]]
    assert got.labels.to_pylist() == [[0, 1], [1, 2], [1]]
    assert got.features['w'].tolist() == [5.0, 2.0, 6.0]
    empty = take_rows(arrays, np.array([], np.int64))
    assert empty.logits.shape == (0, 2) and len(empty.labels) == 0
