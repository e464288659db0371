"""A run's outputs are published all at once (pipeline/run.py, `parquet.publish`).

- `publish` on local directories: summary.json moves last; an earlier run's pieces go; a
  failure while moving leaves no summary.json.
- End to end (DirectRunner): a rerun into a directory holding an earlier run's files (an extra
  metrics shard, errors/, predictions/) leaves only the new run's files; a run failing in a writer
  (the report) or in the pipeline (a bad row) keeps the earlier complete run as it was and leaves
  no staging directory.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.writers import parquet as parquet_writer
from pipeline.writers import publish

# Every run ends with the TFMA writer, which imports TensorFlow.
RUNNER = ['--runner=DirectRunner', '--direct_num_workers=1']


def _tree(directory) -> dict[str, bytes]:
    """{relative path: bytes} of every file under `directory`."""
    out = {}
    for root, _, files in os.walk(str(directory)):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, str(directory))] = f.read()
    return out


def _put(path, data: bytes = b'x') -> None:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), 'wb') as f:
        f.write(data)


# -------------------------------------------------------------------------------------------------
# publish on its own (pipeline/writers/publish.py).
# -------------------------------------------------------------------------------------------------

OLD_FILES = ('metrics/metrics.parquet', 'metrics/metrics-00001.parquet', 'errors/errors.parquet',
             'report.html')
NEW_FILES = ('metrics/metrics.parquet', 'plots/plots.parquet', 'tfma/a/b', 'report.html')


def _old_run(out) -> None:
    """A published run 'old' (each file holds its run id and path) beside a user's notes.txt."""
    for rel in OLD_FILES:
        _put(out / rel, b'old:' + rel.encode())
    _put(out / 'summary.json', json.dumps({'run_id': 'old', 'files': list(OLD_FILES)}).encode())
    _put(out / 'notes.txt', b'mine')


def _stage_new(out) -> str:
    staging = parquet_writer.staging_dir(str(out), 'new')
    for rel in NEW_FILES:
        _put(os.path.join(staging, rel), b'new:' + rel.encode())
    _put(os.path.join(staging, 'summary.json'),
         json.dumps({'run_id': 'new', 'files': list(NEW_FILES)}).encode())
    return staging


def _complete_run(run: str) -> dict[str, bytes]:
    """The whole tree of the output when exactly run `run` is published (plus notes.txt)."""
    files = OLD_FILES if run == 'old' else NEW_FILES
    tree = {rel: ('%s:%s' % (run, rel)).encode() for rel in files}
    tree['summary.json'] = json.dumps({'run_id': run, 'files': list(files)}).encode()
    tree['notes.txt'] = b'mine'
    return tree


def _summary_is_consistent(out) -> bool:
    """When summary.json exists: every file it lists is there and of its run."""
    tree = _tree(out)
    if 'summary.json' not in tree:
        return True
    summary = json.loads(tree['summary.json'])
    return all(tree.get(rel, b'').startswith(summary['run_id'].encode() + b':')
               for rel in summary['files'])


