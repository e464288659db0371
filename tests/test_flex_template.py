"""The Dataflow Flex Template, offline: metadata.json against the CLI, the Dockerfile against the
pins, the launcher's argument handling and no-wait submission, the DataflowRunner graph, setup.py.

Nothing here talks to Google Cloud: the graph is built and converted to its runner-API proto,
and `Pipeline.run` is replaced where a submission would happen.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import launcher
from pipeline.cli_args import evaluate_parser

ROOT = Path(__file__).resolve().parents[1]
FLEX = ROOT / 'templates' / 'flex'
# `--dry_run` keeps Beam's option validation off the network (no bucket lookups).
DATAFLOW_ARGS = ['--runner', 'DataflowRunner', '--project', 'headstream-test',
                 '--region', 'us-central1', '--temp_location', 'gs://headstream-test/tmp',
                 '--dry_run', 'True']

# Values the template's form must accept / reject, per parameter.
ACCEPT = {
    'config': ['gs://b/eval.yaml', 'gs://my-bucket/eval/eval.json',
               '{"input": {"pattern": "gs://b/part-*.parquet"}}',
               '{\n  "input": {"pattern": "gs://b/*.csv", "format": "csv"}\n}'],
    'output': ['gs://b/out', 'gs://my-bucket/eval/runs/2026-11-23'],
    'bad_records': ['fail', 'dead_letter'],
    'write_predictions': ['true', 'false'],
    'overwrite': ['false', 'true'],
    'run_id': ['run-1', '20261123T083522Z-1a2b3c', 'a.b:c_d', 'x' * 128],
    'bigquery_table': ['my-project:evals.metrics', 'evals.metrics', 'my-project.evals.metrics',
                       'example.com:my-project:evals.metrics', 'evals_2.metrics_v1'],
}
REJECT = {
    'config': ['', 'eval.yaml', '/local/eval.yaml', 's3://b/eval.yaml', 'gs://',
               '{"input": 1', 'gs://b/eval.yaml\n', 'input: {pattern: x}'],
    'output': ['', 'out/run1', '/tmp/out', 'gs://', 's3://b/out', 'gs://b/out\n'],
    'bad_records': ['', 'Fail', 'dead-letter', 'skip', 'fail '],
    'write_predictions': ['', 'yes', '1', 'maybe', 'true\n'],
    'overwrite': ['', 'yes', 'True', 'true\n'],
    'run_id': ['', 'has space', 'a/b', 'x' * 129, 'run\n', '.', '..', '.staging-x',
               'x/../../victim'],
    'bigquery_table': ['', 'metrics', 'my project:evals.metrics', 'evals.metrics\n',
                       'gs://b/evals.metrics', 'evals metrics.t'],
}


def _metadata() -> dict:
    return json.loads((FLEX / 'metadata.json').read_text())


def _parameters() -> dict[str, dict]:
    return {p['name']: p for p in _metadata()['parameters']}


def _cli_options() -> dict[str, argparse.Action]:
    """`headstream evaluate`'s options by name (`--config` -> 'config'), from its parser."""
    out = {}
    for action in evaluate_parser()._actions:
        for flag in action.option_strings:
            if flag.startswith('--') and flag != '--help':
                out[flag[2:]] = action
    return out


def _requirement_pin(name: str) -> str:
    for line in (ROOT / 'requirements.txt').read_text().splitlines():
        m = re.match(r'^\s*%s(\[[^\]]*\])?==(\S+)' % re.escape(name), line)
        if m:
            return m.group(2)
    raise AssertionError('requirements.txt pins no %s' % name)


# --- metadata.json -------------------------------------------------------------------------------


def test_metadata_is_complete():
    meta = _metadata()
    assert meta['name'] and meta['description']
    # Only the keys Dataflow's template metadata has (the SDK language is the build's
    # `--sdk-language PYTHON`, which the README's build command passes).
    assert set(meta) <= {'name', 'description', 'streaming', 'supportsAtLeastOnce',
                         'supportsExactlyOnce', 'defaultStreamingMode', 'parameters'}, set(meta)
    assert meta.get('streaming') is False
    assert '--sdk-language PYTHON' in (FLEX / 'README.md').read_text()
    names = [p['name'] for p in meta['parameters']]
    assert len(names) == len(set(names)), names
    for p in meta['parameters']:
        for key in ('name', 'label', 'helpText', 'isOptional', 'regexes'):
            assert key in p, (p['name'], key)
        assert isinstance(p['isOptional'], bool), p['name']
        assert p['label'].strip() and p['helpText'].strip(), p['name']
        assert p['regexes'], p['name']


