"""`headstream watch`: windowed evaluation of shards as they arrive in a directory.

    headstream watch --config eval.yaml [--output DIR] [--poll SECONDS] [--settle SECONDS] [--once]

A loop that needs no streaming runner. Every poll matches the config's `input.pattern`; each file
not read before is evaluated, once it is complete, as a small batch (the batch path's reader and
`ApplyHeads`, so rows, bad records and window keys are exactly the batch run's), its
per-(slice, head, window) states are merged into the running states, and the affected windows'
tables are rewritten. Since the states are mergeable, a window's rows always equal a batch
evaluation of every row of that window read so far: each pane accumulates.

Files are never read half and never counted twice:

* complete: a file is read once its size and modification time (gs://: the object's size and
  update time) are the same on two polls at least `--settle` seconds apart (default 2 s); a file
  still being copied keeps changing and waits. A file that changed while it was read is read again
  once stable.
* unreadable (e.g. a Parquet file without its footer yet): one warning per attempt naming the file
  and the reason; it is tried again at the next polls, and after `MAX_READ_ATTEMPTS` attempts on
  the same content it is reported as unreadable (an error line, and in the state) and left out
  until its size or time changes again.
* changed after it was read: an error line naming the file; its new content is not counted (the
  windows keep the rows read before) and it is reported as changed after read. A new version of a
  shard needs a new name.

Pane timing follows a watermark derived from the data: the largest event time seen minus
`window.allowed_lateness`. A window whose end the watermark has not reached gets `early` panes;
the first pane after the watermark passes its end is `on_time` (written even when no new row
arrived for it); later panes are `late`. No row is ever dropped: a row arriving for a window that
already fired on time produces a `late` pane that includes it.

Files (under `output`; the same layout as `headstream evaluate --streaming`):
  metrics/window-<start>.parquet, plots/window-<start>.parquet       each window's latest pane
  panes/metrics/window-<start>-pane-<index>.parquet, panes/plots/...  every pane
  errors/errors-<file>.parquet                                        rejected rows (dead_letter)
  _watch/state.npz                                                    the running state (below)

The state file is data only, never a pickle (whoever can write the output directory must not be
able to run code in the watcher): an `.npz` (numpy's zip of arrays, read with
`allow_pickle=False`) holding `meta` (UTF-8 JSON: the files read with their size and time, files
waiting or unreadable or changed, the watermark, pane counters and each state's key and head) and
each state's numbers (`heads.state.state_arrays`). States are rebuilt from the config's heads,
so no class is named by the file. An older `_watch/state.pkl` is refused, never loaded.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import decimal
import hashlib
import io
import json
import logging
import os
import time
import uuid
import zipfile
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from heads import state as head_states
from pipeline import config as config_lib
from pipeline import sources
from pipeline import streaming
from pipeline.apply import (ERRORS_TAG, STATS_TAG, ApplyHeads, BadRecordError, Key,
                            epoch_micros)
from pipeline.results import state_result
from pipeline.writers import parquet as parquet_writer

STATE_FILE = '_watch/state.npz'
OLD_STATE_FILE = '_watch/state.pkl'  # pickles of older versions: refused, never loaded
STATE_FORMAT = 'headstream-watch-state'
STATE_VERSION = 1
DEFAULT_POLL_S = 10.0
DEFAULT_SETTLE_S = 2.0
MAX_READ_ATTEMPTS = 5
_log = logging.getLogger(__name__)
_clock = time.time  # wall-clock seconds: sightings are compared across restarts
_sleep = time.sleep


class FileStat(NamedTuple):
    """What tells a file's versions apart: size and modification (gs://: update) time."""
    size: int
    mtime: float


class Sighting(NamedTuple):
    """A file not read yet: its stat, and since when it has had it."""
    stat: FileStat
    since: float


class Trouble(NamedTuple):
    """A file left out: its stat when that was decided, and why."""
    stat: FileStat
    reason: str


