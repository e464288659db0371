"""Head states → rows of the metrics and plots tables (`pipeline.schema`): per key the candidate's
rows and, for a head with a baseline, the baseline's and the diffs (`model` column).

`state_result` turns one (key, state) into a small `KeyResult` (parallel, per key; `state_results`
many at once, their small states made dense in one grouped update); `build_tables`
gathers every key's results into the two tables, adds the MultiHead `loss` rows and sorts the rows
(Overall first, then slices in config order and by value; heads in config order).
"""
from __future__ import annotations

import datetime
import math
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from heads.extract import densify_together
from pipeline import schema
from pipeline.config import EvalConfig
from pipeline.elements import Key
from pipeline.metric_rows import MetricRows
from pipeline.metrics_table import SliceTexts, metric_columns
from pipeline.packed_plots import PackedPlots, plot_arrays, plot_rows

_PLOT_COLUMNS = [f.name for f in schema.PLOTS][len(schema._ID_FIELDS):]


class KeyResult(NamedTuple):
    """What one key's state says: metric rows and plot columns, without the run's id columns."""
    key: Key
    # (metric, value, lower, upper) rows: a compact `MetricRows` from state_result
    metrics: Sequence[tuple[str, float, float | None, float | None]]
    example_count: int
    weighted_example_count: float | None
    loss: float
    plots: Mapping[str, np.ndarray]  # a PackedPlots from state_result
    # metric → (ci_lower, ci_upper, standard_error), each None where undefined (runs with
    # `confidence:`; metrics without an interval are absent)
    intervals: dict[str, tuple[float | None, float | None, float | None]] = {}
    # With a baseline: its rows and the diff rows, (model, metric, value, ci_lower, ci_upper,
    # standard_error) — a baseline row's own interval, a diff row's paired one (None without
    # `confidence:`).
    compared: tuple = ()


def strip_suffix(metric_key: str, head_name: str | None) -> str:
    """tf.estimator's key without the head's '/name' suffix ('auc/click' → 'auc')."""
    if head_name and metric_key.endswith('/' + head_name):
        return metric_key[:-len(head_name) - 1]
    return metric_key


def _bound(b: float | None) -> float | None:
    """A bound as the metrics table holds it: null where the state has none (NaN: the exact AUC
    is undefined, e.g. a slice whose weights are all 0 or that holds one class only)."""
    return None if b is None or not math.isfinite(b) else float(b)


def state_result(key: tuple, state: Any, head_names: Sequence[str],
                 level: float | None = None) -> KeyResult:
    """Reads a head state's metrics, loss, counts, bounds and plots, and its intervals at
    confidence `level` (the config's confidence level; None: none); a compared head's state
    (`heads.array.paired.PairedState`) also its baseline's and the diffs, with paired intervals."""
    key = Key(*key)
    name = head_names[key.head]
    bounds = state.bounds() or {}
    rows: dict[str, tuple[str, float, float | None, float | None]] = {}
    for k, v in state.result().items():
        lo, hi = (_bound(b) for b in bounds.get(k, (None, None)))
        metric = strip_suffix(k, name)
        rows[metric] = (metric, float(v), lo, hi)
    loss = float(state.loss())
    # The `loss` row is head.loss over the slice; a state reporting a `loss` key of its own cannot
    # make it appear twice.
    rows['loss'] = ('loss', loss, None, None)
    count, weighted = state.counts()
    plots = state.plots() or {}
    compared = _compared_rows(state, name, level) if hasattr(state, 'comparison') else ()
    # Packed: a few KB instead of ~37 KB a key, for the gather of many slices (packed_plots.py).
    return KeyResult(key, MetricRows(rows.values()), int(count), float(weighted), loss,
                     PackedPlots(plots),
                     _intervals(state, name, level) if level is not None else {}, compared)


def state_results(pairs: Sequence[tuple[tuple, Any]], head_names: Sequence[str],
                  level: float | None = None) -> list[KeyResult]:
    """`state_result` of many (key, state) pairs, their small states made dense together first
    (`heads.extract.densify_together`: one grouped update for many slices instead of one each)."""
    densify_together(state for _, state in pairs)
    return [state_result(key, state, head_names, level) for key, state in pairs]


def _intervals(state: Any, head_name: str, level: float
               ) -> dict[str, tuple[float | None, float | None, float | None]]:
    """{metric: (ci_lower, ci_upper, standard_error)} of a state (nulls where undefined)."""
    estimates = getattr(state, 'interval_estimates', None)
    out = {}
    for k, e in (estimates(level) if estimates is not None else {}).items():
        out[strip_suffix(k, head_name)] = ((None, None, None) if e is None else
                                           (_bound(e.lower), _bound(e.upper),
                                            _bound(e.standard_error)))
    return out


def _compared_rows(state: Any, name: str, level: float | None) -> tuple:
    """A paired state's baseline rows and diff rows (see `KeyResult.compared`)."""
    base, diffs, _ = state.comparison(level)
    base_ci = _intervals(state.baseline, name, level) if level is not None else {}
    out = [('baseline', strip_suffix(k, name), float(v))
           + base_ci.get(strip_suffix(k, name), (None, None, None)) for k, v in base.items()]
    out += [('diff', strip_suffix(k, name), d.value, _bound(d.lower), _bound(d.upper),
             _bound(d.standard_error)) for k, d in diffs.items()]
    return tuple(out)


