"""Reading and validating a config: raw YAML/JSON (a path, inline text or a dict) into an
`EvalConfig`, every error a `ConfigError` naming the key at fault; and the run id rule.

Owns the config's keys and their checks: the input pattern and format, each head (its type must
be one of headstream's single heads, which have the array face; its args must build the head),
head weights, slices, window and tensorboard. The data's columns are checked later, against the
first input file's schema, by pipeline/config/columns.py.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping, Sequence

from pipeline import fileio
from pipeline.config.validation import parse_validation
from pipeline.config.spec import (CONFIDENCE_METHODS, FORMATS, LABEL_FORMATS, ConfidenceSpec,
                                  ConfigError, EvalConfig, HeadSpec, PlotsSpec, TensorBoardSpec,
                                  WindowSpec)

_EXTENSIONS = {
    '.parquet': 'parquet', '.pq': 'parquet',
    '.tfrecord': 'tfrecord', '.tfrecords': 'tfrecord', '.tfr': 'tfrecord',
    '.csv': 'csv',
    '.jsonl': 'jsonl', '.ndjson': 'jsonl', '.json': 'jsonl',
}
_TOP_KEYS = ('input', 'heads', 'head_weights', 'slices', 'window', 'tensorboard', 'output',
             'confidence', 'min_slice_size', 'validation', 'plots')
_INPUT_KEYS = ('pattern', 'format')
_HEAD_KEYS = ('type', 'args', 'logits', 'labels', 'label_format', 'baseline_logits')
_WINDOW_KEYS = ('column', 'size', 'period', 'allowed_lateness', 'early_firing')
_TENSORBOARD_KEYS = ('dir', 'step', 'max_runs')
_CONFIDENCE_KEYS = ('level', 'method')
# Heads a config may name: every concrete single head (MultiHead is built from `head_weights`).
_HEAD_TYPES = ('BinaryClassHead', 'MultiClassHead', 'MultiLabelHead', 'RegressionHead',
               'LogisticRegressionHead', 'PoissonRegressionHead')
_DURATION = re.compile(r'^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$')
_DURATION_UNITS = {None: 1.0, 'ms': 1e-3, 's': 1.0, 'm': 60.0, 'h': 3600.0, 'd': 86400.0}

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
    try:
        return fileio.read_bytes(path).decode('utf-8')
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
    pattern, fmt = _parse_input(raw)
    specs = _parse_heads(raw.get('heads'))
    head_weights = _parse_head_weights(raw.get('head_weights'), len(specs))
    slices = _parse_slices(raw.get('slices', [[]]))
    window = _parse_window(raw['window']) if raw.get('window') is not None else None
    tensorboard = (_parse_tensorboard(raw['tensorboard'])
                   if 'tensorboard' in raw and raw['tensorboard'] is not None else None)
    output = raw.get('output')
    if output is not None and (not isinstance(output, str) or not output):
        raise ConfigError('output: expected a directory path, got %r' % (output,))
    confidence = (_parse_confidence(raw['confidence'])
                  if raw.get('confidence') is not None else None)
    min_slice_size = _parse_min_slice_size(raw.get('min_slice_size', 0))
    plots = _parse_plots(raw['plots']) if raw.get('plots') is not None else PlotsSpec()

    config = EvalConfig(pattern=pattern, format=fmt, heads=specs, slices=slices,
                        head_weights=head_weights, window=window, tensorboard=tensorboard,
                        output=output, confidence=confidence, min_slice_size=min_slice_size,
                        plots=plots)
    built = [_build_head(spec, 'heads[%d]' % i) for i, spec in enumerate(specs)]
    for i, (spec, head) in enumerate(zip(specs, built)):
        _check_head_spec(spec, head, 'heads[%d]' % i)
    if len(built) > 1:
        try:
            config.build_multi_head(built)
        except ValueError as e:
            raise ConfigError('head_weights: %s' % e) from None
    rules = parse_validation(raw.get('validation'), specs, built, slices)
    return dataclasses.replace(config, validation=rules) if rules else config


def _parse_input(raw: Mapping[str, Any]) -> tuple[str, str]:
    """The `input:` section's (pattern, format), the format from the extension when absent."""
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
    return pattern, fmt