def test_every_parameter_is_an_evaluate_option_and_back():
    """Template parameters and `headstream evaluate`'s options are the same set of names."""
    params, options = _parameters(), _cli_options()
    assert set(params) == set(options), (set(params) ^ set(options))
    help_text = evaluate_parser().format_help()
    for name in params:
        assert '--' + name in help_text, name


def test_required_parameters_are_the_required_options():
    params, options = _parameters(), _cli_options()
    for name, p in params.items():
        assert p['isOptional'] is (not options[name].required), name
    assert params['config']['isOptional'] is False


def test_regexes_compile_and_are_anchored():
    for name, p in _parameters().items():
        for rx in p['regexes']:
            re.compile(rx)
            # Anchored, so whole-value (Dataflow) and substring matching engines agree.
            assert rx.startswith('^') and rx.endswith('$'), (name, rx)


@pytest.mark.parametrize('name', sorted(ACCEPT))
def test_regexes_accept_good_and_reject_bad_values(name):
    regexes = [re.compile(rx) for rx in _parameters()[name]['regexes']]

    def ok(value: str) -> bool:
        return all(rx.fullmatch(value) for rx in regexes)

    for value in ACCEPT[name]:
        assert ok(value), (name, value)
    for value in REJECT[name]:
        assert not ok(value), (name, value)


@pytest.mark.parametrize('name', sorted(ACCEPT))
def test_values_the_form_accepts_parse_as_the_cli_expects(name):
    """Whatever passes the form also passes `headstream evaluate`'s parser, as `--name=value`."""
    base = [] if name == 'config' else ['--config=gs://b/eval.yaml']
    for value in ACCEPT[name]:
        args = evaluate_parser().parse_args(base + ['--%s=%s' % (name, value)])
        parsed = getattr(args, name)
        if name in ('write_predictions', 'overwrite'):
            assert parsed is (value == 'true')
        else:
            assert parsed == value


def test_every_parameter_is_covered_by_samples():
    assert set(ACCEPT) == set(_parameters()) == set(REJECT)


# --- Dockerfile ----------------------------------------------------------------------------------


def _dockerfile() -> str:
    return (FLEX / 'Dockerfile').read_text()


def _arg_default(text: str, name: str) -> str:
    m = re.search(r'^ARG %s=(\S+)\s*$' % name, text, re.M)
    assert m, 'Dockerfile: no ARG %s=...' % name
    return m.group(1)


def test_dockerfile_uses_beams_sdk_image_at_the_pinned_version():
    text = _dockerfile()
    assert _arg_default(text, 'BEAM_VERSION') == _requirement_pin('apache-beam')
    python = _arg_default(text, 'PYTHON_VERSION')
    assert python == '3.11'
    froms = re.findall(r'^FROM\s+(\S+)', text, re.M)
    assert 'apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}' in froms
    # The launcher base image is for the same Python.
    launcher_base = [f for f in froms if 'template-launcher-base' in f]
    assert launcher_base and 'python%s-' % python.replace('.', '') in launcher_base[0]
    # The final stage is the SDK image (workers boot from it).
    assert froms[-1].startswith('apache/beam_python')


def test_dockerfile_copies_the_launcher_binary_and_points_at_launcher_py():
    text = _dockerfile()
    assert re.search(r'COPY --from=template_launcher'
                     r'\s+/opt/google/dataflow/python_template_launcher'
                     r'\s*\\?\s*/opt/google/dataflow/python_template_launcher', text)
    m = re.search(r'^ENV FLEX_TEMPLATE_PYTHON_PY_FILE="\$\{WORKDIR\}/(\S+)"', text, re.M)
    assert m and m.group(1) == 'pipeline/launcher.py'
    assert (ROOT / m.group(1)).is_file()
    assert 'FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE=' not in text
    assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]', text, re.M)


def test_dockerfile_installs_exactly_the_pinned_requirements():
    text = _dockerfile()
    assert re.search(r'^COPY requirements\.txt constraints\.txt ', text, re.M)
    assert re.search(r'^RUN pip install --no-cache-dir -r requirements\.txt\s*$', text, re.M)
    # requirements.txt constrains the transitive set; headstream itself adds nothing to it.
    assert (ROOT / 'requirements.txt').read_text().splitlines()[0:10].count(
        '-c constraints.txt') == 1
    assert re.search(r'pip install --no-cache-dir --no-deps (-e )?\.', text)
    # The constraints pin the same Beam as requirements.txt.
    assert 'apache-beam==%s' % _requirement_pin('apache-beam') in (
        ROOT / 'constraints.txt').read_text().splitlines()
    # Every path the image copies exists and is in the build context.
    ignore = (FLEX / 'Dockerfile.dockerignore').read_text().splitlines()
    for line in re.findall(r'^COPY (?!--from)(.+) \$\{WORKDIR\}/?\S*$', text, re.M):
        for path in line.split():
            assert (ROOT / path).exists(), path
            assert '!' + path in ignore or '!' + path + '/' in ignore, path


