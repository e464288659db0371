"""The command line: options, pass-through to Beam, exit codes and one-line messages."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from pipeline import cli
from pipeline.run import make_runner, pipeline_options


def _parse(argv):
    return cli.evaluate_parser().parse_known_args(argv)


def test_evaluate_help_lists_every_option():
    out = subprocess.run([sys.executable, '-m', 'pipeline', 'evaluate', '--help'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for option in ('--config', '--output', '--bad_records', '--write_predictions', '--run_id',
                   '--runner'):
        assert option in out.stdout


def test_flag_value_and_flag_equals_value_are_the_same():
    a, beam_a = _parse(['--config', 'c.yaml', '--output', 'o', '--bad_records', 'dead_letter',
                        '--run_id', 'r1', '--runner', 'DirectRunner', '--project', 'p'])
    b, beam_b = _parse(['--config=c.yaml', '--output=o', '--bad_records=dead_letter',
                        '--run_id=r1', '--runner=DirectRunner', '--project=p'])
    assert vars(a) == vars(b) == {'config': 'c.yaml', 'output': 'o',
                                  'bad_records': 'dead_letter', 'write_predictions': False,
                                  'run_id': 'r1'}
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
    assert cli.main(['report', str(tmp_path)]) == 0
    assert calls == [str(tmp_path)]
    assert capsys.readouterr().out.strip() == str(tmp_path) + '/report.html'


def test_report_without_the_report_module_says_so(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, 'pipeline.report', None)  # import fails as if missing
    assert cli.main(['report', str(tmp_path)]) == 1
    assert 'report' in capsys.readouterr().err
