"""The regression heads' array face and mergeable state: `RegressionHead` (mean squared error) and
its GLM variants `LogisticRegressionHead` (sigmoid cross-entropy, sigmoid link) and
`PoissonRegressionHead` (log-Poisson loss, exp link), with tf.estimator 2.15's checks and messages.

`RegressionFace` is built from the head's configuration (`RegressionHead._array_face`) and does the
numpy work the head delegates: `inputs` / `unweighted_loss` / `link`, `predictions`, `loss`,
`invalid_rows`, `new_state` and `new_block`. `RegressionState` accumulates average_loss,
prediction/mean, label/mean and the loss over all data seen. Never imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from heads.array import inputs as ai
from heads.array.numerics import log_poisson_loss, log_sigmoid_cross_entropy, sigmoid32
from heads.array.row_problems import logits_problems, weight_problems
from heads.keys import MetricKeys, PredictionKeys, summary_key
from heads.metrics import Groups, LossSum, WeightedMean, flat_weights
from heads.metrics import intervals as ci
from heads.state import HeadState, add_counts_groups

__all__ = ['RegressionFace', 'RegressionState', 'RegressionIntervalState']

_LOGISTIC_LABELS = 'Labels must be in range [0, 1]'
_POISSON_LABELS = ('Labels must be >= 0 for the full Poisson loss (its Stirling term is NaN for '
                   'negative labels)')


def _check_unit_interval(labels: np.ndarray) -> None:
    """LogisticRegressionHead's label check (tf.estimator's message)."""
    with np.errstate(invalid='ignore'):
        if not ((labels >= 0) & (labels <= 1)).all():
            raise ValueError(_LOGISTIC_LABELS)



@dataclasses.dataclass(frozen=True, eq=False)
class RegressionFace:
    """The array face of a regression head with this configuration (`glm`: None, 'logistic' or
    'poisson'; `head_type`: the head's class name, part of the state's signature)."""

    head_type: str
    name: str | None
    label_dimension: int
    weight_column: Any
    loss_reduction: str
    loss_fn: Callable[..., Any] | None = None
    inverse_link_fn: Callable[..., Any] | None = None
    glm: str | None = None
    compute_full_loss: bool = True

    @property
    def signature(self) -> tuple:
        """What identifies the configuration for merging states."""
        return (self.head_type, self.name, self.label_dimension, self.loss_reduction)

    @property
    def has_inverse_link(self) -> bool:
        """Whether predictions differ from logits (then predictions also carry `logits`)."""
        return self.inverse_link_fn is not None or self.glm is not None

    def new_state(self, intervals: bool = False) -> 'RegressionState':
        return (RegressionIntervalState if intervals else RegressionState)(self)

    def new_block(self) -> Any:
        """An empty `heads.array.regression_block.RegressionBlock`: the states of many keys of
        this head as one columnar block (no interval variant)."""
        from heads.array.regression_block import RegressionBlock  # it imports this module
        return RegressionBlock(self)

    def inputs(self, labels: Any, logits: Any, features: Mapping[str, Any] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | float]:
        """Validated (float32 labels [..,d], float32 logits [..,d], float64 weights [..,1] or
        per logit) — the TF face's checks and messages, in its order."""
        logits = ai.check_logits(logits, self.label_dimension)
        labels = ai.numeric_labels(ai.dense_labels(labels, logits, self.label_dimension))
        if self.glm == 'logistic':
            _check_unit_interval(labels)
        weights = ai.example_weights(features, self.weight_column, logits, allow_per_logit=True)
        return labels, logits, weights

    def unweighted_loss(self, labels: np.ndarray, logits: np.ndarray,
                        features: Mapping[str, Any] | None) -> np.ndarray:
        """Unreduced loss [..,d], float64: squared error, the GLM's loss, or the custom loss_fn
        called with numpy arrays (float32 labels and logits, the features dict as given)."""
        if self.glm == 'logistic':
            return log_sigmoid_cross_entropy(labels, logits)
        if self.glm == 'poisson':
            return log_poisson_loss(labels, logits, self.compute_full_loss)
        if self.loss_fn is not None:
            return ai.call_loss_fn(self.loss_fn, labels, logits, features, self.label_dimension)
        diff = labels.astype(np.float64) - logits.astype(np.float64)
        return diff * diff

    def link(self, logits: np.ndarray) -> np.ndarray:
        """Predictions from float32 logits, float32: exp (Poisson), sigmoid (logistic), the
        inverse_link_fn called with a numpy array (its result goes through np.asarray), or the
        logits themselves."""
        if self.glm == 'poisson':
            with np.errstate(over='ignore'):
                return np.exp(logits)
        if self.glm == 'logistic':
            return sigmoid32(logits)
        if self.inverse_link_fn is not None:
            return np.asarray(self.inverse_link_fn(logits), dtype=np.float32)
        return logits

    def predictions(self, logits: Any, keys: Sequence[str] | None = None) -> dict:
        """predictions() in numpy: `{'predictions'}`, plus `'logits'` with an inverse link
        (float32). `keys` is accepted for a uniform array face and ignored (the TF face has no
        such argument)."""
        logits = ai.check_logits(logits, self.label_dimension)
        if not self.has_inverse_link:
            return {PredictionKeys.PREDICTIONS: logits}
        return {PredictionKeys.PREDICTIONS: self.link(logits),
                PredictionKeys.LOGITS: logits}

    def loss(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
             ) -> np.ndarray:
        """Per-example weighted unreduced loss `U · w`, [D0, ..., DN, d] float64."""
        labels, logits, weights = self.inputs(labels, logits, features)
        return ai.weighted_loss(self.unweighted_loss(labels, logits, features), weights)

    def invalid_rows(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                     ) -> list:
        """Rows failing the TF face's checks (shape errors mark every row), non-finite logits,
        labels or weights, logistic labels outside [0, 1] and, with the full Poisson loss,
        negative labels (their loss is NaN); as (role, reason, bool mask over rows)."""
        x, problems = logits_problems(logits, self.label_dimension)
        if x is None:
            return problems
        n = x.shape[0]
        try:
            z = ai.numeric_labels(ai.dense_labels(labels, x, self.label_dimension))
        except (ValueError, TypeError) as e:
            return problems + [('labels', str(e), np.ones(n, dtype=bool))]
        return (problems + self._label_problems(z, n)
                + weight_problems(features, self.weight_column, x, allow_per_logit=True))

    def _label_problems(self, z: np.ndarray, n: int) -> list:
        """Non-finite labels, and labels outside the GLM's domain."""
        problems = []
        finite = np.isfinite(z)
        bad = ai.rows_any(~finite, n)
        if bad.any():
            problems.append(('labels', ai.LABELS_NOT_FINITE, bad))
        with np.errstate(invalid='ignore'):
            if self.glm == 'logistic':
                bad = ai.rows_any(finite & ((z < 0) | (z > 1)), n)
                if bad.any():
                    problems.append(('labels', _LOGISTIC_LABELS, bad))
            elif self.glm == 'poisson' and self.compute_full_loss:
                bad = ai.rows_any(finite & (z < 0), n)
                if bad.any():
                    problems.append(('labels', _POISSON_LABELS, bad))
        return problems


