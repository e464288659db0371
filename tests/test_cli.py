"""The command line: options, pass-through to Beam, exit codes and one-line messages."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from pipeline import cli, cli_args
from pipeline.run import make_runner, pipeline_options


def _parse(argv):
    return cli_args.evaluate_parser().parse_known_args(argv)


def test_evaluate_help_lists_every_option():
    out = subprocess.run([sys.executable, '-m', 'pipeline', 'evaluate', '--help'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for option in ('--config', '--output', '--bad_records', '--write_predictions', '--run_id',
                   '--bigquery_table', '--runner'):
        assert option in out.stdout


def test_flag_value_and_flag_equals_value_are_the_same():
    a, beam_a = _parse(['--config', 'c.yaml', '--output', 'o', '--bad_records', 'dead_letter',
                        '--run_id', 'r1', '--runner', 'DirectRunner', '--project', 'p'])
    b, beam_b = _parse(['--config=c.yaml', '--output=o', '--bad_records=dead_letter',
                        '--run_id=r1', '--runner=DirectRunner', '--project=p'])
    assert vars(a) == vars(b) == {'config': 'c.yaml', 'output': 'o',
                                  'bad_records': 'dead_letter', 'write_predictions': False,
                                  'run_id': 'r1', 'bigquery_table': None, 'overwrite': False}
    # Unknown flags are Beam's: they pass through untouched.
    assert beam_a == ['--runner', 'DirectRunner', '--project', 'p']
    assert beam_b == ['--runner=DirectRunner', '--project=p']


@pytest.mark.parametrize('argv, expected', [
    ([], False), (['--write_predictions'], True), (['--write_predictions=true'], True),
    (['--write_predictions=false'], False), (['--write_predictions', 'false'], False),
    (['--write_predictions', '--runner=DirectRunner'], True)])
def test_write_predictions_forms(argv, expected):
    args, _ = _parse(['--config', 'c'] + argv)
    assert args.write_predictions is expected


def test_runner_defaults_to_direct_and_passes_others_through():
    assert pipeline_options([]).get_all_options()['runner'] == 'DirectRunner'
    assert make_runner(pipeline_options([])) is not None  # the DirectRunner's batch engine
    opts = pipeline_options(['--runner', 'DataflowRunner', '--project', 'p'])
    assert opts.get_all_options()['runner'] == 'DataflowRunner'
    assert opts.get_all_options()['project'] == 'p'
    assert make_runner(opts) is None  # Beam resolves it by name


def test_config_errors_exit_2_with_one_line_naming_the_key(capsys, tmp_path):
    raw = {'input': {'pattern': str(tmp_path / '*.parquet')}, 'slicez': [],
           'heads': [{'type': 'BinaryClassHead', 'logits': 'x', 'labels': 'y'}], 'output': 'o'}
    assert cli.main(['evaluate', '--config', json.dumps(raw)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'slicez' in err
    del raw['slicez']
    assert cli.main(['evaluate', '--config=' + json.dumps(raw)]) == 2
    err = capsys.readouterr().err.strip()
    assert 'no file matches' in err and str(tmp_path / '*.parquet') in err
    with pytest.raises(SystemExit) as e:  # argparse's own usage error
        cli.main(['evaluate', '--config', json.dumps(raw), '--bad_records', 'skip'])
    assert e.value.code == 2
    assert cli.main(['frobnicate']) == 2


def test_report_subcommand_calls_write_report(monkeypatch, capsys, tmp_path):
    calls = []
    fake = types.ModuleType('pipeline.report')
    fake.write_report = lambda output_dir: calls.append(output_dir) or output_dir + '/report.html'
    monkeypatch.setitem(sys.modules, 'pipeline.report', fake)
    # A complete run: its summary.json lists the files it wrote, and they are there.
    (tmp_path / 'metrics').mkdir()
    (tmp_path / 'metrics' / 'metrics.parquet').write_bytes(b'm')
    (tmp_path / 'summary.json').write_text(json.dumps(
        {'run_id': 'r1', 'files': ['metrics/metrics.parquet']}))
    assert cli.main(['report', str(tmp_path)]) == 0
    assert calls == [str(tmp_path)]
    assert capsys.readouterr().out.strip() == str(tmp_path) + '/report.html'


def test_report_without_the_report_module_says_so(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, 'pipeline.report', None)  # import fails as if missing
    assert cli.main(['report', str(tmp_path)]) == 1
    assert 'report' in capsys.readouterr().err


# A whole run in a fresh interpreter (this one may already hold TensorFlow): windows and a step
# column, TensorBoard on. The run itself must not import TensorFlow; afterwards TFMA, imported
# for real in the same process, loads the run's tfma/ output.
_END_TO_END = r'''
import json, os, sys
from pipeline import cli
config, out = sys.argv[1], sys.argv[2]
code = cli.main(['evaluate', '--config', config, '--output', out, '--run_id', 'r1'])
report = {'exit': code, 'tensorflow_imported': 'tensorflow' in sys.modules,
          'tfma_imported': 'tensorflow_model_analysis' in sys.modules}
import tensorflow_model_analysis as tfma
result = tfma.load_eval_result(os.path.join(out, 'tfma'))
report['tfma_overall'] = {k: v['doubleValue'] for k, v in
                          dict(result.slicing_metrics)[()]['click'][''].items()}
print('RESULT ' + json.dumps(report))
'''


@pytest.mark.tf  # the interpreter imports TFMA (and TensorFlow) once the run is done
def test_a_run_imports_no_tensorflow_and_tfma_loads_its_output(tmp_path):
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    # 8 rows: windows of 60 s ([0, 60) and [60, 120)) crossed with steps 100 and 200.
    x = [0.5, 1.5, 2.0, -1.0, 3.0, 0.0, 1.0, 2.5]
    y = [1.0, 1.0, 0.0, 0.0, 2.0, 1.0, 1.0, 2.0]
    ts = [5, 50, 10, 30, 70, 100, 65, 119]
    gs = [100, 100, 200, 200, 100, 100, 200, 200]
    os.makedirs(tmp_path / 'in')
    pq.write_table(pa.table({'x': pa.array(x, pa.float32()), 'y': pa.array(y, pa.float32()),
                             'ts': ts, 'gs': gs}), str(tmp_path / 'in' / 'part-0.parquet'))
    config = {'input': {'pattern': str(tmp_path / 'in' / '*.parquet')},
              'heads': [{'type': 'RegressionHead', 'args': {'name': 'click'}, 'logits': 'x',
                         'labels': 'y'}],
              'window': {'column': 'ts', 'size': 60}, 'tensorboard': {'step': 'gs'},
              'slices': [[]]}
    out = str(tmp_path / 'out')
    done = subprocess.run([sys.executable, '-c', _END_TO_END, json.dumps(config), out],
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          capture_output=True, text=True, timeout=300)
    lines = [l for l in done.stdout.splitlines() if l.startswith('RESULT ')]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    report = json.loads(lines[0][len('RESULT '):])
    assert report['exit'] == 0
    assert not report['tensorflow_imported'] and not report['tfma_imported']
    # The final progress line counts every row (the job's counters: nothing bad).
    assert 'headstream: run r1: 8 rows read, 0 bad in ' in done.stderr
    # tfma/ holds the latest evaluation: step 200, window [60, 120): rows 6 and 7.
    # Squared errors (1 - 1)^2 = 0 and (2.5 - 2)^2 = 0.25; mean 0.125.
    assert report['tfma_overall']['average_loss'] == pytest.approx((0.0 + 0.25) / 2)
    assert report['tfma_overall']['label/mean'] == pytest.approx((1.0 + 2.0) / 2)
    assert report['tfma_overall']['example_count'] == 2
    # TensorBoard: one run per step under the slice, one event file each.
    tb = os.path.join(out, 'tensorboard', 'Overall')
    assert sorted(os.listdir(tb)) == ['step=100', 'step=200']
    for step in ('step=100', 'step=200'):
        assert os.listdir(os.path.join(tb, step)) == ['events.out.tfevents.headstream.r1']
    metrics = pq.read_table(os.path.join(out, 'metrics')).to_pylist()
    loss = {(r['step'], r['window_start'].timestamp()): r['value'] for r in metrics
            if r['metric'] == 'average_loss'}
    # step 100: window 0 rows 0, 1: (0.5 - 1)^2, (1.5 - 1)^2; window 60 rows 4, 5: 1, 1.
    assert loss == pytest.approx({(100, 0.0): (0.25 + 0.25) / 2, (100, 60.0): (1.0 + 1.0) / 2,
                                  (200, 0.0): (4.0 + 1.0) / 2, (200, 60.0): (0.0 + 0.25) / 2})


class _FakeCounter:
    def __init__(self, name, attempted, committed):
        self.key = types.SimpleNamespace(metric=types.SimpleNamespace(name=name))
        self.attempted, self.committed = attempted, committed


class _FakeRunningResult:
    """A running job's result whose `headstream` counters stand at the given values."""

    def __init__(self, counters):
        self.counters = counters

    def metrics(self):
        counters = self.counters

        class _Metrics:
            def query(self, metrics_filter):
                assert metrics_filter.namespaces == {'headstream'}
                return {'counters': counters, 'distributions': [], 'gauges': []}
        return _Metrics()


