"""The `headstream` command line (also `python -m pipeline`).

    headstream evaluate --config eval.yaml [--output DIR] [--bad_records fail|dead_letter]
                        [--write_predictions[=true|false]] [--run_id ID] [--overwrite]
                        [--bigquery_table PROJECT:DATASET.TABLE] [Beam options...]
    headstream evaluate --streaming --config eval.yaml --runner DataflowRunner
                        [--input_subscription S | --input_topic T] [Beam options...]
    headstream watch --config eval.yaml [--output DIR] [--poll SECONDS] [--settle SECONDS] [--once]
    headstream report OUTPUT_DIR

Options take `--flag value` or `--flag=value`. Options this command does not know pass through to
Beam's PipelineOptions (`--runner DataflowRunner --project ... --region ... --temp_location ...`);
the default runner is the DirectRunner. While the run goes on, the rows read so far are logged
every 30 s. Exit codes: 0 success, 1 a failed run (a bad record names
file, row and column), 2 an invalid config or command line, or an output directory that cannot
take the run (another run holds its lock; it holds files no headstream run wrote and
`--overwrite` is not given), 130 interrupted (Ctrl-C: nothing is published, the run's staging
files are deleted).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.abc
import logging
import os
import sys
from typing import Any, Iterator, Sequence

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process killed by Ctrl-C

_EVALUATE_EPILOG = """\
Any other option is a Beam pipeline option and passes through, e.g.
  --runner DirectRunner | DataflowRunner | DaskRunner   (default DirectRunner)
  --project P --region R --temp_location gs://B/tmp     (Dataflow)
  --dask_client_address tcp://HOST:8786                 (Dask; without it, a local cluster of
  --dask_local_workers N                                 N worker processes, default 2)
  --direct_num_workers N --direct_running_mode multi_processing
"""


# Packages a headstream command never uses, which Beam, google-cloud-bigquery and pyarrow import
# merely because they are installed (about 0.5 s of the 1.2 s a command took to import Beam, 940
# of its 2,900 modules): IPython, ipykernel, ipywidgets and tqdm.notebook are for notebooks
# (google.cloud.bigquery imports tqdm.notebook, hence ipywidgets and IPython, for progress bars a
# command line never shows; Beam imports IPython on every transform applied, to ask whether it runs
# in a notebook); pandas is an optional extra of Beam's type hints and of pyarrow's conversions;
# pymongo and bson are Beam's MongoDB connector. Each importer treats an ImportError as "not
# installed" (checked in the sources of Beam 2.77, google-cloud-bigquery 3.47 and pyarrow 25).
UNUSED_MODULES = ('IPython', 'ipykernel', 'ipywidgets', 'tqdm.notebook', 'pandas', 'pymongo',
                  'bson')
_MONGO_WARNING = 'Could not find a compatible bson package.'
# Google Cloud's client libraries, which Beam imports (about 0.25 s more) for gs:// paths,
# BigQuery, Pub/Sub and the Dataflow runner; each Beam module that imports them catches the
# ImportError. A command skips them only when it cannot need them (`needs_google_cloud`).
CLOUD_MODULES = ('google.auth', 'google.api_core', 'google.cloud.storage', 'google.cloud.bigquery',
                 'google.cloud.bigquery_storage', 'google.cloud.bigquery_storage_v1',
                 'google.cloud.pubsub', 'google.cloud.pubsub_v1', 'google.cloud.dataflow',
                 'google.cloud.dataflow_v1beta3', 'apitools')
# Beam's warning (on the root logger) when the BigQuery client libraries are missing.
_BIGQUERY_WARNING = ('apitools not found, and bigquery client libraries are not available '
                     'despite the import not raising an ImportError.')
# Runners that run in this process or on a Dask cluster (`--runner`, lower case); any other
# runner may be Google Cloud's.
_LOCAL_RUNNERS = ('direct', 'directrunner', 'dask', 'daskrunner', 'headstreamdaskrunner')


class _UnusedModules(importlib.abc.MetaPathFinder):
    """An import finder that reports `names` (packages, with their submodules) as not installed."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        for name in self.names:
            if fullname == name or fullname.startswith(name + '.'):
                raise ModuleNotFoundError(
                    'No module named %r: a headstream command does not load it (see '
                    'pipeline.cli.skip_unused_imports)' % fullname, name=fullname)
        return None  # any other module: the next finder looks for it


def _not_a_missing_module_warning(record: logging.LogRecord) -> bool:
    return record.getMessage() not in (_MONGO_WARNING, _BIGQUERY_WARNING)


def _flag_values(argv: Sequence[str], name: str) -> list[str]:
    """The values given to `--name` in argv (`--name value` or `--name=value`)."""
    values = []
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif a.startswith(name + '='):
            values.append(a[len(name) + 1:])
    return values


