"""Parquet tables and the run's staging directory, written through Beam `FileSystems` (local or
gs://).

Owns the table files (`write_table`, `read_table`, `write_outputs`, `write_json` for summary.json
and the other JSON files of a run) and the staging directory a run writes into before publishing
(`staging_dir`, `list_files`, `delete_tree`, `discard`; the protocol is in
pipeline/writers/publish.py). Each file is written atomically (`pipeline.fileio`). A discarded
staging directory (`discard`: an interrupted or failed run) takes no more files: a worker thread
still writing into it fails instead of recreating it.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
from typing import Any, BinaryIO, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import fileio
from pipeline.fileio import join

METRICS_FILE = 'metrics/metrics.parquet'
PLOTS_FILE = 'plots/plots.parquet'
ERRORS_FILE = 'errors/errors.parquet'
SUMMARY_FILE = fileio.SUMMARY_FILE  # written by pipeline/run.py with `write_json`


class DiscardedError(RuntimeError):
    """A write into a staging directory that was discarded (its run was interrupted or failed)."""


# Staging directories discarded in this process (`discard`), and the lock guarding the set.
_discarded: set[str] = set()
_discarded_lock = threading.Lock()


def _discarded_root(path: str) -> str | None:
    """The discarded staging directory `path` lies under, if any."""
    with _discarded_lock:
        return next((d for d in _discarded if path.startswith(d + '/')), None)


def discard(staging: str) -> None:
    """Deletes a staging directory and refuses every later write under it in this process."""
    with _discarded_lock:
        _discarded.add(staging.rstrip('/'))
    delete_tree(staging)


def reclaim(staging: str) -> None:
    """Lets a new run of the same id write under `staging` again (after `discard`)."""
    with _discarded_lock:
        _discarded.discard(staging.rstrip('/'))


def _write_bytes_atomically(path: str, write: Callable[[BinaryIO], Any]) -> None:
    """`fileio.write_atomically`, refused under a discarded staging directory."""
    if _discarded_root(path):
        raise DiscardedError('%s: its run was discarded' % path)
    fileio.write_atomically(path, write)
    root = _discarded_root(path)
    if root:  # discarded while this file was written: take back what was recreated
        delete_tree(root)
        raise DiscardedError('%s: its run was discarded' % path)


# Dictionary columns with more distinct texts than this are written without Parquet's dictionary.
LARGE_DICTIONARY = 1 << 16
# Rows per row group when a table with dictionary columns is written as plain strings.
PIECE_ROWS = 1 << 20


def write_table(table: pa.Table, path: str, table_schema: pa.Schema | None = None) -> None:
    """Writes one Parquet file (zstd) at `path`; with `table_schema`, the table (whose text
    columns may be dictionary arrays) as that schema's types, a million rows at a time."""
    if table_schema is None or table.schema.equals(table_schema):
        def write(f: Any) -> None:
            pq.write_table(table, f, compression='zstd')
        _write_bytes_atomically(path, write)
        return
    if all(f.type in _PARQUET_TYPES for f in table_schema):
        # Dictionary columns are written as they are (Parquet stores strings by dictionary
        # anyway: 3x faster than casting 10^7 rows to strings first) and without Arrow's own
        # schema in the file, so every reader reads `table_schema` back: the strings, not
        # dictionaries (the types above need no Arrow schema to read back as themselves).
        as_schema = pa.schema([pa.field(f.name, table.schema.field(f.name).type, f.nullable)
                               for f in table_schema])
        table = pa.Table.from_arrays([table.column(f.name) for f in table_schema],
                                     schema=as_schema)

        # A column whose dictionary is large (slice names at 10^6 slices) is written plainly:
        # Parquet's writer re-reads a whole Arrow dictionary for every row group (3 s instead of
        # 0.7 s at 10^6 slices and 1.3 * 10^7 rows); the others keep Parquet's dictionary pages.
        encoded = [f.name for f in table.schema if not pa.types.is_dictionary(f.type)
                   or max((len(c.dictionary) for c in table.column(f.name).chunks),
                          default=0) <= LARGE_DICTIONARY]

        def write_coded(f: Any) -> None:
            pq.write_table(table, f, compression='zstd', store_schema=False,
                           row_group_size=PIECE_ROWS, use_dictionary=encoded)
        _write_bytes_atomically(path, write_coded)
        return
    pieces = (table.slice(a, PIECE_ROWS).cast(table_schema)
              for a in range(0, max(table.num_rows, 1), PIECE_ROWS))
    write_table_pieces(pieces, table_schema, path)


