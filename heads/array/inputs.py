"""The array face's input checks shared by every head family: logits, labels, weights, custom
loss functions, prediction keys, and the row-level problems `invalid_rows` reports.

Every check raises the same exception type and message text as tf.estimator 2.15's TF face, in the
same order (logits shape, then labels, then weights), so a batch rejected by one face is rejected by
the other with the same words (tests/test_faces_agree.py). Inputs are rounded to float32 first
(logits, labels and weights are float32 tensors in tf.estimator). Nothing here imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

# tf.estimator's `check_label_range` messages (eager).
LABELS_TOO_LARGE = 'Labels must be <= {n} - 1'
LABELS_NEGATIVE = 'Labels must be >= 0'
LOGITS_NOT_FINITE = 'Logits must be finite (NaN or infinite logits give NaN losses and metrics)'
WEIGHTS_NOT_FINITE = 'Weights must be finite'
LABELS_NOT_FINITE = 'Labels must be finite'


# -------------------------------------------------------------------------------------------------
# Shapes: logits, labels, weights (the TF face's checks, in its order).
# -------------------------------------------------------------------------------------------------

def _shape(a: np.ndarray) -> tuple[int, ...]:
    return tuple(int(d) for d in a.shape)


def check_logits(logits: Any, logits_dimension: int | None) -> np.ndarray:
    """Logits as a float32 ndarray of rank >= 2 whose last dimension is `logits_dimension`.

    Raises:
      ValueError: with the TF face's text for a rank below 2 or a wrong last dimension.
    """
    if logits is None:
        raise ValueError('logits must not be None.')
    logits = np.asarray(logits)
    if logits.dtype == object or logits.dtype.kind in 'USb':
        raise ValueError('logits must be numeric. Given dtype: {}'.format(logits.dtype))
    logits = logits.astype(np.float32, copy=False)
    if logits.ndim < 2:
        raise ValueError('logits must have rank at least 2.  Received rank {}, shape {}'.format(
            logits.ndim, _shape(logits)))
    if logits_dimension is not None and logits.shape[-1] != logits_dimension:
        raise ValueError('logits shape must be [D0, D1, ... DN, logits_dimension], got {}.'.format(
            _shape(logits)))
    return logits


_NO_LABELS = ('You must provide a labels Tensor. Given: None. Suggested troubleshooting steps: '
              'Check that your data contains your label feature. Check that your input_fn properly '
              'parses and returns labels.')


def as_label_array(labels: Any) -> np.ndarray:
    """Labels as an ndarray; strings become an object array of str (bytes decoded as UTF-8)."""
    if labels is None:
        raise ValueError(_NO_LABELS)
    if hasattr(labels, 'to_numpy') and not isinstance(labels, np.ndarray):  # Arrow / pandas
        try:
            labels = labels.to_numpy(zero_copy_only=False)
        except TypeError:
            labels = labels.to_numpy()
    arr = np.asarray(labels)
    if arr.dtype.kind in 'US':
        arr = arr.astype(object)
    if arr.dtype == object and arr.size:
        flat = arr.reshape(-1)
        if any(isinstance(v, bytes) for v in flat):
            arr = np.array([v.decode('utf-8') if isinstance(v, bytes) else v for v in flat],
                           dtype=object).reshape(arr.shape)
    return arr


def is_string_array(arr: np.ndarray) -> bool:
    """Whether `arr` holds strings (an object array whose first element is a str)."""
    if arr.dtype.kind in 'US':
        return True
    return arr.dtype == object and arr.size > 0 and isinstance(arr.reshape(-1)[0], str)


def dense_labels(labels: Any, logits: np.ndarray, dimension: int) -> np.ndarray:
    """Labels reshaped to `logits.shape[:-1] + (dimension,)` after tf.estimator's checks.

    The dtype is kept (strings stay strings for a later vocabulary lookup).

    Raises:
      ValueError: missing labels, rank below 2, wrong last dimension or wrong shape, with the TF
        face's texts.
    """
    labels = as_label_array(labels)
    if labels.ndim == logits.ndim - 1:
        labels = labels[..., np.newaxis]
    if labels.ndim < 2:
        raise ValueError('labels must have rank at least 2.  Received rank {}, shape {}'.format(
            labels.ndim, _shape(labels)))
    if labels.shape[-1] != dimension:
        raise ValueError(
            'Mismatched label shape. Expected labels dimension={}.  Received {}. Suggested Fix: If '
            'your classifier expects one-hot encoding label, check your n_classes argument to the '
            'estimator and/or the shape of your label. Otherwise, check the shape of your label.'
            .format(dimension, labels.shape[-1]))
    expected = _shape(logits)[:-1] + (dimension,)
    if _shape(labels) != expected:
        raise ValueError(
            'labels shape must be [D0, D1, ... DN, {}]. Suggested Fix: check your n_classes '
            'argument to the head and/or the shape of your label., expected_labels_shape: {}. '
            'labels_shape: {}.'.format(dimension, expected, _shape(labels)))
    return labels


def lookup_labels(labels: np.ndarray, vocabulary: Sequence[str]) -> np.ndarray:
    """String labels → int64 ids in `vocabulary`; unknown strings → −1 (tf.estimator's OOV value).

    Raises:
      TypeError: for non-string labels, with the TF face's text.
    """
    labels = as_label_array(labels)
    if labels.size and not is_string_array(labels):
        raise TypeError("Dtype of argument `keys` must be <dtype: 'string'>, received: "
                        "<dtype: '{}'>".format(tf_dtype_name(labels.dtype)))
    index = {v: i for i, v in enumerate(vocabulary)}
    flat = labels.reshape(-1)
    ids = np.fromiter((index.get(v, -1) for v in flat), dtype=np.int64, count=flat.size)
    return ids.reshape(labels.shape)


def tf_dtype_name(dtype: np.dtype) -> str:
    """The TF dtype name numpy data would convert to (`<dtype: 'int64'>`)."""
    if dtype == object or dtype.kind in 'US':
        return 'string'
    if dtype == np.bool_:
        return 'bool'
    return np.dtype(dtype).name


def numeric_labels(labels: np.ndarray) -> np.ndarray:
    """Labels cast to float32 (TF's `tf.cast(labels, float32)`); strings are refused as TF does."""
    if is_string_array(labels):
        raise ValueError('Cast string to float is not supported')
    try:
        return np.asarray(labels, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError('Cast string to float is not supported') from None


def label_range_mask(labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise masks (too large, negative) of labels outside [0, n_classes − 1].

    NaN labels fail the `<= n − 1` test first, as in TF (a NaN comparison is false).
    """
    labels = np.asarray(labels)
    with np.errstate(invalid='ignore'):
        too_large = ~(labels <= n_classes - 1)
        negative = ~too_large & ~(labels >= 0)
    return too_large, negative


def check_label_range(labels: np.ndarray, n_classes: int, message: str | None = None) -> None:
    """Raises ValueError unless every label is in [0, n_classes − 1]: the upper bound is
    checked first (NaN fails it), then the lower one, as in tf.estimator."""
    too_large, negative = label_range_mask(labels, n_classes)
    if too_large.any():
        raise ValueError(message or LABELS_TOO_LARGE.format(n=n_classes))
    if negative.any():
        raise ValueError(message or LABELS_NEGATIVE)


def rows_any(mask: np.ndarray, n_rows: int) -> np.ndarray:
    """An elementwise mask reduced to a bool mask over the first dimension (any element set)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 0:
        return np.full(n_rows, bool(mask))
    return mask.reshape(mask.shape[0], -1).any(axis=1) if mask.size else np.zeros(n_rows, bool)


def weight_column_key(weight_column: Any) -> str:
    """The features key of a weight column (a string, or a numeric column's `key`)."""
    if isinstance(weight_column, str):
        return weight_column
    key = getattr(weight_column, 'key', None)
    if isinstance(key, str):
        return key
    raise TypeError('Weight column must be either a string or NumericColumn. '
                    'Given type: {}.'.format(type(weight_column)))


def raw_weights(features: Mapping[str, Any] | None, weight_column: Any) -> np.ndarray:
    """The weight feature as float32 after the feature-column steps: rank 0 refused, rank 1
    expanded to [B, 1], `normalizer_fn` applied."""
    key = weight_column_key(weight_column)
    if features is None or key not in features:
        raise ValueError('Feature {} is not in features dictionary.'.format(key))
    w = features[key]
    if hasattr(w, 'to_numpy') and not isinstance(w, np.ndarray):
        w = w.to_numpy()
    w = np.asarray(w)
    if w.ndim == 0:
        raise ValueError('Feature (key: {}) cannot have rank 0. Given: {}'.format(key, w))
    if w.ndim == 1:
        w = w[:, np.newaxis]
    normalizer = getattr(weight_column, 'normalizer_fn', None)
    if normalizer is not None:
        w = np.asarray(normalizer(w))
    if w.dtype == object or w.dtype.kind in 'US':
        raise ValueError('Cast string to float is not supported')
    return w.astype(np.float32, copy=False)


def example_weights(features: Mapping[str, Any] | None, weight_column: Any, logits: np.ndarray,
                    allow_per_logit: bool = False) -> np.ndarray | float:
    """Example weights shaped `[D0..DN, 1]` (or `[D0..DN, L]` per logit), float64; 1.0 without a
    weight column. Zero and negative weights are kept, as in tf.estimator.

    Raises:
      ValueError: missing feature, rank 0, or a shape that matches neither form (TF face's texts).
    """
    if weight_column is None:
        return 1.0
    w = raw_weights(features, weight_column)
    logits_shape = _shape(logits)
    if w.ndim == logits.ndim - 1:
        if _shape(w) == logits_shape[:-1]:
            return w[..., np.newaxis].astype(np.float64)
    elif _shape(w) == logits_shape[:-1] + (1,) or (allow_per_logit and _shape(w) == logits_shape):
        return w.astype(np.float64)
    if allow_per_logit:
        raise ValueError(
            'weights shape must be [D0, D1, ... DN], [D0, D1, ... DN, 1] or [D0, D1, ... DN, '
            'logits_dimension], logits_shape: {}. weights_shape: {}.'.format(
                logits_shape, _shape(w)))
    raise ValueError('weights shape must be [D0, D1, ... DN] or [D0, D1, ... DN, 1], logits_shape: '
                     '{}. weights_shape: {}.'.format(logits_shape, _shape(w)))


def weights_not_finite_rows(features: Mapping[str, Any] | None, weight_column: Any,
                            n_rows: int) -> np.ndarray | None:
    """Rows whose weight is NaN or infinite, or None when all are finite (or no weight column)."""
    if weight_column is None:
        return None
    w = raw_weights(features, weight_column)
    bad = rows_any(~np.isfinite(w), n_rows)
    return bad if bad.any() else None


# -------------------------------------------------------------------------------------------------
# Custom loss functions and reductions.
# -------------------------------------------------------------------------------------------------

def call_loss_fn(loss_fn: Callable[..., Any], labels: np.ndarray, logits: np.ndarray,
                 features: Mapping[str, Any] | None, k: int) -> np.ndarray:
    """Calls a custom `loss_fn` with numpy arrays and checks its `[D0..DN, k]` shape.

    The array face passes numpy arrays (labels as the head processed them, float32 logits, the
    features dict as given); a returned tf.Tensor (or anything array-like) goes through np.asarray.

    Raises:
      ValueError: when the result's shape is not `logits.shape[:-1] + (k,)` (TF face's text).
    """
    from heads.base import loss_fn_passes_features
    kwargs: dict[str, Any] = {'labels': labels, 'logits': logits}
    if loss_fn_passes_features(loss_fn):
        kwargs['features'] = {} if features is None else features
    loss = np.asarray(loss_fn(**kwargs), dtype=np.float64)
    expected = _shape(logits)[:-1] + (k,)
    if _shape(loss) != expected:
        raise ValueError(('loss_fn must return Tensor of shape [D0, D1, ... DN, {}]. '.format(k),
                          'logits_shape: ', _shape(logits), 'loss_shape: ', _shape(loss)))
    return loss


def weighted_loss(unweighted: np.ndarray, weights: np.ndarray | float) -> np.ndarray:
    """`U · w` broadcast (Keras `compute_weighted_loss` before its reduction), float64."""
    return np.asarray(unweighted, dtype=np.float64) * np.asarray(weights, dtype=np.float64)


def batch_size(logits: np.ndarray) -> int:
    """Number of examples: the product of the batch dimensions D0..DN."""
    return int(np.prod(logits.shape[:-1], dtype=np.int64))


def weighted_per_example(u: np.ndarray, weights: np.ndarray | float) -> np.ndarray:
    """The weighted loss as a fresh array of the unweighted loss's shape `[D0..DN, 1]`."""
    return np.broadcast_to(weighted_loss(u, weights), u.shape).copy()


# -------------------------------------------------------------------------------------------------
# Label dtypes and prediction keys.
# -------------------------------------------------------------------------------------------------

# No space after "given: {}." in tf.estimator's text.
UNKNOWN_PREDICTION_KEY = 'Prediction key must be in PredictionKeys, given: {}.' \
                         'Valid prediction keys include {}.'


def is_integer(arr: np.ndarray) -> bool:
    return arr.dtype.kind in 'iu'


def check_keys(keys: Sequence[str] | None, valid: Sequence[str]) -> Sequence[str]:
    """The requested prediction keys (all valid ones when none are given); unknown keys raise."""
    if not keys:
        return valid
    for key in keys:
        if key not in valid:
            raise ValueError(UNKNOWN_PREDICTION_KEY.format(key, list(valid)))
    return keys


def all_class_ids(logits: np.ndarray, n_classes: int) -> np.ndarray:
    """`[D0, n]` int32: every class id for each row of the first dimension (tf.estimator)."""
    return np.tile(np.arange(n_classes, dtype=np.int32), (logits.shape[0], 1))


def all_classes(logits: np.ndarray, n_classes: int,
                vocabulary: Sequence[str] | None) -> np.ndarray:
    names = list(vocabulary) if vocabulary else [str(i) for i in range(n_classes)]
    row = np.array(names, dtype=object)
    return np.tile(row, (logits.shape[0], 1))