def needs_google_cloud(argv: Sequence[str]) -> bool:
    """Whether a command (`evaluate ...`, `watch ...`, `report DIR`) may use Google Cloud.

    It may unless all of these hold: no argument names a gs:// path; the config, when given, is
    inline or a regular local file, and no string in it names a gs:// path (read as YAML, which
    JSON is, so escaped slashes count too); no `--bigquery_table`, no `--streaming`; the runner,
    when given, is the DirectRunner or the DaskRunner. Anything else (a config on another file
    system or through a pipe, which must not be read twice, a config that does not parse,
    another runner) counts as needing it.
    """
    if any('gs://' in a for a in argv):
        return True
    if _flag_values(argv, '--bigquery_table') or any(
            a == '--streaming' or a.startswith('--streaming=') for a in argv):
        return True
    for runner in _flag_values(argv, '--runner'):
        if runner.split('.')[-1].lower() not in _LOCAL_RUNNERS:
            return True
    for config in _flag_values(argv, '--config'):
        text = config.strip()
        if not (text.startswith('{') or '\n' in text):  # a path, not the config itself
            if not os.path.isfile(text):
                return True  # not a regular local file: let the run read it as usual
            try:
                with open(text, encoding='utf-8') as f:
                    text = f.read()
            except (OSError, ValueError):
                return True
        if 'gs://' in text or _names_gcs(text):
            return True
    return False


def _names_gcs(text: str) -> bool:
    """Whether a config's text (YAML or JSON) holds a string naming a gs:// path; True when it
    does not parse (the run will say why)."""
    import yaml
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return True
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if 'gs://' in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def skip_unused_imports(cloud: bool = False) -> bool:
    """Makes this process treat `UNUSED_MODULES` as not installed; to call before Beam is imported.

    It cuts a command's start-up by about 0.5 s (of 1.2 s). Safe because every module that
    imports one of them catches the ImportError and goes on without it: Beam's `is_in_ipython`
    answers False, which is the truth outside IPython; google.cloud.bigquery shows no notebook
    progress bar; pyarrow converts without its pandas shim; Beam's type hints skip their pandas
    types; Beam's MongoDB connector is disabled (its warning saying so is silenced). No
    headstream feature (the evaluation on every runner, Dask included, the BigQuery sink, the
    Pub/Sub streaming graph, the TFMA, TensorBoard and report writers) uses any of them in this
    process; worker processes (Dask's, Beam's, Dataflow's) start their own interpreters and are
    unaffected. A package this process already imported stays usable, and inside IPython or
    Jupyter (`IPython` already imported) nothing changes. Only the command line calls this: a
    program that imports headstream's modules keeps its imports as they are.

    With `cloud`, Google Cloud's client libraries (`CLOUD_MODULES`) are skipped too, 0.25 s
    more, for a command that cannot need them (`needs_google_cloud` is False): Beam then
    registers no gs:// file system, and its BigQuery, Pub/Sub and Dataflow modules load without
    their clients, which such a command does not use.

    Returns:
      True when the imports are skipped from now on, False inside IPython.
    """
    if 'IPython' in sys.modules:
        return False
    if not any(isinstance(f, _UnusedModules) for f in sys.meta_path):
        names = [n for n in UNUSED_MODULES + (CLOUD_MODULES if cloud else ())
                 if n not in sys.modules]
        sys.meta_path.insert(0, _UnusedModules(names))
        # Beam warns when its optional pymongo (and, with `cloud`, its BigQuery clients) are
        # missing.
        logging.getLogger('apache_beam.io.mongodbio').addFilter(_not_a_missing_module_warning)
        if cloud:
            logging.getLogger().addFilter(_not_a_missing_module_warning)
    return True


def settle_imports() -> None:
    """Imports Beam, then exempts every object alive so far from the cyclic garbage collector.

    A command's process holds the objects of some 1,900 modules (Beam's, Google's clients',
    pyarrow's) until it exits. Each full collection would scan them all again (about 0.05 s each;
    a run triggers several), and so would the interpreter's last collection at exit.
    `gc.freeze()` moves them to the permanent generation, which collections skip: they are still
    freed by reference counting; a garbage cycle among them (none is expected of module-level
    state) would only stay allocated until the process ends.
    """
    importlib.import_module('apache_beam')
    gc.freeze()


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ('true', '1', 'yes', 'y', 'on'):
        return True
    if v in ('false', '0', 'no', 'n', 'off'):
        return False
    raise argparse.ArgumentTypeError('expected true or false, got %r' % value)


