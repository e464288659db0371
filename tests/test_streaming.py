"""Streaming evaluation (pipeline/streaming.py): TestStream on Beam's BundleBasedDirectRunner.

Every expected value is the head's array face fed exactly the rows a pane should hold, as one
batch (the array face is tested equal to the TF face elsewhere); which rows a pane holds is
derived here by hand from the TestStream's script: early panes hold what arrived before the
processing-time firing, the on-time pane what arrived before the watermark passed the window's
end, late panes everything up to the late row, and rows behind end + allowed_lateness are dropped.
"""
from __future__ import annotations

import glob
import json
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing import test_stream
from apache_beam.transforms import window as beam_window

from pipeline import config as config_lib
from pipeline import pane_results, streaming, streaming_sources
from pipeline.elements import SourceBatch
from pipeline.writers.panes import pane_paths, window_tag

# A window boundary: windows of 60 s are aligned to the epoch.
T0 = 1_700_000_000 - 1_700_000_000 % 60


def _config(tmp_path, window: dict, heads: list | None = None, **extra) -> config_lib.EvalConfig:
    raw = {
        'input': {'pattern': str(tmp_path / 'in' / '*.parquet')},
        'heads': heads or [{'type': 'BinaryClassHead',
                            'args': {'name': 'click', 'thresholds': [0.5]},
                            'logits': 'logit', 'labels': 'label'}],
        'slices': [[], ['country']],
        'window': window,
        'output': str(tmp_path / 'out'),
    }
    raw.update(extra)
    return config_lib.parse_config(raw)


def _rows(rng: np.random.Generator, ts: list[int], countries: str) -> dict[str, np.ndarray]:
    n = len(ts)
    return {'ts': np.asarray(ts, np.int64),
            'logit': rng.normal(size=n).astype(np.float32),
            'label': rng.integers(0, 2, size=n).astype(np.int64),
            'y': rng.normal(size=n).astype(np.float32),
            'country': np.asarray(list(countries))}


def _batch(rows: dict[str, np.ndarray], name: str) -> SourceBatch:
    return SourceBatch(name, 0, pa.RecordBatch.from_pydict(
        {k: pa.array(v.tolist()) for k, v in rows.items()}))


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _take(rows: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in rows.items()}


def _expected(head, rows: dict[str, np.ndarray], labels: str = 'label', logits: str = 'logit'
              ) -> dict[str, float]:
    """The array face over `rows` as one batch: metric (suffix stripped) → value, plus loss and
    example_count."""
    state = head.new_state().update(rows[labels].reshape(-1, 1), rows[logits].reshape(-1, 1))
    out = {k.split('/' + head.name)[0] if head.name else k: v for k, v in state.result().items()}
    out['loss'] = state.loss()
    out['example_count'] = float(state.counts()[0])
    return out


def _metrics(table: pa.Table, slice_name: str, head: str) -> dict[str, float]:
    d = table.to_pydict()
    out = {}
    for i in range(table.num_rows):
        if d['slice'][i] == slice_name and d['head'][i] == head:
            out[d['metric'][i]] = d['value'][i]
            out['example_count'] = float(d['example_count'][i])
    return out


def _assert_close(got: dict[str, float], want: dict[str, float], where: str) -> None:
    assert set(got) == set(want), where
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), '%s: %s' % (where, k)


def _pane_files(out: str) -> dict[tuple[str, int], pa.Table]:
    files = {}
    for path in sorted(glob.glob(os.path.join(out, 'panes', 'metrics', '*.parquet'))):
        t = pq.read_table(path)
        start = t.column('window_start')[0].value // 1_000_000
        files[(start, t.column('pane_index')[0].as_py())] = t
    return files


def _run_one_batch(config, rows: list) -> None:
    """Runs the streaming pipeline on `rows` as one batch at T0, then ends the stream."""
    _run(config, test_stream.TestStream(coder=beam.coders.PickleCoder())
         .advance_watermark_to(T0)
         .add_elements([beam_window.TimestampedValue(_batch(rows, 'all'), T0)])
         .advance_watermark_to_infinity())


