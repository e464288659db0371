"""What many keys of a head with a sums block cost: one `RegressionBlock` (or `MultiClassBlock`,
`--head multi_class`) per bundle against one `RegressionState` (`MultiClassState`) per key (the
pipeline's path without blocks).

    .venv/bin/python bench/regression_block_cost.py [--rows 1000000] [--keys 100000]
                                                    [--batch 65536] [--partials 8]
                                                    [--head regression|multi_class]

The rows (a weighted `RegressionHead`, or a weighted 3-class `MultiClassHead`; key sizes Zipf-like,
so a few large keys and a long tail) are cut into `--partials` bundles. Each bundle numbers its own keys, as `pipeline.key_blocks` does,
and adds its rows in `--batch`-row batches; then every bundle is pickled and read back (what Beam
does between the bundles and the combine), the partials are merged into one by their index maps,
and every key's metrics, loss and counts are read. Per-key states go through the same phases:
the state's `update_groups` over the batch's keys' states, pickling a dict of states, merging
key by key, `result()` / `loss()` / `counts()` per key. Key-table lookups (the dict from slice
values to index) are the pipeline's and the same for both: outside the timings.

Prints one JSON line per (implementation, phase) and a summary line with the ratios, and checks
that both give the same numbers (largest relative difference).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

import heads
from _block_bench import add_blocks, batches, bundles, merge_blocks, pickled, timed

# --head → (the head, its classes: 0 for a regression head)
HEADS = {'regression': (lambda: heads.RegressionHead(weight_column='w', name='value'), 0),
         'multi_class': (lambda: heads.MultiClassHead(3, weight_column='w', name='topic'), 3)}


def make_data(rows: int, keys: int, seed: int = 0, n_classes: int = 0) -> tuple:
    """(codes, labels, logits, features): Zipf-like key sizes over `keys` keys, all used;
    regression labels, or class ids [rows, 1] and logits [rows, n_classes] when n_classes."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, keys + 1) ** 1.1
    codes = rng.choice(keys, rows, p=p / p.sum())
    codes[:keys] = np.arange(keys)  # every key has at least one row
    codes = rng.permutation(keys)[rng.permutation(codes)]
    if n_classes:
        logits = rng.normal(0.0, 1.0, (rows, n_classes)).astype(np.float32)
        labels = rng.integers(0, n_classes, (rows, 1))
    else:
        logits = rng.normal(1.0, 1.0, (rows, 1)).astype(np.float32)
        labels = (logits + rng.normal(0.0, 0.5, (rows, 1))).astype(np.float32)
    w = rng.uniform(0.0, 2.0, rows)
    return codes.astype(np.int64), labels, logits, {'w': w}


def run_blocks(head: Any, data: tuple, parts: list, batch: int) -> tuple[dict, dict]:
    """Phase seconds and the metrics of the block implementation."""
    _, labels, logits, features = data
    blocks, t_add = timed(lambda: add_blocks(head, parts, batch, labels, logits, features['w']))
    blocks, t_pickle, n_bytes = pickled(blocks)
    total, t_merge = timed(lambda: merge_blocks(head, blocks, parts))
    (res, losses, counts), t_read = timed(lambda: (total.results(), total.losses(),
                                                   total.counts()))
    seconds = {'add': t_add, 'pickle': t_pickle, 'merge': t_merge, 'results': t_read,
               'pickled_mb': n_bytes / 2 ** 20}
    return seconds, {'results': res, 'losses': losses, 'counts': counts}


def run_states(head: Any, data: tuple, parts: list, batch: int, keys: int) -> tuple[dict, dict]:
    """Phase seconds and the metrics of one state per key."""
    _, labels, logits, features = data
    w = features['w']
    update_groups = type(head.new_state()).update_groups

    def add() -> list:
        out = []
        for rows, local, global_of in parts:
            states: dict[int, Any] = {}
            for local_at, at in batches(rows, local, batch):
                batch_keys, codes = np.unique(local_at, return_inverse=True)
                group = []
                for k in batch_keys.tolist():
                    st = states.get(k)
                    if st is None:
                        st = states[k] = head.new_state()
                    group.append(st)
                update_groups(group, codes.reshape(-1), labels[at], logits[at], {'w': w[at]})
            out.append({int(global_of[k]): st for k, st in states.items()})
        return out

    partials, t_add = timed(add)
    partials, t_pickle, n_bytes = pickled(partials)

    def merge() -> dict:
        total: dict[int, Any] = {}
        for part in partials:
            for k, st in part.items():
                mine = total.get(k)
                if mine is None:
                    mine = total[k] = head.new_state()
                mine.merge(st)
        return total

    total, t_merge = timed(merge)

    def read() -> dict:
        order = [total[k] for k in range(keys)]
        rows = [st.result() for st in order]
        return {'results': {m: np.array([r[m] for r in rows]) for m in rows[0]},
                'losses': np.array([st.loss() for st in order]),
                'counts': tuple(np.array(c, np.float64)
                                for c in zip(*(st.counts() for st in order)))}

    out, t_read = timed(read)
    seconds = {'add': t_add, 'pickle': t_pickle, 'merge': t_merge, 'results': t_read,
               'pickled_mb': n_bytes / 2 ** 20}
    return seconds, out


def max_rel_diff(a: dict, b: dict) -> float:
    """The largest relative difference between the two implementations' numbers."""
    pairs = [(a['results'][m], b['results'][m]) for m in a['results']]
    pairs += [(a['losses'], b['losses'])] + list(zip(a['counts'], b['counts']))
    return max(float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300))) for x, y in pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--keys', type=int, default=100_000)
    ap.add_argument('--batch', type=int, default=1 << 16)
    ap.add_argument('--partials', type=int, default=8)
    ap.add_argument('--head', choices=sorted(HEADS), default='regression')
    args = ap.parse_args()
    make_head, n_classes = HEADS[args.head]
    head = make_head()
    data = make_data(args.rows, args.keys, 0, n_classes)
    parts = bundles(data[0], args.partials)
    warm = make_data(20_000, 2_000, 1, n_classes)
    run_blocks(head, warm, bundles(warm[0], 2), args.batch)  # warm-up
    common = {'bench': 'regression_block_cost', 'head': args.head, 'rows': args.rows,
              'keys': args.keys, 'batch': args.batch, 'partials': args.partials}
    got = {}
    for impl in ('block', 'per_key'):
        if impl == 'block':
            seconds, got[impl] = run_blocks(head, data, parts, args.batch)
        else:
            seconds, got[impl] = run_states(head, data, parts, args.batch, args.keys)
        for phase, value in seconds.items():
            key = 'mb' if phase == 'pickled_mb' else 'seconds'
            print(json.dumps(dict(common, impl=impl, phase=phase.replace('_mb', ''),
                                  **{key: round(value, 4)})), flush=True)
        seconds['total'] = sum(v for k, v in seconds.items() if k != 'pickled_mb')
        got[impl + '_s'] = seconds
        print(json.dumps(dict(common, impl=impl, phase='total',
                              seconds=round(seconds['total'], 4))), flush=True)
    b, s = got['block_s'], got['per_key_s']
    print(json.dumps(dict(common, summary=True, **{
        'x_' + p: round(s[p] / max(b[p], 1e-9), 1) for p in ('add', 'pickle', 'merge',
                                                             'results', 'total')},
        per_key_us_block=round(1e6 * b['total'] / args.keys, 2),
        per_key_us_states=round(1e6 * s['total'] / args.keys, 2),
        max_rel_diff=max_rel_diff(got['block'], got['per_key']))), flush=True)


if __name__ == '__main__':
    main()
