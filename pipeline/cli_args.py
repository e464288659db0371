"""The command line's argument parsers: `evaluate`, its `--streaming` flags, and `report`.

Every parser here is argparse only (no Beam import), so the Flex Template launcher
(`pipeline/launcher.py`, which parses its parameters with `evaluate_parser`) and the command's
start-up stay cheap. Options a parser does not know pass through to Beam's PipelineOptions
(`parse_known_args`). `headstream watch` has its own parser (`pipeline.watch.parser`).
"""
from __future__ import annotations

import argparse
from typing import Sequence

_EVALUATE_EPILOG = """\
Any other option is a Beam pipeline option and passes through, e.g.
  --runner DirectRunner | DataflowRunner | DaskRunner   (default DirectRunner)
  --project P --region R --temp_location gs://B/tmp     (Dataflow)
  --dask_client_address tcp://HOST:8786                 (Dask; without it, a local cluster of
  --dask_local_workers N                                 N worker processes, default 2)
  --direct_num_workers N --direct_running_mode multi_processing

Exit codes: 0 done (and blessed, with `validation:` rules), 1 a failed run, 2 an invalid config
or command line, 3 not blessed (every output written and published), 130 interrupted.
"""


def given(argv: Sequence[str], flag: str) -> bool:
    """Whether `flag` (`--name`) appears in argv, as `--name`, `--name value` or `--name=value`."""
    return any(a == flag or a.startswith(flag + '=') for a in argv)


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


def streaming_parser() -> argparse.ArgumentParser:
    """headstream's own streaming flags (`evaluate --streaming`, read by
    `pipeline.streaming.evaluate_streaming`); everything else passes through to Beam."""
    parser = argparse.ArgumentParser(prog='headstream evaluate --streaming', add_help=False)
    parser.add_argument('--input_subscription', default=None,
                        help='Pub/Sub subscription (projects/P/subscriptions/S) of JSON rows')
    parser.add_argument('--input_topic', default=None,
                        help='Pub/Sub topic (projects/P/topics/T) of JSON rows')
    parser.add_argument('--pubsub_timestamp_attribute', default=None,
                        help='message attribute holding the publish-side event time, which then '
                             'drives the watermark')
    parser.add_argument('--poll_interval', type=float, default=30.0,
                        help='seconds between matches of input.pattern (file source)')
    parser.add_argument('--bad_records', choices=('fail', 'dead_letter'), default='dead_letter',
                        help='dead_letter (default in streaming: a failing bundle would be '
                             'retried forever) or fail')
    parser.add_argument('--run_id', default=None)
    return parser


def report_parser() -> argparse.ArgumentParser:
    """The `report` command's one argument."""
    parser = argparse.ArgumentParser(
        prog='headstream report',
        description='Rebuild report.html from a run\'s Parquet outputs.')
    parser.add_argument('output_dir', help='a run\'s output directory (local or gs://)')
    return parser