def _run(config: config_lib.EvalConfig, stream: test_stream.TestStream,
         bad_records: str = 'fail') -> None:
    options = PipelineOptions([], streaming=True)
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        _ = (p | stream | streaming.EvaluateWindows(config, 'run-test', bad_records))


def _check_window(table: pa.Table, start: int, size: int, timing: str, head, rows, countries):
    assert table.column('window_start')[0].value == start * 1_000_000
    assert table.column('window_end')[0].value == (start + size) * 1_000_000
    assert set(table.column('pane').to_pylist()) == {timing}
    _assert_close(_metrics(table, 'Overall', 'click'), _expected(head, rows),
                  'window %d %s Overall' % (start, timing))
    for c in countries:
        sub = _take(rows, rows['country'] == c)
        if sub['ts'].size:
            _assert_close(_metrics(table, 'country:%s' % c, 'click'), _expected(head, sub),
                          'window %d %s country:%s' % (start, timing, c))


def test_early_on_time_late_panes_accumulate_and_too_late_rows_drop(tmp_path):
    config = _config(tmp_path, {'column': 'ts', 'size': 60, 'allowed_lateness': 60,
                                'early_firing': 10})
    head = config.build_heads()[0]
    rng = np.random.default_rng(7)
    w0, w1 = T0, T0 + 60
    a0 = _rows(rng, [w0 + 1, w0 + 5, w0 + 30, w0 + 59], 'UUDU')
    a1 = _rows(rng, [w1 + 0, w1 + 44], 'UD')
    b0 = _rows(rng, [w0 + 2, w0 + 3, w0 + 58], 'DDU')
    c0 = _rows(rng, [w0 + 10, w0 + 11], 'UD')
    d0 = _rows(rng, [w0 + 12], 'U')
    stream = (test_stream.TestStream(coder=beam.coders.PickleCoder())
              .advance_watermark_to(w0)
              .add_elements([beam_window.TimestampedValue(_batch(_concat([a0, a1]), 'a'), w0)])
              .advance_processing_time(20)        # early panes: a0 in w0, a1 in w1
              .add_elements([beam_window.TimestampedValue(_batch(b0, 'b'), w0 + 30)])
              .advance_processing_time(20)        # early again (repeatedly): a0 + b0 in w0
              .advance_watermark_to(w0 + 61)      # w0 on time: a0 + b0, though nothing new
              .add_elements([beam_window.TimestampedValue(_batch(c0, 'c'), w0 + 61)])
              .advance_processing_time(20)        # late pane: a0 + b0 + c0
              .advance_watermark_to(w0 + 60 + 60 + 10)   # w0 expires (end + lateness passed)
              .add_elements([beam_window.TimestampedValue(_batch(d0, 'd'), w0 + 130)])
              .advance_watermark_to_infinity())   # w1 on time: a1 only; d0 dropped
    _run(config, stream)
    panes = _pane_files(config.output)
    assert sorted(panes) == [(w0, 0), (w0, 1), (w0, 2), (w0, 3), (w1, 0), (w1, 1)]
    _check_window(panes[(w0, 0)], w0, 60, 'early', head, a0, 'UD')
    _check_window(panes[(w0, 1)], w0, 60, 'early', head, _concat([a0, b0]), 'UD')
    _check_window(panes[(w0, 2)], w0, 60, 'on_time', head, _concat([a0, b0]), 'UD')
    _check_window(panes[(w0, 3)], w0, 60, 'late', head, _concat([a0, b0, c0]), 'UD')
    _check_window(panes[(w1, 0)], w1, 60, 'early', head, a1, 'UD')
    _check_window(panes[(w1, 1)], w1, 60, 'on_time', head, a1, 'UD')
    # The window's latest file is its last pane.
    latest = pq.read_table(os.path.join(config.output, 'metrics',
                                        'window-%s.parquet' % window_tag(w0 * 10**6)))
    assert latest.column('pane_index').to_pylist() == [3] * latest.num_rows
    assert latest.equals(panes[(w0, 3)])


