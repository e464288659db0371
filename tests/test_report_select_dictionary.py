"""The report's slice choice on the text columns as dictionaries (as `write_report` reads them
back, `TableFiles`) with the numbers read apart is the choice made on the plain string table and
the choice a row-by-row reference in this file makes (`_reference`, the rules of
pipeline/report/select.py's docstring): same slices, same notes, for several heads, a baseline's
rows, ties, null values and failing checks.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.report.data import TableFiles
from pipeline.report.select import PRIMARY_METRICS, SELECTION_TEXT, select_slices


def _reference(rows: list[dict], n: int, always: list) -> tuple:
    """The choice row by row: per spec of more than 3n slices, per head (its primary metric: the
    first of PRIMARY_METRICS it has, else its first), the n worst, n best (candidate rows with
    a finite value, weight not 0, not an auc of 0 without bounds; ties in row order) and n
    largest."""
    by_spec: dict[str, set] = {}
    for r in rows:
        by_spec.setdefault(r['slice_columns'], set()).add(r['slice'])
    big = {c: len(s) for c, s in by_spec.items() if c and len(s) > 3 * n}
    if not big:
        return None, []
    keep = set().union(*(s for c, s in by_spec.items() if c not in big))
    candidate = [r for r in rows if r['model'] in (None, 'candidate')]
    notes = []
    for columns in sorted(big):
        heads: dict[str, list] = {}
        for r in candidate:
            if r['slice_columns'] == columns:
                names = heads.setdefault(r['head'], [])
                if r['metric'] not in names:
                    names.append(r['metric'])
        chosen, primaries = set(), []
        for head, names in heads.items():
            primary = next((m for m in PRIMARY_METRICS if m in names), names[0])
            primaries.append(primary)
            m = [r for r in candidate if r['slice_columns'] == columns and r['head'] == head
                 and r['metric'] == primary]
            ok = [i for i, r in enumerate(m) if r['value'] is not None
                  and np.isfinite(r['value']) and r['weighted_example_count'] != 0
                  and not (primary == 'auc' and r['value'] == 0 and r['lower_bound'] is None)]
            lower = primary in ('loss', 'average_loss')
            order = sorted(ok, key=lambda i: (-m[i]['value'] if lower else m[i]['value'], i))
            best = sorted(ok, key=lambda i: (m[i]['value'] if lower else -m[i]['value'], -i))
            largest = sorted(range(len(m)), key=lambda i: (-(m[i]['example_count'] or 0), i))
            chosen |= {m[i]['slice'] for i in order[:n] + best[:n] + largest[:n]}
        keep |= chosen
        primary = primaries[0] if len(set(primaries)) == 1 else None
        by = ('by %s ' % primary) if primary else 'by each head\'s primary metric '
        notes.append('%s: showing %s of %s slices (per head the %d worst and %d best %sand the '
                     '%d largest); %s left out of this page (all are in the metrics and plots '
                     'tables)' % (columns, f'{len(chosen):,}', f'{big[columns]:,}', n, n, by, n,
                                  f'{big[columns] - len(chosen):,}'))
    present = set().union(*by_spec.values())
    extra = []
    for s in always:  # in order, each once
        if s in present and s not in keep and s not in extra:
            extra.append(s)
    if extra:
        left = len(extra) - 3 * n
        notes.append('%s more slices shown for their failing validation checks%s'
                     % (f'{min(len(extra), 3 * n):,}', '' if left <= 0 else
                        '; %s more failing slices left out of this page (validation.json '
                        'lists every check)' % f'{left:,}'))
    return keep | set(extra[:3 * n]), notes


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    specs = [('', ['Overall'])] + [('user', ['user:%d' % i for i in range(n)]),
                                   ('country', ['country:%s' % c for c in 'ABCDE'])]
    for columns, slices in specs:
        for s in slices:
            count = int(rng.integers(0, 30))
            for head, metrics in (('click', ('auc', 'loss')), ('buy', ('average_loss',))):
                for metric in metrics:
                    for model in (('candidate', 'baseline') if rng.random() < 0.3
                                  else ('candidate',)):
                        value = float(rng.integers(0, 20)) / 19  # ties
                        rows.append({'slice': s, 'slice_columns': columns, 'head': head,
                                     'metric': metric, 'model': model,
                                     'value': None if rng.random() < 0.05 else value,
                                     'example_count': count,
                                     'weighted_example_count': float(count % 7),
                                     'lower_bound': None if rng.random() < 0.5 else 0.1})
    order = rng.permutation(len(rows))
    return pa.Table.from_pylist([rows[i] for i in order.tolist()])


def test_the_choice_on_dictionaries_and_numbers_read_apart_is_the_choice_on_strings(tmp_path):
    for seed, n in ((1, 400), (2, 1000)):
        strings = _table(n, seed)
        always = ['user:3', 'user:%d' % (n - 2), 'nowhere', 'user:3']
        want = select_slices(strings, always=always)
        assert tuple(want) == _reference(strings.to_pylist(), 50, always)
        assert want.slices is not None and len(want.notes) == 2
        out = tmp_path / str(seed)
        (out / 'metrics').mkdir(parents=True)
        half = strings.num_rows // 2
        pq.write_table(strings.slice(0, half), out / 'metrics' / 'a.parquet',
                       row_group_size=777)
        pq.write_table(strings.slice(half), out / 'metrics' / 'b.parquet', row_group_size=500)
        files = TableFiles(str(out), 'metrics')
        text = files.columns(SELECTION_TEXT)
        assert pa.types.is_dictionary(text.schema.field('slice').type)
        assert 'value' not in text.column_names
        got = select_slices(text, always=always, numbers=files)
        assert got == want
        # and the rows of a mask are the table's rows
        mask = np.asarray(pa.compute.is_in(strings['slice'], value_set=pa.array(
            sorted(want.slices))))
        assert files.rows(mask).equals(strings.filter(pa.array(mask)))


def test_at_most_three_n_failing_slices_are_added_the_first_in_the_verdicts_order():
    strings = _table(1000, 3)
    always = ['user:%d' % i for i in range(999, 0, -3)] + ['nowhere']  # 333 failing slices
    got = select_slices(strings, always=always)
    assert tuple(got) == _reference(strings.to_pylist(), 50, always)
    chosen = select_slices(strings).slices
    added = got.slices - chosen
    assert len(added) == 150
    assert added == set([s for s in always if s not in chosen][:150])
    assert any('failing slices left out of this page' in note for note in got.notes)
