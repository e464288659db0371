"""Process-wide tuning: every setting headstream changes for its whole process, and why.

Nothing here changes a result; each knob only makes a run or a command start faster. This module
imports no Beam at import time (the command line calls `skip_unused_imports` before Beam loads).

Knobs of a local batch run (`pipeline.run.make_runner` applies them to a DirectRunner run):

- Core count (`use_every_core`): unless `--direct_num_workers` or `--direct_running_mode` is
  given, a local run processes bundles on one in-memory worker thread per core (at most 8), and
  Beam's warning that such workers would not run in parallel (they do) is filtered out. numpy and
  pyarrow release the GIL for their large steps, so threads overlap reading and evaluating.
- State-sampler period (`end_bundles_promptly`, `restore_sampling_period`): Beam's per-bundle
  sampler thread wakes every 10 ms instead of 200 ms, so a long bundle does not end ~0.1 s late
  on each worker; given back when the run is over (`pipeline.run.evaluate`), so a later pipeline
  of the same process samples as Beam does.

Knobs of the `headstream` command's own process (`pipeline.cli.main`; a program importing
headstream keeps its imports and its garbage collector as they are):

- Import skipping (`skip_unused_imports`, `needs_google_cloud`): notebook, pandas and MongoDB
  packages that Beam, google-cloud-bigquery and pyarrow import merely because they are installed
  are reported as not installed (about 0.5 s of a 1.2 s start-up); Google Cloud's client
  libraries too (0.25 s more) when the command cannot need them.
- Garbage collector (`settle_imports`, `freeze_survivors`): after Beam is imported, and again
  before the process exits, every object alive is moved to the permanent generation
  (`gc.freeze()`), so collections (and the interpreter's last one at exit, about 0.3 s) skip the
  objects of some 1,900 modules.

Not here: the command line's filters of Beam's tracebacks (`pipeline.cli`), which change what a
command prints, not how fast it runs.
"""
from __future__ import annotations

import gc
import importlib
import importlib.abc
import logging
import os
import sys
from typing import Any, Sequence

# -------------------------------------------------------------------------------------------------
# A local batch run: worker threads and the state sampler.
# -------------------------------------------------------------------------------------------------

# What Beam's FnApiRunner logs on every run with several in-memory workers (see use_every_core).
_IN_MEMORY_WORKERS_WARNING = 'If direct_num_workers is not equal to 1, direct_running_mode'
# How often the local worker's state sampler wakes (Beam's default: 200 ms); see
# end_bundles_promptly.
STATE_SAMPLING_PERIOD_MS = 10


def _not_the_in_memory_workers_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_IN_MEMORY_WORKERS_WARNING)


def _chosen(options: Any, name: str) -> bool:
    """Whether the options were given `--name` (also when its value is the default, which
    `get_all_options(drop_default=True)` leaves out: `--direct_num_workers=1`)."""
    if name in options.get_all_options(drop_default=True):
        return True
    flags = getattr(options, '_flags', None) or ()  # the flags Beam parsed the options from
    return any(f == '--' + name or f.startswith('--%s=' % name) for f in flags)


