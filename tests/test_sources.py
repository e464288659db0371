"""Sources: each format written in tmp_path and read back, with file and row indices intact."""
from __future__ import annotations

import gzip
import json
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import readers, sources
from pipeline.decode import Problems, matrix_column, scalar_column
from pipeline.keys import slice_codes


def _read_all(path, fmt, columns=None, rows=4, target_rows=sources.TARGET_ROWS):
    batches = []
    for item in sources.plan_file(path, fmt, target_rows):
        batches += list(sources.read_item(item, columns, rows))
    return batches


def _check_contiguous(batches):
    """Row indices run 0, 1, 2, ... across a file's batches (what error messages rely on)."""
    expected = 0
    for sb in sorted(batches, key=lambda b: b.first_row):
        assert sb.first_row == expected
        expected += sb.batch.num_rows
    return expected


def test_parquet_row_groups_lists_and_dictionaries(tmp_path):
    n = 10
    table = pa.table({
        'x': np.arange(n, dtype=np.float32),
        'v': pa.array([[float(i), -float(i)] for i in range(n)], pa.list_(pa.float32())),
        'c': pa.array(['US', 'JP'] * 5).dictionary_encode(),
        'unused': np.zeros(n),
    })
    path = str(tmp_path / 'part-0.parquet')
    pq.write_table(table, path, row_group_size=3)  # row groups of 3, 3, 3, 1
    items = sources.plan_file(path, 'parquet', target_rows=4)
    assert [(i.row_groups, i.first_row) for i in items] == [((0,), 0), ((1,), 3), ((2, 3), 6)]
    batches = _read_all(path, 'parquet', ['x', 'v', 'c'], target_rows=4)
    assert _check_contiguous(batches) == n
    got = pa.Table.from_batches([b.batch for b in sorted(batches, key=lambda b: b.first_row)])
    assert got.column_names == ['x', 'v', 'c']  # projected
    assert got.column('x').to_pylist() == list(range(n))
    assert got.column('v').to_pylist()[7] == [7.0, -7.0]
    assert pa.types.is_dictionary(got.schema.field('c').type)
    assert got.column('c').to_pylist() == ['US', 'JP'] * 5
    assert all(sb.path == path for sb in batches)
    # A plain string column can be read dictionary-encoded on request.
    pq.write_table(pa.table({'s': ['a', 'b', 'a']}), str(tmp_path / 's.parquet'))
    sb, = sources.read_item(sources.WorkItem(str(tmp_path / 's.parquet'), 'parquet', (0,), 0),
                            dictionary_columns=['s'])
    assert pa.types.is_dictionary(sb.batch.schema.field('s').type)


def test_csv_with_json_list_logits(tmp_path):
    path = tmp_path / 'eval.csv'
    path.write_text('label,logits,country\n'
                    '1,"[0.5, -1.0]",US\n'
                    '0,"[2.0, 3.0]",JP\n'
                    '1,"[1.0, 1.0]",US\n')
    batches = _read_all(str(path), 'csv', rows=2)
    assert [(b.first_row, b.batch.num_rows) for b in batches] == [(0, 2), (2, 1)]
    schema = sources.read_schema(str(path), 'csv')
    assert schema.field('logits').type == pa.string()
    problems = Problems(2)
    logits = matrix_column(batches[0].batch.column(1), 'logits', 2, problems)
    np.testing.assert_array_equal(logits, [[0.5, -1.0], [2.0, 3.0]])
    assert not problems.items


def test_jsonl_gzipped(tmp_path):
    path = tmp_path / 'part.jsonl.gz'
    rows = [{'y': i % 2, 'p': [0.1 * i, 1.0], 'c': 'abc'[i % 3]} for i in range(7)]
    with gzip.open(path, 'wt') as f:
        f.write('\n'.join(json.dumps(r) for r in rows) + '\n')
    batches = _read_all(str(path), 'jsonl', columns=['y', 'p'], rows=3)
    assert _check_contiguous(batches) == 7
    got = pa.Table.from_batches([b.batch for b in batches])
    assert got.column_names == ['y', 'p']
    assert got.column('p').to_pylist()[5] == pytest.approx([0.5, 1.0])


