"""The report's data: the run's tables read back (`read_tables`), their rows grouped by
evaluation (window, step) and by curve, and the slices ranked worst first.
"""
from __future__ import annotations

import datetime
import re
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import fileio, schema
from pipeline.report.labels import finite

# A curve of more points than this is thinned (evenly, ends kept): TFMA-sized histograms of
# 10 000 thresholds would otherwise make a 50-slice page weigh tens of megabytes.
MAX_CURVE_POINTS = 1000
# Metrics whose smaller values are better; every other metric is taken as larger-is-better when
# ordering slices worst first.
_LOWER_IS_BETTER = re.compile(r'(^|/)(loss|average_loss|mean_squared_error|'
                              r'mean_absolute_error|root_mean_squared_error)(/|$)')
# Head thresholds as tf.estimator spells them in metric keys ('accuracy/positive_threshold_0.5').
_THRESHOLD_KEY = re.compile(r'_threshold_([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$')
# The columns the page needs of each table.
REQUIRED = {'metrics': ('slice', 'head', 'metric', 'value'),
            'plots': ('slice', 'head', 'sub_key', 'curve')}


# ----------------------------------------------------------------------------------------------
# Reading the outputs


def read_tables(output_dir: str, kind: str, slices: set[str] | None = None,
                columns: Sequence[str] | None = None) -> pa.Table | None:
    """All `<kind>/*.parquet` files under `output_dir` as one table; None when there are none.
    With `slices`, only the rows of those slices are kept (file by file, so a large table is
    never held whole); with `columns`, only those of them a file has (and the required ones).

    Raises:
      ValueError: a file cannot be read, or lacks a column the page needs (naming file and
        column).
    """
    from apache_beam.io.filesystem import BeamIOError
    from apache_beam.io.filesystems import FileSystems
    pattern = fileio.join(output_dir, '%s/*.parquet' % kind)
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except BeamIOError as e:
        # Listing failed (a missing bucket, no permission): say so rather than "no files".
        raise FileNotFoundError('headstream report: cannot list %s: %s' % (pattern, e)) from e
    paths = sorted(m.path for m in matches)
    if not paths:
        return None
    tables = []
    for path in paths:
        try:
            # One file's whole table: ParquetFile reads it as read_table would, without
            # importing pyarrow.dataset (which read_table needs for directories; ~10 ms).
            parquet = pq.ParquetFile(pa.BufferReader(fileio.read_bytes(path)))
            wanted = None if columns is None else [
                c for c in parquet.schema_arrow.names if c in set(columns) | set(REQUIRED[kind])]
            if wanted is not None:
                tables.append(parquet.read(columns=wanted))
            elif slices is None:
                tables.append(parquet.read())
            else:  # row group by row group, keeping the wanted slices' rows only
                tables.append(_read_slices(parquet, slices))
        except Exception as e:
            raise ValueError('headstream report: cannot read %s: %s' % (path, e)) from e
        missing = [c for c in REQUIRED[kind] if c not in tables[-1].column_names]
        if missing:
            raise ValueError('headstream report: %s lacks column(s) %s (the %s table\'s '
                             'layout is in pipeline/schema.py)'
                             % (path, ', '.join(missing), kind))
    # Files of one run share a schema; files of different runs may differ in the optional
    # window/step columns, which promotion fills with nulls.
    return pa.concat_tables(tables, promote_options='default')


# Text columns read as dictionaries by `TableFiles` (an int32 index a row instead of a string).
TEXT_COLUMNS = ('run_id', 'slice', 'slice_columns', 'slice_values', 'head', 'metric', 'model',
                'sub_key', 'curve')


