"""`MultiLabelHead`'s labels given as one list of class ids (or, with `label_vocabulary`, names)
per row — tf.estimator's SparseTensor labels: recognising them, flattening them to (row, id)
pairs with tf.estimator's messages for bad values, and the multi-hot matrix they stand for.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from heads.array import inputs as ai


def is_id_lists(labels: Any) -> bool:
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
        vals = ai.as_label_array(vals.astype(object))
    return np.asarray(parents, dtype=np.int64), vals, len(rows)


def sparse_ids(labels: Any, label_vocabulary: Sequence[str] | None
                ) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(rows, ids, number of rows, names?) of id-list labels; unknown names get id −1.

    Raises:
      ValueError: non-integer, non-string values (TF face's text).
    """
    rows, vals, n = _id_lists_flat(labels)
    if vals.size and (vals.dtype == object or vals.dtype.kind in 'US'):
        if not label_vocabulary:
            raise ValueError("String labels need a label_vocabulary. Given: <dtype: 'string'>")
        return rows, ai.lookup_labels(vals.astype(object), label_vocabulary), n, True
    if vals.size and not ai.is_integer(vals):
        raise ValueError("Labels dtype should be integer. Instead got <dtype: '{}'>.".format(
            ai.tf_dtype_name(vals.dtype)))
    return rows, vals.astype(np.int64), n, False


def indicator(rows: np.ndarray, ids: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """Multi-hot `[n_rows, n_classes]` int64 of the in-range (row, id) pairs; duplicates give 1."""
    out = np.zeros((n_rows, n_classes), dtype=np.int64)
    ok = (ids >= 0) & (ids < n_classes)
    out[rows[ok], ids[ok]] = 1
    return out
