"""Array face of `MultiClassHead`, `MultiLabelHead` and `MultiHead`: labels, losses, predictions and
mergeable states in numpy (`heads_spec.md` §5, §6, §9). Never imports TensorFlow.

Numerics follow the TF face: logits are float32, softmax and sigmoid are float32 (as TF computed
them), losses are computed in float64 from the float32 inputs, and every accumulator is float64.

Label forms accepted on the array face:

* `MultiClassHead`: integer class ids `[D0..DN]` or `[D0..DN, 1]`; with `label_vocabulary`, strings
  (bytes are decoded as UTF-8).
* `MultiLabelHead`: a numeric multi-hot array `[D0..DN, n_classes]` (values in [0, 1], soft values
  allowed), or one list of class ids per row — a list of lists, an object array of lists / arrays,
  or an Arrow (large) list array (tf.estimator's SparseTensor labels; rank-2 logits only) — or, with
  `label_vocabulary`, the same with class names (a 2-D object array of names is one row per row).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from heads import _np
from heads import states as st
from heads.keys import MetricKeys, PredictionKeys, Reduction, summary_key, threshold_key

# -------------------------------------------------------------------------------------------------
# Messages (the TF face's texts).
# -------------------------------------------------------------------------------------------------

LABELS_NOT_INDICATOR = 'labels must be an integer indicator Tensor with values in [0, 1]'
LABELS_NOT_SPARSE_IDS = 'labels must be an integer SparseTensor with values in [0, {n})'
# tf.estimator looks string class names up with OOV id −1 and then fails in SparseToDense.
LABELS_UNKNOWN_NAME = 'Indices are not valid (out of bounds): label not in label_vocabulary'
# No space after "given: {}." in tf.estimator's text.
UNKNOWN_PREDICTION_KEY = 'Prediction key must be in PredictionKeys, given: {}.' \
                         'Valid prediction keys include {}.'


def _is_integer(arr: np.ndarray) -> bool:
    return arr.dtype.kind in 'iu'


# Below this many classes, per-row reductions run column by column (numpy sums fewer than 8
# elements left to right, so sums keep their value).
_FEW_CLASSES = 8


def _by_row_chunks(fn: Any, logits: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """`fn` applied to cache-sized groups of rows of `[D0..DN, L]` arrays (rows are
    independent), giving `[D0..DN, 1]`."""
    lead = logits.shape[:-1]
    rows = int(np.prod(lead, dtype=np.int64))
    flat = [a.reshape(rows, a.shape[-1]) for a in (logits,) + others]
    step = max(1, _np.CHUNK // max(1, logits.shape[-1]))
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
    return _by_row_chunks(_class_ids_rows, logits)


def _class_ids_rows(logits: np.ndarray) -> np.ndarray:
    lg = np.where(np.isnan(logits), -np.inf, logits)
    if lg.shape[-1] == 0 or lg.size == 0:
        return np.zeros(lg.shape[:-1] + (1,), dtype=np.int64)
    if lg.shape[-1] < _FEW_CLASSES:
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


def _check_keys(keys: Sequence[str] | None, valid: Sequence[str]) -> Sequence[str]:
    """The requested prediction keys (all valid ones when none are given); unknown keys raise."""
    if not keys:
        return valid
    for key in keys:
        if key not in valid:
            raise ValueError(UNKNOWN_PREDICTION_KEY.format(key, list(valid)))
    return keys


def _all_class_ids(logits: np.ndarray, n_classes: int) -> np.ndarray:
    """`[D0, n]` int32: every class id for each row of the first dimension (tf.estimator)."""
    return np.tile(np.arange(n_classes, dtype=np.int32), (logits.shape[0], 1))


def _all_classes(logits: np.ndarray, n_classes: int,
                 vocabulary: Sequence[str] | None) -> np.ndarray:
    names = list(vocabulary) if vocabulary else [str(i) for i in range(n_classes)]
    row = np.array(names, dtype=object)
    return np.tile(row, (logits.shape[0], 1))


def _row_problems(masks: list[tuple[str, str, np.ndarray]]) -> list[tuple[str, str, np.ndarray]]:
    """Drops the entries whose mask marks no row."""
    return [(role, reason, mask) for role, reason, mask in masks if mask.any()]


def _logits_and_weight_problems(head: Any, logits: Any, features: Mapping[str, Any] | None
                                ) -> tuple[np.ndarray | None, list[tuple[str, str, np.ndarray]]]:
    """Checked logits (or None when they are unusable) and the logits / weight problems of a
    batch, as bool masks over its rows."""
    try:
        lg = _np.check_logits(logits, head.logits_dimension)
    except ValueError as e:
        # Logits of the wrong shape or type: no row of the batch can be evaluated.
        rows = np.shape(logits)[0] if np.ndim(logits) else 1
        return None, [('logits', str(e), np.ones(rows, dtype=bool))]
    n = lg.shape[0]
    out = [('logits', _np.LOGITS_NOT_FINITE, _np.rows_any(~np.isfinite(lg), n))]
    if head.weight_column is not None:
        role = _np.weight_column_key(head.weight_column)
        try:
            _np.example_weights(features, head.weight_column, lg)
            bad = _np.weights_not_finite_rows(features, head.weight_column, n)
            if bad is not None:
                out.append((role, _np.WEIGHTS_NOT_FINITE, bad))
        except (ValueError, TypeError) as e:
            out.append((role, str(e), np.ones(n, dtype=bool)))
    return lg, out


def _loss_terms(head: Any, labels: Any, logits: Any, features: Mapping[str, Any] | None,
                labels_of: Callable[..., np.ndarray], unweighted_loss: Callable[..., np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | float, np.ndarray]:
    """(checked logits, checked labels, example weights, unweighted per-example loss) of a batch.

    `labels_of(head, labels, logits)` checks the labels and `unweighted_loss(head, labels, logits,
    features)` gives the loss before weighting; the TF face's errors are raised, and nothing is
    kept, so a rejected batch leaves no trace in a state.
    """
    lg = _np.check_logits(logits, head.logits_dimension)
    y = labels_of(head, labels, lg)
    weights = _np.example_weights(features, head.weight_column, lg)
    return lg, y, weights, unweighted_loss(head, y, lg, features)


def _weighted_per_example(u: np.ndarray, weights: np.ndarray | float) -> np.ndarray:
    """The weighted loss as a fresh array of the unweighted loss's shape `[D0..DN, 1]`."""
    return np.broadcast_to(_np.weighted_loss(u, weights), u.shape).copy()


