"""A local batch run's execution mode (pipeline/run.py `make_runner`, pipeline/tuning.py): one
in-memory worker thread per core unless the user chose, and no warning from Beam about that choice.

Results not depending on the mode is checked in test_pipeline_conformance.py (the default mode
against three `multi_threading` workers on small batches).
"""
from __future__ import annotations

import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import DirectOptions

from pipeline import run, tuning


def _direct(args: list[str]) -> DirectOptions:
    options = run.pipeline_options(args)
    run.make_runner(options)
    return options.view_as(DirectOptions)


def test_default_is_one_in_memory_worker_per_core_up_to_8():
    direct = _direct([])
    assert direct.direct_running_mode == 'in_memory'
    assert direct.direct_num_workers == max(1, min(os.cpu_count() or 1, 8))


@pytest.mark.parametrize('args, mode, workers', [
    (['--direct_running_mode=multi_threading'], 'multi_threading', 1),
    (['--direct_num_workers=3'], 'in_memory', 3),
    (['--direct_num_workers', '1'], 'in_memory', 1),
    (['--direct_running_mode=multi_processing', '--direct_num_workers=2'], 'multi_processing',
     2),
])
def test_a_users_choice_is_kept(args, mode, workers):
    direct = _direct(args)
    assert direct.direct_running_mode == mode
    assert direct.direct_num_workers == workers


def test_only_beams_in_memory_workers_warning_is_filtered():
    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord('apache_beam.runners.portability.fn_api_runner.fn_runner',
                                 logging.WARNING, __file__, 1, msg, (), None)
    # Beam 2.77's text (fn_runner.py), arguments and all.
    beams = record('If direct_num_workers is not equal to 1, direct_running_mode should be '
                   '`multi_processing` or `multi_threading` instead of `in_memory` in order for '
                   'it to have the desired worker parallelism effect. direct_num_workers: %d ; '
                   'running_mode: %s')
    assert tuning._not_the_in_memory_workers_warning(beams) is False
    assert tuning._not_the_in_memory_workers_warning(record('Some other warning')) is True


def test_a_run_on_two_in_memory_workers_logs_no_warning_and_counts_every_row(tmp_path, caplog,
                                                                            monkeypatch):
    from apache_beam.runners.worker import statesampler
    monkeypatch.setattr(statesampler.StateSampler.__init__, '__defaults__', (200,))  # Beam's
    os.makedirs(tmp_path / 'in')
    # Two files, so the runner's two workers each get a part of the plans.
    for i, (x, y) in enumerate((([0.5, 1.5], [1.0, 1.0]), ([2.0, 4.0], [0.0, 3.0]))):
        pq.write_table(pa.table({'x': pa.array(x, pa.float32()), 'y': pa.array(y, pa.float32())}),
                       str(tmp_path / 'in' / ('part-%d.parquet' % i)))
    config = {'input': {'pattern': str(tmp_path / 'in' / '*.parquet')},
              'heads': [{'type': 'RegressionHead', 'args': {'name': 'r'}, 'logits': 'x',
                         'labels': 'y'}],
              'slices': [[]], 'output': str(tmp_path / 'out')}
    with caplog.at_level(logging.WARNING):
        summary = run.evaluate(config, ['--direct_num_workers=2'])
    assert summary['rows_read'] == 4
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.getMessage().startswith('If direct_num_workers')]
    metrics = {r['metric']: r['value']
               for r in pq.read_table(str(tmp_path / 'out' / 'metrics')).to_pylist()}
    # (0.5 - 1)^2 + (1.5 - 1)^2 + (2 - 0)^2 + (4 - 3)^2 = 0.25 + 0.25 + 4 + 1, over 4 rows.
    assert metrics['average_loss'] == pytest.approx((0.25 + 0.25 + 4.0 + 1.0) / 4)
    # The run sampled every 10 ms; afterwards the process samples as Beam does again.
    assert _sampling_period_ms() == 200


def _sampling_period_ms() -> int:
    from apache_beam.runners.worker import statesampler
    from apache_beam.utils.counters import CounterFactory
    return statesampler.StateSampler('step', CounterFactory()).sampling_period_ms


def test_a_local_batch_run_samples_state_every_10_ms_other_runs_keep_beams_200(monkeypatch):
    from apache_beam.runners.worker import statesampler
    init = statesampler.StateSampler.__init__
    monkeypatch.setattr(init, '__defaults__', (200,))  # Beam's own, as in a fresh process
    assert _sampling_period_ms() == 200
    run.make_runner(run.pipeline_options(['--runner', 'DataflowRunner', '--project', 'p']))
    run.make_runner(run.pipeline_options(['--streaming']))
    assert _sampling_period_ms() == 200
    run.make_runner(run.pipeline_options([]))
    assert _sampling_period_ms() == tuning.STATE_SAMPLING_PERIOD_MS == 10
    run.make_runner(run.pipeline_options([]))  # once only: nothing changes a second time
    assert _sampling_period_ms() == 10


def test_a_sampling_default_other_than_beams_200_is_left_alone(monkeypatch):
    from apache_beam.runners.worker import statesampler
    monkeypatch.setattr(statesampler.StateSampler.__init__, '__defaults__', (150,))
    run.make_runner(run.pipeline_options([]))
    assert _sampling_period_ms() == 150
