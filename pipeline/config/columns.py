"""The config's columns against the data: `check_columns` checks every column a validated config
names against the first input file's Arrow schema (present, with a usable type), and
`slice_kinds` / `check_slice_kinds` keep each slice column's kind of value (numbers, text,
booleans) the same in every other file or batch.
"""
from __future__ import annotations

from typing import Mapping

import pyarrow as pa

from pipeline.config.spec import ConfigError, EvalConfig, HeadSpec
from pipeline.elements import is_list as _is_list  # one list-type test, shared with the decoder


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_numeric(t: pa.DataType) -> bool:
    t = _value_type(t)
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _is_text(t: pa.DataType) -> bool:
    t = _value_type(t)
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_string_view(t))


def _scalar(t: pa.DataType, fmt: str) -> pa.DataType | None:
    """The per-row value type of a column used as a scalar (TFRecord features are lists of one)."""
    if _is_list(t):
        return _value_type(t.value_type) if fmt == 'tfrecord' else None
    return _value_type(t)


_REGRESSION_TYPES = ('RegressionHead', 'PoissonRegressionHead', 'LogisticRegressionHead')


def _label_dimension(spec: HeadSpec) -> int:
    """A regression head's label_dimension from its args (the heads' default, 1, when absent)."""
    value = spec.args.get('label_dimension', 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def check_columns(config: EvalConfig, schema: pa.Schema, source: str = '') -> None:
    """Checks that every column the config names exists in `schema` with a usable type.

    Args:
      config: the validated config.
      schema: the Arrow schema of the first input file (as the sources read it).
      source: the file the schema came from, for the message.

    Raises:
      ConfigError: naming the key and column.
    """
    cols = _Columns(schema, source)
    fmt = config.format
    for i, spec in enumerate(config.heads):
        key = 'heads[%d]' % i
        _check_logits(cols, spec.logits_columns, key + '.logits', fmt)
        if spec.baseline_columns:
            _check_logits(cols, spec.baseline_columns, key + '.baseline_logits', fmt)
        _check_labels(cols, spec, key, fmt)
        if spec.weight_column:
            t = cols.field(spec.weight_column, key + '.args.weight_column')
            st = _scalar(t, fmt)
            if st is None or not _is_numeric(st):
                raise cols.mistyped(key + '.args.weight_column', spec.weight_column, t,
                                    'a number per row')
    for i, s in enumerate(config.slices):
        for col in s:
            t = cols.field(col, 'slices[%d]' % i)
            st = _scalar(t, fmt)
            if st is None or not (_is_numeric(st) or _is_text(st)):
                raise cols.mistyped('slices[%d]' % i, col, t,
                                    'a string, integer or boolean per row')
    if config.window:
        col = config.window.column
        t = cols.field(col, 'window.column')
        st = _scalar(t, fmt)
        if st is None or not (pa.types.is_timestamp(st) or pa.types.is_date(st)
                              or pa.types.is_integer(st) or pa.types.is_floating(st)):
            raise cols.mistyped('window.column', col, t, 'a timestamp or epoch seconds per row')
    if config.step_column:
        col = config.step_column
        t = cols.field(col, 'tensorboard.step')
        st = _scalar(t, fmt)
        if st is None or not pa.types.is_integer(st):
            raise cols.mistyped('tensorboard.step', col, t, 'an integer per row')


class _Columns:
    """The schema under check, and the errors naming its columns and file."""

    def __init__(self, schema: pa.Schema, source: str) -> None:
        self.schema = schema
        self.where = ' in %s' % source if source else ''

    def field(self, col: str, key: str) -> pa.DataType:
        """The type of column `col` (named by config key `key`), which must exist."""
        if col not in self.schema.names:
            raise ConfigError('%s: column %r not found%s (columns: %s)' % (
                key, col, self.where, ', '.join(self.schema.names)))
        return self.schema.field(col).type

    def mistyped(self, key: str, col: str, t: pa.DataType, expected: str) -> ConfigError:
        return ConfigError('%s: column %r has type %s%s; expected %s' % (
            key, col, t, self.where, expected))


def _check_logits(cols: _Columns, names: tuple[str, ...], key: str, fmt: str) -> None:
    """Several logits columns hold a number each; one holds a number or a list of numbers (in
    CSV, a JSON list string). `key`: the config key naming them."""
    for col in names:
        t = cols.field(col, key)
        ok = _is_numeric(t) if len(names) > 1 else (
            _is_numeric(t) or (_is_list(t) and _is_numeric(t.value_type))
            or (fmt == 'csv' and _is_text(t)))
        if not ok:
            raise cols.mistyped(key, col, t,
                                'numbers' if len(names) > 1 else
                                'a number or a list of numbers per row'
                                + (' (in CSV: a JSON list string)' if fmt == 'csv' else ''))


def _check_labels(cols: _Columns, spec: HeadSpec, key: str, fmt: str) -> None:
    """A multi-label head's labels are a list per row; a regression head's may be a vector; any
    other head's are a number per row, or a string with a label vocabulary."""
    t = cols.field(spec.labels, key + '.labels')
    vocab = spec.args.get('label_vocabulary')
    if spec.type == 'MultiLabelHead':
        element_ok = (_is_list(t) and (_is_numeric(t.value_type) or _is_text(t.value_type))
                      or (fmt == 'csv' and _is_text(t)))
        if not element_ok:
            raise cols.mistyped(key + '.labels', spec.labels, t,
                                'a list per row (multi-hot numbers, or class ids/names)')
        return
    st = _scalar(t, fmt)
    regression = spec.type in _REGRESSION_TYPES
    is_reg_list = regression and _is_list(t) and _is_numeric(t.value_type)
    # A regression head with label_dimension > 1 has a vector label per row; CSV holds
    # it as a JSON list string, as it holds a logits vector.
    is_csv_vector = (regression and fmt == 'csv' and _is_text(t)
                     and _label_dimension(spec) > 1)
    if is_reg_list or is_csv_vector:
        pass
    elif st is not None and _is_text(st):
        if vocab is None:
            raise cols.mistyped(key + '.labels', spec.labels, t,
                                'numbers (string labels need args.label_vocabulary)')
    elif st is None or not _is_numeric(st):
        raise cols.mistyped(key + '.labels', spec.labels, t,
                            'a number per row' + (' or a vocabulary string' if vocab else ''))


def slice_kind(t: pa.DataType, fmt: str) -> str | None:
    """How a slice column's values compare: 'numbers' (integers, floats: 0 and 0.0 are one slice
    value), 'booleans', 'text', or None for a type that holds no value to compare (all null)."""
    st = _scalar(t, fmt)
    if st is None or pa.types.is_null(st):
        return None
    if pa.types.is_boolean(st):
        return 'booleans'
    return 'numbers' if _is_numeric(st) else 'text' if _is_text(st) else str(st)


def slice_kinds(config: EvalConfig, schema: pa.Schema) -> dict[str, str]:
    """Every configured slice column's `slice_kind` in `schema` (a checked schema: the first
    input file's), columns holding no value left out."""
    kinds = {}
    for col in sorted({c for s in config.slices for c in s}):
        kind = slice_kind(schema.field(col).type, config.format)
        if kind is not None:
            kinds[col] = kind
    return kinds


def check_slice_kinds(kinds: Mapping[str, str], schema: pa.Schema, fmt: str, source: str,
                      reference: str) -> None:
    """Checks that the slice columns of another file's `schema` (or a batch's) hold the same kind
    of value as in the reference file: a column of numbers in one file and text in another has no
    one spelling of its slices.

    Raises:
      ConfigError: naming the file and column.
    """
    for col, kind in kinds.items():
        i = schema.get_field_index(col)
        other = slice_kind(schema.field(i).type, fmt) if i >= 0 else None
        if other is not None and other != kind:
            raise ConfigError('slices: column %r holds %s in %s but %s (%s) in %s; give it one '
                              'type in every file' % (col, kind, reference, other,
                                                      schema.field(i).type, source))
