"""BatchEvaluator: per record batch, every head's array face, bad rows and the key split; no Beam.

Per `SourceBatch` (`BatchEvaluator.add`):

1. Arrow columns → numpy (`pipeline.decode`): scalars to 1-D/2-D arrays, list columns to
   [rows, d] arrays, multi-label id lists kept as an Arrow ListArray, CSV JSON-list strings parsed.
2. Bad rows: nulls and ragged lists found while decoding, then every head's `invalid_rows`, then
   negative weights (`decode.negative_weights`: the heads take them as tf.estimator did; the
   pipeline does not). With `bad_records='fail'` the first one raises `BadRecordError` naming file,
   row, column and reason; with 'dead_letter' the row is dropped for every head and returned in
   the batch's `errors` table.
3. Keys (`pipeline.keys`): per slice spec, vectorised slice codes, optionally crossed with window
   starts and step values: each row gets the code of its key.
4. Each head updates the states of all the spec's keys in one pass over the batch (its state's
   `update_groups`: per-key sums by bincount, no sort, no copies); a state without it, or more
   keys than it takes at once, gets per-key sub-batches from one stable argsort instead. States
   live for the bundle and are returned by `finish` (a pre-combine: only small states cross the
   shuffle, on every runner); results cannot depend on bundling because merging is associative
   and commutative. Without the pre-combine, `add` returns a `SubBatch` per key and head instead.
5. The Overall slice is not evaluated row by row when another slice spec is configured: the rows
   of a spec with non-null values are partitioned among that spec's keys, so Overall's state is the
   merge of those keys' states (per head, window and step) plus a state updated with only the rows
   whose value is null (`derive_overall_states`). Every row is then evaluated once per non-Overall
   spec instead of once more for Overall; merging a few states per bundle costs next to nothing.

`pipeline.apply.ApplyHeads` is this evaluator as a Beam DoFn; `headstream watch` calls it directly.
"""
from __future__ import annotations

import copy
import functools
import json
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from heads.array.bootstrap import ROW_ID, row_ids
from pipeline.config import EvalConfig, check_slice_kinds
from pipeline.decode import (Problems, batch_column, epoch_micros, head_arrays, negative_weights,
                             scalar_column, take_rows)
from pipeline.elements import (BadRecordError, BundleStats, HeadArrays, Key, SourceBatch,
                               SubBatch, bad_record_message)
from pipeline.key_blocks import KeyBlock, block_key
from pipeline.keys import SliceKey, group_rows, key_codes
from pipeline.predictions import predictions_table

# A bundle holding more keys than this hands its states on early (bounded memory).
MAX_BUNDLE_KEYS = 20000
# A bundle whose blocks hold more keys than this hands them on early too (a block's memory
# follows its keys and their buckets: ~1M keys is a few hundred MB).
MAX_BLOCK_KEYS = 1_000_000
MISSING_COLUMN = 'column missing from this file'


class BatchOutput(NamedTuple):
    """What one batch gives besides the bundle's states."""
    errors: pa.Table | None       # its rejected rows (dead_letter), `pipeline.schema.ERRORS`
    predictions: pa.Table | None  # its evaluated rows' predictions, when asked for
    # Without the pre-combine: (key, SubBatch) per key and head, computed as it is iterated
    # (iterate it before the next `add`). With it: the states handed on early when the bundle
    # holds more than MAX_BUNDLE_KEYS keys (usually none).
    keyed: Iterator[tuple[Key, Any]]


class BundleOutput(NamedTuple):
    """What a bundle gives when it ends."""
    states: dict[Key, Any]        # one state per key (the Overall keys' derived, when configured)
    stats: BundleStats | None     # None when the bundle read no row


class _Rows(NamedTuple):
    """A batch's rows as the heads and keys take them."""
    batch: pa.RecordBatch
    arrays: list[HeadArrays]
    micros: np.ndarray | None  # event times (µs), with a window
    steps: np.ndarray | None   # step values, with a step column

    def take(self, idx: np.ndarray) -> _Rows:
        return _Rows(self.batch.take(pa.array(idx)), [take_rows(a, idx) for a in self.arrays],
                     self.micros[idx] if self.micros is not None else None,
                     self.steps[idx] if self.steps is not None else None)


