"""A shard's `KeyBlock` → one `pipeline.results.KeyResult` per key, its metrics read as one array
per metric for every key at once.

The rows are those `pipeline.results.state_result` gives a key's own state: the head's metrics
(keys without the head's '/name' suffix), then `loss`; the AUC's bounds where the state has them
(null where not finite). Plots are read (from the key's dense state, `block.state(i)`) only for
keys that can be among a spec's `plots.max_slices` largest slices: the largest of the shard by
example count, ties broken by the tables' slice order — the rule `pipeline.run_outputs` applies
over every shard, so a key it keeps always has its plots; every other key has none (`{}`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.key_blocks import KeyBlock
from pipeline.metric_rows import MetricRows
from pipeline.packed_plots import PackedPlots
from pipeline.results import KeyResult, strip_suffix

__all__ = ['block_results', 'plotted_keys']


def _value_order(values: tuple) -> tuple:
    """Slice values in the tables' order (numbers before text), as `results._slice_order`."""
    return tuple((0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in values)


def plotted_keys(kb: KeyBlock, counts: np.ndarray, limit: int | None) -> list[int]:
    """The indices of the keys of `kb` among its `limit` largest (by example count, then in the
    tables' slice order), all keys when `limit` is None."""
    n = len(kb)
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        return []
    # Every key with at least the limit-th largest count may win; only those are ordered.
    cut = np.partition(counts, n - limit)[n - limit]
    candidates = np.flatnonzero(counts >= cut).tolist()

    def order(i: int) -> tuple:
        values, window, step = kb.keys[i]
        return (-counts[i], _value_order(values), window if window is not None else 0,
                step if step is not None else 0)
    return sorted(candidates, key=order)[:limit]


def _metric_array(kb: KeyBlock, name: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(metric names, [keys, metrics, 3] float64 of (value, lower, upper); NaN: no bound)."""
    block = kb.block
    results = {strip_suffix(k, name): v for k, v in block.results().items()}
    results.pop('loss', None)  # the `loss` row is the head's loss, as in state_result
    names = tuple(results) + ('loss',)
    values = np.full((len(kb), len(names), 3), np.nan)
    for j, v in enumerate(results.values()):
        values[:, j, 0] = v
    values[:, -1, 0] = block.losses()
    position = {m: j for j, m in enumerate(names)}
    for k, (lo, hi) in block.bounds().items():
        j = position.get(strip_suffix(k, name))
        if j is not None:
            values[:, j, 1] = np.where(np.isfinite(lo), lo, np.nan)
            values[:, j, 2] = np.where(np.isfinite(hi), hi, np.nan)
    return names, values


def block_results(kb: KeyBlock, head_names: Sequence[str], max_plots: int | None
                  ) -> list[KeyResult]:
    """One KeyResult per key of `kb` (in its table's order), plots only for `plotted_keys`."""
    name = head_names[kb.head]
    names, values = _metric_array(kb, name)
    examples, weighted = kb.block.counts()
    plotted = set(plotted_keys(kb, examples, max_plots))
    out = []
    for i in range(len(kb)):
        plots = PackedPlots(kb.block.state(i).plots() or {}) if i in plotted else {}
        out.append(KeyResult(kb.key(i), MetricRows.from_array(names, values[i]),
                             int(examples[i]), float(weighted[i]), float(values[i, -1, 0]),
                             plots))
    return out
