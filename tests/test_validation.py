"""Validation gates (docs/validation.md): the `validation:` rules and `baseline_logits` in the
config, the verdict on a metrics table, and whole runs: validation.json, TFMA's validation result,
the summary line and exit code 3.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import cli, schema
from pipeline.config import ConfigError, check_columns, parse_config
from pipeline.validation import check_rules

BINARY = {'type': 'BinaryClassHead', 'args': {'name': 'click', 'thresholds': [0.5]},
          'logits': 'x', 'baseline_logits': 'b', 'labels': 'y'}


def _raw(**extra) -> dict:
    raw = {'input': {'pattern': 'data/*.parquet'}, 'heads': [dict(BINARY)],
           'slices': [[], ['country']], 'output': 'out'}
    raw.update(extra)
    return raw


# -------------------------------------------------------------------------------------------------
# The config
# -------------------------------------------------------------------------------------------------

def test_rules_parse_with_their_defaults_and_round_trip():
    config = parse_config(_raw(validation=[
        {'head': 'click', 'metric': 'auc', 'max_decrease': 0.01},
        {'head': 'click', 'metric': 'average_loss', 'slices': [['country']],
         'max_increase': 0.1, 'relative': True},
        {'head': 'click', 'metric': 'accuracy/positive_threshold_0.5', 'min': 0.6, 'max': 0.99}]))
    first, second, third = config.validation
    assert first.slices == ((),) and first.bounds() == [('max_decrease', 0.01)]
    assert second.slices == (('country',),) and second.relative
    assert third.bounds() == [('min', 0.6), ('max', 0.99)]
    assert parse_config(config.to_dict()) == config
    assert config.heads[0].baseline_columns == ('b',)
    assert 'b' in config.columns()


@pytest.mark.parametrize('rule, message', [
    ({'head': 'ctr', 'metric': 'auc', 'min': 0.5}, "validation[0].head: unknown head 'ctr'"),
    ({'head': 'click', 'metric': 'auc/class9', 'min': 0.5},
     "validation[0].metric: unknown metric 'auc/class9' for head 'click'"),
    ({'head': 'click', 'metric': 'auc', 'slices': [['device']], 'min': 0.5},
     "validation[0].slices[0]: ['device'] is not one of the configured slices"),
    ({'head': 'click', 'metric': 'auc'}, 'validation[0]: no bound'),
    ({'head': 'click', 'metric': 'auc', 'min': 0.9, 'max': 0.1},
     'validation[0]: min 0.9 exceeds max 0.1'),
    ({'head': 'click', 'metric': 'auc', 'max_decrease': -0.1},
     'validation[0].max_decrease: expected a change >= 0'),
    ({'head': 'click', 'metric': 'auc', 'min': 'high'},
     "validation[0].min: expected a finite number, got 'high'"),
    ({'head': 'click', 'metric': 'auc', 'min': 0.5, 'relative': True},
     'validation[0].relative: applies to max_decrease / max_increase only'),
    ({'head': 'click', 'metric': 'auc', 'above': 0.5}, "validation[0].above: unknown key"),
])
def test_bad_rules_are_config_errors_naming_the_rule_and_key(rule, message):
    with pytest.raises(ConfigError, match=None) as e:
        parse_config(_raw(validation=[rule]))
    assert message in str(e.value)


def test_a_change_rule_without_a_baseline_is_a_config_error():
    head = {k: v for k, v in BINARY.items() if k != 'baseline_logits'}
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(heads=[head], validation=[{'metric': 'auc', 'max_decrease': 0.0}]))
    assert 'validation[0].max_decrease: a change rule needs a baseline' in str(e.value)
    assert 'heads[0].baseline_logits' in str(e.value)
    # a value rule needs none
    parse_config(_raw(heads=[head], validation=[{'metric': 'auc', 'min': 0.5}]))


def test_the_head_may_be_left_out_with_a_single_head_only():
    assert parse_config(_raw(validation=[{'metric': 'auc', 'min': 0.5}])).validation[0].head \
        == 'click'
    two = [dict(BINARY), dict(BINARY, args={'name': 'buy'})]
    with pytest.raises(ConfigError, match=r'validation\[0\].head: missing'):
        parse_config(_raw(heads=two, validation=[{'metric': 'auc', 'min': 0.5}]))


def test_baseline_logits_follow_the_logits_rules():
    with pytest.raises(ConfigError, match=r'heads\[0\].baseline_logits: expected a column name'):
        parse_config(_raw(heads=[dict(BINARY, baseline_logits=3)]))
    multi = {'type': 'MultiClassHead', 'args': {'n_classes': 3}, 'logits': ['a', 'b', 'c'],
             'baseline_logits': ['d', 'e'], 'labels': 'y'}
    with pytest.raises(ConfigError, match=r'heads\[0\].baseline_logits: 2 columns for a head '
                                          r'with logits_dimension 3'):
        parse_config(_raw(heads=[multi]))
    config = parse_config(_raw())
    data = pa.schema([('x', pa.float64()), ('y', pa.float64()), ('country', pa.string())])
    with pytest.raises(ConfigError, match=r"heads\[0\].baseline_logits: column 'b' not found"):
        check_columns(config, data, 'data/a.parquet')
    data = data.append(pa.field('b', pa.string()))
    with pytest.raises(ConfigError, match=r"heads\[0\].baseline_logits: column 'b' has type"):
        check_columns(config, data, 'data/a.parquet')


# -------------------------------------------------------------------------------------------------
# The verdict on a metrics table (hand-made rows; the arithmetic written out)
# -------------------------------------------------------------------------------------------------

def _table(rows: list[dict]) -> pa.Table:
    full = []
    for r in rows:
        cols, vals = ('', '') if r['slice'] == 'Overall' else r['slice'].split(':')
        row = {f.name: None for f in schema.METRICS}
        row.update(run_id='r', evaluated_at=0, slice_columns=cols, slice_values=vals,
                   head='click', example_count=10, weighted_example_count=10.0)
        row.update(r)
        full.append(row)
    return pa.Table.from_pylist(full, schema=schema.METRICS)


def _rows(slice_: str, metric: str, candidate: float, baseline: float,
          ci: tuple | None = None, value_ci: tuple | None = None) -> list[dict]:
    lo, hi = ci or (None, None)
    vlo, vhi = value_ci or (None, None)
    return [dict(slice=slice_, model='candidate', metric=metric, value=candidate,
                 ci_lower=vlo, ci_upper=vhi),
            dict(slice=slice_, model='baseline', metric=metric, value=baseline),
            dict(slice=slice_, model='diff', metric=metric, value=candidate - baseline,
                 ci_lower=lo, ci_upper=hi)]


def _passed(raw_rules: list[dict], rows: list[dict], confidence: bool = False) -> list[bool]:
    extra = {'confidence': {'level': 0.95}} if confidence else {}
    config = parse_config(_raw(validation=raw_rules, **extra))
    return [c['passed'] for c in check_rules(config, _table(rows))['checks']]


def test_value_rules_compare_the_candidates_value_with_the_bound():
    rows = _rows('Overall', 'auc', 0.70, 0.80)
    assert _passed([{'metric': 'auc', 'min': 0.7}], rows) == [True]      # 0.70 >= 0.70
    assert _passed([{'metric': 'auc', 'min': 0.71}], rows) == [False]
    assert _passed([{'metric': 'auc', 'max': 0.69}], rows) == [False]
    assert _passed([{'metric': 'auc', 'min': 0.6, 'max': 0.8}], rows) == [True, True]


def test_with_confidence_a_value_rule_fails_only_when_the_whole_interval_is_beyond():
    rows = _rows('Overall', 'auc', 0.70, 0.80, value_ci=(0.66, 0.74))
    assert _passed([{'metric': 'auc', 'min': 0.72}], rows, confidence=True) == [True]
    assert _passed([{'metric': 'auc', 'min': 0.75}], rows, confidence=True) == [False]
    assert _passed([{'metric': 'auc', 'max': 0.67}], rows, confidence=True) == [True]
    assert _passed([{'metric': 'auc', 'max': 0.65}], rows, confidence=True) == [False]
    # without confidence the same rows are judged on the point estimate
    assert _passed([{'metric': 'auc', 'min': 0.72}], rows) == [False]


def test_change_rules_bound_the_diff_absolutely_or_relative_to_the_baseline():
    rows = _rows('Overall', 'auc', 0.78, 0.80)  # diff −0.02
    assert _passed([{'metric': 'auc', 'max_decrease': 0.03}], rows) == [True]
    assert _passed([{'metric': 'auc', 'max_decrease': 0.01}], rows) == [False]
    # relative: allowed decrease 0.02 · 0.80 = 0.016 < 0.02; 0.03 · 0.80 = 0.024 > 0.02
    assert _passed([{'metric': 'auc', 'max_decrease': 0.02, 'relative': True}], rows) == [False]
    assert _passed([{'metric': 'auc', 'max_decrease': 0.03, 'relative': True}], rows) == [True]
    loss = _rows('Overall', 'average_loss', 0.55, 0.50)  # +0.05 = +10% of 0.50
    assert _passed([{'metric': 'average_loss', 'max_increase': 0.09, 'relative': True}],
                   loss) == [False]
    assert _passed([{'metric': 'average_loss', 'max_increase': 0.11, 'relative': True}],
                   loss) == [True]


def test_with_confidence_a_change_rule_fails_only_when_the_whole_diff_interval_is_beyond():
    noisy = _rows('Overall', 'auc', 0.78, 0.80, ci=(-0.05, 0.01))   # may be no change
    clear = _rows('Overall', 'auc', 0.78, 0.80, ci=(-0.03, -0.011))  # surely down > 0.01
    rule = [{'metric': 'auc', 'max_decrease': 0.01}]
    assert _passed(rule, noisy, confidence=True) == [True]
    assert _passed(rule, clear, confidence=True) == [False]
    assert _passed(rule, noisy) == [False]  # point estimate −0.02 < −0.01


def test_every_slice_of_a_spec_is_checked_and_a_missing_value_fails():
    rows = (_rows('country:US', 'auc', 0.8, 0.8) + _rows('country:DE', 'auc', 0.6, 0.8)
            + _rows('Overall', 'auc', 0.75, 0.8))
    config = parse_config(_raw(validation=[{'metric': 'auc', 'slices': [['country']],
                                            'max_decrease': 0.05}]))
    verdict = check_rules(config, _table(rows))
    assert [(c['slice'], c['passed']) for c in verdict['checks']] == [
        ('country:DE', False), ('country:US', True)]
    assert not verdict['blessed']
    nan_rows = _rows('Overall', 'auc', float('nan'), 0.8)
    assert _passed([{'metric': 'auc', 'min': 0.0}], nan_rows) == [False]
    empty = check_rules(parse_config(_raw(validation=[{'metric': 'auc', 'min': 0.0}])),
                        _table([]))
    assert not empty['blessed'] and empty['checks'][0]['rule'] == 'min 0: no rows'


def test_no_rules_no_verdict():
    assert check_rules(parse_config(_raw()), _table([])) is None


# -------------------------------------------------------------------------------------------------
# Whole runs (DirectRunner)
# -------------------------------------------------------------------------------------------------

def _write_data(directory, seed: int, baseline: str = 'better_but_de') -> str:
    """Rows in US, JP, DE. 'better_but_de': the candidate separates the classes much better than
    the baseline in US and JP and much worse in DE; 'same': the baseline's logits are the
    candidate's (A/A)."""
    rng = np.random.default_rng(seed)
    n = 6000
    country = rng.choice(['US', 'JP', 'DE'], n)
    y = rng.integers(0, 2, n).astype(np.float64)
    noise_c, noise_b = rng.normal(size=n), rng.normal(size=n)
    de = country == 'DE'
    x = np.where(de, 0.2, 2.0) * y + noise_c
    b = x if baseline == 'same' else np.where(de, 2.0, 0.8) * y + noise_b
    path = os.path.join(str(directory), 'data.parquet')
    pq.write_table(pa.table({'x': x, 'b': b, 'y': y, 'country': country}), path)
    return path


