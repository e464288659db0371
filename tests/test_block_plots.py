"""The plots of many keys of a `BinaryClassBlock` read at once (`plots_of`, as
`block_results` reads a shard's plotted keys): each key's plots are those of one
`BinaryClassState` updated with its rows, and bit for bit those of the block's own `state(k)`.
"""
from __future__ import annotations

import numpy as np
import pytest

from test_binary_block import HEADS, _assert_plots_equal, _block, _data, _per_key


def _same_bits(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for col, v in want.items():
        if v.dtype == object:
            assert got[col].tolist() == v.tolist(), col
        else:
            assert got[col].dtype == v.dtype and got[col].shape == v.shape, col
            assert got[col].tobytes() == v.tobytes(), col


@pytest.mark.parametrize('kind', list(HEADS))
def test_plots_of_many_keys_are_each_key_s_plots(kind):
    head, codes, labels, logits, features, n_keys = _data(kind, 13)
    block = _block(head, codes, labels, logits, features, n_keys, batches=4)
    states = _per_key(head, codes, labels, logits, features, n_keys)
    keys = np.random.default_rng(13).permutation(n_keys)[:n_keys - 2]  # any order
    keys = np.concatenate([keys, keys[:2]])                            # repeated keys too
    got = block.plots_of(keys)
    assert len(got) == keys.size
    for k, plots in zip(keys.tolist(), got):
        _assert_plots_equal(plots, states[k].plots())
        _same_bits(plots, block.state(k).plots())
    assert block.plots_of(np.empty(0, np.int64)) == []
    with pytest.raises(IndexError):
        block.plots_of(np.array([n_keys]))
