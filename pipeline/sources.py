"""Sources: a file pattern in, Arrow record batches out, on every Beam runner.

The file list is expanded with `FileSystems.match` when the pipeline is built (so a pattern that
matches nothing fails before anything runs), then:

    Create(files) → plan work items (Parquet: runs of row groups) → Reshuffle → read with pyarrow

Every element downstream is a `SourceBatch`: one `pyarrow.RecordBatch` of consecutive rows of one
file, with the file and the 0-based index of its first row, so any row can be named in an error.
Nothing here is a splittable DoFn (the DaskRunner cannot translate those), and files are opened
through Beam's `FileSystems`, so local paths and gs:// behave alike.

Formats: Parquet (scalar, list and dictionary-encoded columns), TFRecord of tf.Example (decoded by
tfx_bsl without importing TensorFlow; every feature is a list column), CSV (header row; row indices
count data rows) and JSONL; CSV, JSONL and TFRecord may be gzipped (`.gz`).

Row numbers, everywhere (SourceBatch, bad-record messages, errors/, unreadable-file messages): the
0-based index of the record within its file, whatever the block, row-group or batch size — a
Parquet row, a TFRecord record, a JSONL line, a CSV data row after the header. Blank lines of CSV
and JSONL are not records (the readers skip them), so text messages also give the 1-based line.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import apache_beam as beam
import pyarrow as pa

from pipeline.config import ConfigError
from pipeline.elements import SourceBatch

# Rows per batch: large enough that per-batch overhead (Python, Beam) vanishes next to numpy work,
# small enough that a few batches per worker fit comfortably in memory.
TARGET_ROWS = 128 * 1024
_TEXT_BLOCK_BYTES = 16 << 20
_LOG_EVERY_S = 5.0
_MAX_DETAIL = 300  # characters of a reader's own message kept in ours (one line)
_log = logging.getLogger(__name__)

# What a damaged or unreadable file raises inside pyarrow, tfx_bsl or Beam's TFRecord reader.
_READ_ERRORS = (pa.ArrowException, OSError, ValueError, RuntimeError, EOFError)


class UnreadableFileError(RuntimeError):
    """A file that cannot be read (corrupt, truncated, not of its format); names the file."""


def _unreadable(path: str, fmt: str, e: BaseException, row: int | None = None,
                line: int | None = None, exact: bool = True) -> UnreadableFileError:
    """The one-line error for a file that cannot be read, naming it and, when known, the row:
    `row` is the 0-based index of the record within the file (as in errors/ and bad-record
    messages), `line` its 1-based line; `exact=False` when only "from this row on" is known."""
    where = ''
    if row is not None:
        where = (' at row %d' if exact else ' from row %d on') % row
        where += ' (line %d)' % line if line is not None else ''
    detail = ' '.join(str(e).split())
    if len(detail) > _MAX_DETAIL:
        detail = detail[:_MAX_DETAIL] + ' ...'
    return UnreadableFileError('cannot read %s file %s%s: %s: %s' % (
        fmt, path, where, type(e).__name__, detail))


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


def _open(path: str, seekable: bool = False):
    """Opens `path` through Beam's FileSystems; `.gz` files are decompressed unless `seekable`."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    if not seekable and path.lower().endswith('.gz'):
        # pyarrow's own gzip stream: Beam's CompressedFile lacks parts of the file protocol
        # pyarrow's readers need.
        return pa.CompressedInputStream(pa.PythonFile(raw, mode='r'), 'gzip')
    return raw


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
    except _READ_ERRORS as e:
        raise _unreadable(path, fmt, e) from e


def _read_schema(path: str, fmt: str) -> pa.Schema:
    if fmt == 'parquet':
        import pyarrow.parquet as pq
        with _open(path, seekable=True) as f:
            return pq.ParquetFile(f).schema_arrow
    for batch in _read_file(path, fmt, None, 4096):
        return batch.schema
    if fmt == 'csv':  # a header-only CSV still names its columns
        import pyarrow.csv as pcsv
        with _open(path) as f:
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
        with _open(path, seekable=True) as f:
            meta = pq.ParquetFile(f).metadata
    except FileNotFoundError:
        raise
    except _READ_ERRORS as e:
        raise _unreadable(path, fmt, e) from e
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