@dataclasses.dataclass
class WatchState:
    """What the loop keeps between polls (saved at `<output>/_watch/state.npz`).

    Attributes:
      run_id: stamped on every row the loop writes.
      files: the files already evaluated, in order.
      stats: each evaluated file's stat when it was read.
      waiting: files not read yet: their stat and since when it is unchanged.
      attempts: files that could not be read: failed attempts on their current content.
      unreadable: files given up after `MAX_READ_ATTEMPTS` attempts (tried again if they change).
      changed: files that changed after they were read (their new content is not counted).
      states: (slice columns, slice values, head, window start, step) → head state.
      max_event_us: the largest event time seen (µs since the epoch), None before any row.
      pane_index: window start → index of the window's next pane.
      on_time_fired: window starts whose on-time pane has been written.
      dirty: window starts whose tables must be (re)written (kept across a crash).
    """
    run_id: str
    files: list[str] = dataclasses.field(default_factory=list)
    stats: dict[str, FileStat] = dataclasses.field(default_factory=dict)
    waiting: dict[str, Sighting] = dataclasses.field(default_factory=dict)
    attempts: dict[str, int] = dataclasses.field(default_factory=dict)
    unreadable: dict[str, Trouble] = dataclasses.field(default_factory=dict)
    changed: dict[str, Trouble] = dataclasses.field(default_factory=dict)
    states: dict[tuple, Any] = dataclasses.field(default_factory=dict)
    max_event_us: int | None = None
    pane_index: dict[int, int] = dataclasses.field(default_factory=dict)
    on_time_fired: set[int] = dataclasses.field(default_factory=set)
    dirty: set[int] = dataclasses.field(default_factory=set)

    def problems(self) -> list[str]:
        """One line per file left out (unreadable, or changed after it was read)."""
        return (['unreadable, not counted: %s (%s)' % (p, t.reason)
                 for p, t in sorted(self.unreadable.items())]
                + ['changed after it was read, new content not counted: %s (%s)' % (p, t.reason)
                   for p, t in sorted(self.changed.items())])


# -------------------------------------------------------------------------------------------------
# The state file: JSON metadata and the states' arrays in one .npz, never a pickle.
# -------------------------------------------------------------------------------------------------

_TAGGED = {  # slice values JSON has no type for: tag → (type, encode, decode)
    'bytes': (bytes, lambda v: base64.b64encode(v).decode('ascii'), base64.b64decode),
    'datetime': (datetime.datetime, datetime.datetime.isoformat,
                 datetime.datetime.fromisoformat),
    'date': (datetime.date, datetime.date.isoformat, datetime.date.fromisoformat),
    'decimal': (decimal.Decimal, str, decimal.Decimal),
}


def _encode_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    for tag, (kind, encode, _) in _TAGGED.items():  # datetime before date: it is a date too
        if isinstance(value, kind):
            return {tag: encode(value)}
    raise config_lib.ConfigError('slices: a slice value of type %s cannot be kept in the watch '
                                 'state: %r' % (type(value).__name__, value))


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        ((tag, text),) = value.items()
        return _TAGGED[tag][2](text)
    return value


def _encode_key(key: tuple) -> list:
    k = Key(*key)
    return [list(k.slice_columns), [_encode_value(v) for v in k.slice_values], k.head,
            k.window_start, k.step]


def _decode_key(entry: list) -> Key:
    columns, values, head, window_start, step = entry
    return Key(tuple(columns), tuple(_decode_value(v) for v in values), int(head),
               window_start, step)


def _meta(state: WatchState) -> dict[str, Any]:
    return {
        'format': STATE_FORMAT, 'version': STATE_VERSION, 'run_id': state.run_id,
        'files': [[p, *state.stats[p]] for p in state.files],
        'waiting': [[p, *s.stat, s.since] for p, s in state.waiting.items()],
        'attempts': state.attempts,
        'unreadable': [[p, *t.stat, t.reason] for p, t in state.unreadable.items()],
        'changed': [[p, *t.stat, t.reason] for p, t in state.changed.items()],
        'max_event_us': state.max_event_us,
        'pane_index': [[s, i] for s, i in state.pane_index.items()],
        'on_time_fired': sorted(state.on_time_fired), 'dirty': sorted(state.dirty),
        'states': [{'key': _encode_key(k), 'class': type(s).__name__,
                    'signature': repr(s.signature)} for k, s in state.states.items()],
    }


def state_bytes(state: WatchState) -> bytes:
    """The state as an .npz: `meta` (UTF-8 JSON) and `<i>/<path>`, the arrays of state i."""
    arrays = {'meta': np.frombuffer(json.dumps(_meta(state)).encode('utf-8'), np.uint8)}
    for i, s in enumerate(state.states.values()):
        for name, a in head_states.state_arrays(s).items():
            arrays['%d/%s' % (i, name)] = a
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _troubles(rows: list) -> dict[str, Trouble]:
    return {p: Trouble(FileStat(size, mtime), reason) for p, size, mtime, reason in rows}


