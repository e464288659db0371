"""The command line's start-up: the modules it skips, and that skipping them changes no output.

Each check that changes the import system runs in a fresh interpreter, so this one (which other
tests share) keeps its imports.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

from pipeline import cli, tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_python(code: str, *args: str) -> dict:
    """Runs `code` in a fresh interpreter; returns the JSON it printed after 'RESULT '."""
    done = subprocess.run([sys.executable, '-c', code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    lines = [l for l in done.stdout.splitlines() if l.startswith('RESULT ')]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len('RESULT '):])
    result['stderr'] = done.stderr
    return result


_SKIPPED = r'''
import io, json, logging, sys
from pipeline import tuning
log = io.StringIO()
logging.basicConfig(stream=log, level=logging.WARNING)
skipping = tuning.skip_unused_imports()
import apache_beam  # imports every module it finds installed
import pyarrow as pa
from apache_beam.utils.interactive_utils import is_in_ipython, is_in_notebook
from apache_beam.io.filesystems import FileSystems
# pyarrow's pandas shim is consulted here (pa.scalar inside fill_null); it must do without.
values = pa.array([1.5, None]).fill_null(-1).to_numpy(zero_copy_only=False).tolist()
errors = {}
for name in ('pandas', 'IPython', 'tqdm.notebook', 'pymongo', 'bson.objectid'):
    try:
        __import__(name)
    except ModuleNotFoundError as e:
        errors[name] = [e.name, str(e)]
print('RESULT ' + json.dumps({
    'skipping': skipping, 'loaded': [m for m in tuning.UNUSED_MODULES if m in sys.modules],
    'in_ipython': is_in_ipython(), 'in_notebook': is_in_notebook(), 'values': values,
    'errors': errors, 'log': log.getvalue(), 'again': tuning.skip_unused_imports(),
    'cloud': [m for m in tuning.CLOUD_MODULES if m in sys.modules],
    'gcs': type(FileSystems.get_filesystem('gs://bucket/x')).__name__,
    'finders': sum(type(f).__name__ == '_UnusedModules' for f in sys.meta_path)}))
'''


def test_beam_imports_without_the_skipped_modules_and_says_why_they_are_missing():
    r = _run_python(_SKIPPED)
    assert r['skipping'] is True and r['again'] is True
    assert r['finders'] == 1  # a second call installs nothing more
    assert r['loaded'] == []
    assert r['in_ipython'] is False and r['in_notebook'] is False
    # Without `cloud`, Google Cloud's clients load as usual: gs:// paths work.
    assert 'google.cloud.storage' in r['cloud'] and r['gcs'] == 'GCSFileSystem'
    assert r['values'] == [1.5, -1.0]
    # A submodule's import fails at its package (`bson.objectid` at `bson`).
    for name, missing in (('pandas', 'pandas'), ('IPython', 'IPython'),
                          ('tqdm.notebook', 'tqdm.notebook'), ('pymongo', 'pymongo'),
                          ('bson.objectid', 'bson')):
        assert r['errors'][name][0] == missing
        assert 'skip_unused_imports' in r['errors'][name][1]
    # Beam's MongoDB connector's "bson missing" warning is silenced, nothing else is.
    assert 'bson' not in r['log']
    assert 'Traceback' not in r['stderr']


_ALREADY_IMPORTED = r'''
import json, sys
import pandas
from pipeline import tuning
assert 'pandas.io.formats.style' not in sys.modules
tuning.skip_unused_imports()
import pandas.io.formats.style  # a submodule of a package loaded before: still importable
print('RESULT ' + json.dumps({'style': pandas.io.formats.style.__name__}))
'''


def test_a_package_imported_before_stays_usable():
    assert _run_python(_ALREADY_IMPORTED)['style'] == 'pandas.io.formats.style'


_IN_IPYTHON = r'''
import json, sys
from IPython.core.interactiveshell import InteractiveShell
InteractiveShell.instance()  # a running IPython shell, as in a notebook
from pipeline import tuning
skipping = tuning.skip_unused_imports()
import pandas
from apache_beam.utils.interactive_utils import is_in_ipython
print('RESULT ' + json.dumps({'skipping': skipping, 'in_ipython': is_in_ipython(),
                              'finders': [type(f).__name__ for f in sys.meta_path]}))
'''


def test_inside_ipython_nothing_is_skipped():
    r = _run_python(_IN_IPYTHON)
    assert r['skipping'] is False
    assert r['in_ipython'] is True
    assert '_UnusedModules' not in r['finders']


def test_inside_ipython_nothing_changes_in_process(monkeypatch):
    # Cheap and in this interpreter: an imported `IPython` is the sign of a notebook or shell.
    monkeypatch.setitem(sys.modules, 'IPython', types.ModuleType('IPython'))
    monkeypatch.setattr(sys, 'meta_path', list(sys.meta_path))
    before = list(sys.meta_path)
    assert tuning.skip_unused_imports() is False
    assert sys.meta_path == before


def test_the_finder_names_only_its_packages_and_their_submodules():
    finder = tuning._UnusedModules(['pandas', 'tqdm.notebook'])
    for name in ('pandas', 'pandas.core.frame', 'tqdm.notebook', 'tqdm.notebook.x'):
        with pytest.raises(ModuleNotFoundError) as e:
            finder.find_spec(name)
        assert e.value.name == name
    for name in ('pandasx', 'tqdm', 'tqdm.std', 'numpy', 'pyarrow.pandas_compat'):
        assert finder.find_spec(name) is None


# A run through the command line's own entry (`main()` reads sys.argv, as the `headstream` script
# and `python -m pipeline` do), in a fresh interpreter, with the TFMA, TensorBoard and report
# writers and dead-letter rows: it must skip the unused modules and, a local run, Google Cloud's
# clients, import no TensorFlow, and write what a run inside a program (no skipping) writes.
_OWN_PROCESS = r'''
import gc, json, sys
from pipeline import cli, tuning
sys.argv = ['headstream'] + sys.argv[1:]
code = cli.main()
print('RESULT ' + json.dumps({
    'exit': code, 'loaded': [m for m in tuning.UNUSED_MODULES if m in sys.modules],
    'cloud_loaded': [m for m in tuning.CLOUD_MODULES if m in sys.modules],
    'tensorflow': 'tensorflow' in sys.modules, 'frozen': gc.get_freeze_count()}))
'''


def test_a_run_through_the_command_line_entry_skips_them_and_writes_the_same(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(tmp_path / 'in')
    # Row 3's label is null: a bad row, sent to errors/ (dead_letter).
    pq.write_table(pa.table({'x': pa.array([0.5, 1.5, 2.0, 4.0], pa.float32()),
                             'y': pa.array([1.0, 1.0, 0.0, None], pa.float32()),
                             'gs': [100, 100, 200, 200], 'c': ['a', 'b', 'a', 'b']}),
                   str(tmp_path / 'in' / 'part-0.parquet'))
    config = {'input': {'pattern': str(tmp_path / 'in' / '*.parquet')},
              'heads': [{'type': 'RegressionHead', 'args': {'name': 'r'}, 'logits': 'x',
                         'labels': 'y'}],
              'tensorboard': {'step': 'gs'}, 'slices': [[], ['c']]}
    args = ['evaluate', '--config', json.dumps(config), '--run_id', 'r1',
            '--bad_records', 'dead_letter']
    r = _run_python(_OWN_PROCESS, *args, '--output', str(tmp_path / 'cli'))
    assert r['exit'] == 0
    assert r['loaded'] == [] and r['tensorflow'] is False
    assert r['cloud_loaded'] == []  # a local run: no Google Cloud client either
    assert 'WARNING' not in r['stderr']  # Beam's warnings about the skipped modules are silenced
    assert r['frozen'] > 0  # the imported modules' objects were spared the collector
    assert cli.main(args + ['--output', str(tmp_path / 'lib')]) == 0

    def table(run: str, name: str) -> list[dict]:
        rows = pq.read_table(str(tmp_path / run / name)).to_pylist()
        for row in rows:
            row.pop('evaluated_at', None)
        return sorted(rows, key=repr)

    for name in ('metrics', 'plots', 'errors'):
        assert table('cli', name) == table('lib', name), name
    metrics = table('cli', 'metrics')
    overall = {m['step']: m['value'] for m in metrics
               if m['slice'] == 'Overall' and m['metric'] == 'average_loss'}
    # step 100: rows 0, 1: ((0.5 - 1)^2 + (1.5 - 1)^2) / 2; step 200: row 2 only: (2 - 0)^2.
    assert overall == pytest.approx({100: (0.25 + 0.25) / 2, 200: 4.0})
    assert len(table('cli', 'errors')) == 1
    for run in ('cli', 'lib'):
        assert (tmp_path / run / 'report.html').exists()
        assert (tmp_path / run / 'tfma' / 'eval_config.json').exists()
    for run in ('cli', 'lib'):
        assert os.listdir(tmp_path / run / 'tensorboard' / 'Overall') == [
            'events.out.tfevents.headstream.r1']
    for f in ('metrics-00000-of-00001.tfrecord', 'plots-00000-of-00001.tfrecord'):
        assert ((tmp_path / 'cli' / 'tfma' / f).read_bytes()
                == (tmp_path / 'lib' / 'tfma' / f).read_bytes())


# Whether a command may use Google Cloud (then its clients are imported as usual).
@pytest.mark.parametrize('argv, expected', [
    (['--config', 'LOCAL'], False),
    (['--config=LOCAL', '--runner', 'DirectRunner', '--output', '/tmp/o'], False),
    (['--config', 'LOCAL', '--runner=DaskRunner', '--dask_local_workers', '2'], False),
    (['--config', '{"input": {"pattern": "/data/*.parquet"}}'], False),
    (['/tmp/out'], False),  # `report DIR`
    (['--config', 'LOCAL', '--output', 'gs://b/out'], True),
    (['gs://b/run1'], True),  # `report gs://...`
    (['--config', '{"input": {"pattern": "gs://b/*.parquet"}}'], True),
    (['--config', 'CLOUDY'], True),  # a local config naming a gs:// path
    (['--config', 'gs://b/eval.yaml'], True),
    (['--config', 's3://b/eval.yaml'], True),  # not a local file: cannot tell
    (['--config', 'MISSING'], True),
    (['--config', 'LOCAL', '--bigquery_table', 'p:d.t'], True),
    (['--config', 'LOCAL', '--bigquery_table=d.t'], True),
    (['--config', 'LOCAL', '--streaming'], True),
    (['--config', 'LOCAL', '--runner', 'DataflowRunner'], True),
    (['--config', 'LOCAL', '--runner=PortableRunner'], True),
    (['--config', 'LOCAL', '--temp_location', 'gs://b/tmp'], True),
    (['--config', 'ESCAPED'], True),  # JSON naming a gs:// path with escaped slashes
    (['--config', 'BROKEN'], True),   # does not parse: the run will say why
    (['--config', 'DIRECTORY'], True),  # not a regular file (a pipe is not read twice either)
    (['--config', '/dev/stdin'], True),
])
def test_needs_google_cloud(argv, expected, tmp_path):
    (tmp_path / 'local.yaml').write_text('input: {pattern: /data/*.parquet}\noutput: /tmp/o\n')
    (tmp_path / 'cloudy.yaml').write_text('input: {pattern: /data/*.parquet}\n'
                                          'output: gs://bucket/out\n')
    (tmp_path / 'escaped.json').write_text('{"input": {"pattern": "/data/*.parquet"}, '
                                           '"output": "gs:\\/\\/bucket\\/out"}')
    (tmp_path / 'broken.yaml').write_text('input: [unclosed\n')
    paths = {'LOCAL': str(tmp_path / 'local.yaml'), 'CLOUDY': str(tmp_path / 'cloudy.yaml'),
             'MISSING': str(tmp_path / 'missing.yaml'), 'ESCAPED': str(tmp_path / 'escaped.json'),
             'BROKEN': str(tmp_path / 'broken.yaml'), 'DIRECTORY': str(tmp_path)}
    def fill(arg: str) -> str:
        for name, path in paths.items():
            arg = arg.replace(name, path)
        return arg

    assert tuning.needs_google_cloud([fill(a) for a in argv]) is expected


def test_watch_takes_no_abbreviated_flags():
    # The start-up reads `--config` to decide on Google Cloud; an abbreviation would slip past it.
    from pipeline import watch
    with pytest.raises(SystemExit):
        watch.parser().parse_args(['--conf', 'eval.yaml'])
    assert watch.parser().parse_args(['--config', 'eval.yaml']).config == 'eval.yaml'