def test_progress_lines_from_the_job_counters_or_this_process_tally(caplog):
    import logging

    import pyarrow as pa

    from pipeline import progress as progress_lib
    from pipeline.elements import SourceBatch

    now = [100.0]
    progress = progress_lib.Progress('r9', None, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger='pipeline')
    # Nothing known yet.
    assert progress.report() == 'headstream: run r9: running after 0 s'
    # Rows the Progress step saw in this process (a local run): 3 + 2 rows.
    count = progress_lib.CountRows('r9')
    batch = pa.record_batch({'x': [1.0, 2.0, 3.0]})
    assert list(count.process(SourceBatch('f', 0, batch))) == [SourceBatch('f', 0, batch)]
    list(count.process(SourceBatch('f', 3, batch.slice(0, 2))))
    # Another run's rows.
    list(progress_lib.CountRows('other').process(SourceBatch('g', 0, batch)))
    now[0] = 102.0
    assert progress.report() == 'headstream: run r9: 5 rows read so far in 2 s (2 rows/s)'
    # A running job's counters win (attempted values; two steps' counters add up).
    progress.attach(_FakeRunningResult([_FakeCounter('rows_read', 600, None),
                                        _FakeCounter('rows_read', 400, 300),
                                        _FakeCounter('bad_rows', None, 7)]))
    now[0] = 110.0
    assert progress.report() == (
        'headstream: run r9: 1000 rows read, 7 bad so far in 10 s (100 rows/s)')
    assert progress.report(final=True) == (
        'headstream: run r9: 1000 rows read, 7 bad in 10 s (100 rows/s)')
    # A job whose metrics cannot be queried falls back to the tally, never fails.
    progress.attach(types.SimpleNamespace(metrics=lambda: 1 / 0))
    assert progress.report() == 'headstream: run r9: 5 rows read so far in 10 s (0 rows/s)'
    progress.stop()  # forgets r9's tally, keeps the other run's
    assert 'r9' not in progress_lib._rows_read and progress_lib._rows_read.pop('other') == 3
    assert [r.getMessage() for r in caplog.records if 'run r9' in r.getMessage()][-1] == (
        'headstream: run r9: 5 rows read so far in 10 s (0 rows/s)')


