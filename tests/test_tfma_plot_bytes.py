"""The numpy-encoded PlotData is the message the per-row protobuf code builds, byte for byte."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.writers import tfma_plot_bytes
from pipeline.writers import tfma_plots
from pipeline.writers import tfma_protos as protos

NUMERIC = ('threshold', 'tp', 'fp', 'tn', 'fn', 'precision', 'recall', 'false_positive_rate',
           'bucket_lower', 'bucket_upper', 'weighted_examples', 'weighted_labels',
           'weighted_predictions')


def _cols(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    cols = {c: rng.normal(size=n) for c in NUMERIC}
    cols['threshold'] = rng.permutation(np.linspace(0, 1, n))
    cols['bucket_lower'] = rng.permutation(np.arange(n, dtype=float))
    cols['tp'][::3] = 0.0          # zeros, negative zeros and NaN (null) cells
    cols['fp'][1::4] = -0.0
    cols['precision'][::5] = np.nan
    cols['weighted_examples'][::2] = 0.0
    curve = np.where(rng.random(n) < 0.6, 'confusion', 'calibration').astype(object)
    cols['curve'] = curve.tolist()
    cols['_confusion'] = curve == 'confusion'
    cols['_calibration'] = curve == 'calibration'
    return cols


@pytest.mark.parametrize('n,seed', [(0, 1), (1, 2), (7, 3), (301, 4)])
def test_numpy_encoding_equals_the_message_built_row_by_row(n, seed):
    try:
        plot_data = protos.tfma_module('proto.metrics_for_slice_pb2').PlotData
    except ImportError:
        pytest.skip('TFMA is not installed')
    assert tfma_plot_bytes.encoder(plot_data) is not None  # the numpy path is the one taken
    cols = _cols(n, seed)
    rows = list(range(n))[::-1]
    fast, slow = plot_data(), plot_data()
    tfma_plots._plot_data(fast, rows, cols)
    tfma_plots._plot_data_by_row(slow, rows, cols)
    assert fast.SerializeToString(deterministic=True) == slow.SerializeToString(
        deterministic=True)
    assert len(fast.confusion_matrix_at_thresholds.matrices) == cols['curve'].count('confusion')
