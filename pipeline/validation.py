"""Validation gates: the config's `validation:` rules checked on a run's metrics table, the verdict
(`validation.json`, TFMA's validation result, the summary line) and what it means for the exit
code.

A rule (`pipeline.config.validation.ValidationRule`) is checked for every slice of each of its
slice specs, in every window (and step) of the run, one check per bound:

    min m           the candidate's value ≥ m
    max M           the candidate's value ≤ M
    max_decrease δ  candidate − baseline ≥ −δ   (relative: −δ·|baseline|)
    max_increase δ  candidate − baseline ≤ δ    (relative: δ·|baseline|)

Without `confidence:` the point estimates decide (as TFMA's and MLflow's validators do). With it,
a check fails only when the whole interval lies beyond the bound: a change rule uses the `diff`
row's paired interval, a value rule the candidate row's interval (`ci_lower` / `ci_upper`); a
row without an interval (a metric without an interval method) falls back to its point estimate.
A value that is null or NaN fails its check (nothing can be vouched for), and so does a rule whose
(head, metric, slice spec) has no row at all (an empty input, say). A 0/0 the tables report as 0
(a slice of weight 0; an `auc` of one class only, its bounds null: docs/tables.md) counts as null:
a slice without positives fails an auc rule rather than passing it on 0 − 0.

Slices that `min_slice_size` left out (`pipeline.slice_sizes`) are too small to judge and are not
checked, but never silently: the verdict's `not_checked` lists, per (rule, slice spec), how many
slices and rows were left out, and the verdict line says how many slices went unchecked. A spec
whose every slice was left out is such an entry, not a "no rows" failure.

The run is blessed when every check passes (no rules: blessed, no files). `validation.json`:

    {"blessed": bool, "checks": [{"head", "metric", "slice", ["window_start", "step",] "rule",
      "limit", "value", "baseline", "diff", "ci_lower", "ci_upper", "passed"}, ...],
     ["not_checked": [{"head", "metric", "slice", "slices", "rows", "reason"}, ...]]}

and `tfma/validations.tfrecord` holds TFMA's `ValidationResult` (`validation_ok` = blessed, the
failing checks per slice), which `tfma.load_validation_result(<output>/tfma)` reads.
"""
from __future__ import annotations

import datetime
import json
import math
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import fileio, schema
from pipeline.config import EvalConfig
from pipeline.config.validation import CHANGE_BOUNDS

VALIDATION_FILE = 'validation.json'
TFMA_VALIDATIONS_FILE = 'tfma/validations.tfrecord'
EXIT_NOT_BLESSED = 3


