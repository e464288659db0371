"""Parquet tables and the run summary, written through Beam `FileSystems` (local or gs://).

Each table is written to a temporary name and then renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

METRICS_FILE = 'metrics/metrics.parquet'
PLOTS_FILE = 'plots/plots.parquet'
ERRORS_FILE = 'errors/errors.parquet'
SUMMARY_FILE = 'summary.json'


def join(directory: str, name: str) -> str:
    """`directory/name` for local paths and gs:// alike."""
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.join(directory.rstrip('/'), name)


def _mkdirs(path: str) -> None:
    from apache_beam.io.filesystems import FileSystems
    parent = path.rsplit('/', 1)[0]
    if parent and '://' not in path:  # object stores have no directories
        try:
            FileSystems.mkdirs(parent)
        except IOError:
            pass  # already there


def _write_bytes_atomically(path: str, write) -> None:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    _mkdirs(path)
    tmp = '%s.tmp-%s' % (path, uuid.uuid4().hex[:12])
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        write(f)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_table(table: pa.Table, path: str) -> None:
    """Writes one Parquet file (zstd) at `path`."""
    def write(f: Any) -> None:
        pq.write_table(table, f, compression='zstd')
    _write_bytes_atomically(path, write)


def write_json(obj: Any, path: str) -> None:
    """Writes `obj` as indented JSON at `path`."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode('utf-8')
    _write_bytes_atomically(path, lambda f: f.write(data))


def read_table(path: str) -> pa.Table:
    """Reads one Parquet file written by `write_table`."""
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path) as f:
        return pq.read_table(pa.BufferReader(f.read()))


def write_outputs(output_dir: str, metrics: pa.Table, plots: pa.Table,
                  errors: pa.Table | None = None) -> list[str]:
    """Writes metrics/metrics.parquet, plots/plots.parquet and (when given) errors/errors.parquet
    under `output_dir`; returns the paths written."""
    written = []
    for table, name in ((metrics, METRICS_FILE), (plots, PLOTS_FILE), (errors, ERRORS_FILE)):
        if table is None:
            continue
        path = join(output_dir, name)
        write_table(table, path)
        written.append(path)
    return written
