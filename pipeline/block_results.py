"""A shard's `KeyBlock` → one `pipeline.results.KeyResult` per key, its metrics read as one array
per metric for every key at once; which keys get plots.

The rows are those `pipeline.results.state_result` gives a key's own state: the head's metrics
(keys without the head's '/name' suffix), then `loss`; the AUC's bounds where the state has them
(null where not finite).

Plots (`plots.max_slices` = N): a spec keeps plots for its N largest slices per window and step
(by example count, ties in the tables' slice order — the rule `pipeline.run_outputs` applies).
Reading a key's plots means building its dense state, so only the winners are read, found
before any shard is read: each shard block names its own N largest per (window, step)
(`plot_candidates`), and the largest N of all shards' candidates win (`plot_winners`) — the N
largest overall are always among them. The batch graph computes the winners in a side step and
hands them to every shard's reading (`pipeline.graph`).
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from pipeline.key_blocks import KeyBlock, TableKey
from pipeline.metric_rows import MetricRows
from pipeline.packed_plots import PackedPlots
from pipeline.elements import Key
from pipeline.results import KeyResult, state_results, strip_suffix, values_order

__all__ = ['block_results', 'plot_candidates', 'plot_winners']


# (slice columns, window start, step): the unit the plot limit applies to.
PlotGroup = tuple[tuple[str, ...], Any, Any]
# (−example count, slice value order): smaller wins.
Candidate = tuple[PlotGroup, tuple, TableKey]


def _key_counts(kb: KeyBlock) -> tuple[list[TableKey], np.ndarray]:
    """Every key of `kb` (block keys, then keys only in `dense`) and its example count."""
    keys = list(kb.keys)
    counts = kb.block.counts()[0].copy()
    extra = []
    for key, state in kb.dense.items():
        i = kb.index_of(key)
        if i is None:
            keys.append(key)
            extra.append(state.counts()[0])
        else:
            counts[i] += state.counts()[0]
    return keys, np.concatenate([counts, np.asarray(extra, np.float64)])


def plot_candidates(kb: KeyBlock, limit: int) -> list[Candidate]:
    """Per (window, step) of `kb`'s keys, its `limit` largest (by example count, then in the
    tables' slice order) as (group, rank key, table key)."""
    if limit <= 0 or not len(kb):
        return []
    keys, counts = _key_counts(kb)
    groups: dict[tuple, list[int]] = {}
    for i, (_, window, step) in enumerate(keys):
        groups.setdefault((window, step), []).append(i)
    out: list[Candidate] = []
    for (window, step), members in groups.items():
        index = np.asarray(members, np.int64)
        c = counts[index]
        if index.size > limit:  # only keys with at least the limit-th largest count may win
            cut = np.partition(c, index.size - limit)[index.size - limit]
            index = index[c >= cut]
        ranked = sorted((-float(counts[i]), values_order(keys[i][0]), i)
                        for i in index.tolist())[:limit]
        out += [((kb.columns, window, step), (n, order), keys[i]) for n, order, i in ranked]
    return out


def plot_winners(candidates: Iterable[Candidate], limit: int
                 ) -> dict[tuple[str, ...], set[TableKey]]:
    """The `limit` best candidates of each (spec, window, step), per spec (heads name the same
    keys: every head sees the same rows)."""
    by_group: dict[PlotGroup, dict[TableKey, tuple]] = {}
    for group, rank, key in candidates:
        by_group.setdefault(group, {})[key] = rank
    out: dict[tuple[str, ...], set[TableKey]] = {}
    for (columns, _, _), ranks in by_group.items():
        best = sorted(ranks, key=lambda k: ranks[k])[:limit]
        out.setdefault(columns, set()).update(best)
    return out


def _metric_array(kb: KeyBlock, name: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(metric names, [keys, metrics, 3] float64 of (value, lower, upper); NaN: no bound)."""
    block = kb.block
    results = {strip_suffix(k, name): v for k, v in block.results().items()}
    results.pop('loss', None)  # the `loss` row is the head's loss, as in state_result
    names = tuple(results) + ('loss',)
    values = np.full((len(kb.keys), len(names), 3), np.nan)
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


def block_results(kb: KeyBlock, head_names: Sequence[str],
                  winners: Mapping[tuple[str, ...], Iterable[TableKey]] | None
                  ) -> list[KeyResult]:
    """One KeyResult per key of `kb` (in its table's order); plots for the keys `winners` names
    for its spec (`plot_winners`; None: every key)."""
    name = head_names[kb.head]
    names, values = _metric_array(kb, name)
    examples, weighted = kb.block.counts()
    if winners is None:
        plotted = set(kb.keys) | set(kb.dense)
    else:
        plotted = set(winners.get(kb.columns, ()))
    rows = MetricRows.many(names, values)
    losses = values[:, -1, 0].tolist()
    out = []
    for i, (count, total) in enumerate(zip(examples.tolist(), weighted.tolist())):
        if kb.keys[i] in kb.dense:
            continue  # read with its dense part, below
        plots = (PackedPlots(kb.block.state(i).plots() or {}) if kb.keys[i] in plotted
                 else {})
        out.append(KeyResult(kb.key(i), rows[i], int(count), total, losses[i], plots))
    return out + _dense_results(kb, head_names, plotted)


def _dense_results(kb: KeyBlock, head_names: Sequence[str], plotted: set[TableKey]
                   ) -> list[KeyResult]:
    """The results of the keys with a dense state (merged with their block part, if any), their
    plots dropped unless `plotted`. The states are copied: the block stays unchanged."""
    pairs = []
    for key, state in kb.dense.items():
        state = copy.deepcopy(state)
        i = kb.index_of(key)
        if i is not None:
            state.merge(kb.block.state(i))
        values, window, step = key
        pairs.append((tuple(Key(kb.columns, values, kb.head, window, step)), state))
    results = state_results(pairs, head_names)
    return [r if (r.key.slice_values, r.key.window_start, r.key.step) in plotted
            else r._replace(plots={}) for r in results]
