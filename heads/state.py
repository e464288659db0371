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
`heads.array`. Never imports TensorFlow.
"""
from __future__ import annotations

import abc
from typing import Any, Mapping, Sequence

import numpy as np

from heads.metrics.plots import empty_plots

__all__ = ['HeadState', 'add_counts_groups']


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