def _parse_heads(head_list: Any) -> tuple[HeadSpec, ...]:
    """The `heads:` list; several heads need distinct names, none equal to their MultiHead's."""
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
    return specs


def _parse_head_weights(head_weights: Any, n_heads: int) -> tuple[float, ...] | None:
    """`head_weights:`, one number per head (two heads at least), or None when absent."""
    if head_weights is None:
        return None
    if (not isinstance(head_weights, list)
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                       for w in head_weights)):
        raise ConfigError('head_weights: expected a list of numbers, got %r' % (head_weights,))
    if n_heads < 2:
        raise ConfigError('head_weights: needs at least two heads (it weights their MultiHead)')
    if len(head_weights) != n_heads:
        raise ConfigError('head_weights: %d weights for %d heads' % (len(head_weights), n_heads))
    return tuple(float(w) for w in head_weights)


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
    logits = _logits_columns(raw.get('logits'), where + '.logits')
    baseline = raw.get('baseline_logits')
    if baseline is not None:
        baseline = _logits_columns(baseline, where + '.baseline_logits')
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
                    label_format=label_format, baseline_logits=baseline)


def _logits_columns(logits: Any, where: str) -> str | tuple[str, ...]:
    """`logits` / `baseline_logits`: a column name, or a list of them."""
    if isinstance(logits, list):
        if not logits or not all(isinstance(c, str) and c for c in logits):
            raise ConfigError('%s: expected a column name or a list of column names, got %r'
                              % (where, logits))
        return tuple(logits) if len(logits) > 1 else logits[0]
    if not isinstance(logits, str) or not logits:
        raise ConfigError('%s: expected a column name, got %r' % (where, logits))
    return logits


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


def _build_head(spec: HeadSpec, where: str) -> Any:
    try:
        return spec.build()
    except TypeError as e:
        raise ConfigError('%s.args: %s' % (where, e)) from None
    except ValueError as e:
        raise ConfigError('%s.args: %s' % (where, e)) from None


def _check_head_spec(spec: HeadSpec, head: Any, where: str) -> None:
    for key, columns in (('logits', spec.logits_columns),
                         ('baseline_logits', spec.baseline_columns)):
        n_cols = len(columns)
        if n_cols > 1 and n_cols != head.logits_dimension:
            raise ConfigError('%s.%s: %d columns for a head with logits_dimension %d' % (
                where, key, n_cols, head.logits_dimension))


def _parse_slices(raw: Any) -> tuple[tuple[str, ...], ...]:
    if not isinstance(raw, list):
        raise ConfigError('slices: expected a list of column lists ([] is Overall), got %r'
                          % (raw,))
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
    max_runs = raw.get('max_runs', 1000)
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise ConfigError('tensorboard.max_runs: expected a whole number of runs >= 1, got %r'
                          % (max_runs,))
    return TensorBoardSpec(dir=tb_dir, step=step, max_runs=max_runs)


def _parse_confidence(raw: Any) -> ConfidenceSpec:
    raw = _check_keys(raw, _CONFIDENCE_KEYS, 'confidence')
    level = raw.get('level', 0.95)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ConfigError('confidence.level: expected a number in (0, 1) such as 0.95, got %r'
                          % (level,))
    method = raw.get('method', 'analytic')
    if method not in CONFIDENCE_METHODS:
        raise ConfigError('confidence.method: expected one of %s, got %r'
                          % (', '.join(CONFIDENCE_METHODS), method))
    return ConfidenceSpec(level=float(level), method=method)


def _parse_plots(raw: Any) -> PlotsSpec:
    raw = _check_keys(raw, ('max_slices',), 'plots')
    limit = raw.get('max_slices', PlotsSpec.max_slices)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError('plots.max_slices: expected a whole number of slices >= 0 or null '
                          '(every slice), got %r' % (limit,))
    return PlotsSpec(max_slices=limit)


def _parse_min_slice_size(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ConfigError('min_slice_size: expected a whole number of rows >= 0, got %r' % (raw,))
    return raw
