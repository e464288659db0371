"""Parquet tables and the run summary, written through Beam `FileSystems` (local or gs://).

Each table is written to a temporary name and then renamed, so a reader never sees half a file.
A whole run's outputs are written under a staging directory and published together
(`staging_dir`, `publish`, `delete_tree`; the protocol is described in pipeline/run.py).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any, Sequence

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


# Everything a run may write at the top of its output directory. A run replaces all of them, so
# a rerun into the same directory never keeps an earlier run's pieces (more metrics shards, an
# errors/ or predictions/ directory the new run does not write).
RUN_OUTPUTS = ('metrics', 'plots', 'errors', 'predictions', 'tfma', 'tensorboard', 'report.html',
               SUMMARY_FILE)
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


def publish(staging: str, output_dir: str, replace: Sequence[str] = RUN_OUTPUTS,
            last: str = SUMMARY_FILE) -> list[str]:
    """Moves a finished run's files from `staging` into `output_dir`, `last` at the very end.

    First `last` (the completion marker) and then every other name in `replace` are deleted from
    `output_dir`, so that from the first change on the directory has no marker until the new run
    is wholly in place, and no file of an earlier run survives beside the new one. Then every
    staged file is renamed to the same relative path (on object stores a rename is a copy and a
    delete, so this is file by file), `last` after all others; the empty staging directory is
    removed.

    Returns:
      The relative paths moved, in order.
    """
    from apache_beam.io.filesystems import FileSystems
    delete_tree(join(output_dir, last))
    for name in replace:
        delete_tree(join(output_dir, name))
    files = list_files(staging)
    order = [f for f in files if f != last] + [f for f in files if f == last]
    for rel in order:
        target = join(output_dir, rel)
        _mkdirs(target)
        FileSystems.rename([join(staging, rel)], [target])
    delete_tree(staging)
    return order
