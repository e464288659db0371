"""What a `BinaryClassBlock` costs against one `BinaryClassState` per key (issue 21): the same
rows of a weighted binary head sliced into K keys, through both.

    .venv/bin/python bench/block_cost.py [--rows 1000000] [--keys 5,100000] [--parts 8]
        [--batch 65536] [--no-per-key] [--repeat 1]

Rows are split into `--parts` partial results (as a pipeline's bundles), each adding its rows in
batches of `--batch` with its own key numbering (the keys it saw, in order); the partials are
pickled, unpickled and merged into one result over all K keys (random key codes), which is then
read: results(), bounds(), counts(), losses() for every key. Phases, in seconds:

* block: `add` (every batch into its partial block), `pickle` (dumps + loads of the partials,
  with their total bytes), `merge` (the partials into one block through index maps), `read`;
* per_key: `add` (`BinaryClassState.update_groups` of each batch over the partial's states),
  `pickle`, `merge` (`state.merge` per key into the global states), `read`
  (`heads.extract.densify_together`, then each state's result(), bounds(), counts(), loss()).

One JSON line per (K, path); `total` is add + merge + read (+ pickle in `with_pickle`); with
`--repeat N`, each phase's fastest of N runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from heads import BinaryClassHead  # noqa: E402
from heads.extract import densify_together  # noqa: E402

from _block_bench import add_blocks, batches, bundles, merge_blocks, pickled, timed  # noqa: E402


def make_rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n rows of a binary head: float32 logits, 0/1 labels drawn from the scores, weights in
    [0, 2) with 5% zeros."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, 1)) * 2).astype(np.float32)
    labels = (rng.random((n, 1)) < 1 / (1 + np.exp(-logits))).astype(np.int64)
    w = rng.random((n, 1)) * 2
    w[rng.random(n) < 0.05] = 0.0
    return {'logits': logits, 'labels': labels, 'w': w}


def run_block(head: BinaryClassHead, rows: dict, codes: np.ndarray, n_keys: int,
              n_parts: int, batch: int) -> dict[str, Any]:
    parts = bundles(codes, n_parts)
    blocks, t_add = timed(lambda: add_blocks(head, parts, batch, rows['labels'], rows['logits'],
                                             rows['w']))
    blocks, t_pickle, n_bytes = pickled(blocks)
    total, t_merge = timed(lambda: merge_blocks(head, blocks, parts).grow(n_keys))
    _, t_read = timed(lambda: (total.results(), total.bounds(), total.counts(), total.losses()))
    return {'add': t_add, 'pickle': t_pickle, 'pickled_bytes': n_bytes, 'merge': t_merge,
            'read': t_read}


def run_per_key(head: BinaryClassHead, rows: dict, codes: np.ndarray, n_keys: int,
                n_parts: int, batch: int) -> dict[str, Any]:
    parts = bundles(codes, n_parts)

    def add() -> list:
        out = []
        for rs, local, global_of in parts:
            states = [head.new_state() for _ in range(global_of.size)]
            for codes_at, at in batches(rs, local, batch):
                type(states[0]).update_groups(states, codes_at, rows['labels'][at],
                                              rows['logits'][at], {'w': rows['w'][at]})
            out.append(states)
        return out

    partials, t_add = timed(add)
    partials, t_pickle, n_bytes = pickled(partials)

    def merge() -> list:
        out = [None] * n_keys
        for states, (_, _, global_of) in zip(partials, parts):
            for k, st in zip(global_of.tolist(), states):
                out[k] = st if out[k] is None else out[k].merge(st)
        return [head.new_state() if s is None else s for s in out]

    states, t_merge = timed(merge)

    def read() -> None:
        densify_together(states)
        for st in states:
            st.result(), st.bounds(), st.counts(), st.loss()

    _, t_read = timed(read)
    return {'add': t_add, 'pickle': t_pickle, 'pickled_bytes': n_bytes, 'merge': t_merge,
            'read': t_read}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--keys', default='5,100000')
    ap.add_argument('--parts', type=int, default=8)
    ap.add_argument('--batch', type=int, default=1 << 16)
    ap.add_argument('--no-per-key', action='store_true', help='the block only')
    ap.add_argument('--repeat', type=int, default=1,
                    help='runs of each path; each phase reports its fastest (shared machines)')
    args = ap.parse_args(argv)
    head = BinaryClassHead(weight_column='w', name='click')
    rows = make_rows(args.rows)
    paths = [('block', run_block)] + ([] if args.no_per_key else [('per_key', run_per_key)])
    for n_keys in [int(k) for k in args.keys.split(',')]:
        codes = np.random.default_rng(1).integers(0, n_keys, args.rows)
        for name, fn in paths:
            runs = [fn(head, rows, codes, n_keys, args.parts, args.batch)
                    for _ in range(args.repeat)]
            out = {k: min(r[k] for r in runs) for k in runs[0]}
            out = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
            total = out['add'] + out['merge'] + out['read']
            print(json.dumps({'rows': args.rows, 'keys': n_keys, 'path': name, **out,
                              'total': round(total, 3),
                              'with_pickle': round(total + out['pickle'], 3)}), flush=True)


if __name__ == '__main__':
    main()