def test_tfrecord_of_tf_examples_without_tensorflow(tmp_path):
    from apache_beam.io.tfrecordio import _TFRecordUtil
    from tfx_bsl.coders import example_coder
    rb = pa.record_batch({
        'logit': pa.array([[0.5], [-1.5], [2.0]], pa.large_list(pa.float32())),
        'label': pa.array([[1], [0], [1]], pa.large_list(pa.int64())),
        'country': pa.array([[b'US'], [b'JP'], [b'US']], pa.large_list(pa.large_binary())),
        'tags': pa.array([[0, 2], [], [1]], pa.large_list(pa.int64())),
    })
    path = tmp_path / 'part-0.tfrecord.gz'
    with gzip.open(path, 'wb') as f:
        for record in example_coder.RecordBatchToExamplesEncoder().encode(rb):
            _TFRecordUtil.write_record(f, record)
    tf_loaded = 'tensorflow' in sys.modules
    batches = _read_all(str(path), 'tfrecord', rows=2)
    assert _check_contiguous(batches) == 3
    got = pa.Table.from_batches([b.batch for b in batches])
    assert got.column('country').to_pylist() == [['US'], ['JP'], ['US']]  # bytes → str
    assert got.column('tags').to_pylist() == [[0, 2], [], [1]]
    assert ('tensorflow' in sys.modules) == tf_loaded  # reading never imports TensorFlow
    # Scalars arrive as lists of one; the pipeline reads them as one value per row.
    batch = got.combine_chunks().to_batches()[0]
    problems = Problems(3)
    np.testing.assert_array_equal(scalar_column(batch.column('logit'), 'logit', problems),
                                  [0.5, -1.5, 2.0])
    codes, values = slice_codes(batch, ('country',))
    assert [values[c] for c in codes] == [('US',), ('JP',), ('US',)]
    assert not problems.items


def test_conversion_flags_nulls_and_ragged_lists():
    problems = Problems(4)
    arr = pa.array([[1.0, 2.0], None, [1.0], [3.0, None]], pa.list_(pa.float64()))
    out = matrix_column(arr, 'v', 2, problems)
    assert out.shape == (4, 2)
    np.testing.assert_array_equal(out[0], [1.0, 2.0])
    reasons = {(c, r): np.flatnonzero(m).tolist() for c, r, m in problems.items}
    assert reasons[('v', 'null value')] == [1]
    assert reasons[('v', 'expected a list of 2 values')] == [2]
    assert reasons[('v', 'null value in list')] == [3]
    np.testing.assert_array_equal(problems.first_reason(), [-1, 0, 1, 2])


def test_slice_codes_cross_and_nulls():
    batch = pa.record_batch({'a': pa.array(['x', 'y', 'x', None, 'y']),
                             'b': pa.array([1, 1, 2, 1, 1])})
    codes, values = slice_codes(batch, ('a', 'b'))
    assert codes[3] == -1  # a null slice value: the row is in no slice of this spec
    assert [values[c] for c in codes[[0, 1, 2, 4]]] == [('x', 1), ('y', 1), ('x', 2), ('y', 1)]
    codes, values = slice_codes(batch, ())
    assert values == [()] and (codes == 0).all()


def test_match_files_sorts_and_a_miss_names_the_pattern(tmp_path):
    for name in ('b.csv', 'a.csv', 'c.txt'):
        (tmp_path / name).write_text('x\n1\n')
    assert [p.rsplit('/', 1)[1] for p in sources.match_files(str(tmp_path / '*.csv'))] == [
        'a.csv', 'b.csv']


def test_json_list_cells_parse_at_once_and_bad_cells_are_named():
    from pipeline.decode import _json_lists_fast, id_lists
    # A sliced array (non-zero offset) parses to its own rows only.
    cells = pa.array(['[9]', '[0.5, -1]', '[2, 3]', '[1.0,\n 4]']).slice(1)
    fast = _json_lists_fast(cells)
    assert fast.to_pylist() == [[0.5, -1.0], [2.0, 3.0], [1.0, 4.0]]
    # Anything but a list per row leaves the per-cell path to find the culprits.
    for bad in (['[1]', 'x'], ['[1]', '2'], ['[1]', None], ['[]', '[]']):
        assert _json_lists_fast(pa.array(bad)) is None, bad
    problems = Problems(4)
    out = matrix_column(pa.array(['[1, 2]', 'oops', None, '[3, 4]']), 'logits', 2, problems)
    np.testing.assert_array_equal(out[[0, 3]], [[1.0, 2.0], [3.0, 4.0]])
    column, reason, mask = problems.items[0]   # the reason reported for rows 1 and 2
    assert (column, reason, np.flatnonzero(mask).tolist()) == (
        'logits', 'not a JSON list of values', [1, 2])
    np.testing.assert_array_equal(problems.first_reason(), [-1, 0, 0, -1])
    problems = Problems(3)
    ids = id_lists(pa.array(['["a", "c"]', '[]', '["b"]']), 'tags', problems)
    assert ids.to_pylist() == [['a', 'c'], [], ['b']] and not problems.items