def typed_slice_values(results: Iterable[KeyResult]) -> dict[tuple[str, str], tuple]:
    """(slice_columns, slice_values) cells → the slice's values as the pipeline sliced them (int,
    float, str), for the TFMA writer's typed slice keys."""
    return {(schema.join_slice_parts(r.key.slice_columns, columns=True),
             schema.join_slice_parts(r.key.slice_values)): tuple(r.key.slice_values)
            for r in results}


def _slice_order(config: EvalConfig, key: Key) -> tuple:
    spec = config.slices.index(tuple(key.slice_columns))
    values = values_order(key.slice_values)
    return (spec, values, key.window_start if key.window_start is not None else 0,
            key.step if key.step is not None else 0)


def _multi_head_results(config: EvalConfig, results: Sequence[KeyResult]) -> list[KeyResult]:
    """The MultiHead `loss` per (slice, window, step): Σ head_weight · head loss (tf.estimator's
    MultiHead.loss, each head reduced with its own reduction and weights)."""
    if len(config.heads) < 2:
        return []
    weights = config.head_weights or tuple(1.0 for _ in config.heads)
    groups: dict[tuple, dict[int, KeyResult]] = {}
    for r in results:
        k = r.key
        groups.setdefault((k.slice_columns, k.slice_values, k.window_start, k.step), {})[k.head] = r
    out = []
    for (cols, vals, w, s), by_head in groups.items():
        if len(by_head) != len(config.heads):
            continue  # every head sees the same rows, so this only happens for empty groups
        loss = float(sum(weights[h] * by_head[h].loss for h in range(len(config.heads))))
        count = by_head[0].example_count
        out.append(KeyResult(Key(cols, vals, len(config.heads), w, s),
                             [('loss', loss, None, None)], count,
                             _common_weighted_count(by_head.values()), loss, {}))
    return out


def _common_weighted_count(results: Iterable[KeyResult]) -> float | None:
    """The heads' weighted example count when they agree (up to summation order), else None:
    heads may weight rows differently, and then the MultiHead has no single weighted count."""
    values = [r.weighted_example_count for r in results]
    if any(v is None for v in values):
        return None
    lo, hi = min(values), max(values)
    return values[0] if hi - lo <= 1e-12 * max(abs(hi), abs(lo), 1.0) else None