def test_publish_replaces_only_the_earlier_runs_files_and_moves_the_summary_last(
        tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems
    out = tmp_path / 'out'
    _old_run(out)
    staging = _stage_new(out)
    moved = []
    rename = FileSystems.rename

    def recording_rename(sources, targets):
        moved.extend(os.path.relpath(t, str(out)) for t in targets)
        return rename(sources, targets)

    monkeypatch.setattr(FileSystems, 'rename', staticmethod(recording_rename))
    order = publish.publish(staging, str(out), 'new')
    assert order[-1] == 'summary.json' and sorted(order) == sorted(NEW_FILES + ('summary.json',))
    assert moved[-1] == 'summary.json'
    # The old summary leaves first (after the journal), before any file of either run moves.
    assert moved[1] == os.path.join('.previous-new', 'summary.json')
    assert _tree(out) == _complete_run('new')  # the old errors/ and second shard went
    assert not os.path.exists(str(out / 'errors'))  # emptied directories of ours go too


def test_publish_file_by_file_as_on_object_stores(tmp_path, monkeypatch):
    """The gs:// code path of listing and deleting (a `**` match, object by object), run on local
    files: the same files end up in the same places."""
    monkeypatch.setattr(parquet_writer, '_is_local', lambda path: False)
    out = tmp_path / 'out'
    _old_run(out)
    staging = _stage_new(out)
    assert parquet_writer.list_files(staging) == sorted(NEW_FILES + ('summary.json',))
    assert publish.publish(staging, str(out), 'new')[-1] == 'summary.json'
    # Object stores have no directories: only files are compared.
    assert _tree(out) == _complete_run('new')


def test_publish_never_replaces_a_file_not_ours(tmp_path):
    out = tmp_path / 'out'
    _old_run(out)
    _put(out / 'plots' / 'plots.parquet', b'mine too')  # where the new run would write
    staging = _stage_new(out)
    before = _tree(out)
    with pytest.raises(publish.ForeignFilesError, match=r'plots/plots\.parquet'):
        publish.publish(staging, str(out), 'new')
    assert _tree(out) == before


def _count_renames(tmp_path) -> int:
    from apache_beam.io.filesystems import FileSystems
    out = tmp_path / 'count'
    _old_run(out)
    calls = []
    rename = FileSystems.rename
    FileSystems.rename = staticmethod(lambda s, t: calls.append(t) or rename(s, t))
    try:
        publish.publish(_stage_new(out), str(out), 'new')
    finally:
        FileSystems.rename = staticmethod(rename)
    return len(calls)


# The journal, the old summary, 4 old files, 4 new files, the new summary.
N_RENAMES = 1 + 1 + len(OLD_FILES) + len(NEW_FILES) + 1


def test_the_number_of_renames(tmp_path):
    assert _count_renames(tmp_path) == N_RENAMES


@pytest.mark.parametrize('step', range(1, N_RENAMES + 1))
def test_a_failure_at_any_rename_keeps_the_old_run(tmp_path, monkeypatch, step):
    from apache_beam.io.filesystems import FileSystems
    out = tmp_path / 'out'
    _old_run(out)
    staging = _stage_new(out)
    calls = []
    rename = FileSystems.rename

    def failing_rename(sources, targets):
        calls.append(targets)
        if len(calls) == step:
            assert _summary_is_consistent(out)
            raise OSError('connection reset')
        return rename(sources, targets)

    monkeypatch.setattr(FileSystems, 'rename', staticmethod(failing_rename))
    with pytest.raises(OSError, match='connection reset'):
        publish.publish(staging, str(out), 'new')
    monkeypatch.undo()
    # Rolled back at once, the backup gone (the staging directory is the caller's to discard).
    tree = {rel: data for rel, data in _tree(out).items() if not rel.startswith('.staging-')}
    assert tree == _complete_run('old')


_KILLED_PUBLISH = r'''
import os, sys
from apache_beam.io.filesystems import FileSystems
from pipeline.writers import parquet, publish
out, what, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
publish.claim_staging(out, 'new')  # this process owns the staging directory
calls = []
def dying(original):
    def f(*args):
        calls.append(args)
        if len(calls) == step:
            os._exit(9)  # killed: no clean-up, no roll-back
        return original(*args)
    return staticmethod(f) if what == 'rename' else f
if what == 'rename':
    FileSystems.rename = dying(FileSystems.rename)
else:
    publish.parquet.delete_tree = dying(parquet.delete_tree)
publish.publish(parquet.staging_dir(out, 'new'), out, 'new')
'''

# Kills at each rename, and at each deletion of the clean-up (journal, backup, staging).
_KILLS = [('rename', k) for k in range(1, N_RENAMES + 1)] + [('delete', k) for k in (1, 2, 3)]


@pytest.mark.parametrize('what, step', _KILLS)
def test_a_kill_at_any_step_leaves_the_old_or_the_new_complete_run(tmp_path, what, step):
    out = tmp_path / 'out'
    _old_run(out)
    _stage_new(out)
    proc = subprocess.run([sys.executable, '-c', _KILLED_PUBLISH, str(out), what, str(step)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    # At the instant of the kill: a visible summary.json lists only files of its own run.
    assert _summary_is_consistent(out)
    # The next run (the killer is dead) finishes or rolls back its publish.
    publish.recover(str(out))
    tree = _tree(out)
    assert tree in (_complete_run('old'), _complete_run('new')), sorted(tree)
    # A kill comes before its step: killed before the new summary.json's rename, the old run
    # comes back; killed in the clean-up (the new summary.json was in place), the new run stays.
    assert tree == _complete_run('new' if what == 'delete' else 'old')


def test_stale_staging_is_deleted_only_when_its_owner_is_gone(tmp_path):
    out = tmp_path / 'out'
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True, check=True)
    publish.claim_staging(str(out), 'dead-run', pid=int(dead.stdout))
    _put(out / '.staging-dead-run' / 'metrics' / 'm.parquet')
    publish.claim_staging(str(out), 'live-run')  # this process: alive
    _put(out / '.staging-legacy' / 'x')  # no owner file: nobody can tell; kept
    publish.recover(str(out))
    assert sorted(os.listdir(str(out))) == ['.staging-legacy', '.staging-live-run']


def test_report_refuses_a_directory_without_a_complete_run(tmp_path, capsys):
    from pipeline import cli
    out = tmp_path / 'out'
    _old_run(out)
    os.remove(str(out / 'summary.json'))  # as a kill in the middle of the old protocol left it
    assert cli.main(['report', str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'no complete run' in err[0] and str(out) in err[0]
    _put(out / 'summary.json', json.dumps({'run_id': 'old', 'files': list(OLD_FILES) + [
        'plots/plots.parquet']}).encode())
    assert cli.main(['report', str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'plots/plots.parquet' in err[0] and 'incomplete' in err[0]
    assert _tree(out)['report.html'] == b'old:report.html'  # not rebuilt


def test_delete_tree_and_list_files(tmp_path):
    _put(tmp_path / 'd' / 'a' / 'b.txt')
    _put(tmp_path / 'd' / 'c.txt')
    assert parquet_writer.list_files(str(tmp_path / 'd')) == ['a/b.txt', 'c.txt']
    assert parquet_writer.list_files(str(tmp_path / 'nothing')) == []
    parquet_writer.delete_tree(str(tmp_path / 'd' / 'c.txt'))
    assert parquet_writer.list_files(str(tmp_path / 'd')) == ['a/b.txt']
    parquet_writer.delete_tree(str(tmp_path / 'd'))
    parquet_writer.delete_tree(str(tmp_path / 'd'))  # nothing there: no error
    assert not os.path.exists(str(tmp_path / 'd'))


# -------------------------------------------------------------------------------------------------
# End to end.
# -------------------------------------------------------------------------------------------------

def _data(tmp_path, bad_row: bool = False) -> str:
    rng = np.random.default_rng(7)
    n = 40
    labels = pa.array((np.arange(n) % 2).astype(np.float64))
    if bad_row:
        labels = pa.array([None] + labels.to_pylist()[1:], pa.float64())
    table = pa.table({'logit': rng.normal(size=n).astype(np.float32), 'label': labels})
    os.makedirs(str(tmp_path / 'in'), exist_ok=True)
    pq.write_table(table, str(tmp_path / 'in' / 'part-0.parquet'))
    return str(tmp_path / 'in' / '*.parquet')


def _config(pattern: str, out) -> dict:
    return {'input': {'pattern': pattern},
            'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click'},
                       'logits': 'logit', 'labels': 'label'}],
            'slices': [[]], 'tensorboard': {}, 'output': str(out)}


def test_reruns_replace_and_failed_runs_keep_the_earlier_output(tmp_path, monkeypatch):
    from pipeline import report
    from pipeline.elements import BadRecordError
    from pipeline.run import evaluate
    out = tmp_path / 'out'
    _put(out / '.staging-some-other-run' / 'x', b'another run')  # not this run's to touch
    config = _config(_data(tmp_path), out)

    summary = evaluate(config, RUNNER, run_id='run-1', progress_every_s=None,
                       write_predictions=True)
    first = _tree(out)
    assert first['.staging-some-other-run/x'] == b'another run'
    published = {rel for rel in first if not rel.startswith('.')}
    # Exactly the run's own files, every one listed in its summary.
    assert set(summary['files']) | {'summary.json'} == published
    assert any(rel.startswith('predictions/') for rel in published)
    assert any(rel.startswith('tfma/') for rel in published)
    assert any(rel.startswith('tensorboard/Overall/') for rel in published)
    assert json.loads(first['summary.json'])['run_id'] == 'run-1'

    # A rerun without predictions: the first run's predictions/ go (they were ours).
    evaluate(config, RUNNER, run_id='run-2', progress_every_s=None)
    done = _tree(out)
    assert not any(rel.startswith('predictions/') for rel in done)
    assert pq.read_table(str(out / 'metrics' / 'metrics.parquet')).column(
        'run_id').to_pylist()[0] == 'run-2'

    # A run failing in its last writer publishes nothing: the earlier run stays, byte for byte.
    def broken_report(output_dir, source=None, **tables):
        raise OSError('no space left on device')

    with monkeypatch.context() as m:
        m.setattr(report, 'write_report', broken_report)
        with pytest.raises(Exception, match='no space left on device'):
            evaluate(config, RUNNER, run_id='run-3', progress_every_s=None)
    assert _tree(out) == done

    # A run failing in the pipeline (a bad row), with predictions staged: the same.
    bad = _config(_data(tmp_path, bad_row=True), out)
    with pytest.raises(BadRecordError, match='label'):
        evaluate(bad, RUNNER, run_id='run-4', write_predictions=True, progress_every_s=None)
    assert _tree(out) == done


# -------------------------------------------------------------------------------------------------
# The command line, end to end (issue 20, items 1, 2, 4 and 5).
# -------------------------------------------------------------------------------------------------

def _cli(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'pipeline', 'evaluate', *argv],
                          capture_output=True, text=True, timeout=300, **kwargs)


_INFO_LOG = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO ')


def _one_line(stderr: str) -> str:
    """The one line of stderr besides the INFO log lines every run writes (progress)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not _INFO_LOG.match(line)]
    assert len(lines) == 1, stderr
    return lines[0]


def test_an_output_holding_the_users_files_is_refused(tmp_path):
    """Item 1: the user's metrics/, predictions/ (the input itself), tensorboard/ and
    report.html survive; the run is refused in one line, exit 2, unless --overwrite, which
    still touches none of them."""
    proj = tmp_path / 'proj'
    pattern = _data(proj / 'predictions')  # the input: proj/predictions/in/part-0.parquet
    for rel in ('metrics/mine.txt', 'tensorboard/mine/events', 'report.html'):
        _put(proj / rel, b'mine')
    config = json.dumps({**_config(pattern, proj), 'tensorboard': None})
    before = _tree(proj)
    proc = _cli('--config', config, '--run_id', 'r1', '--runner=DirectRunner')
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc.stderr)
    assert str(proj) in line and 'metrics/mine.txt' in line and '--overwrite' in line
    assert _tree(proj) == before
    # --overwrite: the run's report.html would replace the user's: still refused, nothing moved.
    proc = _cli('--config', config, '--run_id', 'r1', '--overwrite', '--runner=DirectRunner')
    assert proc.returncode == 2 and 'report.html' in _one_line(proc.stderr), proc.stderr
    assert {k: v for k, v in _tree(proj).items() if not k.startswith('.')} == before
    # Without that clash, --overwrite publishes beside the user's files, touching none.
    os.remove(str(proj / 'report.html'))
    del before['report.html']
    proc = _cli('--config', config, '--run_id', 'r2', '--overwrite', '--runner=DirectRunner',
                '--write_predictions')
    assert proc.returncode == 0, proc.stderr
    after = _tree(proj)
    assert {rel: after.get(rel) for rel in before} == before
    assert json.loads(after['summary.json'])['run_id'] == 'r2'


_HELD_RUN = r'''
import os, sys, time
from pipeline import cli, run_outputs
go = sys.argv[1]
publish_locked = run_outputs.publish_locked
def waiting(*args):
    deadline = time.monotonic() + 120
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.05)
    return publish_locked(*args)
run_outputs.publish_locked = waiting
sys.exit(cli.main(sys.argv[2:]))
'''


def test_two_runs_into_one_output(tmp_path):
    """Item 2: while run a holds the output, run b fails at once in one line naming the lock and
    a's pid; a's summary then lists only files that exist, of its own run."""
    out = tmp_path / 'out'
    config = json.dumps({**_config(_data(tmp_path), out), 'tensorboard': None})
    go = tmp_path / 'go'
    a = subprocess.Popen([sys.executable, '-c', _HELD_RUN, str(go), 'evaluate', '--config',
                          config, '--run_id', 'a', '--runner=DirectRunner'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(str(out / '.headstream.lock')):
            assert a.poll() is None and time.monotonic() < deadline, a.communicate()
            time.sleep(0.05)
        b = _cli('--config', config, '--run_id', 'b', '--runner=DirectRunner')
        assert b.returncode == 2, b.stderr
        line = _one_line(b.stderr)
        assert '.headstream.lock' in line and 'pid %d' % a.pid in line and 'run a' in line
    finally:
        _put(go)
        _, a_err = a.communicate(timeout=300)
    assert a.returncode == 0, a_err
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['run_id'] == 'a'
    for rel in summary['files']:
        if rel.endswith('.parquet'):
            assert set(pq.read_table(str(out / rel)).column('run_id').to_pylist()) == {'a'}
        assert (out / rel).exists(), rel
    assert not (out / '.headstream.lock').exists()
    assert _cli('--config', config, '--run_id', 'b', '--runner=DirectRunner').returncode == 0


_SLOW_RUN = r'''
import signal, sys, time
# Ctrl-C as in a terminal: a SIGINT this process inherited as ignored (a parent that ignores it)
# would otherwise never raise KeyboardInterrupt here.
signal.signal(signal.SIGINT, signal.default_int_handler)
from pipeline import cli
from pipeline.writers import parquet
marker = sys.argv[1]
write_table = parquet.write_table
def slow(table, path, *args):
    if '/predictions/' in path:
        open(marker, 'a').write(path + '\n')
        time.sleep(1.0)  # a window the signal lands in even on a busy machine
    return write_table(table, path, *args)
parquet.write_table = slow
sys.exit(cli.main(sys.argv[2:]))
'''


def test_ctrl_c_prints_one_line_exits_130_and_leaves_nothing(tmp_path):
    """Item 4: SIGINT while workers write predictions into the staging directory."""
    rng = np.random.default_rng(3)
    os.makedirs(str(tmp_path / 'in'))
    for i in range(8):
        pq.write_table(pa.table({'logit': rng.normal(size=2000).astype(np.float32),
                                 'label': (np.arange(2000) % 2).astype(np.float64)}),
                       str(tmp_path / 'in' / ('part-%d.parquet' % i)), row_group_size=250)
    out = tmp_path / 'out'
    config = json.dumps({**_config(str(tmp_path / 'in' / '*.parquet'), out), 'tensorboard': None})
    marker = tmp_path / 'writing'
    proc = subprocess.Popen([sys.executable, '-c', _SLOW_RUN, str(marker), 'evaluate', '--config',
                             config, '--run_id', 'r1', '--write_predictions',
                             '--runner=DirectRunner'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert _one_line(err) == 'headstream: interrupted; nothing published'
    time.sleep(0.5)  # nothing may still be writing
    assert _tree(out) == {}


def test_a_run_id_escaping_the_output_is_refused(tmp_path):
    """Item 5: `x/../../victim` would have named <output>/../victim as the staging directory."""
    out = tmp_path / 'out'
    _put(tmp_path / 'victim' / 'metrics' / 'precious.parquet', b'precious')
    config = json.dumps(_config(_data(tmp_path), out))
    proc = _cli('--config', config, '--run_id', 'x/../../victim')
    assert proc.returncode == 2
    assert 'x/../../victim' in _one_line(proc.stderr)
    assert _tree(tmp_path / 'victim') == {'metrics/precious.parquet': b'precious'}
    assert not out.exists()


def test_tensorboard_dir_is_staged_when_under_the_output():
    from pipeline.run_outputs import _tensorboard_dir
    staging = '/o/.staging-r'
    assert _tensorboard_dir(None, '/o', staging) == '/o/.staging-r/tensorboard'
    assert _tensorboard_dir('/o/tb/', '/o', staging) == '/o/.staging-r/tb'
    assert _tensorboard_dir('/logs/tb', '/o', staging) == '/logs/tb'  # outside: in place
    assert _tensorboard_dir('/other/tb', '/o', staging) == '/other/tb'
    assert _tensorboard_dir('gs://b/o/tb', 'gs://b/o/', 'gs://b/o/.staging-r') == (
        'gs://b/o/.staging-r/tb')
