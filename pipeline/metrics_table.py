"""The metrics table's columns from many keys' results at once (`metric_columns`), and each
slice's spellings (`SliceTexts`).

A run with 100,000 slices has 1.3M metric rows. Appending each row's eight cells to Python lists
costs ~5 µs a row; here a key's rows stay the bytes its `MetricRows` holds: the values of every
key are joined into one (rows, 3) array, the metric names become codes into the distinct
names (one code array per distinct names tuple, which every key of one head shares), and the id
columns hold one cell per key, repeated over the key's rows by Arrow (`take`). Keys with
intervals or baseline rows (`confidence:`, `baseline_logits`) fill their interval and model cells
in a short loop over their own rows. The cells are those the row-by-row build made: a bound the
state does not have (NaN in `MetricRows`) and an interval that is undefined are null, a value is
written as it is (a NaN value stays NaN).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.metric_rows import MetricRows

_MODEL_CODES = {m: i for i, m in enumerate(schema.MODELS)}
_INTERVALS = ('ci_lower', 'ci_upper', 'standard_error')


class SliceTexts:
    """A slice's `slice`, `slice_columns` and `slice_values` cells, made once per slice: integer
    values (most slices of a high-cardinality column) are their digits, with nothing to escape."""

    def __init__(self) -> None:
        self._specs: dict[tuple, str] = {}
        self._made: dict[tuple, tuple[str, str, str]] = {}

    def __call__(self, columns: Sequence[str], values: Sequence[Any]) -> tuple[str, str, str]:
        key = (tuple(columns), tuple(values))
        made = self._made.get(key)
        if made is not None:
            return made
        spec = self._specs.get(key[0])
        if spec is None:
            spec = self._specs[key[0]] = schema.join_slice_parts(key[0], columns=True)
        if len(key[1]) == 1 and type(key[1][0]) is int:
            joined = str(key[1][0])
        else:
            joined = schema.join_slice_parts(key[1])
        made = self._made[key] = ((schema.OVERALL if not key[0] else '%s:%s' % (spec, joined)),
                                  spec, joined)
        return made


class _Names:
    """Metric names → codes; a names tuple's codes made once (keys of one head share the
    tuple, `MetricRows`)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self._by_tuple: dict[int, tuple[tuple, np.ndarray]] = {}

    def code(self, name: str) -> int:
        code = self._index.get(name)
        if code is None:
            code = self._index[name] = len(self.names)
            self.names.append(name)
        return code

    def codes(self, names: tuple) -> np.ndarray:
        hit = self._by_tuple.get(id(names))
        if hit is not None and hit[0] is names:
            return hit[1]
        codes = np.fromiter((self.code(n) for n in names), np.int64, len(names))
        self._by_tuple[id(names)] = (names, codes)  # holding `names` keeps its id unique
        return codes


class _Extra(NamedTuple):
    """The cells of one key with intervals or baseline rows: at `start`, its rows' intervals
    (NaN: null), models and value nulls; after its candidate rows, its baseline / diff rows."""
    start: int
    intervals: np.ndarray  # (rows, 3): ci_lower, ci_upper, standard_error
    models: np.ndarray
    compared_values: np.ndarray  # (compared rows, 3): value, lower, upper (NaN bound: null)
    value_nulls: np.ndarray
    compared_codes: np.ndarray


def _nan(v: float | None) -> float:
    return np.nan if v is None else float(v)