def _run(tmp_path, data: str, rules: list[dict], confidence: bool, name: str = 'out',
         window: bool = False) -> tuple[int, str]:
    raw = _raw(validation=rules)
    raw['input'] = {'pattern': data}
    raw['output'] = str(tmp_path / name)
    if confidence:
        raw['confidence'] = {'level': 0.95}
    path = tmp_path / (name + '.yaml')
    path.write_text(yaml.safe_dump(raw))
    return cli.main(['evaluate', '--config', str(path)]), str(tmp_path / name)


AUC_GATE = [{'metric': 'auc', 'slices': [[], ['country']], 'max_decrease': 0.01}]


@pytest.mark.parametrize('confidence', [False, True])
def test_better_overall_but_worse_on_one_slice_is_not_blessed(tmp_path, capsys, confidence):
    data = _write_data(tmp_path, 1)
    code, out = _run(tmp_path, data, AUC_GATE, confidence)
    assert code == 3
    with open(os.path.join(out, 'validation.json')) as f:
        verdict = json.load(f)
    assert not verdict['blessed']
    assert [(c['slice'], c['passed']) for c in verdict['checks']] == [
        ('Overall', True), ('country:DE', False), ('country:JP', True), ('country:US', True)]
    de = verdict['checks'][1]
    assert de['diff'] == pytest.approx(de['value'] - de['baseline'], abs=1e-12)
    assert (de['ci_upper'] is not None) == confidence
    line = capsys.readouterr().out
    assert 'NOT BLESSED: failing (country:DE, click, auc)' in line
    with open(os.path.join(out, 'summary.json')) as f:
        summary = json.load(f)  # published: the outputs are all there
    assert summary['validation']['blessed'] is False
    assert 'validation.json' in summary['files']
    import tensorflow_model_analysis as tfma
    result = tfma.load_validation_result(os.path.join(out, 'tfma'))
    assert result.validation_ok is False
    failed = [(s.slice_key.single_slice_keys[0].bytes_value, f.metric_key.name)
              for s in result.metric_validations_per_slice for f in s.failures]
    assert failed == [(b'DE', 'auc')]
    with open(os.path.join(out, 'report.html')) as f:
        page = f.read()
    assert 'Candidate vs baseline' in page and 'NOT BLESSED (1 failing)' in page
    failing_rows = re.findall(r'<tr class="failing"><td class="slice" data-v="([^"]*)">.*?'
                              r'<td data-v="([^"]*)">', page)
    assert failing_rows == [('country:DE', 'auc')]


