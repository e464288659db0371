"""`BinaryClassHead`'s array face and mergeable state: sigmoid cross-entropy over one logit per
example, with tf.estimator 2.15's label forms, losses, predictions and messages.

`BinaryClassFace` is built from the head's configuration (`BinaryClassHead._array_face`) and does
the numpy work the head delegates: `inputs` / `unweighted_loss` (validation and loss),
`predictions`, `loss`, `invalid_rows` and `new_state`. `BinaryClassState` accumulates the head's
update_metrics over all data seen. Never imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from heads.array import inputs as ai
from heads.array.numerics import log_sigmoid_cross_entropy, sigmoid32, softmax32
from heads.array.row_problems import classifier_invalid_rows
from heads.keys import MetricKeys, PredictionKeys, summary_key, threshold_key
from heads.metrics import (Confusion, Groups, Histogram, KerasAUC, LossSum, WeightedMean,
                           calibration_plot, concat_plots, confusion_plot, cumulative_from_top,
                           div_no_nan, flat_weights)
from heads.metrics import intervals as ci
from heads.state import HeadState

if TYPE_CHECKING:  # pragma: no cover
    from heads.array.binary_block import BinaryClassBlock

__all__ = ['BinaryClassFace', 'BinaryClassState', 'BinaryClassIntervalState', 'binary_metrics',
           'confusion_cells', 'correct_at']

_PREDICTION_KEYS = (PredictionKeys.LOGITS, PredictionKeys.LOGISTIC, PredictionKeys.PROBABILITIES,
                    PredictionKeys.CLASS_IDS, PredictionKeys.CLASSES, PredictionKeys.ALL_CLASS_IDS,
                    PredictionKeys.ALL_CLASSES)


@dataclasses.dataclass(frozen=True, eq=False)
class BinaryClassFace:
    """The array face of a `BinaryClassHead` with this configuration."""

    name: str | None
    thresholds: tuple[float, ...]
    label_vocabulary: Sequence[str] | None
    weight_column: Any
    loss_reduction: str
    loss_fn: Callable[..., Any] | None

    @property
    def signature(self) -> tuple:
        """What identifies the configuration for merging states."""
        return ('BinaryClassHead', self.name, self.thresholds, self.loss_reduction)

    def new_state(self, intervals: bool = False) -> 'BinaryClassState':
        """An empty state: small (holding its rows) until it has more than
        `BinaryClassState.BUFFER_ROWS`; `intervals`: one keeping confidence-interval sums."""
        return (BinaryClassIntervalState if intervals else BinaryClassState).small(self)

    def new_block(self) -> 'BinaryClassBlock':
        """An empty block (0 keys): the states of many keys of this head held as columns
        (`heads.array.binary_block`)."""
        from heads.array.binary_block import BinaryClassBlock
        return BinaryClassBlock(self)

    def inputs(self, labels: Any, logits: Any, features: Mapping[str, Any] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | float]:
        """Validated (float32 labels [..,1], float32 logits [..,1], float64 weights) — the TF
        face's checks and messages, in its order (logits, labels, vocabulary, range, weights)."""
        logits = ai.check_logits(logits, 1)
        labels = ai.dense_labels(labels, logits, 1)
        if self.label_vocabulary is not None:
            labels = ai.lookup_labels(labels, self.label_vocabulary)
        labels = ai.numeric_labels(labels)
        ai.check_label_range(labels, 2)
        weights = ai.example_weights(features, self.weight_column, logits)
        return labels, logits, weights

    def unweighted_loss(self, labels: np.ndarray, logits: np.ndarray,
                        features: Mapping[str, Any] | None) -> np.ndarray:
        """Unreduced loss [..,1], float64: sigmoid cross-entropy, or the custom loss_fn called
        with numpy arrays (float32 labels and logits, the features dict as given)."""
        if self.loss_fn is not None:
            return ai.call_loss_fn(self.loss_fn, labels, logits, features, 1)
        return log_sigmoid_cross_entropy(labels, logits)

    def predictions(self, logits: Any, keys: Sequence[str] | None = None) -> dict:
        """predictions() in numpy: float32 logits / logistic / probabilities, int64 class_ids,
        int32 all_class_ids, and class names as object arrays of str."""
        keys = tuple(ai.check_keys(keys, _PREDICTION_KEYS))
        logits = ai.check_logits(logits, 1)
        class_ids = (logits > 0).astype(np.int64)  # argmax([0, x]): ties and NaN → 0
        names = (list(self.label_vocabulary) if self.label_vocabulary is not None
                 else ['0', '1'])
        n0 = logits.shape[0]
        out = {
            PredictionKeys.LOGITS: logits,
            PredictionKeys.LOGISTIC: sigmoid32(logits),
            PredictionKeys.PROBABILITIES: softmax32(
                np.concatenate([np.zeros_like(logits), logits], axis=-1)),
            PredictionKeys.CLASS_IDS: class_ids,
            PredictionKeys.CLASSES: np.asarray(names[:2], dtype=object)[class_ids],
            PredictionKeys.ALL_CLASS_IDS: np.tile(np.arange(2, dtype=np.int32), (n0, 1)),
            PredictionKeys.ALL_CLASSES: np.tile(np.asarray(names, dtype=object), (n0, 1)),
        }
        return {k: out[k] for k in _PREDICTION_KEYS if k in keys}

    def loss(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
             ) -> np.ndarray:
        """Per-example weighted unreduced loss `U · w`, [D0, ..., DN, 1] float64."""
        labels, logits, weights = self.inputs(labels, logits, features)
        return ai.weighted_loss(self.unweighted_loss(labels, logits, features), weights)

    def invalid_rows(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                     ) -> list:
        """Rows failing the TF face's checks (shape errors mark every row), non-finite logits
        and non-finite weights, as (role, reason, bool mask over the first dimension)."""
        return classifier_invalid_rows(labels, logits, features, logits_dimension=1,
                                       n_classes=2, vocabulary=self.label_vocabulary,
                                       weight_column=self.weight_column)