def _extra(start: int, rows: MetricRows, r: Any, names: _Names) -> _Extra:
    """A key's interval and baseline cells (see `_Extra`)."""
    n, c = len(rows), len(r.compared)
    intervals = np.full((n + c, 3), np.nan)
    for j, name in enumerate(rows._names):
        interval = r.intervals.get(name)
        if interval is not None:
            intervals[j] = [_nan(x) for x in interval]
    models = np.zeros(n + c, np.int64)
    compared = np.full((c, 3), np.nan)
    value_nulls = np.zeros(n + c, bool)
    codes = np.empty(c, np.int64)
    for j, (model, metric, value, ci_lo, ci_hi, se) in enumerate(r.compared):
        models[n + j] = _MODEL_CODES[model]
        codes[j] = names.code(metric)
        compared[j, 0] = _nan(value)
        value_nulls[n + j] = value is None
        intervals[n + j] = [_nan(ci_lo), _nan(ci_hi), _nan(se)]
    return _Extra(start, intervals, models, compared, value_nulls, codes)


def _floats(values: np.ndarray, nulls: np.ndarray | None = None) -> pa.Array:
    values = np.ascontiguousarray(values)
    return pa.array(values, pa.float64(), mask=np.isnan(values) if nulls is None else nulls)


def metric_columns(results: Sequence[Any]) -> tuple[dict[str, pa.Array], np.ndarray]:
    """The metrics table's row columns (model, metric, value, bounds, interval) of every key's
    rows, candidate rows first and then (with a baseline) the baseline's and the diffs', keys in
    order; and how many rows each key has (for its id cells)."""
    names = _Names()
    values, codes, extras, counts = [], [], [], np.empty(len(results), np.int64)
    start = 0
    for i, r in enumerate(results):
        rows = r.metrics if isinstance(r.metrics, MetricRows) else MetricRows(r.metrics)
        values.append(rows._data)
        codes.append(names.codes(rows._names))
        n = len(rows)
        if r.intervals or r.compared:
            extra = _extra(start, rows, r, names)
            extras.append(extra)
            values.append(extra.compared_values.tobytes())
            codes.append(extra.compared_codes)
            n += len(r.compared)
        counts[i] = n
        start += n
    v = np.frombuffer(b''.join(values), np.float64).reshape(-1, 3)
    code = np.concatenate(codes) if codes else np.empty(0, np.int64)
    columns = {'metric': pa.array(names.names, pa.string()).take(pa.array(code)),
               'lower_bound': _floats(v[:, 1]), 'upper_bound': _floats(v[:, 2])}
    if not extras:  # the common case: no intervals, no baseline (constant columns cost nothing)
        columns.update(model=pa.repeat(pa.scalar('candidate', pa.string()), start),
                       value=pa.array(np.ascontiguousarray(v[:, 0]), pa.float64()),
                       **{c: pa.nulls(start, pa.float64()) for c in _INTERVALS})
        return columns, counts
    intervals = np.full((start, 3), np.nan)
    models = np.zeros(start, np.int64)
    value_nulls = np.zeros(start, bool)
    for e in extras:
        end = e.start + len(e.models)
        intervals[e.start:end], models[e.start:end] = e.intervals, e.models
        value_nulls[e.start:end] = e.value_nulls
    columns.update(model=pa.array(schema.MODELS, pa.string()).take(pa.array(models)),
                   value=_floats(v[:, 0], value_nulls),
                   **{c: _floats(intervals[:, j]) for j, c in enumerate(_INTERVALS)})
    return columns, counts


def candidate_rows(metrics: pa.Table) -> pa.Table:
    """`schema.candidate_rows`, without copying a table that holds the candidate's rows only
    (a run without a baseline: the common case, millions of rows with many slices)."""
    if 'model' in metrics.column_names:
        import pyarrow.compute as pc
        model = metrics.column('model')
        if model.null_count == 0 and pc.all(pc.equal(model, 'candidate')).as_py() is not False:
            return metrics
    return schema.candidate_rows(metrics)


def typed_values(results: Sequence[Any]) -> dict[tuple[str, str], tuple]:
    """`results.typed_slice_values`, each slice spelled once (`SliceTexts`)."""
    texts = SliceTexts()
    out = {}
    for r in results:
        _, columns, values = texts(r.key.slice_columns, r.key.slice_values)
        out[(columns, values)] = tuple(r.key.slice_values)
    return out
