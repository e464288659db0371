"""A run builds report.html from the tables it holds (`pipeline.report.memory`) instead of
reading back the Parquet files it has just written; the page must be the one `headstream report`
rebuilds from those files, byte for byte: with windows and steps, a spec of more slices than the
page shows (the choice of slices), baselines with a failing validation rule (its slices kept),
TensorBoard, min_slice_size and plots.max_slices."""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.report import write_report
from pipeline.report.memory import TableMemory
from pipeline.run import evaluate

from _helpers import RUNNER, pipeline_data


def _data(n: int = 3000) -> pa.Table:
    table = pipeline_data(n, 8)
    rng = np.random.default_rng(8)
    ids = np.array(['u%03d' % i for i in rng.integers(0, 400, n)])
    base = table.column('x').to_numpy() + rng.normal(0, 1, n).astype(np.float32)
    return table.append_column('id', pa.array(ids)).append_column('b', pa.array(base))


CONFIGS = {
    'windows_and_steps': {
        'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click', 'weight_column': 'w'},
                   'logits': 'x', 'labels': 'y'}],
        'slices': [[], ['country'], ['id']], 'window': {'column': 'ts', 'size': 300},
        'tensorboard': {'step': 'gs'}, 'plots': {'max_slices': 20}},
    'baseline_and_validation': {
        'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click'}, 'logits': 'x',
                   'baseline_logits': 'b', 'labels': 'y'},
                  {'type': 'RegressionHead', 'args': {'name': 'value'}, 'logits': 'r',
                   'labels': 'ry'}],
        'slices': [[], ['id'], ['country'], ['country', 'id']], 'min_slice_size': 3,
        'confidence': {'level': 0.9},
        'validation': [{'head': 'click', 'metric': 'auc', 'slices': [['country']], 'min': 0.99}]},
}


def _no_wall_time(page: bytes) -> bytes:
    """The page without the run's wall time and the page's own build time."""
    page = re.sub(rb'wall time \(s\) <b>[0-9.]+</b>', b'', page)
    return re.sub(rb'Built [0-9: -]+Z by', b'', page)


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_the_runs_report_is_the_report_rebuilt_from_its_files(tmp_path, name, monkeypatch):
    import pipeline.report as report

    def no_reading(*args, **kwargs):
        raise AssertionError('the run read its tables back for the report')
    (tmp_path / 'in').mkdir()
    pq.write_table(_data(), str(tmp_path / 'in' / 'part-0.parquet'))
    out = tmp_path / 'out'
    config = dict(CONFIGS[name], input={'pattern': str(tmp_path / 'in' / '*.parquet')},
                  output=str(out))
    with monkeypatch.context() as m:  # the run's report reads no table file
        m.setattr(report, 'TableFiles', no_reading)
        m.setattr(report, 'read_tables', no_reading)
        evaluate(config, RUNNER, run_id='r1')
    published = (out / 'report.html').read_bytes()
    copy = tmp_path / 'copy'
    shutil.copytree(out, copy)
    os.remove(copy / 'report.html')
    write_report(str(copy), source=str(out))
    assert b'showing' in published  # the choice of slices was made
    # The summary's wall time is rewritten once every writer is done (the page read it before),
    # and each page says when it was built.
    assert _no_wall_time((copy / 'report.html').read_bytes()) == _no_wall_time(published)


def test_a_memory_table_reads_as_its_file_reads(tmp_path):
    """`TableMemory` against `TableFiles` on one table written by the run's Parquet writer:
    text columns as dictionaries, rows of a mask as strings."""
    from pipeline.report.data import TableFiles
    from pipeline.writers import parquet as parquet_writer
    texts = pa.array(['a', 'b', None, 'a', 'c'] * 4).dictionary_encode()
    table = pa.table({'slice': texts, 'head': pa.array(['h'] * 20).dictionary_encode(),
                      'metric': pa.array(['auc', 'loss'] * 10),
                      'value': pa.array(np.arange(20, dtype=np.float64))})
    schema = pa.schema([('slice', pa.string()), ('head', pa.string()), ('metric', pa.string()),
                        ('value', pa.float64())])
    (tmp_path / 'metrics').mkdir()
    parquet_writer.write_table(table, str(tmp_path / 'metrics' / 'm.parquet'), schema)
    files, memory = TableFiles(str(tmp_path), 'metrics'), TableMemory(table, schema, 'metrics')
    assert memory.column_names == files.column_names
    for column in ('slice', 'head', 'metric'):
        a, b = files.columns([column])[column], memory.columns([column])[column]
        assert pa.types.is_dictionary(b.type)
        assert a.cast(pa.string()).equals(b.cast(pa.string()))
    mask = np.arange(20) % 3 == 0
    assert files.rows(mask).equals(memory.rows(mask))
    assert files.rows(None, ['value', 'slice']).equals(memory.rows(None, ['value', 'slice']))