def test_progress_thread_logs_periodically_and_once_at_the_end(caplog):
    import logging
    import time

    from pipeline import progress as progress_lib

    caplog.set_level(logging.INFO, logger='pipeline')
    progress_lib._note_rows_read('r10', 42)
    progress = progress_lib.Progress('r10', 0.01).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
            'so far' in r.getMessage() for r in caplog.records):
        time.sleep(0.01)
    progress.stop()
    lines = [r.getMessage() for r in caplog.records if 'run r10' in r.getMessage()]
    assert lines[0].startswith('headstream: run r10: 42 rows read so far in ')
    assert lines[-1].startswith('headstream: run r10: 42 rows read in ')  # the final line
    assert 'r10' not in progress_lib._rows_read


def test_a_corrupt_shard_exits_1_with_one_line_naming_the_file(capsys, tmp_path):
    import shutil
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    data = tmp_path / 'in'
    shutil.copytree(root / 'examples' / 'data', data)
    bad = sorted(data.glob('*.parquet'))[1]
    bad.write_bytes(b'not a parquet file' * 50)
    config = (root / 'examples' / 'eval.yaml').read_text().replace(
        'examples/data/part-*.parquet', str(data / 'part-*.parquet')).replace(
        'demo_out/example', str(tmp_path / 'out'))
    (tmp_path / 'eval.yaml').write_text(config)
    code = cli.main(['evaluate', '--config', str(tmp_path / 'eval.yaml'),
                     '--runner=DirectRunner'])
    err = capsys.readouterr().err
    assert code == 1
    assert 'headstream: cannot read parquet file %s: ' % bad in err
    assert 'Traceback' not in err
    assert not (tmp_path / 'out' / 'metrics').exists()
