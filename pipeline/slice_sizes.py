"""Slices by size: `min_slice_size` (slices with too few rows left out of the outputs, counted),
the count of slices per slice spec (a warning past `MANY_SLICES`) and TensorBoard's cap on runs
(`cap_runs`, `tensorboard.max_runs`).

A slice here is one (slice spec, slice values, window, step): its size is the number of rows its
heads evaluated (the largest `example_count` among its heads; every head sees the same rows). A
slice with fewer than `config.min_slice_size` rows is left out of the metrics and plots tables and
of every output built from them (TFMA, TensorBoard, report), as TFMA's `min_slice_size` does; the
summary counts, per spec, how many slices and rows were left out, and a warning is logged. Overall
(the spec without columns) is never left out.
"""
from __future__ import annotations

import logging
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.key_columns import KeyColumns, spec_name  # noqa: F401 (spec_name: API)
from pipeline.results import KeyResult
from pipeline.schema import OVERALL

_log = logging.getLogger(__name__)
# A slice spec with more slices than this gets a warning (log and summary): such runs are slow to
# read and their outputs large; `min_slice_size` or a coarser column may be what was meant.
MANY_SLICES = 10_000


class SliceSizes(NamedTuple):
    """What `apply_min_slice_size` kept and left out."""
    kept: list[KeyResult]
    # Per slice spec with slices left out: {'slices': how many, 'rows': their rows (summed over
    # windows and steps: a row is counted once per slice it was left out of)}.
    left_out: dict[str, dict[str, int]]


def apply_min_slice_size(results: Iterable[KeyResult], min_slice_size: int) -> SliceSizes:
    """Leaves out the results of slices with fewer than `min_slice_size` rows (0: none).

    Every head's result of a left-out slice goes, so a slice is either whole or absent; the
    spec without columns (Overall) always stays (`KeyColumns.small_slices`).
    """
    results = list(results)
    keep, left_out = KeyColumns.from_results(results).small_slices(min_slice_size)
    if not left_out:
        return SliceSizes(results, {})
    return SliceSizes([results[i] for i in np.flatnonzero(keep).tolist()], left_out)


def slices_per_spec(results: Iterable[KeyResult]) -> dict[str, int]:
    """Per slice spec, its distinct slice values (across windows and steps)."""
    return KeyColumns.from_results(list(results)).spec_counts()


def many_slices_warnings(counts: dict[str, int], limit: int = MANY_SLICES) -> list[str]:
    """A warning (logged, and returned for the summary) per slice spec with more than `limit`
    slices."""
    out = []
    for name, n in counts.items():
        if n > limit:
            message = ('slice spec %s yields %d slices (more than %d): outputs are large and '
                       'slow to read; consider min_slice_size or a coarser column'
                       % (name, n, limit))
            _log.warning('headstream: %s', message)
            out.append(message)
    return out


def cap_runs(metrics: pa.Table, max_runs: int) -> tuple[pa.Table, int]:
    """The metrics rows of at most `max_runs` slices (TensorBoard runs): Overall and then the
    largest slices by example count (ties by name); and how many slices were left out. A cap
    that bites is logged, naming the count."""
    if metrics.num_rows == 0:
        return metrics, 0
    sizes = metrics.select(['slice', 'example_count']).group_by('slice').aggregate(
        [('example_count', 'max')])
    total = sizes.num_rows
    if total <= max_runs:
        return metrics, 0
    names = np.asarray(sizes.column('slice').to_pylist(), dtype=object)
    counts = sizes.column('example_count_max').fill_null(-1).to_numpy()
    overall = names == OVERALL
    # Overall first, then by example count descending, then by name.
    order = np.lexsort((names.astype(str), -counts, ~overall))
    keep = names[order[:max_runs]]
    _log.warning('headstream: tensorboard: %d slices would make %d runs, more than '
                 'tensorboard.max_runs %d: writing Overall and the %d largest slices, leaving out '
                 '%d (raise tensorboard.max_runs to write more)', total, total, max_runs,
                 len(keep) - int(overall.any()), total - len(keep))
    kept = metrics.filter(pc.is_in(metrics['slice'], value_set=pa.array(keep.tolist(),
                                                                         pa.string())))
    return kept, total - len(keep)


class PlotLimit(NamedTuple):
    """What `limit_plots` kept: the results (in the same order) with the plots of every slice
    past the limit dropped, and per slice spec how many slices lost their plots."""
    results: list[KeyResult]
    without_plots: dict[str, int]


def limit_plots(prepared: Sequence[KeyResult], max_slices: int | None) -> PlotLimit:
    """`plots.max_slices`: keeps the plots of Overall and, per slice spec, window and step, of
    the `max_slices` largest slices (by example count, the largest among a slice's heads); ties go
    to the slice first in the tables' order. `prepared` is `prepare_results`' output (in that
    order); None keeps every slice's plots. Each spec that loses plots is logged once
    (`KeyColumns.plot_limit`)."""
    prepared = list(prepared)
    keep, without = KeyColumns.from_results(prepared).plot_limit(max_slices)
    if not without:
        return PlotLimit(prepared, {})
    results = [r if k or not r.plots else r._replace(plots={})
               for r, k in zip(prepared, keep.tolist())]
    return PlotLimit(results, without)
