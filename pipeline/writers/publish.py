"""Publishing a run's outputs safely: ownership, the output lock, the crash-safe switch, recovery.

The protocol (also in pipeline/run.py's docstring and docs/design.md):

- **Ours.** A file of ours is one listed in the output directory's `summary.json` written by
  headstream (it has a `run_id` and a `files` list; summaries of older versions list their
  tables in `outputs`). Publishing never deletes nor replaces any other file. An output
  directory holding files that are not ours (besides our lock, `.staging-*` and `.previous-*`
  entries) is refused (`ForeignFilesError`) unless `overwrite`; even then a new file whose path
  is taken by a file not ours is refused.
- **The lock.** `<output>/.headstream.lock`, created only when absent (local: O_CREAT|O_EXCL;
  gs://: an upload with `if_generation_match=0`), holds the owner's pid, host, run id and start
  time. A lock whose owner pid is gone on this host is stale and taken over; any other is
  refused at once (`OutputBusyError`, naming the lock and its owner). A lock held for the same
  run id is the run's own (taken by `evaluate`, used by `WriteRun` when it publishes).
- **The switch.** With the lock held, `publish` writes a journal
  `<output>/.previous-<run_id>/publish.json` (the old files of ours, the new files), then moves
  the old summary.json into that backup directory, then every old file of ours, then each new
  file from the staging directory into place, the new summary.json last; then it deletes the
  journal, the backup and the staging directory. So whenever a summary.json is visible, every
  file it lists is there and of its run, and until the new summary.json is in place the old run
  is whole (in place or in the backup). A failure rolls back at once (`_roll_back`); a killed
  publisher's backup is rolled back, or forward when its new summary.json was already in place,
  by the next run or `recover` (only once the journal's owner is gone).
- **Staging directories** carry an owner file (`.owner.json`); the next run deletes those whose
  owner is gone.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from typing import Any, Callable, Sequence

from pipeline import fileio
from pipeline.config import ConfigError
from pipeline.writers import parquet

LOCK_FILE = '.headstream.lock'
BACKUP_PREFIX = '.previous-'
JOURNAL_FILE = 'publish.json'
OWNER_FILE = '.owner.json'
REPORT_FILE = 'report.html'
# Files every batch run publishes (the others, under tfma/, tensorboard/, predictions/, errors/,
# are checked once the run is staged): checked before a run with `overwrite`.
FIXED_FILES = (parquet.METRICS_FILE, parquet.PLOTS_FILE, fileio.SUMMARY_FILE, REPORT_FILE)
_SHOWN = 5  # offending entries named in a one-line error
_log = logging.getLogger(__name__)


class OutputError(ConfigError):
    """The output directory cannot take this run (exit 2, one line naming the directory)."""


class ForeignFilesError(OutputError):
    """The output directory holds files that no headstream run wrote."""


class OutputBusyError(OutputError):
    """Another live run holds the output directory's lock."""


class IncompleteRunError(ValueError):
    """A directory holds no complete run (for `headstream report`)."""


# -------------------------------------------------------------------------------------------------
# Owners: who holds a lock, a staging directory or a backup.
# -------------------------------------------------------------------------------------------------

def owner_record(run_id: str, pid: int | None = None) -> dict[str, Any]:
    """This process as the owner of `run_id`'s lock or staging directory (`pid` None: a job
    submitted without waiting, whose liveness nobody here can tell)."""
    return {'pid': os.getpid() if pid is None else pid, 'host': socket.gethostname(),
            'run_id': run_id,
            'started_at': datetime.datetime.now(datetime.timezone.utc).isoformat()}