def test_sliding_windows_hold_exactly_their_rows(tmp_path):
    config = _config(tmp_path, {'column': 'ts', 'size': 60, 'period': 30})
    head = config.build_heads()[0]
    rng = np.random.default_rng(11)
    ts = [T0 + 1, T0 + 29, T0 + 30, T0 + 59, T0 + 60, T0 + 89, T0 + 90, T0 + 119, T0 + 15,
          T0 + 45, T0 + 75]
    rows = _rows(rng, ts, 'UDUDUDUDUDU')
    _run_one_batch(config, rows)
    panes = _pane_files(config.output)
    # Reference: every start that is a multiple of 30 with start <= t < start + 60.
    starts = sorted({s for t in ts for s in (t - t % 30, t - t % 30 - 30)})
    assert sorted(panes) == [(s, 0) for s in starts]
    for s in starts:
        inside = (rows['ts'] >= s) & (rows['ts'] < s + 60)
        _check_window(panes[(s, 0)], s, 60, 'on_time', head, _take(rows, inside), 'UD')


def test_two_heads_multi_head_loss_and_dead_letter_rows(tmp_path):
    heads = [{'type': 'BinaryClassHead', 'args': {'name': 'click'},
              'logits': 'logit', 'labels': 'label'},
             {'type': 'RegressionHead', 'args': {'name': 'reg'}, 'logits': 'y', 'labels': 'y2'}]
    config = _config(tmp_path, {'column': 'ts', 'size': 60}, heads=heads, head_weights=[1.0, 2.0])
    click, reg = config.build_heads()
    rng = np.random.default_rng(3)
    rows = _rows(rng, [T0 + 1, T0 + 2, T0 + 3, T0 + 4], 'UUDD')
    rows['y2'] = rng.normal(size=4).astype(np.float32)
    batch = _batch(rows, 'shard-1')
    # Row 2's label is null: rejected for every head, written to errors/ with its file and row.
    labels = batch.batch.column('label').to_pylist()
    labels[2] = None
    bad = SourceBatch('shard-1', 100, batch.batch.set_column(
        batch.batch.schema.get_field_index('label'), 'label', pa.array(labels, pa.int64())))
    stream = (test_stream.TestStream(coder=beam.coders.PickleCoder())
              .advance_watermark_to(T0)
              .add_elements([beam_window.TimestampedValue(bad, T0)])
              .advance_watermark_to_infinity())
    _run(config, stream, bad_records='dead_letter')
    panes = _pane_files(config.output)
    assert list(panes) == [(T0, 0)]
    table = panes[(T0, 0)]
    good = _take(rows, np.arange(4) != 2)
    want_click = _expected(click, good)
    want_reg = _expected(reg, good, labels='y2', logits='y')
    _assert_close(_metrics(table, 'Overall', 'click'), want_click, 'click')
    _assert_close(_metrics(table, 'Overall', 'reg'), want_reg, 'reg')
    multi = _metrics(table, 'Overall', 'click_reg')
    assert multi['loss'] == pytest.approx(1.0 * want_click['loss'] + 2.0 * want_reg['loss'])
    errors = pq.read_table(glob.glob(os.path.join(config.output, 'errors', '*.parquet'))[0])
    assert errors.column('file').to_pylist() == ['shard-1']
    assert errors.column('row').to_pylist() == [102]
    assert errors.column('column').to_pylist() == ['label']


