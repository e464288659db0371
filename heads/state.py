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
    state.intervals(level=0.95) -> {metric key: (lower, upper) | None}   # interval states only
    state.interval_estimates(level=0.95) -> {metric key: Estimate | None}  # with standard errors

Intervals are opt-in: `face.new_state(intervals=True)` (and `head.new_state(intervals=True)`)
makes a state of the family's interval class (a subclass with `INTERVALS = True` and one more
component, `ci`, a `heads.metrics.intervals.CISums` of the extra sums its formulas need); a plain
state holds and computes nothing more. The two kinds do not merge with each other.

A subclass lists the attribute names of its mergeable components in `_components` (each a state
of `heads.metrics`, or a list / tuple / dict of them), creates them in `__init__`, and implements
a batch in two steps: `_prepare(face, labels, logits, features)` validates a batch and returns its
per-example arrays (a dict, first dimension the examples; None: not representable, then
`update_groups` returns False), and `_update_rows(states, codes, rows)` adds them (or overrides
`update_groups` / `update` altogether); it implements `result` and `loss`, and may override
`bounds` and `plots`.

Small states. A subclass setting `BUFFER_ROWS > 0` (the binary and multi-label states, whose
dense components hold thousands of buckets) gets `_update_rows` from this class, and its faces
make states with `small(face)`: such a state holds the prepared rows themselves (a
`heads.metrics.rows.RowBuffer`, with a field `w` of per-example weights for the counts) until it
has more than `BUFFER_ROWS` of them; then it builds its components (`__init__`'s) and adds the
rows with `_add_rows(states, groups, rows) -> Σw per state`, the family's dense grouped update.
Reading any component of a small state (`result()`, `bounds()`, `plots()`, ... or a method added
later) first turns it dense the same way (`__getattr__`), so every answer is the dense state's,
over the same rows. A batch's rows for many small states are sorted by state once and shared
(see `RowBuffer`); states turning dense in a batch are filled together, `MAX_GROUPS` at a time.

The per-family states are in `heads.array`. `state_arrays` / `load_state_arrays` give a state's
numbers as named arrays and back (persistence in a data format, without pickle; a small state is
written as its dense equivalent). Never imports TensorFlow.
"""
from __future__ import annotations

import abc
from typing import Any, Mapping, Sequence

import numpy as np

from heads.metrics.groups import Groups, group_order
from heads.metrics.plots import empty_plots
from heads.metrics.rows import RowBuffer, as_records, record_fields
from heads.state_arrays import load_state_arrays, state_arrays  # part of this module's API
from heads.state_rows import held_and_limits, keep_rows, subset

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
    # Rows a small state holds before it builds its dense components (0: always dense).
    BUFFER_ROWS = 0
    # States per dense grouped update (`_add_rows`), whose per-state sums are taken at once.
    MAX_GROUPS = 128
    # Rows a dense state holds beside its components (`_parked`) before adding them: merging
    # many small states into one adds their rows in a few passes rather than one each.
    PENDING_ROWS = 1 << 16
    # The rows a state holds (None: dense, the components are the state's attributes) and, when
    # it holds rows, its components set aside (None: a small state, none built yet).
    _buffer: RowBuffer | None = None
    _parked: dict[str, Any] | None = None
    # Whether the state keeps the sums of confidence intervals (its family's interval subclass).
    INTERVALS = False

    def __init__(self, signature: Any = None) -> None:
        self.signature = signature
        self.example_count = 0.0
        self.weighted_example_count = 0.0

    @classmethod
    def small(cls, face: Any) -> 'HeadState':
        """An empty state of `face`'s head that holds its rows until it has more than
        `BUFFER_ROWS` (a dense `cls(face)` when BUFFER_ROWS is 0): building it allocates no
        component."""
        if cls.BUFFER_ROWS <= 0:
            return cls(face)
        state = cls.__new__(cls)
        state.signature = face.signature
        state.face = face
        state.example_count = 0.0
        state.weighted_example_count = 0.0
        state._buffer = RowBuffer()
        return state

    @property
    def is_small(self) -> bool:
        """Whether the state holds rows (then its components are built, or read back, on first
        use)."""
        return self._buffer is not None

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not found: a small state's components. Build them (from
        # the rows held) and answer as the dense state.
        if name.startswith('__') or self.__dict__.get('_buffer') is None:
            raise AttributeError('{!r} object has no attribute {!r}'.format(
                type(self).__name__, name))
        self._densify()
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError('{!r} object has no attribute {!r}'.format(
                type(self).__name__, name)) from None

    def __reduce_ex__(self, protocol: int) -> Any:
        # A small state (no components yet) pickles as its face, counts and rows' bytes: no
        # attribute names, no signature (the face's). Any other state pickles its attributes.
        d = self.__dict__
        if d.get('_buffer') is None or d.get('_parked') is not None or len(d) != 5:
            return super().__reduce_ex__(protocol)
        layout, data = d['_buffer'].__getstate__()
        return (_small_state, (type(self), d['face'], d['example_count'],
                               d['weighted_example_count'], layout, data))

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

    @classmethod
    def update_groups(cls, states: Sequence['HeadState'], codes: np.ndarray | None, labels: Any,
                      logits: Any, features: Mapping[str, Any] | None = None) -> bool:
        """Adds row i of one batch to `states[codes[i]]` (a negative code: to none; `codes` None:
        every row to the single state) in one pass, whatever the number of states. The batch is
        validated as a whole first (errors leave every state unchanged). Returns False, changing
        nothing, when the state cannot take this batch so (no `_prepare`, or `_prepare` returns
        None): the caller then updates each state with its own rows."""
        if not states:
            return True
        prepare = getattr(cls, '_prepare', None)
        if prepare is None:
            return False
        rows = prepare(states[0].face, labels, logits, features)
        if rows is None:
            return False
        cls._update_rows(states, codes, rows)
        return True

    # -- small states: rows held until they are many ------------------------------------------
    @classmethod
    def _add_rows(cls, states: Sequence['HeadState'], groups: Groups,
                  rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """The family's dense grouped update: adds the prepared `rows` of group g to the
        components of `states[g]` (at most MAX_GROUPS states; not the counts); returns Σw per
        state (of the field `w`)."""
        raise NotImplementedError

    @classmethod
    def _update_rows(cls, states: Sequence['HeadState'], codes: np.ndarray | None,
                     rows: Mapping[str, np.ndarray]) -> None:
        """Adds prepared rows (`_prepare`'s) to the states, each row to `states[codes[i]]`. A
        state taking more than BUFFER_ROWS rows of the batch, or whose held rows would pass its
        limit, is made dense (with the rows it held) and takes them through `_add_rows`, at most
        MAX_GROUPS states a pass; every other state keeps them (a dense one holding them as
        pending rows): one stable sort of their rows by state, one shared record block."""
        n_rows = rows['w'].shape[0]
        k = len(states)
        groups = Groups.of(codes, k, n_rows)
        n_g = groups.sum()
        held, limit = held_and_limits(states)
        active = n_g > 0
        direct = active & ((n_g > cls.BUFFER_ROWS) | ((held >= 0) & (held + n_g > limit)))
        kept = active & ~direct
        w_sum = np.zeros(k)
        flush = np.flatnonzero(direct & (held >= 0))
        if flush.size:  # the rows they held first (counted already)
            cls._densify_states([states[i] for i in flush])
        for i in np.flatnonzero(kept & (held < 0)).tolist():
            states[i]._park()
        if codes is None:  # one state taking every row
            if direct[0]:
                w_sum = cls._dense_add(states, None, rows)
            elif kept[0]:
                w_sum = np.array([float(np.sum(rows['w']))])
                states[0]._buffer.append(as_records(rows), 0, n_rows)
        else:
            codes = np.asarray(codes, dtype=np.int64).reshape(-1)
            if direct.any():
                idx = np.flatnonzero(direct)
                w_sum[idx] = cls._dense_add(*subset(states, codes, rows, idx, n_g))
            if kept.any():
                idx = np.flatnonzero(kept)
                w_sum[idx] = keep_rows([states[i] for i in idx], codes, rows, idx, k)
        for st, examples, weighted, on in zip(states, n_g.tolist(), w_sum.tolist(),
                                              active.tolist()):
            if on:
                st._add_counts(examples, weighted)

    @classmethod
    def _dense_add(cls, states: Sequence['HeadState'], codes: np.ndarray | None,
                   rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """`_add_rows` for any number of dense states (`codes` None: one state, every row):
        MAX_GROUPS states at a time, each over its own rows (sorted by state once)."""
        n_rows = rows['w'].shape[0]
        k = len(states)
        if codes is None:
            return cls._add_rows(states, Groups.one(n_rows), rows)
        if k <= cls.MAX_GROUPS:
            return cls._add_rows(states, Groups.of(codes, k, n_rows), rows)
        order, counts = group_order(codes, k)
        codes = codes[order]
        rows = {name: np.take(v, order, axis=0) for name, v in rows.items()}
        bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
        out = np.zeros(k)
        for g0 in range(0, k, cls.MAX_GROUPS):
            g1 = min(g0 + cls.MAX_GROUPS, k)
            a, b = bounds[g0], bounds[g1]
            part = {name: v[a:b] for name, v in rows.items()}
            out[g0:g1] = cls._add_rows(states[g0:g1], Groups.of(codes[a:b] - g0, g1 - g0, b - a),
                                       part)
        return out

    @classmethod
    def _densify_states(cls, states: Sequence['HeadState']) -> None:
        """Makes states dense: each takes back its components (a small state builds them with
        its class's `__init__`) and adds the rows it holds, all states in one grouped update."""
        holders, parts, sizes = [], [], []
        for st in states:
            buf = st._buffer
            if buf is None:
                continue
            st.__dict__.update(st._parked if st._parked is not None else st._new_components())
            del st.__dict__['_buffer']
            st.__dict__.pop('_parked', None)
            if buf.n:
                holders.append(st)
                parts.append(buf.rows())
                sizes.append(buf.n)
        if not holders:
            return
        rows = record_fields(parts[0] if len(parts) == 1 else np.concatenate(parts))
        if len(holders) == 1:
            cls._dense_add(holders, None, rows)
        else:
            cls._dense_add(holders, np.repeat(np.arange(len(holders)), sizes), rows)

    def _new_components(self) -> dict[str, Any]:
        """The components of an empty dense state of this head (what `__init__` makes)."""
        return {name: value for name, value in type(self)(self.face).__dict__.items()
                if name not in _CORE}

    def _park(self) -> None:
        """Turns a dense state into one holding rows: its components set aside (`_parked`, read
        back by `_densify`), so that rows added from now on are pending until many."""
        if self._buffer is not None:
            return
        d = self.__dict__
        parked = {name: d.pop(name) for name in list(d) if name not in _CORE}
        self._parked = parked
        self._buffer = RowBuffer()

    def _densify(self) -> None:
        """Makes the state dense: its components, with every row it holds added (nothing for a
        dense state)."""
        if self._buffer is not None:
            type(self)._densify_states([self])

    def _limit(self) -> int:
        """Rows the state may hold: BUFFER_ROWS without components, PENDING_ROWS beside them."""
        return self.BUFFER_ROWS if self._parked is None else self.PENDING_ROWS

    def _component_dict(self) -> dict[str, Any] | None:
        """Where the state's components are (None: a small state has none yet)."""
        if self._buffer is None:
            return self.__dict__
        return self._parked

    def merge(self, other: 'HeadState') -> 'HeadState':
        """Adds `other` (a state of the same head) into self; `other` is unchanged."""
        if type(other) is not type(self) or other.signature != self.signature:
            raise ValueError('Cannot merge a {} of {!r} into a {} of {!r}.'.format(
                type(other).__name__, other.signature, type(self).__name__, self.signature))
        theirs = other._component_dict()
        if theirs is not None:
            mine = self._component_dict()
            if mine is None:  # a small state: empty components beside its rows
                mine = self._parked = self._new_components()
            for name in self._components:
                _merge_component(mine[name], theirs[name])
        their_rows = other._buffer
        if their_rows is not None and their_rows.n:
            self._park()
            self._buffer.extend(their_rows)  # references to other's (read-only) rows
        if self._buffer is not None and self._buffer.n > self._limit():
            self._densify()
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

    def interval_estimates(self, level: float = 0.95) -> dict[str, Any]:
        """{metric key: `heads.metrics.intervals.Estimate` (lower, upper, standard_error), or None
        where the interval is undefined on the data seen} for the metrics with an interval (an
        interval state's; {} for a plain state or a head without intervals)."""
        return {}

    def intervals(self, level: float = 0.95) -> dict[str, tuple[float, float] | None]:
        """{metric key: (lower, upper), or None where undefined} at confidence `level`."""
        return {k: None if e is None else (e.lower, e.upper)
                for k, e in self.interval_estimates(level).items()}


_CORE = ('signature', 'face', 'example_count', 'weighted_example_count')


def _small_state(cls: type, face: Any, examples: float, weighted: float, layout: tuple | None,
                 data: bytes) -> HeadState:
    """A small state from its pickle (`HeadState.__reduce_ex__`)."""
    state = cls.small(face)
    state.example_count = examples
    state.weighted_example_count = weighted
    state._buffer.__setstate__((layout, data))
    return state


def add_counts_groups(states: Sequence[HeadState], n_rows: np.ndarray, w_sum: np.ndarray
                      ) -> None:
    """Adds n_rows[g] examples of total weight w_sum[g] to states[g]."""
    for state, examples, weighted in zip(states, n_rows, w_sum):
        state._add_counts(examples, weighted)
