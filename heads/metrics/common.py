"""What every metric state shares: Keras' ratio and weight conventions, the chunk size of the
elementwise kernels, and the one reverse cumulative sum every curve is read from.

Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ['CHUNK', 'div_no_nan', 'keras_match_weights', 'broadcast_weights', 'flatten_inputs',
           'cumulative_from_top']

# Elements per step of the elementwise kernels: their temporaries stay in cache, which matters for
# the pipeline's batches of 10^4–10^6 rows.
CHUNK = 1 << 16


def div_no_nan(num: Any, den: Any) -> Any:
    """`num / den`, and 0 where `den` is 0 (tf.math.divide_no_nan); scalars give a float."""
    if isinstance(num, (float, int, np.floating)) and isinstance(den, (float, int, np.floating)):
        den = float(den)  # the same IEEE float64 division, without arrays
        return float(num) / den if den != 0 else 0.0
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(num.shape if num.shape == den.shape else np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return float(out) if out.ndim == 0 else out


def keras_match_weights(values: np.ndarray, weights: Any) -> np.ndarray:
    """Keras' `squeeze_or_expand_dimensions` for a weight against values: squeeze the weight's
    last dim when it has one rank more, expand it when it has one rank less."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == values.ndim + 1:
        if w.shape[-1] != 1:
            raise ValueError('Can not squeeze dim[{}], expected a dimension of 1, got {} '
                             '(weights shape {}, values shape {}).'.format(
                                 w.ndim - 1, w.shape[-1], w.shape, values.shape))
        w = w[..., 0]
    elif values.ndim == w.ndim + 1:
        w = w[..., np.newaxis]
    return w


def broadcast_weights(values: np.ndarray, weights: Any) -> np.ndarray:
    """Weights squeezed / expanded as Keras does, then broadcast to the values' shape."""
    w = keras_match_weights(values, weights)
    try:
        return np.broadcast_to(w, values.shape)
    except ValueError:
        raise ValueError('weights of shape {} can not be broadcast to values of shape {}.'.format(
            np.shape(weights), values.shape)) from None



def flatten_inputs(positive: Any, scores: Any, weights: Any
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positive bool, float32 scores, float64 weights), flat, weights broadcast to the scores."""
    s = np.asarray(scores, dtype=np.float32)
    pos = np.asarray(positive)
    if pos.dtype != np.bool_:
        pos = pos != 0
    if pos.shape != s.shape:
        pos = np.broadcast_to(keras_match_weights(s, pos).astype(bool), s.shape)
    if weights is None:
        w = np.ones(s.shape, dtype=np.float64)
    else:
        w = broadcast_weights(s, weights)
    return pos.reshape(-1), s.reshape(-1), np.asarray(w, dtype=np.float64).reshape(-1)



def cumulative_from_top(counts: np.ndarray, axis: int = 0) -> np.ndarray:
    """`out[i] = Σ_{j >= i} counts[j]` along `axis`: the weight at or above each entry of a
    histogram ordered by increasing score, summed from the top entry down.

    Every curve is read from it: a Keras confusion matrix at threshold i counts the buckets at or
    above i as predicted positive (`KerasAUC`, `Confusion`), and a score histogram the entries
    above a threshold (`Histogram.curve`). One implementation keeps their float64 sums in the
    same order everywhere.
    """
    # Reversed views (what np.flip returns, without its argument handling): the same sums.
    flip = (slice(None),) * (axis % counts.ndim) + (slice(None, None, -1),)
    return np.cumsum(counts[flip], axis=axis)[flip]
