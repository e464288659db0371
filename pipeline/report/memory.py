"""A run's tables as `WriteRun` holds them, read as the report reads the files they were written
to (`pipeline.report.data.TableFiles`, `read_tables`): the report of a run is built without
reading back the Parquet files just written (at 10^5 slices, 1.3·10^6 metrics rows, that reading
was half the report's time). The rows, their order and their types are the files' own, so the page
is the same byte for byte.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.report.data import REQUIRED, one_dictionary, require


class TableMemory:
    """A table in memory whose text columns may be dictionaries, read as `TableFiles` reads the
    file it was written to as `table_schema`: `columns` gives text as one dictionary column
    each, `rows` the rows of a mask as the file holds them."""

    def __init__(self, table: pa.Table, table_schema: pa.Schema, kind: str) -> None:
        require(table, REQUIRED[kind], 'run\'s %s table' % kind)
        self.kind = kind
        self._table = table
        self._schema = table_schema
        self.column_names = table.column_names

    def __bool__(self) -> bool:
        return True

    def columns(self, columns: Sequence[str]) -> pa.Table:
        """The `columns` the table has, text as one dictionary column each."""
        out = {}
        for name in [c for c in self.column_names if c in set(columns)]:
            chunks = [a.dictionary_encode() if pa.types.is_string(a.type) else a
                      for a in self._table.column(name).chunks]
            out[name] = one_dictionary(chunks)
        return pa.table(out)

    def rows(self, mask: np.ndarray | None, columns: Sequence[str] | None = None,
             plain: bool = True) -> pa.Table:
        """The rows where `mask` (None: all) of `columns` (None: all); text as the file holds it
        with `plain`, else as the table holds it."""
        names = self.column_names if columns is None else [
            c for c in self.column_names if c in set(columns)]
        table = self._table.select(names)
        if mask is not None:
            table = table.filter(pa.array(mask))
        if plain:
            table = table.cast(pa.schema([self._schema.field(c) for c in names]))
        return table


def plot_rows_of(plots: Callable[[set[str] | None], Iterable[pa.Table]],
                 slices: set[str] | None) -> pa.Table:
    """The plots table of `slices` (None: all) from the run's plot pieces (`plots(slices)`), as
    `read_tables(output_dir, 'plots', slices=slices)` reads it from the file."""
    pieces = list(plots(slices))
    table = pa.concat_tables(pieces)
    require(table, REQUIRED['plots'], 'run\'s plots table')
    if slices is not None:  # the pieces of a set may hold more (a slice's other windows)
        table = table.filter(pc.is_in(table['slice'], value_set=pa.array(sorted(slices),
                                                                          pa.string())))
    return table
