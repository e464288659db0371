"""The elements that flow between the pipeline's modules, and the names of the tagged outputs.

Owns the shared types, none of which depends on Beam: `SourceBatch` (what the sources read),
`HeadArrays` (one head's numpy inputs), `Key` (what states are combined by), `SubBatch` (one key's
rows, without the pre-combine), `BundleStats` (rows read and rejected), `BadRecordError` and its
message prefix, the tags of the evaluation's side outputs, and `is_list`: the one test of an Arrow
list type, used by the config check (`pipeline.config`) and the decoder (`pipeline.decode`) alike.

Keys are `(slice_columns, slice_values, head_index, window_start_us | None, step | None)`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

#: The prefix of every bad-record message: `bad record: file F, row R, column C: reason`.
BAD_RECORD = 'bad record'
#: The tagged output of rejected rows (tables in `pipeline.schema.ERRORS` layout).
ERRORS_TAG = 'errors'
#: The tagged output of `BundleStats`.
STATS_TAG = 'stats'
#: The tagged output of each handed-on block part's key counts (`block_results.key_counts`),
#: from which `plots.max_slices` picks the slices with plots.
PLOT_COUNTS_TAG = 'plot_counts'


class BadRecordError(RuntimeError):
    """A row no head can evaluate, with bad_records='fail'. The message is one line:
    `bad record: file F, row R, column C: reason`."""


def bad_record_message(path: str, row: int, column: str, reason: str) -> str:
    """The one-line message naming a bad row (`BadRecordError`, errors/ tables' readers)."""
    return '%s: file %s, row %d, column %s: %s' % (BAD_RECORD, path, row, column, reason)


class SourceBatch(NamedTuple):
    """Consecutive rows of one file: rows first_row .. first_row + batch.num_rows - 1."""
    path: str
    first_row: int
    batch: pa.RecordBatch


class Key(NamedTuple):
    """What one head state accumulates: a slice value of a slice spec, a head, a window, a step."""
    slice_columns: tuple[str, ...]
    slice_values: tuple[Any, ...]
    head: int
    window_start: int | None  # microseconds since the epoch, UTC
    step: int | None


class HeadArrays(NamedTuple):
    """One head's inputs for a batch (or sub-batch), as the array face takes them."""
    labels: Any                     # np.ndarray, or pa.Array of per-row id lists
    logits: np.ndarray
    features: dict[str, np.ndarray]


class BundleStats(NamedTuple):
    """Rows a bundle read, how many of them were rejected, and per slice spec how many evaluated
    rows fell in none of its slices (a null slice value: counted, as TFMA does not)."""
    rows: int
    bad: int
    unsliced: tuple[tuple[tuple[str, ...], int], ...] = ()


class SubBatch(NamedTuple):
    """Un-combined input for one key (the variant without the pre-combine)."""
    head: int
    arrays: HeadArrays


def is_list(t: pa.DataType) -> bool:
    """An Arrow list type of any layout: list, large list, fixed-size list, list view, large list
    view (the decoder reads the views as plain lists)."""
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t))
