"""Readers of the input formats: a file in, Arrow record batches out, errors naming the row.

    read_file(path, fmt, columns, rows)   # a whole CSV / JSONL / TFRecord file, in order

Files are opened through Beam's `FileSystems` (`open_file`), so local paths and gs:// behave
alike; CSV, JSONL and TFRecord may be gzipped (`.gz`). TFRecord files hold tf.Examples, decoded
by tfx_bsl without importing TensorFlow (every feature is a list column; UTF-8 bytes features
become strings). Parquet is read by `pipeline.sources` itself (by row groups).

A file that cannot be read raises `UnreadableFileError` in one line naming the file and, when
known, the row (0-based, within the file) and, for text, the 1-based line (`unreadable`): for
CSV and JSONL the failing block's reader message is traced back to its record by a scan of the
file's lines (on the error path only); for TFRecord, by a binary search over the chunk's
records. Blank lines of CSV and JSONL are not records (the readers skip them).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Iterator, Sequence

import pyarrow as pa

_TEXT_BLOCK_BYTES = 16 << 20
_MAX_DETAIL = 300  # characters of a reader's own message kept in ours (one line)

# What a damaged or unreadable file raises inside pyarrow, tfx_bsl or Beam's TFRecord reader.
READ_ERRORS = (pa.ArrowException, OSError, ValueError, RuntimeError, EOFError)


class UnreadableFileError(RuntimeError):
    """A file that cannot be read (corrupt, truncated, not of its format); names the file."""


def unreadable(path: str, fmt: str, e: BaseException, row: int | None = None,
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


def open_file(path: str, seekable: bool = False) -> Any:
    """Opens `path` through Beam's FileSystems; `.gz` files are decompressed unless `seekable`."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    if not seekable and path.lower().endswith('.gz'):
        # pyarrow's own gzip stream: Beam's CompressedFile lacks parts of the file protocol
        # pyarrow's readers need.
        return pa.CompressedInputStream(pa.PythonFile(raw, mode='r'), 'gzip')
    return raw


# -------------------------------------------------------------------------------------------------
# Whole files: CSV, JSONL, TFRecord.
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


def read_file(path: str, fmt: str, columns: Sequence[str] | None,
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
        with open_file(path) as f:
            for batch in open_reader(f):
                yield batch
                done += batch.num_rows
    except FileNotFoundError:
        raise
    except READ_ERRORS as e:
        raise _text_error(path, fmt, e, done) from e


def _text_error(path: str, fmt: str, e: BaseException, block_row: int) -> UnreadableFileError:
    """The error for a text block that failed, at the exact row and line when the reader's message
    says which (else "from the block's first row on")."""
    try:
        found = _locate_text_row(path, fmt, str(e), block_row)
    except READ_ERRORS:
        found = None
    if found is None:
        return unreadable(path, fmt, e, block_row, exact=False)
    return unreadable(path, fmt, e, *found)


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
    with open_file(path) as f:
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
    with open_file(path) as f:
        for record in _tfrecord_records(path, f):
            chunk.append(record)
            if len(chunk) == rows:
                yield _binary_to_string(_project(_decode(decoder, chunk, path, first), columns))
                first += len(chunk)
                chunk = []
    if chunk:
        yield _binary_to_string(_project(_decode(decoder, chunk, path, first), columns))


def _tfrecord_records(path: str, f: Any) -> Iterator[bytes]:
    from apache_beam.io.tfrecordio import _TFRecordUtil
    row = 0
    while True:
        try:
            record = _TFRecordUtil.read_record(f)
        except READ_ERRORS as e:
            raise unreadable(path, 'tfrecord', e, row) from e
        if record is None:
            return
        yield record
        row += 1


def _decode(decoder: Any, records: list[bytes], path: str, first: int) -> pa.RecordBatch:
    """tf.Examples `records` (rows first ...) as a batch; an error names the first record that
    cannot be decoded with the ones before it (a binary search over prefixes: error path only)."""
    try:
        return decoder.DecodeBatch(records)
    except READ_ERRORS as e:
        ok, bad = 0, len(records)  # records[:ok] decode, records[:bad] do not
        while bad - ok > 1:
            mid = (ok + bad) // 2
            try:
                decoder.DecodeBatch(records[:mid])
                ok = mid
            except READ_ERRORS:
                bad = mid
        raise unreadable(path, 'tfrecord', e, first + bad - 1) from e
