"""Streaming sources: rows arriving on Pub/Sub, or files appearing under a pattern, as batches.

    p | ReadPubSubBatches(columns, subscription=...)        # JSON messages, one row each
    p | ReadNewFiles(pattern, fmt, columns, interval)       # Beam's MatchContinuously

Both yield `pipeline.elements.SourceBatch`es, the batch path's own elements, for
`pipeline.streaming.EvaluateWindows`. A Pub/Sub message is one JSON object holding the config's
columns; messages are gathered into Arrow record batches of up to `MESSAGES_PER_BATCH` rows
(`JsonMessagesToBatches`, `rows_to_batch`). A newly matched file is planned and read exactly as
in a batch run (`pipeline.sources.plan_file`, `read_item`). Both run on Dataflow; a local
directory is better served by `headstream watch` (`pipeline/watch.py`).
"""
from __future__ import annotations

import datetime
import json
import uuid
from typing import Any, Iterator, Mapping, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Timestamp

from pipeline import sources
from pipeline.elements import SourceBatch

# Pub/Sub messages per Arrow record batch: small, so a pane never waits on a half-full batch.
MESSAGES_PER_BATCH = 1000


def _parse_time(value: Any) -> Any:
    """An ISO 8601 string as a UTC datetime (naive means UTC); numbers pass through as epoch
    seconds; anything unparsable becomes None (then rejected as a null timestamp)."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            t = datetime.datetime.fromisoformat(value.replace('Z', '+00:00'))
        except ValueError:
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        return t.astimezone(datetime.timezone.utc)
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, (int, float)):
        return 'number'
    return type(value).__name__


def _column_array(values: list, name: str, time_column: str | None) -> pa.Array:
    """One column of JSON values as Arrow.

    Event times: ISO strings become timestamp[us, UTC] (with them, numbers are read as epoch
    seconds too). Values that do not share the first value's kind (number, string, bool, list) or
    Arrow type become null, so `ApplyHeads` rejects their rows by column; a column with no value
    at all is a float64 column of nulls (rejected the same way).
    """
    if name == time_column:
        parsed = [_parse_time(v) for v in values]
        if any(isinstance(v, datetime.datetime) for v in parsed):
            parsed = [v if isinstance(v, datetime.datetime) or v is None else
                      datetime.datetime.fromtimestamp(v, datetime.timezone.utc)
                      for v in parsed]
            return pa.array(parsed, pa.timestamp('us', tz='UTC'))
        values = parsed
    errors = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError)
    present = [v for v in values if v is not None]
    if not present:
        return pa.nulls(len(values), pa.float64())
    try:
        return pa.array(values)
    except errors:
        pass
    kind = _kind(present[0])
    kept = [v if v is not None and _kind(v) == kind else None for v in values]
    try:
        return pa.array(kept)
    except errors:
        pass
    first_type = pa.array([present[0]]).type

    def fits(v: Any) -> bool:
        try:
            return pa.array([present[0], v]).type == first_type
        except errors:
            return False

    try:
        return pa.array([v if v is not None and fits(v) else None for v in kept], first_type)
    except errors:
        return pa.nulls(len(values), first_type)  # every row of this column is rejected


def rows_to_batch(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                  time_column: str | None = None) -> pa.RecordBatch:
    """JSON rows (dicts) → one Arrow record batch with exactly `columns` (missing keys are null)."""
    arrays = [_column_array([r.get(c) for r in rows], c, time_column) for c in columns]
    return pa.RecordBatch.from_arrays(arrays, names=list(columns))


class JsonMessagesToBatches(beam.DoFn):
    """Pub/Sub payloads (one JSON object per message, with the config's columns) → `SourceBatch`es
    of up to `MESSAGES_PER_BATCH` rows, flushed at least once per bundle.

    A payload that is not a JSON object becomes a row of nulls, which `ApplyHeads` then rejects
    naming the row's column (so it reaches errors/ in dead_letter mode). The event-time column may
    hold epoch seconds or ISO 8601 strings ("2026-11-01T00:00:09Z"; without an offset, UTC).
    """

    def __init__(self, source: str, columns: Sequence[str], time_column: str | None = None):
        self._source = source
        self._columns = list(columns)
        self._time_column = time_column

    def start_bundle(self) -> None:
        self._rows: list[dict] = []
        self._min_ts: Timestamp | None = None
        self._batches = 0

    def process(self, payload: bytes, timestamp=beam.DoFn.TimestampParam) -> Iterator[Any]:
        try:
            row = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            row = None
        if not isinstance(row, dict):
            row = {}
        self._rows.append(row)
        if self._min_ts is None or timestamp < self._min_ts:
            self._min_ts = timestamp
        if len(self._rows) >= MESSAGES_PER_BATCH:
            yield beam_window.TimestampedValue(self._batch(), self._min_ts)
            self._rows, self._min_ts = [], None

    def _batch(self) -> SourceBatch:
        self._batches += 1
        name = '%s (batch %s-%d)' % (self._source, uuid.uuid4().hex[:8], self._batches)
        return SourceBatch(name, 0, rows_to_batch(self._rows, self._columns,
                                                          self._time_column))

    def finish_bundle(self) -> Iterator[Any]:
        from apache_beam.utils.windowed_value import WindowedValue
        if self._rows:
            yield WindowedValue(self._batch(), self._min_ts, [beam_window.GlobalWindow()])
            self._rows, self._min_ts = [], None


class ReadPubSubBatches(beam.PTransform):
    """Pub/Sub subscription or topic → `SourceBatch`es (see `JsonMessagesToBatches`)."""

    def __init__(self, columns: Sequence[str], subscription: str | None = None,
                 topic: str | None = None, timestamp_attribute: str | None = None,
                 time_column: str | None = None):
        super().__init__()
        self._columns = list(columns)
        self._time_column = time_column
        self._subscription = subscription
        self._topic = topic
        self._timestamp_attribute = timestamp_attribute

    def expand(self, pbegin):
        source = 'pubsub:%s' % (self._subscription or self._topic)
        return (pbegin
                | 'ReadPubSub' >> beam.io.ReadFromPubSub(
                    topic=self._topic, subscription=self._subscription,
                    timestamp_attribute=self._timestamp_attribute)
                | 'ToBatches' >> beam.ParDo(JsonMessagesToBatches(source, self._columns,
                                                                 self._time_column)))


class _ReadNewFile(beam.DoFn):
    """A newly matched file → its `SourceBatch`es (the batch path's planning and reading)."""

    def __init__(self, fmt: str, columns: Sequence[str]):
        self._fmt = fmt
        self._columns = list(columns)

    def process(self, path: str) -> Iterator[SourceBatch]:
        for item in sources.plan_file(path, self._fmt):
            yield from sources.read_item(item, self._columns)


class ReadNewFiles(beam.PTransform):
    """Files matching `pattern` as they appear (Beam's MatchContinuously; Dataflow) → batches."""

    def __init__(self, pattern: str, fmt: str, columns: Sequence[str], interval: float):
        super().__init__()
        self._pattern = pattern
        self._fmt = fmt
        self._columns = list(columns)
        self._interval = interval

    def expand(self, pbegin):
        from apache_beam.io import fileio
        return (pbegin
                | 'Match' >> fileio.MatchContinuously(self._pattern, interval=self._interval)
                | 'Path' >> beam.Map(lambda m: m.path)
                | 'Spread' >> beam.Reshuffle()
                | 'Read' >> beam.ParDo(_ReadNewFile(self._fmt, self._columns)))

