"""A run's results as columns end to end (`ResultsFrame`): from the gathered pieces to the
metrics table without a Python object per key.

A batch run's gather receives, per shard of a high-cardinality spec, a
`pipeline.block_results.ResultsPack` (the metrics of 10^5 keys as one array) and, for everything
else, `pipeline.results.KeyResult`s. Unpacking every pack into KeyResults (a named tuple, a `Key`,
a `MetricRows` each: ~700 B and ~3 µs a key) made the writers' memory and time grow with keys ×
Python; here a pack stays arrays: its keys' columns (`pipeline.key_columns.KeyColumns`), its
metric rows as Arrow columns, its few plotted keys' plots. The rules on keys (min_slice_size,
the MultiHead loss, the row order, plots.max_slices) are numpy over codes (key_columns.py), the
id cells are made once per distinct slice (integer values as Arrow casts) and repeated over each
key's rows by Arrow.

The cells are those `pipeline.results.build_tables` writes (it builds its metrics table through
this module), so a run's tables do not depend on whether its keys came as packs or KeyResults.
"""
from __future__ import annotations

import datetime
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.elements import Key
from pipeline.key_columns import KeyColumns, dense_codes
from pipeline.metrics_table import Rows, metric_rows
from heads.metrics.sparse_cells import ragged_positions

__all__ = ['ResultsFrame', 'TypedValues', 'id_columns', 'plain_table', 'slice_texts']

class ResultsFrame:
    """Keys (`keys`), their metric rows in key order (`rows`, a `pipeline.metrics_table.Rows`;
    key i has `row_count[i]` rows), and the plots of the keys that have some (`plots`: position
    → plot columns)."""

    __slots__ = ('keys', 'rows', 'row_count', 'plots', 'row_at')

    def __init__(self, keys: KeyColumns, rows: Rows, row_count: np.ndarray,
                 plots: dict[int, Mapping[str, Any]], row_at: np.ndarray | None = None) -> None:
        self.keys, self.rows, self.row_count, self.plots = keys, rows, row_count, plots
        # The keys' rows are `rows` at these positions (None: all of them, in order): a take
        # moves an index, not 10^7 rows; the table gathers each column once.
        self.row_at = row_at

    def _rows(self) -> Rows:
        """The keys' rows in key order (gathered)."""
        return self.rows if self.row_at is None else self.rows.take(self.row_at)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_results(cls, results: Sequence[Any]) -> 'ResultsFrame':
        """A frame of `pipeline.results.KeyResult`s (their intervals and baseline rows too)."""
        rows, counts = metric_rows(results)
        return cls(KeyColumns.from_results(results), rows, counts,
                   {i: r.plots for i, r in enumerate(results) if r.plots})

    @classmethod
    def from_pack(cls, pack: Any) -> 'ResultsFrame':
        """A frame of a `pipeline.block_results.ResultsPack` (its dense keys' results too)."""
        k, m = pack.values.shape[:2]
        keys = KeyColumns([tuple(pack.columns)], np.zeros(k, np.int64),
                          [key[0] for key in pack.keys], np.full(k, pack.head, np.int64),
                          [key[1] for key in pack.keys], [key[2] for key in pack.keys],
                          pack.counts, np.asarray(pack.weighted, np.float64),
                          pack.values[:, -1, 0])
        rows = Rows.plain(pack.names, np.tile(np.arange(m, dtype=np.int64), k),
                          pack.values.reshape(-1, 3))
        frame = cls(keys, rows, np.full(k, m, np.int64), dict(pack.plots))
        return cls.concat([frame, cls.from_results(pack.extra)]) if pack.extra else frame

    @classmethod
    def concat(cls, parts: Sequence['ResultsFrame']) -> 'ResultsFrame':
        parts = [p for p in parts if len(p)] or list(parts[:1])
        if not parts:
            return cls.from_results([])
        if len(parts) == 1:
            return parts[0]
        plots: dict[int, Mapping[str, Any]] = {}
        start = 0
        for p in parts:
            plots.update({start + i: v for i, v in p.plots.items()})
            start += len(p)
        return cls(KeyColumns.concat([p.keys for p in parts]),
                   Rows.concat([p._rows() for p in parts]),
                   np.concatenate([p.row_count for p in parts]), plots)

    def take(self, index: np.ndarray) -> 'ResultsFrame':
        """The keys at `index` (positions), in that order, with their rows and plots."""
        index = np.asarray(index, np.int64)
        starts = np.cumsum(self.row_count) - self.row_count
        at = ragged_positions(starts[index], self.row_count[index])
        if self.row_at is not None:
            at = self.row_at[at]
        where = np.full(len(self), -1, np.int64)
        where[index] = np.arange(index.size)
        plots = {int(where[i]): p for i, p in self.plots.items() if where[i] >= 0}
        return ResultsFrame(self.keys.take(index), self.rows, self.row_count[index],
                            dict(sorted(plots.items())), at)

    def with_multi_head(self, weights: Sequence[float] | None, n_heads: int) -> 'ResultsFrame':
        """The frame plus the MultiHead `loss` keys (one `loss` row each;
        `KeyColumns.multi_head`)."""
        if n_heads < 2:
            return self
        multi, _ = self.keys.multi_head(weights or [1.0] * n_heads)
        if not len(multi):
            return self
        values = np.full((len(multi), 3), np.nan)
        values[:, 0] = multi.loss
        rows = Rows.plain(['loss'], np.zeros(len(multi), np.int64), values)
        return ResultsFrame.concat([self, ResultsFrame(multi, rows,
                                                       np.ones(len(multi), np.int64), {})])

    def drop_plots(self, keep: np.ndarray) -> None:
        """Forgets the plots of the keys where `keep` is False."""
        self.plots = {i: p for i, p in self.plots.items() if keep[i]}

    def plot_results(self) -> list[Any]:
        """A `pipeline.results.KeyResult` (key, counts, plots; no metric rows) for each key with
        plots, in frame order: what the plots table and its writers read."""
        from pipeline.results import KeyResult
        k = self.keys
        out = []
        for i in sorted(self.plots):
            key = Key(k.specs[k.spec[i]], k.values[i], int(k.head[i]),
                      None if k.window_null[i] else int(k.window[i]),
                      None if k.step_null[i] else int(k.step[i]))
            out.append(KeyResult(key, (), int(k.example_count[i]),
                                 None if k.weighted_null[i] else float(k.weighted[i]),
                                 float(k.loss[i]), self.plots[i]))
        return out

    def metrics_table(self, table_schema: pa.Schema, ids: Mapping[str, Any],
                      dictionary: bool = False) -> pa.Table:
        """The metrics table of these keys in frame order (`ids`: `pipeline.results.table_ids`).
        With `dictionary`, its text columns are dictionary arrays (the distinct texts once, an
        int32 index a row: ~5x less memory at 10^7 rows; `plain_table` makes them strings)."""
        columns = self.rows.columns(dictionary, self.row_at)
        columns.update(id_columns(self.keys, self.row_count, table_schema=table_schema,
                                  counts=True, dictionary=dictionary, **ids))
        fields = [pa.field(f.name, columns[f.name].type, f.nullable) for f in table_schema]
        return pa.Table.from_arrays([columns[f.name] for f in table_schema],
                                    schema=pa.schema(fields))


