"""Which slices the report shows: every slice of a spec with few of them; for a spec with more than
3 × `MAX_SLICES_PER_SPEC`, per head the N worst and N best by the head's primary metric and the
N largest by example count (their union), and the slices with a failing validation check (up to
3 × N more), so the page stays small and opens quickly at any number of slices. Each spec cut so
gets a note saying how many of its slices the page leaves out (they remain in the metrics and
plots tables).
The ranking uses the candidate's rows only (a run with a baseline also has baseline and diff
rows).

The choice is made on the metrics table with Arrow and numpy (no Python loop over slices); the
plots are then read keeping only the chosen slices (`pipeline.report.data.read_tables`).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.report.data import lower_is_better

MAX_SLICES_PER_SPEC = 50
# The metrics columns the choice reads whole (as dictionaries); the numbers (value, counts,
# lower_bound) only for the rows of each (spec, head, primary metric).
SELECTION_TEXT = ('slice', 'slice_columns', 'head', 'metric', 'model')
# The metric a spec's slices are ranked by: the first of these a head has, else its first metric
# (the report's slice comparison ranks by the same list).
PRIMARY_METRICS = ('auc', 'accuracy', 'average_loss', 'loss')


class Selection(NamedTuple):
    """The slices to show (None: all) and a note per spec that was cut."""
    slices: set[str] | None
    notes: list[str]


def _spec_label(columns: str) -> str:
    return columns.replace('_X_', ' × ') or 'Overall'


def _primary(metrics: list[str]) -> str | None:
    return next((m for m in PRIMARY_METRICS if m in metrics), metrics[0] if metrics else None)


class _TableRows:
    """The numbers `_chosen` reads, from the table the choice is made on."""

    def __init__(self, metrics: pa.Table) -> None:
        self._metrics = metrics
        self.column_names = metrics.column_names

    def rows(self, mask: np.ndarray, columns: Sequence[str]) -> pa.Table:
        return self._metrics.select(list(columns)).filter(pa.array(mask))


def _mask(condition: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean column as numpy (null: False)."""
    if isinstance(condition, pa.ChunkedArray):
        condition = condition.combine_chunks() if condition.num_chunks != 1 else \
            condition.chunk(0)
    return condition.fill_null(False).to_numpy(zero_copy_only=False)


def _equal(column: pa.ChunkedArray, text: str) -> np.ndarray:
    """Where a text column (strings or a dictionary) is `text`, as numpy (on codes for a
    dictionary column)."""
    if pa.types.is_dictionary(column.type):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        hits = np.flatnonzero(_mask(pc.equal(column.dictionary, text)))
        codes = column.indices.to_numpy(zero_copy_only=False)
        if column.indices.null_count:
            codes = column.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        return np.isin(codes, hits) if len(hits) != 1 else codes == hits[0]
    return _mask(pc.equal(column, text))


def _chosen(metrics: pa.Table, candidate: np.ndarray | None, numbers: Any, columns: str,
            metric_names: dict[str, list[str]], n: int) -> tuple[set[str], str | None]:
    """One spec's slices to show, per head: the n worst and n best by the primary metric (slices
    whose value is a 0/0 not among them: no weight, or an auc undefined) and the n largest.
    `metric_names`: per head, its metrics in this spec; `candidate`: the candidate's rows
    (None: all). Only the rows of one (head, primary metric) are read (`numbers.rows`), and
    only the chosen slices' names."""
    chosen: set[str] = set()
    primaries = []
    in_spec = _equal(metrics['slice_columns'], columns)
    if candidate is not None:
        in_spec &= candidate
    needed = [c for c in ('value', 'example_count', 'weighted_example_count', 'lower_bound')
              if c in numbers.column_names]
    for head, names in metric_names.items():
        primary = _primary(names)
        if primary is None:
            continue
        primaries.append(primary)
        mask = in_spec & _equal(metrics['head'], head) & _equal(metrics['metric'], primary)
        m = numbers.rows(mask, needed)
        values = m['value'].to_numpy(zero_copy_only=False).astype(np.float64)
        counts = m['example_count'].fill_null(0).to_numpy().astype(np.float64)
        ok = np.isfinite(values)
        if 'weighted_example_count' in m.column_names:
            weighted = m['weighted_example_count'].to_numpy(zero_copy_only=False)
            ok &= ~(weighted == 0)
        if primary.split('/')[0] == 'auc' and 'lower_bound' in m.column_names:
            ok &= ~((values == 0) & np.asarray(m['lower_bound'].is_null()))
        ranked = np.flatnonzero(ok)
        order = ranked[np.argsort(-values[ranked] if lower_is_better(primary)
                                  else values[ranked], kind='stable')]
        picked = np.concatenate([order[:n], order[::-1][:n],
                                 np.argsort(-counts, kind='stable')[:n]])
        slices = metrics['slice'].filter(pa.array(mask))
        chosen.update(slices.take(pa.array(picked, pa.int64())).to_pylist())
    return chosen, (primaries[0] if len(set(primaries)) == 1 else None)