class BinaryClassState(HeadState):
    """Mergeable metrics of a `BinaryClassHead`: the keys and values of its update_metrics.

    Components: the loss sum, Keras means (average_loss, accuracy, prediction/mean, label/mean,
    per-threshold accuracy), confusion matrices (precision / recall on class ids, and at each
    threshold on probabilities), Keras' 200-threshold AUC, and a high-resolution histogram for
    AUC bounds and calibration.
    """

    _components = ('loss_sum', 'average_loss', 'accuracy', 'class_confusion', 'prediction_mean',
                   'label_mean', 'auc', 'histogram', 'threshold_accuracy', 'threshold_confusion')
    MAX_GROUPS = 128  # states per dense update: 128 × 2 × 8194 float64 histogram sums = 16 MB
    # A small state's rows (x, y float32; w, u float64: 24 bytes each) cost about what the dense
    # components do (~10 kB with Python's objects) at a few hundred rows; up to 1024 rows (24 kB)
    # building them is amortized over many rows.
    BUFFER_ROWS = 1024

    def __init__(self, face: BinaryClassFace) -> None:
        super().__init__(signature=face.signature)
        self.face = face
        self.loss_sum = LossSum()
        self.average_loss = WeightedMean()
        self.accuracy = WeightedMean()
        self.class_confusion = Confusion([0.5])
        self.prediction_mean = WeightedMean()
        self.label_mean = WeightedMean()
        self.auc = KerasAUC()
        self.histogram = Histogram()
        self.threshold_accuracy = [WeightedMean() for _ in face.thresholds]
        self.threshold_confusion = Confusion(face.thresholds)

    @staticmethod
    def _prepare(face: BinaryClassFace, labels: Any, logits: Any,
                 features: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
        """A validated batch (errors raise before any state changes) as per-example arrays: float32
        logits `x` and labels `y`, float64 weights `w` and unweighted loss `u`."""
        labels, logits, weights = face.inputs(labels, logits, features)
        unweighted = face.unweighted_loss(labels, logits, features)
        # Logits, labels and weights are all [D0..DN, 1]: one value per example, flattened.
        return {'x': logits.reshape(-1), 'y': labels.reshape(-1),
                'w': flat_weights(weights, logits.shape),
                'u': np.asarray(unweighted, dtype=np.float64).reshape(-1)}

    @classmethod
    def _add_rows(cls, states: Sequence['BinaryClassState'], groups: Groups,
                  rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """Adds the rows of group g to the components of `states[g]` in one pass over the rows;
        returns Σw per group."""
        face = states[0].face
        x, y, w = rows['x'], rows['y'], rows['w']
        p = sigmoid32(x)
        positive = y != 0
        # Each per-group sum is a pass over the batch: every sum is taken once and shared.
        n_rows = groups.sum()
        # Labels all 0 or 1 (label != 0 iff label == 1) let several sums come from one pass.
        hard = np.count_nonzero(y == 1) == np.count_nonzero(positive)
        w_sum = _add_means_and_curves(states, groups, y, w, rows['u'], p, positive, hard, n_rows)
        key = _add_confusions(states, face.thresholds, groups, x, y, w, p, positive, hard, w_sum)
        if cls.INTERVALS:
            _add_interval_sums(states, groups, rows, p, key, hard)
        return w_sum

    def result(self) -> dict[str, float]:
        means = {name: (m.total, m.count) for name, m in (
            ('loss', self.average_loss), ('accuracy', self.accuracy),
            ('prediction', self.prediction_mean), ('label', self.label_mean))}
        for i, m in enumerate(self.threshold_accuracy):
            means[i] = (m.total, m.count)
        cc, tc = self.class_confusion, self.threshold_confusion
        out = binary_metrics(self.face, means, (cc.tp, cc.fp, cc.fn), (tc.tp, tc.fp, tc.fn),
                             self.auc.roc_pr())
        return {k: float(v) for k, v in out.items()}

    def loss(self) -> float:
        return self.loss_sum.value(self.face.loss_reduction)

    def bounds(self) -> dict[str, tuple[float, float]]:
        return {summary_key(MetricKeys.AUC, self.face.name): self.histogram.auc_bounds()}

    def plots(self) -> dict[str, np.ndarray]:
        """Confusion rows (the AUC's 200 thresholds and, exactly, the head's thresholds) and the
        calibration histogram, sub_key ''."""
        return concat_plots([confusion_plot('', self.auc, self.threshold_confusion),
                             calibration_plot('', self.histogram)])


def binary_metrics(face: BinaryClassFace, means: Mapping[Any, tuple[Any, Any]],
                   class_confusion: tuple[Any, Any, Any], threshold_confusion: tuple[Any, Any, Any],
                   aucs: tuple[Any, Any]) -> dict[str, Any]:
    """The head's metrics {summary key: value} from its sums — floats for one state, arrays
    (one value per key) for a block: `means` (Σ·w, Σw) of 'loss', 'accuracy', 'prediction',
    'label' and of the accuracy at threshold i (key i); (tp, fp, fn) of the class-id confusion
    and at the thresholds (last axis: the thresholds); (Keras ROC AUC, PR AUC)."""
    K = MetricKeys
    label_total, label_count = means['label']
    tp, fp, fn = class_confusion
    out = {
        K.LOSS_MEAN: div_no_nan(*means['loss']),
        K.ACCURACY: div_no_nan(*means['accuracy']),
        K.PRECISION: div_no_nan(tp[..., 0], tp[..., 0] + fp[..., 0]),
        K.RECALL: div_no_nan(tp[..., 0], tp[..., 0] + fn[..., 0]),
        K.PREDICTION_MEAN: div_no_nan(*means['prediction']),
        K.LABEL_MEAN: div_no_nan(label_total, label_count),
        K.ACCURACY_BASELINE: div_no_nan(np.maximum(label_total, label_count - label_total),
                                        label_count),
        K.AUC: aucs[0],
        K.AUC_PR: aucs[1],
    }
    tp, fp, fn = threshold_confusion
    for i, t in enumerate(face.thresholds):
        out[threshold_key(K.ACCURACY_AT_THRESHOLD, t)] = div_no_nan(*means[i])
        out[threshold_key(K.PRECISION_AT_THRESHOLD, t)] = div_no_nan(tp[..., i],
                                                                     tp[..., i] + fp[..., i])
        out[threshold_key(K.RECALL_AT_THRESHOLD, t)] = div_no_nan(tp[..., i],
                                                                  tp[..., i] + fn[..., i])
    return {summary_key(k, face.name): v for k, v in out.items()}


def confusion_cells(thresholds: Sequence[float], x: np.ndarray, p: np.ndarray,
                    positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, cell): the thresholds' float32 sort order (`Confusion.ranks`) and each row's joint
    confusion cell `(class id · (thresholds + 1) + thresholds below p) · 2 + (label != 0)`, from
    which both confusion matrices are read. The class id is `x > 0` (argmax([0, x]); NaN → 0)."""
    order, above = Confusion.ranks(thresholds, p)
    key = (x > 0) * (2 * (len(thresholds) + 1))
    key += above * 2
    key += positive
    return order, key


def correct_at(y: np.ndarray, p: np.ndarray, threshold: float) -> np.ndarray:
    """Keras BinaryAccuracy's match per row: label == (p > threshold in float32)."""
    return y == (p > np.float32(threshold)).astype(np.float32)


def _add_means_and_curves(states: Sequence[BinaryClassState], groups: Groups, y: np.ndarray,
                          w: np.ndarray, u: np.ndarray, p: np.ndarray, positive: np.ndarray,
                          hard: bool, n_rows: np.ndarray) -> np.ndarray:
    """Adds the loss, the means, the histogram and Keras' AUC; returns Σw per group."""
    # The histogram's calibration totals are Σw, Σw·label and Σw·p over the scored rows.
    cal = Histogram.update_groups([st.histogram for st in states], groups, positive, p, w,
                                  None if hard else y.astype(np.float64))
    if np.isnan(p).any():  # NaN scores are outside the histogram: sum directly
        cal = np.stack([groups.sum(w), groups.sum(y * w), groups.sum(p * w)])
    w_sum, wy_sum, wp_sum = cal
    wu_sum = groups.sum(u * w)
    LossSum.add_groups([st.loss_sum for st in states], wu_sum, n_rows)
    WeightedMean.add_groups([st.average_loss for st in states], wu_sum, w_sum)
    WeightedMean.add_groups([st.prediction_mean for st in states], wp_sum, w_sum)
    WeightedMean.add_groups([st.label_mean for st in states], wy_sum, w_sum)
    KerasAUC.update_groups([st.auc for st in states], groups, positive, p, w)
    return w_sum


def _add_confusions(states: Sequence[BinaryClassState], thresholds: tuple[float, ...],
                    groups: Groups, x: np.ndarray, y: np.ndarray, w: np.ndarray, p: np.ndarray,
                    positive: np.ndarray, hard: bool, w_sum: np.ndarray) -> np.ndarray:
    """Adds both confusion matrices and the accuracies (overall and at each threshold); returns
    each row's confusion cell (class id, thresholds below p, label != 0)."""
    # Both confusion matrices from one pass: Σw per (class id, number of thresholds below p,
    # label != 0). The class id is `class_ids > 0.5` (a Confusion at 0.5 on the class ids).
    order, key = confusion_cells(thresholds, x, p, positive)
    n_t = len(thresholds) + 1
    joint = groups.cells(key, 4 * n_t, w).reshape(groups.n, 2, n_t, 2)
    cell_key = key
    by_threshold = joint.sum(axis=1)
    Confusion.add_groups([st.class_confusion for st in states], joint.sum(axis=2))
    Confusion.add_groups([st.threshold_confusion for st in states], by_threshold)
    # Keras accuracies count label == prediction; with labels all 0 or 1 that is a cell of the
    # matrices above, otherwise one pass each.
    if hard:
        correct = joint[:, 1, :, 1].sum(axis=1) + joint[:, 0, :, 0].sum(axis=1)
    else:
        correct = groups.sum(correct_at(y, x, 0.0) * w)  # class id 1 iff x > 0
    WeightedMean.add_groups([st.accuracy for st in states], correct, w_sum)
    for i, t in enumerate(thresholds):
        # Keras BinaryAccuracy: match per element, mean over the (length-1) last axis, weighted.
        if hard:
            rank = int(np.flatnonzero(order == i)[0])  # predicted positive iff above > rank
            correct = (by_threshold[:, rank + 1:, 1].sum(axis=1)
                       + by_threshold[:, :rank + 1, 0].sum(axis=1))
        else:
            correct = groups.sum(correct_at(y, p, t) * w)
        WeightedMean.add_groups([st.threshold_accuracy[i] for st in states], correct, w_sum)
    return cell_key


class BinaryClassIntervalState(BinaryClassState):
    """A `BinaryClassState` that also keeps the sums of its confidence intervals (`ci`): Σw², the
    Σw²·x and Σw²·x² of the loss, prediction and label, and Σw² per confusion cell (class id,
    thresholds below the score, label != 0). Intervals (`interval_estimates`): DeLong for `auc`
    (from the histogram's tie groups), Wilson for accuracy, precision and recall (overall and at
    each threshold), the delta method for average_loss, prediction/mean and label/mean; none for
    auc_precision_recall and accuracy_baseline."""

    _components = BinaryClassState._components + ('ci',)
    INTERVALS = True

    def __init__(self, face: BinaryClassFace) -> None:
        super().__init__(face)
        n_t = len(face.thresholds) + 1
        self.ci = ci.CISums([('w2', 1), ('means', 6), ('cells', 4 * n_t)])

    def interval_estimates(self, level: float = 0.95) -> dict[str, ci.Estimate | None]:
        K = MetricKeys
        z = ci.normal_quantile(level)
        s = self.ci
        w2 = s.scalar('w2')
        mom = s.get('means')
        out: dict[str, ci.Estimate | None] = {}
        for i, (key, mean) in enumerate(((K.LOSS_MEAN, self.average_loss),
                                         (K.PREDICTION_MEAN, self.prediction_mean),
                                         (K.LABEL_MEAN, self.label_mean))):
            out[key] = ci.mean_interval(mean.count, mean.total, w2, mom[2 * i], mom[2 * i + 1], z)
        out[K.ACCURACY] = _rate(self.accuracy.total, self.accuracy.count, w2, z)
        n_t = len(self.face.thresholds) + 1
        cells = s.get('cells').reshape(2, n_t, 2)  # Σw² per (class id, above, label != 0)
        w2_pos = float(cells[:, :, 1].sum())
        cc = self.class_confusion
        out[K.PRECISION] = _rate(cc.tp[0], cc.tp[0] + cc.fp[0], float(cells[1].sum()), z)
        out[K.RECALL] = _rate(cc.tp[0], cc.tp[0] + cc.fn[0], w2_pos, z)
        h = self.histogram
        idx, pos, neg = h._sparse()
        if h.negative_weights <= 0:
            out[K.AUC] = ci.delong_auc(np.concatenate([[h.nan_pos], pos]),
                                       np.concatenate([[h.nan_neg], neg]),
                                       w2_pos, float(cells[:, :, 0].sum()), z)[1]
        else:
            out[K.AUC] = None
        tc = self.threshold_confusion
        at_least = cumulative_from_top(cells.sum(axis=0), axis=0)  # Σw² with above >= r
        order = np.argsort(np.asarray(self.face.thresholds, np.float64).astype(np.float32),
                           kind='stable')
        for i, t in enumerate(self.face.thresholds):
            rank = int(np.flatnonzero(order == i)[0])  # predicted positive iff above > rank
            acc = self.threshold_accuracy[i]
            out[threshold_key(K.ACCURACY_AT_THRESHOLD, t)] = _rate(acc.total, acc.count, w2, z)
            out[threshold_key(K.PRECISION_AT_THRESHOLD, t)] = _rate(
                tc.tp[i], tc.tp[i] + tc.fp[i], float(at_least[rank + 1].sum()), z)
            out[threshold_key(K.RECALL_AT_THRESHOLD, t)] = _rate(
                tc.tp[i], tc.tp[i] + tc.fn[i], w2_pos, z)
        return {summary_key(k, self.face.name): v for k, v in out.items()}


def _rate(hits: float, total: float, w2: float, z: float) -> ci.Estimate | None:
    """Wilson's interval of the weighted rate hits / total on the effective size total² / w2."""
    if total <= 0:
        return None
    return ci.wilson(hits / total, ci.effective_size(total, w2), z)


def _add_interval_sums(states: Sequence[BinaryClassState], groups: Groups,
                       rows: Mapping[str, np.ndarray], p: np.ndarray, cell_key: np.ndarray,
                       hard: bool) -> None:
    """Adds the interval sums (`BinaryClassIntervalState.ci`) of the rows of each group. Every row
    is in one confusion cell, so Σw² per cell also gives Σw² of all rows and, with labels all 0 or
    1 (`hard`: y² = y = [label != 0]), the label's Σw²·y and Σw²·y²."""
    w = rows['w']
    w2 = w * w
    sums = [st.ci for st in states]
    n_cells = sums[0].get('cells').size
    cells = groups.cells(cell_key, n_cells, w2)
    ci.CISums.add_groups(sums, 'cells', cells)
    ci.CISums.add_groups(sums, 'w2', cells.sum(axis=1))
    mom = []
    for x in (rows['u'], p.astype(np.float64)):
        w2x = w2 * x
        mom.append(groups.sum(w2x))
        mom.append(groups.sum(w2x * x))
    if hard:
        w2_pos = cells.reshape(len(sums), -1, 2)[:, :, 1].sum(axis=1)
        mom += [w2_pos, w2_pos]
    else:
        y = rows['y'].astype(np.float64)
        w2y = w2 * y
        mom += [groups.sum(w2y), groups.sum(w2y * y)]
    ci.CISums.add_groups(sums, 'means', np.stack(mom, axis=1))
