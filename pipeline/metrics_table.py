"""The metrics table's row columns from many keys' results at once (`metric_rows`, `Rows`).

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


def all_null(n: int, type: pa.DataType = pa.float64()) -> pa.Array:
    """n nulls of a fixed-width `type` on zero buffers from `np.zeros` (calloc'd: pages the
    process never writes take no memory, where `pa.nulls` writes n zeros)."""
    validity = pa.py_buffer(np.zeros((n + 7) // 8, np.uint8))
    data = pa.py_buffer(np.zeros(n * type.bit_width // 8, np.uint8))
    return pa.Array.from_buffers(type, n, [validity, data], null_count=n)


def _floats(values: np.ndarray, nulls: np.ndarray | None = None) -> pa.Array:
    values = np.ascontiguousarray(values)
    return pa.array(values, pa.float64(), mask=np.isnan(values) if nulls is None else nulls)


class Rows(NamedTuple):
    """Metric rows as arrays: row j is metric `names[code[j]]` with (value, lower, upper) =
    `values[j]` (a NaN bound: null); with `extra`, its (ci_lower, ci_upper, standard_error)
    (NaN: null), model code (into `schema.MODELS`) and whether its value is null."""
    names: list[str]
    code: np.ndarray
    values: np.ndarray
    extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.code)

    @classmethod
    def plain(cls, names: Sequence[str], code: np.ndarray, values: np.ndarray) -> 'Rows':
        """Candidate rows without intervals."""
        return cls(list(names), np.asarray(code, np.int32), np.asarray(values, np.float64))

    @classmethod
    def concat(cls, parts: Sequence['Rows']) -> 'Rows':
        names: dict[str, int] = {}
        codes = []
        for p in parts:
            remap = np.asarray([names.setdefault(n, len(names)) for n in p.names], np.int32)
            codes.append(remap[p.code] if p.code.size else p.code)
        values = np.concatenate([p.values for p in parts]) if parts else np.empty((0, 3))
        extra = None
        if any(p.extra is not None for p in parts):
            extra = tuple(np.concatenate([(p.extra or _no_extra(len(p)))[j] for p in parts])
                          for j in range(3))
        return cls(list(names), np.concatenate(codes) if codes else np.empty(0, np.int32),
                   values, extra)

    def take(self, at: np.ndarray) -> 'Rows':
        return Rows(self.names, self.code[at], np.take(self.values, at, axis=0),
                    None if self.extra is None else tuple(e[at] for e in self.extra))

    def columns(self, dictionary: bool = False, at: np.ndarray | None = None
                ) -> dict[str, pa.Array]:
        """The metrics table's row columns (metric, model as dictionary arrays with
        `dictionary`, else strings), of the rows at positions `at` (None: all, in order), each
        column gathered once."""
        if at is None:
            at = slice(None)
        v = self.values
        n = len(self.code[at])
        metric = _coded(self.names, self.code[at], dictionary)
        bounds = {'lower_bound': _floats(v[at, 1]), 'upper_bound': _floats(v[at, 2])}
        if self.extra is None:  # the common case: no intervals, no baseline
            nulls = all_null(n)  # one all-null column, shared (arrays are immutable)
            return {'metric': metric, **bounds,
                    'model': _coded(['candidate'], np.zeros(n, np.int32), dictionary),
                    'value': pa.array(np.ascontiguousarray(v[at, 0]), pa.float64()),
                    **{c: nulls for c in _INTERVALS}}
        intervals, models, value_nulls = (e[at] for e in self.extra)
        return {'metric': metric, **bounds,
                'model': _coded(list(schema.MODELS), models, dictionary),
                'value': _floats(v[at, 0], value_nulls),
                **{c: _floats(intervals[:, j]) for j, c in enumerate(_INTERVALS)}}


def _no_extra(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The extra cells of candidate rows without intervals."""
    return np.full((n, 3), np.nan), np.zeros(n, np.int64), np.zeros(n, bool)


def _coded(names: Sequence[str], codes: np.ndarray, dictionary: bool) -> pa.Array:
    """`names[codes[j]]` as a string array, or as a dictionary array (int32 indices)."""
    names = pa.array(list(names), pa.string())
    if dictionary:
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32, copy=False)),
                                              names)
    return names.take(pa.array(codes))


def metric_rows(results: Sequence[Any]) -> tuple[Rows, np.ndarray]:
    """Every key's metric rows, candidate rows first and then (with a baseline) the baseline's
    and the diffs', keys in order; and how many rows each key has (for its id cells)."""
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
    if not extras:
        return Rows.plain(names.names, code, v), counts
    intervals, models, value_nulls = _no_extra(start)
    for e in extras:
        end = e.start + len(e.models)
        intervals[e.start:end], models[e.start:end] = e.intervals, e.models
        value_nulls[e.start:end] = e.value_nulls
    return Rows(names.names, code, v, (intervals, models, value_nulls)), counts


def candidate_rows(metrics: pa.Table) -> pa.Table:
    """`schema.candidate_rows`, without copying a table that holds the candidate's rows only
    (a run without a baseline: the common case, millions of rows with many slices)."""
    if 'model' in metrics.column_names:
        import pyarrow.compute as pc
        model = metrics.column('model')
        if model.null_count == 0 and pc.all(pc.equal(model, 'candidate')).as_py() is not False:
            return metrics
    return schema.candidate_rows(metrics)
