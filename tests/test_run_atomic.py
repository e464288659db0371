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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.writers import parquet as parquet_writer

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
# publish on its own.
# -------------------------------------------------------------------------------------------------

def test_publish_replaces_the_earlier_run_and_moves_the_summary_last(tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems
    out = tmp_path / 'out'
    # An earlier run with more shards, errors/ and predictions/; a file of the user's own.
    for rel in ('metrics/metrics.parquet', 'metrics/metrics-00001.parquet', 'plots/plots.parquet',
                'errors/errors.parquet', 'predictions/p-0.parquet', 'tfma/x/metrics',
                'report.html', 'summary.json', 'notes.txt'):
        _put(out / rel, b'old ' + rel.encode())
    staging = parquet_writer.staging_dir(str(out), 'run-2')
    assert staging == str(out / '.staging-run-2')
    new = {'metrics/metrics.parquet': b'm', 'plots/plots.parquet': b'p', 'summary.json': b's',
           'tensorboard/Overall/events': b'e'}
    for rel, data in new.items():
        _put(os.path.join(staging, rel), data)

    moved = []
    rename = FileSystems.rename

    def recording_rename(sources, targets):
        moved.extend(os.path.relpath(t, str(out)) for t in targets)
        return rename(sources, targets)

    monkeypatch.setattr(FileSystems, 'rename', staticmethod(recording_rename))
    order = parquet_writer.publish(staging, str(out))
    assert order == moved and moved[-1] == 'summary.json' and sorted(moved) == sorted(new)
    assert _tree(out) == {**new, 'notes.txt': b'old notes.txt'}
    assert not os.path.exists(staging)


def test_publish_file_by_file_as_on_object_stores(tmp_path, monkeypatch):
    """The gs:// code path (listing by a `**` match, deleting and renaming object by object), run
    on local files: the same files end up in the same places."""
    monkeypatch.setattr(parquet_writer, '_is_local', lambda path: False)
    out = tmp_path / 'out'
    for rel in ('metrics/metrics-00001.parquet', 'errors/errors.parquet', 'summary.json',
                'notes.txt'):
        _put(out / rel, b'old')
    staging = parquet_writer.staging_dir(str(out), 'run-2')
    new = {'metrics/metrics.parquet': b'm', 'tfma/a/b': b't', 'summary.json': b's'}
    for rel, data in new.items():
        _put(os.path.join(staging, rel), data)
    assert parquet_writer.list_files(staging) == sorted(new)
    assert parquet_writer.publish(staging, str(out))[-1] == 'summary.json'
    # Object stores have no directories: only files are compared.
    assert _tree(out) == {**new, 'notes.txt': b'old'}


def test_a_failure_while_publishing_leaves_no_summary(tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems
    out = tmp_path / 'out'
    for rel in ('metrics/metrics.parquet', 'summary.json'):
        _put(out / rel, b'old')
    staging = parquet_writer.staging_dir(str(out), 'run-2')
    for rel in ('metrics/metrics.parquet', 'plots/plots.parquet', 'summary.json'):
        _put(os.path.join(staging, rel), b'new')
    calls = []
    rename = FileSystems.rename

    def failing_second_rename(sources, targets):
        calls.append(targets)
        if len(calls) == 2:
            raise OSError('connection reset')
        return rename(sources, targets)

    monkeypatch.setattr(FileSystems, 'rename', staticmethod(failing_second_rename))
    with pytest.raises(OSError, match='connection reset'):
        parquet_writer.publish(staging, str(out))
    assert not os.path.exists(str(out / 'summary.json'))


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


@pytest.mark.tf
def test_reruns_replace_and_failed_runs_keep_the_earlier_output(tmp_path, monkeypatch):
    from pipeline import report
    from pipeline.apply import BadRecordError
    from pipeline.run import evaluate
    out = tmp_path / 'out'
    # An earlier run's files that this run does not write.
    stale = ('metrics/metrics-00001.parquet', 'errors/errors.parquet', 'predictions/p.parquet')
    for rel in stale:
        _put(out / rel, b'stale')
    _put(out / '.staging-some-other-run' / 'x', b'another run')  # not this run's to touch
    config = _config(_data(tmp_path), out)

    summary = evaluate(config, RUNNER, run_id='run-1', progress_every_s=None)
    done = _tree(out)
    assert not any(rel in done for rel in stale)
    assert not any(rel.startswith('.staging-run-1') for rel in done)
    assert done['.staging-some-other-run/x'] == b'another run'
    published = {rel for rel in done if not rel.startswith('.staging-')}
    # Exactly the run's own files: its tables, the summary, the report, TFMA and TensorBoard.
    assert set(summary['outputs']) == {'metrics/metrics.parquet', 'plots/plots.parquet'}
    assert published >= {'metrics/metrics.parquet', 'plots/plots.parquet', 'summary.json',
                         'report.html'}
    assert all(rel.split('/')[0] in parquet_writer.RUN_OUTPUTS for rel in published)
    assert any(rel.startswith('tfma/') for rel in published)
    assert any(rel.startswith('tensorboard/Overall/') for rel in published)
    assert json.loads(done['summary.json'])['run_id'] == 'run-1'
    assert pq.read_table(str(out / 'metrics' / 'metrics.parquet')).column(
        'run_id').to_pylist()[0] == 'run-1'

    # A run failing in its last writer publishes nothing: the earlier run stays, byte for byte.
    def broken_report(output_dir, source=None):
        raise OSError('no space left on device')

    with monkeypatch.context() as m:
        m.setattr(report, 'write_report', broken_report)
        with pytest.raises(Exception, match='no space left on device'):
            evaluate(config, RUNNER, run_id='run-2', progress_every_s=None)
    assert _tree(out) == done

    # A run failing in the pipeline (a bad row), with predictions staged: the same.
    bad = _config(_data(tmp_path, bad_row=True), out)
    with pytest.raises(BadRecordError, match='label'):
        evaluate(bad, RUNNER, run_id='run-3', write_predictions=True, progress_every_s=None)
    assert _tree(out) == done


def test_tensorboard_dir_is_staged_when_under_the_output():
    from pipeline.run import _tensorboard_dir
    staging = '/o/.staging-r'
    assert _tensorboard_dir(None, '/o', staging) == '/o/.staging-r/tensorboard'
    assert _tensorboard_dir('/o/tb/', '/o', staging) == '/o/.staging-r/tb'
    assert _tensorboard_dir('/logs/tb', '/o', staging) == '/logs/tb'  # outside: in place
    assert _tensorboard_dir('/other/tb', '/o', staging) == '/other/tb'
    assert _tensorboard_dir('gs://b/o/tb', 'gs://b/o/', 'gs://b/o/.staging-r') == (
        'gs://b/o/.staging-r/tb')