def _project(batch: pa.RecordBatch, columns: Sequence[str] | None) -> pa.RecordBatch:
    if columns is None:
        return batch
    names = [c for c in columns if c in batch.schema.names]
    return batch.select(names)


def _rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Re-cuts a stream of batches into batches of `rows` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for b in batches:
        while b.num_rows:
            take = min(rows - have, b.num_rows)
            pending.append(b.slice(0, take))
            have += take
            b = b.slice(take)
            if have == rows:
                yield _concat(pending)
                pending, have = [], 0
    if have:
        yield _concat(pending)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _binary_to_string(batch: pa.RecordBatch) -> pa.RecordBatch:
    """tf.Example bytes features as strings when they are UTF-8 (they nearly always are)."""
    arrays, fields = [], []
    for field, arr in zip(batch.schema, batch.columns):
        t = field.type
        target = None
        if pa.types.is_large_list(t) and pa.types.is_large_binary(t.value_type):
            target = pa.large_list(pa.large_string())
        elif pa.types.is_list(t) and pa.types.is_binary(t.value_type):
            target = pa.list_(pa.string())
        if target is not None:
            try:
                arr = arr.cast(target)
                field = field.with_type(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        arrays.append(arr)
        fields.append(field)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _read_file(path: str, fmt: str, columns: Sequence[str] | None,
               rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of a whole CSV / JSONL / TFRecord file, in order. A read error names the row (and
    for text, the line) it happened at (`UnreadableFileError`)."""
    if fmt == 'csv':
        import pyarrow.csv as pcsv
        convert = pcsv.ConvertOptions(include_columns=list(columns)) if columns else None
        yield from _rechunk(_text_batches(path, fmt, lambda f: pcsv.open_csv(
            f, read_options=pcsv.ReadOptions(block_size=_TEXT_BLOCK_BYTES),
            convert_options=convert)), rows)
    elif fmt == 'jsonl':
        import pyarrow.json as pjson
        yield from _rechunk((_project(b, columns) for b in _text_batches(
            path, fmt, lambda f: pjson.open_json(f, read_options=pjson.ReadOptions(
                block_size=_TEXT_BLOCK_BYTES)))), rows)
    elif fmt == 'tfrecord':
        yield from _tfrecord_batches(path, columns, rows)
    else:
        raise ValueError('unknown format %r' % fmt)


# -- Text formats: rows are records (CSV: data rows after the header); blank lines are not rows.

def _text_batches(path: str, fmt: str, open_reader: Callable[[Any], Iterable[pa.RecordBatch]]
                  ) -> Iterator[pa.RecordBatch]:
    """A streaming CSV / JSONL reader's batches (one per block), counting their rows so that a
    read error can be placed in the file, not in the block that failed."""
    done = 0  # rows of the blocks read: the failing block's first row
    try:
        with _open(path) as f:
            for batch in open_reader(f):
                yield batch
                done += batch.num_rows
    except FileNotFoundError:
        raise
    except _READ_ERRORS as e:
        raise _text_error(path, fmt, e, done) from e


def _text_error(path: str, fmt: str, e: BaseException, block_row: int) -> UnreadableFileError:
    """The error for a text block that failed, at the exact row and line when the reader's message
    says which (else "from the block's first row on")."""
    try:
        found = _locate_text_row(path, fmt, str(e), block_row)
    except _READ_ERRORS:
        found = None
    if found is None:
        return _unreadable(path, fmt, e, block_row, exact=False)
    return _unreadable(path, fmt, e, *found)


def _locate_text_row(path: str, fmt: str, message: str, block_row: int
                     ) -> tuple[int, int] | None:
    """(row, 1-based line) of the record a CSV / JSONL read error is about, or None.

    JSONL: Arrow names the row within the block ("... in row N"). CSV: Arrow names no row, but the
    expected field count ("Expected N columns, got M") or the column and value that did not
    convert ("In CSV column #k: ... invalid value 'v'"); the first record of the block on that
    fits is it. Runs on the error path only (a scan of the file's lines up to that record)."""
    if fmt == 'jsonl':
        m = re.search(r' in row (\d+)$', message)
        if m is None:
            return None
        target = block_row + int(m.group(1))
        return _scan_records(path, fmt, target, lambda fields: True)
    m = re.search(r'Expected (\d+) columns, got \d+', message)
    if m is not None:
        width = int(m.group(1))
        return _scan_records(path, fmt, block_row, lambda fields: len(fields) != width)
    m = re.search(r"In CSV column #(\d+): CSV conversion error to .*: invalid value '(.*)'$",
                  message, re.S)
    if m is not None:
        k, value = int(m.group(1)), m.group(2)
        return _scan_records(path, fmt, block_row,
                             lambda fields: len(fields) > k and fields[k] == value)
    return None


def _scan_records(path: str, fmt: str, start: int, is_it: Callable[[list[str]], bool]
                  ) -> tuple[int, int] | None:
    """(row, line) of the first record from row `start` on for which `is_it(fields)` (CSV: the
    record's cells; JSONL: [the line]), or None."""
    import csv
    row = -1 if fmt == 'csv' else 0  # a CSV's first record is its header
    for line, raw in enumerate(_lines(path), 1):
        text = raw.decode('utf-8', 'replace').rstrip('\r')
        if not text.strip():
            continue
        if row >= start:
            fields = next(csv.reader([text])) if fmt == 'csv' else [text]
            if is_it(fields):
                return row, line
        row += 1
    return None


def _lines(path: str) -> Iterator[bytes]:
    """The file's lines (without their '\n'), decompressed."""
    with _open(path) as f:
        rest = b''
        while True:
            chunk = f.read(_TEXT_BLOCK_BYTES)
            if not chunk:
                break
            lines = (rest + chunk).split(b'\n')
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


# -- TFRecord: rows are records.

def _tfrecord_batches(path: str, columns: Sequence[str] | None,
                      rows: int) -> Iterator[pa.RecordBatch]:
    from tfx_bsl.coders import example_coder
    decoder = example_coder.ExamplesToRecordBatchDecoder()
    first = 0
    chunk: list[bytes] = []
    with _open(path) as f:
        for record in _tfrecord_records(path, f):
            chunk.append(record)
            if len(chunk) == rows:
                yield _binary_to_string(_project(_decode(decoder, chunk, path, first), columns))
                first += len(chunk)
                chunk = []
    if chunk:
        yield _binary_to_string(_project(_decode(decoder, chunk, path, first), columns))


def _tfrecord_records(path: str, f) -> Iterator[bytes]:
    from apache_beam.io.tfrecordio import _TFRecordUtil
    row = 0
    while True:
        try:
            record = _TFRecordUtil.read_record(f)
        except _READ_ERRORS as e:
            raise _unreadable(path, 'tfrecord', e, row) from e
        if record is None:
            return
        yield record
        row += 1


def _decode(decoder: Any, records: list[bytes], path: str, first: int) -> pa.RecordBatch:
    """tf.Examples `records` (rows first ...) as a batch; an error names the first record that
    cannot be decoded with the ones before it (a binary search over prefixes: error path only)."""
    try:
        return decoder.DecodeBatch(records)
    except _READ_ERRORS as e:
        ok, bad = 0, len(records)  # records[:ok] decode, records[:bad] do not
        while bad - ok > 1:
            mid = (ok + bad) // 2
            try:
                decoder.DecodeBatch(records[:mid])
                ok = mid
            except _READ_ERRORS:
                bad = mid
        raise _unreadable(path, 'tfrecord', e, first + bad - 1) from e


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
    except _READ_ERRORS as e:
        # Parquet (text and TFRecord readers place their own errors): the rows from the first one
        # not yielded on could not be read; the reader does not say which one failed.
        raise _unreadable(item.path, item.format, e, first, exact=False) from e


def _read_item(item: WorkItem, columns: Sequence[str] | None, rows: int,
               dictionary_columns: Sequence[str]) -> Iterator[SourceBatch]:
    first = item.first_row
    if item.format == 'parquet':
        import pyarrow.parquet as pq
        with _open(item.path, seekable=True) as f:
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
    for batch in _read_file(item.path, item.format, columns, rows):
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
