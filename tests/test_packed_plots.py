"""PackedPlots gives back a key's plot columns bit for bit, packed, pickled or not."""
from __future__ import annotations

import pickle

import numpy as np

from pipeline.packed_plots import PackedPlots, plot_arrays, plot_rows


def _columns(n: int) -> dict:
    rng = np.random.default_rng(5)
    tp = rng.normal(size=n)
    tp[::7] = np.nan
    tp[1::9] = -0.0
    sub = np.empty(n, object)
    sub[:] = ''
    if n > 2:  # a class tag and a None among the empty sub keys
        sub[1], sub[2] = 'class1', None
    return {'sub_key': sub, 'curve': np.array(['confusion'] * n, dtype=object),
            'threshold': np.linspace(0, 1, n), 'tp': tp, 'codes': np.arange(n, dtype=np.int32)}


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        if x.dtype == object:
            assert x.tolist() == y.tolist(), k
        else:
            assert x.tobytes() == y.tobytes(), k  # bit for bit, NaN and -0.0 included


def test_packed_columns_come_back_bit_for_bit():
    cols = _columns(301)
    packed = PackedPlots(cols)
    _same(cols, packed.arrays())
    _same(cols, plot_arrays(pickle.loads(pickle.dumps(packed))))
    assert packed['threshold'].tobytes() == cols['threshold'].tobytes()
    assert plot_rows(packed) == 301 and len(packed) == 5 and 'tp' in packed


def test_repeated_curves_pack_into_a_fraction_of_their_size():
    cols = {'curve': np.array(['confusion'] * 300, dtype=object),
            'tp': np.repeat([3.0, 2.0, 1.0], 100), 'fp': np.repeat([5.0, 0.0], 150)}
    assert PackedPlots(cols).nbytes < 0.2 * 300 * 2 * 8


def test_no_plots_and_one_row_pack_too():
    empty = PackedPlots({})
    assert not empty and plot_rows(empty) == 0 and plot_arrays(empty) == {}
    _same(_columns(1), PackedPlots(_columns(1)).arrays())
    _same(_columns(0), PackedPlots(_columns(0)).arrays())


def test_plots_in_pieces_concatenate_to_the_whole_table_with_each_slice_in_one_piece():
    import datetime

    import pyarrow as pa

    from pipeline.config import parse_config
    from pipeline.elements import Key
    from pipeline.results import KeyResult, build_tables, plot_tables, prepare_results
    config = parse_config({
        'input': {'pattern': '/nowhere/*.parquet'}, 'output': '/nowhere/out',
        'heads': [{'type': 'RegressionHead', 'args': {'name': 'a'}, 'logits': 'x', 'labels': 'y'},
                  {'type': 'RegressionHead', 'args': {'name': 'b'}, 'logits': 'x', 'labels': 'y'}],
        'slices': [[], ['c']]})
    at = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    results = []
    for i, (cols, vals) in enumerate([((), ())] + [(('c',), (v,)) for v in range(5)]):
        for head in (0, 1):
            n = 2 + (i + head) % 3  # 2 to 4 plot rows a key
            plots = {'sub_key': np.array([''] * n, dtype=object),
                     'curve': np.array(['confusion'] * n, dtype=object),
                     'threshold': np.linspace(0, 1, n) + i}
            plots.update({c: np.full(n, float(i * 10 + head)) for c in (
                'tp', 'fp', 'tn', 'fn', 'precision', 'recall', 'false_positive_rate')})
            plots.update({c: np.full(n, np.nan) for c in (
                'bucket_lower', 'bucket_upper', 'weighted_examples', 'weighted_labels',
                'weighted_predictions')})
            results.append(KeyResult(Key(cols, vals, head, None, None),
                                     [('loss', 1.0, None, None)], 3, 3.0, 1.0,
                                     PackedPlots(plots)))
    whole = build_tables(config, results, 'r', at)[1]
    prepared = prepare_results(config, results)
    pieces = list(plot_tables(config, prepared, 'r', at, keys_per_table=3))
    assert len(pieces) > 2
    assert pa.concat_tables(pieces).equals(whole)
    slices_per_piece = [set(p.column('slice').to_pylist()) for p in pieces]
    for i, a in enumerate(slices_per_piece):
        for b in slices_per_piece[i + 1:]:
            assert not a & b  # no slice split between two pieces
    assert len(list(plot_tables(config, [], 'r', at))) == 1  # no results: one empty piece


def test_keys_of_one_layout_share_their_column_specs_after_a_pickle():
    columns = {'curve': np.array(['confusion', 'confusion', 'calibration'], object),
               'sub_key': np.array(['', '', ''], object), 'tp': np.array([1.0, 2.0, 3.0])}
    a = pickle.loads(pickle.dumps(PackedPlots(columns)))
    b = pickle.loads(pickle.dumps(PackedPlots(dict(columns, tp=np.array([4.0, 5.0, 6.0])))))
    assert a._specs is b._specs and a._names is b._names and a._labels is b._labels
    assert b.arrays()['tp'].tolist() == [4.0, 5.0, 6.0]
    assert a.arrays()['curve'].tolist() == ['confusion', 'confusion', 'calibration']


def test_text_columns_with_none_and_runs_code_back_in_order():
    values = np.array([None, None, 'a', 'b', 'b', None, 'a', 'c'], object)
    packed = PackedPlots({'sub_key': values, 'x': np.arange(8.0)})
    assert packed.arrays()['sub_key'].tolist() == values.tolist()
    assert packed._labels['sub_key'] == (None, 'a', 'b', 'c')  # first appearance
