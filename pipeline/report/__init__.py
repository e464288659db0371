"""`report.html`: one self-contained page built from a run's Parquet outputs alone.

    headstream report OUTPUT_DIR        (also `python -m pipeline.report OUTPUT_DIR`)

Reads `metrics/*.parquet`, `plots/*.parquet` and `summary.json` (when present) under OUTPUT_DIR
(local or gs://, through Beam's FileSystems) and writes `OUTPUT_DIR/report.html`. The command
refuses a directory without a complete run (a batch output needs a summary.json of ours whose
every listed file is there; see pipeline/writers/publish.py); `write_report` itself does not
check. Every chart is an inline SVG drawn in Python, so the page needs no network and renders
without JavaScript; a few lines of inline JavaScript only add table sorting and a slice filter.

Per head the page shows: the headline metrics per slice (a sortable table), a slice comparison
(one metric per slice with its example count, worst slices first), per slice the ROC and PR curves
(from the `confusion` rows), the calibration plot (`calibration` rows) and the confusion matrix at
the head's thresholds, and, for runs with several windows or steps, each metric over time. Runs
with a baseline add candidate vs baseline per slice with the diff (failing checks marked).
Runs with windows or steps show their latest window (step) in everything but the over-time charts.

This module owns the command and the page's file (`write_report`, `main`); the package's modules:

    data.py      the tables read back, rows by evaluation (window, step) and curve, slice ranking
    page.py      the page's content per head, rendered through the template (`build_page`)
    compare.py   candidate vs baseline per slice with the diff and the validation checks
    charts.py    the inline SVG charts (lines, slice comparison dots), ticks and ranges
    labels.py    numbers, counts, times and anchors as the page writes them
    select.py    which slices a spec with very many shows (worst, best, largest) and the notes
    template.py  the Jinja template (templates/report/report.html.j2), compiled once per process
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Iterable, Sequence

from pipeline import fileio
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.report.data import TableFiles, read_tables
from pipeline.report.compare import read_verdict
from pipeline.report.page import build_page
from pipeline.report.select import SELECTION_TEXT, left_out_notes, select_slices

REPORT_FILE = 'report.html'


def write_report(output_dir: str, source: str | None = None, *,
                 metrics: pa.Table | None = None, metrics_schema: pa.Schema | None = None,
                 plots: Callable[[set[str] | None], Iterable[pa.Table]] | None = None) -> str:
    """Builds `<output_dir>/report.html` from the run's Parquet outputs; returns its path.

    `source` is the directory the page names as its origin (default `output_dir`): a run builds
    its report in a staging directory that is then moved to `source`. A run that holds its
    tables may pass them instead of having the files read back (`pipeline.report.memory`):
    `metrics` (text columns may be dictionaries) with the schema it was written as, and `plots`,
    a callable giving the plots table's pieces of a set of slices (None: all).

    Raises:
      FileNotFoundError: `output_dir` holds no metrics/*.parquet.
      ValueError: a table lacks a required column (the message names it and the file kind).
    """
    # The slices are chosen on the text columns the choice reads (as dictionaries) and the
    # numbers of the rows it ranks; only the chosen slices' rows are then read whole (a run with
    # 10^6 slices has 10^7 metrics rows: never read back whole, nor as strings).
    if metrics is not None:
        from pipeline.report.memory import TableMemory
        files: Any = TableMemory(metrics, metrics_schema or metrics.schema, 'metrics')
    else:
        files = TableFiles(output_dir, 'metrics')
    if not files:
        raise FileNotFoundError('headstream report: no metrics/*.parquet under %s' % output_dir)
    text = files.columns(SELECTION_TEXT)
    # Specs with very many slices show a few of them (`pipeline.report.select`).
    verdict = read_verdict(output_dir)
    # ... and slices with a failing validation check stay on the page (at most 3 × N more).
    failing = list(dict.fromkeys(c.get('slice') for c in (verdict or {}).get('checks', [])
                                 if not c.get('passed')))
    selection = select_slices(text, always=failing, numbers=files)
    if selection.slices is None:
        text = None
        metrics = files.rows(None)
    else:
        wanted = pa.array(sorted(selection.slices), pa.string())
        slice_column = text['slice']
        text = None
        metrics = files.rows(pc.is_in(slice_column, value_set=wanted).to_numpy(
            zero_copy_only=False))
        slice_column = None
    if plots is not None:
        from pipeline.report.memory import plot_rows_of
        plot_rows = plot_rows_of(plots, selection.slices)
    else:
        plot_rows = read_tables(output_dir, 'plots', slices=selection.slices)
    # A summary is decoration: a missing or broken one (None) must not hide the metrics.
    summary = fileio.read_summary(output_dir)
    notes = left_out_notes(summary) + selection.notes
    page = build_page(metrics, plot_rows, summary, source=source or output_dir,
                      verdict=verdict, notes=notes)
    path = fileio.join(output_dir, REPORT_FILE)
    # Written under a temporary name and renamed, so a reader never sees half a page.
    fileio.write_bytes(path, page.encode('utf-8'))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`headstream report OUTPUT_DIR`: prints the written page's path; 1 on failure, also for a
    directory without a complete run (`publish.check_complete`)."""
    parser = argparse.ArgumentParser(
        prog='headstream report',
        description="Rebuild report.html from a run's Parquet outputs.")
    parser.add_argument('output_dir', help="a run's output directory (local or gs://)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from pipeline.writers.publish import IncompleteRunError, check_complete
    try:
        check_complete(args.output_dir)
        path = write_report(args.output_dir)
    except IncompleteRunError as e:
        print('headstream report: %s' % e, file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(str(e), file=sys.stderr)
        return 1
    print(path)
    return 0
