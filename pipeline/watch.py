"""`headstream watch`: windowed evaluation of shards as they arrive in a directory.

    headstream watch --config eval.yaml [--output DIR] [--poll SECONDS] [--once]

A loop that needs no streaming runner. Every poll matches the config's `input.pattern`; each file
not seen before is evaluated as a small batch (the batch path's reader and `ApplyHeads`, so rows,
bad records and window keys are exactly the batch run's), its per-(slice, head, window) states are
merged into the running states, and the affected windows' tables are rewritten. Since the states
are mergeable, a window's rows always equal a batch evaluation of every row of that window seen so
far: each pane accumulates.

Pane timing follows a watermark derived from the data: the largest event time seen minus
`window.allowed_lateness`. A window whose end the watermark has not reached gets `early` panes;
the first pane after the watermark passes its end is `on_time` (written even when no new row
arrived for it); later panes are `late`. No row is ever dropped: a row arriving for a window that
already fired on time produces a `late` pane that includes it.

Files (under `output`; the same layout as `headstream evaluate --streaming`):
  metrics/window-<start>.parquet, plots/window-<start>.parquet       each window's latest pane
  panes/metrics/window-<start>-pane-<index>.parquet, panes/plots/...  every pane
  errors/errors-<file>.parquet                                        rejected rows (dead_letter)
  _watch/state.pkl                                                    the running states: files
                                                                      seen, states, watermark

Shards should appear atomically (written elsewhere, then moved into the directory), as the
files a pattern matches are read once.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import pickle
import time
import uuid
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from pipeline import config as config_lib
from pipeline import sources
from pipeline import streaming
from pipeline.apply import ERRORS_TAG, STATS_TAG, ApplyHeads, BadRecordError, epoch_micros
from pipeline.results import state_result
from pipeline.writers import parquet as parquet_writer

STATE_FILE = '_watch/state.pkl'
DEFAULT_POLL_S = 10.0
_log = logging.getLogger(__name__)


@dataclasses.dataclass
class WatchState:
    """What the loop keeps between polls (pickled at `<output>/_watch/state.pkl`).

    Attributes:
      run_id: stamped on every row the loop writes.
      files: the files already evaluated.
      states: (slice columns, slice values, head, window start, step) → head state.
      max_event_us: the largest event time seen (µs since the epoch), None before any row.
      pane_index: window start → index of the window's next pane.
      on_time_fired: window starts whose on-time pane has been written.
      dirty: window starts whose tables must be (re)written (kept across a crash).
    """
    run_id: str
    files: list[str] = dataclasses.field(default_factory=list)
    states: dict[tuple, Any] = dataclasses.field(default_factory=dict)
    max_event_us: int | None = None
    pane_index: dict[int, int] = dataclasses.field(default_factory=dict)
    on_time_fired: set[int] = dataclasses.field(default_factory=set)
    dirty: set[int] = dataclasses.field(default_factory=set)


def load_state(output: str) -> WatchState | None:
    """The saved state under `output`, or None when there is none yet."""
    from apache_beam.io.filesystems import FileSystems
    path = parquet_writer.join(output, STATE_FILE)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return pickle.loads(f.read())


def save_state(output: str, state: WatchState) -> None:
    """Writes the state atomically (temporary name, then rename)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
    path = parquet_writer.join(output, STATE_FILE)
    if '://' not in path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = '%s.tmp-%s' % (path, uuid.uuid4().hex[:12])
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


class _Ignore:
    """A problem collector for reading event times only (ApplyHeads reports the bad rows)."""

    def __init__(self, n: int):
        self.bad = np.zeros(n, bool)

    def add(self, column: str, reason: str, mask: np.ndarray) -> None:
        self.bad |= np.asarray(mask, bool).reshape(self.bad.size, -1).any(axis=1)


def _match(pattern: str) -> list[str]:
    try:
        return sources.match_files(pattern)
    except config_lib.ConfigError:  # an empty or missing directory is simply no file yet
        return []


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


def poll_once(config: config_lib.EvalConfig, state: WatchState, bad_records: str = 'fail'
              ) -> list[dict]:
    """Evaluates every new file and rewrites the affected windows; returns one summary per pane
    written (`streaming.write_pane`'s, plus 'files': the new files)."""
    seen = set(state.files)
    new = [f for f in _match(config.pattern) if f not in seen]
    size_us = int(round(config.window.size * 1e6))
    if new:
        apply = ApplyHeads(config, state.run_id, bad_records, precombine=True)
        apply.setup()
        for path in new:
            states, max_us, errors = evaluate_file(config, apply, path)
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
                    parquet_writer.join(config.output, 'errors/errors-%s-%s.parquet'
                                        % (stem, tag)))
            state.files.append(path)
            _log.info('headstream watch: evaluated %s (%d keys)', path, len(states))
    watermark = (None if state.max_event_us is None
                 else state.max_event_us - int(round(config.window.allowed_lateness * 1e6)))
    by_window = _window_keys(state)
    if watermark is not None:
        for start in by_window:  # windows the watermark has just passed fire on time
            if start + size_us <= watermark and start not in state.on_time_fired:
                state.dirty.add(start)
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
    if written or new:
        save_state(config.output, state)
    return written


def watch(config: config_lib.EvalConfig, poll: float = DEFAULT_POLL_S, once: bool = False,
          bad_records: str = 'fail', max_polls: int | None = None) -> Iterator[list[dict]]:
    """Polls forever (or once, or `max_polls` times); yields each poll's pane summaries.

    Raises:
      ConfigError: no `window:` or no output.
    """
    if config.window is None:
        raise config_lib.ConfigError('window: headstream watch needs `window:` '
                                     '(column and size)')
    if not config.output:
        raise config_lib.ConfigError('output: missing; set `output:` or pass --output')
    if bad_records not in ('fail', 'dead_letter'):
        raise config_lib.ConfigError('--bad_records: %r is not fail or dead_letter'
                                     % bad_records)
    state = load_state(config.output)
    if state is None:
        from pipeline.run import new_run_id
        state = WatchState(run_id=new_run_id())
    polls = 0
    while True:
        yield poll_once(config, state, bad_records)
        polls += 1
        if once or (max_polls is not None and polls >= max_polls):
            return
        time.sleep(poll)


def parser() -> argparse.ArgumentParser:
    """`headstream watch` flags."""
    p = argparse.ArgumentParser(
        prog='headstream watch', allow_abbrev=False,  # flags as the start-up reads them
        description='Evaluate shards as they arrive under input.pattern, per event-time window.')
    p.add_argument('--config', required=True, help='the evaluation config (YAML/JSON path)')
    p.add_argument('--output', default=None, help='overrides the config\'s output')
    p.add_argument('--poll', type=float, default=DEFAULT_POLL_S,
                   help='seconds between polls (default %(default)s)')
    p.add_argument('--once', action='store_true',
                   help='evaluate what is there now, write the windows, and exit')
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
        for panes in watch(config, args.poll, args.once, args.bad_records, args.max_polls):
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
