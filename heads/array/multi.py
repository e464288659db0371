"""`MultiHead`'s array face and mergeable state: several heads evaluated on one batch, the logits
split among them in head order (or given as a dict by head name) and the labels a dict by head
name, with tf.estimator 2.15's checks and messages.

`MultiHeadFace` is built from the MultiHead's heads and weights (`MultiHead._array_face`) and does
the numpy work the MultiHead delegates — `predictions`, `loss`, `invalid_rows` and `new_state` —
through each member head's own array face. Never imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from heads.keys import MetricKeys, Reduction
from heads.metrics import Groups, concat_plots
from heads.state import HeadState

__all__ = ['MultiHeadFace', 'MultiHeadState', 'MultiHeadIntervalState']


@dataclasses.dataclass(frozen=True, eq=False)
class MultiHeadFace:
    """The array face of a `MultiHead` of `heads` (each a `heads.base.Head`) with `head_weights`
    (empty: 1 each)."""

    heads: tuple[Any, ...]
    head_weights: tuple[float, ...] = ()

    @property
    def weights(self) -> tuple[float, ...]:
        """Each head's weight in the loss."""
        return tuple(self.head_weights) or tuple(1.0 for _ in self.heads)

    def new_state(self, intervals: bool = False) -> 'MultiHeadState':
        return (MultiHeadIntervalState if intervals else MultiHeadState)(self)

    def split_logits(self, logits: Any) -> dict[str, Any]:
        """Logits per head name: from a dict (every head present) or one array split on the last
        axis in head order. Raises the TF face's errors."""
        heads = self.heads
        if isinstance(logits, Mapping):
            missing = [h.name for h in heads if h.name not in logits]
            if missing:
                raise ValueError('logits has missing values for head(s): {}'.format(missing))
            return {h.name: logits[h.name] for h in heads}
        lg = np.asarray(logits)
        dims = [h.logits_dimension for h in heads]
        expected = sum(dims)
        if lg.ndim < 1 or lg.shape[-1] != expected:
            # tf.estimator prints the actual size where it means the expected one, and vice versa.
            raise ValueError(
                'Could not split logits of shape {} among the heads with individual logits '
                'dimensions: {}. The last dimension of the logits tensor should equal {} but is {}.'
                .format(list(lg.shape), dims, lg.shape[-1] if lg.ndim else None, expected))
        cuts = np.cumsum(dims)[:-1]
        return {h.name: part for h, part in zip(heads, np.split(lg, cuts, axis=-1))}

    def split_labels(self, labels: Any) -> dict[str, Any]:
        """Labels per head name; labels must be a dict holding every head."""
        if not isinstance(labels, Mapping):
            raise ValueError('labels must be a dict. Given: {}'.format(labels))
        missing = [h.name for h in self.heads if h.name not in labels]
        if missing:
            raise ValueError('labels has missing values for head(s): {}'.format(missing))
        return {h.name: labels[h.name] for h in self.heads}

    def predictions(self, logits: Any, keys: Sequence[str] | None = None) -> dict:
        """`{(head name, prediction key): array}` for every key of every head (`keys` is ignored,
        as in tf.estimator)."""
        parts = self.split_logits(logits)
        out: dict[tuple[str, str], np.ndarray] = {}
        for head in self.heads:
            for k, v in head.array_predictions(parts[head.name]).items():
                out[(head.name, k)] = v
        return out

    def loss(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
             ) -> np.ndarray:
        """Per-example loss `[D0..DN, 1]`: Σ_h head_weight_h · (head h's per-example loss reduced
        over its last axis: summed for 'sum', averaged otherwise). Reducing it with the heads' common
        reduction gives `MultiHead.loss` (each head divides by its own element count otherwise)."""
        parts = self.split_logits(logits)
        labels = self.split_labels(labels)
        total: np.ndarray | None = None
        for head, weight in zip(self.heads, self.weights):
            per = np.asarray(head.array_loss(labels[head.name], parts[head.name], features),
                             dtype=np.float64)
            per = (per.sum(axis=-1, keepdims=True) if head.loss_reduction == Reduction.SUM
                   else per.mean(axis=-1, keepdims=True))
            total = weight * per if total is None else total + weight * per
        return total

    def invalid_rows(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                     ) -> list:
        """Every head's invalid rows (roles and reasons as the head gives them); a logits array
        that cannot be split or labels that are not a dict of every head mark every row."""
        try:
            n_rows = (len(next(iter(logits.values()))) if isinstance(logits, Mapping)
                      else len(logits))
        except TypeError:
            n_rows = 1
        everything = np.ones(n_rows, dtype=bool)
        try:
            parts = self.split_logits(logits)
        except ValueError as e:
            return [('logits', str(e), everything)]
        try:
            labels = self.split_labels(labels)
        except ValueError as e:
            return [('labels', str(e), everything)]
        out = []
        for head in self.heads:
            out += head.invalid_rows(labels[head.name], parts[head.name], features)
        return out


