"""A run's progress: the rows read so far, logged every 30 s while `pipeline.run.evaluate` waits.

    progress = Progress(run_id, every_s).start(); progress.attach(result); ...; progress.stop()

Two sources of the count: the job's own Beam counters (`headstream/rows_read`, `bad_rows`) once
the runner returned a result before the job finished (Dataflow, portable runners), else this
process's tally of the rows that the graph's `Progress` step (`CountRows`) saw (the DirectRunner,
whose counters reach the result only when the run is over).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

import apache_beam as beam

from pipeline.elements import SourceBatch

_log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 30.0

# Rows read per run id by workers in this process (the DirectRunner's): Beam's counters reach the
# pipeline result only when a local run is over, so they cannot show its progress.
_rows_read: dict[str, int] = {}
_rows_read_lock = threading.Lock()


def _note_rows_read(run_id: str, n: int) -> None:
    with _rows_read_lock:
        _rows_read[run_id] = _rows_read.get(run_id, 0) + n


class CountRows(beam.DoFn):
    """Passes batches through, adding their rows to this process's tally for the run's progress."""

    def __init__(self, run_id: str):
        self._run_id = run_id

    def process(self, sb: SourceBatch) -> Iterable[SourceBatch]:
        _note_rows_read(self._run_id, sb.batch.num_rows)
        yield sb


def _result_counters(result: Any) -> dict[str, int]:
    """The `headstream` counters a running job's result reports so far (rows_read, bad_rows)."""
    from apache_beam.metrics.metric import MetricsFilter
    out: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace('headstream'))[
            'counters']:
        # Dataflow reports attempted values while the job runs; committed ones may lag or be None.
        value = counter.attempted if counter.attempted is not None else counter.committed
        name = counter.key.metric.name
        out[name] = out.get(name, 0) + int(value or 0)
    return out


class Progress:
    """Logs a run's rows read so far every `every_s` seconds while it runs, and once at the end.

    The count comes from the job's own Beam counters (`headstream/rows_read`, `bad_rows`) once
    the runner returned a result before the job finished (Dataflow, portable runners), else from
    the rows that `CountRows` saw in this process (the DirectRunner, whose `run()` returns when
    the job is done). Remote workers' rows reach only the first source.
    """

    def __init__(self, run_id: str, every_s: float | None,
                 clock: Callable[[], float] = time.monotonic):
        self._run_id = run_id
        self._every_s = every_s
        self._clock = clock
        self._started = clock()
        self._result: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> 'Progress':
        if self._every_s and self._every_s > 0:
            self._thread = threading.Thread(target=self._loop, name='headstream-progress',
                                            daemon=True)
            self._thread.start()
        return self

    def attach(self, result: Any) -> None:
        """Reads the counts from `result` (a running job's PipelineResult) from now on."""
        self._result = result

    def counts(self) -> tuple[int | None, int | None]:
        """(rows read, bad rows) so far; None where no source knows."""
        if self._result is not None:
            try:
                counters = _result_counters(self._result)
            except Exception as e:  # noqa: BLE001 -- progress must never fail the run
                _log.debug('headstream: progress: cannot query the job\'s metrics: %s', e)
            else:
                if 'rows_read' in counters:
                    return counters['rows_read'], counters.get('bad_rows', 0)
        with _rows_read_lock:
            read = _rows_read.get(self._run_id)
        return read, None

    def report(self, final: bool = False) -> str:
        """Logs (and returns) one progress line."""
        elapsed = self._clock() - self._started
        read, bad = self.counts()
        if read is None:
            line = 'headstream: run %s: %s after %.0f s' % (
                self._run_id, 'stopped' if final else 'running', elapsed)
        else:
            line = 'headstream: run %s: %d rows read%s%s in %.0f s (%.0f rows/s)' % (
                self._run_id, read, '' if bad is None else ', %d bad' % bad,
                '' if final else ' so far', elapsed, read / max(elapsed, 1e-9))
        _log.info(line)
        return line

    def _loop(self) -> None:
        while not self._stop.wait(self._every_s):
            self.report()

    def stop(self) -> None:
        """Stops the periodic lines; logs the final count; forgets the run's tally."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.report(final=True)
        with _rows_read_lock:
            _rows_read.pop(self._run_id, None)