def test_window_states_combine_fn_merges_in_any_order():
    """Shards added to separate accumulators and merged in different groupings equal one pass."""
    config = config_lib.parse_config({
        'input': {'pattern': 'x/*.parquet'},
        'heads': [{'type': 'BinaryClassHead', 'logits': 'logit', 'labels': 'label'}],
        'window': {'column': 'ts', 'size': 60}})
    head = config.build_heads()[0]
    rng = np.random.default_rng(5)
    shards = []
    for i in range(4):
        labels = rng.integers(0, 2, size=(5, 1)).astype(np.float32)
        logits = rng.normal(size=(5, 1)).astype(np.float32)
        key = ((), (), 0, (i % 2) * 60_000_000, None)
        shards.append((key, head.new_state().update(labels, logits), labels, logits))
    fn = streaming.WindowStatesCombineFn(config)
    fn.setup()

    def accumulate(items):
        acc = fn.create_accumulator()
        for key, state, _, _ in items:
            acc = fn.add_input(acc, (key, state))
        return acc

    one = fn.extract_output(accumulate(shards))
    for grouping in ([[0, 1], [2, 3]], [[3], [1, 0], [2]], [[2, 0, 3, 1]]):
        merged = fn.extract_output(fn.merge_accumulators(
            [accumulate([shards[i] for i in g]) for g in grouping]))
        assert set(merged) == set(one)
        for key in one:
            assert merged[key].result() == pytest.approx(one[key].result(), rel=1e-12)
    for key in one:  # each window's state is the array face over that window's rows, one batch
        rows = [s for s in shards if s[0] == key]
        ref = head.new_state().update(np.concatenate([r[2] for r in rows]),
                                      np.concatenate([r[3] for r in rows]))
        assert one[key].result() == pytest.approx(ref.result(), rel=1e-12)
        assert one[key].counts() == ref.counts() == (10, 10.0)
    # The inputs were not mutated by accumulating or merging.
    for key, state, labels, logits in shards:
        assert state.counts() == (5, 5.0)


def test_evaluate_streaming_rejects_local_runner_and_missing_window(tmp_path):
    config = _config(tmp_path, {'column': 'ts', 'size': 60})
    with pytest.raises(config_lib.ConfigError, match='headstream watch'):
        streaming.evaluate_streaming(config, ['--runner=DirectRunner'])
    with pytest.raises(config_lib.ConfigError, match='headstream watch'):
        streaming.evaluate_streaming(config, [])
    no_window = config_lib.parse_config({
        'input': {'pattern': 'x/*.parquet'}, 'output': str(tmp_path / 'o'),
        'heads': [{'type': 'BinaryClassHead', 'logits': 'logit', 'labels': 'label'}]})
    with pytest.raises(config_lib.ConfigError, match='window'):
        streaming.evaluate_streaming(no_window, ['--runner=DataflowRunner'])


def test_json_messages_become_batches_with_null_rows_for_bad_payloads():
    fn = streaming_sources.JsonMessagesToBatches('pubsub:sub', ['ts', 'logit', 'label'])
    fn.start_bundle()
    out = []
    for payload in (b'{"ts": 5, "logit": 0.5, "label": 1}', b'not json', b'[1, 2]',
                    b'{"ts": 7, "logit": -1.0, "label": 0, "extra": 3}'):
        out += list(fn.process(payload, timestamp=beam_window.Timestamp(10)))
    assert out == []  # fewer than MESSAGES_PER_BATCH rows: flushed with the bundle
    (wv,) = list(fn.finish_bundle())
    sb = wv.value
    assert sb.batch.to_pydict() == {'ts': [5, None, None, 7], 'logit': [0.5, None, None, -1.0],
                                    'label': [1, None, None, 0]}
    assert sb.path.startswith('pubsub:sub')