def plain_table(table: pa.Table, table_schema: pa.Schema) -> pa.Table:
    """`table` with its dictionary columns as the schema's plain types."""
    if all(not pa.types.is_dictionary(t) for t in table.schema.types):
        return table
    return table.cast(table_schema)


def slice_texts(keys: KeyColumns) -> dict[str, tuple[pa.Array, np.ndarray]]:
    """Each key's `slice`, `slice_columns` and `slice_values` cells as (distinct texts, each
    key's code into them): every distinct value tuple spelled once (tuples of one int by Arrow's
    cast, the digits `str` gives)."""
    codes, distinct = keys.value_codes()
    ints = keys.distinct_ints()
    if ints is not None:  # (Overall's () has the text '')
        present = np.ones(len(ints), bool)
        present[:1] = [bool(v) for v in distinct[:1]]  # only code 0 can be ()
        texts = pc.if_else(pa.array(present), pa.array(ints).cast(pa.string()), pa.scalar(''))
    else:
        texts = pa.array([str(v[0]) if len(v) == 1 and type(v[0]) is int
                          else schema.join_slice_parts(v) for v in distinct], pa.string())
    spec_texts = pa.array([schema.join_slice_parts(s, columns=True) for s in keys.specs],
                          pa.string())
    # `slice`: one text per distinct (spec, values) pair.
    pair = dense_codes(keys.spec, codes) if len(keys) else np.empty(0, np.int64)
    first = np.unique(pair, return_index=True)[1]
    spec_of, value_of = keys.spec[first], codes[first]
    overall = np.asarray([not s for s in keys.specs], bool)[spec_of]
    joined = pc.binary_join_element_wise(spec_texts.take(pa.array(spec_of)),
                                         texts.take(pa.array(value_of)), ':')
    names = pc.if_else(pa.array(overall, pa.bool_()), pa.scalar(schema.OVERALL), joined)
    return {'slice': (names, pair), 'slice_columns': (spec_texts, keys.spec),
            'slice_values': (texts, codes)}


