"""`validation:` — the rules a run's metrics must pass for the candidate to be blessed, parsed
and checked with the config before any data is read.

    validation:
      - {head: click, metric: auc, min: 0.7}                       # a value rule (Overall)
      - {head: click, metric: auc, slices: [[country]], max_decrease: 0.01}
      - {head: click, metric: average_loss, max_increase: 0.02, relative: true}

`head` names a configured head (may be left out with a single head) or, with several heads, their
MultiHead (the names joined by `_`; its one metric is `loss`); `metric` one of its metric
keys without the head suffix (`auc`, `accuracy/positive_threshold_0.5`, `loss`, ...); `slices` a
list of slice specs, each one listed in `slices:` (default: Overall); bounds `min` / `max` on the
candidate's value, `max_decrease` / `max_increase` (≥ 0) on candidate − baseline, which needs the
head's `baseline_logits`; `relative: true` makes the change bounds fractions of the baseline's
value. What a rule means at run time is pipeline/validation.py.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from pipeline.config.spec import ConfigError, HeadSpec

VALUE_BOUNDS = ('min', 'max')
CHANGE_BOUNDS = ('max_decrease', 'max_increase')
RULE_KEYS = ('head', 'metric', 'slices') + VALUE_BOUNDS + CHANGE_BOUNDS + ('relative',)


@dataclasses.dataclass(frozen=True)
class ValidationRule:
    """One entry of `validation:` (see the module docstring)."""
    head: str
    metric: str
    slices: tuple[tuple[str, ...], ...] = ((),)
    min: float | None = None
    max: float | None = None
    max_decrease: float | None = None
    max_increase: float | None = None
    relative: bool = False

    def bounds(self) -> list[tuple[str, float]]:
        """(bound name, limit) of every bound the rule sets, in RULE_KEYS order."""
        return [(k, getattr(self, k)) for k in VALUE_BOUNDS + CHANGE_BOUNDS
                if getattr(self, k) is not None]

    def to_dict(self) -> dict:
        out: dict[str, Any] = {'head': self.head, 'metric': self.metric,
                               'slices': [list(s) for s in self.slices]}
        out.update(dict(self.bounds()))
        if self.relative:
            out['relative'] = True
        return out


def parse_validation(raw: Any, specs: Sequence[HeadSpec], built: Sequence[Any],
                     slices: Sequence[tuple[str, ...]]) -> tuple[ValidationRule, ...]:
    """The `validation:` list checked against the heads (`built`: their objects) and slices.

    Raises:
      ConfigError: naming `validation[i]` and the key at fault.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError('validation: expected a list of rules, got %r' % (raw,))
    names = [s.args.get('name') or '' for s in specs]
    return tuple(_parse_rule(r, 'validation[%d]' % i, specs, built, names, slices)
                 for i, r in enumerate(raw))


class _MultiHeadLoss:
    """The MultiHead of several heads as a rule sees it: one metric, `loss`, no baseline."""

    @staticmethod
    def new_state() -> Any:
        class _Empty:
            @staticmethod
            def result() -> dict:
                return {}
        return _Empty()


def _parse_rule(raw: Any, where: str, specs: Sequence[HeadSpec], built: Sequence[Any],
                names: list[str], slices: Sequence[tuple[str, ...]]) -> ValidationRule:
    if not isinstance(raw, Mapping):
        raise ConfigError('%s: expected a mapping, got %r' % (where, raw))
    for key in raw:
        if key not in RULE_KEYS:
            raise ConfigError('%s.%s: unknown key %r (allowed: %s)' % (
                where, key, key, ', '.join(RULE_KEYS)))
    head = raw.get('head', names[0] if len(names) == 1 else None)
    if head is None:
        raise ConfigError('%s.head: missing; name one of the heads (%s)' % (where,
                                                                         ', '.join(names)))
    if len(names) > 1:  # the heads' MultiHead: its merged `loss` rows
        names = names + ['_'.join(names)]
        specs = list(specs) + [HeadSpec(type='MultiHead', args={}, logits='', labels='')]
        built = list(built) + [_MultiHeadLoss()]
    if head not in names:
        raise ConfigError('%s.head: unknown head %r (heads: %s)' % (
            where, head, ', '.join(repr(n) for n in names)))
    h = names.index(head)
    metric = raw.get('metric')
    known = head_metrics(built[h], head)
    if not isinstance(metric, str) or metric not in known:
        raise ConfigError('%s.metric: unknown metric %r for head %r (metrics: %s)' % (
            where, metric, head, ', '.join(sorted(known))))
    bounds = {k: _bound(raw[k], '%s.%s' % (where, k), k in CHANGE_BOUNDS)
              for k in VALUE_BOUNDS + CHANGE_BOUNDS if k in raw}
    if not bounds:
        raise ConfigError('%s: no bound; set min, max, max_decrease or max_increase' % where)
    if 'min' in bounds and 'max' in bounds and bounds['min'] > bounds['max']:
        raise ConfigError('%s: min %g exceeds max %g' % (where, bounds['min'], bounds['max']))
    change = [k for k in CHANGE_BOUNDS if k in bounds]
    if change and specs[h].type == 'MultiHead':
        raise ConfigError('%s.%s: a change rule needs a baseline; the heads\' MultiHead has none '
                          '(gate each head\'s own loss instead)' % (where, change[0]))
    if change and specs[h].baseline_logits is None:
        raise ConfigError('%s.%s: a change rule needs a baseline; set heads[%d].baseline_logits'
                          % (where, change[0], h))
    relative = raw.get('relative', False)
    if not isinstance(relative, bool):
        raise ConfigError('%s.relative: expected true or false, got %r' % (where, relative))
    if relative and not change:
        raise ConfigError('%s.relative: applies to max_decrease / max_increase only' % where)
    return ValidationRule(head=head, metric=metric,
                          slices=_rule_slices(raw.get('slices', [[]]), where, slices),
                          relative=relative, **bounds)


def head_metrics(head: Any, name: str) -> set[str]:
    """The metric keys (head suffix stripped) a head's rows carry, `loss` included."""
    keys = {'loss'}
    for key in head.new_state().result():
        keys.add(key[:-len(name) - 1] if name and key.endswith('/' + name) else key)
    return keys


def _bound(value: Any, where: str, change: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError('%s: expected a finite number, got %r' % (where, value))
    if change and value < 0:
        raise ConfigError('%s: expected a change >= 0, got %r' % (where, value))
    return float(value)


def _rule_slices(raw: Any, where: str, slices: Sequence[tuple[str, ...]]
                 ) -> tuple[tuple[str, ...], ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError('%s.slices: expected a non-empty list of slice specs, got %r'
                          % (where, raw))
    out = []
    for i, s in enumerate(raw):
        if isinstance(s, str):
            s = [s]
        if not isinstance(s, list) or not all(isinstance(c, str) for c in s):
            raise ConfigError('%s.slices[%d]: expected a list of column names, got %r'
                              % (where, i, s))
        if tuple(s) not in slices:
            raise ConfigError('%s.slices[%d]: %r is not one of the configured slices (slices: %s)'
                              % (where, i, s, [list(x) for x in slices]))
        out.append(tuple(s))
    return tuple(dict.fromkeys(out))