def _number(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _undefined(candidate: dict) -> bool:
    """Whether the candidate's value is a 0/0 reported as 0 (docs/tables.md): a slice of weight
    0, or an `auc` of one class only (0 with null bounds). Both models see the same rows and
    labels, so the baseline's value is then one too (its rows carry no bounds to tell)."""
    if candidate.get('weighted_example_count') == 0:
        return True
    return (candidate['metric'].split('/')[0] == 'auc' and 'lower_bound' in candidate
            and candidate['lower_bound'] is None and _number(candidate['value']) == 0)


def _period(row: dict) -> tuple:
    return (row.get('window_start'), row.get('step'))


_CHECKED_COLUMNS = frozenset([
    'model', 'head', 'metric', 'slice', 'slice_columns', 'slice_values', 'window_start', 'step',
    'value', 'lower_bound', 'ci_lower', 'ci_upper', 'weighted_example_count'])


def _index(metrics: pa.Table, wanted: set[str]) -> dict[tuple, dict]:
    """(model, head, metric, slice_columns, slice_values, window_start, step) → row, for the
    rows of the `wanted` metrics only (a table of many slices holds millions of other rows)."""
    out = {}
    keep = pc.is_in(metrics.column('metric'), value_set=pa.array(sorted(wanted), pa.string()))
    # Only the columns a check reads (reading every column of 100,000s of rows as dicts is most
    # of the time with many slices).
    used = [c for c in metrics.column_names if c in _CHECKED_COLUMNS]
    for row in metrics.select(used).filter(keep).to_pylist():
        out[(row.get('model', 'candidate'), row['head'], row['metric'], row['slice_columns'],
             row['slice_values']) + _period(row)] = row
    return out


def check_rules(config: EvalConfig, metrics: pa.Table,
                left_out: dict[str, dict[str, int]] | None = None) -> dict | None:
    """The verdict {'blessed', 'checks'[, 'not_checked']} of the config's rules on a metrics table
    (any runner's, any window's); None without rules.

    `left_out`: the slices `min_slice_size` took out of `metrics`, per slice spec ('_X_'-joined
    columns) {'slices', 'rows'} (`pipeline.slice_sizes.SliceSizes.left_out`); each rule over such
    a spec gets a `not_checked` entry."""
    if not config.validation:
        return None
    rows = _index(metrics, {rule.metric for rule in config.validation})
    by_rule: dict[tuple, list[tuple]] = {}  # (head, metric, slice_columns) → candidate keys
    for k in rows:
        if k[0] == 'candidate':
            by_rule.setdefault(k[1:4], []).append(k)
    use_intervals = config.confidence is not None
    checks: list[dict] = []
    not_checked: list[dict] = []
    for rule in config.validation:
        for spec in rule.slices:
            columns = schema.join_slice_parts(spec, columns=True)
            matching = by_rule.get((rule.head, rule.metric, columns), [])
            small = (left_out or {}).get('_X_'.join(spec)) if spec else None
            if small:
                not_checked.append(_not_checked(rule, spec, small, config.min_slice_size))
            if not matching and not small:
                checks += [_no_rows(rule, spec, bound, limit) for bound, limit in rule.bounds()]
            for key in sorted(matching, key=lambda k: (k[4], str(k[5]), str(k[6]))):
                candidate = rows[key]
                baseline = rows.get(('baseline',) + key[1:])
                diff = rows.get(('diff',) + key[1:])
                for bound, limit in rule.bounds():
                    checks.append(_check(rule, bound, limit, candidate, baseline, diff,
                                         use_intervals))
    verdict = {'blessed': all(c['passed'] for c in checks), 'checks': checks}
    if not_checked:
        verdict['not_checked'] = not_checked
    return verdict


def _rule_text(rule: Any, bound: str, limit: float) -> str:
    """'min 0.7', 'max_decrease 0.01', 'max_increase 0.02 (relative)'."""
    return '%s %g%s' % (bound, limit,
                        ' (relative)' if rule.relative and bound in CHANGE_BOUNDS else '')


def _no_rows(rule: Any, spec: Sequence[str], bound: str, limit: float) -> dict:
    return {'head': rule.head, 'metric': rule.metric,
            'slice': schema.OVERALL if not spec else '%s:*' % schema.join_slice_parts(spec, True),
            'rule': _rule_text(rule, bound, limit) + ': no rows', 'limit': limit, 'value': None,
            'baseline': None, 'diff': None, 'ci_lower': None, 'ci_upper': None, 'passed': False}


def _not_checked(rule: Any, spec: Sequence[str], small: dict[str, int], size: int) -> dict:
    return {'head': rule.head, 'metric': rule.metric,
            'slice': '%s:*' % schema.join_slice_parts(spec, True), 'slices': small['slices'],
            'rows': small['rows'], 'reason': 'below min_slice_size %d' % size}


def unchecked_text(verdict: dict) -> str:
    """'; 3 slices below min_slice_size not checked' ('' when every slice was checked)."""
    per_spec = {e['slice']: e['slices'] for e in verdict.get('not_checked') or []}
    n = sum(per_spec.values())
    return '; %d slices below min_slice_size not checked' % n if n else ''


def _check(rule: Any, bound: str, limit: float, candidate: dict, baseline: dict | None,
           diff: dict | None, use_intervals: bool) -> dict:
    """One check of one bound on one (slice, window, step)."""
    undefined = _undefined(candidate)
    value = None if undefined else _number(candidate['value'])
    base = _number(baseline['value']) if baseline and not undefined else None
    # a diff of two undefined values (one class, no weight) is no evidence either way
    change = _number(diff['value']) if diff and not undefined else None
    source = diff if bound in CHANGE_BOUNDS else candidate
    use_intervals = use_intervals and source is not None and not undefined
    lo = _number(source.get('ci_lower')) if use_intervals else None
    hi = _number(source.get('ci_upper')) if use_intervals else None
    if bound == 'min':
        x = hi if hi is not None else value
        passed = x is not None and x >= limit
    elif bound == 'max':
        x = lo if lo is not None else value
        passed = x is not None and x <= limit
    else:
        allowed = limit * abs(base) if rule.relative and base is not None else limit
        if bound == 'max_decrease':
            x = hi if hi is not None else change
            passed = x is not None and x >= -allowed
        else:
            x = lo if lo is not None else change
            passed = x is not None and x <= allowed
        if rule.relative and base is None:
            passed = False
    out = {'head': rule.head, 'metric': rule.metric, 'slice': candidate['slice']}
    if candidate.get('window_start') is not None:
        out['window_start'] = _iso(candidate['window_start'])
    if candidate.get('step') is not None:
        out['step'] = candidate['step']
    out.update({'rule': _rule_text(rule, bound, limit), 'limit': limit, 'value': value,
                'baseline': base, 'diff': change, 'ci_lower': lo, 'ci_upper': hi,
                'passed': bool(passed)})
    return out


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime.datetime) else value


