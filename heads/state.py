"""`HeadState`: the protocol every head's mergeable state follows, written as a base class.

    state = head.new_state()                      # empty
    state.update(labels, logits, features=None)   # one batch; returns self
    type(state).update_groups(states, codes, labels, logits, features=None) -> bool
                                                  # row i of one batch into states[codes[i]]
    state.merge(other)                            # adds other (left unchanged); returns self
    state.result() -> {metric key: float}         # the head's update_metrics keys and values
    state.loss() -> float                         # the head's loss over all data seen
    state.counts() -> (examples, Σ weights)
    state.bounds() -> {metric key: (lower, upper)}
    state.plots() -> {plot column: array}

A subclass lists the attribute names of its mergeable components in `_components` (each a state
of `heads.metrics`, or a list / tuple / dict of them), implements `update_groups` (or overrides
`update`), `result` and `loss`, and may override `bounds` and `plots`. The per-family states are in
`heads.array`. `state_arrays` / `load_state_arrays` give a state's numbers as named arrays and
back (persistence in a data format, without pickle). Never imports TensorFlow.
"""
from __future__ import annotations

import abc
from typing import Any, Mapping, Sequence

import numpy as np

from heads.metrics.plots import empty_plots

__all__ = ['HeadState', 'add_counts_groups', 'state_arrays', 'load_state_arrays']


def _merge_component(mine: Any, theirs: Any) -> None:
    if isinstance(mine, (list, tuple)):
        if len(mine) != len(theirs):
            raise ValueError('Cannot merge states of different structure.')
        for a, b in zip(mine, theirs):
            _merge_component(a, b)
    elif isinstance(mine, dict):
        if mine.keys() != theirs.keys():
            raise ValueError('Cannot merge states of different structure.')
        for k in mine:
            _merge_component(mine[k], theirs[k])
    else:
        mine.merge(theirs)



class HeadState(abc.ABC):
    """Base of a head's mergeable state (the protocol above).

    `signature` (set by the subclass) identifies the head configuration; states of different
    heads refuse to merge. A per-head state keeps a reference to its family's array face (which
    validates and processes each batch) and pickles with it: faces built from plain values pickle
    with the standard library; one holding a lambda (`loss_fn`, `inverse_link_fn`) needs
    cloudpickle or dill.
    """

    _components: tuple[str, ...] = ()

    def __init__(self, signature: Any = None) -> None:
        self.signature = signature
        self.example_count = 0.0
        self.weighted_example_count = 0.0

    def _add_counts(self, examples: int | float, weighted: float) -> None:
        self.example_count += float(examples)
        self.weighted_example_count += float(weighted)

    def update(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
               ) -> 'HeadState':
        """Adds one batch: the state's grouped update with itself as the only group (validated
        exactly as the head's loss; errors leave self unchanged)."""
        if not type(self).update_groups([self], None, labels, logits, features):
            raise NotImplementedError('{} has no update for this batch.'.format(
                type(self).__name__))
        return self

    @staticmethod
    def update_groups(states: Sequence['HeadState'], codes: np.ndarray | None, labels: Any,
                      logits: Any, features: Mapping[str, Any] | None = None) -> bool:
        """Adds row i of one batch to `states[codes[i]]` (a negative code: to none; `codes` None:
        every row to the single state) in one pass, when the head's state supports it. The batch
        is validated as a whole first (errors leave every state unchanged). Returns False,
        changing nothing, when it does not: the caller then updates each state with its own
        rows."""
        return False

    def merge(self, other: 'HeadState') -> 'HeadState':
        """Adds `other` (a state of the same head) into self; `other` is unchanged."""
        if type(other) is not type(self) or other.signature != self.signature:
            raise ValueError('Cannot merge a {} of {!r} into a {} of {!r}.'.format(
                type(other).__name__, other.signature, type(self).__name__, self.signature))
        for name in self._components:
            _merge_component(getattr(self, name), getattr(other, name))
        self.example_count += other.example_count
        self.weighted_example_count += other.weighted_example_count
        return self

    @abc.abstractmethod
    def result(self) -> dict[str, float]:
        """{metric key: value} over all data seen, as one batch."""

    @abc.abstractmethod
    def loss(self) -> float:
        """The head's loss over all data seen as one batch, without regularization."""

    def counts(self) -> tuple[int, float]:
        """(examples seen, Σ example weights — 1 per example without a weight column)."""
        return int(round(self.example_count)), float(self.weighted_example_count)

    def bounds(self) -> dict[str, tuple[float, float]]:
        """{metric key: (lower, upper)} bounds of exact metrics (none by default)."""
        return {}

    def plots(self) -> dict[str, np.ndarray]:
        """Plot rows, columns `heads.metrics.PLOT_COLUMNS` (none by default)."""
        return empty_plots()


