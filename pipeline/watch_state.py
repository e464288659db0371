"""The running state of `headstream watch` and its file, `<output>/_watch/state.npz`.

Owns `WatchState` (the files read, waiting, unreadable or changed; the per-key head states; the
watermark and pane bookkeeping) and its file: read (`load_state`, `parse_state`) and written
atomically (`save_state`, `state_bytes`).

The state file is data only, never a pickle (whoever can write the output directory must not be
able to run code in the watcher): an `.npz` (numpy's zip of arrays, read with
`allow_pickle=False`) holding `meta` (UTF-8 JSON: the files read with their size and time, files
waiting or unreadable or changed, the watermark, pane counters and each state's key and head) and
each state's numbers (`heads.state.state_arrays`). States are rebuilt from the config's heads,
so no class is named by the file. An older `_watch/state.pkl` is refused, never loaded.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import io
import json
import zipfile
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from heads import state as head_states
from pipeline import fileio
from pipeline import config as config_lib
from pipeline.elements import Key

STATE_FILE = '_watch/state.npz'
OLD_STATE_FILE = '_watch/state.pkl'  # pickles of older versions: refused, never loaded
STATE_FORMAT = 'headstream-watch-state'
STATE_VERSION = 1


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
      unreadable: files given up after `watch.MAX_READ_ATTEMPTS` attempts (tried again if they
        change).
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


def _load_states(entries: list[dict], npz: Any, heads: Sequence[Any],
                 new_state: Callable[[Any], Any] | None = None) -> dict[tuple, Any]:
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
        head = heads[key.head]
        fresh = new_state(head) if new_state is not None else head.new_state()
        if entry['class'] != type(fresh).__name__ or entry['signature'] != repr(fresh.signature):
            raise ValueError('its state of head %d is a %s of %s; the config now makes a %s of %s'
                             % (key.head, entry['class'], entry['signature'],
                                type(fresh).__name__, repr(fresh.signature)))
        states[key] = head_states.load_state_arrays(fresh, by_state.get(str(i), {}))
    return states


def parse_state(data: bytes, heads: Sequence[Any],
                new_state: Callable[[Any], Any] | None = None) -> WatchState:
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
        state.states = _load_states(meta['states'], npz, heads, new_state)
    return state


def load_state(config: config_lib.EvalConfig) -> WatchState | None:
    """The saved state under `config.output`, or None when there is none yet.

    Raises:
      ConfigError: naming the file, when it is not a watch state of this config's heads, or when
        only an older pickled state is there (never loaded: a pickle can run code).
    """
    from apache_beam.io.filesystems import FileSystems
    path = fileio.join(config.output, STATE_FILE)
    if not FileSystems.exists(path):
        old = fileio.join(config.output, OLD_STATE_FILE)
        if FileSystems.exists(old):
            raise config_lib.ConfigError(
                '%s: a pickled watch state (older headstream) is never loaded, as a pickle can '
                'run code; delete it to start the windows afresh, or use a new output' % old)
        return None
    with FileSystems.open(path) as f:
        data = f.read()
    try:
        return parse_state(data, config.build_heads(), config.new_state)
    except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile,
            UnicodeDecodeError) as e:
        raise config_lib.ConfigError(
            '%s: not a watch state of this config (%s: %s); delete it to start afresh'
            % (path, type(e).__name__, e)) from None


def save_state(output: str, state: WatchState) -> None:
    """Writes the state atomically (temporary name, then rename)."""
    fileio.write_bytes(fileio.join(output, STATE_FILE), state_bytes(state))