def check_bad_records(bad_records: str) -> None:
    """Raises ValueError unless `bad_records` is 'fail' or 'dead_letter'."""
    if bad_records not in ('fail', 'dead_letter'):
        raise ValueError('bad_records must be fail or dead_letter, got %r' % bad_records)


class BatchEvaluator:
    """SourceBatches of one bundle → per-key head states, rejected rows, predictions, stats.

    Args:
      config: the validated config.
      run_id: stamped on error rows.
      bad_records: 'fail' or 'dead_letter'.
      precombine: True (default) keeps one state per key for the bundle and returns them from
        `finish`; False returns a `SubBatch` per key and batch from `add`.
      predictions: True makes `add` return each batch's predictions table.
      derive_overall: with the pre-combine, build the Overall slice's states by merging another
        spec's (see the module docstring); False updates them with every row.
      slice_kinds: (reference file, its slice columns' `config.slice_kind`s): every batch's slice
        columns must hold the same kinds (formats without a footer to check beforehand); a batch
        that does not raises `ConfigError` naming its file and the column.
      blocks: with the pre-combine, the keys of each non-Overall spec of a head that has blocks
        (`EvalConfig.new_block`) are held in one `pipeline.key_blocks.KeyBlock` per (spec, head),
        handed on in shards (`block_key`) instead of one state per key (the Overall slice's
        state of such a head is derived from the donor spec's block, `KeyBlock.merged_states`).
    """

    def __init__(self, config: EvalConfig, run_id: str, bad_records: str = 'fail',
                 precombine: bool = True, predictions: bool = False,
                 derive_overall: bool = True,
                 slice_kinds: tuple[str, Mapping[str, str]] | None = None,
                 blocks: bool = False):
        check_bad_records(bad_records)
        self.config = config
        self.heads = config.build_heads()
        self._row_ids = bool(config.confidence and config.confidence.method == 'bootstrap')
        self._run_id = run_id
        self._bad_records = bad_records
        self._precombine = precombine
        self._predictions = predictions
        self._slice_kinds = slice_kinds
        self._columns = config.columns()
        self._blocked = [precombine and blocks and config.new_block(h) is not None
                         for h in self.heads]
        self._donor = overall_donor(config.slices) if precombine and derive_overall else None
        self.start()

    def start(self) -> None:
        """Starts a bundle: no states, nothing counted."""
        self._states: dict[Key, Any] = {}
        self._blocks: dict[tuple[tuple[str, ...], int], KeyBlock] = {}
        self._rows = 0
        self._bad = 0
        self._unsliced: dict[tuple[str, ...], int] = {}

    def finish(self) -> BundleOutput:
        """Ends the bundle: its states and stats (and starts the next one)."""
        states = self._flush()
        stats = (BundleStats(self._rows, self._bad, tuple(sorted(self._unsliced.items())))
                 if self._rows or self._bad else None)
        self.start()
        return BundleOutput(states, stats)

    # -- per batch ----------------------------------------------------------------------------
    def add(self, sb: SourceBatch) -> BatchOutput:
        """Evaluates one batch into the bundle (see the module docstring).

        Raises:
          BadRecordError: with bad_records='fail', at the first bad row.
          ConfigError: a slice column whose kind differs from the reference file's.
        """
        n = sb.batch.num_rows
        self._rows += n
        if n == 0:
            return BatchOutput(None, None, iter(()))
        missing = [c for c in self._columns if sb.batch.schema.get_field_index(c) < 0]
        if missing:
            return BatchOutput(self._missing_column(sb, missing[0]), None, iter(()))
        if self._slice_kinds is not None:
            reference, kinds = self._slice_kinds
            check_slice_kinds(kinds, sb.batch.schema, self.config.format, sb.path, reference)
        rows, problems = self._decode(sb.batch)
        errors = keep = None
        if problems.items:
            errors, keep = self._reject(sb, problems)
            if keep.size == 0:
                return BatchOutput(errors, None, iter(()))
            rows = rows.take(keep)
        predictions = None
        if self._predictions:
            numbers = (np.arange(rows.batch.num_rows) if keep is None else keep) + sb.first_row
            predictions = predictions_table(self.config, self.heads, rows.batch, rows.arrays,
                                            sb.path, numbers)
        if self._row_ids:  # `method: bootstrap`: each row's identity, for its resampling counts
            numbers = (np.arange(rows.batch.num_rows) if keep is None else keep) + sb.first_row
            ids = row_ids(sb.path, numbers)
            rows = rows._replace(arrays=[a._replace(features=dict(a.features, **{ROW_ID: ids}))
                                         for a in rows.arrays])
        if not self._precombine:
            return BatchOutput(errors, predictions, self._sub_batches(rows))
        for keys, codes, base_rows in key_codes(self.config, rows.batch, rows.micros, rows.steps,
                                                self._donor, self._unsliced):
            split: list = []  # the rows of each code, found once for all heads that need them
            columns = keys[0][0]
            for h, a in enumerate(rows.arrays):
                if columns and self._blocked[h]:
                    self._update_block(columns, h, keys, codes, take_rows(a, base_rows))
                else:
                    self._update_states(h, keys, codes, take_rows(a, base_rows), split)
        full = (len(self._states) > MAX_BUNDLE_KEYS
                or sum(b.n_keys() + len(b.dense) for b in self._blocks.values())
                > MAX_BLOCK_KEYS)
        early = self._flush() if full else {}
        return BatchOutput(errors, predictions, iter(early.items()))

    def _missing_column(self, sb: SourceBatch, column: str) -> pa.Table:
        """A shard without a column the config reads (the first shard's schema was checked): every
        row of it is bad, with that reason; never another column read in its place."""
        n = sb.batch.num_rows
        if self._bad_records == 'fail':
            raise BadRecordError(bad_record_message(sb.path, sb.first_row, column,
                                                    MISSING_COLUMN))
        problems = Problems(n)
        problems.add(column, MISSING_COLUMN, np.ones(n, bool))
        self._bad += n
        return error_rows(self._run_id, sb, problems, np.ones(n, bool))

    def _decode(self, batch: pa.RecordBatch) -> tuple[_Rows, Problems]:
        """Every head's arrays, event times and steps of a batch, and the problems of its rows."""
        config = self.config
        problems = Problems(batch.num_rows)
        arrays = head_arrays(batch, config, self.heads, problems)
        for spec, head, a in zip(config.heads, self.heads, arrays):
            for role, reason, mask in head.invalid_rows(a.labels, a.logits, a.features):
                column = {'logits': ','.join(spec.logits_columns),
                          'baseline_logits': ','.join(spec.baseline_columns),
                          'labels': spec.labels}.get(role, role)
                problems.add(column, reason, mask)
        negative_weights(config, arrays, problems)
        micros = steps = None
        if config.window:
            column = config.window.column
            micros = epoch_micros(batch_column(batch, column), column, problems)
        if config.step_column:
            column = config.step_column
            steps = scalar_column(batch_column(batch, column), column,
                                  problems).astype(np.int64)
        return _Rows(batch, arrays, micros, steps), problems

    def _reject(self, sb: SourceBatch, problems: Problems) -> tuple[pa.Table, np.ndarray]:
        """The error rows of a batch's bad rows and the indices of its good rows; with
        bad_records='fail', BadRecordError naming the first bad row."""
        bad = problems.bad()
        if self._bad_records == 'fail':
            row = int(np.flatnonzero(bad)[0])
            column, reason, _ = problems.items[problems.first_reason()[row]]
            raise BadRecordError(bad_record_message(sb.path, sb.first_row + row, column, reason))
        self._bad += int(bad.sum())
        return error_rows(self._run_id, sb, problems, bad), np.flatnonzero(~bad)

    def _sub_batches(self, rows: _Rows) -> Iterator[tuple[Key, SubBatch]]:
        """(key, SubBatch) per key and head of a batch: its rows of that key."""
        for keys, codes, base_rows in key_codes(self.config, rows.batch, rows.micros, rows.steps,
                                                None, self._unsliced):
            for code, idx in group_rows(codes):
                if base_rows is not None:
                    idx = base_rows if idx is None else base_rows[idx]
                columns, values, w, s = keys[code]
                for h, a in enumerate(rows.arrays):
                    yield Key(columns, values, h, w, s), SubBatch(h, take_rows(a, idx))

    def _update_states(self, h: int, keys: list[SliceKey], codes: np.ndarray, a: HeadArrays,
                       split: list) -> None:
        """Adds row j of head h's arrays to the bundle state of `keys[codes[j]]`: all keys in one
        pass when the head's state has a grouped update, else per key on its own rows (`split`:
        the (code, rows) pairs of `codes`, filled by the first head that needs them)."""
        states = []
        for columns, values, w, s in keys:
            full_key = Key(columns, values, h, w, s)
            state = self._states.get(full_key)
            if state is None:
                state = self._states[full_key] = self.config.new_state(self.heads[h])
            states.append(state)
        features = a.features or None
        grouped = getattr(type(states[0]), 'update_groups', None)  # optional in the interface
        if grouped is not None and grouped(states, codes, a.labels, a.logits, features):
            return
        if not split:
            split.extend(group_rows(codes))
        for code, idx in split:
            sub = take_rows(a, idx)
            states[code].update(sub.labels, sub.logits, sub.features or None)

    def _update_block(self, columns: tuple[str, ...], h: int, keys: list[SliceKey],
                      codes: np.ndarray, a: HeadArrays) -> None:
        """Adds row j of head h's arrays to `keys[codes[j]]` in the bundle's block of (columns,
        h)."""
        block = self._blocks.get((columns, h))
        if block is None:
            block = self._blocks[(columns, h)] = KeyBlock(
                columns, h, self.config.new_block(self.heads[h]),
                functools.partial(self.config.new_state, self.heads[h]))
        block.add(keys, codes, a)

    def _flush(self) -> dict[Any, Any]:
        """The bundle's states so far (the Overall keys' completed) and its blocks in shards
        (keyed `block_key`), handed over: none kept."""
        states, self._states = self._states, {}
        blocks, self._blocks = self._blocks, {}
        if self._donor is not None:
            for (columns, h), block in blocks.items():
                if columns == self._donor:  # a blocked head's Overall: its donor block merged
                    for key, state in block.merged_states():
                        own = states.get(key)
                        states[key] = state if own is None else state.merge(own)
            states = derive_overall_states(states, self._donor, self.heads)
        for columns, h in list(blocks):
            block = blocks.pop((columns, h))  # dropped once in shards (their memory, not twice)
            for shard, part in block.shards():
                states[block_key(columns, h, shard)] = part
            del block
        return states


