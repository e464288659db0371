"""The seams between confidence intervals (docs/intervals.md), baselines and validation gates
(docs/validation.md) and high-cardinality slices (`min_slice_size`, the report's top slices):
whole runs on the DirectRunner with every feature on at once. Expected values come from how the
data is built or from references written here (Wilson's interval, per-row paired differences).
"""
from __future__ import annotations

import json
import math
import os
import re
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import cli
from pipeline.config import parse_config

Z95 = NormalDist().inv_cdf(0.975)
N_IDS = 500            # the report shows ≤ 250 (2 heads × 50 worst, 50 best; 50 largest)
BAD_ID = 'id234'       # the ctr candidate's logits are shifted by +0.6 there, nowhere else
TINY = 6               # LU's rows (and id 'tiny''s): below min_slice_size
MIN_SLICE_SIZE = 20


def wilson(hits: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of hits / n (unit weights)."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def paired_mean(d: np.ndarray, z: float = Z95) -> tuple[float, float]:
    """The interval of the mean of per-row differences d (unit weights)."""
    mean = float(np.mean(d))
    se = math.sqrt(float(np.sum((d - mean) ** 2)) / len(d) ** 2)
    return mean - z * se, mean + z * se


def make_data(seed: int = 11) -> dict[str, np.ndarray]:
    """US, JP, DE 3400 rows each and LU 6 rows. Head click: the candidate's logits `x` are the
    baseline's `b` except in DE, where they barely separate the classes; in LU they are reversed.
    Head ctr: `x2` is `b2` except in id234, where it is `b2` + 0.6 (the same ranking, every
    prediction higher: its prediction/mean grows by about 0.1, its loss barely moves). Ids
    id000..id499 cycle over the big countries, LU's rows are id 'tiny'."""
    rng = np.random.default_rng(seed)
    big = 10200
    country = np.array(['US'] * 3400 + ['JP'] * 3400 + ['DE'] * 3400 + ['LU'] * TINY)
    ids = np.array(['id%03d' % (i % N_IDS) for i in range(big)] + ['tiny'] * TINY)
    n = len(country)
    y = rng.integers(0, 2, n).astype(np.float64)
    noise = rng.normal(size=n)
    b = 2.0 * y + noise
    x = np.where(country == 'DE', 0.2 * y + rng.normal(size=n), b)
    x = np.where(country == 'LU', -3.0 * (y - 0.5), x)
    b2 = 1.5 * y - 0.75 + rng.normal(size=n)
    x2 = np.where(ids == BAD_ID, b2 + 0.6, b2)
    ts = np.full(n, 1_700_000_000 - 1_700_000_000 % 3600) + rng.integers(0, 7200, n)
    return {'x': x, 'b': b, 'x2': x2, 'b2': b2, 'y': y, 'country': country, 'id': ids, 'ts': ts}


def accuracy_limit(d: dict[str, np.ndarray]) -> tuple[float, float, float]:
    """A `min` bound on click's Overall accuracy that its point estimate misses but its Wilson
    interval reaches: (limit, point, upper)."""
    hits = float(np.sum((d['x'] > 0) == (d['y'] == 1)))
    lo, hi = wilson(hits, len(d['y']))
    point = hits / len(d['y'])
    return point + 0.5 * (hi - point), point, hi


def raw_config(data_path: str, output: str, limit: float, **extra) -> dict:
    raw = {
        'input': {'pattern': data_path},
        'heads': [
            {'type': 'BinaryClassHead', 'args': {'name': 'click', 'thresholds': [0.5]},
             'logits': 'x', 'baseline_logits': 'b', 'labels': 'y'},
            {'type': 'BinaryClassHead', 'args': {'name': 'ctr'},
             'logits': 'x2', 'baseline_logits': 'b2', 'labels': 'y'}],
        'slices': [[], ['country'], ['id']],
        'confidence': {'level': 0.95},
        'min_slice_size': MIN_SLICE_SIZE,
        'validation': [
            {'head': 'click', 'metric': 'auc', 'slices': [['country']], 'max_decrease': 0.05},
            {'head': 'ctr', 'metric': 'prediction/mean', 'slices': [['id']], 'max_increase': 0.02},
            {'head': 'click', 'metric': 'accuracy', 'min': limit}],
        'output': output}
    raw.update(extra)
    return raw


def write_parquet(d: dict[str, np.ndarray], path: str) -> str:
    pq.write_table(pa.table(d), path)
    return path


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """One batch run with every feature on: (exit code, output dir, data, printed lines)."""
    tmp = tmp_path_factory.mktemp('all')
    d = make_data()
    data = write_parquet(d, str(tmp / 'data.parquet'))
    limit = accuracy_limit(d)[0]
    raw = raw_config(data, str(tmp / 'out'), limit, tensorboard={'max_runs': 40})
    (tmp / 'c.yaml').write_text(yaml.safe_dump(raw))
    import contextlib
    import io
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(['evaluate', '--config', str(tmp / 'c.yaml')])
    return code, str(tmp / 'out'), d, printed.getvalue()


def _verdict(out: str) -> dict:
    with open(os.path.join(out, 'validation.json')) as f:
        return json.load(f)


def _metrics(out: str):
    return pq.read_table(os.path.join(out, 'metrics')).to_pandas()


# -------------------------------------------------------------------------------------------------
# min_slice_size × validation
# -------------------------------------------------------------------------------------------------

def test_slices_below_min_slice_size_are_listed_as_not_checked_and_the_rest_decide(run):
    code, out, _, printed = run
    assert code == 3
    verdict = _verdict(out)
    failing = [(c['head'], c['metric'], c['slice']) for c in verdict['checks'] if not c['passed']]
    assert failing == [('click', 'auc', 'country:DE'), ('ctr', 'prediction/mean', 'id:' + BAD_ID)]
    country = [c['slice'] for c in verdict['checks'] if c['metric'] == 'auc']
    assert country == ['country:DE', 'country:JP', 'country:US']  # LU is not checked ...
    ids = [c['slice'] for c in verdict['checks'] if c['head'] == 'ctr']
    assert ids == ['id:id%03d' % i for i in range(N_IDS)]  # ... nor id 'tiny'
    # ... but said so: one entry per (rule, spec), no "no rows" failure
    assert verdict['not_checked'] == [
        {'head': 'click', 'metric': 'auc', 'slice': 'country:*', 'slices': 1, 'rows': TINY,
         'reason': 'below min_slice_size %d' % MIN_SLICE_SIZE},
        {'head': 'ctr', 'metric': 'prediction/mean', 'slice': 'id:*', 'slices': 1, 'rows': TINY,
         'reason': 'below min_slice_size %d' % MIN_SLICE_SIZE}]
    assert not any('no rows' in c['rule'] for c in verdict['checks'])
    assert ('NOT BLESSED: failing (country:DE, click, auc), (id:%s, ctr, prediction/mean); '
            '2 slices below min_slice_size not checked' % BAD_ID) in printed
    metrics = _metrics(out)
    assert not metrics['slice'].isin(['country:LU', 'id:tiny']).any()  # no model's rows


def test_a_spec_whose_every_slice_is_too_small_is_not_checked_rather_than_no_rows(tmp_path):
    from pipeline.validation import check_rules, verdict_line
    config = parse_config(raw_config('d/*.parquet', 'out', 0.5))
    overall = {'model': 'candidate', 'head': 'click', 'metric': 'accuracy', 'slice': 'Overall',
               'slice_columns': '', 'slice_values': '', 'value': 0.9, 'ci_lower': 0.85,
               'ci_upper': 0.95}
    left_out = {'country': {'slices': 4, 'rows': 3606}, 'id': {'slices': 161, 'rows': 3606}}
    verdict = check_rules(config, pa.Table.from_pylist([overall]), left_out)
    assert [(c['slice'], c['passed']) for c in verdict['checks']] == [('Overall', True)]
    assert [(e['slice'], e['slices']) for e in verdict['not_checked']] == [
        ('country:*', 4), ('id:*', 161)]
    assert verdict['blessed']
    assert verdict_line(verdict) == ('BLESSED (1 checks passed; 165 slices below min_slice_size '
                                     'not checked)')
    # without min_slice_size having left them out, a spec without rows still fails
    verdict = check_rules(config, pa.Table.from_pylist([overall]))
    assert not verdict['blessed'] and 'not_checked' not in verdict
    assert {c['rule'].endswith(': no rows') for c in verdict['checks'][:2]} == {True}


def test_a_slice_of_one_class_or_no_weight_fails_its_rules_instead_of_passing_on_zero():
    """The tables report such a 0/0 as 0 (tf.estimator's div_no_nan); a gate cannot vouch for it:
    a change rule would pass on 0 − 0, a value rule fail on a made-up 0."""
    from pipeline.validation import check_rules
    raw = raw_config('d/*.parquet', 'out', 0.0, slices=[[], ['country']],
                     confidence={'level': 0.95})
    raw['validation'] = [
        {'head': 'click', 'metric': 'auc', 'slices': [['country']], 'max_decrease': 0.05},
        {'head': 'click', 'metric': 'accuracy', 'slices': [['country']], 'min': 0.0}]
    config = parse_config(raw)

    def rows(slice_value, metric, value, weight, bound):
        common = {'head': 'click', 'metric': metric, 'slice': 'country:' + slice_value,
                  'slice_columns': 'country', 'slice_values': slice_value,
                  'weighted_example_count': weight, 'lower_bound': bound,
                  'ci_lower': None, 'ci_upper': None}
        return [dict(common, model='candidate', value=value),
                dict(common, model='baseline', value=value), dict(common, model='diff', value=0.0)]
    table = pa.Table.from_pylist(
        rows('JP', 'auc', 0.0, 40.0, None)             # no positives: auc is 0/0
        + rows('JP', 'accuracy', 0.7, 40.0, None)      # defined
        + rows('LU', 'auc', 0.0, 0.0, None)            # every weight 0
        + rows('LU', 'accuracy', 0.0, 0.0, None)
        + rows('US', 'auc', 0.8, 40.0, 0.79)           # an ordinary slice
        + rows('US', 'accuracy', 0.7, 40.0, None))
    checks = check_rules(config, table)['checks']
    assert [(c['slice'], c['metric'], c['passed'], c['value'], c['diff']) for c in checks] == [
        ('country:JP', 'auc', False, None, None), ('country:LU', 'auc', False, None, None),
        ('country:US', 'auc', True, 0.8, 0.0),
        ('country:JP', 'accuracy', True, 0.7, 0.0), ('country:LU', 'accuracy', False, None, None),
        ('country:US', 'accuracy', True, 0.7, 0.0)]


# -------------------------------------------------------------------------------------------------
# confidence × baseline
# -------------------------------------------------------------------------------------------------

def _row(metrics, model: str, slice_: str, head: str, metric: str) -> dict:
    rows = metrics[(metrics['model'] == model) & (metrics['slice'] == slice_)
                   & (metrics['head'] == head) & (metrics['metric'] == metric)]
    assert len(rows) == 1, (model, slice_, head, metric)
    return rows.iloc[0].to_dict()


def test_candidate_and_baseline_rows_carry_their_own_intervals_and_diff_rows_paired_ones(run):
    _, out, d, _ = run
    metrics = _metrics(out)
    y = d['y'] == 1
    for model, logits in (('candidate', d['x']), ('baseline', d['b'])):
        row = _row(metrics, model, 'Overall', 'click', 'accuracy')
        hits = float(np.sum((logits > 0) == y))
        assert row['value'] == pytest.approx(hits / len(y), abs=1e-12)
        assert (row['ci_lower'], row['ci_upper']) == pytest.approx(wilson(hits, len(y)), abs=1e-9)
    diff = _row(metrics, 'diff', 'Overall', 'click', 'accuracy')
    per_row = ((d['x'] > 0) == y).astype(float) - ((d['b'] > 0) == y).astype(float)
    assert diff['value'] == pytest.approx(per_row.mean(), abs=1e-12)
    assert (diff['ci_lower'], diff['ci_upper']) == pytest.approx(paired_mean(per_row), abs=1e-9)
    # where the two models' logits are the same rows' same numbers, the paired interval is a point
    same = _row(metrics, 'diff', 'id:id001', 'ctr', 'average_loss')
    assert (same['value'], same['ci_lower'], same['ci_upper']) == pytest.approx((0, 0, 0),
                                                                               abs=1e-12)


def test_a_value_rule_uses_the_candidates_interval_not_the_diffs(run):
    _, out, d, _ = run
    limit, point, upper = accuracy_limit(d)
    assert point < limit < upper  # the point estimate alone would fail
    (check,) = [c for c in _verdict(out)['checks'] if c['metric'] == 'accuracy']
    cand = _row(_metrics(out), 'candidate', 'Overall', 'click', 'accuracy')
    assert check['passed'] and check['value'] == pytest.approx(point, abs=1e-12)
    assert (check['ci_lower'], check['ci_upper']) == (cand['ci_lower'], cand['ci_upper'])


def test_with_the_bootstrap_each_model_has_its_replicates_interval_and_the_diff_its_paired_one(
        tmp_path):
    d = {k: v[::4] for k, v in make_data(14).items()}  # 2550 rows, LU's 2 left out
    data = write_parquet(d, str(tmp_path / 'data.parquet'))
    hits = float(np.sum((d['x'] > 0) == (d['y'] == 1)))
    limit = hits / len(d['y']) + 0.005  # the point misses it; the bootstrap's interval reaches it
    raw = raw_config(data, str(tmp_path / 'out'), limit, slices=[[], ['country']],
                     confidence={'level': 0.95, 'method': 'bootstrap'})
    raw['validation'] = raw['validation'][2:]
    (tmp_path / 'c.yaml').write_text(yaml.safe_dump(raw))
    assert cli.main(['evaluate', '--config', str(tmp_path / 'c.yaml')]) == 0
    metrics = _metrics(str(tmp_path / 'out'))
    cand = _row(metrics, 'candidate', 'Overall', 'click', 'accuracy')
    base = _row(metrics, 'baseline', 'Overall', 'click', 'accuracy')
    for row in (cand, base):  # value ± t·sd of the replicates: symmetric, not Wilson's
        assert row['ci_lower'] < row['value'] < row['ci_upper']
        assert row['value'] - row['ci_lower'] == pytest.approx(row['ci_upper'] - row['value'],
                                                               rel=1e-9)
    assert cand['ci_lower'] != base['ci_lower']
    # the metric without a closed form gets the bootstrap's interval on both models' rows
    for model in ('candidate', 'baseline'):
        assert _row(metrics, model, 'Overall', 'click', 'auc_precision_recall')['ci_lower'] > 0
    diff = _row(metrics, 'diff', 'Overall', 'click', 'accuracy')
    per_row = (((d['x'] > 0) == (d['y'] == 1)).astype(float)
               - ((d['b'] > 0) == (d['y'] == 1)).astype(float))
    assert (diff['ci_lower'], diff['ci_upper']) == pytest.approx(paired_mean(per_row), abs=1e-9)
    (check,) = _verdict(str(tmp_path / 'out'))['checks']
    assert check['passed'] == (cand['ci_upper'] >= limit)
    assert (check['ci_lower'], check['ci_upper']) == (cand['ci_lower'], cand['ci_upper'])


# -------------------------------------------------------------------------------------------------
# the outputs: report (many slices), TFMA, BigQuery, TensorBoard
# -------------------------------------------------------------------------------------------------

def test_the_report_shows_every_failing_check_even_for_a_slice_its_top_n_cut(run):
    from pipeline.report.select import select_slices
    _, out, _, _ = run
    metrics = pq.read_table(os.path.join(out, 'metrics'))
    cut = select_slices(metrics)
    assert cut.slices is not None and 'id:' + BAD_ID not in cut.slices  # mid-ranked, not largest
    with open(os.path.join(out, 'report.html')) as f:
        page = f.read()
    failing = re.findall(r'<tr class="failing"><td class="slice" data-v="([^"]*)">.*?'
                         r'<td data-v="([^"]*)">', page)
    assert sorted(failing) == [('country:DE', 'auc'), ('id:' + BAD_ID, 'prediction/mean')]
    assert 'NOT BLESSED (2 failing; 2 slices below min_slice_size not checked)' in page
    assert '1 more slices shown for their failing validation checks' in page
    assert 'below min_slice_size %d left out' % MIN_SLICE_SIZE in page


def test_the_reports_top_slices_are_ranked_by_the_candidates_values_not_the_diffs():
    from pipeline.report.select import select_slices
    n = 200  # > 150: the spec is cut to the 50 worst, 50 best and 50 largest
    rows = []
    for i in range(n):
        name = 'id:%03d' % i
        value = 0.5 + 0.4 * i / n  # the candidate's auc grows with i: 000..049 worst, 150.. best
        for model, v in (('candidate', value), ('baseline', value), ('diff', 0.0)):
            # a middle slice's diff and baseline are the extremes of the whole table
            if i == 100 and model != 'candidate':
                v = -0.9 if model == 'diff' else 1.0
            rows.append({'slice_columns': 'id', 'slice': name, 'head': 'click', 'model': model,
                         'metric': 'auc', 'value': v, 'example_count': 10})
    chosen = select_slices(pa.Table.from_pylist(rows)).slices
    assert chosen == {'id:%03d' % i for i in list(range(50)) + list(range(150, 200))}


def test_tfma_gets_the_candidates_rows_with_intervals_and_the_validation_result(run):
    import tensorflow_model_analysis as tfma
    _, out, _, _ = run
    metrics = _metrics(out)
    loaded = {}
    for m in tfma.load_metrics(os.path.join(out, 'tfma')):
        key = tuple((k.column, k.bytes_value) for k in m.slice_key.single_slice_keys)
        for kv in m.metric_keys_and_values:
            assert (key, kv.key.output_name, kv.key.name) not in loaded  # one model's row each
            loaded[(key, kv.key.output_name, kv.key.name)] = kv
    auc = loaded[((('country', b'DE'),), 'click', 'auc')]
    cand = _row(metrics, 'candidate', 'country:DE', 'click', 'auc')
    assert auc.value.double_value.value == pytest.approx(cand['value'], abs=1e-12)
    assert auc.confidence_interval.lower_bound.double_value.value == pytest.approx(
        cand['ci_lower'], abs=1e-12)
    assert not any(k[0] in ((('country', b'LU'),), (('id', b'tiny'),)) for k in loaded)
    result = tfma.load_validation_result(os.path.join(out, 'tfma'))
    assert result.validation_ok is False
    failed = sorted((s.slice_key.single_slice_keys[0].bytes_value, f.metric_key.name,
                     f.metric_key.is_diff)
                    for s in result.metric_validations_per_slice for f in s.failures)
    assert failed == [(b'DE', 'auc', True), (BAD_ID.encode(), 'prediction/mean', True)]


def test_bigquery_rows_carry_model_and_interval_columns_for_every_model(run):
    from pipeline.writers import bigquery
    _, out, d, _ = run
    rows = bigquery.metric_rows(pq.read_table(os.path.join(out, 'metrics')))
    (diff,) = [r for r in rows if (r['model'], r['slice'], r['head'], r['metric'])
               == ('diff', 'Overall', 'click', 'accuracy')]
    per_row = (((d['x'] > 0) == (d['y'] == 1)).astype(float)
               - ((d['b'] > 0) == (d['y'] == 1)).astype(float))
    assert (diff['ci_lower'], diff['ci_upper']) == pytest.approx(paired_mean(per_row), abs=1e-9)
    assert {r['model'] for r in rows} == {'candidate', 'baseline', 'diff'}
    assert all({'ci_lower', 'ci_upper', 'standard_error', 'model'} <= set(r) for r in rows)


def test_tensorboard_caps_runs_over_the_candidates_slices_only(run):
    _, out, _, _ = run
    with open(os.path.join(out, 'summary.json')) as f:
        summary = json.load(f)
    kept = 3 + N_IDS + 1  # Overall, US, JP, DE and the ids (LU, tiny left out before)
    assert summary['slices_left_out'] == {'country': {'slices': 1, 'rows': TINY},
                                          'id': {'slices': 1, 'rows': TINY}}
    assert summary['tensorboard_runs_left_out'] == kept - 40
    assert summary['validation']['failing'] == [
        '(country:DE, click, auc)', '(id:%s, ctr, prediction/mean)' % BAD_ID]


# -------------------------------------------------------------------------------------------------
# windows, watch, the config
# -------------------------------------------------------------------------------------------------

def test_every_window_and_step_is_checked_and_tensorboard_charts_the_candidate(tmp_path):
    d = make_data(12)
    data = write_parquet(d, str(tmp_path / 'data.parquet'))
    raw = raw_config(data, str(tmp_path / 'out'), 0.0, window={'column': 'ts', 'size': 3600},
                     slices=[[], ['country']], tensorboard={'step': 120000})
    raw['validation'] = raw['validation'][:1]
    (tmp_path / 'c.yaml').write_text(yaml.safe_dump(raw))
    assert cli.main(['evaluate', '--config', str(tmp_path / 'c.yaml')]) == 3
    verdict = _verdict(str(tmp_path / 'out'))
    by_window: dict[str, list] = {}
    for c in verdict['checks']:
        by_window.setdefault(c['window_start'], []).append((c['slice'], c['passed']))
    assert list(by_window.values()) == [
        [('country:DE', False), ('country:JP', True), ('country:US', True)]] * 2
    # LU's six rows fall in the two hours: each (slice, window) below the size is one slice
    lu_windows = len({t // 3600 for t in d['ts'][d['country'] == 'LU']})
    assert verdict['not_checked'] == [
        {'head': 'click', 'metric': 'auc', 'slice': 'country:*', 'slices': lu_windows,
         'rows': TINY, 'reason': 'below min_slice_size %d' % MIN_SLICE_SIZE}]
    metrics = _metrics(str(tmp_path / 'out'))
    assert not metrics['slice'].isin(['country:LU']).any()
    assert {c['step'] for c in verdict['checks']} == {120000}
    # the report shows the latest window and still lists the earlier window's failing check
    first, _ = sorted(by_window)
    with open(str(tmp_path / 'out' / 'report.html')) as f:
        page = f.read()
    assert re.findall(r'<tr class="failing"><td class="slice" data-v="([^"]*)">', page) == [
        'country:DE', 'country:DE @ ' + first]
    # TensorBoard: one run per kept slice and the step, each window's candidate value at its end
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util
    tb = str(tmp_path / 'out' / 'tensorboard')
    runs = sorted(os.path.relpath(root, tb) for root, _, files in os.walk(tb)
                  if any('tfevents' in f for f in files))
    assert runs == ['Overall/step=120000', 'country=DE/step=120000', 'country=JP/step=120000',
                    'country=US/step=120000']
    acc = pea.EventAccumulator(os.path.join(tb, 'country=DE', 'step=120000'),
                               size_guidance={pea.TENSORS: 0})
    acc.Reload()
    got = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
           for e in acc.Tensors('click/auc')]
    cand = metrics[(metrics['model'] == 'candidate') & (metrics['slice'] == 'country:DE')
                   & (metrics['head'] == 'click') & (metrics['metric'] == 'auc')]
    want = sorted((int(w.timestamp()) + 3600, v) for w, v in zip(cand['window_start'],
                                                                 cand['value']))
    assert [s for s, _ in got] == [s for s, _ in want] and len(got) == 2
    assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)  # float32


def test_watch_applies_min_slice_size_and_prints_each_panes_verdict(tmp_path, capsys):
    from pipeline import watch
    d = make_data(13)
    d['ts'] = np.full(len(d['y']), 1_700_000_000)
    (tmp_path / 'in').mkdir()
    write_parquet(d, str(tmp_path / 'in' / 'a.parquet'))
    raw = raw_config(str(tmp_path / 'in' / '*.parquet'), str(tmp_path / 'out'), 0.0,
                     window={'column': 'ts', 'size': 3600}, slices=[[], ['country']])
    raw['validation'] = raw['validation'][:1]
    (tmp_path / 'w.yaml').write_text(yaml.safe_dump(raw))
    assert watch.main(['--config', str(tmp_path / 'w.yaml'), '--once', '--settle', '0']) == 0
    assert ('NOT BLESSED: failing (country:DE, click, auc); 1 slices below min_slice_size not '
            'checked') in capsys.readouterr().out
    metrics = pq.read_table(str(tmp_path / 'out' / 'metrics')).to_pandas()
    assert set(metrics['model']) == {'candidate', 'baseline', 'diff'}
    assert not metrics['slice'].isin(['country:LU']).any()
    de = metrics[(metrics.slice == 'country:DE') & (metrics.metric == 'auc')
                 & (metrics['head'] == 'click')]
    assert de['ci_lower'].notna().all() and len(de) == 3


def test_the_config_round_trips_with_every_new_key():
    raw = raw_config('d/*.parquet', 'out', 0.7, window={'column': 'ts', 'size': 3600},
                     tensorboard={'max_runs': 40, 'step': 'global_step'},
                     confidence={'level': 0.9, 'method': 'bootstrap'})
    config = parse_config(raw)
    again = parse_config(config.to_dict())
    assert again == config
    assert again.min_slice_size == MIN_SLICE_SIZE and again.confidence.method == 'bootstrap'
    assert again.tensorboard.max_runs == 40 and len(again.validation) == 3
    assert again.heads[0].baseline_columns == ('b',)


def test_streaming_panes_leave_out_small_slices_and_log_each_panes_verdict(tmp_path, caplog):
    import logging

    import apache_beam as beam
    from apache_beam.testing import test_stream
    from apache_beam.transforms import window as beam_window

    from tests.test_streaming import T0, _batch, _pane_files, _run
    rng = np.random.default_rng(15)
    n = 400
    country = np.array(['US'] * (n - 3) + ['LU'] * 3)
    y = rng.integers(0, 2, n).astype(np.int64)
    b = 2.0 * y + rng.normal(size=n)
    rows = {'ts': np.asarray([T0 + i % 60 for i in range(n)], np.int64), 'country': country,
            'label': y, 'b': b, 'logit': np.where(country == 'US', -b, b)}  # US: reversed
    raw = raw_config('unused/*.parquet', str(tmp_path / 'out'), 0.0, slices=[[], ['country']],
                     window={'column': 'ts', 'size': 60}, min_slice_size=5)
    raw['heads'] = [{'type': 'BinaryClassHead', 'args': {'name': 'click'}, 'logits': 'logit',
                     'baseline_logits': 'b', 'labels': 'label'}]
    raw['validation'] = raw['validation'][:1]
    config = parse_config(raw)
    stream = (test_stream.TestStream(coder=beam.coders.PickleCoder())
              .advance_watermark_to(T0)
              .add_elements([beam_window.TimestampedValue(_batch(rows, 'all'), T0)])
              .advance_watermark_to_infinity())
    with caplog.at_level(logging.INFO, logger='pipeline.streaming'):
        _run(config, stream)
    (pane,) = _pane_files(config.output).values()
    table = pane.to_pandas()
    assert set(table['slice']) == {'Overall', 'country:US'}  # LU's 3 rows: left out
    us = table[(table['slice'] == 'country:US') & (table['metric'] == 'auc')]
    assert set(us['model']) == {'candidate', 'baseline', 'diff'}
    assert us['ci_lower'].notna().all()
    lines = [r.getMessage() for r in caplog.records if 'pane 0' in r.getMessage()]
    assert len(lines) == 1 and lines[0].endswith(
        'NOT BLESSED: failing (country:US, click, auc); 1 slices below min_slice_size not checked')