class TableFiles:
    """A kind's Parquet files under an output directory, read a few columns or a few rows at a
    time (a run with 10^6 slices has 10^7 metrics rows): `columns` reads whole columns, text as
    dictionaries; `rows` reads the rows of a mask, row group by row group, as the files hold
    them. Rows are numbered across the files in their sorted order."""

    def __init__(self, output_dir: str, kind: str) -> None:
        self.kind = kind
        self.paths = _paths(output_dir, kind)
        self._files: list[tuple[pq.ParquetFile, pq.ParquetFile]] = []
        for path in self.paths:
            try:
                # A local file is read where it lies (no copy of it in memory).
                source = path if '://' not in path else pa.BufferReader(fileio.read_bytes(path))
                plain = pq.ParquetFile(source)
                text = [c for c in plain.schema_arrow.names if c in TEXT_COLUMNS]
                coded = pq.ParquetFile(source, read_dictionary=text)
            except Exception as e:
                raise ValueError('headstream report: cannot read %s: %s' % (path, e)) from e
            self._files.append((plain, coded))
        # every column any file has, in first-file order
        self.column_names = list(dict.fromkeys(
            c for plain, _ in self._files for c in plain.schema_arrow.names))

    def __bool__(self) -> bool:
        return bool(self.paths)

    def columns(self, columns: Sequence[str]) -> pa.Table:
        """The `columns` the files have, text as one dictionary column each (the files' rows in
        order), read column by column and row group by row group: a whole file's text decoded
        at once would take gigabytes at 10^7 rows before its dictionaries are made.

        Raises:
          ValueError: a file cannot be read or lacks a column the page needs.
        """
        present = []
        for path, (plain, _) in zip(self.paths, self._files):
            names = plain.schema_arrow.names
            _check_required(names, path, self.kind)
            present.append(set(names))
        wanted = [c for c in self.column_names if c in set(columns)]
        out = {}
        for column in wanted:
            chunks = []
            for path, (plain, coded), names in zip(self.paths, self._files, present):
                n = plain.metadata.num_rows
                if column not in names:  # another run's file: nulls, as promotion makes them
                    chunks.append(pa.nulls(n, pa.dictionary(pa.int32(), pa.string())))
                    continue
                try:
                    chunks += [coded.read_row_group(g, columns=[column]).column(0)
                               for g in range(coded.num_row_groups)]
                except Exception as e:
                    raise ValueError('headstream report: cannot read %s: %s' % (path, e)) from e
            out[column] = one_dictionary(chunks)
        return pa.table(out)

    def rows(self, mask: np.ndarray | None, columns: Sequence[str] | None = None,
             plain: bool = True) -> pa.Table:
        """The rows where `mask` (over every file's rows; None: all) of `columns` (None: all),
        read row group by row group (groups without such a row are not read); text as the files
        hold it with `plain`, else as dictionaries."""
        tables, start = [], 0
        for path, (plain_file, parquet) in zip(self.paths, self._files):
            # Read with text as dictionaries (less to decode), the kept rows cast back.
            names = None if columns is None else [c for c in parquet.schema_arrow.names
                                                  if c in set(columns)]
            target = plain_file.schema_arrow if names is None else pa.schema(
                [plain_file.schema_arrow.field(c) for c in names])
            try:
                if mask is None:
                    tables.append(plain_file.read(columns=names) if plain
                                  else parquet.read(columns=names))
                    start += parquet.metadata.num_rows
                    continue
                parts = []
                for g in range(parquet.num_row_groups):
                    n = parquet.metadata.row_group(g).num_rows
                    keep = mask[start:start + n]
                    start += n
                    if keep.any():
                        part = parquet.read_row_group(g, columns=names)
                        parts.append(part if keep.all() else part.filter(pa.array(keep)))
                table = (pa.concat_tables(parts).unify_dictionaries() if parts else
                         pa.schema([parquet.schema_arrow.field(c) for c in (
                             names or parquet.schema_arrow.names)]).empty_table())
                tables.append(table.cast(target) if plain else table)
            except Exception as e:
                raise ValueError('headstream report: cannot read %s: %s' % (path, e)) from e
            if columns is None:
                _check_required(tables[-1].column_names, path, self.kind)
        return pa.concat_tables(tables, promote_options='default')


