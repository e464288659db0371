"""How one batch's rows reach many `heads.state.HeadState`s that may be small (holding rows): how
many rows each holds and may hold, the rows of the states turning dense (gathered when they are
a minority of the batch), and the rows small states keep by reference into one record block
sorted by state.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from heads.metrics.groups import group_order
from heads.metrics.rows import as_records

if TYPE_CHECKING:
    from heads.state import HeadState


def held_and_limits(states: Sequence[HeadState]) -> tuple[np.ndarray, np.ndarray]:
    """Per state: rows held (−1: dense) and how many it may hold."""
    held, limit = [], []
    for st in states:
        buf = st._buffer
        if buf is None:
            held.append(-1)
            limit.append(0)
        else:
            held.append(buf.n)
            limit.append(st.BUFFER_ROWS if st._parked is None else st.PENDING_ROWS)
    return np.array(held, np.int64), np.array(limit, np.int64)


def subset(states: Sequence[HeadState], codes: np.ndarray, rows: Mapping[str, np.ndarray],
            idx: np.ndarray, n_g: np.ndarray
            ) -> tuple[list[HeadState], np.ndarray, Mapping[str, np.ndarray]]:
    """(states[idx], their codes 0..len(idx)-1 per row (−1: another state's row), rows): the rows
    gathered when the chosen states hold a minority of them, else all rows with codes −1."""
    k = len(states)
    if idx.size == k:
        return list(states), codes, rows
    remap = np.full(k + 1, -1, np.int64)
    remap[idx] = np.arange(idx.size)
    local = remap[codes]  # code −1 → remap[−1] = −1
    if 2 * float(n_g[idx].sum()) < codes.size:
        take = np.flatnonzero(local >= 0)
        local = local[take]
        rows = {name: np.take(v, take, axis=0) for name, v in rows.items()}
    return [states[i] for i in idx], local, rows


def keep_rows(states: Sequence[HeadState], codes: np.ndarray, rows: Mapping[str, np.ndarray],
               idx: np.ndarray, k: int) -> np.ndarray:
    """Adds to each small state `states[j]` (group idx[j] of `codes`) its rows, by reference into
    one record block of the rows sorted by state; returns Σw per state."""
    remap = np.full(k + 1, -1, np.int64)
    remap[idx] = np.arange(idx.size)
    order, counts = group_order(remap[codes], idx.size)
    block = as_records(rows, order)
    stops = np.cumsum(counts)
    starts = (stops - counts).tolist()
    w_sum = np.add.reduceat(block['w'], starts) if order.size else np.zeros(idx.size)
    for st, a, b in zip(states, starts, stops.tolist()):
        st._buffer.append(block, a, b)
    return w_sum