@pytest.mark.parametrize('fmt,name,content', [
    ('csv', 'bad.csv.gz', b'not gzip at all'),
    ('tfrecord', 'bad.tfrecord', b'\x01\x02\x03 short garbage that is not a record framing'),
])
def test_an_unreadable_file_is_an_error_naming_it(tmp_path, fmt, name, content):
    path = str(tmp_path / name)
    with open(path, 'wb') as f:
        f.write(content)
    with pytest.raises(readers.UnreadableFileError, match='cannot read %s file %s' % (
            fmt, re.escape(path))):
        list(sources.read_item(sources.WorkItem(path, fmt, None, 0)))


# -- Issue 20 item 9: an unreadable record is named by its row within the file, not its block. ----

_BAD_ROW = 3210  # 0-based record index where each test puts the bad record


def _read_error(path, fmt, monkeypatch, rows=1000):
    """The message of reading `path` in small blocks (so the bad record is in a later block than
    the first) and batches of `rows`."""
    monkeypatch.setattr(readers, '_TEXT_BLOCK_BYTES', 4096)
    with pytest.raises(readers.UnreadableFileError) as info:
        _read_all(path, fmt, rows=rows)
    return str(info.value)


@pytest.mark.parametrize('gz', [False, True])
def test_a_bad_jsonl_line_is_named_by_its_row_and_line_in_the_file(tmp_path, monkeypatch, gz):
    lines = ['{"y": %d, "p": 0.5}' % (i % 2) for i in range(5000)]
    lines[_BAD_ROW] = '{"y": 1, "p": '          # truncated record
    lines.insert(100, '')                       # a blank line: not a row, but a line
    path = str(tmp_path / ('part.jsonl' + ('.gz' if gz else '')))
    data = ('\n'.join(lines) + '\n').encode()
    with (gzip.open if gz else open)(path, 'wb') as f:
        f.write(data)
    message = _read_error(path, 'jsonl', monkeypatch)
    # Row 3210 is on line 3212: 1-based, plus the blank line before it.
    assert 'cannot read jsonl file %s at row %d (line %d): ArrowInvalid' % (
        path, _BAD_ROW, _BAD_ROW + 2) in message, message
    assert '\n' not in message


@pytest.mark.parametrize('bad,why', [('1,0.5,7', 'Expected 2 columns'),
                                     ('1,oops', 'invalid value')])
def test_a_bad_csv_record_is_named_by_its_row_and_line_in_the_file(tmp_path, monkeypatch,
                                                                    bad, why):
    rows = ['%d,0.5' % (i % 2) for i in range(5000)]
    rows[_BAD_ROW] = bad
    path = tmp_path / 'part.csv'
    path.write_text('y,p\n' + '\n'.join(rows) + '\n')
    message = _read_error(str(path), 'csv', monkeypatch)
    # Data row 3210 is line 3212: after the header, 1-based.
    assert 'cannot read csv file %s at row %d (line %d): ArrowInvalid' % (
        path, _BAD_ROW, _BAD_ROW + 2) in message, message
    assert why in message


def _tfrecords(n):
    from tfx_bsl.coders import example_coder
    rb = pa.record_batch({'y': pa.array([[i % 2] for i in range(n)], pa.large_list(pa.int64()))})
    return list(example_coder.RecordBatchToExamplesEncoder().encode(rb))