def evaluate_parser(prog: str = 'headstream evaluate') -> argparse.ArgumentParser:
    """The `evaluate` options (every one a Flex Template parameter maps to, as `--name`)."""
    parser = argparse.ArgumentParser(
        prog=prog, description='Evaluate heads over a dataset: metrics per slice and head.',
        epilog=_EVALUATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    parser.add_argument('--config', required=True,
                        help='the evaluation config: a YAML/JSON file (local or gs://), or the '
                             'config itself as inline JSON')
    parser.add_argument('--output', default=None,
                        help="output directory (local or gs://); overrides the config's `output`")
    parser.add_argument('--bad_records', choices=('fail', 'dead_letter'), default='fail',
                        help='fail (default): the first bad row stops the run naming file, row '
                             'and column; dead_letter: bad rows go to errors/ and the rest is '
                             'evaluated')
    parser.add_argument('--write_predictions', nargs='?', const=True, default=False, type=_bool,
                        metavar='true|false',
                        help='also write predictions/ (predictions and per-example loss per head)')
    parser.add_argument('--run_id', default=None,
                        help='id stamped on every output row (default: from the start time)')
    parser.add_argument('--overwrite', nargs='?', const=True, default=False, type=_bool,
                        metavar='true|false',
                        help='publish into an output directory that holds files no headstream '
                             'run wrote (they are kept: only an earlier run\'s files are '
                             'replaced); without it such a directory is refused')
    parser.add_argument('--bigquery_table', default=None, metavar='PROJECT:DATASET.TABLE',
                        help='also append the metrics rows to this BigQuery table (created if '
                             'needed; DATASET.TABLE takes the project from --project); needs a '
                             'gs:// --temp_location, as on Dataflow')
    return parser


def _report(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog='headstream report',
        description='Rebuild report.html from a run\'s Parquet outputs.')
    parser.add_argument('output_dir', help='a run\'s output directory (local or gs://)')
    args = parser.parse_args(list(argv))
    try:
        # import_module reads sys.modules first, so a replaced or removed module is honoured even
        # after `pipeline.report` became an attribute of the package.
        report = importlib.import_module('pipeline.report')
    except ImportError as e:
        if e.name not in ('pipeline.report',):
            raise
        print('headstream report: the report module (pipeline/report.py) is not installed',
              file=sys.stderr)
        return EXIT_FAILED
    from pipeline.writers.publish import check_complete
    try:
        check_complete(args.output_dir)
        path = report.write_report(args.output_dir)
    except (FileNotFoundError, ValueError) as e:
        print('headstream report: %s' % e, file=sys.stderr)
        return EXIT_FAILED
    if path:
        print(path)
    return 0


def _without_step(e: BaseException) -> str:
    """An error's message without what Beam appends to an error raised in a step ("[while
    running 'Read/Read']"): the file named in the message is what matters."""
    return str(e).split(' [while running')[0]


def _evaluate(argv: Sequence[str]) -> int:
    from pipeline.elements import BadRecordError
    from pipeline.config import ConfigError, check_run_id
    from pipeline.run import evaluate
    from pipeline.sources import UnreadableFileError
    from pipeline.writers.publish import OutputError
    args, beam_args = evaluate_parser().parse_known_args(list(argv))
    if args.run_id is not None:
        try:
            check_run_id(args.run_id)
        except ConfigError as e:
            print('headstream: config error: %s' % e, file=sys.stderr)
            return EXIT_USAGE
    if any(a == '--streaming' or a.startswith('--streaming=') for a in beam_args):
        if args.bigquery_table:  # the sink writes a batch run's table once, at its end
            print('headstream: config error: --bigquery_table: batch runs only, not with '
                  '--streaming', file=sys.stderr)
            return EXIT_USAGE
        return _evaluate_streaming(args, beam_args, argv)
    try:
        with _quiet_known_tracebacks():
            summary = evaluate(args.config, beam_args, output=args.output,
                               bad_records=args.bad_records,
                               write_predictions=args.write_predictions, run_id=args.run_id,
                               bigquery_table=args.bigquery_table, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print('headstream: interrupted; nothing published', file=sys.stderr)
        return EXIT_INTERRUPTED
    except OutputError as e:
        print('headstream: %s' % e, file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as e:  # also a shard's slice column type, found while reading it
        print('headstream: config error: %s' % _without_step(e), file=sys.stderr)
        return EXIT_USAGE
    except BadRecordError as e:
        print('headstream: %s' % e, file=sys.stderr)
        return EXIT_FAILED
    except UnreadableFileError as e:
        print('headstream: %s' % _without_step(e), file=sys.stderr)
        return EXIT_FAILED
    except RuntimeError as e:
        # A Dask cluster that lost a task's workers too often (pipeline.dask_runner) says so in
        # one line; matched by class name so that runs on other runners never import dask.
        if type(e).__name__ != 'DaskWorkerLostError':
            raise
        print('headstream: %s' % e, file=sys.stderr)
        return EXIT_FAILED
    print('headstream: run %s: %d rows read, %d bad; outputs in %s' % (
        summary['run_id'], summary['rows_read'], summary['bad_rows'],
        summary['config']['output']))
    return 0


def _evaluate_streaming(args: argparse.Namespace, beam_args: Sequence[str],
                        argv: Sequence[str]) -> int:
    """`evaluate --streaming`: pipeline/streaming.py (its own flags pass through in beam_args)."""
    from pipeline.config import ConfigError
    from pipeline.streaming import evaluate_streaming
    explicit = any(a == '--bad_records' or a.startswith('--bad_records=') for a in argv)
    try:
        result = evaluate_streaming(args.config, beam_args, output=args.output,
                                    bad_records=args.bad_records if explicit else None,
                                    run_id=args.run_id)
    except ConfigError as e:
        print('headstream: config error: %s' % e, file=sys.stderr)
        return EXIT_USAGE
    print('headstream: streaming run %s %s; panes are written under %s' % (
        result['run_id'], result['state'], result['output']))
    return 0


def _watch(argv: Sequence[str]) -> int:
    return importlib.import_module('pipeline.watch').main(list(argv))


def _reported_in_one_line(text: str) -> bool:
    """Whether Beam's traceback text is of an error the CLI prints as one line (a bad record, an
    unreadable file, a shard's slice column type), so the traceback itself is noise."""
    from pipeline.elements import BAD_RECORD
    from pipeline.sources import UnreadableFileError
    from pipeline.writers.parquet import DiscardedError
    from pipeline.writers.publish import ForeignFilesError, OutputBusyError
    return any(k in text for k in ('BadRecordError: ', 'ConfigError: ', '%s: file ' % BAD_RECORD)
               + tuple(e.__name__ + ': ' for e in (UnreadableFileError, DiscardedError,
                                                   ForeignFilesError, OutputBusyError)))


class _StderrWithoutKnownTracebacks:
    """sys.stderr, minus the tracebacks Beam's multi-threaded workers print for errors the CLI
    reports in one line."""

    def __init__(self, stream: Any):
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        dropped, self._dropped = self._dropped, False
        if text.startswith('Traceback (most recent call last)') and _reported_in_one_line(text):
            self._dropped = True
            return len(text)
        if dropped and text == '\n':  # the end of print()'s dropped line
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _quiet_known_tracebacks() -> Iterator[None]:
    stream = sys.stderr
    sys.stderr = _StderrWithoutKnownTracebacks(stream)
    try:
        yield
    finally:
        sys.stderr = stream


class _DropBadRecordTraceback(logging.Filter):
    """Beam logs a failing DoFn's traceback; for a bad record or an unreadable file the one-line
    message the CLI prints is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith('apache_beam'):
            return True
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # The exception's own type and text (Beam logs them apart from the message).
            message += ' %s: %s' % (type(record.exc_info[1]).__name__, record.exc_info[1])
        return not _reported_in_one_line(message)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(levelname)s %(message)s')
    logging.getLogger('pipeline').setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropBadRecordTraceback())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `headstream` console script (and of `python -m pipeline`).

    Args:
      argv: the command's arguments; None: this process's command line, in which case the
        process is the command's own and also skips the modules no command uses, and Google
        Cloud's clients when the command cannot need them (`skip_unused_imports`,
        `needs_google_cloud`), and spares the garbage collector the imported modules' objects
        (`settle_imports`).
    """
    own_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if own_process:
        skip_unused_imports(cloud=not needs_google_cloud(argv[1:]))
    _configure_logging()
    commands = {'evaluate': _evaluate, 'report': _report, 'watch': _watch}
    if not argv or argv[0] in ('-h', '--help') or argv[0] not in commands:
        print('usage: headstream {evaluate,watch,report} ...\n\n'
              '  evaluate   evaluate heads over a dataset (headstream evaluate --help;\n'
              '             --streaming: per-window panes on Dataflow, docs/streaming.md)\n'
              '  watch      evaluate shards as they arrive in a directory, per window\n'
              '  report     rebuild report.html from a run\'s outputs', file=sys.stderr)
        return 0 if argv and argv[0] in ('-h', '--help') else EXIT_USAGE
    if own_process:
        settle_imports()
    code = commands[argv[0]](argv[1:])
    if own_process:
        # The process exits next: its last collection would scan every object the run left
        # alive (about 0.3 s at exit, measured); freezing them skips that scan.
        gc.freeze()
    return code


if __name__ == '__main__':
    sys.exit(main())