def add_counts_groups(states: Sequence[HeadState], n_rows: np.ndarray, w_sum: np.ndarray
                      ) -> None:
    """Adds n_rows[g] examples of total weight w_sum[g] to states[g]."""
    for state, examples, weighted in zip(states, n_rows, w_sum):
        state._add_counts(examples, weighted)


# A state's numbers as named arrays: persistence in a data format (no pickle).

_CONFIGURATION = ('head', 'face', 'signature')  # rebuilt from the head, never stored


def _is_state(value: Any) -> bool:
    return callable(getattr(value, 'merge', None))


def _is_number(value: Any) -> bool:
    return isinstance(value, (bool, int, float, np.number, np.bool_))


def _is_numeric_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in 'biuf'


def _fields(state: Any) -> dict[str, Any]:
    """A state's attributes as its pickle would hold them (`__getstate__`), less the head."""
    return {k: v for k, v in state.__getstate__().items() if k not in _CONFIGURATION}


def state_arrays(state: Any) -> dict[str, np.ndarray]:
    """Every number of a state (a per-head state or a component) as named numpy arrays: each
    numeric array or scalar attribute, of the state and of its components (lists, tuples and dicts
    of them too), by attribute path ('histogram/_pos', 'threshold_accuracy/0/total'). The head
    (array face) and signature are not included: `load_state_arrays` fills a fresh state of the
    same head."""
    out: dict[str, np.ndarray] = {}
    _put_arrays(out, '', state)
    return out


def _put_arrays(out: dict[str, np.ndarray], path: str, value: Any) -> None:
    if _is_numeric_array(value) or _is_number(value):
        out[path] = np.asarray(value)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _put_arrays(out, '%s/%d' % (path, i) if path else str(i), v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _put_arrays(out, '%s/%s' % (path, k) if path else str(k), v)
    elif _is_state(value):
        for name, v in _fields(value).items():
            _put_arrays(out, '%s/%s' % (path, name) if path else name, v)
    # Anything else (None, strings, heads) is configuration: the fresh state has it.


def load_state_arrays(state: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Fills `state` (a fresh `head.new_state()`) with `state_arrays` of a state of the same head;
    returns it. Only the fresh state's own attributes are set, from arrays of matching kind.

    Raises:
      ValueError: naming the entry, when the arrays do not fit the state (missing, unknown, of
        another dtype or shape).
    """
    used: set[str] = set()
    _load_state(state, '', arrays, used)
    unknown = sorted(set(arrays) - used)
    if unknown:
        raise ValueError('unknown state entries: %s' % ', '.join(unknown[:5]))
    return state


def _load_state(state: Any, path: str, arrays: Mapping[str, np.ndarray], used: set[str]) -> None:
    fields = _fields(state)
    prefix = path + '/' if path else ''
    for name, value in fields.items():
        fields[name] = _load_value(value, prefix + name, arrays, used)
    own_setstate = getattr(type(state), '__setstate__', None) is not None
    extra = [k for k in arrays if k.startswith(prefix) and '/' not in k[len(prefix):]
             and k[len(prefix):] not in fields]
    if extra and own_setstate:  # entries the class's __getstate__ adds (e.g. a storage flag)
        for k in extra:
            fields[k[len(prefix):]] = _load_value(arrays[k][()], k, arrays, used)
    if own_setstate:
        state.__setstate__(fields)
    else:
        state.__dict__.update(fields)


def _load_value(template: Any, path: str, arrays: Mapping[str, np.ndarray], used: set[str]
                ) -> Any:
    if _is_numeric_array(template) or _is_number(template):
        if path not in arrays:
            raise ValueError('state entry %s is missing' % path)
        saved = np.asarray(arrays[path])
        used.add(path)
        if _is_number(template):
            if saved.ndim or saved.dtype.kind not in 'biuf':
                raise ValueError('state entry %s: a number expected, got %s %s'
                                 % (path, saved.dtype, saved.shape))
            return type(template)(saved.item())
        if saved.dtype != template.dtype or saved.ndim != template.ndim:
            raise ValueError('state entry %s: %s[%d dims] expected, got %s%s'
                             % (path, template.dtype, template.ndim, saved.dtype, saved.shape))
        return saved.copy()
    if isinstance(template, (list, tuple)):
        return type(template)(_load_value(v, '%s/%d' % (path, i), arrays, used)
                              for i, v in enumerate(template))
    if isinstance(template, dict):
        return {k: _load_value(v, '%s/%s' % (path, k), arrays, used)
                for k, v in template.items()}
    if _is_state(template):
        _load_state(template, path, arrays, used)
    return template