def _row_weight_sum(weights: np.ndarray | float, logits: np.ndarray) -> float:
    """Σ of the example weights over all examples (a per-logit weight counts its mean)."""
    batch = logits.shape[:-1]
    if np.ndim(weights) == 0:
        return float(weights) * float(np.prod(batch, dtype=np.float64))
    w = np.asarray(weights, dtype=np.float64)
    per_example = w.mean(axis=-1) if w.shape[-1] != 1 else w[..., 0]
    return float(np.sum(np.broadcast_to(per_example, batch)))


class RegressionState(HeadState):
    """Mergeable metrics of a `RegressionHead` (and its GLM variants): average_loss,
    prediction/mean, label/mean and the loss sum."""

    _components = ('loss_sum', 'average_loss', 'prediction_mean', 'label_mean')

    def __init__(self, face: RegressionFace) -> None:
        super().__init__(signature=face.signature)
        self.face = face
        self.loss_sum = LossSum()
        self.average_loss = WeightedMean()
        self.prediction_mean = WeightedMean()
        self.label_mean = WeightedMean()

    def update(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
               ) -> 'RegressionState':
        """Adds one batch (validated exactly as the head's loss; errors leave self unchanged)."""
        if type(self).update_groups([self], None, labels, logits, features):
            return self
        processed, logits, weights = self.face.inputs(labels, logits, features)
        unweighted = self.face.unweighted_loss(processed, logits, features)
        predictions = self.face.link(logits)
        # label/mean reads the labels as given (tf.estimator does not reshape them for it).
        raw = np.asarray(labels, dtype=np.float32).astype(np.float64)
        label_mean = WeightedMean().update(raw, weights)
        self.loss_sum.update(unweighted * weights)
        self.average_loss.update(unweighted, weights)
        self.prediction_mean.update(predictions, weights)
        self.label_mean.merge(label_mean)
        self._add_counts(ai.batch_size(logits), _row_weight_sum(weights, logits))
        return self

    @staticmethod
    def _prepare(face: RegressionFace, labels: Any, logits: Any,
                 features: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A validated batch (errors raise before any state changes) as flat per-element float64
        arrays (`u` loss, `p` predictions, `y` labels as given, `w` weights broadcast) and per-row
        weights `w_row`; `d` values per row. None unless the labels as given, the loss and the
        predictions hold one value per logit and the weights one per example (then `update`
        takes Keras' general path, which broadcasts them)."""
        processed, lg, weights = face.inputs(labels, logits, features)
        raw = np.asarray(labels, dtype=np.float32)
        if raw.size != lg.size or np.ndim(weights) not in (0, lg.ndim) or (
                np.ndim(weights) and np.shape(weights)[-1] != 1):
            return None
        unweighted = face.unweighted_loss(processed, lg, features)
        predictions = np.asarray(face.link(lg))
        if unweighted.size != lg.size or predictions.size != lg.size:
            return None  # e.g. an inverse_link_fn of another shape
        return {'u': np.asarray(unweighted, dtype=np.float64).reshape(-1),
                'p': predictions.reshape(-1).astype(np.float64),
                'y': raw.reshape(-1).astype(np.float64),
                'w': flat_weights(weights, lg.shape),
                'w_row': flat_weights(weights, lg.shape[:-1] + (1,)),
                'd': lg.shape[-1]}

    @staticmethod
    def _update_rows(states: Sequence['RegressionState'], codes: np.ndarray | None,
                     rows: Mapping[str, Any]) -> None:
        """Adds the prepared rows: row i to `states[codes[i]]`, one bincount per sum."""
        groups = Groups.of(codes, len(states), rows['w_row'].shape[0])
        # Every metric is a Keras mean over the (example, logit) elements, weights broadcast.
        elements = groups.repeat(rows['d']) if rows['d'] != 1 else groups
        w = rows['w']
        w_sum = elements.sum(w)
        wu_sum = elements.sum(rows['u'] * w)
        wp_sum = elements.sum(rows['p'] * w)
        wy_sum = elements.sum(rows['y'] * w)
        LossSum.add_groups([st.loss_sum for st in states], wu_sum, elements.sum())
        WeightedMean.add_groups([st.average_loss for st in states], wu_sum, w_sum)
        WeightedMean.add_groups([st.prediction_mean for st in states], wp_sum, w_sum)
        WeightedMean.add_groups([st.label_mean for st in states], wy_sum, w_sum)
        add_counts_groups(states, groups.sum(), groups.sum(rows['w_row']))
        if states and states[0].INTERVALS:
            _add_interval_sums(states, groups, rows)

    def result(self) -> dict[str, float]:
        K = MetricKeys
        out = {K.LOSS_MEAN: self.average_loss.result(),
               K.PREDICTION_MEAN: self.prediction_mean.result(),
               K.LABEL_MEAN: self.label_mean.result()}
        return {summary_key(k, self.face.name): float(v) for k, v in out.items()}

    def loss(self) -> float:
        return self.loss_sum.value(self.face.loss_reduction)


class RegressionIntervalState(RegressionState):
    """A `RegressionState` that also keeps the sums of its confidence intervals (`ci`: per row,
    Σw², and Σw²·S, Σw²·S² of the row's sum S of losses, predictions and labels): delta-method
    intervals of average_loss, prediction/mean and label/mean, rows as the units. A batch taking
    Keras' broadcasting path (weights per logit, labels of another shape) has no such sums: the
    state then gives no intervals (None)."""

    _components = RegressionState._components + ('ci',)
    INTERVALS = True

    def __init__(self, face: RegressionFace) -> None:
        super().__init__(face)
        self.ci = ci.CISums([('w2', 1), ('means', 6), ('unsupported', 1)])

    def update(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
               ) -> 'RegressionIntervalState':
        if type(self).update_groups([self], None, labels, logits, features):
            return self
        super().update(labels, logits, features)  # Keras' general path: no interval sums
        self.ci.v[self.ci._slice('unsupported')] += 1.0
        return self

    def interval_estimates(self, level: float = 0.95) -> dict[str, ci.Estimate | None]:
        K = MetricKeys
        z = ci.normal_quantile(level)
        s = self.ci
        means = ((K.LOSS_MEAN, self.average_loss), (K.PREDICTION_MEAN, self.prediction_mean),
                 (K.LABEL_MEAN, self.label_mean))
        if s.scalar('unsupported') > 0:
            return {summary_key(k, self.face.name): None for k, _ in means}
        w2, mom = s.scalar('w2'), s.get('means')
        d = int(self.face.label_dimension)  # values per row
        return {summary_key(k, self.face.name): ci.mean_interval(
                    mean.count, mean.total, w2, mom[2 * i], mom[2 * i + 1], z, d)
                for i, (k, mean) in enumerate(means)}


def _add_interval_sums(states: Sequence[RegressionState], groups: Groups,
                       rows: Mapping[str, Any]) -> None:
    """Adds the interval sums of each group's rows (`RegressionIntervalState.ci`)."""
    d = rows['d']
    w2 = rows['w_row'] * rows['w_row']
    sums = [st.ci for st in states]
    ci.CISums.add_groups(sums, 'w2', groups.sum(w2))
    mom = []
    for name in ('u', 'p', 'y'):
        row_sum = rows[name].reshape(-1, d).sum(axis=1) if d != 1 else rows[name]
        w2x = w2 * row_sum
        mom.append(groups.sum(w2x))
        mom.append(groups.sum(w2x * row_sum))
    ci.CISums.add_groups(sums, 'means', np.stack(mom, axis=1))
