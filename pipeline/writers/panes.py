"""Pane files of a windowed evaluation: every pane's tables, and each window's latest ones.

    write_pane_tables(output, metrics, plots, start_us, timing, index) -> summary dict

Used by `pipeline/pane_results.py` (`write_pane`: the streaming graph and `headstream watch`).
Takes the window's tables (`pipeline.schema` layout with the window columns), adds the `pane`
(early | on_time | late | unknown) and `pane_index` columns, and writes, under `output`:

  panes/metrics/window-<start>-pane-<index>.parquet  every pane (`pane_index` 0, 1, ...)
  panes/plots/window-<start>-pane-<index>.parquet
  metrics/window-<start>.parquet                     the window's latest pane (replaced)
  plots/window-<start>.parquet

A window's latest-pane file is only ever replaced by a pane that is also on record (history is
written first), and never by an older pane (a runner may hand a window's panes over out of order).
"""
from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import fileio
from pipeline.writers import parquet as parquet_writer

# Pane timing names, as the `pane` column spells them.
EARLY, ON_TIME, LATE, UNKNOWN = 'early', 'on_time', 'late', 'unknown'
PANE_FIELDS = [pa.field('pane', pa.string(), nullable=False),
               pa.field('pane_index', pa.int64(), nullable=False)]


def pane_schema(table_schema: pa.Schema) -> pa.Schema:
    """A windowed table's schema plus the `pane` and `pane_index` columns."""
    return pa.schema(list(table_schema) + PANE_FIELDS)


def with_pane(table: pa.Table, timing: str, index: int) -> pa.Table:
    """`table` with constant `pane` (early | on_time | late | unknown) and `pane_index` columns."""
    n = table.num_rows
    return pa.Table.from_arrays(
        list(table.columns) + [pa.array([timing] * n, pa.string()),
                               pa.array(np.full(n, index, np.int64))],
        schema=pane_schema(table.schema))


def window_tag(start_us: int) -> str:
    """A window's start as a file-name stamp: `20261123T091000Z` (`...T091000.250000Z` when the
    start is not on a whole second)."""
    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        microseconds=int(start_us))
    stamp = t.strftime('%Y%m%dT%H%M%S')
    return stamp + ('.%06d' % t.microsecond if t.microsecond else '') + 'Z'


def pane_paths(output: str, start_us: int, index: int) -> dict[str, str]:
    """The files one pane of one window is written to (see the module docstring)."""
    tag = window_tag(start_us)
    join = fileio.join
    return {
        'metrics': join(output, 'metrics/window-%s.parquet' % tag),
        'plots': join(output, 'plots/window-%s.parquet' % tag),
        'pane_metrics': join(output, 'panes/metrics/window-%s-pane-%04d.parquet' % (tag, index)),
        'pane_plots': join(output, 'panes/plots/window-%s-pane-%04d.parquet' % (tag, index)),
    }


def _latest_index(path: str) -> int:
    """The pane index of the window's latest-pane file at `path` (-1 when there is none)."""
    from apache_beam.io.filesystems import FileSystems
    if not FileSystems.exists(path):
        return -1
    import pyarrow.parquet as pq
    with FileSystems.open(path) as f:
        column = pq.read_table(pa.BufferReader(f.read()), columns=['pane_index']).column(0)
    return int(column[0].as_py()) if len(column) else -1



def write_pane_tables(output: str, metrics: pa.Table, plots: pa.Table, start_us: int, timing: str,
                      index: int) -> dict[str, Any]:
    """Writes one pane of one window: its history files and the window's latest tables.

    Args:
      output: the output directory receiving the files.
      metrics: the window's metrics table (without the pane columns).
      plots: the window's plots table (without the pane columns).
      start_us: the window's start, microseconds since the epoch.
      timing: early | on_time | late | unknown.
      index: the pane's index within its window (0 for the first pane).

    Returns:
      {'window_start', 'pane', 'pane_index', 'metrics_rows', 'paths'}.
    """
    metrics = with_pane(metrics, timing, index)
    plots = with_pane(plots, timing, index)
    paths = pane_paths(output, start_us, index)
    # History first: the latest-pane file is only ever replaced by a pane that is also on record,
    # and never by an older pane (a runner may hand a window's panes over out of order).
    parquet_writer.write_table(metrics, paths['pane_metrics'])
    parquet_writer.write_table(plots, paths['pane_plots'])
    if _latest_index(paths['metrics']) <= index:
        parquet_writer.write_table(metrics, paths['metrics'])
        parquet_writer.write_table(plots, paths['plots'])
    return {'window_start': int(start_us), 'pane': timing, 'pane_index': int(index),
            'metrics_rows': metrics.num_rows, 'paths': paths}