def test_an_aa_run_is_blessed_with_and_without_intervals(tmp_path, capsys):
    data = _write_data(tmp_path, 2, baseline='same')
    rules = AUC_GATE + [{'metric': 'accuracy', 'max_decrease': 0.0},
                        {'metric': 'average_loss', 'max_increase': 0.0, 'relative': True}]
    for confidence in (False, True):
        code, out = _run(tmp_path, data, rules, confidence, name='aa%d' % confidence)
        assert code == 0
        import tensorflow_model_analysis as tfma
        assert tfma.load_validation_result(os.path.join(out, 'tfma')).validation_ok is True
    assert 'BLESSED (6 checks passed)' in capsys.readouterr().out
    metrics = pq.read_table(os.path.join(out, 'metrics')).to_pandas()
    assert set(metrics['model']) == {'candidate', 'baseline', 'diff'}
    diffs = metrics[metrics.model == 'diff']
    assert (diffs['value'] == 0).all()
    auc = diffs[diffs.metric == 'auc']
    assert (auc['ci_lower'] == 0).all() and (auc['ci_upper'] == 0).all()


def test_a_run_without_a_baseline_has_candidate_rows_only_and_exits_0(tmp_path):
    data = _write_data(tmp_path, 3)
    raw = _raw(heads=[{k: v for k, v in BINARY.items() if k != 'baseline_logits'}])
    raw['input'] = {'pattern': data}
    raw['output'] = str(tmp_path / 'plain')
    path = tmp_path / 'plain.yaml'
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(['evaluate', '--config', str(path)]) == 0
    metrics = pq.read_table(str(tmp_path / 'plain' / 'metrics'))
    assert set(metrics.column('model').to_pylist()) == {'candidate'}
    assert metrics.column('ci_lower').null_count == metrics.num_rows
    assert not os.path.exists(str(tmp_path / 'plain' / 'validation.json'))