def values_order(values: tuple) -> tuple:
    """Slice values as the tables order them: numbers (by value) before text."""
    return tuple((0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in values)


def prepare_results(config: EvalConfig, results: Sequence[KeyResult]) -> list[KeyResult]:
    """The results with the MultiHead `loss` results added, in the tables' row order
    (`_slice_order`, then head): sorted with numpy on codes, each distinct slice value ranked
    once, rather than comparing every key's tuple in Python."""
    results = list(results) + _multi_head_results(config, results)
    if not results:
        return results
    specs = {tuple(s): i for i, s in enumerate(config.slices)}
    values: dict[tuple, int] = {}
    value_code = np.fromiter((values.setdefault(tuple(r.key.slice_values), len(values))
                              for r in results), np.int64, len(results))
    ranked = sorted(values, key=values_order)
    rank = np.empty(len(values), np.int64)
    rank[[values[v] for v in ranked]] = np.arange(len(ranked))
    columns = [np.fromiter((f(r.key) for r in results), np.int64, len(results)) for f in (
        lambda k: k.head, lambda k: k.step if k.step is not None else 0,
        lambda k: k.window_start if k.window_start is not None else 0)]
    spec = np.fromiter((specs[tuple(r.key.slice_columns)] for r in results), np.int64,
                       len(results))
    order = np.lexsort(tuple(columns) + (rank[value_code], spec))
    return [results[i] for i in order.tolist()]


# Keys per plots table of `plot_tables` (a few hundred rows each: ~300k rows, ~40 MB a table).
PLOT_KEYS_PER_TABLE = 1000


def _slice_of(r: KeyResult) -> tuple:
    return (r.key.slice_columns, r.key.slice_values, r.key.window_start, r.key.step)


def plot_tables(config: EvalConfig, prepared: Sequence[KeyResult], run_id: str,
                evaluated_at: datetime.datetime, keys_per_table: int = PLOT_KEYS_PER_TABLE
                ) -> Iterator[pa.Table]:
    """The plots table of `prepare_results`' output in pieces of about `keys_per_table` keys, in
    row order, each slice (with its window and step) whole in one piece; at least one piece.
    Concatenated, they are `build_tables`' plots table; one at a time, they bound the memory of
    a run with many slices."""
    chunk: list[KeyResult] = []
    emitted = False
    for r in prepared:
        if len(chunk) >= keys_per_table and _slice_of(r) != _slice_of(chunk[-1]):
            yield build_tables(config, chunk, run_id, evaluated_at, prepared=True,
                               metrics=False)[1]
            emitted = True
            chunk = []
        chunk.append(r)
    if chunk or not emitted:
        yield build_tables(config, chunk, run_id, evaluated_at, prepared=True,
                               metrics=False)[1]


def _id_columns(results: Sequence[KeyResult], repeats: np.ndarray, names: Sequence[str],
                run_id: str, evaluated_at: datetime.datetime, windowed: bool, stepped: bool,
                size_us: int, default_step: Any, texts: SliceTexts, table_schema: pa.Schema,
                counts: bool = False) -> dict[str, pa.Array]:
    """The id columns (run, slice spellings, head, window, step; with `counts` also the example
    counts) of `results`' rows: one cell per key, repeated `repeats[i]` times by Arrow (far
    faster than Python lists of every row)."""
    spelled = [texts(r.key.slice_columns, r.key.slice_values) for r in results]
    k = len(results)
    cells: dict[str, Any] = {
        'run_id': [run_id] * k, 'evaluated_at': [evaluated_at] * k,
        'slice': [t[0] for t in spelled], 'slice_columns': [t[1] for t in spelled],
        'slice_values': [t[2] for t in spelled], 'head': [names[r.key.head] for r in results]}
    if windowed:
        cells['window_start'] = [r.key.window_start for r in results]
        cells['window_end'] = [r.key.window_start + size_us for r in results]
    if stepped:
        cells['step'] = [r.key.step if r.key.step is not None else default_step for r in results]
    if counts:
        cells['example_count'] = [r.example_count for r in results]
        cells['weighted_example_count'] = [r.weighted_example_count for r in results]
    fields = [f for f in table_schema if f.name in cells]
    per_key = _table(cells, pa.schema(fields))
    index = pa.array(np.repeat(np.arange(k, dtype=np.int64), np.asarray(repeats, np.int64)))
    return {f.name: per_key.column(f.name).take(index).combine_chunks() for f in fields}


def build_tables(config: EvalConfig, results: Sequence[KeyResult], run_id: str,
                 evaluated_at: datetime.datetime, prepared: bool = False, plots: bool = True,
                 metrics: bool = True) -> tuple[pa.Table, pa.Table]:
    """The metrics and plots tables of a run (schemas `with_extras` for window and step).

    `prepared`: `results` come from `prepare_results` (else they are prepared here); with
    `plots` (`metrics`) False the plots (metrics) table is left empty (`plot_tables` builds the
    plots in pieces).
    """
    names = list(config.head_names)
    if config.multi_head_name:
        names.append(config.multi_head_name)
    if not prepared:
        results = prepare_results(config, results)
    windowed, stepped = config.windowed, config.stepped
    ids = dict(names=names, run_id=run_id, evaluated_at=evaluated_at, windowed=windowed,
               stepped=stepped, size_us=int(round(config.window.size * 1e6)) if windowed else 0,
               default_step=(config.tensorboard.step if stepped and not config.step_column
                             else None), texts=SliceTexts())
    m_schema = schema.with_extras(schema.METRICS, windowed, stepped)
    p_schema = schema.with_extras(schema.PLOTS, windowed, stepped)
    m_table = p_table = None
    if metrics:
        # Every key's rows at once (pipeline/metrics_table.py), the id cells repeated per key.
        m, repeats = metric_columns(results)
        m.update(_id_columns(results, repeats, table_schema=m_schema, counts=True, **ids))
        m_table = _table(m, m_schema)
    if plots:
        p_table = _plots_table([r for r in results if r.plots], p_schema, ids)
    return (m_table if m_table is not None else m_schema.empty_table(),
            p_table if p_table is not None else p_schema.empty_table())


def _plots_table(results: Sequence[KeyResult], p_schema: pa.Schema,
                 ids: dict[str, Any]) -> pa.Table:
    """The plots table of the keys with plots: their columns concatenated, id cells repeated."""
    repeats = np.asarray([plot_rows(r.plots) for r in results], np.int64)
    results = [r for r, n in zip(results, repeats) if n]
    repeats = repeats[repeats > 0]
    p: dict[str, Any] = _id_columns(results, repeats, table_schema=p_schema, **ids)
    parts = [plot_arrays(r.plots) for r in results]
    for col in _PLOT_COLUMNS:
        p[col] = np.concatenate([np.asarray(part[col]) for part in parts]) if parts else []
    return _table(p, p_schema)


def _table(columns: dict[str, Any], table_schema: pa.Schema) -> pa.Table:
    arrays = []
    for field in table_schema:
        values = columns[field.name]
        if isinstance(values, pa.Array):
            arrays.append(values)
        elif pa.types.is_timestamp(field.type) and field.name in ('window_start', 'window_end'):
            arrays.append(pa.array(np.asarray(values, dtype=np.int64), pa.int64()).cast(field.type))
        elif isinstance(values, np.ndarray) and pa.types.is_floating(field.type):
            # NaN marks "does not apply" in plots (a confusion row has no bucket): null in tables.
            arrays.append(pa.array(values.astype(np.float64), field.type, from_pandas=True))
        elif isinstance(values, np.ndarray):
            arrays.append(pa.array(values.tolist(), field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=table_schema)
