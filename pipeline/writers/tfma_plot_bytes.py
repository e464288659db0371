"""A `PlotData`'s confusion matrices and calibration buckets encoded with numpy, all rows at once.

Building a protobuf message per row (a few hundred a slice) costs microseconds per field: at
100,000 slices that is minutes. Every field the TFMA writer sets in a `ConfusionMatrixAtThreshold`
is a double, and every field of a calibration `Bucket` a double or a `DoubleValue`, so each row
encodes to the same number of bytes: a fixed layout of tags and little-endian doubles, filled
column by column. The bytes are then parsed into the `PlotData` (`MergeFromString`), giving the
message the per-row code would have built (explicitly set fields, zeros included).

The layout is read from the messages' descriptors; `encoder(plot_data_class)` returns None when
they do not match what this module encodes (the caller then builds the rows one by one).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

_DOUBLE = 1       # FieldDescriptor.TYPE_DOUBLE
_MESSAGE = 11     # FieldDescriptor.TYPE_MESSAGE
MATRIX_FIELDS = (('threshold', 'threshold'), ('true_positives', 'tp'),
                 ('false_positives', 'fp'), ('true_negatives', 'tn'),
                 ('false_negatives', 'fn'), ('precision', 'precision'), ('recall', 'recall'),
                 ('false_positive_rate', 'false_positive_rate'))
BUCKET_FIELDS = (('lower_threshold_inclusive', 'bucket_lower'),
                 ('upper_threshold_exclusive', 'bucket_upper'),
                 ('num_weighted_examples', 'weighted_examples'),
                 ('total_weighted_label', 'weighted_labels'),
                 ('total_weighted_refined_prediction', 'weighted_predictions'))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _row_layout(message: Any, fields: Sequence[tuple[str, str]]) -> list[tuple[int, bool]] | None:
    """Per field (its number, wrapped in a DoubleValue), or None if not encodable here."""
    layout = []
    for name, _ in fields:
        f = message.fields_by_name.get(name)
        if f is None:
            return None
        if f.type == _DOUBLE:
            layout.append((f.number, False))
        elif (f.type == _MESSAGE and f.message_type.full_name == 'google.protobuf.DoubleValue'):
            layout.append((f.number, True))
        else:
            return None
    return layout


def _container(parent: Any, field: str, item_field: str, fields: Sequence[tuple[str, str]]
               ) -> tuple[int, int, list[tuple[int, bool]]] | None:
    f = parent.fields_by_name.get(field)
    if f is None or f.type != _MESSAGE:
        return None
    item = f.message_type.fields_by_name.get(item_field)
    if item is None or item.type != _MESSAGE:
        return None
    layout = _row_layout(item.message_type, fields)
    return None if layout is None else (f.number, item.number, layout)


def _encode_rows(columns: Sequence[np.ndarray], layout: list[tuple[int, bool]],
                 item_number: int) -> bytes:
    """Each row as one element of the repeated field `item_number`, concatenated."""
    n = len(columns[0])
    # Per field: its tag (a varint: fields from 16 on take two bytes), then for a DoubleValue
    # the length 9 and the wrapper's own tag, then the double's 8 bytes.
    heads = [(_varint((number << 3) | 2) + bytes([9, (1 << 3) | 1])) if wrapped
             else _varint((number << 3) | 1) for number, wrapped in layout]
    width = sum(len(h) + 8 for h in heads)
    prefix = _varint((item_number << 3) | 2) + _varint(width)
    out = np.empty((n, len(prefix) + width), np.uint8)
    out[:, :len(prefix)] = np.frombuffer(prefix, np.uint8)
    at = len(prefix)
    for head, values in zip(heads, columns):
        out[:, at:at + len(head)] = np.frombuffer(head, np.uint8)
        at += len(head)
        out[:, at:at + 8] = np.ascontiguousarray(values, dtype='<f8').view(np.uint8).reshape(n, 8)
        at += 8
    return out.tobytes()


def encoder(plot_data_class: Any) -> Callable[[Mapping[str, np.ndarray], np.ndarray,
                                               np.ndarray], bytes] | None:
    """A function (columns, confusion rows, calibration rows) → the PlotData bytes holding them
    (rows already in output order), or None when the message layout differs from the one
    encoded here."""
    desc = plot_data_class.DESCRIPTOR
    matrices = _container(desc, 'confusion_matrix_at_thresholds', 'matrices', MATRIX_FIELDS)
    buckets = _container(desc, 'calibration_histogram_buckets', 'buckets', BUCKET_FIELDS)
    if matrices is None or buckets is None:
        return None

    def encode(cols: Mapping[str, np.ndarray], confusion: np.ndarray,
               calibration: np.ndarray) -> bytes:
        out = []
        for rows, (number, item, layout), fields in ((confusion, matrices, MATRIX_FIELDS),
                                                     (calibration, buckets, BUCKET_FIELDS)):
            if rows.size == 0:
                continue
            body = _encode_rows([cols[c][rows] for _, c in fields], layout, item)
            out.append(_varint((number << 3) | 2) + _varint(len(body)) + body)
        return b''.join(out)
    return encode
