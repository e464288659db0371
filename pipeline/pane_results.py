"""One pane of one window written from its (slice, head) results: the window's tables (with
`min_slice_size` and `plots.max_slices` applied per pane, as in batch runs), the pane's files
(`pipeline.writers.panes.write_pane_tables`) and, with validation rules, the window's verdict.
Used by the streaming graph (`pipeline/streaming.py`) and by `headstream watch`.
"""
from __future__ import annotations

import datetime
from typing import Any, Sequence

from pipeline import config as config_lib
from pipeline import slice_sizes, validation
from pipeline.results import KeyResult, build_tables, prepare_results
from pipeline.writers.panes import write_pane_tables


def write_pane(config: config_lib.EvalConfig, results: Sequence[KeyResult], run_id: str,
               start_us: int, timing: str, index: int) -> dict[str, Any]:
    """Writes one pane of one window: its history files and the window's latest tables
    (`pipeline.writers.panes.write_pane_tables`).

    Args:
      config: the windowed config (its output directory receives the files).
      results: every (slice, head) result of the window, keys carrying `window_start = start_us`.
      run_id: stamped on every row.
      start_us: the window's start, microseconds since the epoch.
      timing: early | on_time | late | unknown.
      index: the pane's index within its window (0 for the first pane).

    Returns:
      {'window_start', 'pane', 'pane_index', 'metrics_rows', 'paths'} and, with validation
      rules, 'validation': the window's verdict line (BLESSED / NOT BLESSED: failing ...).
    """
    evaluated_at = datetime.datetime.now(datetime.timezone.utc)
    # `min_slice_size` applies per pane as in batch runs: the window's small slices so far are
    # left out of its tables (logged), and the verdict lists them as not checked.
    sized = slice_sizes.apply_min_slice_size(results, config.min_slice_size)
    # plots.max_slices as in batch runs: Overall and the largest slices keep their plots.
    limited = slice_sizes.limit_plots(prepare_results(config, sized.kept),
                                      config.plots.max_slices)
    metrics, plots = build_tables(config, limited.results, run_id, evaluated_at, prepared=True)
    summary = write_pane_tables(config.output, metrics, plots, start_us, timing, index)
    if sized.left_out:
        summary['slices_left_out'] = sized.left_out
    if limited.without_plots:
        summary['slices_without_plots'] = limited.without_plots
    # With `validation:` rules, the pane's verdict (its window's checks) for the pane's line.
    verdict = validation.check_rules(config, metrics, sized.left_out)
    if verdict is not None:
        summary['validation'] = validation.verdict_line(verdict)
    return summary