def id_columns(keys: KeyColumns, repeats: np.ndarray, names: Sequence[str],
               table_schema: pa.Schema, run_id: str, evaluated_at: datetime.datetime,
               size_us: int = 0, default_step: Any = None, counts: bool = False,
               dictionary: bool = False) -> dict[str, pa.Array]:
    """The id columns of the schema's (run, slice spellings, head, window, step; with `counts`
    the example counts) for keys whose rows number `repeats[i]`: one cell per key (texts: one
    per distinct text), repeated by Arrow."""
    n = len(keys)
    row_key = np.repeat(np.arange(n, dtype=np.int32 if n < 2**31 else np.int64),
                        np.asarray(repeats, np.int64))
    texts = slice_texts(keys)
    texts['run_id'] = (pa.array([run_id], pa.string()), np.zeros(n, np.int64))
    texts['head'] = (pa.array(list(names), pa.string()), keys.head)
    out: dict[str, pa.Array] = {}
    for name, (distinct, code) in texts.items():
        # One text (the run id, a single head or spec): zeros from calloc, which take no memory.
        code = (np.zeros(row_key.size, np.int32) if len(distinct) == 1
                else np.asarray(code).astype(np.int32)[row_key])
        out[name] = (pa.DictionaryArray.from_arrays(pa.array(code), distinct)
                     if dictionary else distinct.take(pa.array(code)))
    at = pa.array(np.full(row_key.size, _micros(evaluated_at), np.int64)).cast(schema.TIMESTAMP)
    out['evaluated_at'] = at
    fields = table_schema.names
    if 'window_start' in fields:
        null = keys.window_null[row_key] if keys.window_null.any() else None
        window = keys.window[row_key]
        out['window_start'] = pa.array(window, pa.int64(), mask=null).cast(schema.TIMESTAMP)
        out['window_end'] = pa.array(window + size_us, pa.int64(), mask=null).cast(
            schema.TIMESTAMP)
    if 'step' in fields:
        null = keys.step_null[row_key]
        if default_step is not None:
            out['step'] = pa.array(np.where(null, default_step, keys.step[row_key]), pa.int64())
        else:
            out['step'] = pa.array(keys.step[row_key], pa.int64(), mask=null)
    if counts:
        out['example_count'] = pa.array(keys.example_count[row_key], pa.int64())
        null = keys.weighted_null[row_key] if keys.weighted_null.any() else None
        out['weighted_example_count'] = pa.array(keys.weighted[row_key], pa.float64(), mask=null)
    return {f: out[f] for f in fields if f in out}


def _micros(t: datetime.datetime) -> int:
    """A timestamp as microseconds since the epoch (Arrow's value of it)."""
    return pa.scalar(t, schema.TIMESTAMP).value


class TypedValues:
    """(slice_columns, slice_values) cells → the slice's values as the pipeline sliced them, for
    the TFMA writer's typed slice keys, without a dict entry per slice: a spec whose values are
    all single ints answers by parsing the digits; any other slice from a dict."""

    def __init__(self, keys: KeyColumns) -> None:
        codes, distinct = keys.value_codes()
        self._int_specs: set[str] = set()
        self._other: dict[tuple[str, str], tuple] = {}
        ints = keys.distinct_ints()
        single_int = (np.asarray([bool(v) for v in distinct[:1]] + [True] * (len(distinct) - 1),
                                 bool) if ints is not None else
                      np.fromiter((len(v) == 1 and type(v[0]) is int for v in distinct), bool,
                                  len(distinct)))
        for s, spec in enumerate(keys.specs):
            members = np.unique(codes[keys.spec == s])
            if not members.size:
                continue
            columns = schema.join_slice_parts(spec, columns=True)
            if single_int[members].all():
                self._int_specs.add(columns)
            else:
                self._other.update(((columns, schema.join_slice_parts(distinct[j])), distinct[j])
                                   for j in members.tolist())

    def __getitem__(self, key: tuple[str, str]) -> tuple:
        columns, values = key
        if columns in self._int_specs:
            try:
                return (int(values),)
            except ValueError:
                raise KeyError(key) from None
        return self._other[key]

    def int_spec(self, columns: str) -> bool:
        """Whether every slice of the spec `columns` (a slice_columns cell) is one int value:
        its values are then `(int(slice_values),)` for any decimal text."""
        return columns in self._int_specs

    def get(self, key: tuple[str, str], default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __len__(self) -> int:
        return len(self._other) + len(self._int_specs)
