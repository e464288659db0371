"""The evaluation config: parsing, validation and the head objects it describes.

A config is YAML (JSON is accepted as YAML), given as a local or gs:// path or as inline JSON (a
Dataflow Flex Template passes it so). Everything that can be checked before reading data is checked
here, and every error is a `ConfigError` whose message names the offending key or column:

    input:  {pattern: data/part-*.parquet, format: parquet}   # format defaults from the extension
    heads:
      - type: BinaryClassHead
        args: {name: click, weight_column: w, thresholds: [0.5]}
        logits: click_logit            # a column (number or list of numbers), or a list of columns
        labels: click_label
        label_format: multi_hot        # MultiLabelHead only: multi_hot (default) | ids
    head_weights: [1.0, 2.0]          # optional; with several heads their MultiHead loss is written
    slices: [[], [country], [country, device]]
    window: {column: ts, size: 60, period: 30}
    tensorboard: {dir: tb, step: global_step}
    output: out/run1

`check_columns` then checks the columns against the first input file's Arrow schema, and
`check_slice_kinds` another file's (or batch's) slice columns against the first file's kinds
(numbers, text, booleans).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Mapping, Sequence

import pyarrow as pa

from pipeline.elements import is_list as _is_list

FORMATS = ('parquet', 'tfrecord', 'csv', 'jsonl')
LABEL_FORMATS = ('multi_hot', 'ids')
_EXTENSIONS = {
    '.parquet': 'parquet', '.pq': 'parquet',
    '.tfrecord': 'tfrecord', '.tfrecords': 'tfrecord', '.tfr': 'tfrecord',
    '.csv': 'csv',
    '.jsonl': 'jsonl', '.ndjson': 'jsonl', '.json': 'jsonl',
}
_TOP_KEYS = ('input', 'heads', 'head_weights', 'slices', 'window', 'tensorboard', 'output')
_INPUT_KEYS = ('pattern', 'format')
_HEAD_KEYS = ('type', 'args', 'logits', 'labels', 'label_format')
_WINDOW_KEYS = ('column', 'size', 'period', 'allowed_lateness', 'early_firing')
_TENSORBOARD_KEYS = ('dir', 'step')
# Heads a config may name: every concrete single head (MultiHead is built from `head_weights`).
_HEAD_TYPES = ('BinaryClassHead', 'MultiClassHead', 'MultiLabelHead', 'RegressionHead',
               'LogisticRegressionHead', 'PoissonRegressionHead')
_DURATION = re.compile(r'^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$')
_DURATION_UNITS = {None: 1.0, 'ms': 1e-3, 's': 1.0, 'm': 60.0, 'h': 3600.0, 'd': 86400.0}


class ConfigError(ValueError):
    """An invalid config; the message names the key or column at fault."""


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One entry of `heads:`.

    Attributes:
      type: head class name in `heads` (e.g. 'BinaryClassHead').
      args: the head's constructor kwargs.
      logits: the logits column, or several numeric columns concatenated in order.
      labels: the labels column.
      label_format: for MultiLabelHead: 'multi_hot' (a list of n_classes numbers per row) or 'ids'
        (a list of class ids or names per row).
    """
    type: str
    args: Mapping[str, Any]
    logits: str | tuple[str, ...]
    labels: str
    label_format: str = 'multi_hot'

    @property
    def logits_columns(self) -> tuple[str, ...]:
        return (self.logits,) if isinstance(self.logits, str) else tuple(self.logits)

    @property
    def weight_column(self) -> str | None:
        return self.args.get('weight_column')

    def build(self):
        """Returns the head object (raises the head's own ValueError on bad args)."""
        import heads
        return getattr(heads, self.type)(**dict(self.args))


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """Event-time windows, in seconds: fixed [start, start + size) aligned to the Unix epoch, or
    sliding every `period`. `allowed_lateness` and `early_firing` matter to streaming runs only."""
    column: str
    size: float
    period: float | None = None
    allowed_lateness: float = 0.0
    early_firing: float | None = None