def _examples(rows: Mapping[str, Any]) -> int:
    """Number of examples of a head's prepared rows (the per-row weights' length)."""
    return int(rows['w_row'].shape[0] if 'w_row' in rows else rows['w'].shape[0])


class MultiHeadState(HeadState):
    """`MultiHead` metrics over all data seen: every head's own metrics (dataset semantics, not the
    eager last-batch quirk of tf.estimator), `loss/<head>` = that head's loss over all data, and the
    loss Σ head_weight · head loss."""

    _components = ('states',)

    def __init__(self, face: MultiHeadFace) -> None:
        self.states = [h.new_state(intervals=True) if self.INTERVALS else h.new_state()
                       for h in face.heads]
        super().__init__(('MultiHead', tuple(s.signature for s in self.states), face.weights))
        self.face = face

    @staticmethod
    def _prepare(face: MultiHeadFace, labels: Any, logits: Any,
                 features: Mapping[str, Any] | None) -> tuple | None:
        """Every head's prepared rows (each head's `_prepare` on its logits and labels), all
        validated before any state changes; None when a head's state has no such step or cannot
        take this batch in one pass."""
        parts = face.split_logits(logits)
        labels = face.split_labels(labels)
        out = []
        for head in face.heads:
            state = head.new_state()  # its class and face (an empty state allocates little)
            cls = type(state)
            prepare = getattr(cls, '_prepare', None)
            if prepare is None or getattr(state, 'face', None) is None:
                return None
            rows = prepare(state.face, labels[head.name], parts[head.name], features)
            if rows is None:
                return None
            out.append((cls, rows))
        return tuple(out)

    @staticmethod
    def _update_rows(states: Sequence['MultiHeadState'], codes: np.ndarray | None,
                     rows: tuple) -> None:
        """Adds each head's prepared rows to its states (that head's grouped update), and the
        example counts (a MultiHead row weighs 1)."""
        n_rows = None
        for i, (_, head_rows) in enumerate(rows):
            member = [st.states[i] for st in states]
            cls = type(member[0])  # the member's own class (an interval state's, maybe)
            if n_rows is None:
                n_rows = Groups.of(codes, len(states), _examples(head_rows)).sum()
            cls._update_rows(member, codes, head_rows)
        for st, n in zip(states, n_rows.tolist() if n_rows is not None else ()):
            st._add_counts(n, n)

    def update(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
               ) -> 'MultiHeadState':
        if type(self).update_groups([self], None, labels, logits, features):
            return self
        parts = self.face.split_logits(logits)
        labels = self.face.split_labels(labels)
        # Each head's batch goes to a fresh state first, so one head's bad labels change nothing.
        fresh = [(h.new_state(intervals=True) if self.INTERVALS else h.new_state())
                 .update(labels[h.name], parts[h.name], features) for h in self.face.heads]
        for mine, batch in zip(self.states, fresh):
            mine.merge(batch)
        rows, _ = fresh[0].counts()
        self._add_counts(rows, rows)
        return self

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for head, state in zip(self.face.heads, self.states):
            out['%s/%s' % (MetricKeys.LOSS, head.name)] = state.loss()
        for state in self.states:
            out.update(state.result())
        return out

    def loss(self) -> float:
        return float(sum(w * s.loss() for w, s in zip(self.face.weights, self.states)))

    def bounds(self) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for state in self.states:
            out.update(state.bounds())
        return out

    def plots(self) -> dict[str, np.ndarray]:
        """The heads' curves, sub_key prefixed by the head name (`head1`, `head1/classId:0`)."""
        parts = []
        for head, state in zip(self.face.heads, self.states):
            p = dict(state.plots())
            if len(p['curve']):
                p['sub_key'] = np.array([head.name if not k else '%s/%s' % (head.name, k)
                                         for k in p['sub_key']], dtype=object)
            parts.append(p)
        return concat_plots(parts)


class MultiHeadIntervalState(MultiHeadState):
    """A `MultiHeadState` whose member states keep confidence-interval sums: its intervals are
    the member heads' (keys as in `result()`)."""

    INTERVALS = True

    def interval_estimates(self, level: float = 0.95) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for state in self.states:
            out.update(state.interval_estimates(level))
        return out
