"""headstream on Dask: `HeadstreamDaskRunner` (pipeline/dask_runner.py).

Three groups:

- No cluster: runner names, refusals of streaming and event-time windowing, and the translation
  of a small pipeline computed with Dask's synchronous scheduler in this process.
- One pipeline on a real local cluster of 2 worker processes (the runner starts and stops it):
  Create → Reshuffle → multi-output ParDo (`finish_bundle` outputs too) → CombinePerKey, a side
  input and two sinks; the expected values are sums written out by hand. The run must leave no
  process behind and print no traceback.
- The command line end to end (slow): `headstream evaluate --runner DaskRunner` on a 2-worker
  cluster gives the DirectRunner's metrics and plots to 1e-9 relative, for every source format and
  for a MultiHead with head_weights.
- A worker process killed with SIGKILL mid-run, on a 2-worker cluster with nannies: the run
  completes with the exact hand sums (small pipeline) and the DirectRunner's tables (command line,
  slow), or, when the scheduler allows no failure, fails with a one-line `DaskWorkerLostError` and
  writes nothing. No process outlives the cluster.
"""
from __future__ import annotations

import contextlib
import re
import json
import os

import apache_beam as beam
import dask
import psutil  # a dependency of dask.distributed
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import trigger, window

from pipeline import dask_runner, dask_translate
from pipeline.config import ConfigError
from pipeline.dask_runner import (DASK_RUNNER, DaskUnsupportedError, HeadstreamDaskRunner,
                                  check_dask_supported, is_dask_runner)

# -------------------------------------------------------------------------------------------------
# A small pipeline with every shape the evaluation graph has.
# -------------------------------------------------------------------------------------------------

N = 20
THREES = [x for x in range(1, N + 1) if x % 3 == 0]  # 3, 6, ..., 18
# Hand sums over 1..20 without the multiples of 3:
EVENS = 2 + 4 + 8 + 10 + 14 + 16 + 20          # 74
ODDS = 1 + 5 + 7 + 11 + 13 + 17 + 19           # 73
THREES_TOTAL = 3 + 6 + 9 + 12 + 15 + 18        # 63


class _Split(beam.DoFn):
    """Main output (x % 2, x); multiples of 3 to the 'threes' tag; (bundles, 1) per bundle."""

    def process(self, x: int):
        if x % 3 == 0:
            yield beam.pvalue.TaggedOutput('threes', x)
        else:
            yield x % 2, x

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue
        yield WindowedValue(('bundles', 1), GlobalWindow().max_timestamp(), [GlobalWindow()])


class _WriteJson(beam.DoFn):
    """A sink: writes the one group it receives to `<out>/<name>.json`."""

    def __init__(self, out: str, name: str) -> None:
        self._path = os.path.join(out, name + '.json')

    def process(self, group):
        with open(self._path, 'w') as f:
            json.dump(sorted(group[1], key=str), f)
        yield self._path



