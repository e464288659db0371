"""The report's "Candidate vs baseline" table: per head and slice, the candidate's value, the
baseline's, their difference with its paired interval, and the validation check of each
(slice, metric) a rule covers, failing ones marked. Read from the metrics table's `baseline` and
`diff` rows (runs with `baseline_logits`) and the run's `validation.json`.
"""
from __future__ import annotations

from typing import Any

from pipeline.report.data import period, period_sort_key
from pipeline.report.labels import fmt

# Metrics shown for every slice; a metric some rule checks is shown too.
SHOWN = ('auc', 'auc_precision_recall', 'accuracy', 'precision', 'recall', 'average_loss', 'loss')
# Rows per head at most (a high-cardinality slice would make a page of megabytes): rows of failing
# checks first, then the others in table order; the rest are in metrics/ (model = 'diff').
MAX_ROWS = 400


def _interval(row: dict | None) -> str:
    if not row or row.get('ci_lower') is None or row.get('ci_upper') is None:
        return ''
    return '[%s, %s]' % (fmt(row['ci_lower']), fmt(row['ci_upper']))


def _checks(verdict: dict | None) -> dict[tuple[str, str, str], list[dict]]:
    """(head, slice, metric) → its checks (every window's and step's)."""
    out: dict[tuple[str, str, str], list[dict]] = {}
    for c in (verdict or {}).get('checks', []):
        out.setdefault((c['head'], c['slice'], c['metric']), []).append(c)
    return out


def _latest(checks: list[dict]) -> list[dict]:
    """The checks of the latest window (step), as the page shows the latest."""
    for field in ('window_start', 'step'):
        if any(c.get(field) is not None for c in checks):
            last = max(c[field] for c in checks if c.get(field) is not None)
            checks = [c for c in checks if c.get(field) == last]
    return checks


def comparison_rows(rows: list[dict], verdict: dict | None) -> dict[str, list[dict]]:
    """Per head, the table's rows (slice, metric, candidate, baseline, diff, interval, check,
    failed) of the latest window or step; {} without baseline rows."""
    by_model: dict[str, dict[tuple, dict]] = {'candidate': {}, 'baseline': {}, 'diff': {}}
    periods = sorted({period(r) for r in rows}, key=period_sort_key)
    latest = periods[-1] if periods else (None, None)
    for r in rows:
        model = r.get('model') or 'candidate'
        if model in by_model and period(r) == latest:
            by_model[model][(r['head'], r['slice'], r['metric'])] = r
    checks = _checks(verdict)
    if not by_model['diff'] and not any(not c['passed'] for cs in checks.values() for c in cs):
        return {}
    ruled = {(h, m) for h, _, m in checks}
    out: dict[str, list[dict]] = {}
    for key, diff in by_model['diff'].items():
        head, slice_, metric = key
        if metric not in SHOWN and (head, metric) not in ruled:
            continue
        cand, base = by_model['candidate'].get(key), by_model['baseline'].get(key)
        mine = _latest(checks.get(key, []))
        out.setdefault(head, []).append({
            'slice': slice_, 'metric': metric,
            'candidate': fmt(cand['value']) if cand else '',
            'baseline': fmt(base['value']) if base else '',
            'diff': fmt(diff['value']), 'interval': _interval(diff),
            'check': '; '.join('%s %s' % (c['rule'], 'ok' if c['passed'] else 'FAILED')
                               for c in mine),
            'failed': any(not c['passed'] for c in mine)})
    _add_unshown_failures(out, checks, latest, set(by_model['diff']))
    for head, table in out.items():
        if len(table) > MAX_ROWS:
            kept = sorted(range(len(table)), key=lambda i: (not table[i]['failed'], i))[:MAX_ROWS]
            out[head] = [table[i] for i in sorted(kept)]
            out[head].append({'slice': '… %d more rows in metrics/ (model = diff)'
                              % (len(table) - MAX_ROWS), 'metric': '', 'candidate': '',
                              'baseline': '', 'diff': '', 'interval': '', 'check': '',
                              'failed': False})
    return out


def _add_unshown_failures(out: dict[str, list[dict]], checks: dict[tuple, list[dict]],
                          latest: tuple, shown: set[tuple]) -> None:
    """A row per failing check the table would not show otherwise: one of an earlier window or
    step (its slice cell names it), a spec without rows (`country:*`) or a run without a
    baseline's rows (a value rule)."""
    for (head, slice_, metric), mine in checks.items():
        for c in mine:
            own_period = (c.get('window_start'), c.get('step'))
            if c['passed'] or ((head, slice_, metric) in shown and
                               own_period in ((None, None), _iso_period(latest))):
                continue
            at = ' @ %s' % (c.get('window_start') or 'step %s' % c.get('step')) if any(
                x is not None for x in own_period) else ''
            out.setdefault(head, []).append({
                'slice': slice_ + at, 'metric': metric,
                'candidate': fmt(c['value']) if c.get('value') is not None else '',
                'baseline': fmt(c['baseline']) if c.get('baseline') is not None else '',
                'diff': fmt(c['diff']) if c.get('diff') is not None else '',
                'interval': _interval(c) if c['rule'].split()[0] in _CHANGE else '',
                'check': '%s FAILED' % c['rule'], 'failed': True})


_CHANGE = ('max_decrease', 'max_increase')


def _iso_period(p: tuple) -> tuple:
    """A table row's (window_start, step) as validation.json spells them."""
    start, step = p
    return (start.isoformat() if hasattr(start, 'isoformat') else start, step)


def verdict_fact(verdict: dict | None) -> tuple[str, str] | None:
    """The page header's verdict: ('validation', 'BLESSED' | 'NOT BLESSED (n failing)')."""
    if not verdict:
        return None
    failing = sum(not c['passed'] for c in verdict.get('checks', []))
    small = {e['slice']: e['slices'] for e in verdict.get('not_checked') or []}
    unchecked = ('; %d slices below min_slice_size not checked' % sum(small.values())
                 if small else '')
    return ('validation', ('BLESSED' if verdict.get('blessed') else
                           'NOT BLESSED (%d failing' % failing) + unchecked
            + ('' if verdict.get('blessed') else ')'))


def read_verdict(output_dir: str) -> Any:
    """The run's validation.json, or None (no rules, or unreadable: decoration only)."""
    import json

    from pipeline import fileio
    try:
        return json.loads(fileio.read_bytes(fileio.join(output_dir, 'validation.json')))
    except Exception:  # noqa: BLE001 -- a missing verdict is the common case
        return None