def use_every_core(options: Any) -> None:
    """Unless the user chose otherwise, a local run processes bundles on one thread per core.

    The work per batch is numpy and pyarrow, which release the GIL for their large steps, so
    threads overlap reading and evaluating (5 heads over 10M rows on 2 cores: 13.8 s on one
    thread, 10.4 s on two). The threads are in-memory workers: Beam's FnApiRunner splits each
    bundle into one part per worker and runs the parts on a thread pool, each on its own
    in-process worker, calling it directly. Its `multi_threading` mode runs the same parts on
    threads too, but behind an in-process gRPC server that every element and instruction goes
    through (Beam's run of the binary benchmark on 2 cores, medians: 200,000 rows 0.27 s in
    memory against 0.35 s through gRPC; 10M rows 0.89 s against 0.87 s; 20M rows 1.58 s against
    1.69 s, with 11% less CPU time). Beam warns on every run that in-memory workers would not run
    in parallel; they do, each on its own thread (one worker took 1.51 s for the 10M rows), and
    that warning is filtered out. Processes were about 3x slower still: the multi-processing
    mode moves every element between processes. Results do not depend on any of this (the
    states merge in any order).

    Args:
      options: the run's Beam `PipelineOptions` (their `DirectOptions` are set in place).
    """
    from apache_beam.options.pipeline_options import DirectOptions
    direct = options.view_as(DirectOptions)
    if not _chosen(options, 'direct_num_workers') and not _chosen(options, 'direct_running_mode'):
        direct.direct_num_workers = max(1, min(os.cpu_count() or 1, 8))
        direct.direct_running_mode = 'in_memory'
        runner_log = logging.getLogger('apache_beam.runners.portability.fn_api_runner.fn_runner')
        if _not_the_in_memory_workers_warning not in runner_log.filters:
            runner_log.addFilter(_not_the_in_memory_workers_warning)


def end_bundles_promptly() -> None:
    """Makes the state sampler of a local run's bundles wake every 10 ms instead of 200 ms.

    Beam's SDK worker starts a sampler thread for every bundle (it times the bundle's steps)
    and, at the bundle's end, waits for that thread to wake up and see it is done. The thread's
    sleep grows from 2 ms to the sampling period, Beam's 200 ms, so a bundle lasting over a
    second (the read-and-evaluate bundle of a large local run) ends on average 0.1 s late on
    each worker: 20M rows, binary benchmark, the run took 1.38 s with 200 ms and 1.23 s with
    10 ms (medians of 3, load 0.7). Waking more often costs nothing measurable: the thread reads
    a clock and adds to a counter under its own lock, without the GIL. No pipeline option sets
    the period; it is the default argument of Beam's `StateSampler`, changed here for a local
    batch run (a worker elsewhere keeps Beam's), only if it is still Beam's own default, and
    given back when the run is over (`restore_sampling_period`).
    """
    from apache_beam.runners.worker import statesampler
    init = statesampler.StateSampler.__init__
    if init.__defaults__ == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,):
        init.__defaults__ = (STATE_SAMPLING_PERIOD_MS,)


def restore_sampling_period() -> None:
    """Gives Beam's `StateSampler` its own default period back after a local run, so that a later
    pipeline in the same process (a caller's own) samples as Beam does."""
    from apache_beam.runners.worker import statesampler
    init = statesampler.StateSampler.__init__
    if init.__defaults__ == (STATE_SAMPLING_PERIOD_MS,):
        init.__defaults__ = (statesampler.DEFAULT_SAMPLING_PERIOD_MS,)


# -------------------------------------------------------------------------------------------------
# The command's start-up: modules it never uses.
# -------------------------------------------------------------------------------------------------

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
                    'pipeline.tuning.skip_unused_imports)' % fullname, name=fullname)
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
    return any(_config_needs_google_cloud(config) for config in _flag_values(argv, '--config'))


def _config_needs_google_cloud(config: str) -> bool:
    """Whether a `--config` value (inline, or a path) may name Google Cloud (see
    `needs_google_cloud`)."""
    text = config.strip()
    if not (text.startswith('{') or '\n' in text):  # a path, not the config itself
        if not os.path.isfile(text):
            return True  # not a regular local file: let the run read it as usual
        try:
            with open(text, encoding='utf-8') as f:
                text = f.read()
        except (OSError, ValueError):
            return True
    return 'gs://' in text or _names_gcs(text)


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


# -------------------------------------------------------------------------------------------------
# The command's garbage collector.
# -------------------------------------------------------------------------------------------------

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


def freeze_survivors() -> None:
    """Before a command's process exits: exempts every object still alive from the collector.

    The interpreter's last collection would scan every object the run left alive (about 0.3 s at
    exit, measured); freezing them skips that scan.
    """
    gc.freeze()