# -------------------------------------------------------------------------------------------------
# MultiClassHead (§5).
# -------------------------------------------------------------------------------------------------

def multi_class_raw_ids(head: Any, labels: Any, logits: np.ndarray) -> np.ndarray:
    """Label ids `[D0..DN, 1]` int64 before the range check (unknown vocabulary strings → −1).

    Raises:
      ValueError: missing labels, wrong shape or dtype (TF face's texts).
    """
    labels = _np.dense_labels(labels, logits, 1)
    if head.label_vocabulary:
        if labels.size and not _np.is_string_array(labels):
            raise ValueError('Labels dtype should be string if there is a vocabulary. Instead got '
                             "<dtype: '{}'>".format(_np.tf_dtype_name(labels.dtype)))
        return _np.lookup_labels(labels, head.label_vocabulary)
    if labels.size == 0 and labels.dtype == object:
        return np.zeros(labels.shape, dtype=np.int64)
    if not _is_integer(labels):
        raise ValueError("Labels dtype should be integer. Instead got <dtype: '{}'>.".format(
            _np.tf_dtype_name(labels.dtype)))
    return labels.astype(np.int64, copy=False)


def multi_class_ids(head: Any, labels: Any, logits: np.ndarray) -> np.ndarray:
    """Checked label ids `[D0..DN, 1]` int64 (§5.2); raises the TF face's errors."""
    ids = multi_class_raw_ids(head, labels, logits)
    _np.check_label_range(ids, head.n_classes)
    return ids