def test_cloudbuild_builds_this_dockerfile():
    text = (FLEX / 'cloudbuild.yaml').read_text()
    assert 'templates/flex/Dockerfile' in text and 'IMAGE=${_IMAGE}' in text


# --- launcher ------------------------------------------------------------------------------------


def test_launcher_parses_template_parameters_as_flags(monkeypatch):
    monkeypatch.delenv(launcher.IMAGE_ENV, raising=False)
    args, beam_args = launcher.launch_args([
        '--config=gs://b/eval.yaml', '--write_predictions=true', '--bad_records=dead_letter',
        '--run_id=r1', '--output=gs://b/out', '--project=headstream-test', '--region=us-central1'])
    assert (args.config, args.write_predictions, args.bad_records, args.run_id, args.output) == (
        'gs://b/eval.yaml', True, 'dead_letter', 'r1', 'gs://b/out')
    assert beam_args == ['--runner=DataflowRunner', '--project=headstream-test',
                         '--region=us-central1']
    # A runner given by the launch is kept; false parses as False.
    args, beam_args = launcher.launch_args(['--config', 'gs://b/e.yaml', '--runner',
                                            'DirectRunner', '--write_predictions=false'])
    assert args.write_predictions is False and beam_args == ['--runner', 'DirectRunner']


def test_launcher_passes_its_image_to_the_workers(monkeypatch):
    monkeypatch.setenv(launcher.IMAGE_ENV, 'r-docker.pkg.dev/p/repo/headstream:0.1.0')
    _, beam_args = launcher.launch_args(['--config=gs://b/e.yaml'])
    assert '--sdk_container_image=r-docker.pkg.dev/p/repo/headstream:0.1.0' in beam_args
    _, beam_args = launcher.launch_args(['--config=gs://b/e.yaml',
                                         '--sdk_container_image=other:1'])
    assert [a for a in beam_args if 'container_image' in a] == ['--sdk_container_image=other:1']


def test_launcher_rejects_a_bad_parameter():
    with pytest.raises(SystemExit) as e:
        launcher.launch_args(['--config=gs://b/e.yaml', '--bad_records=skip'])
    assert e.value.code == 2


def _dataset(tmp_path: Path) -> dict:
    """A small Parquet input and a config for one BinaryClassHead sliced by country."""
    rng = np.random.default_rng(7)
    data = tmp_path / 'data'
    data.mkdir()
    for i in range(2):
        n = 20
        pq.write_table(pa.table({
            'click_logits': rng.normal(size=n),
            'click_label': rng.integers(0, 2, n).astype(np.float64),
            'country': rng.choice(['US', 'DE'], n),
        }), data / ('part-%d.parquet' % i))
    return {
        'input': {'pattern': str(data / 'part-*.parquet')},
        'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click'},
                   'logits': 'click_logits', 'labels': 'click_label'}],
        'slices': [[], ['country']],
        'output': str(tmp_path / 'out'),
    }


def test_pipeline_graph_builds_for_dataflow_without_submitting(tmp_path):
    import datetime

    import apache_beam as beam

    from pipeline import graph, run
    from pipeline.run_options import RunOptions

    config, files, dictionary_columns = run.prepare(_dataset(tmp_path))
    options = run.pipeline_options(DATAFLOW_ARGS)
    runner = run.make_runner(options)
    p = beam.Pipeline(runner=runner, options=options)
    assert type(p.runner).__name__ == 'DataflowRunner'
    graph.build_pipeline(p, config, files, RunOptions(
        'run-1', datetime.datetime(2026, 11, 23, tzinfo=datetime.timezone.utc),
        bad_records='dead_letter', dictionary_columns=dictionary_columns))
    proto = p.to_runner_api()
    labels = {t.unique_name for t in proto.components.transforms.values()}
    for stage in ('Read', 'ApplyHeads', 'Combine', 'Write'):
        assert stage in labels, (stage, sorted(labels)[:20])
    # Every DoFn survived pickling into the proto (what Dataflow receives).
    assert any(t.spec.urn == 'beam:transform:pardo:v1'
               for t in proto.components.transforms.values())


class _NeverWaitedResult:
    """What `Pipeline.run` returns in the test: fails if anyone waits for the job."""

    def wait_until_finish(self, duration=None):
        raise AssertionError('the launcher waited for the Dataflow job')

    @property
    def state(self):
        return 'RUNNING'


