"""What the block benches (bench/block_cost.py, bench/regression_block_cost.py) share: rows cut
into bundles that number their own keys, added batch by batch into one block per bundle,
pickled and read back as between workers, merged into one through the bundles' index maps — each
phase timed."""
from __future__ import annotations

import pickle
import time
from typing import Any, Callable, Iterator

import numpy as np


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn()'s value and the seconds it took."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bundles(codes: np.ndarray, n_parts: int) -> list[tuple[slice, np.ndarray, np.ndarray]]:
    """Per bundle: (its rows, its codes in its own key numbering — the keys it saw, in order —,
    local key → global key)."""
    out = []
    for part in np.array_split(np.arange(codes.size), n_parts):
        rows = slice(int(part[0]), int(part[-1]) + 1)
        global_of, local = np.unique(codes[rows], return_inverse=True)
        out.append((rows, local.reshape(-1).astype(np.int64), global_of))
    return out


def batches(rows: slice, local: np.ndarray, batch: int) -> Iterator[tuple[np.ndarray, slice]]:
    """A bundle's rows in batches of `batch`: (the batch's local codes, its rows)."""
    for a in range(rows.start, rows.stop, batch):
        b = min(a + batch, rows.stop)
        yield local[a - rows.start:b - rows.start], slice(a, b)


def add_blocks(head: Any, parts: list, batch: int, labels: np.ndarray, logits: np.ndarray,
               w: np.ndarray) -> list:
    """A new block of `head` per bundle, given the bundle's rows batch by batch."""
    blocks = []
    for rows, local, global_of in parts:
        block = head.new_block()
        for codes, at in batches(rows, local, batch):
            block.add(codes, global_of.size, labels[at], logits[at], {'w': w[at]})
        blocks.append(block)
    return blocks


def pickled(objects: list) -> tuple[list, float, int]:
    """(the objects pickled and read back, the seconds it took, the pickles' bytes)."""
    blobs, t_dump = timed(lambda: [pickle.dumps(o, protocol=5) for o in objects])
    objects, t_load = timed(lambda: [pickle.loads(b) for b in blobs])
    return objects, t_dump + t_load, sum(len(b) for b in blobs)


def merge_blocks(head: Any, blocks: list, parts: list) -> Any:
    """The bundles' blocks merged into a new block of `head` by their index maps."""
    total = head.new_block()
    for block, (_, _, global_of) in zip(blocks, parts):
        total.merge(block, global_of)
    return total
