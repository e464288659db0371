"""Sources: a file pattern in, Arrow record batches out, on every Beam runner.

The file list is expanded with `FileSystems.match` when the pipeline is built (so a pattern that
matches nothing fails before anything runs), then:

    Create(files) → plan work items (Parquet: runs of row groups) → Reshuffle → read with pyarrow

Every element downstream is a `SourceBatch`: one `pyarrow.RecordBatch` of consecutive rows of one
file, with the file and the 0-based index of its first row, so any row can be named in an error.
Nothing here is a splittable DoFn (the DaskRunner cannot translate those), and files are opened
through Beam's `FileSystems`, so local paths and gs:// behave alike.

Formats: Parquet (scalar, list and dictionary-encoded columns; read here, by runs of row groups),
TFRecord of tf.Example, CSV (header row; row indices count data rows) and JSONL (read whole by
`pipeline.readers`, which also opens files and names unreadable ones); CSV, JSONL and TFRecord
may be gzipped (`.gz`). Streaming sources (Pub/Sub, continuously matched files) are in
`pipeline/streaming_sources.py`.

Row numbers, everywhere (SourceBatch, bad-record messages, errors/, unreadable-file messages): the
0-based index of the record within its file, whatever the block, row-group or batch size — a
Parquet row, a TFRecord record, a JSONL line, a CSV data row after the header. Blank lines of CSV
and JSONL are not records (the readers skip them), so text messages also give the 1-based line.
"""
from __future__ import annotations

import logging
import time
from typing import Iterator, NamedTuple, Sequence

import apache_beam as beam
import pyarrow as pa

from pipeline.config import ConfigError
from pipeline.elements import SourceBatch
from pipeline.readers import READ_ERRORS, UnreadableFileError, open_file, read_file, unreadable

# Rows per batch: large enough that per-batch overhead (Python, Beam) vanishes next to numpy work,
# small enough that a few batches per worker fit comfortably in memory.
TARGET_ROWS = 128 * 1024
_LOG_EVERY_S = 5.0
_log = logging.getLogger(__name__)


class WorkItem(NamedTuple):
    """A unit of reading: a whole file, or a run of a Parquet file's row groups."""
    path: str
    format: str
    row_groups: tuple[int, ...] | None  # Parquet row groups to read; None: the whole file
    first_row: int                      # 0-based index within the file of the item's first row


# -------------------------------------------------------------------------------------------------
# Files.
# -------------------------------------------------------------------------------------------------

def match_metadata(pattern: str) -> list:
    """Beam's `FileMetadata` (path, size_in_bytes, last_updated_in_seconds) of the files a
    pattern matches, sorted by path; empty when it matches none.

    Raises:
      ConfigError: naming the pattern when it cannot be listed.
    """
    from apache_beam.io.filesystems import FileSystems
    try:
        results = FileSystems.match([pattern])
    except Exception as e:  # noqa: BLE001 -- Beam raises BeamIOError for a bad bucket, etc.
        raise ConfigError('input.pattern: cannot list %r: %s' % (pattern, e)) from None
    return sorted((m for r in results for m in r.metadata_list if not m.path.endswith('/')),
                  key=lambda m: m.path)


def match_files(pattern: str) -> list[str]:
    """The files a pattern matches, sorted.

    Raises:
      ConfigError: naming the pattern when it matches no file.
    """
    files = [m.path for m in match_metadata(pattern)]
    if not files:
        raise ConfigError('input.pattern: no file matches %r' % pattern)
    return files


def read_schema(path: str, fmt: str) -> pa.Schema:
    """The Arrow schema the reader will produce for `path` (from its first block of rows).

    Raises:
      UnreadableFileError: naming the file, when it cannot be read as `fmt`.
    """
    try:
        return _read_schema(path, fmt)
    except FileNotFoundError:
        raise
    except UnreadableFileError:
        raise
    except READ_ERRORS as e:
        raise unreadable(path, fmt, e) from e


def _read_schema(path: str, fmt: str) -> pa.Schema:
    if fmt == 'parquet':
        import pyarrow.parquet as pq
        with open_file(path, seekable=True) as f:
            return pq.ParquetFile(f).schema_arrow
    for batch in read_file(path, fmt, None, 4096):
        return batch.schema
    if fmt == 'csv':  # a header-only CSV still names its columns
        import pyarrow.csv as pcsv
        with open_file(path) as f:
            return pcsv.open_csv(f).schema
    return pa.schema([])


# -------------------------------------------------------------------------------------------------
# Planning: Parquet files split by row groups.
# -------------------------------------------------------------------------------------------------

def plan_file(path: str, fmt: str, target_rows: int = TARGET_ROWS) -> list[WorkItem]:
    """Splits one file into work items (Parquet: runs of row groups of about `target_rows`)."""
    if fmt != 'parquet':
        return [WorkItem(path, fmt, None, 0)]
    import pyarrow.parquet as pq
    try:
        with open_file(path, seekable=True) as f:
            meta = pq.ParquetFile(f).metadata
    except FileNotFoundError:
        raise
    except READ_ERRORS as e:
        raise unreadable(path, fmt, e) from e
    items: list[WorkItem] = []
    group: list[int] = []
    group_rows = 0
    first = row = 0
    for i in range(meta.num_row_groups):
        n = meta.row_group(i).num_rows
        if group and group_rows + n > target_rows:
            items.append(WorkItem(path, fmt, tuple(group), first))
            group, group_rows, first = [], 0, row
        group.append(i)
        group_rows += n
        row += n
    if group or not items:
        items.append(WorkItem(path, fmt, tuple(group), first))
    return items


