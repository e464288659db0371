"""Config validation: every error names the key, column or pattern at fault."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from pipeline import config as config_lib
from pipeline.config import ConfigError, check_columns, load_config, parse_config
from pipeline.sources import match_files

from _helpers import minimal_config


def _config(**overrides):
    raw = {
        'input': {'pattern': 'data/part-*.parquet'},
        'heads': [{'type': 'BinaryClassHead', 'args': {'name': 'click', 'weight_column': 'w'},
                   'logits': 'click_logit', 'labels': 'click_label'}],
        'slices': [[], ['country']],
        'output': 'out',
    }
    raw.update(overrides)
    return raw


SCHEMA = pa.schema([
    ('click_logit', pa.float32()), ('click_label', pa.int64()), ('w', pa.float32()),
    ('country', pa.dictionary(pa.int32(), pa.string())), ('ts', pa.timestamp('us')),
    ('global_step', pa.int64()), ('topic_logits', pa.list_(pa.float32())),
    ('name', pa.string()), ('tags', pa.list_(pa.int64())),
])


def _error(raw, *fragments):
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)
    return str(e.value)


def test_a_valid_config_parses_with_defaults():
    c = parse_config(_config())
    assert c.format == 'parquet'  # from the extension
    assert c.slices == ((), ('country',))
    assert c.head_names == ['click']
    assert c.multi_head_name is None
    assert c.columns() == ['click_logit', 'click_label', 'w', 'country']
    check_columns(c, SCHEMA)  # no error


@pytest.mark.parametrize('pattern, fmt', [
    ('a/*.parquet', 'parquet'), ('a/x.tfrecord.gz', 'tfrecord'), ('b.csv', 'csv'),
    ('c.jsonl', 'jsonl'), ('gs://b/d/*.csv.gz', 'csv')])
def test_format_defaults_from_the_extension(pattern, fmt):
    assert parse_config(_config(input={'pattern': pattern})).format == fmt


def test_unknown_keys_are_named():
    _error(_config(slicez=[[]]), 'slicez')
    _error(_config(input={'pattern': 'a.csv', 'fromat': 'csv'}), 'input.fromat')
    raw = _config()
    raw['heads'][0]['logit'] = 'x'
    _error(raw, 'heads[0].logit')
    _error(_config(window={'column': 'ts', 'size': 60, 'sise': 1}), 'window.sise')


def test_unknown_head_type_and_bad_args_name_the_head():
    raw = _config()
    raw['heads'][0]['type'] = 'BinaryHead'
    _error(raw, 'heads[0].type', 'BinaryHead')
    raw = _config()
    raw['heads'][0]['args']['thresholds'] = [0.5, 1.5]
    # The head's own message, as tf.estimator words it.
    _error(raw, 'heads[0].args', 'thresholds not in (0, 1): ((0.5, 1.5),).')
    raw = _config()
    raw['heads'][0]['args']['n_classes'] = 3
    _error(raw, 'heads[0].args', 'n_classes')


def test_format_and_pattern_errors():
    _error(_config(input={'pattern': 'data/part-*'}), 'input.format', 'data/part-*')
    _error(_config(input={'pattern': 'a.parquet', 'format': 'avro'}), 'input.format', 'avro')
    _error(_config(input={}), 'input.pattern')


def test_several_heads_need_names_and_matching_weights():
    second = {'type': 'RegressionHead', 'args': {'name': 'watch'}, 'logits': 'a', 'labels': 'b'}
    unnamed = {'type': 'RegressionHead', 'logits': 'a', 'labels': 'b'}
    raw = _config(heads=[_config()['heads'][0], unnamed])
    _error(raw, 'heads[1].args.name')
    raw = _config(heads=[_config()['heads'][0], second], head_weights=[1.0])
    _error(raw, 'head_weights', '1 weights for 2 heads')
    raw = _config(heads=[_config()['heads'][0], second], head_weights=[1.0, 'x'])
    _error(raw, 'head_weights')
    _error(_config(head_weights=[2.0]), 'head_weights', 'two heads')
    c = parse_config(_config(heads=[_config()['heads'][0], second], head_weights=[1, 2]))
    assert c.multi_head_name == 'click_watch' and c.head_weights == (1.0, 2.0)


def test_slices_window_and_tensorboard_are_checked():
    _error(_config(slices=[[], ['country', 'country']]), 'slices[1]')
    _error(_config(slices='country'), 'slices')
    _error(_config(window={'column': 'ts'}), 'window.size')
    _error(_config(window={'column': 'ts', 'size': 60, 'period': 120}), 'window.period')
    _error(_config(window={'column': 'ts', 'size': -1}), 'window.size')
    _error(_config(tensorboard={'step': 1.5}), 'tensorboard.step')
    w = parse_config(_config(window={'column': 'ts', 'size': '5m', 'period': 60})).window
    assert (w.size, w.period) == (300.0, 60.0)
    tb = parse_config(_config(tensorboard={'step': 'global_step'})).tensorboard
    assert tb.step_column == 'global_step'


def test_missing_and_mistyped_columns_are_named():
    def check(**overrides):
        with pytest.raises(ConfigError) as e:
            check_columns(parse_config(_config(**overrides)), SCHEMA, 'part-0.parquet')
        return str(e.value)

    raw = _config()
    raw['heads'][0]['labels'] = 'clicked'
    msg = check(heads=raw['heads'])
    assert 'heads[0].labels' in msg and "'clicked'" in msg and 'part-0.parquet' in msg
    raw = _config()
    raw['heads'][0]['args']['weight_column'] = 'weight'
    assert 'heads[0].args.weight_column' in check(heads=raw['heads'])
    raw = _config()
    raw['heads'][0]['logits'] = 'name'  # a string column
    msg = check(heads=raw['heads'])
    assert 'heads[0].logits' in msg and "'name'" in msg and 'string' in msg
    raw = _config()
    raw['heads'][0]['labels'] = 'name'  # strings without a vocabulary
    assert 'label_vocabulary' in check(heads=raw['heads'])
    assert "slices[1]: column 'device'" in check(slices=[[], ['device']])
    assert 'slices[1]' in check(slices=[[], ['topic_logits']])  # a list is no slice value
    assert 'window.column' in check(window={'column': 'name', 'size': 60})
    assert 'tensorboard.step' in check(tensorboard={'step': 'w'})  # float, not int


def test_multi_label_and_multi_column_logits():
    head = {'type': 'MultiLabelHead', 'args': {'n_classes': 3, 'name': 'tags'},
            'logits': 'topic_logits', 'labels': 'tags', 'label_format': 'ids'}
    check_columns(parse_config(_config(heads=[head])), SCHEMA)
    bad = dict(head, label_format='sparse')
    _error(_config(heads=[bad]), 'heads[0].label_format')
    three = {'type': 'MultiClassHead', 'args': {'n_classes': 3}, 'logits': ['a', 'b'],
             'labels': 'y'}
    _error(_config(heads=[three]), 'heads[0].logits', '2 columns')


def test_load_config_reads_files_and_inline_json(tmp_path):
    path = tmp_path / 'eval.yaml'
    path.write_text('input: {pattern: "x/*.csv"}\n'
                    'heads:\n  - {type: RegressionHead, logits: p, labels: y}\n'
                    'output: o\n')
    assert load_config(str(path)).format == 'csv'
    assert load_config(json.dumps(_config())).heads[0].logits == 'click_logit'
    assert load_config(json.dumps(_config()), output='elsewhere').output == 'elsewhere'
    raw = _config()
    del raw['output']
    with pytest.raises(ConfigError, match='output'):
        load_config(raw)
    with pytest.raises(ConfigError, match='cannot read'):
        load_config(str(tmp_path / 'missing.yaml'))
    with pytest.raises(ConfigError, match='not valid YAML'):
        load_config('{"input": [}')


def test_a_pattern_matching_nothing_is_named(tmp_path):
    pattern = str(tmp_path / 'nothing-*.parquet')
    with pytest.raises(ConfigError) as e:
        match_files(pattern)
    assert 'input.pattern' in str(e.value) and pattern in str(e.value)


def test_config_round_trips_through_to_dict():
    c = parse_config(_config(window={'column': 'ts', 'size': 60}, tensorboard={'step': 3}))
    assert parse_config(c.to_dict()) == c
    assert config_lib.FORMATS == ('parquet', 'tfrecord', 'csv', 'jsonl')


def test_csv_vector_regression_labels_are_json_list_strings():
    """In CSV a vector label (a regression head with label_dimension > 1) is a JSON list string,
    as a logits vector is; a string label stays an error for a scalar regression label and in the
    other formats."""
    csv_schema = pa.schema([('rg_logits', pa.string()), ('rg_label', pa.string()),
                            ('w', pa.float64())])

    def cfg(fmt, dim, htype='RegressionHead'):
        head = {'type': htype, 'args': {'name': 'rg', 'label_dimension': dim},
                'logits': 'rg_logits', 'labels': 'rg_label'}
        return parse_config(_config(input={'pattern': 'data/part-*.%s' % fmt, 'format': fmt},
                                    heads=[head], slices=[[]]))

    check_columns(cfg('csv', 2), csv_schema, 'part-0.csv')
    check_columns(cfg('csv', 3, 'PoissonRegressionHead'), csv_schema, 'part-0.csv')
    with pytest.raises(ConfigError, match=r"heads\[0\].labels: column 'rg_label' has type string"):
        check_columns(cfg('csv', 1), csv_schema, 'part-0.csv')
    with pytest.raises(ConfigError, match=r"heads\[0\].labels: column 'rg_label'"):
        check_columns(cfg('parquet', 2), csv_schema.set(0, pa.field('rg_logits',
                                                                     pa.list_(pa.float32()))),
                      'part-0.parquet')


_minimal = minimal_config


def test_confidence_defaults_to_a_95_percent_analytic_interval_and_is_absent_without_the_key():
    from pipeline.config import parse_config
    assert parse_config(_minimal()).confidence is None
    spec = parse_config(_minimal(confidence={})).confidence
    assert (spec.level, spec.method) == (0.95, 'analytic')
    spec = parse_config(_minimal(confidence={'level': 0.9, 'method': 'bootstrap'})).confidence
    assert (spec.level, spec.method) == (0.9, 'bootstrap')
    again = parse_config(parse_config(_minimal(confidence={'level': 0.8})).to_dict())
    assert again.confidence.level == 0.8


@pytest.mark.parametrize('bad, message', [
    ({'level': 1.0}, 'confidence.level'), ({'level': 0}, 'confidence.level'),
    ({'level': True}, 'confidence.level'), ({'level': '95%'}, 'confidence.level'),
    ({'method': 'jackknife'}, 'confidence.method'), ({'levels': 0.9}, 'confidence.levels'),
])
def test_a_bad_confidence_section_is_a_config_error_naming_its_key(bad, message):
    from pipeline.config import ConfigError, parse_config
    with pytest.raises(ConfigError, match=message):
        parse_config(_minimal(confidence=bad))


def test_min_slice_size_is_a_whole_number_of_rows():
    from pipeline.config import ConfigError, parse_config
    assert parse_config(_minimal()).min_slice_size == 0
    assert parse_config(_minimal(min_slice_size=50)).min_slice_size == 50
    for bad in (-1, 2.5, True, '10'):
        with pytest.raises(ConfigError, match='min_slice_size'):
            parse_config(_minimal(min_slice_size=bad))