# Arrow types a Parquet file without Arrow's schema reads back as themselves.
_PARQUET_TYPES = (pa.string(), pa.float64(), pa.int64(), pa.bool_(),
                  pa.timestamp('us', tz='UTC'))


def write_table_pieces(pieces: Iterable[pa.Table], table_schema: pa.Schema, path: str) -> int:
    """Writes the tables `pieces` (each of `table_schema`) one after another as one Parquet file
    (zstd) at `path`, each piece its own row group(s), so only one piece is in memory at a time;
    returns the rows written."""
    rows = 0

    def write(f: Any) -> None:
        nonlocal rows
        with pq.ParquetWriter(f, table_schema, compression='zstd') as writer:
            for piece in pieces:
                writer.write_table(piece)
                rows += piece.num_rows
    _write_bytes_atomically(path, write)
    return rows


def write_json(obj: Any, path: str) -> None:
    """Writes `obj` as indented JSON at `path`."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode('utf-8')
    _write_bytes_atomically(path, lambda f: f.write(data))


def read_table(path: str) -> pa.Table:
    """Reads one Parquet file written by `write_table`."""
    return pq.read_table(pa.BufferReader(fileio.read_bytes(path)))


def write_outputs(output_dir: str, metrics: pa.Table, plots: pa.Table,
                  errors: pa.Table | None = None, schema: pa.Schema | None = None
                  ) -> list[str]:
    """Writes metrics/metrics.parquet, plots/plots.parquet and (when given) errors/errors.parquet
    under `output_dir`; returns the paths written. `schema`: the metrics table's (its text
    columns may be dictionary arrays in memory; the file holds strings)."""
    written = []
    for table, name in ((metrics, METRICS_FILE), (plots, PLOTS_FILE), (errors, ERRORS_FILE)):
        if table is None:
            continue
        path = join(output_dir, name)
        write_table(table, path, schema if name == METRICS_FILE else None)
        written.append(path)
    return written


STAGING_PREFIX = '.staging-'


def staging_dir(output_dir: str, run_id: str) -> str:
    """`<output_dir>/.staging-<run_id>`: where a run writes every output before publishing."""
    return join(output_dir, STAGING_PREFIX + run_id)


def _is_local(path: str) -> bool:
    return '://' not in path


def list_files(directory: str) -> list[str]:
    """Every file under `directory`, as paths relative to it, '/'-separated and sorted."""
    from apache_beam.io.filesystems import FileSystems
    base = directory.rstrip('/')
    if _is_local(base):
        out = []
        for root, _, files in os.walk(base):
            for name in files:
                out.append(os.path.relpath(os.path.join(root, name), base).replace(os.sep, '/'))
        return sorted(out)
    from apache_beam.io.filesystem import BeamIOError
    try:
        matched = FileSystems.match([base + '/**'])[0].metadata_list
    except BeamIOError:  # some stores raise when nothing matches
        return []
    return sorted(m.path[len(base) + 1:] for m in matched)


def delete_tree(path: str) -> None:
    """Deletes a file or a directory with everything under it; nothing there is no error."""
    from apache_beam.io.filesystems import FileSystems
    path = path.rstrip('/')
    if _is_local(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        return
    # Object stores: the object itself and every object under the prefix.
    doomed = [join(path, rel) for rel in list_files(path)]
    if FileSystems.exists(path):
        doomed.append(path)
    if doomed:
        FileSystems.delete(doomed)
