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

from pipeline.results import KeyResult
from pipeline.schema import OVERALL

_log = logging.getLogger(__name__)
# A slice spec with more slices than this gets a warning (log and summary): such runs are slow to
# read and their outputs large; `min_slice_size` or a coarser column may be what was meant.
MANY_SLICES = 10_000


def spec_name(columns: Sequence[str]) -> str:
    """A slice spec as the summary names it: its columns joined by '_X_' ('' for Overall)."""
    return '_X_'.join(columns)


class SliceSizes(NamedTuple):
    """What `apply_min_slice_size` kept and left out."""
    kept: list[KeyResult]
    # Per slice spec with slices left out: {'slices': how many, 'rows': their rows (summed over
    # windows and steps: a row is counted once per slice it was left out of)}.
    left_out: dict[str, dict[str, int]]


def _slice_of(r: KeyResult) -> tuple:
    k = r.key
    return (tuple(k.slice_columns), tuple(k.slice_values), k.window_start, k.step)


def apply_min_slice_size(results: Iterable[KeyResult], min_slice_size: int) -> SliceSizes:
    """Leaves out the results of slices with fewer than `min_slice_size` rows (0: none).

    Every head's result of a left-out slice goes, so a slice is either whole or absent; the
    spec without columns (Overall) always stays.
    """
    results = list(results)
    if min_slice_size <= 0:
        return SliceSizes(results, {})
    rows: dict[tuple, int] = {}
    for r in results:
        s = _slice_of(r)
        rows[s] = max(rows.get(s, 0), r.example_count)
    small = {s for s, n in rows.items() if s[0] and n < min_slice_size}
    if not small:
        return SliceSizes(results, {})
    left_out: dict[str, dict[str, int]] = {}
    for s in small:
        entry = left_out.setdefault(spec_name(s[0]), {'slices': 0, 'rows': 0})
        entry['slices'] += 1
        entry['rows'] += rows[s]
    for name, entry in sorted(left_out.items()):
        _log.warning('headstream: min_slice_size %d: %d %s slice(s) with %d rows in all left out '
                     'of the metrics, plots, TFMA, TensorBoard and report outputs (their rows '
                     'stay in Overall)', min_slice_size, entry['slices'], name, entry['rows'])
    kept = [r for r in results if _slice_of(r) not in small]
    return SliceSizes(kept, dict(sorted(left_out.items())))


def slices_per_spec(results: Iterable[KeyResult]) -> dict[str, int]:
    """Per slice spec, its distinct slice values (across windows and steps)."""
    seen: dict[str, set] = {}
    for r in results:
        seen.setdefault(spec_name(r.key.slice_columns), set()).add(tuple(r.key.slice_values))
    return {name: len(values) for name, values in sorted(seen.items())}


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


def _slice_units(prepared: Sequence[KeyResult]) -> tuple[np.ndarray, list[tuple]]:
    """Each key's slice (spec, values, window, step) as an index into the distinct slices, which
    `prepare_results` puts next to each other (its order is by slice, then head)."""
    unit = np.empty(len(prepared), np.int64)
    slices: list[tuple] = []
    last = None
    for i, r in enumerate(prepared):
        s = _slice_of(r)
        if s != last:
            slices.append(s)
            last = s
        unit[i] = len(slices) - 1
    return unit, slices


def limit_plots(prepared: Sequence[KeyResult], max_slices: int | None) -> PlotLimit:
    """`plots.max_slices`: keeps the plots of Overall and, per slice spec, window and step, of
    the `max_slices` largest slices (by example count, the largest among a slice's heads); ties go
    to the slice first in the tables' order. `prepared` is `prepare_results`' output (in that
    order); None keeps every slice's plots. Each spec that loses plots is logged once."""
    prepared = list(prepared)
    if max_slices is None or not prepared:
        return PlotLimit(prepared, {})
    unit, slices = _slice_units(prepared)
    sizes = np.zeros(len(slices), np.int64)
    np.maximum.at(sizes, unit, np.fromiter((r.example_count for r in prepared), np.int64,
                                           len(prepared)))
    groups: dict[tuple, int] = {}
    group = np.fromiter((groups.setdefault((s[0], s[2], s[3]), len(groups)) for s in slices),
                        np.int64, len(slices))
    # Per group, the slices by size descending, then in table order (their index).
    order = np.lexsort((np.arange(len(slices)), -sizes, group))
    starts = np.searchsorted(group[order], group[order], side='left')
    rank = np.empty(len(slices), np.int64)
    rank[order] = np.arange(len(slices)) - starts
    overall = np.fromiter((not s[0] for s in slices), bool, len(slices))
    keep = overall | (rank < max_slices)
    if keep.all():
        return PlotLimit(prepared, {})
    dropped = keep[unit] == False  # noqa: E712 (numpy)
    results = [r._replace(plots={}) if d and r.plots else r
               for r, d in zip(prepared, dropped.tolist())]
    without: dict[str, int] = {}
    totals: dict[str, int] = {}
    for s, k in zip(slices, keep.tolist()):
        name = spec_name(s[0])
        totals[name] = totals.get(name, 0) + 1
        if not k:
            without[name] = without.get(name, 0) + 1
    for name, n in sorted(without.items()):
        _log.warning('headstream: plots.max_slices %d: plots for Overall and the %s largest of '
                     '%s slices of %s; raise plots.max_slices to plot more', max_slices,
                     f'{totals[name] - n:,}', f'{totals[name]:,}', name)
    return PlotLimit(results, dict(sorted(without.items())))
