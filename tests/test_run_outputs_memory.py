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
