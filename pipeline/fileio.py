"""File access shared by every output writer, the publisher and the report, local or remote alike.

Owns the few operations headstream performs on files through Beam's `FileSystems` (so a path may be
local or gs://, or any other scheme Beam knows): joining paths, writing a file atomically (under a
temporary name, then renamed, so a reader never sees half a file), moving a file, reading one
whole, reading a JSON file or a run's summary.json leniently, creating a file only when absent (the
output lock), and TFRecord framing (the TFMA and TensorBoard files).

Used by `pipeline/writers/*`, `pipeline/report/` and `pipeline/config/`. Beam (and, for a gs://
exclusive create, google-cloud-storage) is imported only when a function is called.
"""
from __future__ import annotations

import io
import json
import os
import uuid
from typing import Any, BinaryIO, Callable, Iterable

# The run summary's name under an output directory (written by pipeline/run.py).
SUMMARY_FILE = 'summary.json'


def join(directory: str, name: str) -> str:
    """`directory/name` for local paths and gs:// alike."""
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.join(directory.rstrip('/'), name)


def exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.exists(path)


def make_parent(path: str) -> None:
    """Creates the local directory `path` lies in (object stores have no directories)."""
    from apache_beam.io.filesystems import FileSystems
    parent = path.rsplit('/', 1)[0]
    if parent and '://' not in path:
        try:
            FileSystems.mkdirs(parent)
        except IOError:
            pass  # already there


def write_atomically(path: str, write: Callable[[BinaryIO], Any], tmp: str | None = None) -> None:
    """Writes the file at `path` with `write(f)` under a temporary name, then renames it into place
    (replacing any file there), so a reader never sees half a file.

    Args:
      path: the file, local or remote; its local directory is created when missing.
      write: writes the content into the open binary file it is given.
      tmp: the temporary path (default `<path>.tmp-<random>`), in `path`'s directory.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    make_parent(path)
    if tmp is None:
        tmp = '%s.tmp-%s' % (path, uuid.uuid4().hex[:12])
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        write(f)
    # A local rename (os.rename) replaces the old file in one atomic step; object stores cannot
    # rename onto an existing object, so there the old one is deleted first.
    if '://' in path and FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_bytes(path: str, data: bytes, tmp: str | None = None) -> None:
    """Writes `data` at `path` atomically (`write_atomically`)."""
    write_atomically(path, lambda f: f.write(data), tmp)


def move(source: str, target: str) -> None:
    """Renames `source` to `target`, creating `target`'s local directory when missing."""
    from apache_beam.io.filesystems import FileSystems
    make_parent(target)
    FileSystems.rename([source], [target])


def read_bytes(path: str) -> bytes:
    """The whole content of the file at `path`."""
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.open(path) as f:
        return f.read()


def read_json(path: str) -> Any:
    """The JSON at `path`; None when there is no such file or it does not parse."""
    try:
        if not exists(path):
            return None
        return json.loads(read_bytes(path).decode('utf-8'))
    except (OSError, ValueError):
        return None


def read_summary(output_dir: str) -> Any:
    """The summary.json of `output_dir` as `read_json` reads it (None when missing or broken)."""
    return read_json(join(output_dir, SUMMARY_FILE))


def create_exclusive(path: str, data: bytes) -> bool:
    """Creates `path` holding `data` only if it does not exist; False when it exists.

    Local: O_CREAT|O_EXCL. gs://: an upload with the precondition `if_generation_match=0` (Beam's
    FileSystems has no create-if-absent). Any other store: exists-then-create, which two runs
    starting in the same instant could both pass (documented in docs/design.md).
    """
    if '://' not in path:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        return True
    if path.startswith('gs://'):
        from google.api_core.exceptions import PreconditionFailed
        from google.cloud import storage
        bucket, _, name = path[len('gs://'):].partition('/')
        try:
            storage.Client().bucket(bucket).blob(name).upload_from_string(
                data, if_generation_match=0)
        except PreconditionFailed:
            return False
        return True
    from apache_beam.io.filesystems import FileSystems
    if FileSystems.exists(path):
        return False
    with FileSystems.create(path) as f:
        f.write(data)
    return True


def tfrecord_bytes(records: Iterable[bytes]) -> bytes:
    """Records in TFRecord framing: len (u64 LE), masked crc32c(len), data, masked crc32c(data).

    Beam's TFRecord coder (what `WriteToTFRecord` uses) does the framing; TFMA's loaders and
    TensorBoard read the files with TensorFlow's record reader, which checks both CRCs.
    """
    from apache_beam.io.tfrecordio import _TFRecordUtil
    buffer = io.BytesIO()
    for data in records:
        _TFRecordUtil.write_record(buffer, data)
    return buffer.getvalue()
