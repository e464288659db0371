"""Per-row predictions (`--predictions`): the table of a batch's evaluated rows and its file name.

Owns `predictions_table` (the input's non-logit columns, `_file`, `_row`, and every head's
predictions and per-example loss) and `predictions_path` (one Parquet file per batch, named by
its source file and first row).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from pipeline.config import EvalConfig
from pipeline.elements import HeadArrays, SourceBatch


def _prediction_column(values: Any) -> pa.Array:
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.dtype == object:
        values = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v,
                              otypes=[object])(values) if values.size else values
    if values.ndim == 1:
        return pa.array(values.tolist() if values.dtype == object else values)
    flat = pa.array(values.reshape(-1).tolist() if values.dtype == object
                    else values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def predictions_table(config: EvalConfig, heads: Sequence[Any], batch: pa.RecordBatch,
                      arrays: Sequence[HeadArrays], path: str, rows: np.ndarray) -> pa.Table:
    """The input's non-logit columns, `_file` and `_row` (the row's file and 0-based row in it,
    as errors/ names rows), and per head its predictions and per-example `loss`, as
    `<head>/<key>` columns (bare keys for an unnamed head)."""
    logit_cols = {c for spec in config.heads for c in spec.logits_columns}
    cols: dict[str, pa.Array] = {'_file': pa.array([path] * rows.size, pa.string()),
                                 '_row': pa.array(rows.astype(np.int64))}
    for name, col in zip(batch.schema.names, batch.columns):
        if name not in logit_cols:
            cols[name] = col
    for name, head, a in zip(config.head_names, heads, arrays):
        prefix = name + '/' if name else ''
        preds = head.array_predictions(a.logits)
        for k, v in preds.items():
            cols[prefix + str(k)] = _prediction_column(v)
        loss = np.asarray(head.array_loss(a.labels, a.logits, a.features or None))
        cols[prefix + 'loss'] = _prediction_column(loss.reshape(loss.shape[0], -1))
    return pa.table(cols)


def predictions_path(directory: str, sb: SourceBatch) -> str:
    """Where the predictions of batch `sb` go: `<stem>-<hash of path>-<first row>.parquet`."""
    stem = os.path.basename(sb.path).split('.')[0] or 'part'
    tag = hashlib.sha1(sb.path.encode('utf-8')).hexdigest()[:8]
    return '%s/%s-%s-%012d.parquet' % (directory.rstrip('/'), stem, tag, sb.first_row)