@dataclasses.dataclass(frozen=True)
class TensorBoardSpec:
    """TensorBoard output: `dir` (default `<output>/tensorboard`) and the step (an int, or a column
    whose distinct values are evaluated separately)."""
    dir: str | None = None
    step: int | str = 0

    @property
    def step_column(self) -> str | None:
        return self.step if isinstance(self.step, str) else None


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """A validated evaluation config (see the module docstring)."""
    pattern: str
    format: str
    heads: tuple[HeadSpec, ...]
    slices: tuple[tuple[str, ...], ...] = ((),)
    head_weights: tuple[float, ...] | None = None
    window: WindowSpec | None = None
    tensorboard: TensorBoardSpec | None = None
    output: str | None = None

    def build_heads(self) -> list:
        """The configured heads, in config order."""
        return [spec.build() for spec in self.heads]

    def build_multi_head(self, built: Sequence[Any] | None = None):
        """The heads' MultiHead (several heads only), else None."""
        if len(self.heads) < 2:
            return None
        import heads
        return heads.MultiHead(list(built if built is not None else self.build_heads()),
                               head_weights=list(self.head_weights) if self.head_weights else None)

    @property
    def head_names(self) -> list[str]:
        """The names written in the tables' `head` column ('' for an unnamed single head)."""
        return [spec.args.get('name') or '' for spec in self.heads]

    @property
    def multi_head_name(self) -> str | None:
        return '_'.join(self.head_names) if len(self.heads) > 1 else None

    @property
    def step_column(self) -> str | None:
        return self.tensorboard.step_column if self.tensorboard else None

    @property
    def stepped(self) -> bool:
        return self.tensorboard is not None

    @property
    def windowed(self) -> bool:
        return self.window is not None

    def columns(self) -> list[str]:
        """Every input column the evaluation reads, in a stable order."""
        cols: list[str] = []
        for spec in self.heads:
            cols += list(spec.logits_columns) + [spec.labels]
            if spec.weight_column:
                cols.append(spec.weight_column)
        for s in self.slices:
            cols += list(s)
        if self.window:
            cols.append(self.window.column)
        if self.step_column:
            cols.append(self.step_column)
        return list(dict.fromkeys(cols))

    def with_output(self, output: str | None) -> 'EvalConfig':
        return dataclasses.replace(self, output=output) if output else self

    def to_dict(self) -> dict:
        """The config as plain data (the input to `parse_config`)."""
        out: dict[str, Any] = {
            'input': {'pattern': self.pattern, 'format': self.format},
            'heads': [{'type': h.type, 'args': dict(h.args),
                       'logits': h.logits if isinstance(h.logits, str) else list(h.logits),
                       'labels': h.labels, 'label_format': h.label_format} for h in self.heads],
            'slices': [list(s) for s in self.slices],
        }
        if self.head_weights is not None:
            out['head_weights'] = list(self.head_weights)
        if self.window:
            out['window'] = dataclasses.asdict(self.window)
        if self.tensorboard:
            out['tensorboard'] = dataclasses.asdict(self.tensorboard)
        if self.output:
            out['output'] = self.output
        return out


# -------------------------------------------------------------------------------------------------
# Loading and parsing.
# -------------------------------------------------------------------------------------------------

# A run id names the run's staging and backup directories under the output directory, so it must
# be one safe path component: letters, digits, `_ . : -`, at most 128, not starting with a dot
# (no '.', '..', nor a hidden name like our own `.staging-*`). The Flex Template's `run_id`
# parameter (templates/flex/metadata.json) carries the same regex; a test keeps them equal.
RUN_ID_PATTERN = r'^[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,127}$'
_RUN_ID = re.compile(RUN_ID_PATTERN)


