"""`headstream watch` (pipeline/watch.py): shards evaluated as they arrive, per event-time window.

Expected values are the head's array face over exactly the rows of a window seen so far, as one
batch; pane timings are derived by hand from the watermark rule (largest event time seen minus
allowed_lateness): early while the watermark is before the window's end, on_time at the first
pane after it, late afterwards.
"""
from __future__ import annotations

import glob
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import config as config_lib
from pipeline import watch
from pipeline import watch_state
from pipeline.writers.panes import window_tag

T0 = 1_700_000_000 - 1_700_000_000 % 60   # a window boundary (60 s windows, epoch-aligned)
W0, W1, W3 = T0, T0 + 60, T0 + 180


class Shards:
    """Writes Parquet shards into `<tmp>/in` and remembers every row written."""

    def __init__(self, tmp_path, seed: int = 0):
        self.dir = tmp_path / 'in'
        self.dir.mkdir()
        self.rng = np.random.default_rng(seed)
        self.rows: list[dict] = []

    def write(self, name: str, ts: list[int], labels: list | None = None) -> None:
        n = len(ts)
        logits = self.rng.normal(size=n).astype(np.float32)
        labels = labels if labels is not None else self.rng.integers(0, 2, size=n).tolist()
        countries = [('U', 'D')[i % 2] for i in range(n)]
        table = pa.table({
            'ts': pa.array(np.asarray(ts, np.int64) * 1_000_000).cast(
                pa.timestamp('us', tz='UTC')),
            'logit': pa.array(logits),
            'label': pa.array(labels, pa.int64()),
            'country': pa.array(countries),
        })
        tmp = self.dir / ('.' + name)
        pq.write_table(table, tmp)
        os.replace(tmp, self.dir / name)  # shards appear atomically
        self.rows += [{'ts': t, 'logit': float(l), 'label': y, 'country': c}
                      for t, l, y, c in zip(ts, logits, labels, countries)]

    def window(self, start: int, country: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        rows = [r for r in self.rows if start <= r['ts'] < start + 60 and r['label'] is not None
                and (country is None or r['country'] == country)]
        return (np.asarray([[r['label']] for r in rows], np.float32),
                np.asarray([[r['logit']] for r in rows], np.float32))


def _config(tmp_path, **window) -> config_lib.EvalConfig:
    return config_lib.parse_config({
        'input': {'pattern': str(tmp_path / 'in' / '*.parquet')},
        'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click', 'thresholds': [0.5]},
                   'logits': 'logit', 'labels': 'label'}],
        'slices': [[], ['country']],
        'window': dict({'column': 'ts', 'size': 60}, **window),
        'output': str(tmp_path / 'out'),
    })


def _expected(head, labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    state = head.new_state().update(labels, logits)
    out = {k[:-len('/click')] if k.endswith('/click') else k: v
           for k, v in state.result().items()}
    out['loss'] = state.loss()
    out['example_count'] = float(state.counts()[0])
    return out


def _metrics(table: pa.Table, slice_name: str) -> dict[str, float]:
    d = table.to_pydict()
    out = {}
    for i in range(table.num_rows):
        if d['slice'][i] == slice_name:
            out[d['metric'][i]] = d['value'][i]
            out['example_count'] = float(d['example_count'][i])
    return out


def _latest(config, start: int) -> pa.Table:
    return pq.read_table(os.path.join(config.output, 'metrics', 'window-%s.parquet'
                                      % window_tag(start * 1_000_000)))


def _check(config, shards: Shards, start: int, timing: str, index: int) -> None:
    head = config.build_heads()[0]
    table = _latest(config, start)
    assert table.column('pane').to_pylist() == [timing] * table.num_rows
    assert table.column('pane_index').to_pylist() == [index] * table.num_rows
    assert table.column('window_start')[0].value == start * 1_000_000
    assert table.column('window_end')[0].value == (start + 60) * 1_000_000
    for name, country in (('Overall', None), ('country:U', 'U'), ('country:D', 'D')):
        labels, logits = shards.window(start, country)
        got = _metrics(table, name)
        if not len(labels):  # a slice without rows in the window has no rows in the table
            assert got == {}, name
            continue
        want = _expected(head, labels, logits)
        assert set(got) == set(want), name
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), (start, name, k)