# -------------------------------------------------------------------------------------------------
# Rejected rows; the Overall slice's states.
# -------------------------------------------------------------------------------------------------

def _json_default(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return v.decode('utf-8', 'replace')
    return str(v)


def error_rows(run_id: str, sb: SourceBatch, problems: Problems, bad: np.ndarray) -> pa.Table:
    """The `bad` rows of a batch as `pipeline.schema.ERRORS` rows: file, row, the first problem's
    column and reason, and the row's values as JSON."""
    from pipeline.schema import ERRORS
    rows = np.flatnonzero(bad)
    which = problems.first_reason()[rows]
    values = sb.batch.take(pa.array(rows)).to_pylist()
    return pa.Table.from_pydict({
        'run_id': [run_id] * rows.size,
        'file': [sb.path] * rows.size,
        'row': (rows + sb.first_row).astype(np.int64),
        'column': [problems.items[k][0] for k in which],
        'reason': [problems.items[k][1] for k in which],
        'values': [json.dumps(v, default=_json_default) for v in values],
    }, schema=ERRORS)


def overall_donor(slices: Sequence[tuple[str, ...]]) -> tuple[str, ...] | None:
    """The spec whose states the Overall slice's are merged from: the configured spec with the
    fewest columns (first in config order), or None when Overall is not configured or alone."""
    if () not in slices:
        return None
    others = [s for s in slices if s]
    return min(others, key=len) if others else None


def derive_overall_states(states: dict[Key, Any], donor: tuple[str, ...],
                          heads: Sequence[Any]) -> dict[Key, Any]:
    """`states` with each Overall key's state completed: per (head, window, step), a copy of the
    first `donor` key's state merged with every other donor key's state and the Overall key's own
    state (its rows with a null donor value), if any. Donor states are left unchanged. (`heads`:
    the config's heads, unused since the copy has the donors' kind.)"""
    derived: dict[Key, Any] = {}
    for key, state in states.items():
        if tuple(key.slice_columns) == donor:
            overall = Key((), (), key.head, key.window_start, key.step)
            acc = derived.get(overall)
            # A copy of the first donor state (of the same kind: with interval sums or not).
            derived[overall] = copy.deepcopy(state) if acc is None else acc.merge(state)
    out = dict(states)
    for key, acc in derived.items():
        own = out.get(key)
        out[key] = acc if own is None else acc.merge(own)
    return out
