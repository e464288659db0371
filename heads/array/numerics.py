"""The array face's numerics: float32 activations as TF computes them, the heads' built-in losses
in float64, and the per-row kernels (class ids, cross-entropies) in cache-sized chunks.

Inputs are float32 (logits, labels and weights are float32 tensors in tf.estimator), activations
(`sigmoid32`, `softmax32`) are computed in float32 as TF computed them, losses in float64 from the
float32 inputs, and everything accumulated afterwards is float64. Each chunked kernel gives exactly
the values of its plain one-pass formula (tests/test_spec_audit.py checks it). Never imports
TensorFlow.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from heads.metrics.common import CHUNK

__all__ = ['CHUNK', 'sigmoid32', 'softmax32', 'mean_last_axis', 'log_sigmoid_cross_entropy',
           'sigmoid_cross_entropy_mean', 'softmax_cross_entropy', 'class_ids_of',
           'log_poisson_loss', 'by_row_chunks', 'FEW_CLASSES']


# -------------------------------------------------------------------------------------------------
# Activations (float32, as TF computes them).
# -------------------------------------------------------------------------------------------------

def sigmoid32(x: Any) -> np.ndarray:
    """Logistic sigmoid in float32 without overflow warnings; NaN stays NaN, ±inf give 1 / 0."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.float32)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    with np.errstate(over='ignore', invalid='ignore'):
        for start in range(0, flat_x.size, CHUNK):
            part = flat_x[start:start + CHUNK]
            # exp(-|x|) never overflows; 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0 are the
            # same function (NaN takes the first and stays NaN).
            e = np.abs(part)
            np.negative(e, out=e)
            np.exp(e, out=e)
            d = e + np.float32(1)
            r = np.float32(1) / d
            q = e / d
            # Select by arithmetic (r·(1 − m) + q·m is exactly r or q for m in {0, 1}, and both
            # are finite unless x is NaN, where r is NaN too): masked division and np.where are
            # several times slower when signs interleave.
            m = (part < 0).view(np.int8).astype(np.float32)
            r *= np.float32(1) - m
            q *= m
            r += q
            flat_out[start:start + part.size] = r
    return out


def mean_last_axis(a: np.ndarray, keepdims: bool = False) -> np.ndarray:
    """`np.mean(a, axis=-1)` of a float64 array, column by column when the axis is short.

    numpy's reductions over a short last axis are slow; numpy sums fewer than 8 elements left to
    right and then divides by the count, which is what the column loop does, so the values are
    the same.
    """
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[-1] if a.ndim else 0
    if not 0 < n < 8 or a.size == 0:
        return np.mean(a, axis=-1, keepdims=keepdims)
    total = a[..., 0].copy()
    for j in range(1, n):
        total += a[..., j]
    total /= n
    return total[..., np.newaxis] if keepdims else total