def _new_children(me: 'psutil.Process', before: set[int]) -> list[str]:
    """Command lines of `me`'s live descendants that were not there `before` (pids)."""
    left = []
    for child in me.children(recursive=True):
        try:
            if child.pid not in before and child.status() != psutil.STATUS_ZOMBIE:
                left.append(' '.join(child.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return left

def _small_pipeline(p: beam.Pipeline, out: str) -> None:
    """Adds the small pipeline to `p`: sinks sums.json and threes.json under `out`."""
    split = (p
             | 'Numbers' >> beam.Create(list(range(1, N + 1)))
             | 'Spread' >> beam.Reshuffle()
             | 'Split' >> beam.ParDo(_Split()).with_outputs('threes', main='main'))
    total = split.threes | 'Total' >> beam.CombineGlobally(sum)
    (split.main
     | 'Sum' >> beam.CombinePerKey(sum)
     | 'WithTotal' >> beam.Map(lambda kv, t: [str(kv[0]), kv[1], t],
                               beam.pvalue.AsSingleton(total))
     | 'OneKey' >> beam.Map(lambda x: (0, x))
     | 'Gather' >> beam.GroupByKey()
     | 'WriteSums' >> beam.ParDo(_WriteJson(out, 'sums')))
    # A second sink that is not the last transform translated.
    (split.threes
     | 'ThreesKey' >> beam.Map(lambda x: (0, x))
     | 'GatherThrees' >> beam.GroupByKey()
     | 'WriteThrees' >> beam.ParDo(_WriteJson(out, 'threes')))


def _expected_sums(bundles: int) -> list:
    return sorted([['0', EVENS, THREES_TOTAL], ['1', ODDS, THREES_TOTAL],
                   ['bundles', bundles, THREES_TOTAL]], key=str)


def _read(out, name: str):
    with open(os.path.join(str(out), name + '.json')) as f:
        return json.load(f)


# -------------------------------------------------------------------------------------------------
# No cluster.
# -------------------------------------------------------------------------------------------------

def test_runner_names():
    for name in ('DaskRunner', 'daskrunner', 'dask', ' DaskRunner ', DASK_RUNNER,
                 'apache_beam.runners.dask.dask_runner.DaskRunner'):
        assert is_dask_runner(name), name
    assert is_dask_runner(HeadstreamDaskRunner) and is_dask_runner(HeadstreamDaskRunner())
    for name in (None, 'DirectRunner', 'DataflowRunner', 'BundleBasedDirectRunner'):
        assert not is_dask_runner(name), name


def test_streaming_is_refused_naming_the_runners_that_support_it():
    with pytest.raises(DaskUnsupportedError, match=r'--streaming.*DataflowRunner'):
        check_dask_supported(streaming=True)
    check_dask_supported(streaming=False)
    # The command line reports config errors in one line with exit status 2.
    assert issubclass(DaskUnsupportedError, ConfigError)


def _refused(tmp_path, build, args=()) -> str:
    options = PipelineOptions(['--runner', DASK_RUNNER, '--dask_client_address',
                               'tcp://127.0.0.1:1', *args])  # never contacted
    p = beam.Pipeline(options=options)
    build(p)
    with pytest.raises(DaskUnsupportedError) as e:
        p.run()
    return str(e.value)


def test_streaming_option_and_event_time_windows_are_refused_before_connecting(tmp_path):
    def windowed(p):
        (p | beam.Create([1, 2]) | 'Fixed' >> beam.WindowInto(window.FixedWindows(60))
         | beam.Map(print))

    def triggered(p):
        (p | beam.Create([1, 2])
         | 'Early' >> beam.WindowInto(window.GlobalWindows(),
                                      trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                                      accumulation_mode=trigger.AccumulationMode.ACCUMULATING)
         | beam.Map(print))

    assert 'Fixed' in _refused(tmp_path, windowed) and 'DataflowRunner' in _refused(
        tmp_path, windowed)
    assert 'Early' in _refused(tmp_path, triggered)
    message = _refused(tmp_path, lambda p: p | beam.Create([1]) | beam.Map(print),
                       ['--streaming'])
    assert '--streaming' in message and 'DataflowRunner' in message


def test_killed_worker_message_is_one_line_naming_task_partition_and_worker():
    import distributed

    class LastWorker:
        address = 'tcp://127.0.0.1:4242'

    for key, where in [(('pardo-ApplyHeads-ab12', 8), 'task pardo-ApplyHeads-ab12, partition 8'),
                       (('concat-shuffle-join-cd34', 0, (1,)),
                        'task concat-shuffle-join-cd34, partition 0, (1,)'),
                       ('finalize-ef56', 'task finalize-ef56')]:
        message = dask_runner._killed_worker_message(
            distributed.KilledWorker(key, LastWorker(), 3))
        assert message == (
            'DaskRunner: the run failed: %s was lost with a dying worker 4 time(s), last on '
            'tcp://127.0.0.1:4242; the scheduler allows 3 (distributed.scheduler.allowed-failures);'
            ' outputs of this run, if any, are incomplete' % where)


def test_no_local_cluster_below_one_worker():
    with pytest.raises(ConfigError, match='--dask_local_workers'):
        with dask_runner.local_dask_cluster(0):
            pass


def _translate_and_compute(tmp_path, args=()) -> None:
    options = PipelineOptions(['--runner', DASK_RUNNER, *args])
    p = beam.Pipeline(runner=HeadstreamDaskRunner(), options=options)
    _small_pipeline(p, str(tmp_path))
    bag_kwargs = dask_runner.DaskOptions._extract_bag_kwargs(
        options.view_as(dask_runner.DaskOptions).get_all_options(drop_default=True,
                                                                 current_only=True))
    leaves = dask_translate.translate(p, bag_kwargs)
    assert len(leaves) == 2  # both sinks
    with dask.config.set(scheduler='sync'):
        dask.compute(*leaves)


def test_translation_tags_finish_bundle_side_inputs_and_every_sink(tmp_path):
    _translate_and_compute(tmp_path)
    # One element per partition, so one bundle per number.
    assert _read(tmp_path, 'sums') == _expected_sums(bundles=N)
    assert sorted(_read(tmp_path, 'threes')) == THREES


def test_partition_options_pass_through(tmp_path):
    _translate_and_compute(tmp_path, ['--dask_npartitions', '4'])
    assert _read(tmp_path, 'sums') == _expected_sums(bundles=4)
    _translate_and_compute(tmp_path, ['--dask_partition_size', '7'])  # 7 + 7 + 6
    assert _read(tmp_path, 'sums') == _expected_sums(bundles=3)


# -------------------------------------------------------------------------------------------------
# A real local cluster.
# -------------------------------------------------------------------------------------------------

def test_small_pipeline_on_a_private_local_cluster(tmp_path, capfd):
    me = psutil.Process()
    before = {c.pid for c in me.children(recursive=True)}
    options = PipelineOptions(['--runner', 'DaskRunner', '--dask_local_workers', '2'])
    p = beam.Pipeline(runner=HeadstreamDaskRunner(), options=options)
    _small_pipeline(p, str(tmp_path))
    result = p.run()
    assert result.wait_until_finish() == 'DONE'
    assert _read(tmp_path, 'sums') == _expected_sums(bundles=N)
    assert sorted(_read(tmp_path, 'threes')) == THREES
    # The cluster's workers and nannies are gone, and nothing was printed on the way down.
    left = _new_children(me, before)
    # multiprocessing's resource tracker serves this process for its lifetime, whatever starts it.
    assert not [c for c in left if 'resource_tracker' not in c], left
    out, err = capfd.readouterr()
    assert 'Traceback' not in out + err and 'ERROR' not in out + err, err


# -------------------------------------------------------------------------------------------------
# The command line end to end: the DaskRunner gives the DirectRunner's tables.
# -------------------------------------------------------------------------------------------------

ROWS, SHARDS = 1200, 3
HEADS = [
    {'type': 'BinaryClassHead',
     'args': {'name': 'click', 'weight_column': 'w', 'thresholds': [0.3, 0.5]},
     'logits': 'x', 'labels': 'y'},
    {'type': 'RegressionHead', 'args': {'name': 'watch', 'weight_column': 'w'},
     'logits': 'r', 'labels': 'ry'},
    {'type': 'MultiClassHead', 'args': {'name': 'topic', 'n_classes': 3},
     'logits': 'topic_logits', 'labels': 'topic'},
]
HEAD_WEIGHTS = [1.0, 0.5, 2.0]  # the MultiHead click_watch_topic
KEYS = ('slice', 'head', 'metric', 'window_start', 'step', 'threshold', 'curve', 'bucket')


def _rows() -> dict[str, list]:
    import numpy as np
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 2.0, ROWS)
    return {
        'country': list(rng.choice(['US', 'JP', 'DE'], ROWS)),
        'w': [float(v) for v in rng.uniform(0.5, 1.5, ROWS).astype(np.float32)],
        'x': [float(v) for v in x.astype(np.float32)],
        'y': [int(v) for v in rng.random(ROWS) < 1.0 / (1.0 + np.exp(-x))],
        'r': [float(v) for v in rng.normal(1.0, 1.0, ROWS).astype(np.float32)],
        'ry': [float(v) for v in rng.normal(1.0, 1.2, ROWS).astype(np.float32)],
        'topic_logits': [[float(v) for v in row]
                         for row in rng.normal(0.0, 1.0, (ROWS, 3)).astype(np.float32)],
        'topic': [int(v) for v in rng.integers(0, 3, ROWS)],
        'ts': [int(v) for v in rng.integers(0, 900, ROWS)],  # epoch seconds
    }


def _write_shards(fmt: str, directory) -> str:
    """The rows of `_rows()` in SHARDS files of one format; returns their glob."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq
    data = _rows()
    os.makedirs(str(directory), exist_ok=True)
    bounds = [ROWS * i // SHARDS for i in range(SHARDS + 1)]
    ext = {'parquet': 'parquet', 'tfrecord': 'tfrecord', 'csv': 'csv', 'jsonl': 'jsonl'}[fmt]
    for part in range(SHARDS):
        lo, hi = bounds[part], bounds[part + 1]
        shard = {k: v[lo:hi] for k, v in data.items()}
        path = os.path.join(str(directory), 'part-%d.%s' % (part, ext))
        if fmt == 'parquet':
            pq.write_table(pa.table(shard), path, row_group_size=150)  # several work items
        elif fmt == 'jsonl':
            with open(path, 'w') as f:
                for i in range(hi - lo):
                    f.write(json.dumps({k: v[i] for k, v in shard.items()}) + '\n')
        elif fmt == 'csv':
            with open(path, 'w', newline='') as f:
                out = csv.writer(f)
                out.writerow(list(shard))
                for i in range(hi - lo):
                    out.writerow([json.dumps(v[i]) if isinstance(v[i], list) else v[i]
                                  for v in shard.values()])
        else:
            from apache_beam.io.tfrecordio import _TFRecordUtil
            from tfx_bsl.coders import example_coder
            types = {'country': pa.large_binary(), 'y': pa.int64(), 'topic': pa.int64(),
                     'ts': pa.int64()}
            batch = pa.record_batch({
                k: pa.array([[c.encode()] if k == 'country' else
                             (list(c) if isinstance(c, list) else [c]) for c in v],
                            pa.large_list(types.get(k, pa.float32())))
                for k, v in shard.items()})
            with open(path, 'wb') as f:
                for record in example_coder.RecordBatchToExamplesEncoder().encode(batch):
                    _TFRecordUtil.write_record(f, record)
    return os.path.join(str(directory), 'part-*.' + ext)


def test_the_command_line_shorthand_selects_this_runner():
    from pipeline.run import make_runner
    for name in ('DaskRunner', 'apache_beam.runners.dask.dask_runner.DaskRunner'):
        assert isinstance(make_runner(PipelineOptions(['--runner', name])), HeadstreamDaskRunner)


def _table(out, name: str):
    import pyarrow.parquet as pq
    table = pq.read_table(os.path.join(str(out), name)).to_pandas()
    keys = [k for k in KEYS if k in table.columns]
    return table.sort_values(keys).reset_index(drop=True), keys


def _assert_same_tables(direct, dask_out) -> None:
    import numpy as np
    for name in ('metrics', 'plots'):
        want, keys = _table(direct, name)
        got, got_keys = _table(dask_out, name)
        assert got_keys == keys and len(got) == len(want) > 0, name
        for column in want.columns:
            if column in ('run_id', 'evaluated_at'):
                continue
            a, b = want[column].to_numpy(), got[column].to_numpy()
            if a.dtype.kind == 'f':
                np.testing.assert_allclose(b, a, rtol=1e-9, atol=0, equal_nan=True,
                                           err_msg='%s.%s' % (name, column))
            else:
                assert [str(v) for v in b] == [str(v) for v in a], (name, column)
    with open(os.path.join(str(direct), 'summary.json')) as f:
        want_summary = json.load(f)
    with open(os.path.join(str(dask_out), 'summary.json')) as f:
        got_summary = json.load(f)
    for key in ('rows_read', 'bad_rows', 'metrics_rows', 'plots_rows', 'multi_head'):
        assert got_summary[key] == want_summary[key], key


def _evaluate(config: dict, out, *args: str) -> None:
    from pipeline import cli
    assert cli.main(['evaluate', '--config', json.dumps(config), '--output', str(out),
                     *args]) == 0


@pytest.fixture(scope='module')
def dask_address():
    """One 2-worker local cluster shared by the command-line tests (starting one takes ~10 s)."""
    with dask_runner.local_dask_cluster(2) as address:
        yield address


@pytest.mark.slow
@pytest.mark.parametrize('fmt', ['parquet', 'tfrecord', 'csv', 'jsonl'])
def test_cli_on_dask_equals_direct_runner(tmp_path, fmt, dask_address):
    config = {'input': {'pattern': _write_shards(fmt, tmp_path / 'in'), 'format': fmt},
              'heads': HEADS, 'head_weights': HEAD_WEIGHTS, 'slices': [[], ['country']]}
    if fmt == 'parquet':
        config['window'] = {'column': 'ts', 'size': 300}  # batch windows are keys: fine on Dask
    _evaluate(config, tmp_path / 'direct', '--runner', 'DirectRunner')
    _evaluate(config, tmp_path / 'dask', '--runner', 'DaskRunner',
              '--dask_client_address', dask_address)
    _assert_same_tables(tmp_path / 'direct', tmp_path / 'dask')


@pytest.mark.slow
def test_cli_on_a_private_cluster_equals_direct_runner(tmp_path, capfd):
    config = {'input': {'pattern': _write_shards('parquet', tmp_path / 'in')},
              'heads': HEADS, 'head_weights': HEAD_WEIGHTS, 'slices': [[], ['country']]}
    _evaluate(config, tmp_path / 'direct', '--runner', 'DirectRunner')
    capfd.readouterr()
    _evaluate(config, tmp_path / 'dask', '--runner', 'DaskRunner', '--dask_local_workers', '2',
              '--dask_npartitions', '2')
    err = capfd.readouterr().err
    assert 'Traceback' not in err and 'distributed.' not in err, err
    _assert_same_tables(tmp_path / 'direct', tmp_path / 'dask')


def test_cli_refuses_streaming_on_dask_in_one_line(tmp_path, capsys):
    from pipeline import cli
    config = {'input': {'pattern': _write_shards('jsonl', tmp_path / 'in')}, 'heads': HEADS[:1],
              'window': {'column': 'ts', 'size': 60}, 'output': str(tmp_path / 'out')}
    assert cli.main(['evaluate', '--config', json.dumps(config), '--runner', 'DaskRunner',
                     '--streaming', '--dask_client_address', 'tcp://127.0.0.1:1']) == 2
    err = capsys.readouterr().err
    assert '--streaming' in err and 'DataflowRunner' in err and 'Traceback' not in err, err
    assert not os.path.exists(str(tmp_path / 'out' / 'metrics'))


def test_cli_bad_record_on_dask_fails_in_one_line(tmp_path, capfd):
    """A bad row stops the run as on the DirectRunner: exit 1, one line naming file, row, column."""
    from pipeline import cli
    pattern = _write_shards('jsonl', tmp_path / 'in')
    bad_file = os.path.join(str(tmp_path / 'in'), 'part-1.jsonl')
    with open(bad_file) as f:
        lines = f.read().splitlines()
    row = json.loads(lines[5])
    row['x'] = None
    lines[5] = json.dumps(row)
    with open(bad_file, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    config = {'input': {'pattern': pattern}, 'heads': HEADS[:1], 'output': str(tmp_path / 'out')}
    assert cli.main(['evaluate', '--config', json.dumps(config), '--runner', 'DaskRunner',
                     '--dask_local_workers', '1']) == 1  # one worker starts faster
    err = capfd.readouterr().err
    assert 'file %s, row 5, column x' % bad_file in err, err
    assert 'Traceback' not in err and 'Compute Failed' not in err, err
    assert not os.path.exists(str(tmp_path / 'out' / 'metrics'))


# -------------------------------------------------------------------------------------------------
# A worker process killed mid-run.
# -------------------------------------------------------------------------------------------------

def _stop_first_bundle_plugin(sentinel: str) -> object:
    """A worker plugin that freezes the first worker to finish a ParDo bundle, for the test to kill.

    When a task whose key names a translated ParDo finishes executing on a worker (its result in
    that worker's memory, the scheduler not yet told), the plugin writes the worker's pid to
    `sentinel` (once per cluster: the file is created exclusively) and blocks the worker until the
    test kills it, so the kill is certain to land while the run is in flight. Defined inside a
    function so that cloudpickle ships the class by value (the workers cannot import the tests).
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class StopFirstBundle(WorkerPlugin):
        name = 'headstream-test-stop-first-bundle'

        def __init__(self, path: str) -> None:
            self.path = path

        def transition(self, key, start, finish, **kwargs) -> None:
            import os as os_
            import time as time_
            if not (start == 'executing' and finish == 'memory' and 'pardo' in str(key)):
                return
            try:
                fd = os_.open(self.path, os_.O_CREAT | os_.O_EXCL | os_.O_WRONLY)
            except FileExistsError:
                return  # the worker that replaced the killed one runs normally
            os_.write(fd, str(os_.getpid()).encode())
            os_.close(fd)
            time_.sleep(120)  # the test kills this process long before

    return StopFirstBundle(sentinel)


@pytest.fixture(scope='module')
def kill_cluster():
    """A 2-worker local cluster (nannies restart killed workers) and a client to it, for the tests
    that kill workers; separate from `dask_address` so that no other test sees the kills."""
    import distributed
    me = psutil.Process()
    before = {c.pid for c in me.children(recursive=True)}
    with dask_runner.local_dask_cluster(2) as address:
        with distributed.Client(address) as client:
            yield address, client
    # No worker, replacement worker or nanny outlives the cluster.
    left = _new_children(me, before)
    assert not [c for c in left if 'resource_tracker' not in c], left


class _Killer:
    """Kills, with SIGKILL, the worker process the plugin froze, from a thread of the test."""

    def __init__(self, client, sentinel: str) -> None:
        import threading
        self.addresses = {pid: address for address, pid in client.run(os.getpid).items()}
        self.pids = set(self.addresses)  # taken before any worker is frozen
        assert len(self.pids) == 2, self.pids
        self.sentinel = sentinel
        self.killed: int | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import signal
        import time
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with open(self.sentinel) as f:
                    text = f.read()
            except FileNotFoundError:
                text = ''
            if text:
                pid = int(text)
                if pid not in self.pids:
                    self.error = 'frozen pid %d is not a worker of the cluster %s' % (
                        pid, sorted(self.pids))
                    return
                os.kill(pid, signal.SIGKILL)
                self.killed = pid
                return
            time.sleep(0.05)
        self.error = 'no worker finished a bundle within 120 s'

    def join(self) -> None:
        self._thread.join(timeout=130)
        assert self.error is None, self.error
        assert self.killed is not None


@contextlib.contextmanager
def _kill_one_worker(client, tmp_path):
    """Registers the freezing plugin, kills the frozen worker from a thread, and afterwards
    unregisters the plugin and waits for the nanny's replacement worker."""
    sentinel = str(tmp_path / 'frozen-worker.pid')
    client.register_plugin(_stop_first_bundle_plugin(sentinel))
    try:
        killer = _Killer(client, sentinel)
        yield killer
        killer.join()
    finally:
        client.unregister_worker_plugin('headstream-test-stop-first-bundle')
        client.wait_for_workers(2, timeout=60)


def test_small_pipeline_survives_a_killed_worker(tmp_path, kill_cluster):
    """The killed worker's bundle is recomputed once: every number and the bundle count (one per
    element: a bundle counted twice or lost would change it) are the hand sums."""
    address, client = kill_cluster
    with _kill_one_worker(client, tmp_path) as killer:
        options = PipelineOptions(['--runner', 'DaskRunner', '--dask_client_address', address])
        p = beam.Pipeline(runner=HeadstreamDaskRunner(), options=options)
        _small_pipeline(p, str(tmp_path))
        assert p.run().wait_until_finish() == 'DONE'
    assert killer.killed not in set(client.run(os.getpid).values())
    assert _read(tmp_path, 'sums') == _expected_sums(bundles=N)
    assert sorted(_read(tmp_path, 'threes')) == THREES


def test_small_pipeline_fails_in_one_line_when_no_retry_is_allowed(tmp_path, kill_cluster):
    """With the scheduler allowing no failure, the lost bundle fails the run: one line naming the
    step's task and the killed worker, and no sink written."""
    address, client = kill_cluster

    def set_allowed_failures(n: int, dask_scheduler=None) -> int:
        old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, n
        return old

    old = client.run_on_scheduler(set_allowed_failures, 0)
    try:
        with _kill_one_worker(client, tmp_path) as killer:
            options = PipelineOptions(['--runner', 'DaskRunner', '--dask_client_address', address])
            p = beam.Pipeline(runner=HeadstreamDaskRunner(), options=options)
            _small_pipeline(p, str(tmp_path))
            result = p.run()
            with pytest.raises(dask_runner.DaskWorkerLostError) as e:
                result.wait_until_finish()
            assert result.state == 'FAILED'
    finally:
        client.run_on_scheduler(set_allowed_failures, old)
    message = str(e.value)
    assert '\n' not in message, message
    assert re.search(r'^DaskRunner: the run failed: task \S+, partition [^;]+ was lost', message), \
        message
    assert killer.addresses[killer.killed] in message, message
    assert "allows 0 (distributed.scheduler.allowed-failures)" in message, message
    assert not os.path.exists(str(tmp_path / 'sums.json'))
    assert not os.path.exists(str(tmp_path / 'threes.json'))


@pytest.mark.slow
def test_cli_with_a_killed_worker_equals_direct_runner(tmp_path, kill_cluster):
    """`headstream evaluate` on Dask, one worker killed after its first bundle: the run completes
    and its tables are the DirectRunner's to 1e-9 relative (no bundle lost or counted twice)."""
    address, client = kill_cluster
    config = {'input': {'pattern': _write_shards('parquet', tmp_path / 'in')},
              'heads': HEADS, 'head_weights': HEAD_WEIGHTS, 'slices': [[], ['country']]}
    _evaluate(config, tmp_path / 'direct', '--runner', 'DirectRunner')
    with _kill_one_worker(client, tmp_path):
        _evaluate(config, tmp_path / 'dask', '--runner', 'DaskRunner',
                  '--dask_client_address', address)
    _assert_same_tables(tmp_path / 'direct', tmp_path / 'dask')


@pytest.mark.slow
def test_cli_fails_clearly_when_no_retry_is_allowed(tmp_path, kill_cluster, capfd):
    """With no failure allowed, `headstream evaluate` stops with the one-line DaskWorkerLostError
    (raised, or printed with exit status 1 by a command line that reports it) and writes no
    tables."""
    from pipeline import cli
    address, client = kill_cluster

    def set_allowed_failures(n: int, dask_scheduler=None) -> int:
        old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, n
        return old

    config = {'input': {'pattern': _write_shards('parquet', tmp_path / 'in')},
              'heads': HEADS[:1]}
    out = tmp_path / 'dask'
    old = client.run_on_scheduler(set_allowed_failures, 0)
    try:
        with _kill_one_worker(client, tmp_path) as killer:
            try:
                status = cli.main(['evaluate', '--config', json.dumps(config), '--output',
                                   str(out), '--runner', 'DaskRunner',
                                   '--dask_client_address', address])
                message = capfd.readouterr().err.strip().splitlines()[-1]
                assert status == 1
            except dask_runner.DaskWorkerLostError as e:
                message = str(e)
    finally:
        client.run_on_scheduler(set_allowed_failures, old)
    assert '\n' not in message and re.search(r'task \S+, partition [^;]+ was lost', message), \
        message
    assert killer.addresses[killer.killed] in message, message
    for name in ('metrics', 'plots', 'summary.json'):
        assert not os.path.exists(str(out / name)), name
