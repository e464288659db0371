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
from pipeline.key_columns import KeyColumns, values_order  # noqa: F401 (values_order: API)
from pipeline.packed_plots import PackedPlots, plot_arrays, plot_rows
from pipeline.results_frame import ResultsFrame, id_columns

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


def prepare_results(config: EvalConfig, results: Sequence[KeyResult]) -> list[KeyResult]:
    """The results with the MultiHead `loss` results added, in the tables' row order (Overall,
    then slices in config order and by value, window, step, head): `pipeline.key_columns`'
    rules, on codes."""
    results = list(results)
    keys = KeyColumns.from_results(results)
    multi, _ = keys.multi_head(config.head_weights or [1.0] * len(config.heads))
    results += [KeyResult(Key(multi.specs[multi.spec[i]], multi.values[i], int(multi.head[i]),
                              None if multi.window_null[i] else int(multi.window[i]),
                              None if multi.step_null[i] else int(multi.step[i])),
                          [('loss', float(multi.loss[i]), None, None)],
                          int(multi.example_count[i]),
                          None if multi.weighted_null[i] else float(multi.weighted[i]),
                          float(multi.loss[i]), {}) for i in range(len(multi))]
    if not results:
        return results
    order = KeyColumns.concat([keys, multi]).order(config.slices)
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


def table_ids(config: EvalConfig, run_id: str, evaluated_at: datetime.datetime
              ) -> dict[str, Any]:
    """What the id cells of a run's tables need besides the keys (`results_frame.id_columns`)."""
    names = list(config.head_names) + ([config.multi_head_name] if config.multi_head_name
                                       else [])
    stepped = config.stepped
    return dict(names=names, run_id=run_id, evaluated_at=evaluated_at,
                size_us=int(round(config.window.size * 1e6)) if config.windowed else 0,
                default_step=(config.tensorboard.step if stepped and not config.step_column
                              else None))


def build_tables(config: EvalConfig, results: Sequence[KeyResult], run_id: str,
                 evaluated_at: datetime.datetime, prepared: bool = False, plots: bool = True,
                 metrics: bool = True) -> tuple[pa.Table, pa.Table]:
    """The metrics and plots tables of a run (schemas `with_extras` for window and step).

    `prepared`: `results` come from `prepare_results` (else they are prepared here); with
    `plots` (`metrics`) False the plots (metrics) table is left empty (`plot_tables` builds the
    plots in pieces).
    """
    if not prepared:
        results = prepare_results(config, results)
    ids = table_ids(config, run_id, evaluated_at)
    m_schema = schema.with_extras(schema.METRICS, config.windowed, config.stepped)
    p_schema = schema.with_extras(schema.PLOTS, config.windowed, config.stepped)
    m_table = p_table = None
    if metrics:
        # Every key's rows at once, the id cells repeated per key (pipeline/results_frame.py).
        m_table = ResultsFrame.from_results(results).metrics_table(m_schema, ids)
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
    p: dict[str, Any] = id_columns(KeyColumns.from_results(results), repeats,
                                   table_schema=p_schema, **ids)
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