# -------------------------------------------------------------------------------------------------
# Reading.
# -------------------------------------------------------------------------------------------------


def read_item(item: WorkItem, columns: Sequence[str] | None = None,
              rows: int = TARGET_ROWS,
              dictionary_columns: Sequence[str] = ()) -> Iterator[SourceBatch]:
    """Reads one work item into `SourceBatch`es of at most `rows` rows.

    A file that turns out damaged while it is read raises `UnreadableFileError` naming it and the
    row (0-based, within the file: as errors/ counts rows) it failed at — CSV and JSONL also the
    1-based line — or, where the reader cannot tell (Parquet), the row from which on its rows could
    not be read; batches before that were yielded already.

    Args:
      item: what to read.
      columns: the columns to read (None: all).
      rows: rows per batch.
      dictionary_columns: Parquet string columns to read dictionary-encoded (cheap slicing).
    """
    first = item.first_row
    try:
        for sb in _read_item(item, columns, rows, dictionary_columns):
            yield sb
            first = sb.first_row + sb.batch.num_rows
    except FileNotFoundError:
        raise
    except UnreadableFileError:
        raise
    except READ_ERRORS as e:
        # Parquet (text and TFRecord readers place their own errors): the rows from the first one
        # not yielded on could not be read; the reader does not say which one failed.
        raise unreadable(item.path, item.format, e, first, exact=False) from e


def _read_item(item: WorkItem, columns: Sequence[str] | None, rows: int,
               dictionary_columns: Sequence[str]) -> Iterator[SourceBatch]:
    first = item.first_row
    if item.format == 'parquet':
        import pyarrow.parquet as pq
        with open_file(item.path, seekable=True) as f:
            pf = pq.ParquetFile(f, read_dictionary=list(dictionary_columns) or None)
            names = pf.schema_arrow.names
            cols = None if columns is None else [c for c in columns if c in names]
            groups = list(item.row_groups) if item.row_groups is not None else None
            if groups == []:
                return
            for batch in pf.iter_batches(batch_size=rows, row_groups=groups, columns=cols):
                yield SourceBatch(item.path, first, batch)
                first += batch.num_rows
        return
    for batch in read_file(item.path, item.format, columns, rows):
        yield SourceBatch(item.path, first, batch)
        first += batch.num_rows


class _PlanFile(beam.DoFn):
    def __init__(self, fmt: str, target_rows: int):
        self._fmt = fmt
        self._target_rows = target_rows

    def process(self, path: str) -> Iterator[WorkItem]:
        yield from plan_file(path, self._fmt, self._target_rows)


class _ReadItem(beam.DoFn):
    """Reads a work item; counts rows (Beam counter `rows_read`) and logs progress every ~5 s."""

    def __init__(self, columns: Sequence[str] | None, rows: int,
                 dictionary_columns: Sequence[str]):
        self._columns = None if columns is None else list(columns)
        self._rows = rows
        self._dictionary_columns = list(dictionary_columns)
        self._counter = beam.metrics.Metrics.counter('headstream', 'rows_read')

    def setup(self) -> None:
        self._read = 0
        self._last_log = time.monotonic()

    def process(self, item: WorkItem) -> Iterator[SourceBatch]:
        for sb in read_item(item, self._columns, self._rows, self._dictionary_columns):
            n = sb.batch.num_rows
            self._counter.inc(n)
            self._read += n
            now = time.monotonic()
            if now - self._last_log >= _LOG_EVERY_S:
                self._last_log = now
                _log.info('headstream: %d rows read so far by this worker', self._read)
            yield sb


class ReadBatches(beam.PTransform):
    """Reads every file of `files` as `SourceBatch`es (see the module docstring).

    Args:
      files: the matched files (`match_files`).
      fmt: the input format.
      columns: the columns to read (None: all).
      rows: rows per batch (default `TARGET_ROWS`).
      dictionary_columns: Parquet string columns worth reading dictionary-encoded.
    """

    def __init__(self, files: Sequence[str], fmt: str, columns: Sequence[str] | None = None,
                 rows: int | None = None, dictionary_columns: Sequence[str] = ()):
        super().__init__()
        self._files = list(files)
        self._fmt = fmt
        self._columns = columns
        self._rows = rows or TARGET_ROWS
        self._dictionary_columns = dictionary_columns

    def expand(self, pbegin):
        return (pbegin
                | 'Files' >> beam.Create(self._files)
                | 'Plan' >> beam.ParDo(_PlanFile(self._fmt, self._rows))
                | 'Spread' >> beam.Reshuffle()
                | 'Read' >> beam.ParDo(_ReadItem(self._columns, self._rows,
                                                 self._dictionary_columns)))