def _state_from_meta(meta: dict[str, Any]) -> WatchState:
    if meta.get('format') != STATE_FORMAT or meta.get('version') != STATE_VERSION:
        raise ValueError('not a %s of version %d' % (STATE_FORMAT, STATE_VERSION))
    return WatchState(
        run_id=str(meta['run_id']),
        files=[p for p, _, _ in meta['files']],
        stats={p: FileStat(size, mtime) for p, size, mtime in meta['files']},
        waiting={p: Sighting(FileStat(size, mtime), since)
                 for p, size, mtime, since in meta['waiting']},
        attempts={p: int(n) for p, n in meta['attempts'].items()},
        unreadable=_troubles(meta['unreadable']), changed=_troubles(meta['changed']),
        max_event_us=meta['max_event_us'],
        pane_index={int(s): int(i) for s, i in meta['pane_index']},
        on_time_fired=set(meta['on_time_fired']), dirty=set(meta['dirty']))


def _load_states(entries: list[dict], npz: Any, heads: Sequence[Any]) -> dict[tuple, Any]:
    """Each saved state filled into a fresh state of the config's head (the file names no class;
    a state of another head configuration is refused)."""
    by_state: dict[str, dict[str, np.ndarray]] = {}
    for name in npz.files:
        if name != 'meta':
            i, _, path = name.partition('/')
            by_state.setdefault(i, {})[path] = npz[name]
    states: dict[tuple, Any] = {}
    for i, entry in enumerate(entries):
        key = _decode_key(entry['key'])
        fresh = heads[key.head].new_state()
        if entry['class'] != type(fresh).__name__ or entry['signature'] != repr(fresh.signature):
            raise ValueError('its state of head %d is a %s of %s; the config now makes a %s of %s'
                             % (key.head, entry['class'], entry['signature'],
                                type(fresh).__name__, repr(fresh.signature)))
        states[key] = head_states.load_state_arrays(fresh, by_state.get(str(i), {}))
    return states


def parse_state(data: bytes, heads: Sequence[Any]) -> WatchState:
    """A state from `state_bytes` (numpy reads it with allow_pickle=False).

    Raises:
      ValueError (or KeyError, zipfile.BadZipFile): the data is not such a state.
    """
    npz = np.load(io.BytesIO(data), allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError('not an .npz archive')
    with npz:
        meta = json.loads(npz['meta'].tobytes().decode('utf-8'))
        state = _state_from_meta(meta)
        state.states = _load_states(meta['states'], npz, heads)
    return state


def load_state(config: config_lib.EvalConfig) -> WatchState | None:
    """The saved state under `config.output`, or None when there is none yet.

    Raises:
      ConfigError: naming the file, when it is not a watch state of this config's heads, or when
        only an older pickled state is there (never loaded: a pickle can run code).
    """
    from apache_beam.io.filesystems import FileSystems
    path = parquet_writer.join(config.output, STATE_FILE)
    if not FileSystems.exists(path):
        old = parquet_writer.join(config.output, OLD_STATE_FILE)
        if FileSystems.exists(old):
            raise config_lib.ConfigError(
                '%s: a pickled watch state (older headstream) is never loaded, as a pickle can '
                'run code; delete it to start the windows afresh, or use a new output' % old)
        return None
    with FileSystems.open(path) as f:
        data = f.read()
    try:
        return parse_state(data, config.build_heads())
    except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile,
            UnicodeDecodeError) as e:
        raise config_lib.ConfigError(
            '%s: not a watch state of this config (%s: %s); delete it to start afresh'
            % (path, type(e).__name__, e)) from None