def failing(verdict: dict) -> list[str]:
    """The failing checks as '(slice, head, metric)' texts, each once, in order."""
    names = ['(%s, %s, %s)' % (c['slice'], c['head'] or '-', c['metric'])
             for c in verdict['checks'] if not c['passed']]
    return list(dict.fromkeys(names))


def verdict_line(verdict: dict | None) -> str:
    """'BLESSED' / 'NOT BLESSED: failing (slice, head, metric), ...' ('' without rules)."""
    if verdict is None:
        return ''
    if verdict['blessed']:
        return 'BLESSED (%d checks passed%s)' % (len(verdict['checks']), unchecked_text(verdict))
    return 'NOT BLESSED: failing %s%s' % (', '.join(failing(verdict)), unchecked_text(verdict))


def write_validation(out: str, verdict: dict, config: EvalConfig) -> list[str]:
    """Writes validation.json (and TFMA's validation result, when TFMA's protos are there) under
    the run's directory `out`; returns the written paths relative to it."""
    fileio.write_bytes(fileio.join(out, VALIDATION_FILE), verdict_json(verdict))
    written = [VALIDATION_FILE]
    try:
        data = tfma_validation_record(verdict, config)
    except ImportError:
        return written
    fileio.write_bytes(fileio.join(out, TFMA_VALIDATIONS_FILE), fileio.tfrecord_bytes([data]))
    return written + [TFMA_VALIDATIONS_FILE]


def verdict_json(verdict: dict) -> bytes:
    """validation.json's bytes: the verdict as indented JSON with each check on one line. With
    many slices there are 100,000s of checks, and an indented dump of each goes through json's
    Python encoder (seconds); one line per check is json's C encoder, and as easy to read."""
    encode = json.JSONEncoder(default=str).encode
    items = []
    for key, value in verdict.items():
        if key == 'checks' and value:
            text = '[\n%s\n ]' % ',\n'.join('  ' + encode(check) for check in value)
        else:
            text = json.dumps(value, indent=1, default=str).replace('\n', '\n ')
        items.append(' %s: %s' % (encode(key), text))
    return ('{\n%s\n}' % ',\n'.join(items)).encode('utf-8')


def tfma_validation_record(verdict: dict, config: EvalConfig) -> bytes:
    """TFMA's serialized `ValidationResult`: validation_ok and the failures per slice."""
    from pipeline.writers import tfma_protos as protos
    protos.tfma_module('proto.config_pb2')
    protos.tfma_module('proto.metrics_for_slice_pb2')
    vr = protos.tfma_module('proto.validation_result_pb2')
    result = vr.ValidationResult(validation_ok=bool(verdict['blessed']))
    slices = [list(s) for s in config.slices]
    by_slice: dict[str, Any] = {}
    for c in verdict['checks']:
        if c['passed']:
            continue
        if c['slice'] not in by_slice:
            entry = result.metric_validations_per_slice.add()
            key = _slice_key(c['slice'], slices)
            if key is not None:
                entry.slice_key.CopyFrom(protos.slice_key_proto(key))
            by_slice[c['slice']] = entry
        failure = by_slice[c['slice']].failures.add()
        failure.metric_key.name = c['metric']
        failure.metric_key.output_name = c['head']
        failure.metric_key.is_diff = c['rule'].split()[0] in CHANGE_BOUNDS
        shown = c['diff'] if failure.metric_key.is_diff else c['value']
        if shown is not None:
            failure.metric_value.double_value.value = shown
        failure.message = '%s: %s' % (c['rule'], 'failed')
    return result.SerializeToString()


def _slice_key(name: str, slices: list[list[str]]) -> tuple | None:
    """A check's slice as TFMA's slice key (None: a whole spec without rows, `col:*`)."""
    if name == schema.OVERALL:
        return ()
    if name.endswith(':*'):
        return None
    from pipeline.writers import tfma_protos as protos
    columns, values = name.split(':', 1)
    return protos.slice_key(columns, values, slices, None)