def owner_gone(owner: dict[str, Any] | None) -> bool:
    """Whether `owner` (an `owner_record`) is known to be dead: its pid is not alive on this host.
    An owner on another host, or without a pid, is taken as alive."""
    if not owner or owner.get('host') != socket.gethostname() or not owner.get('pid'):
        return False
    try:
        os.kill(int(owner['pid']), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False
    return False


# -------------------------------------------------------------------------------------------------
# The lock.
# -------------------------------------------------------------------------------------------------

def lock_path(output: str) -> str:
    return fileio.join(output, LOCK_FILE)


def acquire_lock(output: str, run_id: str) -> bool:
    """Takes the output directory's lock for `run_id`.

    Returns:
      True when this call took it (the caller releases it), False when `run_id` already held it.

    Raises:
      OutputBusyError: another run holds it and is not known to be dead.
    """
    path = lock_path(output)
    fileio.make_parent(path)
    data = json.dumps(owner_record(run_id)).encode('utf-8')
    for _ in range(3):
        if fileio.create_exclusive(path, data):
            return True
        owner = fileio.read_json(path)
        if owner and owner.get('run_id') == run_id:
            return False
        if owner_gone(owner):
            _log.warning('headstream: %s: taking over the lock of dead pid %s', path,
                         owner.get('pid'))
            parquet.delete_tree(path)
            continue
        break
    owner = fileio.read_json(path) or {}
    raise OutputBusyError(
        '%s is locked by run %s (pid %s on %s, since %s): another run is writing this output; '
        'wait for it, or delete the lock file if no run is' % (
            path, owner.get('run_id'), owner.get('pid'), owner.get('host'),
            owner.get('started_at')))


def release_lock(output: str, run_id: str) -> None:
    """Deletes the lock when `run_id` holds it."""
    path = lock_path(output)
    owner = fileio.read_json(path)
    if owner and owner.get('run_id') == run_id:
        parquet.delete_tree(path)


# -------------------------------------------------------------------------------------------------
# Ours and not ours.
# -------------------------------------------------------------------------------------------------

def our_files(output: str) -> list[str] | None:
    """The files of the run published in `output` (its summary.json's `files`, which excludes
    summary.json itself); None when `output` has no summary.json of ours."""
    summary = fileio.read_summary(output)
    if not isinstance(summary, dict) or not summary.get('run_id'):
        return None
    files = summary.get('files')
    if isinstance(files, list):
        return [str(f) for f in files]
    if isinstance(summary.get('outputs'), list):  # a summary of an earlier version
        return [str(f) for f in summary['outputs']] + [REPORT_FILE]
    return None


def _internal(rel: str) -> bool:
    """Our lock, staging and backup entries, which are never a user's."""
    top = rel.split('/', 1)[0]
    return top == LOCK_FILE or top.startswith((parquet.STAGING_PREFIX, BACKUP_PREFIX))


def foreign_files(output: str) -> list[str]:
    """The files under `output` that are not ours (sorted, relative)."""
    ours = our_files(output)
    allowed = set(ours or ()) | ({fileio.SUMMARY_FILE} if ours is not None else set())
    return [rel for rel in parquet.list_files(output)
            if rel not in allowed and not _internal(rel)]


def _named(entries: Sequence[str]) -> str:
    more = len(entries) - _SHOWN
    return ', '.join(entries[:_SHOWN]) + (' and %d more' % more if more > 0 else '')


def check_output(output: str, overwrite: bool = False) -> None:
    """Refuses an output directory holding files no headstream run wrote, unless `overwrite`.

    Raises:
      ForeignFilesError: naming the directory and the first offending files.
    """
    if overwrite:
        _check_collisions(output, FIXED_FILES)
        return
    foreign = foreign_files(output)
    if foreign:
        raise ForeignFilesError(
            'output %s holds files no headstream run wrote (%s); choose a new or empty '
            'directory, or pass --overwrite (only headstream\'s own files are replaced)'
            % (output, _named(foreign)))


def _check_collisions(output: str, new: Sequence[str]) -> None:
    """Refuses new files whose path (or a parent of it) is a file not ours."""
    foreign = set(foreign_files(output))
    taken = sorted(rel for rel in new
                   if any('/'.join(rel.split('/')[:i]) in foreign
                          for i in range(1, rel.count('/') + 2)))
    if taken:
        raise ForeignFilesError('output %s: %s would replace files no headstream run wrote; '
                                'nothing was published' % (output, _named(taken)))


# -------------------------------------------------------------------------------------------------
# The switch.
# -------------------------------------------------------------------------------------------------

def backup_dir(output: str, run_id: str) -> str:
    return fileio.join(output, BACKUP_PREFIX + run_id)


def publish(staging: str, output: str, run_id: str) -> list[str]:
    """Switches `output` from its published run (if any) to the run staged in `staging`.

    The caller holds the lock. See the module docstring for the order of the moves.

    Returns:
      The new files' relative paths in the order moved (summary.json last).

    Raises:
      ForeignFilesError: a new file would replace a file not ours (nothing is moved).
    """
    new = [rel for rel in parquet.list_files(staging)
           if rel not in (fileio.SUMMARY_FILE, OWNER_FILE)]
    old = [rel for rel in (our_files(output) or []) if fileio.exists(fileio.join(output, rel))]
    _check_collisions(output, new)
    backup = backup_dir(output, run_id)
    journal = {'owner': owner_record(run_id), 'old': old, 'new': new,
               'staging': staging, 'had_summary': our_files(output) is not None}
    try:
        parquet.write_json(journal, fileio.join(backup, JOURNAL_FILE))
        for rel in ([fileio.SUMMARY_FILE] if journal['had_summary'] else []) + old:
            fileio.move(fileio.join(output, rel), fileio.join(backup, rel))
        for rel in new + [fileio.SUMMARY_FILE]:
            fileio.move(fileio.join(staging, rel), fileio.join(output, rel))
    except BaseException:
        _recover_quietly(output, backup)
        raise
    _finish(output, backup, journal)
    return new + [fileio.SUMMARY_FILE]


def _finish(output: str, backup: str, journal: dict[str, Any]) -> None:
    """After the switch (or a roll-back): the journal goes first (a backup without one is
    garbage), then the backup, the staging directory and emptied local directories."""
    parquet.delete_tree(fileio.join(backup, JOURNAL_FILE))
    parquet.delete_tree(backup)
    parquet.delete_tree(journal['staging'])
    _prune_empty_dirs(output, journal['old'] + journal['new'])


def _prune_empty_dirs(output: str, files: Sequence[str]) -> None:
    """Removes the local directories of `files` (under `output`) that are left empty."""
    if '://' in output:
        return  # object stores have no directories
    parents = {os.path.dirname(rel) for rel in files if '/' in rel}
    for parent in sorted(parents, key=lambda p: -p.count('/')):
        while parent:
            try:
                os.rmdir(os.path.join(output, parent))
            except OSError:
                break  # not empty, or not there
            parent = os.path.dirname(parent)


def _roll_back(output: str, backup: str, journal: dict[str, Any]) -> None:
    """Puts the old run back in place: the new files that were moved in go, the backed-up files
    return, the old summary.json last. Idempotent (a kill in the middle is rolled back again)."""
    old, new = set(journal['old']), journal['new']
    for rel in new:
        # A new file in place is there only if its old one was moved out first (or had none).
        if rel not in old or fileio.exists(fileio.join(backup, rel)):
            parquet.delete_tree(fileio.join(output, rel))
    for rel in journal['old']:
        if fileio.exists(fileio.join(backup, rel)):
            fileio.move(fileio.join(backup, rel), fileio.join(output, rel))
    if fileio.exists(fileio.join(backup, fileio.SUMMARY_FILE)):
        fileio.move(fileio.join(backup, fileio.SUMMARY_FILE),
                    fileio.join(output, fileio.SUMMARY_FILE))


def _switched(output: str, backup: str, journal: dict[str, Any]) -> bool:
    """Whether the new summary.json is in place (the switch is done; only the clean-up is not)."""
    in_place = fileio.exists(fileio.join(output, fileio.SUMMARY_FILE))
    if not journal.get('had_summary'):
        return in_place
    return in_place and fileio.exists(fileio.join(backup, fileio.SUMMARY_FILE))


def _recover_backup(output: str, backup: str) -> None:
    journal = fileio.read_json(fileio.join(backup, JOURNAL_FILE))
    if not isinstance(journal, dict):
        parquet.delete_tree(backup)  # no journal: nothing moved yet, or the clean-up had begun
        return
    if not _switched(output, backup, journal):
        _roll_back(output, backup, journal)
    _finish(output, backup, journal)


def _recover_quietly(output: str, backup: str) -> None:
    """Rolls a failed publish back; a failure to do so is logged (the next run retries it)."""
    try:
        _recover_backup(output, backup)
    except Exception as e:  # noqa: BLE001 -- the publish's own error is the one to report
        _log.warning('headstream: cannot roll back %s yet (the next run will): %s', backup, e)


def _top_entries(output: str, prefix: str) -> list[str]:
    """The names of `output`'s top-level entries starting with `prefix`."""
    if '://' not in output:
        if not os.path.isdir(output):
            return []
        return sorted(n for n in os.listdir(output) if n.startswith(prefix))
    return sorted({rel.split('/', 1)[0] for rel in parquet.list_files(output)
                   if rel.startswith(prefix)})


def recover(output: str, is_gone: Callable[[dict | None], bool] = owner_gone) -> None:
    """Finishes or rolls back the publishes of dead runs and deletes dead runs' staging
    directories (only those whose owner `is_gone`); the caller holds the lock."""
    for name in _top_entries(output, BACKUP_PREFIX):
        backup = fileio.join(output, name)
        journal = fileio.read_json(fileio.join(backup, JOURNAL_FILE))
        if not isinstance(journal, dict) or is_gone(journal.get('owner')):
            _log.warning('headstream: %s: recovering the interrupted publish %s', output, name)
            _recover_backup(output, backup)
    for name in _top_entries(output, parquet.STAGING_PREFIX):
        staging = fileio.join(output, name)
        if is_gone(fileio.read_json(fileio.join(staging, OWNER_FILE))):
            _log.warning('headstream: deleting %s, left by a dead run', staging)
            parquet.delete_tree(staging)


def claim_staging(output: str, run_id: str, pid: int | None = None) -> str:
    """Creates the run's staging directory with its owner file; returns its path."""
    staging = parquet.staging_dir(output, run_id)
    parquet.reclaim(staging)
    parquet.write_json(owner_record(run_id, pid), fileio.join(staging, OWNER_FILE))
    return staging


# -------------------------------------------------------------------------------------------------
# Complete runs (for `headstream report`).
# -------------------------------------------------------------------------------------------------

def check_complete(output: str) -> None:
    """Refuses a directory without a complete run: a batch run's output needs a summary.json of
    ours whose every file is there. A streaming or watch output (`panes/`) has no summary.json.

    Raises:
      IncompleteRunError: naming the directory and what is missing.
    """
    ours = our_files(output)
    if ours is None:
        if parquet.list_files(fileio.join(output, 'panes')):
            return
        raise IncompleteRunError(
            '%s holds no complete run (no summary.json of a finished headstream run); rerun '
            'the evaluation' % output)
    missing = [rel for rel in ours if not fileio.exists(fileio.join(output, rel))]
    if missing:
        raise IncompleteRunError('%s holds an incomplete run: %s listed in summary.json missing'
                                 % (output, _named(missing)))