def _distinct(metrics: pa.Table, columns: list[str]) -> pa.Table:
    """The distinct rows of `columns`, in order of first row: on the codes of dictionary
    columns (one chunk each, as `TableFiles.columns` gives them) with numpy, else by Arrow's
    grouping (which keeps that order too)."""
    table = metrics.select(columns)
    cols = [table[c] for c in columns]
    if not all(pa.types.is_dictionary(c.type) and c.num_chunks == 1 for c in cols):
        return table.group_by(columns, use_threads=False).aggregate([])
    n = table.num_rows
    combined = np.zeros(n, np.int64)
    space = 1
    for c in cols:
        size = len(c.chunk(0).dictionary) + 1
        codes = c.chunk(0).indices
        codes = codes.fill_null(size - 1) if codes.null_count else codes
        combined *= size
        combined += codes.to_numpy(zero_copy_only=False)
        space *= size
    if space <= max(4 * n, 1 << 22):
        first = np.full(space, n, np.int64)
        first[combined[::-1]] = np.arange(n - 1, -1, -1, dtype=np.int64)  # the first row wins
        rows = np.sort(first[first < n])
    else:
        rows = np.sort(np.unique(combined, return_index=True)[1])
    del combined
    out = table.take(pa.array(rows))
    return pa.table({c: out[c].cast(pa.string()) for c in columns})


def _metric_names(metrics: pa.Table) -> dict[str, dict[str, list[str]]]:
    """Per slice spec, per head (in order of first row), its metrics (in order of first row)."""
    triples = _distinct(metrics, ['slice_columns', 'head', 'metric'])
    out: dict[str, dict[str, list[str]]] = {}
    for columns, head, metric in zip(*(triples[c].to_pylist() for c in triples.column_names)):
        out.setdefault(columns, {}).setdefault(head, []).append(metric)
    return out


def select_slices(metrics: pa.Table, n: int = MAX_SLICES_PER_SPEC,
                  always: Sequence[str] = (), numbers: Any = None) -> Selection:
    """The slices the report shows (see the module docstring); the slices in `always` (those
    with a failing validation check, in the verdict's order) are shown whatever their rank, at
    most 3n of them beyond the chosen ones (the first in `always`' order).

    `metrics` needs the text columns (strings or dictionaries); the numbers the ranking reads
    (`value`, the counts, `lower_bound`) come from `metrics` itself, or from `numbers` (its
    `column_names` and `rows(mask, columns)`, e.g. `pipeline.report.data.TableFiles`, whose rows
    are the table's) when given."""
    if metrics.num_rows == 0 or 'slice_columns' not in metrics.column_names:
        return Selection(None, [])
    if numbers is None:
        numbers = _TableRows(metrics)
    pairs = _distinct(metrics, ['slice_columns', 'slice'])
    per_spec = pairs.group_by('slice_columns').aggregate([('slice', 'count')])
    big = [(c, k) for c, k in zip(per_spec['slice_columns'].to_pylist(),
                                  per_spec['slice_count'].to_pylist()) if c and k > 3 * n]
    if not big:
        return Selection(None, [])
    big_specs = pa.array([c for c, _ in big], pa.string())
    # Ranked by the candidate's values: a baseline's or diff row's value is not the slice's.
    candidate = None
    if 'model' in metrics.column_names:
        model = metrics['model']
        candidate = _mask(pc.or_kleene(pc.is_null(model), pc.equal(model, 'candidate')))
        if candidate.all():
            candidate = None
    small = pairs.filter(pc.invert(pc.is_in(pairs['slice_columns'], value_set=big_specs)))
    keep = set(small['slice'].to_pylist())
    notes = []
    metric_names = _metric_names(metrics if candidate is None
                                 else metrics.filter(pa.array(candidate)))
    for columns, total in sorted(big):
        chosen, primary = _chosen(metrics, candidate, numbers, columns,
                                  metric_names.get(columns, {}), n)
        keep |= chosen
        by = ('by %s ' % primary) if primary else 'by each head\'s primary metric '
        notes.append('%s: showing %s of %s slices (per head the %d worst and %d best %sand the '
                     '%d largest); %s left out of this page (all are in the metrics and plots '
                     'tables)' % (_spec_label(columns), f'{len(chosen):,}', f'{total:,}', n, n,
                                  by, n, f'{total - len(chosen):,}'))
    # The failing slices not chosen, in the verdict's order; at most 3n of them (a rule over a
    # spec of 10^5 slices may fail on most): the others are in validation.json.
    always = pa.array([s for s in dict.fromkeys(always) if s not in keep], pa.string())
    extra = always.filter(pc.is_in(always, value_set=pairs['slice'])).to_pylist()
    shown = extra[:3 * n]
    if shown:
        notes.append('%s more slices shown for their failing validation checks%s'
                     % (f'{len(shown):,}', '' if len(shown) == len(extra) else
                        '; %s more failing slices left out of this page (validation.json '
                        'lists every check)' % f'{len(extra) - len(shown):,}'))
    return Selection(keep | set(shown), notes)


def left_out_notes(summary: dict | None) -> list[str]:
    """A note per slice spec whose small slices the run left out (`min_slice_size`), and per spec
    whose slices past `plots.max_slices` have no plots, from the run's summary."""
    if not summary:
        return []
    size = summary.get('min_slice_size')
    out = []
    for columns, entry in sorted((summary.get('slices_left_out') or {}).items()):
        out.append('%s: %d slices (%d rows) below min_slice_size %s left out of the outputs '
                   '(their rows are in Overall)' % (_spec_label(columns), entry.get('slices', 0),
                                                    entry.get('rows', 0), size))
    plots = summary.get('plots') or {}
    for columns, n in sorted((plots.get('slices_without_plots') or {}).items()):
        out.append('%s: %s slices without plots (plots.max_slices %s: plots for Overall and the '
                   'largest slices only)' % (_spec_label(columns), f'{n:,}',
                                             plots.get('max_slices')))
    return out