def test_a_rule_is_checked_in_every_window(tmp_path):
    rng = np.random.default_rng(4)
    n = 4000
    hour = rng.integers(0, 2, n)
    y = rng.integers(0, 2, n).astype(np.float64)
    x = 1.5 * y + rng.normal(size=n)
    # the baseline is better in the second hour only
    b = np.where(hour == 1, 3.0 * y, 1.5 * y) + rng.normal(size=n)
    path = str(tmp_path / 'w.parquet')
    pq.write_table(pa.table({'x': x, 'b': b, 'y': y, 'country': np.array(['US'] * n),
                             'ts': 1_700_000_000 - 1_700_000_000 % 3600 + hour * 3600
                             + rng.integers(0, 3600, n)}), path)
    raw = _raw(validation=[{'metric': 'auc', 'max_decrease': 0.01}],
               window={'column': 'ts', 'size': 3600}, confidence={'level': 0.95})
    raw['input'] = {'pattern': path}
    raw['output'] = str(tmp_path / 'out')
    config_path = tmp_path / 'c.yaml'
    config_path.write_text(yaml.safe_dump(raw))
    assert cli.main(['evaluate', '--config', str(config_path)]) == 3
    with open(str(tmp_path / 'out' / 'validation.json')) as f:
        checks = json.load(f)['checks']
    assert [c['passed'] for c in checks] == [True, False]
    assert checks[0]['window_start'] < checks[1]['window_start']


