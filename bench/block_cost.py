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
import pickle
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from heads import BinaryClassHead  # noqa: E402
from heads.extract import densify_together  # noqa: E402


def make_rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n rows of a binary head: float32 logits, 0/1 labels drawn from the scores, weights in
    [0, 2) with 5% zeros."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, 1)) * 2).astype(np.float32)
    labels = (rng.random((n, 1)) < 1 / (1 + np.exp(-logits))).astype(np.int64)
    w = rng.random((n, 1)) * 2
    w[rng.random(n) < 0.05] = 0.0
    return {'logits': logits, 'labels': labels, 'w': w}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _parts(codes: np.ndarray, n_parts: int) -> list[tuple[slice, np.ndarray, np.ndarray]]:
    """Each partial's rows (a slice), its global keys (sorted) and its rows' local codes."""
    out = []
    bounds = np.linspace(0, codes.size, n_parts + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):
        keys, local = np.unique(codes[a:b], return_inverse=True)
        out.append((slice(a, b), keys, local))
    return out


def run_block(head: BinaryClassHead, rows: dict, codes: np.ndarray, n_keys: int,
              n_parts: int, batch: int) -> dict[str, Any]:
    parts = _parts(codes, n_parts)

    def add() -> list:
        blocks = []
        for rs, keys, local in parts:
            blk = head.new_block()
            for a in range(rs.start, rs.stop, batch):
                b = min(a + batch, rs.stop)
                blk.add(local[a - rs.start:b - rs.start], keys.size, rows['labels'][a:b],
                        rows['logits'][a:b], {'w': rows['w'][a:b]})
            blocks.append(blk)
        return blocks

    blocks, t_add = _timed(add)
    blobs, t_dump = _timed(lambda: [pickle.dumps(b, protocol=5) for b in blocks])
    blocks, t_load = _timed(lambda: [pickle.loads(b) for b in blobs])

    def merge():
        out = head.new_block()
        for blk, (_, keys, _) in zip(blocks, parts):
            out.merge(blk, keys)
        out.grow(n_keys)
        return out

    total, t_merge = _timed(merge)
    _, t_read = _timed(lambda: (total.results(), total.bounds(), total.counts(),
                                total.losses()))
    return {'add': t_add, 'pickle': t_dump + t_load, 'pickled_bytes': sum(map(len, blobs)),
            'merge': t_merge, 'read': t_read}


def run_per_key(head: BinaryClassHead, rows: dict, codes: np.ndarray, n_keys: int,
                n_parts: int, batch: int) -> dict[str, Any]:
    parts = _parts(codes, n_parts)

    def add() -> list:
        out = []
        for rs, keys, local in parts:
            states = [head.new_state() for _ in range(keys.size)]
            for a in range(rs.start, rs.stop, batch):
                b = min(a + batch, rs.stop)
                type(states[0]).update_groups(states, local[a - rs.start:b - rs.start],
                                              rows['labels'][a:b], rows['logits'][a:b],
                                              {'w': rows['w'][a:b]})
            out.append(states)
        return out

    partials, t_add = _timed(add)
    blobs, t_dump = _timed(lambda: [pickle.dumps(p, protocol=5) for p in partials])
    partials, t_load = _timed(lambda: [pickle.loads(b) for b in blobs])

    def merge() -> list:
        out = [None] * n_keys
        for states, (_, keys, _) in zip(partials, parts):
            for k, st in zip(keys.tolist(), states):
                out[k] = st if out[k] is None else out[k].merge(st)
        return [head.new_state() if s is None else s for s in out]

    states, t_merge = _timed(merge)

    def read() -> None:
        densify_together(states)
        for st in states:
            st.result(), st.bounds(), st.counts(), st.loss()

    _, t_read = _timed(read)
    return {'add': t_add, 'pickle': t_dump + t_load, 'pickled_bytes': sum(map(len, blobs)),
            'merge': t_merge, 'read': t_read}


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