def one_dictionary(chunks: list[pa.ChunkedArray | pa.Array]) -> pa.Array:
    """Dictionary chunks (each its own dictionary) as one dictionary array of their distinct
    values: each chunk's indices mapped with numpy into one array of the smallest int type. A column that is not
    text is concatenated as it is."""
    arrays = [a for c in chunks for a in (c.chunks if isinstance(c, pa.ChunkedArray) else [c])]
    if not arrays:
        return pa.array([], pa.dictionary(pa.int32(), pa.string()))
    if not all(pa.types.is_dictionary(a.type) for a in arrays):
        return pa.concat_arrays([a.cast(arrays[0].type) for a in arrays])
    merged = pa.concat_arrays([a.dictionary for a in arrays]).dictionary_encode()
    m = len(merged.dictionary)
    mapping = np.append(merged.indices.fill_null(m).to_numpy(zero_copy_only=False), m)
    # the smallest index type (a spec, head, metric or model column has few values)
    kind = next(t for t in (np.int8, np.int16, np.int32) if m < np.iinfo(t).max)
    codes = np.empty(sum(len(a) for a in arrays), kind)
    at = offset = 0
    for a in arrays:
        index = a.indices.fill_null(len(a.dictionary)) if a.indices.null_count else a.indices
        # (a null index points past its chunk's entries: the mapping's next chunk or m)
        local = index.to_numpy(zero_copy_only=False).astype(np.int64)
        mapped = mapping[offset + local] if len(a.dictionary) else np.full(len(a), m)
        if a.indices.null_count:
            mapped = np.where(local == len(a.dictionary), m, mapped)
        codes[at:at + len(a)] = mapped
        at += len(a)
        offset += len(a.dictionary)
    null = codes == m
    return pa.DictionaryArray.from_arrays(
        pa.array(codes, mask=null if null.any() else None), merged.dictionary)


def _check_required(names: Sequence[str], path: str, kind: str) -> None:
    """Refuses a file whose columns `names` lack one the page needs."""
    missing = [c for c in REQUIRED[kind] if c not in names]
    if missing:
        raise ValueError('headstream report: %s lacks column(s) %s (the %s table\'s '
                         'layout is in pipeline/schema.py)' % (path, ', '.join(missing), kind))


def _paths(output_dir: str, kind: str) -> list[str]:
    """The sorted paths of `<kind>/*.parquet` under `output_dir`."""
    from apache_beam.io.filesystem import BeamIOError
    from apache_beam.io.filesystems import FileSystems
    pattern = fileio.join(output_dir, '%s/*.parquet' % kind)
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except BeamIOError as e:
        # Listing failed (a missing bucket, no permission): say so rather than "no files".
        raise FileNotFoundError('headstream report: cannot list %s: %s' % (pattern, e)) from e
    return sorted(m.path for m in matches)


def _read_slices(parquet: pq.ParquetFile, slices: set[str]) -> pa.Table:
    """The rows of `slices` in a Parquet file, read one row group at a time."""
    import pyarrow.compute as pc
    wanted = pa.array(sorted(slices), pa.string())
    if 'slice' not in parquet.schema_arrow.names:
        return parquet.read()  # the missing column is reported by the caller
    parts = [t.filter(pc.is_in(t['slice'], value_set=wanted))
             for t in (parquet.read_row_group(i) for i in range(parquet.num_row_groups))]
    return pa.concat_tables(parts) if parts else parquet.schema_arrow.empty_table()


def require(table: pa.Table, columns: Iterable[str], what: str) -> None:
    """Refuses a table without the `columns` the page needs (naming them and `what`)."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError('headstream report: the %s lacks column(s) %s (its layout is in '
                         'pipeline/schema.py)' % (what, ', '.join(missing)))


def table_rows(table: pa.Table | None) -> list[dict[str, Any]]:
    return [] if table is None else table.to_pylist()


# ----------------------------------------------------------------------------------------------
# Ranking


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is better (losses and errors)."""
    return bool(_LOWER_IS_BETTER.search(metric))


def head_thresholds(metric_keys: Iterable[str]) -> list[float]:
    """The classification thresholds named in a head's metric keys, ascending."""
    found = set()
    for key in metric_keys:
        m = _THRESHOLD_KEY.search(key)
        if m:
            found.add(float(m.group(1)))
    return sorted(found)