def softmax_cross_entropy(ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """`logsumexp(logits) − logits[label]` per example, `[D0..DN, 1]` float64 (§5.3)."""
    logits = np.asarray(logits)
    ids = np.asarray(ids)
    if logits.size == 0 or logits.shape[-1] == 0 or ids.shape != logits.shape[:-1] + (1,):
        return _softmax_cross_entropy_rows(logits, ids)
    return _by_row_chunks(_softmax_cross_entropy_rows, logits, ids)


def _softmax_cross_entropy_rows(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    with np.errstate(over='ignore', invalid='ignore'):
        if 0 < x.shape[-1] < _FEW_CLASSES:
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


def multi_class_unweighted_loss(head: Any, ids: np.ndarray, logits: np.ndarray,
                                features: Mapping[str, Any] | None) -> np.ndarray:
    if head._loss_fn is not None:
        return _np.call_loss_fn(head._loss_fn, ids, logits, features, 1)
    return softmax_cross_entropy(ids, logits)


def multi_class_predictions(head: Any, logits: Any, keys: Sequence[str] | None = None) -> dict:
    """`MultiClassHead.predictions` in numpy (§5.4)."""
    p = PredictionKeys
    valid = (p.LOGITS, p.PROBABILITIES, p.CLASS_IDS, p.CLASSES, p.ALL_CLASS_IDS, p.ALL_CLASSES)
    keys = _check_keys(keys, valid)
    lg = _np.check_logits(logits, head.logits_dimension)
    out: dict[str, np.ndarray] = {}
    if p.LOGITS in keys:
        out[p.LOGITS] = lg
    if p.PROBABILITIES in keys:
        out[p.PROBABILITIES] = _np.softmax32(lg)
    if p.CLASS_IDS in keys or p.CLASSES in keys:
        class_ids = class_ids_of(lg)
        if p.CLASS_IDS in keys:
            out[p.CLASS_IDS] = class_ids
        if p.CLASSES in keys:
            names = (np.array(list(head.label_vocabulary), dtype=object) if head.label_vocabulary
                     else np.array([str(i) for i in range(head.n_classes)], dtype=object))
            out[p.CLASSES] = names[class_ids]
    if p.ALL_CLASS_IDS in keys:
        out[p.ALL_CLASS_IDS] = _all_class_ids(lg, head.n_classes)
    if p.ALL_CLASSES in keys:
        out[p.ALL_CLASSES] = _all_classes(lg, head.n_classes, head.label_vocabulary)
    return out


def multi_class_loss(head: Any, labels: Any, logits: Any,
                     features: Mapping[str, Any] | None = None) -> np.ndarray:
    """Per-example weighted unreduced loss `[D0..DN, 1]` float64."""
    _, _, weights, u = _loss_terms(head, labels, logits, features, multi_class_ids,
                                   multi_class_unweighted_loss)
    return _weighted_per_example(u, weights)


def multi_class_invalid_rows(head: Any, labels: Any, logits: Any,
                             features: Mapping[str, Any] | None = None) -> list:
    """Rows `MultiClassHead` cannot evaluate: bad logits, weights and labels (never raises)."""
    lg, out = _logits_and_weight_problems(head, logits, features)
    if lg is None:
        return _row_problems(out)
    n = lg.shape[0]
    try:
        ids = multi_class_raw_ids(head, labels, lg)
    except (ValueError, TypeError) as e:
        out.append(('labels', str(e), np.ones(n, dtype=bool)))
        return _row_problems(out)
    too_large, negative = _np.label_range_mask(ids, head.n_classes)
    out.append(('labels', _np.LABELS_TOO_LARGE.format(n=head.n_classes),
                _np.rows_any(too_large, n)))
    out.append(('labels', _np.LABELS_NEGATIVE, _np.rows_any(negative, n)))
    return _row_problems(out)


# -------------------------------------------------------------------------------------------------
# MultiLabelHead (§6).
# -------------------------------------------------------------------------------------------------

def _is_id_lists(labels: Any) -> bool:
    """Whether labels are per-row lists of class ids / names rather than a dense multi-hot array."""
    if labels is None:
        return False
    if hasattr(labels, 'type') and hasattr(labels, 'flatten'):  # Arrow list arrays
        return True
    if type(labels).__name__ == 'ChunkedArray':
        return True
    if isinstance(labels, (list, tuple)):
        if not labels:
            return True  # no rows: an empty list of rows
        return any(isinstance(row, (list, tuple, np.ndarray)) for row in labels) or (
            len(labels) > 0 and all(isinstance(v, (str, bytes)) for v in labels))
    arr = np.asarray(labels) if not isinstance(labels, np.ndarray) else labels
    if arr.dtype == object or arr.dtype.kind in 'US':
        return True
    return False


def _id_lists_flat(labels: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """(row index of each value, values, number of rows) of per-row id / name lists."""
    if type(labels).__name__ == 'ChunkedArray':
        labels = labels.combine_chunks()
    if hasattr(labels, 'type') and hasattr(labels, 'flatten'):
        import pyarrow.compute as pc
        values = pc.list_flatten(labels)
        parents = pc.list_parent_indices(labels).to_numpy(zero_copy_only=False)
        if hasattr(values.type, 'value_type'):  # dictionary-encoded names
            values = values.dictionary_decode() if hasattr(values, 'dictionary_decode') else values
        vals = np.asarray(values.to_numpy(zero_copy_only=False))
        return parents.astype(np.int64), vals, len(labels)
    arr = labels
    if isinstance(arr, np.ndarray) and arr.dtype != object and arr.dtype.kind in 'US':
        arr = arr.astype(object)
    if isinstance(arr, np.ndarray) and arr.ndim == 2:  # one row of names per row
        rows = [list(r) for r in arr]
    elif isinstance(arr, np.ndarray) and arr.ndim == 0:
        raise ValueError('labels must have rank at least 2.  Received rank 0, shape ()')
    else:
        rows = list(arr)
    parents: list[int] = []
    values: list[Any] = []
    for i, row in enumerate(rows):
        if row is None:
            continue
        if isinstance(row, (str, bytes)) or np.ndim(row) == 0:
            row = [row]
        for v in row:
            parents.append(i)
            values.append(v)
    vals = np.asarray(values) if values else np.zeros(0, dtype=np.int64)
    if vals.dtype.kind in 'USO' and vals.size:
        vals = _np.as_label_array(vals.astype(object))
    return np.asarray(parents, dtype=np.int64), vals, len(rows)


def _sparse_ids(head: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(rows, ids, number of rows, names?) of id-list labels; unknown names get id −1.

    Raises:
      ValueError: non-integer, non-string values (TF face's text).
    """
    rows, vals, n = _id_lists_flat(labels)
    if vals.size and (vals.dtype == object or vals.dtype.kind in 'US'):
        if not head.label_vocabulary:
            raise ValueError("String labels need a label_vocabulary. Given: <dtype: 'string'>")
        return rows, _np.lookup_labels(vals.astype(object), head.label_vocabulary), n, True
    if vals.size and not _is_integer(vals):
        raise ValueError("Labels dtype should be integer. Instead got <dtype: '{}'>.".format(
            _np.tf_dtype_name(vals.dtype)))
    return rows, vals.astype(np.int64), n, False


def _indicator(rows: np.ndarray, ids: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """Multi-hot `[n_rows, n_classes]` int64 of the in-range (row, id) pairs; duplicates give 1."""
    out = np.zeros((n_rows, n_classes), dtype=np.int64)
    ok = (ids >= 0) & (ids < n_classes)
    out[rows[ok], ids[ok]] = 1
    return out


def multi_label_labels(head: Any, labels: Any, logits: np.ndarray) -> np.ndarray:
    """Checked multi-hot labels `[D0..DN, n_classes]` (§6.2): dense labels keep their dtype, id
    lists become int64. Raises the TF face's errors."""
    n = head.n_classes
    if labels is None:
        _np.dense_labels(None, logits, n)  # raises the missing-labels text
    if _is_id_lists(labels):
        rows, ids, n_rows, names = _sparse_ids(head, labels)
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            raise ValueError(LABELS_UNKNOWN_NAME if names else LABELS_NOT_SPARSE_IDS.format(n=n))
        return _np.dense_labels(_indicator(rows, ids, n_rows, n), logits, n)
    arr = _np.as_label_array(labels)
    if arr.size and arr.dtype.kind not in 'iufb':
        raise ValueError(LABELS_NOT_INDICATOR)
    with np.errstate(invalid='ignore'):
        if arr.size and not np.all((arr >= 0) & (arr <= 1)):
            raise ValueError(LABELS_NOT_INDICATOR)
    return _np.dense_labels(arr, logits, n)


def multi_label_invalid_rows(head: Any, labels: Any, logits: Any,
                             features: Mapping[str, Any] | None = None) -> list:
    """Rows `MultiLabelHead` cannot evaluate: bad logits, weights and labels (never raises)."""
    lg, out = _logits_and_weight_problems(head, logits, features)
    if lg is None:
        return _row_problems(out)
    n_rows = lg.shape[0]
    everything = np.ones(n_rows, dtype=bool)
    n = head.n_classes
    try:
        if labels is None:
            _np.dense_labels(None, lg, n)
        if _is_id_lists(labels):
            rows, ids, got_rows, names = _sparse_ids(head, labels)
            bad_rows = np.zeros(got_rows, dtype=bool)
            bad_rows[rows[(ids < 0) | (ids >= n)]] = True
            reason = LABELS_UNKNOWN_NAME if names else LABELS_NOT_SPARSE_IDS.format(n=n)
            _np.dense_labels(_indicator(rows, ids, got_rows, n), lg, n)
            out.append(('labels', reason, bad_rows))
        else:
            arr = _np.as_label_array(labels)
            if arr.size and arr.dtype.kind not in 'iufb':
                out.append(('labels', LABELS_NOT_INDICATOR, everything))
                return _row_problems(out)
            with np.errstate(invalid='ignore'):
                outside = ~((arr >= 0) & (arr <= 1))
            dense = _np.dense_labels(arr, lg, n)
            out.append(('labels', LABELS_NOT_INDICATOR,
                        _np.rows_any(outside.reshape(dense.shape), n_rows)))
    except (ValueError, TypeError) as e:
        out.append(('labels', str(e), everything))
    return _row_problems(out)


def sigmoid_cross_entropy_mean(labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Sigmoid cross-entropy averaged over the class axis, `[D0..DN, 1]` float64 (§6.3)."""
    z = np.asarray(labels, dtype=np.float32)  # TF casts the labels to the logits' float32
    ce = _np.log_sigmoid_cross_entropy(z, logits)
    return _np.mean_last_axis(ce, keepdims=True)


def multi_label_unweighted_loss(head: Any, labels: np.ndarray, logits: np.ndarray,
                                features: Mapping[str, Any] | None) -> np.ndarray:
    if head._loss_fn is not None:
        return _np.call_loss_fn(head._loss_fn, labels, logits, features, 1)
    return sigmoid_cross_entropy_mean(labels, logits)


def multi_label_predictions(head: Any, logits: Any, keys: Sequence[str] | None = None) -> dict:
    """`MultiLabelHead.predictions` in numpy (§6.4): classes lists every class name."""
    p = PredictionKeys
    keys = _check_keys(keys, (p.LOGITS, p.PROBABILITIES, p.CLASSES))
    lg = _np.check_logits(logits, head.logits_dimension)
    out: dict[str, np.ndarray] = {}
    if p.LOGITS in keys:
        out[p.LOGITS] = lg
    if p.PROBABILITIES in keys:
        out[p.PROBABILITIES] = _np.sigmoid32(lg)
    if p.CLASSES in keys:
        out[p.CLASSES] = _all_classes(lg, head.n_classes, head.label_vocabulary)
    return out


def multi_label_loss(head: Any, labels: Any, logits: Any,
                     features: Mapping[str, Any] | None = None) -> np.ndarray:
    """Per-example weighted unreduced loss `[D0..DN, 1]` float64."""
    _, _, weights, u = _loss_terms(head, labels, logits, features, multi_label_labels,
                                   multi_label_unweighted_loss)
    return _weighted_per_example(u, weights)


# -------------------------------------------------------------------------------------------------
# Mergeable states.
# -------------------------------------------------------------------------------------------------

def _signature(head: Any) -> tuple:
    """What identifies a head's configuration for merging (a custom loss_fn by its name only, since
    the function object does not survive pickling with its identity)."""
    loss_fn = getattr(head, '_loss_fn', None)
    return (type(head).__name__, head.name, head.logits_dimension, head.loss_reduction,
            _np.weight_column_key(head.weight_column) if head.weight_column is not None else None,
            tuple(head.label_vocabulary) if head.label_vocabulary else None,
            tuple(getattr(head, 'thresholds', ()) or ()),
            tuple(getattr(head, 'classes_for_class_based_metrics', ()) or ()),
            getattr(loss_fn, '__name__', None))


class MultiClassState(st.HeadState):
    """`MultiClassHead` metrics over all data seen: average_loss, accuracy and the loss."""

    _components = ('average_loss', 'accuracy', 'loss_sum')

    def __init__(self, head: Any) -> None:
        super().__init__(_signature(head))
        self.head = head
        self.average_loss = st.WeightedMean()
        self.accuracy = st.WeightedMean()
        self.loss_sum = st.LossSum()

    @staticmethod
    def update_groups(states: Sequence['MultiClassState'], codes: np.ndarray | None,
                      labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                      ) -> bool:
        """Adds row i to `states[codes[i]]` in one pass (see `BinaryClassState.update_groups`);
        the batch is validated as a whole first (a rejected batch leaves no trace)."""
        if not states:
            return True
        head = states[0].head
        lg, ids, weights, u = _loss_terms(head, labels, logits, features, multi_class_ids,
                                          multi_class_unweighted_loss)
        groups = st.Groups.of(codes, len(states), _np.batch_size(lg))
        # The loss, the matches and the weights are all [D0..DN, 1]: one value per example.
        w = st.flat_weights(weights, u.shape)
        w_sum = groups.sum(w)
        wu_sum = groups.sum(np.asarray(u, dtype=np.float64).reshape(-1) * w)
        matches = (ids == class_ids_of(lg)).reshape(-1)
        st.LossSum.add_groups([s.loss_sum for s in states], wu_sum, groups.sum())
        st.WeightedMean.add_groups([s.average_loss for s in states], wu_sum, w_sum)
        st.WeightedMean.update_groups([s.accuracy for s in states], groups, matches, w, w_sum)
        st.add_counts_groups(states, groups.sum(), w_sum)
        return True

    def result(self) -> dict[str, float]:
        name = self.head.name
        return {summary_key(MetricKeys.LOSS_MEAN, name): self.average_loss.result(),
                summary_key(MetricKeys.ACCURACY, name): self.accuracy.result()}

    def loss(self) -> float:
        return self.loss_sum.value(self.head.loss_reduction)


_POOLED_PAIRS_PER_STEP = 1 << 19


class MultiLabelState(st.HeadState):
    """`MultiLabelHead` metrics over all data seen (§6.5), plus AUC bounds and curves.

    One `KerasAUC` gives both `auc` and `auc_precision_recall` (the same confusion matrices), over
    every (example, class) pair pooled; each class of `classes_for_class_based_metrics` has its
    own. High-resolution histograms (pooled and per class) bound the exact ROC AUC and feed the
    calibration plot.
    """

    _components = ('average_loss', 'auc', 'histogram', 'accuracy_at', 'confusion', 'class_mean',
                   'class_auc', 'class_histogram', 'class_confusion', 'loss_sum')
    MAX_GROUPS = 128  # states per grouped update (histogram sums: see BinaryClassState)

    def __init__(self, head: Any) -> None:
        super().__init__(_signature(head))
        self.head = head
        self.average_loss = st.WeightedMean()
        self.auc = st.KerasAUC()
        self.histogram = st.Histogram()
        self.accuracy_at = [st.WeightedMean() for _ in head.thresholds]
        self.confusion = st.Confusion(head.thresholds)
        classes = head.classes_for_class_based_metrics
        self.class_mean = [st.WeightedMean() for _ in classes]
        self.class_auc = [st.KerasAUC() for _ in classes]
        self.class_histogram = [st.Histogram() for _ in classes]
        # Per-class confusion at the head's thresholds: only for plots (exact per-class rows).
        self.class_confusion = [st.Confusion(head.thresholds) for _ in classes]
        self.loss_sum = st.LossSum()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if 'class_confusion' not in state:  # pickled before the per-class confusion existed
            self.class_confusion = [st.Confusion(self.head.thresholds)
                                    for _ in self.head.classes_for_class_based_metrics]

    @staticmethod
    def update_groups(states: Sequence['MultiLabelState'], codes: np.ndarray | None,
                      labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                      ) -> bool:
        """Adds row i to `states[codes[i]]` in one pass (see `BinaryClassState.update_groups`);
        the batch is validated as a whole first (a rejected batch leaves no trace). Returns
        False, changing nothing, for more than `MAX_GROUPS` states."""
        if not states:
            return True
        if len(states) > MultiLabelState.MAX_GROUPS:
            return False
        head = states[0].head
        lg, y, weights, u = _loss_terms(head, labels, logits, features, multi_label_labels,
                                        multi_label_unweighted_loss)
        n_classes = lg.shape[-1]
        rows = st.Groups.of(codes, len(states), _np.batch_size(lg))
        # The pooled metrics see every (example, class) pair, each with its example's weight.
        pairs = rows.repeat(n_classes)
        probs = _np.sigmoid32(lg)
        y32 = np.asarray(y, dtype=np.float32)  # Keras casts y_true to the predictions' dtype
        positive = y32 != 0
        w_row = st.flat_weights(weights, lg.shape[:-1] + (1,))
        w_sum = rows.sum(w_row)
        flat_pos, flat_p = positive.reshape(-1), probs.reshape(-1)
        flat_w = np.repeat(w_row, n_classes)
        wu_sum = rows.sum(np.asarray(u, dtype=np.float64).reshape(-1) * w_row)
        st.LossSum.add_groups([s.loss_sum for s in states], wu_sum, rows.sum())
        st.WeightedMean.add_groups([s.average_loss for s in states], wu_sum, w_sum)
        # Indicator labels (all 0 or 1) are the positive flags: the histograms need no label values.
        hard = np.count_nonzero(y32 == 1) == np.count_nonzero(positive)
        flat_y = None if hard else y32.reshape(-1).astype(np.float64)
        # The pooled pairs in blocks of rows, so that each block's per-pair temporaries stay in
        # cache (a batch of 10^5 rows with 20 classes has millions of pairs).
        step = max(1, _POOLED_PAIRS_PER_STEP // max(n_classes, 1))
        for r0 in range(0, rows.rows, step):
            block = rows.block(r0, r0 + step).repeat(n_classes)
            e = slice(r0 * n_classes, (r0 + step) * n_classes)
            st.KerasAUC.update_groups([s.auc for s in states], block, flat_pos[e], flat_p[e],
                                      flat_w[e])
            st.Histogram.update_groups([s.histogram for s in states], block, flat_pos[e],
                                       flat_p[e], flat_w[e], None if hard else flat_y[e])
        for i, t in enumerate(head.thresholds):
            # BinaryAccuracy: exact match of the label with (p > t), averaged over the classes.
            match = (y32 == (probs > np.float32(t)).astype(np.float32)).astype(np.float64)
            per_row = _np.mean_last_axis(match) if match.size else match[..., 0]
            st.WeightedMean.update_groups([s.accuracy_at[i] for s in states], rows,
                                          per_row.reshape(-1), w_row, w_sum)
        if head.thresholds:
            st.Confusion.update_groups([s.confusion for s in states], pairs, flat_pos, flat_p,
                                       flat_w)
        for i, c in enumerate(head.classes_for_class_based_metrics):
            p_c = probs[..., c].reshape(-1)
            pos_c = positive[..., c].reshape(-1)
            st.WeightedMean.update_groups([s.class_mean[i] for s in states], rows, p_c, w_row,
                                          w_sum)
            st.KerasAUC.update_groups([s.class_auc[i] for s in states], rows, pos_c, p_c, w_row)
            st.Histogram.update_groups([s.class_histogram[i] for s in states], rows, pos_c, p_c,
                                       w_row, None if hard else
                                       y32[..., c].reshape(-1).astype(np.float64))
            if head.thresholds:
                st.Confusion.update_groups([s.class_confusion[i] for s in states], rows, pos_c,
                                           p_c, w_row)
        st.add_counts_groups(states, rows.sum(), w_sum)
        return True

    def _class_keys(self, c: int) -> tuple[str, str, str]:
        name = self.head.name
        tag = self.head.class_tag(c)
        return (summary_key(MetricKeys.PROBABILITY_MEAN_AT_NAME % tag, name),
                summary_key(MetricKeys.AUC_AT_NAME % tag, name),
                summary_key(MetricKeys.AUC_PR_AT_NAME % tag, name))

    def result(self) -> dict[str, float]:
        head = self.head
        name = head.name
        out = {summary_key(MetricKeys.LOSS_MEAN, name): self.average_loss.result(),
               summary_key(MetricKeys.AUC, name): self.auc.roc(),
               summary_key(MetricKeys.AUC_PR, name): self.auc.pr()}
        if head.thresholds:
            precision = self.confusion.precision()
            recall = self.confusion.recall()
            # Thresholds formatting alike (%g) share a key: the later one wins, as in tf.estimator.
            for i, t in enumerate(head.thresholds):
                out[summary_key(threshold_key(MetricKeys.ACCURACY_AT_THRESHOLD, t), name)] = \
                    self.accuracy_at[i].result()
                out[summary_key(threshold_key(MetricKeys.PRECISION_AT_THRESHOLD, t), name)] = \
                    float(precision[i])
                out[summary_key(threshold_key(MetricKeys.RECALL_AT_THRESHOLD, t), name)] = \
                    float(recall[i])
        for i, c in enumerate(head.classes_for_class_based_metrics):
            mean_key, auc_key, pr_key = self._class_keys(c)
            out[mean_key] = self.class_mean[i].result()
            out[auc_key] = self.class_auc[i].roc()
            out[pr_key] = self.class_auc[i].pr()
        return out

    def loss(self) -> float:
        return self.loss_sum.value(self.head.loss_reduction)

    def bounds(self) -> dict[str, tuple[float, float]]:
        """Bounds of the exact ROC AUC (ties ½) for `auc` and each per-class `auc/<tag>`."""
        out = {summary_key(MetricKeys.AUC, self.head.name): self.histogram.auc_bounds()}
        for i, c in enumerate(self.head.classes_for_class_based_metrics):
            out[self._class_keys(c)[1]] = self.class_histogram[i].auc_bounds()
        return out

    def plots(self) -> dict[str, np.ndarray]:
        """Confusion matrices (the AUC's 200 thresholds and, exactly, the head's thresholds) and
        calibration, pooled (sub_key '') and per class ('classId:<c>')."""
        parts = [st.confusion_plot('', self.auc, self.confusion),
                 st.calibration_plot('', self.histogram)]
        for i, c in enumerate(self.head.classes_for_class_based_metrics):
            sub_key = 'classId:%d' % c
            parts += [st.confusion_plot(sub_key, self.class_auc[i], self.class_confusion[i]),
                      st.calibration_plot(sub_key, self.class_histogram[i])]
        return st.concat_plots(parts)


# -------------------------------------------------------------------------------------------------
# MultiHead (§9).
# -------------------------------------------------------------------------------------------------

def split_logits(multi_head: Any, logits: Any) -> dict[str, Any]:
    """Logits per head name: from a dict (every head present) or one array split on the last axis
    in head order (§9.2). Raises the TF face's errors."""
    heads = multi_head.heads
    if isinstance(logits, Mapping):
        missing = [h.name for h in heads if h.name not in logits]
        if missing:
            raise ValueError('logits has missing values for head(s): {}'.format(missing))
        return {h.name: logits[h.name] for h in heads}
    lg = np.asarray(logits)
    dims = [h.logits_dimension for h in heads]
    expected = sum(dims)
    if lg.ndim < 1 or lg.shape[-1] != expected:
        # tf.estimator prints the actual size where it means the expected one, and vice versa.
        raise ValueError(
            'Could not split logits of shape {} among the heads with individual logits dimensions: '
            '{}. The last dimension of the logits tensor should equal {} but is {}.'.format(
                list(lg.shape), dims, lg.shape[-1] if lg.ndim else None, expected))
    cuts = np.cumsum(dims)[:-1]
    return {h.name: part for h, part in zip(heads, np.split(lg, cuts, axis=-1))}


def split_labels(multi_head: Any, labels: Any) -> dict[str, Any]:
    """Labels per head name; labels must be a dict holding every head (§9.2)."""
    if not isinstance(labels, Mapping):
        raise ValueError('labels must be a dict. Given: {}'.format(labels))
    missing = [h.name for h in multi_head.heads if h.name not in labels]
    if missing:
        raise ValueError('labels has missing values for head(s): {}'.format(missing))
    return {h.name: labels[h.name] for h in multi_head.heads}


def multi_head_weights(multi_head: Any) -> tuple[float, ...]:
    return tuple(multi_head.head_weights) or tuple(1.0 for _ in multi_head.heads)


def multi_head_predictions(multi_head: Any, logits: Any, keys: Sequence[str] | None = None) -> dict:
    """`{(head name, prediction key): array}` for every key of every head (`keys` is ignored, as in
    tf.estimator)."""
    parts = split_logits(multi_head, logits)
    out: dict[tuple[str, str], np.ndarray] = {}
    for head in multi_head.heads:
        for k, v in head.array_predictions(parts[head.name]).items():
            out[(head.name, k)] = v
    return out


def multi_head_loss(multi_head: Any, labels: Any, logits: Any,
                    features: Mapping[str, Any] | None = None) -> np.ndarray:
    """Per-example loss `[D0..DN, 1]`: Σ_h head_weight_h · (head h's per-example loss reduced over
    its last axis: summed for 'sum', averaged otherwise). Reducing it with the heads' common
    reduction gives `MultiHead.loss` (each head divides by its own element count otherwise)."""
    parts = split_logits(multi_head, logits)
    labels = split_labels(multi_head, labels)
    total: np.ndarray | None = None
    for head, weight in zip(multi_head.heads, multi_head_weights(multi_head)):
        per = np.asarray(head.array_loss(labels[head.name], parts[head.name], features),
                         dtype=np.float64)
        per = (per.sum(axis=-1, keepdims=True) if head.loss_reduction == Reduction.SUM
               else per.mean(axis=-1, keepdims=True))
        total = weight * per if total is None else total + weight * per
    return total


def multi_head_invalid_rows(multi_head: Any, labels: Any, logits: Any,
                            features: Mapping[str, Any] | None = None) -> list:
    """Every head's invalid rows (roles and reasons as the head gives them); a logits array that
    cannot be split or labels that are not a dict of every head mark every row."""
    try:
        n_rows = len(next(iter(logits.values()))) if isinstance(logits, Mapping) else len(logits)
    except TypeError:
        n_rows = 1
    everything = np.ones(n_rows, dtype=bool)
    try:
        parts = split_logits(multi_head, logits)
    except ValueError as e:
        return [('logits', str(e), everything)]
    try:
        labels = split_labels(multi_head, labels)
    except ValueError as e:
        return [('labels', str(e), everything)]
    out = []
    for head in multi_head.heads:
        out += head.invalid_rows(labels[head.name], parts[head.name], features)
    return out


class MultiHeadState(st.HeadState):
    """`MultiHead` metrics over all data seen: every head's own metrics (dataset semantics, not the
    eager last-batch quirk of tf.estimator), `loss/<head>` = that head's loss over all data, and the
    loss Σ head_weight · head loss."""

    _components = ('states',)

    def __init__(self, multi_head: Any) -> None:
        self.states = [h.new_state() for h in multi_head.heads]
        super().__init__(('MultiHead', tuple(s.signature for s in self.states),
                          multi_head_weights(multi_head)))
        self.head = multi_head

    def update(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
               ) -> 'MultiHeadState':
        parts = split_logits(self.head, logits)
        labels = split_labels(self.head, labels)
        # Each head's batch goes to a fresh state first, so one head's bad labels change nothing.
        fresh = [h.new_state().update(labels[h.name], parts[h.name], features)
                 for h in self.head.heads]
        for mine, batch in zip(self.states, fresh):
            mine.merge(batch)
        rows, _ = fresh[0].counts()
        self._add_counts(rows, rows)
        return self

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for head, state in zip(self.head.heads, self.states):
            out['%s/%s' % (MetricKeys.LOSS, head.name)] = state.loss()
        for state in self.states:
            out.update(state.result())
        return out

    def loss(self) -> float:
        return float(sum(w * s.loss() for w, s in zip(multi_head_weights(self.head), self.states)))

    def bounds(self) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for state in self.states:
            out.update(state.bounds())
        return out

    def plots(self) -> dict[str, np.ndarray]:
        """The heads' curves, sub_key prefixed by the head name (`head1`, `head1/classId:0`)."""
        parts = []
        for head, state in zip(self.head.heads, self.states):
            p = dict(state.plots())
            if len(p['curve']):
                p['sub_key'] = np.array([head.name if not k else '%s/%s' % (head.name, k)
                                         for k in p['sub_key']], dtype=object)
            parts.append(p)
        return st.concat_plots(parts)