def test_watch_prints_each_windows_verdict(tmp_path, capsys):
    from pipeline import watch
    data = tmp_path / 'in'
    data.mkdir()
    _write_data(data, 5)  # worse than the baseline in DE
    raw = _raw(validation=[{'metric': 'auc', 'slices': [['country']], 'max_decrease': 0.01}],
               window={'column': 'ts', 'size': 3600})
    table = pq.read_table(str(data / 'data.parquet'))
    pq.write_table(table.append_column('ts', pa.array(np.full(table.num_rows, 1_700_000_000))),
                   str(data / 'data.parquet'))
    raw['input'] = {'pattern': str(data / '*.parquet')}
    raw['output'] = str(tmp_path / 'out')
    (tmp_path / 'w.yaml').write_text(yaml.safe_dump(raw))
    assert watch.main(['--config', str(tmp_path / 'w.yaml'), '--once', '--settle', '0']) == 0
    assert 'NOT BLESSED: failing (country:DE, click, auc)' in capsys.readouterr().out


def test_paired_states_are_the_same_with_and_without_the_precombine(tmp_path):
    from pipeline.combine import HeadStateCombineFn
    from pipeline.elements import SourceBatch
    from pipeline.evaluate import BatchEvaluator
    path = _write_data(tmp_path, 6)
    config = parse_config(dict(_raw(), input={'pattern': path}))
    batch = pq.read_table(path).to_batches()[0]
    split = BatchEvaluator(config, 'r', precombine=False)
    combine = HeadStateCombineFn(config)
    combine.setup()
    accumulators: dict = {}
    for key, sub in split.add(SourceBatch(path, 0, batch)).keyed:
        accumulators[key] = combine.add_input(accumulators.get(key), sub)
    whole = BatchEvaluator(config, 'r')  # pre-combined, Overall derived from the countries
    whole.add(SourceBatch(path, 0, batch))
    states = whole.finish().states
    assert set(accumulators) == set(states) and len(states) == 4
    for key, state in states.items():
        _, want, _ = state.comparison(0.95)
        _, got, _ = accumulators[key].comparison(0.95)
        for metric, d in want.items():
            for a, b in zip(d, got[metric]):
                assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_several_heads_may_gate_their_multihead_loss_but_not_its_change():
    two = [dict(BINARY), {'type': 'RegressionHead', 'args': {'name': 'spend'}, 'logits': 'x',
                          'labels': 'y'}]
    config = parse_config(_raw(heads=two, validation=[
        {'head': 'click_spend', 'metric': 'loss', 'max': 2.0}]))
    assert config.validation[0].head == 'click_spend'
    with pytest.raises(ConfigError, match=r"unknown metric 'auc' for head 'click_spend' "
                                          r"\(metrics: loss\)"):
        parse_config(_raw(heads=two, validation=[{'head': 'click_spend', 'metric': 'auc',
                                                  'min': 0.5}]))
    with pytest.raises(ConfigError, match='a change rule needs a baseline'):
        parse_config(_raw(heads=two, validation=[{'head': 'click_spend', 'metric': 'loss',
                                                  'max_increase': 0.1}]))