def save_state(output: str, state: WatchState) -> None:
    """Writes the state atomically (temporary name, then rename)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    path = parquet_writer.join(output, STATE_FILE)
    local = '://' not in path
    if local:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = '%s.tmp-%s' % (path, uuid.uuid4().hex[:12])
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(state_bytes(state))
    if local:
        os.replace(tmp, path)  # atomic: the old state or the new one, never neither
        return
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


class _Ignore:
    """A problem collector for reading event times only (ApplyHeads reports the bad rows)."""

    def __init__(self, n: int):
        self.bad = np.zeros(n, bool)

    def add(self, column: str, reason: str, mask: np.ndarray) -> None:
        self.bad |= np.asarray(mask, bool).reshape(self.bad.size, -1).any(axis=1)


# -------------------------------------------------------------------------------------------------
# Which files to read: complete ones, once; trouble reported, never silent.
# -------------------------------------------------------------------------------------------------

def _list_files(pattern: str) -> dict[str, FileStat]:
    """path → stat of the files the pattern matches now (an empty or missing directory: none)."""
    try:
        found = sources.match_metadata(pattern)
    except config_lib.ConfigError:
        return {}
    return {m.path: FileStat(int(m.size_in_bytes), float(m.last_updated_in_seconds))
            for m in found}


def _one_line(e: BaseException) -> str:
    return ' '.join(str(e).split()) or type(e).__name__


def _describe_change(was: FileStat, now: FileStat) -> str:
    return 'size %d -> %d bytes, modified %s -> %s' % (
        was.size, now.size, _utc(was.mtime), _utc(now.mtime))


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


def _report_changed(state: WatchState, listing: dict[str, FileStat]) -> None:
    """An error line for each file read before whose size or time has changed since (once per
    change); its new content is not counted."""
    for path, stat in listing.items():
        was, reported = state.stats.get(path), state.changed.get(path)
        if was is None or stat == was or (reported is not None and reported.stat == stat):
            continue
        reason = _describe_change(was, stat)
        state.changed[path] = Trouble(stat, reason)
        _log.error('headstream watch: %s changed after it was read (%s); its new content is not '
                   'counted, the windows keep the rows read before -- give a new version a new '
                   'name', path, reason)


def sight(state: WatchState, listing: dict[str, FileStat], now: float) -> set[str]:
    """Notes the stat of every file not read yet; returns those first seen with this stat now
    (new, or changed since the last poll: not complete yet). A given-up file that changed is
    tried afresh."""
    for path in [p for p in state.waiting if p not in listing]:  # removed before it was read
        del state.waiting[path]
        state.attempts.pop(path, None)
    fresh = set()
    for path, stat in listing.items():
        if path in state.stats:
            continue
        trouble = state.unreadable.get(path)
        if trouble is not None and trouble.stat == stat:
            continue
        state.unreadable.pop(path, None)
        seen = state.waiting.get(path)
        if seen is None or seen.stat != stat:
            if seen is not None:
                state.attempts.pop(path, None)  # new content: new attempts
            state.waiting[path] = Sighting(stat, now)
            fresh.add(path)
    return fresh


def complete_files(state: WatchState, listing: dict[str, FileStat], now: float,
                   settle: float) -> list[str]:
    """The files to read now: not read yet, and of the same size and time on two polls at least
    `settle` seconds apart (this poll included)."""
    fresh = sight(state, listing, now)
    ready = [p for p, s in state.waiting.items()
             if p not in fresh and now - s.since >= settle]
    for path in sorted(fresh):
        _log.info('headstream watch: %s is new or changed: read once unchanged for %g s',
                  path, settle)
    return sorted(ready)


def _failed_attempt(state: WatchState, path: str, error: BaseException) -> None:
    """A warning per attempt; after `MAX_READ_ATTEMPTS` on the same content, an error and the
    file is reported unreadable (tried again only if it changes)."""
    n = state.attempts.get(path, 0) + 1
    reason = _one_line(error)
    if n < MAX_READ_ATTEMPTS:
        state.attempts[path] = n
        _log.warning('headstream watch: %s not read (attempt %d of %d, tried again at the next '
                     'poll): %s', path, n, MAX_READ_ATTEMPTS, reason)
        return
    state.attempts.pop(path, None)
    sighting = state.waiting.pop(path)
    state.unreadable[path] = Trouble(sighting.stat, reason)
    _log.error('headstream watch: %s is unreadable after %d attempts and is not counted (tried '
               'again if it changes): %s', path, n, reason)


def evaluate_file(config: config_lib.EvalConfig, apply: ApplyHeads, path: str
                  ) -> tuple[dict[tuple, Any], int | None, list[pa.Table]]:
    """One shard as a small batch: (key → state, largest event time in µs, error tables).

    Raises:
      ConfigError: a column missing or mistyped in this file (naming file and column).
      BadRecordError: with bad_records='fail', naming file, row, column and reason.
    """
    config_lib.check_columns(config, sources.read_schema(path, config.format), path)
    column = config.window.column
    max_us: int | None = None
    errors: list[pa.Table] = []
    states: dict[tuple, Any] = {}
    apply.start_bundle()
    for item in sources.plan_file(path, config.format):
        for sb in sources.read_item(item, config.columns()):
            if sb.batch.num_rows:
                ignore = _Ignore(sb.batch.num_rows)
                micros = epoch_micros(sb.batch.column(column), column, ignore)
                if (~ignore.bad).any():
                    m = int(micros[~ignore.bad].max())
                    max_us = m if max_us is None else max(max_us, m)
            for out in apply.process(sb):
                _collect(out, states, errors)
    for out in apply.finish_bundle():
        _collect(out, states, errors)
    return states, max_us, errors


def _collect(out: Any, states: dict[tuple, Any], errors: list[pa.Table]) -> None:
    """Files one output of ApplyHeads: error tables, or (key, state) pairs — from `process` too,
    which flushes its states when a bundle holds too many keys — merged per key."""
    tag = getattr(out, 'tag', None)
    if tag == ERRORS_TAG:
        errors.append(out.value)
        return
    if tag == STATS_TAG:
        return
    key, state = getattr(out, 'value', out)  # finish_bundle wraps its outputs in WindowedValues
    states[key] = state if key not in states else states[key].merge(state)


def _timing(state: WatchState, start: int, end: int, watermark: int | None) -> str:
    if watermark is None or watermark < end:
        return streaming.EARLY
    return streaming.LATE if start in state.on_time_fired else streaming.ON_TIME


def _window_keys(state: WatchState) -> dict[int, list[tuple]]:
    by_window: dict[int, list[tuple]] = {}
    for key in state.states:
        by_window.setdefault(key[3], []).append(key)
    return by_window


def _bookkeeping(state: WatchState) -> tuple:
    return (dict(state.waiting), dict(state.attempts), dict(state.unreadable),
            dict(state.changed))


def _add_file(config: config_lib.EvalConfig, state: WatchState, path: str, stat: FileStat,
              result: tuple[dict[tuple, Any], int | None, list[pa.Table]]) -> None:
    """Merges one evaluated file into the running states and records it as read."""
    states, max_us, errors = result
    for key, s in states.items():
        old = state.states.get(key)
        state.states[key] = s if old is None else old.merge(s)
        state.dirty.add(key[3])
    if max_us is not None:
        state.max_event_us = (max_us if state.max_event_us is None
                              else max(state.max_event_us, max_us))
    if errors:
        tag = hashlib.sha1(path.encode('utf-8')).hexdigest()[:8]
        stem = os.path.basename(path).split('.')[0] or 'part'
        parquet_writer.write_table(
            pa.concat_tables(errors),
            parquet_writer.join(config.output, 'errors/errors-%s-%s.parquet' % (stem, tag)))
    state.files.append(path)
    state.stats[path] = stat
    state.waiting.pop(path, None)
    state.attempts.pop(path, None)
    _log.info('headstream watch: evaluated %s (%d keys)', path, len(states))


def _read_files(config: config_lib.EvalConfig, state: WatchState, paths: list[str],
                listing: dict[str, FileStat], bad_records: str) -> list[str]:
    """Evaluates each complete file; returns those read. An unreadable one is a failed attempt;
    one that changed while it was read is left waiting (its rows are not merged)."""
    if not paths:
        return []
    apply = ApplyHeads(config, state.run_id, bad_records, precombine=True)
    apply.setup()
    new = []
    for path in paths:
        try:
            result = evaluate_file(config, apply, path)
        except (sources.UnreadableFileError, FileNotFoundError) as e:
            _failed_attempt(state, path, e)
            continue
        after = _list_files(path).get(path)
        if after != listing[path]:
            _log.info('headstream watch: %s changed while it was read; read again once stable',
                      path)
            continue
        _add_file(config, state, path, listing[path], result)
        new.append(path)
    return new


def poll_once(config: config_lib.EvalConfig, state: WatchState, bad_records: str = 'fail',
              settle: float = DEFAULT_SETTLE_S) -> list[dict]:
    """Evaluates every new complete file and rewrites the affected windows; returns one summary
    per pane written (`streaming.write_pane`'s, plus 'files': the new files)."""
    before = _bookkeeping(state)
    listing = _list_files(config.pattern)
    _report_changed(state, listing)
    ready = complete_files(state, listing, _clock(), settle)
    new = _read_files(config, state, ready, listing, bad_records)
    size_us = int(round(config.window.size * 1e6))
    watermark = (None if state.max_event_us is None
                 else state.max_event_us - int(round(config.window.allowed_lateness * 1e6)))
    by_window = _window_keys(state)
    if watermark is not None:
        for start in by_window:  # windows the watermark has just passed fire on time
            if start + size_us <= watermark and start not in state.on_time_fired:
                state.dirty.add(start)
    if not new and not state.dirty and _bookkeeping(state) == before:
        return []
    # Saved before writing: a crash in between leaves the windows dirty for the next start.
    save_state(config.output, state)
    written = []
    names = list(config.head_names)
    for start in sorted(state.dirty):
        timing = _timing(state, start, start + size_us, watermark)
        index = state.pane_index.get(start, 0)
        results = [state_result(k, state.states[k], names)
                   for k in sorted(by_window.get(start, []), key=repr)]
        summary = streaming.write_pane(config, results, state.run_id, start, timing, index)
        summary['files'] = new
        written.append(summary)
        state.pane_index[start] = index + 1
        if timing == streaming.ON_TIME:
            state.on_time_fired.add(start)
        _log.info('headstream watch: window %s pane %d (%s)', streaming.window_tag(start),
                  index, timing)
    state.dirty.clear()
    if written:
        save_state(config.output, state)
    return written


def watch(config: config_lib.EvalConfig, poll: float = DEFAULT_POLL_S, once: bool = False,
          bad_records: str = 'fail', max_polls: int | None = None,
          settle: float = DEFAULT_SETTLE_S) -> Iterator[list[dict]]:
    """Polls forever (or once, or `max_polls` times); yields each poll's pane summaries.

    Before the first poll the files are sighted once and, if any is new, the loop waits `settle`
    seconds: so `once` reads every file that is complete (unchanged meanwhile).

    Raises:
      ConfigError: no `window:` or no output, or a state file that is not a watch state.
    """
    if config.window is None:
        raise config_lib.ConfigError('window: headstream watch needs `window:` '
                                     '(column and size)')
    if not config.output:
        raise config_lib.ConfigError('output: missing; set `output:` or pass --output')
    if bad_records not in ('fail', 'dead_letter'):
        raise config_lib.ConfigError('--bad_records: %r is not fail or dead_letter'
                                     % bad_records)
    state = load_state(config)
    if state is None:
        from pipeline.run import new_run_id
        state = WatchState(run_id=new_run_id())
    if sight(state, _list_files(config.pattern), _clock()):
        _sleep(settle)
    polls = 0
    while True:
        yield poll_once(config, state, bad_records, settle)
        polls += 1
        if once or (max_polls is not None and polls >= max_polls):
            for line in state.problems():
                _log.warning('headstream watch: %s', line)
            return
        _sleep(poll)


def parser() -> argparse.ArgumentParser:
    """`headstream watch` flags."""
    p = argparse.ArgumentParser(
        prog='headstream watch', allow_abbrev=False,  # flags as the start-up reads them
        description='Evaluate shards as they arrive under input.pattern, per event-time window.')
    p.add_argument('--config', required=True, help='the evaluation config (YAML/JSON path)')
    p.add_argument('--output', default=None, help='overrides the config\'s output')
    p.add_argument('--poll', type=float, default=DEFAULT_POLL_S,
                   help='seconds between polls (default %(default)s)')
    p.add_argument('--settle', type=float, default=DEFAULT_SETTLE_S,
                   help='a file is read once its size and time are unchanged on two polls at '
                        'least this many seconds apart (default %(default)s)')
    p.add_argument('--once', action='store_true',
                   help='evaluate what is complete now, write the windows, and exit')
    p.add_argument('--max_polls', type=int, default=None, help='stop after this many polls')
    p.add_argument('--bad_records', choices=('fail', 'dead_letter'), default='fail')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`headstream watch` entry point; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        config = config_lib.load_config(args.config, output=args.output)
        if not config.output:
            raise config_lib.ConfigError('output: missing; set `output:` or pass --output')
        for panes in watch(config, args.poll, args.once, args.bad_records, args.max_polls,
                           args.settle):
            for s in panes:
                print('window %s pane %d %-7s %d metric rows' % (
                    streaming.window_tag(s['window_start']), s['pane_index'], s['pane'],
                    s['metrics_rows']), flush=True)
    except (config_lib.ConfigError, BadRecordError) as e:
        print('headstream watch: error: %s' % e, flush=True)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == '__main__':  # pragma: no cover
    raise SystemExit(main())