def _poll(config) -> list[tuple[int, str, int]]:
    (panes,) = list(watch.watch(config, once=True, settle=0))
    return [(p['window_start'] // 1_000_000, p['pane'], p['pane_index']) for p in panes]


def test_panes_accumulate_with_timing_from_the_data_watermark(tmp_path):
    config = _config(tmp_path, allowed_lateness=30)
    shards = Shards(tmp_path)
    shards.write('part-1.parquet', [W0 + 1, W0 + 50])         # watermark W0 + 20 < end of W0
    assert _poll(config) == [(W0, 'early', 0)]
    _check(config, shards, W0, 'early', 0)

    shards.write('part-2.parquet', [W0 + 5, W1 + 40, W0 + 59])  # watermark W1 + 10 >= end of W0
    assert _poll(config) == [(W0, 'on_time', 1), (W1, 'early', 0)]
    _check(config, shards, W0, 'on_time', 1)
    _check(config, shards, W1, 'early', 0)

    assert _poll(config) == []                                 # nothing new: nothing rewritten

    shards.write('part-3.parquet', [W0 + 7, W0 + 8])           # late rows are kept: a late pane
    assert _poll(config) == [(W0, 'late', 2)]
    _check(config, shards, W0, 'late', 2)

    shards.write('part-4.parquet', [W3 + 20, W3 + 21])         # watermark W3 - 10 passes W1's end
    assert _poll(config) == [(W1, 'on_time', 1), (W3, 'early', 0)]
    _check(config, shards, W1, 'on_time', 1)                   # on time with no new row
    _check(config, shards, W3, 'early', 0)
    # Every pane is on record; each window's latest file equals its last pane.
    history = sorted(os.path.basename(p) for p in glob.glob(
        os.path.join(config.output, 'panes', 'metrics', '*.parquet')))
    tag = window_tag
    assert history == sorted(
        ['window-%s-pane-%04d.parquet' % (tag(s * 10**6), i)
         for s, i in ((W0, 0), (W0, 1), (W0, 2), (W1, 0), (W1, 1), (W3, 0))])
    last = pq.read_table(os.path.join(config.output, 'panes', 'metrics', history[2]))
    assert last.equals(_latest(config, W0))


def test_main_resumes_from_saved_state_without_counting_a_file_twice(tmp_path, capsys):
    config = _config(tmp_path)
    shards = Shards(tmp_path, seed=1)
    shards.write('part-1.parquet', [W0 + 1, W0 + 2, W0 + 3])
    args = ['--config', str(tmp_path / 'eval.json'), '--once', '--settle', '0']
    (tmp_path / 'eval.json').write_text(__import__('json').dumps(config.to_dict()))
    assert watch.main(args) == 0
    assert 'pane 0 early' in capsys.readouterr().out
    shards.write('part-2.parquet', [W0 + 4, W1 + 1])
    assert watch.main(args) == 0                     # a new process: state from _watch/state.npz
    out = capsys.readouterr().out
    assert 'pane 1 on_time' in out and 'pane 0 early' in out
    _check(config, shards, W0, 'on_time', 1)          # 4 rows, not 3 + 3 + 1
    assert _metrics(_latest(config, W0), 'Overall')['example_count'] == 4
    state = watch_state.load_state(config)
    assert [os.path.basename(f) for f in state.files] == ['part-1.parquet', 'part-2.parquet']


def test_bad_rows_fail_naming_file_row_and_column_or_go_to_errors(tmp_path, capsys):
    config = _config(tmp_path)
    shards = Shards(tmp_path, seed=2)
    shards.write('part-1.parquet', [W0 + 1, W0 + 2, W0 + 3], labels=[1, None, 0])
    (tmp_path / 'eval.json').write_text(__import__('json').dumps(config.to_dict()))
    assert watch.main(['--config', str(tmp_path / 'eval.json'), '--once', '--settle', '0']) == 2
    message = capsys.readouterr().out
    assert 'part-1.parquet' in message and 'row 1' in message and 'column label' in message
    assert not os.path.exists(os.path.join(config.output, 'metrics'))
    assert watch.main(['--config', str(tmp_path / 'eval.json'), '--once', '--settle', '0',
                       '--bad_records', 'dead_letter']) == 0
    _check(config, shards, W0, 'early', 0)           # the two good rows only
    (errors,) = glob.glob(os.path.join(config.output, 'errors', '*.parquet'))
    t = pq.read_table(errors)
    assert t.column('row').to_pylist() == [1] and t.column('column').to_pylist() == ['label']


def test_empty_directory_and_missing_window_are_handled(tmp_path, capsys):
    config = _config(tmp_path)
    (tmp_path / 'in').mkdir()
    assert _poll(config) == []                       # no shard yet: nothing written, no error
    no_window = config_lib.parse_config({
        'input': {'pattern': str(tmp_path / 'in' / '*.parquet')},
        'heads': [{'type': 'BinaryClassHead', 'logits': 'logit', 'labels': 'label'}],
        'output': str(tmp_path / 'o')})
    with pytest.raises(config_lib.ConfigError, match='window'):
        list(watch.watch(no_window, once=True))


def test_watched_windows_equal_the_windowed_batch_run(tmp_path):
    """Windowed batch evaluation over every shard = the watch loop's final windows = the array
    face over each window's rows (checked in `_check`)."""
    from pipeline import run
    config = _config(tmp_path)
    shards = Shards(tmp_path, seed=3)
    shards.write('part-1.parquet', [W0 + 1, W0 + 9, W1 + 3, W0 + 30])
    shards.write('part-2.parquet', [W1 + 59, W3 + 1, W0 + 59, W3 + 2, W1])
    _poll(config)
    batch_out = str(tmp_path / 'batch')
    run.evaluate(config, [], output=batch_out)
    batch = pq.read_table(os.path.join(batch_out, 'metrics', 'metrics.parquet')).to_pydict()
    watched = {}
    # Watermark = W3 + 2 (no allowed lateness): W0 and W1 have ended, W3 has not.
    for start, timing in ((W0, 'on_time'), (W1, 'on_time'), (W3, 'early')):
        _check(config, shards, start, timing, 0)
        d = _latest(config, start).to_pydict()
        for i in range(len(d['value'])):
            watched[(d['slice'][i], d['head'][i], d['metric'][i], start)] = d['value'][i]
    got = {(batch['slice'][i], batch['head'][i], batch['metric'][i],
            batch['window_start'][i].timestamp()): batch['value'][i]
           for i in range(len(batch['value']))}
    assert set(got) == set(watched)
    for k, v in watched.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k


def test_streaming_demo_runs_and_checks_its_windows(tmp_path, capsys):
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'examples', 'streaming_demo.py')
    spec = importlib.util.spec_from_file_location('streaming_demo', path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main(['--workdir', str(tmp_path), '--every', '0.01']) == 0
    out = capsys.readouterr().out
    assert 'checked 4 windows' in out
    # How many shards each poll sees depends on timing; whatever it is, the first three windows
    # end on time (or late) and the last stays early (no row past its end ever arrives).
    assert ' on_time ' in out and ' early ' in out


def test_states_flushed_mid_bundle_are_kept_and_merged(tmp_path, monkeypatch):
    """The evaluator hands states back from `add` when a bundle holds too many keys; with the
    limit at 1 key every batch flushes, and the windows still equal the array face."""
    from pipeline import evaluate, sources
    monkeypatch.setattr(evaluate, 'MAX_BUNDLE_KEYS', 1)
    monkeypatch.setattr(sources, 'TARGET_ROWS', 7)   # several batches per shard
    shards = Shards(tmp_path)
    shards.write('a.parquet', [W0 + i for i in range(30)] + [W1 + i for i in range(25)])
    config = _config(tmp_path)
    _poll(config)
    _check(config, shards, W0, 'on_time', 0)   # rows of W1 moved the watermark past W0
    _check(config, shards, W1, 'early', 0)


# -------------------------------------------------------------------------------------------------
# Never lose or half-count data (issue 20, item 8): files read only once complete, unreadable
# files retried, files changed after reading reported, and a state file that is data, not code.
# The poll loop is driven directly with a fake clock (`watch._clock`); files are written by hand.
# -------------------------------------------------------------------------------------------------

class Clock:
    """A wall clock the test moves: `watch._clock` and `watch._sleep`."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(watch, '_clock', c, raising=False)
    monkeypatch.setattr(watch, '_sleep', c.sleep, raising=False)
    return c


def _config_for(tmp_path, fmt: str) -> config_lib.EvalConfig:
    raw = _config(tmp_path).to_dict()
    raw['input'] = {'pattern': str(tmp_path / 'in' / ('*.' + fmt)), 'format': fmt}
    return config_lib.parse_config(raw)


def _file_bytes(fmt: str, ts: list[int]) -> bytes:
    """A shard of len(ts) rows in window W0 (labels 1, 0, 1, ...), as CSV or Parquet bytes."""
    labels = [(i + 1) % 2 for i in range(len(ts))]
    logits = [0.25 * i - 1.0 for i in range(len(ts))]
    countries = [('U', 'D')[i % 2] for i in range(len(ts))]
    if fmt == 'csv':
        return ('ts,logit,label,country\n' + ''.join(
            '%d,%r,%d,%s\n' % row for row in zip(ts, logits, labels, countries))).encode()
    import io
    buf = io.BytesIO()
    pq.write_table(pa.table({'ts': pa.array(ts, pa.int64()), 'logit': pa.array(logits),
                             'label': pa.array(labels, pa.int64()),
                             'country': pa.array(countries)}), buf)
    return buf.getvalue()


def _count(config, start: int = W0) -> float:
    return _metrics(_latest(config, start), 'Overall')['example_count']


def _append(path, data: bytes) -> None:
    with open(path, 'ab') as f:
        f.write(data)


@pytest.mark.parametrize('fmt', ['csv', 'parquet'])
def test_a_file_still_being_copied_is_read_once_complete_and_every_row_counted_once(
        tmp_path, clock, fmt):
    config = _config_for(tmp_path, fmt)
    (tmp_path / 'in').mkdir()
    path = tmp_path / 'in' / ('part-1.' + fmt)
    data = _file_bytes(fmt, [W0 + i for i in range(7)])   # 7 rows
    # The first part: CSV cut at a line end (header and 3 whole rows), Parquet cut in half.
    cut = data.index(b'\n', data.index(b'%d,' % (W0 + 2))) + 1 if fmt == 'csv' else len(data) // 2
    state = watch_state.WatchState(run_id='r')
    _append(path, data[:cut])
    assert watch.poll_once(config, state) == []          # first sighting: not read
    clock.sleep(10)
    _append(path, data[cut:])                            # the copy goes on between two polls
    assert watch.poll_once(config, state) == []          # changed since the last poll: waits
    clock.sleep(1)
    assert watch.poll_once(config, state) == []          # unchanged, but for 1 s < settle (2 s)
    assert not os.path.exists(os.path.join(config.output, 'metrics'))
    clock.sleep(1)
    (pane,) = watch.poll_once(config, state)             # unchanged for 2 s: read, whole
    assert pane['files'] == [str(path)]
    assert _count(config) == 7
    clock.sleep(10)
    assert watch.poll_once(config, state) == []          # read once: never again
    assert _count(config) == 7
    assert state.files == [str(path)] and state.problems() == []


def test_an_unreadable_file_is_retried_with_a_warning_until_it_is_complete(tmp_path, clock,
                                                                           caplog):
    config = _config_for(tmp_path, 'parquet')
    (tmp_path / 'in').mkdir()
    path = tmp_path / 'in' / 'part-1.parquet'
    data = _file_bytes('parquet', [W0 + 1, W0 + 2, W0 + 3, W0 + 4])
    path.write_bytes(data[:len(data) - 10])              # no footer yet, and stalled
    state = watch_state.WatchState(run_id='r')
    with caplog.at_level(logging.WARNING, logger='pipeline.watch'):
        assert watch.poll_once(config, state) == []      # sighted
        for attempt in (1, 2):
            clock.sleep(10)
            assert watch.poll_once(config, state) == []  # stable, unreadable: no traceback
            (record,) = [r for r in caplog.records if r.name == 'pipeline.watch'
                         and r.levelno == logging.WARNING]
            assert str(path) in record.getMessage()
            assert 'attempt %d of %d' % (attempt, watch.MAX_READ_ATTEMPTS) in record.getMessage()
            assert '\n' not in record.getMessage()
            caplog.clear()
    path.write_bytes(data)                               # the copy completes
    clock.sleep(10)
    assert watch.poll_once(config, state) == []          # changed: waits for it to settle
    clock.sleep(10)
    (pane,) = watch.poll_once(config, state)
    assert _count(config) == 4
    assert state.attempts == {} and state.problems() == []


def test_a_file_never_readable_is_reported_after_the_last_attempt_not_a_traceback(
        tmp_path, clock, caplog):
    config = _config_for(tmp_path, 'parquet')
    (tmp_path / 'in').mkdir()
    bad = tmp_path / 'in' / 'part-0.parquet'
    bad.write_bytes(b'PAR1 not a parquet file')
    (tmp_path / 'in' / 'part-1.parquet').write_bytes(_file_bytes('parquet', [W0 + 1, W0 + 2]))
    (tmp_path / 'eval.json').write_text(__import__('json').dumps(config.to_dict()))
    args = ['--config', str(tmp_path / 'eval.json')]    # the default --settle, on the fake clock
    with caplog.at_level(logging.WARNING, logger='pipeline.watch'):
        assert watch.main(args + ['--once']) == 0        # the good file is counted all the same
        assert _count(config) == 2
        assert watch.main(args + ['--max_polls', str(watch.MAX_READ_ATTEMPTS + 2)]) == 0
    messages = [r.getMessage() for r in caplog.records if str(bad) in r.getMessage()]
    attempts = [m for m in messages if 'not read (attempt' in m]
    assert len(attempts) == watch.MAX_READ_ATTEMPTS - 1  # a warning each, then given up once
    assert sum('unreadable after %d attempts' % watch.MAX_READ_ATTEMPTS in m
               for m in messages) == 1
    state = watch_state.load_state(config)
    assert list(state.unreadable) == [str(bad)]
    assert state.problems()[0].startswith('unreadable, not counted: %s' % bad)
    assert _count(config) == 2


def test_a_file_rewritten_after_it_was_read_is_an_error_not_counted_twice_or_silently(
        tmp_path, clock, caplog):
    """Chosen and documented: an error line naming the file, its new content not counted (the
    windows keep the rows read before), and the file reported as changed after it was read."""
    config = _config_for(tmp_path, 'parquet')
    (tmp_path / 'in').mkdir()
    path = tmp_path / 'in' / 'part-1.parquet'
    path.write_bytes(_file_bytes('parquet', [W0 + 1, W0 + 2, W0 + 3]))
    state = watch_state.WatchState(run_id='r')
    assert watch.poll_once(config, state) == []
    clock.sleep(10)
    assert len(watch.poll_once(config, state)) == 1
    assert _count(config) == 3
    path.write_bytes(_file_bytes('parquet', [W0 + 4, W0 + 5, W0 + 6, W0 + 7, W0 + 8]))
    os.utime(path, (clock.now + 100, clock.now + 100))
    with caplog.at_level(logging.WARNING, logger='pipeline.watch'):
        for _ in range(3):
            clock.sleep(10)
            assert watch.poll_once(config, state) == []
    (record,) = [r for r in caplog.records if r.name == 'pipeline.watch'
                 and r.levelno >= logging.WARNING]  # once per change
    assert record.levelno == logging.ERROR
    assert str(path) in record.getMessage() and 'changed after it was read' in record.getMessage()
    assert _count(config) == 3                           # neither 3 + 5 nor 5
    assert list(watch_state.load_state(config).changed) == [str(path)]
    assert 'changed after it was read' in state.problems()[0]


def test_the_state_file_is_data_and_states_come_back_exact(tmp_path, clock):
    import json
    config = _config(tmp_path)
    shards = Shards(tmp_path, seed=4)
    shards.write('part-1.parquet', [W0 + 1, W0 + 2, W1 + 3])
    _poll(config)
    assert sorted(os.listdir(os.path.join(config.output, '_watch'))) == ['state.npz']
    with np.load(os.path.join(config.output, watch_state.STATE_FILE), allow_pickle=False) as npz:
        meta = json.loads(npz['meta'].tobytes().decode('utf-8'))
        names = list(npz.files)
    (entry,) = meta['files']
    assert entry[:2] == [str(tmp_path / 'in' / 'part-1.parquet'),
                         os.path.getsize(tmp_path / 'in' / 'part-1.parquet')]
    # Countries alternate U, D, U: W0 holds Overall, U and D; W1 Overall and U — 5 states of the
    # one head, each with its arrays.
    assert len(meta['states']) == 5 and {n.split('/')[0] for n in names} == {
        'meta', '0', '1', '2', '3', '4'}
    live = watch_state.load_state(config)
    again = watch_state.parse_state(watch_state.state_bytes(live), config.build_heads())
    assert set(again.states) == set(live.states) and len(live.states) == 5
    for key, s in live.states.items():
        assert again.states[key].result() == s.result() and again.states[key].counts() == s.counts()
    _check(config, shards, W0, 'on_time', 0)             # W1's row moved the watermark past W0


class _Exploit:
    """Unpickling it creates the marker directory: proof that the file's code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize('name', ['state.pkl', 'state.npz'])
def test_a_pickle_in_the_state_file_is_never_run(tmp_path, capsys, name):
    import json
    import pickle
    config = _config(tmp_path)
    Shards(tmp_path).write('part-1.parquet', [W0 + 1])
    marker = tmp_path / 'pwned'
    os.makedirs(os.path.join(config.output, '_watch'))
    with open(os.path.join(config.output, '_watch', name), 'wb') as f:
        f.write(pickle.dumps(_Exploit(str(marker))))
    (tmp_path / 'eval.json').write_text(json.dumps(config.to_dict()))
    code = watch.main(['--config', str(tmp_path / 'eval.json'), '--once'])
    assert not marker.exists()                           # the pickle's code did not run
    assert code == 2
    (line,) = capsys.readouterr().out.splitlines()       # one line naming the file
    assert os.path.join(config.output, '_watch', name) in line
    assert not os.path.exists(os.path.join(config.output, 'metrics'))


def test_watched_windows_carry_intervals_that_survive_the_state_file(tmp_path, clock):
    """With `confidence:`, each pane's rows carry the interval of the window's rows seen so far
    (an interval state fed them as one batch), and the saved state reloads into interval
    states with the same intervals."""
    raw = _config(tmp_path).to_dict()
    raw['confidence'] = {'level': 0.9}
    config = config_lib.parse_config(raw)
    shards = Shards(tmp_path, seed=6)
    shards.write('part-1.parquet', [W0 + i % 50 for i in range(40)])
    _poll(config)
    shards.write('part-2.parquet', [W0 + 5 + i % 40 for i in range(30)] + [W1 + 1])
    _poll(config)
    table = _latest(config, W0).to_pylist()
    head = config.build_heads()[0]
    for name, country in (('Overall', None), ('country:U', 'U'), ('country:D', 'D')):
        labels, logits = shards.window(W0, country)
        want = head.new_state(intervals=True).update(labels, logits).interval_estimates(0.9)
        rows = {r['metric']: r for r in table if r['slice'] == name}
        for key, e in want.items():
            r = rows[key[:-len('/click')]]
            got = (r['ci_lower'], r['ci_upper'], r['standard_error'])
            if e is None:
                assert got == (None, None, None), (name, key)
            else:
                assert got == pytest.approx(tuple(e), rel=1e-9, abs=1e-12), (name, key)
        assert rows['loss']['ci_lower'] is None
    live = watch_state.load_state(config)
    again = watch_state.parse_state(watch_state.state_bytes(live), config.build_heads(),
                                   config.new_state)
    for key, s in live.states.items():
        assert s.INTERVALS and again.states[key].interval_estimates() == s.interval_estimates()
