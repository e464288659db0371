"""`MultiClassHead`'s array face and mergeable state: softmax cross-entropy over `n_classes`
logits, label ids (or names of `label_vocabulary`), with tf.estimator 2.15's checks and messages.

Label forms: integer class ids `[D0..DN]` or `[D0..DN, 1]`; with `label_vocabulary`, strings
(bytes are decoded as UTF-8). `MultiClassFace` is built from the head's configuration
(`MultiClassHead._array_face`) and does the numpy work the head delegates: `inputs` (validation and
unweighted loss), `predictions`, `loss`, `invalid_rows`, `new_state` and `new_block`.
`MultiClassState` accumulates average_loss, accuracy and the loss over all data seen. Never imports
TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from heads.array import inputs as ai
from heads.array.numerics import class_ids_of, softmax32, softmax_cross_entropy
from heads.array.row_problems import logits_and_weight_problems, row_problems
from heads.keys import MetricKeys, PredictionKeys, summary_key
from heads.metrics import Groups, LossSum, WeightedMean, flat_weights
from heads.metrics import intervals as ci
from heads.state import HeadState, add_counts_groups

__all__ = ['MultiClassFace', 'MultiClassState', 'MultiClassIntervalState', 'classifier_signature']

_PREDICTION_KEYS = (PredictionKeys.LOGITS, PredictionKeys.PROBABILITIES, PredictionKeys.CLASS_IDS,
                    PredictionKeys.CLASSES, PredictionKeys.ALL_CLASS_IDS,
                    PredictionKeys.ALL_CLASSES)


def classifier_signature(head_type: str, name: str | None, logits_dimension: int,
                         loss_reduction: str, weight_column: Any,
                         label_vocabulary: Sequence[str] | None, thresholds: Sequence[float],
                         classes: Sequence[int], loss_fn: Callable[..., Any] | None) -> tuple:
    """What identifies a multi-class or multi-label head's configuration for merging (a custom
    loss_fn by its name only, since the function object does not survive pickling with its
    identity)."""
    return (head_type, name, logits_dimension, loss_reduction,
            ai.weight_column_key(weight_column) if weight_column is not None else None,
            tuple(label_vocabulary) if label_vocabulary else None,
            tuple(thresholds or ()), tuple(classes or ()), getattr(loss_fn, '__name__', None))


@dataclasses.dataclass(frozen=True, eq=False)
class MultiClassFace:
    """The array face of a `MultiClassHead` with this configuration."""

    name: str | None
    n_classes: int
    weight_column: Any
    label_vocabulary: Sequence[str] | None
    loss_reduction: str
    loss_fn: Callable[..., Any] | None

    @property
    def signature(self) -> tuple:
        return classifier_signature('MultiClassHead', self.name, self.n_classes,
                                    self.loss_reduction, self.weight_column,
                                    self.label_vocabulary, (), (), self.loss_fn)

    def new_state(self, intervals: bool = False) -> 'MultiClassState':
        return (MultiClassIntervalState if intervals else MultiClassState)(self)

    def new_block(self) -> Any:
        """An empty `heads.array.multi_class_block.MultiClassBlock`: the states of many keys of
        this head as one columnar block (no interval variant)."""
        from heads.array.multi_class_block import MultiClassBlock  # it imports this module
        return MultiClassBlock(self)

    def raw_ids(self, labels: Any, logits: np.ndarray) -> np.ndarray:
        """Label ids `[D0..DN, 1]` int64 before the range check (unknown vocabulary strings → −1).

        Raises:
          ValueError: missing labels, wrong shape or dtype (TF face's texts).
        """
        labels = ai.dense_labels(labels, logits, 1)
        if self.label_vocabulary:
            if labels.size and not ai.is_string_array(labels):
                raise ValueError('Labels dtype should be string if there is a vocabulary. Instead '
                                 "got <dtype: '{}'>".format(ai.tf_dtype_name(labels.dtype)))
            return ai.lookup_labels(labels, self.label_vocabulary)
        if labels.size == 0 and labels.dtype == object:
            return np.zeros(labels.shape, dtype=np.int64)
        if not ai.is_integer(labels):
            raise ValueError("Labels dtype should be integer. Instead got <dtype: '{}'>.".format(
                ai.tf_dtype_name(labels.dtype)))
        return labels.astype(np.int64, copy=False)

    def label_ids(self, labels: Any, logits: np.ndarray) -> np.ndarray:
        """Checked label ids `[D0..DN, 1]` int64 in [0, n_classes); raises the TF face's errors."""
        ids = self.raw_ids(labels, logits)
        ai.check_label_range(ids, self.n_classes)
        return ids

    def inputs(self, labels: Any, logits: Any, features: Mapping[str, Any] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | float, np.ndarray]:
        """(checked logits, label ids, example weights, unweighted per-example loss) of a batch,
        in the TF face's order of checks; a rejected batch raises its error and keeps nothing."""
        lg = ai.check_logits(logits, self.n_classes)
        ids = self.label_ids(labels, lg)
        weights = ai.example_weights(features, self.weight_column, lg)
        if self.loss_fn is not None:
            u = ai.call_loss_fn(self.loss_fn, ids, lg, features, 1)
        else:
            u = softmax_cross_entropy(ids, lg)
        return lg, ids, weights, u

    def predictions(self, logits: Any, keys: Sequence[str] | None = None) -> dict:
        """`MultiClassHead.predictions` in numpy."""
        p = PredictionKeys
        keys = ai.check_keys(keys, _PREDICTION_KEYS)
        lg = ai.check_logits(logits, self.n_classes)
        out: dict[str, np.ndarray] = {}
        if p.LOGITS in keys:
            out[p.LOGITS] = lg
        if p.PROBABILITIES in keys:
            out[p.PROBABILITIES] = softmax32(lg)
        if p.CLASS_IDS in keys or p.CLASSES in keys:
            class_ids = class_ids_of(lg)
            if p.CLASS_IDS in keys:
                out[p.CLASS_IDS] = class_ids
            if p.CLASSES in keys:
                names = (np.array(list(self.label_vocabulary), dtype=object)
                         if self.label_vocabulary
                         else np.array([str(i) for i in range(self.n_classes)], dtype=object))
                out[p.CLASSES] = names[class_ids]
        if p.ALL_CLASS_IDS in keys:
            out[p.ALL_CLASS_IDS] = ai.all_class_ids(lg, self.n_classes)
        if p.ALL_CLASSES in keys:
            out[p.ALL_CLASSES] = ai.all_classes(lg, self.n_classes, self.label_vocabulary)
        return out

    def loss(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
             ) -> np.ndarray:
        """Per-example weighted unreduced loss `[D0..DN, 1]` float64."""
        _, _, weights, u = self.inputs(labels, logits, features)
        return ai.weighted_per_example(u, weights)

    def invalid_rows(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                     ) -> list:
        """Rows `MultiClassHead` cannot evaluate: bad logits, weights and labels (never raises)."""
        lg, out = logits_and_weight_problems(logits, self.n_classes, self.weight_column, features)
        if lg is None:
            return row_problems(out)
        n = lg.shape[0]
        try:
            ids = self.raw_ids(labels, lg)
        except (ValueError, TypeError) as e:
            out.append(('labels', str(e), np.ones(n, dtype=bool)))
            return row_problems(out)
        too_large, negative = ai.label_range_mask(ids, self.n_classes)
        out.append(('labels', ai.LABELS_TOO_LARGE.format(n=self.n_classes),
                    ai.rows_any(too_large, n)))
        out.append(('labels', ai.LABELS_NEGATIVE, ai.rows_any(negative, n)))
        return row_problems(out)


class MultiClassState(HeadState):
    """`MultiClassHead` metrics over all data seen: average_loss, accuracy and the loss."""

    _components = ('average_loss', 'accuracy', 'loss_sum')

    def __init__(self, face: MultiClassFace) -> None:
        super().__init__(face.signature)
        self.face = face
        self.average_loss = WeightedMean()
        self.accuracy = WeightedMean()
        self.loss_sum = LossSum()

    @staticmethod
    def _prepare(face: MultiClassFace, labels: Any, logits: Any,
                 features: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
        """A validated batch (errors raise before any state changes) as per-example float64
        arrays: weights `w`, unweighted loss `u` and label-prediction matches `m`."""
        lg, ids, weights, u = face.inputs(labels, logits, features)
        # The loss, the matches and the weights are all [D0..DN, 1]: one value per example.
        return {'w': flat_weights(weights, u.shape),
                'u': np.asarray(u, dtype=np.float64).reshape(-1),
                'm': (ids == class_ids_of(lg)).reshape(-1)}

    @staticmethod
    def _update_rows(states: Sequence['MultiClassState'], codes: np.ndarray | None,
                     rows: Mapping[str, np.ndarray]) -> None:
        """Adds the prepared rows: row i to `states[codes[i]]`, one bincount per sum."""
        w = rows['w']
        groups = Groups.of(codes, len(states), w.shape[0])
        w_sum = groups.sum(w)
        wu_sum = groups.sum(rows['u'] * w)
        n_rows = groups.sum()
        LossSum.add_groups([s.loss_sum for s in states], wu_sum, n_rows)
        WeightedMean.add_groups([s.average_loss for s in states], wu_sum, w_sum)
        WeightedMean.update_groups([s.accuracy for s in states], groups, rows['m'], w, w_sum)
        add_counts_groups(states, n_rows, w_sum)
        if states and states[0].INTERVALS:
            w2 = w * w
            w2u = w2 * rows['u']
            ci.CISums.add_groups([s.ci for s in states], 'sums', np.stack(
                [groups.sum(w2), groups.sum(w2u), groups.sum(w2u * rows['u'])], axis=1))

    def result(self) -> dict[str, float]:
        name = self.face.name
        return {summary_key(MetricKeys.LOSS_MEAN, name): self.average_loss.result(),
                summary_key(MetricKeys.ACCURACY, name): self.accuracy.result()}

    def loss(self) -> float:
        return self.loss_sum.value(self.face.loss_reduction)


class MultiClassIntervalState(MultiClassState):
    """A `MultiClassState` that also keeps the sums of its confidence intervals (`ci`: Σw², Σw²·u,
    Σw²·u² of the loss u): Wilson for accuracy, the delta method for average_loss."""

    _components = MultiClassState._components + ('ci',)
    INTERVALS = True

    def __init__(self, face: MultiClassFace) -> None:
        super().__init__(face)
        self.ci = ci.CISums([('sums', 3)])

    def interval_estimates(self, level: float = 0.95) -> dict[str, ci.Estimate | None]:
        z = ci.normal_quantile(level)
        w2, w2u, w2u2 = self.ci.get('sums').tolist()
        loss, acc = self.average_loss, self.accuracy
        accuracy = (ci.wilson(acc.total / acc.count, ci.effective_size(acc.count, w2), z)
                    if acc.count > 0 else None)
        name = self.face.name
        return {summary_key(MetricKeys.LOSS_MEAN, name):
                ci.mean_interval(loss.count, loss.total, w2, w2u, w2u2, z),
                summary_key(MetricKeys.ACCURACY, name): accuracy}
