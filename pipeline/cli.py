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
`--overwrite` is not given), 3 not blessed (a `validation:` rule failed; every output is written
and published first: docs/validation.md), 130 interrupted (Ctrl-C: nothing is published, the
run's staging files are deleted).

This module owns the commands' dispatch, their exit codes and one-line error messages (and the
filters keeping Beam's tracebacks of those errors out of the output); the argument parsers are
in `pipeline/cli_args.py`, the tuning of the command's own process (skipped imports, garbage
collector) in `pipeline/tuning.py`.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from typing import Any, Iterator, Sequence

from pipeline import tuning
from pipeline.cli_args import evaluate_parser, given, report_parser

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_BLESSED = 3  # every output written and published; a `validation:` rule failed
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a process killed by Ctrl-C


def _report(argv: Sequence[str]) -> int:
    args = report_parser().parse_args(list(argv))
    try:
        # import_module reads sys.modules first, so a replaced or removed module is honoured even
        # after `pipeline.report` became an attribute of the package.
        report = importlib.import_module('pipeline.report')
    except ImportError as e:
        if e.name not in ('pipeline.report',):
            raise
        print('headstream report: the report module (pipeline/report/) is not installed',
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
    from pipeline.readers import UnreadableFileError
    from pipeline.writers.publish import OutputError
    args, beam_args = evaluate_parser().parse_known_args(list(argv))
    if args.run_id is not None:
        try:
            check_run_id(args.run_id)
        except ConfigError as e:
            print('headstream: config error: %s' % e, file=sys.stderr)
            return EXIT_USAGE
    if given(beam_args, '--streaming'):
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
    verdict = summary.get('validation')
    if verdict is not None:
        print('headstream: %s' % (verdict.get('line') or (
            'BLESSED (%d checks passed)' % verdict['checks'] if verdict['blessed'] else
            'NOT BLESSED: failing %s' % ', '.join(verdict['failing']))))
        if not verdict['blessed']:
            return EXIT_NOT_BLESSED
    return 0


def _evaluate_streaming(args: argparse.Namespace, beam_args: Sequence[str],
                        argv: Sequence[str]) -> int:
    """`evaluate --streaming`: pipeline/streaming.py (its own flags pass through in beam_args)."""
    from pipeline.config import ConfigError
    from pipeline.streaming import evaluate_streaming
    explicit = given(argv, '--bad_records')
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
        Cloud's clients when the command cannot need them, and spares the garbage collector the
        imported modules' objects (`pipeline.tuning`).
    """
    own_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if own_process:
        tuning.skip_unused_imports(cloud=not tuning.needs_google_cloud(argv[1:]))
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
        tuning.settle_imports()
    code = commands[argv[0]](argv[1:])
    if own_process:
        tuning.freeze_survivors()  # the process exits next
    return code


if __name__ == '__main__':
    sys.exit(main())
