"""The plots table's rows as TFMA's `PlotsForSlice` protos (see pipeline/writers/tfma_protos.py
for how the tables map onto TFMA's protos): per (slice, head, sub_key) one `PlotKeyAndValue` whose
`PlotData` holds the confusion matrices at thresholds and the calibration buckets. Rows are
grouped and each `PlotData` encoded with numpy (pipeline/writers/tfma_plot_bytes.py); the
row-by-row path is kept for tables whose columns do not come as plain arrays.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.writers import tfma_plot_bytes
from pipeline.writers.tfma_protos import (_CLASS_TAG, TypedValues, check_head, slice_key,
                                          slice_key_proto, tfma_module)


_PLOT_COLUMNS = ('slice_columns', 'slice_values', 'head', 'sub_key', 'curve', 'threshold', 'tp',
                 'fp', 'tn', 'fn', 'precision', 'recall', 'false_positive_rate', 'bucket_lower',
                 'bucket_upper', 'weighted_examples', 'weighted_labels', 'weighted_predictions')


def plots_records(plots: pa.Table, rows: list[int], slices: Sequence[Sequence[str]],
                  head_names: Sequence[str], typed: TypedValues | None) -> list[bytes]:
    """One serialized `PlotsForSlice` per slice of the plots table's `rows`: a `PlotKeyAndValue`
    per (head, sub_key), heads in `head_names` order."""
    mfs = tfma_module('proto.metrics_for_slice_pb2')
    # Text columns as lists, numbers as float64 arrays (NaN for null) for `_plot_data`.
    cols: dict[str, Any] = {}
    for name in _PLOT_COLUMNS:
        column = plots.column(name)
        if pa.types.is_floating(column.type):
            cols[name] = pc.fill_null(column.cast(pa.float64()), math.nan).to_numpy()
    curve = plots.column('curve')
    cols['curve'] = curve.to_pylist()
    for kind in ('confusion', 'calibration'):
        cols['_' + kind] = pc.fill_null(pc.equal(curve, kind), False).to_numpy()
    order = {h: i for i, h in enumerate(head_names)}
    groups = _plot_groups(plots, rows, slices, head_names, typed)
    if groups is None:
        for name in ('slice_columns', 'slice_values', 'head', 'sub_key'):
            cols[name] = plots.column(name).to_pylist()
        groups = _plot_groups_by_row(cols, rows, slices, head_names, typed)
    records = []
    for key, by_plot in groups.items():
        out = mfs.PlotsForSlice(slice_key=slice_key_proto(key))
        for (head, sub_key), plot_rows in sorted(by_plot.items(),
                                                 key=lambda kv: (order[kv[0][0]], kv[0][1])):
            kv = out.plot_keys_and_values.add()
            kv.key.output_name = head
            kv.key.example_weighted.value = True
            m = _CLASS_TAG.match(sub_key)
            if m:
                kv.key.sub_key.class_id.value = int(m.group('id'))
            elif sub_key:
                kv.key.output_name = '%s/%s' % (head, sub_key)
            _plot_data(kv.value, plot_rows, cols)
        records.append(out.SerializeToString())
    return records


def _codes(plots: pa.Table, name: str, index: pa.Array) -> tuple[np.ndarray, list] | None:
    """A text column's rows `index` as codes into its distinct values (None: it has nulls)."""
    column = plots.column(name).take(index)
    if column.null_count:
        return None
    encoded = column.combine_chunks().dictionary_encode()
    return encoded.indices.to_numpy().astype(np.int64), encoded.dictionary.to_pylist()


