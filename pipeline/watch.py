"""`headstream watch`: windowed evaluation of shards as they arrive in a directory.

    headstream watch --config eval.yaml [--output DIR] [--poll SECONDS] [--settle SECONDS] [--once]

A loop that needs no streaming runner. Every poll matches the config's `input.pattern`; each file
not read before is evaluated, once it is complete, as a small batch (the batch path's reader and
`BatchEvaluator`, so rows, bad records and window keys are exactly the batch run's), its
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
  _watch/state.npz                                                    running state (watch_state.py)

This module owns the loop: which files to read (complete ones, once), each file's evaluation
(`evaluate_file`), the panes of the windows it touched (`poll_once`), and the command line.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import logging
import os
import time
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa

from pipeline import fileio
from pipeline import config as config_lib
from pipeline import sources
from pipeline import pane_results
from pipeline.writers import panes as pane_lib
from pipeline.decode import Problems, epoch_micros
from pipeline.elements import BadRecordError
from pipeline.evaluate import BatchEvaluator
from pipeline.results import state_result
from pipeline.watch_state import (FileStat, Sighting, Trouble, WatchState, load_state,
                                  save_state)
from pipeline.writers import parquet as parquet_writer

DEFAULT_POLL_S = 10.0
DEFAULT_SETTLE_S = 2.0
MAX_READ_ATTEMPTS = 5
_log = logging.getLogger(__name__)
_clock = time.time  # wall-clock seconds: sightings are compared across restarts
_sleep = time.sleep


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


def evaluate_file(config: config_lib.EvalConfig, evaluator: BatchEvaluator, path: str
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
    evaluator.start()
    for item in sources.plan_file(path, config.format):
        for sb in sources.read_item(item, config.columns()):
            m = _max_event_us(sb.batch, column)
            if m is not None:
                max_us = m if max_us is None else max(max_us, m)
            out = evaluator.add(sb)
            if out.errors is not None:
                errors.append(out.errors)
            _merge(states, out.keyed)  # states handed on early when a bundle holds many keys
    _merge(states, evaluator.finish().states.items())
    return states, max_us, errors


def _max_event_us(batch: pa.RecordBatch, column: str) -> int | None:
    """The largest valid event time of a batch's rows (µs), whatever else is wrong with them; None
    when there is none (the evaluator reports the bad rows)."""
    if not batch.num_rows:
        return None
    problems = Problems(batch.num_rows)
    micros = epoch_micros(batch.column(column), column, problems)
    good = ~problems.bad()
    return int(micros[good].max()) if good.any() else None


def _merge(states: dict[tuple, Any], pairs: Iterable[tuple[tuple, Any]]) -> None:
    """Merges (key, state) pairs into `states`, per key (keys as plain tuples)."""
    for key, state in pairs:
        key = tuple(key)
        states[key] = state if key not in states else states[key].merge(state)


def _timing(state: WatchState, start: int, end: int, watermark: int | None) -> str:
    if watermark is None or watermark < end:
        return pane_lib.EARLY
    return pane_lib.LATE if start in state.on_time_fired else pane_lib.ON_TIME


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
            fileio.join(config.output, 'errors/errors-%s-%s.parquet' % (stem, tag)))
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
    evaluator = BatchEvaluator(config, state.run_id, bad_records, precombine=True)
    new = []
    for path in paths:
        try:
            result = evaluate_file(config, evaluator, path)
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
    per pane written (`pane_results.write_pane`'s, plus 'files': the new files)."""
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
        results = [state_result(k, state.states[k], names, config.confidence_level)
                   for k in sorted(by_window.get(start, []), key=repr)]
        summary = pane_results.write_pane(config, results, state.run_id, start, timing, index)
        summary['files'] = new
        written.append(summary)
        state.pane_index[start] = index + 1
        if timing == pane_lib.ON_TIME:
            state.on_time_fired.add(start)
        _log.info('headstream watch: window %s pane %d (%s)', pane_lib.window_tag(start),
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
                print('window %s pane %d %-7s %d metric rows%s' % (
                    pane_lib.window_tag(s['window_start']), s['pane_index'], s['pane'],
                    s['metrics_rows'],
                    '; ' + s['validation'] if 'validation' in s else ''), flush=True)
    except (config_lib.ConfigError, BadRecordError) as e:
        print('headstream watch: error: %s' % e, flush=True)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == '__main__':  # pragma: no cover
    raise SystemExit(main())
