"""WriteRun lets go of the group's decoded pieces once its frame holds them (the runner's list of
them would otherwise live through every writer: ~0.7 GB at 10^6 slices), and builds a small plots
table once for its writers (a large one on every reading, a piece at a time)."""
from __future__ import annotations

import gc
import weakref

import pyarrow as pa

from pipeline import run_outputs
from pipeline.config import parse_config


class _Piece:
    """Stands for a decoded ResultsPack."""


def test_release_empties_the_runners_list_and_frees_its_pieces():
    piece = _Piece()
    alive = weakref.ref(piece)
    values = [('results', piece), ('marker', None)]
    del piece
    run_outputs._release(values)
    gc.collect()
    assert values == [] and alive() is None


def test_release_leaves_other_iterables_alone():
    values = (('marker', None),)
    run_outputs._release(values)
    assert values == (('marker', None),)


def test_return_freed_memory_runs_anywhere():
    run_outputs.return_freed_memory()  # glibc's malloc_trim, or nothing
    assert run_outputs._LIBC is None or hasattr(run_outputs._LIBC, 'malloc_trim')


class _Plotted:
    plots = {'confusion': [0.0, 0.5, 1.0]}  # 3 plot rows a key: 6 in all


def _counting_plot_tables(monkeypatch) -> list[int]:
    calls = []

    def plot_tables(config, prepared, run_id, evaluated_at):
        calls.append(len(prepared))
        for i in range(3):
            yield pa.table({'x': pa.array([float(i)] * 2)})
    monkeypatch.setattr(run_outputs, 'plot_tables', plot_tables)
    return calls


def _pieces(monkeypatch, keep_rows: int):
    config = parse_config({'input': {'pattern': 'x/*.parquet'}, 'output': 'out',
                           'heads': [{'type': 'BinaryClassHead', 'logits': 'l',
                                      'labels': 'y'}]})
    monkeypatch.setattr(run_outputs._PlotPieces, 'KEEP_ROWS', keep_rows)
    return run_outputs._PlotPieces(config, [_Plotted(), _Plotted()], 'r', None)


def test_a_small_plots_table_is_built_once(monkeypatch):
    calls = _counting_plot_tables(monkeypatch)
    plots = _pieces(monkeypatch, 6)
    first, second = list(plots()), list(plots())
    assert calls == [2]  # built once, read twice
    assert [t.equals(u) for t, u in zip(first, second)] == [True] * 3


def test_a_large_plots_table_is_built_on_every_reading(monkeypatch):
    calls = _counting_plot_tables(monkeypatch)
    plots = _pieces(monkeypatch, 5)  # 6 rows: over the limit
    first, second = list(plots()), list(plots())
    assert calls == [2, 2]
    assert [t.equals(u) for t, u in zip(first, second)] == [True] * 3


def test_a_small_plots_table_read_by_two_threads_at_once_is_built_once(monkeypatch):
    """The TFMA writer's thread and Parquet read the table at the same time: one builds it, the
    other waits for it (a slow build keeps the first reader inside it while the second asks)."""
    import threading
    import time
    calls = []
    inside = threading.Event()

    def plot_tables(config, prepared, run_id, evaluated_at):
        calls.append(len(prepared))
        inside.set()
        time.sleep(0.2)
        for i in range(3):
            yield pa.table({'x': pa.array([float(i)] * 2)})
    monkeypatch.setattr(run_outputs, 'plot_tables', plot_tables)
    plots = _pieces(monkeypatch, 6)
    read = {}
    first = threading.Thread(target=lambda: read.setdefault('first', list(plots())))
    first.start()
    assert inside.wait(5)
    read['second'] = list(plots())
    first.join()
    assert calls == [2]
    assert [t.equals(u) for t, u in zip(read['first'], read['second'])] == [True] * 3


def _tree(root) -> dict[str, bytes]:
    """Every file under `root` (report.html and summary.json without their times and paths)."""
    import os
    import re
    out = {}
    for d, _, names in os.walk(root):
        for name in names:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root)
            data = open(path, 'rb').read()
            if name in ('summary.json', 'report.html') or rel.startswith('tensorboard'):
                continue  # times, run ids and paths differ from run to run
            out[rel] = data
    return out


def test_the_tfma_writer_after_the_others_writes_what_it_writes_beside_them(tmp_path,
                                                                           monkeypatch):
    """Beyond `SIDE_BY_SIDE_ROWS` metrics rows the TFMA writer runs after the other writers
    instead of on its thread beside them: the same files either way (tables, TFMA's records)."""
    import pyarrow.parquet as pq
    from pipeline.run import evaluate
    from _helpers import RUNNER, WEIGHTED_CLICK_HEAD, pipeline_data
    data = pipeline_data(300, 3)
    (tmp_path / 'in').mkdir()
    pq.write_table(data, str(tmp_path / 'in' / 'part-0.parquet'))
    trees = []
    for side_by_side_rows in (10 ** 9, 0):
        monkeypatch.setattr(run_outputs.WriteRun, 'SIDE_BY_SIDE_ROWS', side_by_side_rows)
        out = tmp_path / ('out%d' % len(trees))
        config = {'input': {'pattern': str(tmp_path / 'in' / '*.parquet')},
                  'heads': [WEIGHTED_CLICK_HEAD], 'slices': [[], ['country']],
                  'output': str(out)}
        summary = evaluate(config, RUNNER, run_id='r1')
        assert summary['metrics_rows'] > 0
        trees.append(_tree(out))
    assert any(k.startswith('tfma/') for k in trees[0])
    assert sorted(trees[0]) == sorted(trees[1])
    for name in trees[0]:
        if name.endswith('.parquet'):  # evaluated_at differs: compare without it
            a = pq.read_table(str(tmp_path / 'out0' / name))
            b = pq.read_table(str(tmp_path / 'out1' / name))
            drop = [c for c in ('evaluated_at',) if c in a.column_names]
            assert a.drop_columns(drop).equals(b.drop_columns(drop)), name
        else:
            assert trees[0][name] == trees[1][name], name


def test_when_two_writers_fail_side_by_side_the_main_ones_error_is_raised_and_tfmas_logged(
        tmp_path, monkeypatch, caplog):
    import logging
    import pyarrow.parquet as pq
    import pytest
    import pipeline.report as report
    from pipeline.writers import tfma
    from pipeline.run import evaluate
    from _helpers import RUNNER, WEIGHTED_CLICK_HEAD, pipeline_data
    (tmp_path / 'in').mkdir()
    pq.write_table(pipeline_data(200, 4), str(tmp_path / 'in' / 'part-0.parquet'))

    def broken_report(*args, **kwargs):
        raise OSError('no space left on device')

    def broken_tfma(*args, **kwargs):
        raise ValueError('tfma: a broken record')
    monkeypatch.setattr(report, 'write_report', broken_report)
    monkeypatch.setattr(tfma, 'write_tfma', broken_tfma)
    config = {'input': {'pattern': str(tmp_path / 'in' / '*.parquet')},
              'heads': [WEIGHTED_CLICK_HEAD], 'slices': [[]], 'output': str(tmp_path / 'out')}
    with caplog.at_level(logging.ERROR), pytest.raises(Exception, match='no space left'):
        evaluate(config, RUNNER, run_id='r1')
    assert 'the TFMA writer failed too: tfma: a broken record' in caplog.text