def _plot_groups(plots: pa.Table, rows: list[int], slices: Sequence[Sequence[str]],
                 head_names: Sequence[str], typed: TypedValues | None
                 ) -> dict[tuple, dict[tuple[str, str], np.ndarray]] | None:
    """`_plot_groups_by_row`'s groups, each distinct slice, head and curve checked once and the
    rows grouped with numpy (None when a text column has nulls: the per-row path reports them)."""
    if not rows:
        return {}
    idx = np.asarray(rows, dtype=np.int64)
    index = pa.array(idx)
    coded = [_codes(plots, c, index) for c in ('slice_columns', 'slice_values', 'head',
                                                'sub_key', 'curve')]
    if any(c is None for c in coded):
        return None
    (sc, sc_text), (sv, sv_text), (hd, hd_text), (sk, sk_text), (cv, cv_text) = coded
    # Checks in row order of each distinct value's first row (the per-row path's errors).
    first_head = np.unique(hd, return_index=True)[1]
    for code, at in zip(np.unique(hd), first_head):
        check_head(hd_text[code], head_names, 'plots', int(idx[at]))
    for code, at in zip(*np.unique(cv, return_index=True)):
        if cv_text[code] not in ('confusion', 'calibration'):
            raise ValueError('tfma: plots row %d: curve %r is not confusion or calibration'
                             % (int(idx[at]), cv_text[code]))
    pair = sc * len(sv_text) + sv
    pairs, first, pair_of_row = np.unique(pair, return_index=True, return_inverse=True)
    keys = [slice_key(sc_text[p // len(sv_text)], sv_text[p % len(sv_text)], slices, typed)
            for p in pairs]
    # Rows by (slice pair, head, sub_key), each group's rows in their given order.
    group = (pair_of_row * len(hd_text) + hd) * len(sk_text) + sk
    order = np.argsort(group, kind='stable')
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    groups: dict[tuple, dict[tuple[str, str], np.ndarray]] = {}
    slice_rank = {int(p): r for r, p in enumerate(np.argsort(first, kind='stable'))}
    parts = sorted(np.split(order, bounds), key=lambda part: slice_rank[int(pair_of_row[part[0]])])
    for part in parts:
        p = int(pair_of_row[part[0]])
        head, sub = hd_text[hd[part[0]]], sk_text[sk[part[0]]]
        by_plot = groups.setdefault(keys[p], {})
        rows_of = idx[part]
        plot_key = (head, sub)
        by_plot[plot_key] = (np.concatenate([by_plot[plot_key], rows_of])
                             if plot_key in by_plot else rows_of)
    return groups


def _plot_groups_by_row(cols: dict[str, Any], rows: list[int], slices: Sequence[Sequence[str]],
                        head_names: Sequence[str], typed: TypedValues | None
                        ) -> dict[tuple, dict[tuple[str, str], list[int]]]:
    """Rows grouped by slice key (in order of first row) and (head, sub_key), every row
    checked."""
    groups: dict[tuple, dict[tuple[str, str], list[int]]] = {}
    keys: dict[tuple[str, str], tuple] = {}  # each slice's key parsed once
    for i in rows:
        text = (cols['slice_columns'][i], cols['slice_values'][i])
        key = keys.get(text)
        if key is None:
            key = keys[text] = slice_key(text[0], text[1], slices, typed)
        check_head(cols['head'][i], head_names, 'plots', i)
        if cols['curve'][i] not in ('confusion', 'calibration'):
            raise ValueError('tfma: plots row %d: curve %r is not confusion or calibration'
                             % (i, cols['curve'][i]))
        groups.setdefault(key, {}).setdefault((cols['head'][i], cols['sub_key'][i]), []).append(i)
    return groups


_ENCODERS: dict[Any, Any] = {}


def _plot_data(value: Any, rows: list[int], cols: dict[str, Any]) -> None:
    """Fills a `PlotData` from one (slice, head, sub_key)'s rows: the confusion matrices by
    threshold, the calibration buckets by lower bound (encoded with numpy, all rows at once,
    when the message layout allows: `tfma_plot_bytes`)."""
    kind = type(value)
    if kind not in _ENCODERS:
        _ENCODERS[kind] = tfma_plot_bytes.encoder(kind)
    encode = _ENCODERS[kind]
    if encode is not None:
        index = np.asarray(rows, dtype=np.int64)
        confusion = index[cols['_confusion'][index]]
        confusion = confusion[np.argsort(cols['threshold'][confusion], kind='stable')]
        calibration = index[cols['_calibration'][index]]
        calibration = calibration[np.argsort(cols['bucket_lower'][calibration], kind='stable')]
        value.MergeFromString(encode(cols, confusion, calibration))
        return
    _plot_data_by_row(value, rows, cols)


# (proto field, plots column) of a confusion matrix row and of a calibration bucket's totals.
_CONFUSION_FIELDS = (
    ('threshold', 'threshold'), ('true_positives', 'tp'), ('false_positives', 'fp'),
    ('true_negatives', 'tn'), ('false_negatives', 'fn'), ('precision', 'precision'),
    ('recall', 'recall'), ('false_positive_rate', 'false_positive_rate'))
_CALIBRATION_TOTALS = (
    ('num_weighted_examples', 'weighted_examples'), ('total_weighted_label', 'weighted_labels'),
    ('total_weighted_refined_prediction', 'weighted_predictions'))


def _plot_data_by_row(value: Any, rows: list[int], cols: dict[str, Any]) -> None:
    """`_plot_data` one message per row (message layouts the encoder does not know)."""
    def num(name: str, i: int) -> float:
        v = cols[name][i]
        return math.nan if v is None else float(v)

    confusion = sorted((i for i in rows if cols['curve'][i] == 'confusion'),
                       key=lambda i: num('threshold', i))
    for i in confusion:
        mat = value.confusion_matrix_at_thresholds.matrices.add()
        for field, column in _CONFUSION_FIELDS:
            setattr(mat, field, num(column, i))
    calibration = sorted((i for i in rows if cols['curve'][i] == 'calibration'),
                         key=lambda i: num('bucket_lower', i))
    for i in calibration:
        b = value.calibration_histogram_buckets.buckets.add()
        b.lower_threshold_inclusive = num('bucket_lower', i)
        b.upper_threshold_exclusive = num('bucket_upper', i)
        for field, column in _CALIBRATION_TOTALS:  # wrapped doubles
            getattr(b, field).value = num(column, i)