def not_ranked_reason(row: dict | None) -> str | None:
    """Why a metrics-table row's value says nothing about its slice (it is a 0/0 the head reports
    as tf.estimator does, 0), or None: the slice has no weight (`weighted_example_count` 0), or it
    is an auc row of 0 without bounds (its exact AUC is undefined: one class only; a table
    written by other means may have no bounds at all, and its auc rows are ranked)."""
    if row is None:
        return None
    if row.get('weighted_example_count') == 0:
        return 'no weight'
    if (row['metric'].split('/')[0] == 'auc' and row.get('lower_bound') is None
            and row.get('value') == 0):
        return 'auc undefined: one class only'
    return None


def rank_slices(slices: Sequence[str], cell: dict[tuple[str, str], dict], metric: str
                ) -> tuple[list[str], list[tuple[str, str]]]:
    """The slices other than Overall ranked worst first by `metric` (slices without a finite
    value last), and the (slice, reason) of those left out of the ranking: their value is a 0/0
    (`not_ranked_reason`) and would otherwise pass for the worst."""
    worse_high = lower_is_better(metric)
    ranked, left_out = [], []
    for s in slices:
        if s == schema.OVERALL:
            continue
        reason = not_ranked_reason(cell.get((s, metric)))
        if reason is None:
            ranked.append(s)
        else:
            left_out.append((s, reason))

    def key(s: str) -> tuple:
        v = cell.get((s, metric), {}).get('value')
        if not finite(v):
            return (1, 0.0, s)
        return (0, -v if worse_high else v, s)
    return sorted(ranked, key=key), left_out


# ----------------------------------------------------------------------------------------------
# Evaluations and curves


def period(row: dict) -> tuple:
    return (row.get('window_start'), row.get('step'))


def period_sort_key(period: tuple) -> tuple:
    window, step = period
    earliest = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    return (window is not None, window or earliest, step is not None, step or 0)


def time_axis_of(rows: list[dict]) -> str | None:
    if any(r.get('window_start') is not None for r in rows):
        return 'window_start'
    if len({r.get('step') for r in rows if r.get('step') is not None}) > 1:
        return 'step'
    return None


def thin(n: int, limit: int = MAX_CURVE_POINTS) -> list[int]:
    """Indices of at most `limit` of `n` points, evenly spread, first and last kept."""
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def curves_by_sub_key(rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """Plot rows → {sub_key: {'confusion': rows by threshold, 'calibration': rows by bucket}}."""
    out: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        out.setdefault(r.get('sub_key') or '', {}).setdefault(r.get('curve') or '', []).append(r)
    for by_curve in out.values():
        if 'confusion' in by_curve:
            by_curve['confusion'].sort(key=lambda r: (r.get('threshold') is None,
                                                      r.get('threshold') or 0.0))
        if 'calibration' in by_curve:
            by_curve['calibration'].sort(key=lambda r: (r.get('bucket_lower') is None,
                                                        r.get('bucket_lower') or 0.0))
    return out


def curve_points(rows: list[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    """The (x, y) columns of confusion rows with both values finite, thinned to
    MAX_CURVE_POINTS."""
    pts = [(r[x], r[y]) for r in rows if finite(r.get(x)) and finite(r.get(y))]
    keep = thin(len(pts))
    return [pts[i][0] for i in keep], [pts[i][1] for i in keep]


def calibration_points(rows: list[dict]) -> tuple[list[float], list[float]]:
    """(mean prediction, mean label) of every calibration bucket with positive weight."""
    xs, ys = [], []
    for r in rows:
        w = r.get('weighted_examples')
        if not finite(w) or w <= 0:
            continue  # an empty bucket has no mean
        p, lab = r.get('weighted_predictions'), r.get('weighted_labels')
        if finite(p) and finite(lab):
            xs.append(p / w)
            ys.append(lab / w)
    keep = thin(len(xs))
    return [xs[i] for i in keep], [ys[i] for i in keep]


def confusion_at(rows: list[dict], threshold: float) -> dict | None:
    """The confusion row at `threshold`, else the nearest one (marked `nearest`)."""
    candidates = [r for r in rows if finite(r.get('threshold'))]
    if not candidates:
        return None
    best = min(candidates, key=lambda r: abs(r['threshold'] - threshold))
    out = dict(best)
    out['wanted'] = threshold
    out['nearest'] = abs(best['threshold'] - threshold) > 1e-9
    return out