def test_pubsub_json_messages_are_evaluated_per_window(tmp_path):
    """The Pub/Sub path after the read: JSON payloads → batches → windows (ISO and epoch-second
    event times alike); a payload that is not a JSON object is a rejected row."""
    config = _config(tmp_path, {'column': 'ts', 'size': 60})
    head = config.build_heads()[0]
    def iso(seconds: int) -> str:  # T0 is 2023-11-14T22:13:00Z
        return '2023-11-14T22:%02d:%02dZ' % divmod(seconds - T0 + 13 * 60, 60)

    assert T0 == 1_699_999_980 and iso(T0 + 61) == '2023-11-14T22:14:01Z'
    messages = [{'ts': iso(T0 + 1), 'logit': 0.5, 'label': 1, 'country': 'U'},
                {'ts': iso(T0 + 59), 'logit': -1.5, 'label': 0, 'country': 'D'},
                {'ts': iso(T0 + 61), 'logit': 2.0, 'label': 0, 'country': 'U'},
                {'ts': iso(T0 + 30), 'logit': 0.25, 'label': 1, 'country': 'U'}]
    payloads = [json.dumps(m).encode() for m in messages] + [b'{"ts": oops']
    stream = (test_stream.TestStream(coder=beam.coders.BytesCoder())
              .advance_watermark_to(T0)
              .add_elements([beam_window.TimestampedValue(p, T0) for p in payloads])
              .advance_watermark_to_infinity())
    with beam.Pipeline(runner=BundleBasedDirectRunner(),
                       options=PipelineOptions([], streaming=True)) as p:
        _ = (p | stream
             | beam.ParDo(streaming_sources.JsonMessagesToBatches('pubsub:test', config.columns(),
                                                                  'ts'))
             | streaming.EvaluateWindows(config, 'run-test', 'dead_letter'))
    panes = _pane_files(config.output)
    assert sorted(panes) == [(T0, 0), (T0 + 60, 0)]
    rows = {'ts': np.asarray([T0 + 1, T0 + 59, T0 + 61, T0 + 30]),
            'logit': np.asarray([0.5, -1.5, 2.0, 0.25], np.float32),
            'label': np.asarray([1, 0, 0, 1]), 'country': np.asarray(list('UDUU'))}
    for start in (T0, T0 + 60):
        inside = (rows['ts'] >= start) & (rows['ts'] < start + 60)
        _check_window(panes[(start, 0)], start, 60, 'on_time', head, _take(rows, inside), 'UD')
    errors = pa.concat_tables([pq.read_table(f) for f in glob.glob(
        os.path.join(config.output, 'errors', '*.parquet'))])
    assert errors.num_rows == 1 and errors.column('file')[0].as_py().startswith('pubsub:test')


def test_rows_to_batch_types_columns_and_nulls_what_does_not_fit():
    batch = streaming_sources.rows_to_batch(
        [{'ts': '2026-11-01T00:00:09Z', 'x': 1, 'l': [1.0, 2]},
         {'ts': 5, 'x': 'a', 'l': [1, 'b']},
         {'ts': '2026-11-01T00:00:10', 'x': 2.5, 'l': None},
         {'ts': 'yesterday'}], ['ts', 'x', 'l', 'missing'], time_column='ts')
    assert batch.schema.field('ts').type == pa.timestamp('us', tz='UTC')
    assert batch.column(0).cast(pa.int64()).to_pylist() == [
        1_793_491_209_000_000, 5_000_000, 1_793_491_210_000_000, None]
    assert batch.column(1).to_pylist() == [1.0, None, 2.5, None]   # the string does not fit
    assert batch.column(2).to_pylist() == [[1.0, 2.0], None, None, None]
    assert batch.column(3).to_pylist() == [None] * 4 and batch.column(3).type == pa.float64()


def test_streaming_graphs_translate_for_both_sources(tmp_path):
    """Pub/Sub and continuous file matching, sliding windows, fractional early firing: the graph
    must survive translation to Beam's runner API (what Dataflow receives)."""
    config = _config(tmp_path, {'column': 'ts', 'size': 60, 'period': 20, 'early_firing': 0.4,
                                'allowed_lateness': 5.5})
    for source in (streaming_sources.ReadPubSubBatches(
                       config.columns(), subscription='projects/my-project/subscriptions/s',
                       time_column='ts'),
                   streaming_sources.ReadNewFiles(config.pattern, 'parquet', config.columns(),
                                                  5.0)):
        p = beam.Pipeline(options=PipelineOptions([], streaming=True))
        _ = p | source | streaming.EvaluateWindows(config, 'run-test')
        names = [t.unique_name for t in p.to_runner_api().components.transforms.values()]
        assert any(n.endswith('WritePane') for n in names)