def test_launcher_submits_and_does_not_wait(tmp_path, monkeypatch):
    import apache_beam as beam

    submitted = []

    def fake_run(self, test_runner_api='AUTO'):
        submitted.append(type(self.runner).__name__)
        return _NeverWaitedResult()

    monkeypatch.setattr(beam.Pipeline, 'run', fake_run)
    monkeypatch.delenv(launcher.IMAGE_ENV, raising=False)
    config = _dataset(tmp_path)
    out = launcher.launch(['--config=' + json.dumps(config), '--output=' + str(tmp_path / 'o'),
                           '--run_id=r7', '--project=headstream-test', '--region=us-central1',
                           '--temp_location=gs://headstream-test/tmp', '--dry_run=True'])
    assert submitted == ['DataflowRunner']
    assert out == {'run_id': 'r7', 'output': str(tmp_path / 'o'), 'state': 'submitted'}
    assert launcher.main(['--config=' + json.dumps(config), '--project=headstream-test',
                          '--region=us-central1', '--temp_location=gs://headstream-test/tmp',
                          '--dry_run=True']) == 0
    assert submitted == ['DataflowRunner'] * 2


def test_launcher_hands_every_parameter_to_evaluate(monkeypatch):
    """Each template parameter reaches `pipeline.run.evaluate` as the keyword of its name."""
    import pipeline.run
    calls = []
    monkeypatch.setattr(pipeline.run, 'evaluate',
                        lambda config, args, **kwargs: calls.append((config, args, kwargs)))
    monkeypatch.delenv(launcher.IMAGE_ENV, raising=False)
    values = {name: samples[0] for name, samples in ACCEPT.items()}
    launcher.launch(['--%s=%s' % kv for kv in values.items()] + ['--project=headstream-test'])
    ((config, args, kwargs),) = calls
    assert config == values.pop('config')
    assert args == ['--runner=DataflowRunner', '--project=headstream-test']
    assert kwargs.pop('wait') is False
    assert kwargs.pop('write_predictions') is (values.pop('write_predictions') == 'true')
    assert kwargs.pop('overwrite') is (values.pop('overwrite') == 'true')
    assert kwargs == values


def test_run_id_rule_is_the_cli_rule():
    """The form's run_id regex is the one `headstream evaluate --run_id` checks
    (`pipeline.config.check_run_id`), so a value passes both or neither."""
    from pipeline.config import RUN_ID_PATTERN, ConfigError, check_run_id
    assert _parameters()['run_id']['regexes'] == [RUN_ID_PATTERN]
    for value in ACCEPT['run_id']:
        assert check_run_id(value) == value
    for value in REJECT['run_id']:
        with pytest.raises(ConfigError, match='run id'):
            check_run_id(value)


def test_launcher_script_reports_a_bad_config_before_submitting(tmp_path):
    """Run as Dataflow runs it (a script path): a pattern matching nothing exits 2, named."""
    config = _dataset(tmp_path)
    config['input']['pattern'] = str(tmp_path / 'nothing-*.parquet')
    env = dict(os.environ, PYTHONPATH='')
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'pipeline' / 'launcher.py'), '--config=' + json.dumps(config),
         '--project=headstream-test', '--region=us-central1',
         '--temp_location=gs://headstream-test/tmp', '--dry_run=True'],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'input.pattern' in proc.stderr and 'nothing-*.parquet' in proc.stderr


# --- setup.py ------------------------------------------------------------------------------------


def test_setup_py_builds_an_sdist_with_both_packages(tmp_path):
    """What `--setup_file ./setup.py` stages for plain DataflowRunner runs."""
    src = tmp_path / 'src'
    src.mkdir()
    for name in ('setup.py', 'README.md', 'requirements.txt', 'constraints.txt'):
        shutil.copy(ROOT / name, src / name)
    for pkg in ('heads', 'pipeline', 'templates'):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns('__pycache__'))
    proc = subprocess.run([sys.executable, 'setup.py', '-q', 'sdist'], cwd=str(src),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sdist,) = (src / 'dist').glob('headstream-*.tar.gz')
    with tarfile.open(sdist) as tar:
        names = {n.split('/', 1)[1] for n in tar.getnames() if '/' in n}
    for module in ('heads/__init__.py', 'pipeline/__init__.py', 'pipeline/run.py',
                   'pipeline/launcher.py', 'pipeline/dask_runner.py',
                   'pipeline/writers/__init__.py', 'templates/report/report.html.j2'):
        assert module in names, module