def check_run_id(run_id: str) -> str:
    """Returns `run_id` when it is a valid run id (`RUN_ID_PATTERN`).

    Raises:
      ConfigError: naming the run id and the rule.
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ConfigError('--run_id: %r is not a run id (letters, digits and _ . : - only, at '
                          'most 128, not starting with a dot)' % (run_id,))
    return run_id


def load_config(source: str | Mapping[str, Any], output: str | None = None) -> EvalConfig:
    """Reads a config from a path (local or gs://), inline JSON/YAML text, or a dict.

    Args:
      source: the config.
      output: overrides the config's `output`.

    Raises:
      ConfigError: the config is unreadable or invalid; the message names the key at fault.
    """
    if isinstance(source, Mapping):
        raw = source
    else:
        text = source.strip()
        if text.startswith('{') or '\n' in text:
            content = text
            where = 'the inline config'
        else:
            content = _read_text(text)
            where = text
        import yaml
        try:
            raw = yaml.safe_load(content)
        except yaml.YAMLError as e:
            raise ConfigError('config: %s is not valid YAML/JSON: %s' % (where, e)) from None
    config = parse_config(raw)
    if output:
        config = config.with_output(output)
    if not config.output:
        raise ConfigError('output: missing; set `output:` in the config or pass --output')
    return config


def _read_text(path: str) -> str:
    from apache_beam.io.filesystems import FileSystems
    try:
        with FileSystems.open(path) as f:
            return f.read().decode('utf-8')
    except Exception as e:  # noqa: BLE001 -- any read failure is the same user error
        raise ConfigError('config: cannot read %s: %s' % (path, e)) from None


def _check_keys(obj: Any, allowed: Sequence[str], where: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ConfigError('%s: expected a mapping, got %s' % (where, _typename(obj)))
    for key in obj:
        if key not in allowed:
            raise ConfigError('%s: unknown key %r (allowed: %s)' % (
                where + '.' + str(key) if where != 'config' else str(key), key,
                ', '.join(allowed)))
    return obj


def _typename(value: Any) -> str:
    return 'null' if value is None else type(value).__name__


def _number(value: Any, where: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError('%s: expected a number of seconds, got %r' % (where, value))
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ConfigError('%s: expected a number of seconds or a duration such as "5m", got %r'
                              % (where, value))
        value = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    value = float(value)
    if positive and not value > 0:
        raise ConfigError('%s: must be > 0, got %r' % (where, value))
    if value < 0:
        raise ConfigError('%s: must be >= 0, got %r' % (where, value))
    return value


def format_from_pattern(pattern: str) -> str | None:
    """The input format an extension implies ('.csv.gz' counts as '.csv'), or None."""
    name = pattern.lower()
    if name.endswith('.gz'):
        name = name[:-3]
    return _EXTENSIONS.get(os.path.splitext(name)[1])


def parse_config(raw: Any) -> EvalConfig:
    """Validates plain config data (as loaded from YAML) into an `EvalConfig`."""
    raw = _check_keys(raw, _TOP_KEYS, 'config')
    if 'input' not in raw:
        raise ConfigError('input: missing (input: {pattern: ..., format: ...})')
    inp = _check_keys(raw['input'], _INPUT_KEYS, 'input')
    pattern = inp.get('pattern')
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError('input.pattern: expected a file pattern string, got %r' % (pattern,))
    fmt = inp.get('format')
    if fmt is None:
        fmt = format_from_pattern(pattern)
        if fmt is None:
            raise ConfigError('input.format: cannot tell the format from %r; set input.format to '
                              'one of %s' % (pattern, ', '.join(FORMATS)))
    if fmt not in FORMATS:
        raise ConfigError('input.format: %r is not one of %s' % (fmt, ', '.join(FORMATS)))

    head_list = raw.get('heads')
    if not isinstance(head_list, list) or not head_list:
        raise ConfigError('heads: expected a non-empty list of heads, got %r' % (head_list,))
    specs = tuple(_parse_head(h, 'heads[%d]' % i) for i, h in enumerate(head_list))
    names = [s.args.get('name') for s in specs]
    if len(specs) > 1:
        for i, name in enumerate(names):
            if not name:
                raise ConfigError('heads[%d].args.name: every head needs a name when there are '
                                  'several heads' % i)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError('heads: duplicate head name %r' % dup[0])
        joined = '_'.join(names)
        if joined in names:
            raise ConfigError('heads: head name %r equals the heads\' MultiHead name' % joined)

    head_weights = raw.get('head_weights')
    if head_weights is not None:
        if (not isinstance(head_weights, list)
                or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                           for w in head_weights)):
            raise ConfigError('head_weights: expected a list of numbers, got %r' % (head_weights,))
        if len(specs) < 2:
            raise ConfigError('head_weights: needs at least two heads (it weights their MultiHead)')
        if len(head_weights) != len(specs):
            raise ConfigError('head_weights: %d weights for %d heads' % (
                len(head_weights), len(specs)))
        head_weights = tuple(float(w) for w in head_weights)

    slices = _parse_slices(raw.get('slices', [[]]))
    window = _parse_window(raw['window']) if raw.get('window') is not None else None
    tensorboard = (_parse_tensorboard(raw['tensorboard'])
                   if 'tensorboard' in raw and raw['tensorboard'] is not None else None)
    output = raw.get('output')
    if output is not None and (not isinstance(output, str) or not output):
        raise ConfigError('output: expected a directory path, got %r' % (output,))

    config = EvalConfig(pattern=pattern, format=fmt, heads=specs, slices=slices,
                        head_weights=head_weights, window=window, tensorboard=tensorboard,
                        output=output)
    built = [_build_head(spec, 'heads[%d]' % i) for i, spec in enumerate(specs)]
    for i, (spec, head) in enumerate(zip(specs, built)):
        _check_head_spec(spec, head, 'heads[%d]' % i)
    if len(built) > 1:
        try:
            config.build_multi_head(built)
        except ValueError as e:
            raise ConfigError('head_weights: %s' % e) from None
    return config


def _parse_head(raw: Any, where: str) -> HeadSpec:
    raw = _check_keys(raw, _HEAD_KEYS, where)
    htype = raw.get('type')
    _check_head_type(htype, where)
    args = raw.get('args') or {}
    if not isinstance(args, Mapping):
        raise ConfigError('%s.args: expected a mapping of the head\'s arguments, got %r' % (
            where, args))
    if 'loss_fn' in args:
        raise ConfigError('%s.args.loss_fn: a config cannot name a Python function' % where)
    logits = raw.get('logits')
    if isinstance(logits, list):
        if not logits or not all(isinstance(c, str) and c for c in logits):
            raise ConfigError('%s.logits: expected a column name or a list of column names, got %r'
                              % (where, logits))
        logits = tuple(logits) if len(logits) > 1 else logits[0]
    elif not isinstance(logits, str) or not logits:
        raise ConfigError('%s.logits: expected a column name, got %r' % (where, logits))
    labels = raw.get('labels')
    if not isinstance(labels, str) or not labels:
        raise ConfigError('%s.labels: expected a column name, got %r' % (where, labels))
    label_format = raw.get('label_format', 'multi_hot')
    if label_format not in LABEL_FORMATS:
        raise ConfigError('%s.label_format: %r is not one of %s' % (
            where, label_format, ', '.join(LABEL_FORMATS)))
    if label_format != 'multi_hot' and htype != 'MultiLabelHead':
        raise ConfigError('%s.label_format: only a MultiLabelHead reads label_format' % where)
    weight = args.get('weight_column')
    if weight is not None and (not isinstance(weight, str) or not weight):
        raise ConfigError('%s.args.weight_column: expected a column name, got %r' % (where, weight))
    return HeadSpec(type=htype, args=dict(args), logits=logits, labels=labels,
                    label_format=label_format)


def _check_head_type(htype: Any, where: str) -> None:
    """A head entry's `type:` must name one of headstream's single heads, which has an array face.

    The pipeline evaluates every head through its array face (numpy, no TensorFlow); a user's
    `Head` subclass written for tf.estimator's interface only has none, so a config cannot name
    one (not by class name, nor by import path).
    """
    import heads
    from heads.base import ARRAY_FACE_METHODS, missing_array_face
    if htype not in _HEAD_TYPES:
        raise ConfigError('%s.type: unknown head type %r (one of %s; a user\'s own Head subclass '
                          'cannot be evaluated: the pipeline needs the array face, %s)' % (
                              where, htype, ', '.join(_HEAD_TYPES), ', '.join(ARRAY_FACE_METHODS)))
    missing = missing_array_face(getattr(heads, htype))
    if missing:
        raise ConfigError('%s.type: %s does not implement the array face the pipeline evaluates '
                          'with (%s)' % (where, htype, ', '.join(missing)))


def _build_head(spec: HeadSpec, where: str):
    try:
        return spec.build()
    except TypeError as e:
        raise ConfigError('%s.args: %s' % (where, e)) from None
    except ValueError as e:
        raise ConfigError('%s.args: %s' % (where, e)) from None


def _check_head_spec(spec: HeadSpec, head: Any, where: str) -> None:
    n_cols = len(spec.logits_columns)
    if n_cols > 1 and n_cols != head.logits_dimension:
        raise ConfigError('%s.logits: %d columns for a head with logits_dimension %d' % (
            where, n_cols, head.logits_dimension))


def _parse_slices(raw: Any) -> tuple[tuple[str, ...], ...]:
    if not isinstance(raw, list):
        raise ConfigError('slices: expected a list of column lists ([] is Overall), got %r' % (raw,))
    out: list[tuple[str, ...]] = []
    for i, s in enumerate(raw):
        if isinstance(s, str):
            s = [s]
        if not isinstance(s, list) or not all(isinstance(c, str) and c for c in s):
            raise ConfigError('slices[%d]: expected a list of column names, got %r' % (i, s))
        if len(set(s)) != len(s):
            raise ConfigError('slices[%d]: column repeated in %r' % (i, s))
        key = tuple(s)
        if key in out:
            raise ConfigError('slices[%d]: %r is listed twice' % (i, s))
        out.append(key)
    if not out:
        raise ConfigError('slices: empty; use [[]] for the whole dataset')
    return tuple(out)


def _parse_window(raw: Any) -> WindowSpec:
    raw = _check_keys(raw, _WINDOW_KEYS, 'window')
    column = raw.get('column')
    if not isinstance(column, str) or not column:
        raise ConfigError('window.column: expected the timestamp column, got %r' % (column,))
    if 'size' not in raw:
        raise ConfigError('window.size: missing (seconds)')
    size = _number(raw['size'], 'window.size', positive=True)
    period = raw.get('period')
    if period is not None:
        period = _number(period, 'window.period', positive=True)
        if period > size:
            raise ConfigError('window.period: %g exceeds window.size %g' % (period, size))
    lateness = _number(raw.get('allowed_lateness', 0), 'window.allowed_lateness')
    early = raw.get('early_firing')
    if early is not None:
        early = _number(early, 'window.early_firing', positive=True)
    for key, value in (('window.size', size), ('window.period', period)):
        if value is not None and abs(value * 1e6 - round(value * 1e6)) > 1e-3:
            raise ConfigError('%s: must be a whole number of microseconds, got %r' % (key, value))
    return WindowSpec(column=column, size=size, period=period, allowed_lateness=lateness,
                      early_firing=early)


def _parse_tensorboard(raw: Any) -> TensorBoardSpec:
    raw = _check_keys(raw, _TENSORBOARD_KEYS, 'tensorboard')
    tb_dir = raw.get('dir')
    if tb_dir is not None and (not isinstance(tb_dir, str) or not tb_dir):
        raise ConfigError('tensorboard.dir: expected a directory, got %r' % (tb_dir,))
    step = raw.get('step', 0)
    if isinstance(step, bool) or not isinstance(step, (int, str)) or step == '':
        raise ConfigError('tensorboard.step: expected an int or a column name, got %r' % (step,))
    return TensorBoardSpec(dir=tb_dir, step=step)


# -------------------------------------------------------------------------------------------------
# Columns against the data's schema.
# -------------------------------------------------------------------------------------------------

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
    where_file = ' in %s' % source if source else ''
    fmt = config.format

    def field(col: str, key: str) -> pa.DataType:
        if col not in schema.names:
            raise ConfigError('%s: column %r not found%s (columns: %s)' % (
                key, col, where_file, ', '.join(schema.names)))
        return schema.field(col).type

    def mistyped(key: str, col: str, t: pa.DataType, expected: str) -> ConfigError:
        return ConfigError('%s: column %r has type %s%s; expected %s' % (
            key, col, t, where_file, expected))

    for i, spec in enumerate(config.heads):
        key = 'heads[%d]' % i
        multi_label = spec.type == 'MultiLabelHead'
        vocab = spec.args.get('label_vocabulary')
        cols = spec.logits_columns
        for col in cols:
            t = field(col, key + '.logits')
            ok = _is_numeric(t) if len(cols) > 1 else (
                _is_numeric(t) or (_is_list(t) and _is_numeric(t.value_type))
                or (fmt == 'csv' and _is_text(t)))
            if not ok:
                raise mistyped(key + '.logits', col, t,
                               'numbers' if len(cols) > 1 else
                               'a number or a list of numbers per row'
                               + (' (in CSV: a JSON list string)' if fmt == 'csv' else ''))
        t = field(spec.labels, key + '.labels')
        if multi_label:
            element_ok = (_is_list(t) and (_is_numeric(t.value_type) or _is_text(t.value_type))
                          or (fmt == 'csv' and _is_text(t)))
            if not element_ok:
                raise mistyped(key + '.labels', spec.labels, t,
                               'a list per row (multi-hot numbers, or class ids/names)')
        else:
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
                    raise mistyped(key + '.labels', spec.labels, t,
                                   'numbers (string labels need args.label_vocabulary)')
            elif st is None or not _is_numeric(st):
                raise mistyped(key + '.labels', spec.labels, t,
                               'a number per row' + (' or a vocabulary string' if vocab else ''))
        if spec.weight_column:
            t = field(spec.weight_column, key + '.args.weight_column')
            st = _scalar(t, fmt)
            if st is None or not _is_numeric(st):
                raise mistyped(key + '.args.weight_column', spec.weight_column, t,
                               'a number per row')
    for i, s in enumerate(config.slices):
        for col in s:
            t = field(col, 'slices[%d]' % i)
            st = _scalar(t, fmt)
            if st is None or not (_is_numeric(st) or _is_text(st)):
                raise mistyped('slices[%d]' % i, col, t, 'a string, integer or boolean per row')
    if config.window:
        col = config.window.column
        t = field(col, 'window.column')
        st = _scalar(t, fmt)
        if st is None or not (pa.types.is_timestamp(st) or pa.types.is_date(st)
                              or pa.types.is_integer(st) or pa.types.is_floating(st)):
            raise mistyped('window.column', col, t, 'a timestamp or epoch seconds per row')
    if config.step_column:
        col = config.step_column
        t = field(col, 'tensorboard.step')
        st = _scalar(t, fmt)
        if st is None or not pa.types.is_integer(st):
            raise mistyped('tensorboard.step', col, t, 'an integer per row')


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


def config_summary(config: EvalConfig) -> str:
    """A one-line description for logs."""
    return json.dumps({'pattern': config.pattern, 'format': config.format,
                       'heads': config.head_names, 'slices': [list(s) for s in config.slices]})