def test_an_older_pane_never_replaces_the_latest_file(tmp_path):
    config = _config(tmp_path, {'column': 'ts', 'size': 60})
    head = config.build_heads()[0]
    from pipeline.results import state_result
    state = head.new_state().update(np.asarray([[1.0], [0.0]]), np.asarray([[0.3], [-0.2]]))
    results = [state_result(((), (), 0, T0 * 10**6, None), state, config.head_names)]
    pane_results.write_pane(config, results, 'r', T0 * 10**6, 'late', 2)
    pane_results.write_pane(config, results, 'r', T0 * 10**6, 'on_time', 1)   # arrives after pane 2
    latest = pq.read_table(pane_paths(config.output, T0 * 10**6, 0)['metrics'])
    assert set(latest.column('pane_index').to_pylist()) == {2}
    assert sorted(_pane_files(config.output)) == [(T0, 1), (T0, 2)]   # both on record


def test_streaming_panes_carry_each_windows_intervals(tmp_path):
    """With `confidence:`, every pane row carries the interval of its window's rows (an interval
    state fed them as one batch); rows of metrics without one hold nulls."""
    config = _config(tmp_path, {'column': 'ts', 'size': 60}, confidence={'level': 0.95})
    head = config.build_heads()[0]
    rng = np.random.default_rng(12)
    ts = [T0 + i % 60 for i in range(40)] + [T0 + 60 + i % 60 for i in range(25)]
    rows = _rows(rng, ts, ('UD' * 40)[:65])
    _run_one_batch(config, rows)
    panes = _pane_files(config.output)
    assert sorted(panes) == [(T0, 0), (T0 + 60, 0)]
    for start in (T0, T0 + 60):
        inside = (rows['ts'] >= start) & (rows['ts'] < start + 60)
        want = head.new_state(intervals=True).update(
            rows['label'][inside][:, None], rows['logit'][inside][:, None]).interval_estimates()
        got = {r['metric']: r for r in panes[(start, 0)].to_pylist() if r['slice'] == 'Overall'}
        for key, e in want.items():
            r = got[key[:-len('/click')]]
            assert e is not None and (r['ci_lower'], r['ci_upper'], r['standard_error']) == \
                pytest.approx(tuple(e), rel=1e-9, abs=1e-12), (start, key)
        assert got['loss']['ci_lower'] is None and got['auc_precision_recall']['ci_upper'] is None


def test_a_pane_keeps_plots_for_overall_and_its_largest_slices_only(tmp_path):
    """`plots.max_slices` applies per pane as in batch runs: country A (3 rows) and B (2) keep
    their plots with max_slices 2, C (1 row) loses them and is counted."""
    config = _config(tmp_path, {'column': 'ts', 'size': 60}, plots={'max_slices': 2})
    head = config.build_heads()[0]
    from pipeline.results import state_result
    results = []
    for values, n in (((), 6), (('A',), 3), (('B',), 2), (('C',), 1)):
        state = head.new_state().update(np.ones((n, 1)), np.full((n, 1), 0.3))
        key = (('country',) if values else (), values, 0, T0 * 10**6, None)
        results.append(state_result(key, state, config.head_names))
    summary = pane_results.write_pane(config, results, 'r', T0 * 10**6, 'on_time', 0)
    assert summary['slices_without_plots'] == {'country': 1}
    plots = pq.read_table(pane_paths(config.output, T0 * 10**6, 0)['plots'])
    assert set(plots.column('slice').to_pylist()) == {'Overall', 'country:A', 'country:B'}