def softmax32(x: Any, axis: int = -1) -> np.ndarray:
    """Softmax in float32 along `axis`, shifted by the max for stability (as TF does).

    Non-finite logits follow TF's CPU kernel (recorded on tf.estimator 2.15 and TF 2.21): in a
    vector whose max is NaN or +inf, the NaN and +inf entries give NaN and every other entry 0
    (softmax([0, NaN]) = softmax([0, +inf]) = [0, NaN]); −inf entries give 0 as usual, and an
    all −inf vector gives NaN everywhere.
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over='ignore', invalid='ignore'):
        top = np.max(x, axis=axis, keepdims=True)
        shifted = x - top
        e = np.exp(shifted)
        out = e / np.sum(e, axis=axis, keepdims=True)
        # NaN propagates through np.max, so `top` is NaN for any NaN entry and +inf for +inf.
        wild = np.isnan(top) | (top == np.inf)
        if wild.any():
            blown = np.isnan(x) | (x == np.inf)
            out = np.where(wild, np.where(blown, np.float32(np.nan), np.float32(0.0)), out)
    return out.astype(np.float32, copy=False)


def log_sigmoid_cross_entropy(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """`max(x, 0) − x·z + log(1 + exp(−|x|))` in float64 (tf.nn.sigmoid_cross_entropy_with_logits).

    ±inf logits give NaN (inf − inf), as in TF.
    """
    x = np.asarray(logits)
    z = np.asarray(labels)
    if x.shape != z.shape:  # broadcasting: the formula as written
        x = x.astype(np.float64)
        z = z.astype(np.float64)
        with np.errstate(over='ignore', invalid='ignore'):
            return np.maximum(x, 0.0) - x * z + np.log1p(np.exp(-np.abs(x)))
    out = np.empty(x.shape, dtype=np.float64)
    flat_x, flat_z, flat_out = x.reshape(-1), z.reshape(-1), out.reshape(-1)
    with np.errstate(over='ignore', invalid='ignore'):
        for start in range(0, flat_x.size, CHUNK):
            # The formula's operations in the same order, in cache-sized chunks.
            xc = flat_x[start:start + CHUNK].astype(np.float64)
            zc = flat_z[start:start + CHUNK].astype(np.float64)
            soft = np.abs(xc)
            np.negative(soft, out=soft)
            np.exp(soft, out=soft)
            np.log1p(soft, out=soft)
            r = np.maximum(xc, 0.0)
            zc *= xc
            r -= zc
            r += soft
            flat_out[start:start + xc.size] = r
    return out


# -------------------------------------------------------------------------------------------------
# Per-row kernels over the class axis.
# -------------------------------------------------------------------------------------------------

# Below this many classes, per-row reductions run column by column (numpy sums fewer than 8
# elements left to right, so sums keep their value).
FEW_CLASSES = 8


def by_row_chunks(fn: Any, logits: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """`fn` applied to cache-sized groups of rows of `[D0..DN, L]` arrays (rows are
    independent), giving `[D0..DN, 1]`."""
    lead = logits.shape[:-1]
    rows = int(np.prod(lead, dtype=np.int64))
    flat = [a.reshape(rows, a.shape[-1]) for a in (logits,) + others]
    step = max(1, CHUNK // max(1, logits.shape[-1]))
    if rows <= step:
        return fn(*flat).reshape(lead + (1,))
    parts = [fn(*(a[i:i + step] for a in flat)) for i in range(0, rows, step)]
    return np.concatenate(parts).reshape(lead + (1,))


def class_ids_of(logits: np.ndarray) -> np.ndarray:
    """`argmax` over the last axis as `[D0..DN, 1]` int64, as tf.argmax computes it on CPU: the
    first maximum wins, NaN never wins (a row of NaN gives 0)."""
    logits = np.asarray(logits)
    if logits.ndim < 1 or logits.shape[-1] == 0 or logits.size == 0:
        return np.zeros(logits.shape[:-1] + (1,), dtype=np.int64)
    return by_row_chunks(_class_ids_rows, logits)


def _class_ids_rows(logits: np.ndarray) -> np.ndarray:
    lg = np.where(np.isnan(logits), -np.inf, logits)
    if lg.shape[-1] == 0 or lg.size == 0:
        return np.zeros(lg.shape[:-1] + (1,), dtype=np.int64)
    if lg.shape[-1] < FEW_CLASSES:
        # Column by column: numpy's reductions over a short last axis are slow. A later column
        # wins only when strictly greater, so the first maximum wins as in argmax.
        best = lg[..., 0].copy()
        ids = np.zeros(best.shape, dtype=np.int64)
        for j in range(1, lg.shape[-1]):
            column = lg[..., j]
            ids += (column > best) * (j - ids)
            np.maximum(best, column, out=best)
        return ids[..., np.newaxis]
    return np.argmax(lg, axis=-1)[..., np.newaxis].astype(np.int64)


def softmax_cross_entropy(ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """`logsumexp(logits) − logits[label]` per example, `[D0..DN, 1]` float64."""
    logits = np.asarray(logits)
    ids = np.asarray(ids)
    if logits.size == 0 or logits.shape[-1] == 0 or ids.shape != logits.shape[:-1] + (1,):
        return _softmax_cross_entropy_rows(logits, ids)
    return by_row_chunks(_softmax_cross_entropy_rows, logits, ids)


def _softmax_cross_entropy_rows(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    with np.errstate(over='ignore', invalid='ignore'):
        if 0 < x.shape[-1] < FEW_CLASSES:
            # Column by column (numpy's reductions over a short last axis are slow), in the
            # order numpy sums fewer than 8 elements: left to right.
            top = x[..., 0].copy()
            for j in range(1, x.shape[-1]):
                np.maximum(top, x[..., j], out=top)  # NaN propagates as in np.max
            total = np.exp(x[..., 0] - top)
            for j in range(1, x.shape[-1]):
                total += np.exp(x[..., j] - top)
            lse = (top + np.log(total))[..., np.newaxis]
        else:
            top = np.max(x, axis=-1, keepdims=True)
            # A row whose max is ±inf or NaN would give NaN through the shift anyway (TF too).
            lse = top + np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True))
        picked = np.take_along_axis(x, np.clip(ids, 0, x.shape[-1] - 1), axis=-1)
    return lse - picked


def sigmoid_cross_entropy_mean(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Sigmoid cross-entropy averaged over the class axis, `[D0..DN, 1]` float64."""
    z = np.asarray(labels, dtype=np.float32)  # TF casts the labels to the logits' float32
    ce = log_sigmoid_cross_entropy(z, logits)
    return mean_last_axis(ce, keepdims=True)


def log_poisson_loss(targets: np.ndarray, log_input: np.ndarray,
                      compute_full_loss: bool) -> np.ndarray:
    """tf.nn.log_poisson_loss in float64: `exp(x) − x·z`, plus with compute_full_loss the
    Stirling term `z·ln z − z + ½·ln(2πz)` where z > 1 or z < 0 (NaN for negative z)."""
    x = np.asarray(log_input, dtype=np.float64)
    z = np.asarray(targets, dtype=np.float64)
    with np.errstate(over='ignore', invalid='ignore', divide='ignore'):
        loss = np.exp(x) - x * z
        if compute_full_loss:
            stirling = z * np.log(z) - z + 0.5 * np.log(2.0 * np.pi * z)
            loss = loss + np.where((z >= 0) & (z <= 1), 0.0, stirling)
    return loss