def test_the_reports_comparison_keeps_every_failing_row_when_it_is_cut():
    from pipeline.report import compare
    rows, checks = [], []
    failing = (10, compare.MAX_ROWS + 20, compare.MAX_ROWS + 40)  # two beyond the cut
    for i in range(compare.MAX_ROWS + 50):
        name = 'id:%d' % i
        for r in _rows(name, 'auc', 0.5, 0.6 if i in failing else 0.5):
            rows.append(dict(r, head='click', window_start=None, step=None))
        checks.append({'head': 'click', 'slice': name, 'metric': 'auc',
                       'rule': 'max_decrease 0.01', 'passed': i not in failing})
    table = compare.comparison_rows(rows, {'blessed': False, 'checks': checks})['click']
    assert len(table) == compare.MAX_ROWS + 1 and table[-1]['slice'].startswith('… 50 more')
    assert [r['slice'] for r in table if r['failed']] == ['id:%d' % i for i in failing]


def test_with_confidence_baseline_rows_carry_the_intervals_of_a_run_of_the_baseline_alone(tmp_path):
    """The baseline's rows hold the interval the baseline's logits get when they are evaluated as
    the candidate of a run of their own; the candidate's rows hold their own (never the diff's)."""
    data = _write_data(tmp_path, 4)
    code, out = _run(tmp_path, data, [], confidence=True, name='both')
    assert code == 0
    rows = pq.read_table(os.path.join(out, 'metrics')).to_pandas()
    raw = _raw(heads=[dict({k: v for k, v in BINARY.items() if k != 'baseline_logits'},
                           logits='b')])
    raw['input'] = {'pattern': data}
    raw['output'] = str(tmp_path / 'alone')
    raw['confidence'] = {'level': 0.95}
    path = tmp_path / 'alone.yaml'
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(['evaluate', '--config', str(path)]) == 0
    alone = pq.read_table(str(tmp_path / 'alone' / 'metrics')).to_pandas()
    key = ['slice', 'metric']
    base = rows[rows.model == 'baseline'].set_index(key)[['ci_lower', 'ci_upper']]
    own = alone.set_index(key)[['ci_lower', 'ci_upper']].loc[base.index]
    for metric in ('auc', 'accuracy', 'label/mean', 'prediction/mean', 'average_loss'):
        got, want = base.xs(metric, level='metric'), own.xs(metric, level='metric')
        assert got.notna().all().all(), metric
        np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), rtol=1e-12)
    cand = rows[(rows.model == 'candidate') & (rows.metric == 'auc')]
    diff = rows[(rows.model == 'diff') & (rows.metric == 'auc')]
    assert cand['ci_lower'].notna().all()
    assert (cand['ci_lower'].to_numpy() < cand['value'].to_numpy() + 0.05).all()
    assert not np.allclose(cand['ci_lower'].to_numpy(), diff['ci_lower'].to_numpy())


def test_validation_json_holds_the_verdict_one_check_a_line():
    from pipeline.validation import verdict_json
    verdict = {'blessed': False,
               'checks': [{'head': 'click', 'metric': 'auc', 'slice': 'city:a"}, {b',
                           'value': 0.25, 'passed': False, 'ci_lower': None},
                          {'head': 'click', 'metric': 'auc', 'slice': 'Overall', 'value': 0.75,
                           'passed': True, 'ci_lower': None}],
               'not_checked': [{'slice': 'city:*', 'slices': 2, 'rows': 7}]}
    text = verdict_json(verdict).decode('utf-8')
    assert json.loads(text) == verdict
    lines = text.splitlines()
    assert lines[:3] == ['{', ' "blessed": false,', ' "checks": [']
    assert lines[3].startswith('  {"head": "click"') and lines[3].endswith('"ci_lower": null},')
    assert lines[4].endswith('"ci_lower": null}')
    assert json.loads(verdict_json({'blessed': True, 'checks': []})) == {'blessed': True,
                                                                         'checks': []}
