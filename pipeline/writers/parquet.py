"""Parquet tables and the run summary, written through Beam `FileSystems` (local or gs://).

Each table is written to a temporary name and then renamed, so a reader never sees half a file.
A whole run's outputs are written under a staging directory and published together
(`staging_dir`, `list_files`, `delete_tree` here; the protocol is in pipeline/writers/publish.py).
A discarded staging directory (`discard`: an interrupted or failed run) takes no more files: a
worker thread still writing into it fails instead of recreating it.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
import threading
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


def _write_bytes_atomically(path: str, write) -> None:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    if _discarded_root(path):
        raise DiscardedError('%s: its run was discarded' % path)
    _mkdirs(path)
    tmp = '%s.tmp-%s' % (path, uuid.uuid4().hex[:12])
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        write(f)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    root = _discarded_root(path)
    if root:  # discarded while this file was written: take back what was recreated
        delete_tree(root)
        raise DiscardedError('%s: its run was discarded' % path)


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
