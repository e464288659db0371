"""The Dataflow Flex Template entry point (`FLEX_TEMPLATE_PYTHON_PY_FILE`).

Dataflow's Flex Template launcher runs this file as a script with the template's parameters as
flags (`--config=gs://b/eval.yaml --write_predictions=true ...`) followed by Dataflow's own
pipeline options (`--runner=DataflowRunner --project=... --region=... --temp_location=...`, and a
`--template_location` where the job description goes). It parses the parameters exactly as
`headstream evaluate` does (`pipeline.cli_args.evaluate_parser`), validates the config against its
input, builds the same pipeline (`pipeline.run.evaluate`), submits it and exits without waiting:
the launcher's own time limit must not bound the job's.

    python pipeline/launcher.py --config=gs://b/eval.yaml --output=gs://b/out \\
        --runner=DataflowRunner --project=p --region=r --temp_location=gs://b/tmp

Exit codes are the CLI's: 0 submitted, 2 an invalid config or parameter (the message, naming the
key, column or pattern, is the last line of the launcher's log).
"""
from __future__ import annotations

import os
import sys

if __name__ == '__main__':
    # Run as a script, Python puts this file's directory (pipeline/) first on sys.path, where
    # config.py, run.py, ... would shadow any top-level module of the same name. Import the
    # package from the directory above instead (a checkout, or the image's working directory).
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    sys.path.insert(0, os.path.dirname(_HERE))

import logging  # noqa: E402 -- after the sys.path fix above
from typing import Sequence  # noqa: E402

#: The runner when the launcher's arguments name none (the Flex Template launcher normally passes
#: `--runner=DataflowRunner` itself).
DEFAULT_RUNNER = 'DataflowRunner'

#: Set by the template image (templates/flex/Dockerfile) to the image's own name: Dataflow workers
#: then run the launcher's image, with exactly its pins, unless `sdk_container_image` is given.
IMAGE_ENV = 'HEADSTREAM_SDK_CONTAINER_IMAGE'
_IMAGE_FLAGS = ('sdk_container_image', 'worker_harness_container_image')

_log = logging.getLogger('pipeline.launcher')


def launch_args(argv: Sequence[str]) -> tuple[object, list[str]]:
    """Splits the launcher's arguments into headstream's options and Beam's.

    Args:
        argv: the template parameters and Dataflow's options, as flags.

    Returns:
        (the `headstream evaluate` namespace, the Beam pipeline args with a runner, and with
        `--sdk_container_image` from the environment variable `IMAGE_ENV` when that is set and
        the args name no worker image).

    Raises:
        SystemExit: with status 2 and argparse's message for an invalid or missing parameter.
    """
    from pipeline.cli_args import evaluate_parser, given
    args, beam_args = evaluate_parser(prog='headstream-flex-template').parse_known_args(
        list(argv))
    if not given(beam_args, '--runner'):
        beam_args = ['--runner=' + DEFAULT_RUNNER] + beam_args
    image = os.environ.get(IMAGE_ENV, '').strip()
    if image and not any(given(beam_args, '--' + f) for f in _IMAGE_FLAGS):
        beam_args.append('--sdk_container_image=' + image)
    return args, beam_args


def launch(argv: Sequence[str]) -> dict:
    """Validates, builds and submits the evaluation; returns without waiting for the job.

    Args:
        argv: template parameters and pipeline options as flags.

    Returns:
        `{'run_id', 'output', 'state': 'submitted'}` (`pipeline.run.evaluate` with `wait=False`).

    Raises:
        pipeline.config.ConfigError: an invalid config, before anything is submitted.
    """
    from pipeline.run import evaluate
    args, beam_args = launch_args(argv)
    # Every other `headstream evaluate` option is a keyword of `evaluate` of the same name (the
    # template's parameters are exactly those options), so none can be dropped on the way.
    options = vars(args)
    config = options.pop('config')
    return evaluate(config, beam_args, wait=False, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the launcher; returns the process exit code."""
    from pipeline.cli import EXIT_USAGE
    from pipeline.config import ConfigError
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        submitted = launch(argv)
    except ConfigError as e:
        print('headstream: config error: %s' % e, file=sys.stderr)
        return EXIT_USAGE
    _log.info('headstream: run %s submitted; outputs will be in %s', submitted['run_id'],
              submitted['output'])
    return 0


if __name__ == '__main__':
    sys.exit(main())
