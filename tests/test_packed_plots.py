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
    sub[:] = ['', 'class1', None][:1] * n if n else []
    if n > 2:
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