@pytest.mark.parametrize('damage', ['framing', 'proto'])
def test_a_corrupt_tfrecord_record_is_named_by_its_index_in_the_file(tmp_path, monkeypatch,
                                                                      damage):
    from apache_beam.io.tfrecordio import _TFRecordUtil
    records = _tfrecords(5000)
    if damage == 'proto':
        records[_BAD_ROW] = b'\xff\xff\xff not a tf.Example'
    path = str(tmp_path / 'part.tfrecord')
    with open(path, 'wb') as f:
        for i, record in enumerate(records):
            if damage == 'framing' and i == _BAD_ROW:
                f.write(b'\x00' * 16)   # a length whose checksum does not match
                break
            _TFRecordUtil.write_record(f, record)
    message = _read_error(path, 'tfrecord', monkeypatch)
    assert 'cannot read tfrecord file %s at row %d: ' % (path, _BAD_ROW) in message, message


def test_a_damaged_parquet_row_group_names_the_rows_from_which_on_in_the_file(tmp_path):
    path = str(tmp_path / 'part.parquet')
    pq.write_table(pa.table({'x': np.arange(300, dtype=np.float64)}), path,
                   row_group_size=100, compression='none')
    column = pq.ParquetFile(path).metadata.row_group(2).column(0)
    with open(path, 'r+b') as f:  # garble the third row group's page (rows 200..299)
        f.seek(column.dictionary_page_offset or column.data_page_offset)
        f.write(b'\xff' * 16)  # its first page header
    with pytest.raises(readers.UnreadableFileError) as info:
        _read_all(path, 'parquet', rows=30, target_rows=100)
    assert 'cannot read parquet file %s from row 200 on: ' % path in str(info.value)


def _write_format(tmp_path, fmt, y, x):
    """y (labels) and x (logits) as one file of `fmt`."""
    path = str(tmp_path / ('part.' + fmt))
    if fmt == 'parquet':
        pq.write_table(pa.table({'y': y, 'x': x}), path, row_group_size=100)
    elif fmt == 'csv':
        with open(path, 'w') as f:
            f.write('y,x\n' + ''.join('%d,%r\n' % r for r in zip(y.tolist(), x.tolist())))
    elif fmt == 'jsonl':
        with open(path, 'w') as f:
            f.write(''.join(json.dumps({'y': a, 'x': b}) + '\n'
                            for a, b in zip(y.tolist(), x.tolist())))
    else:
        from apache_beam.io.tfrecordio import _TFRecordUtil
        from tfx_bsl.coders import example_coder
        rb = pa.record_batch({'y': pa.array([[v] for v in y.tolist()], pa.large_list(pa.int64())),
                              'x': pa.array([[v] for v in x.tolist()],
                                            pa.large_list(pa.float32()))})
        with open(path, 'wb') as f:
            for record in example_coder.RecordBatchToExamplesEncoder().encode(rb):
                _TFRecordUtil.write_record(f, record)
    return path


@pytest.mark.parametrize('fmt', ['parquet', 'csv', 'jsonl', 'tfrecord'])
def test_bad_rows_are_named_by_their_row_in_the_file_whatever_the_batching(tmp_path, fmt):
    import apache_beam as beam
    from pipeline.apply import ApplyHeads
    from pipeline.elements import ERRORS_TAG, BadRecordError
    from pipeline.config import parse_config
    n, bad_rows = 1000, [137, 500, 999]
    y = np.arange(n) % 2
    y[bad_rows] = 2                                     # a binary label 2: a bad record
    path = _write_format(tmp_path, fmt, y, np.linspace(-2, 2, n).astype(np.float32))
    config = parse_config({'input': {'pattern': path, 'format': fmt}, 'output': 'o', 'heads': [
        {'type': 'BinaryClassHead', 'args': {'name': 'c'}, 'logits': 'x', 'labels': 'y'}]})
    batches = _read_all(path, fmt, rows=64, target_rows=250)   # batches cut across row groups
    assert _check_contiguous(batches) == n

    def run(mode):
        dofn = ApplyHeads(config, 'run', bad_records=mode)
        dofn.setup()
        dofn.start_bundle()
        return [out.value for sb in batches for out in dofn.process(sb)
                if isinstance(out, beam.pvalue.TaggedOutput) and out.tag == ERRORS_TAG]

    errors = pa.concat_tables(run('dead_letter'))
    assert sorted(errors.column('row').to_pylist()) == bad_rows
    assert set(errors.column('column').to_pylist()) == {'y'}
    assert [json.loads(v)['y'] in (2, [2]) for v in errors.column('values').to_pylist()] == [
        True] * 3
    with pytest.raises(BadRecordError, match=r'file %s, row 137, column y: ' % re.escape(path)):
        run('fail')
