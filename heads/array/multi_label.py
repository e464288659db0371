"""`MultiLabelHead`'s array face and mergeable state: sigmoid cross-entropy averaged over
`n_classes` independent labels, with tf.estimator 2.15's label forms, checks and messages.

Label forms: a numeric multi-hot array `[D0..DN, n_classes]` (values in [0, 1], soft values
allowed), or one list of class ids per row — a list of lists, an object array of lists / arrays, or
an Arrow (large) list array (tf.estimator's SparseTensor labels; rank-2 logits only) — or, with
`label_vocabulary`, the same with class names (a 2-D object array of names is one row per row).

`MultiLabelFace` is built from the head's configuration (`MultiLabelHead._array_face`) and does the
numpy work the head delegates: `inputs` (validation and unweighted loss), `predictions`, `loss`,
`invalid_rows` and `new_state`. `MultiLabelState` accumulates the head's metrics (pooled and per
class) over all data seen, plus AUC bounds and curves. Never imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from heads.array import inputs as ai
from heads.array.multi_class import classifier_signature
from heads.array.multi_label_ids import indicator, is_id_lists, sparse_ids
from heads.array.numerics import mean_last_axis, sigmoid32, sigmoid_cross_entropy_mean
from heads.array.row_problems import logits_and_weight_problems, row_problems
from heads.keys import MetricKeys, PredictionKeys, summary_key, threshold_key
from heads.metrics import (Confusion, Groups, Histogram, KerasAUC, LossSum, WeightedMean,
                           calibration_plot, concat_plots, confusion_plot, flat_weights)
from heads.state import HeadState

__all__ = ['MultiLabelFace', 'MultiLabelState', 'LABELS_NOT_INDICATOR', 'LABELS_NOT_SPARSE_IDS',
           'LABELS_UNKNOWN_NAME']

# The TF face's messages.
LABELS_NOT_INDICATOR = 'labels must be an integer indicator Tensor with values in [0, 1]'
LABELS_NOT_SPARSE_IDS = 'labels must be an integer SparseTensor with values in [0, {n})'
# tf.estimator looks string class names up with OOV id −1 and then fails in SparseToDense.
LABELS_UNKNOWN_NAME = 'Indices are not valid (out of bounds): label not in label_vocabulary'


@dataclasses.dataclass(frozen=True, eq=False)
class MultiLabelFace:
    """The array face of a `MultiLabelHead` with this configuration."""

    name: str | None
    n_classes: int
    weight_column: Any
    thresholds: tuple[float, ...]
    label_vocabulary: Sequence[str] | None
    loss_reduction: str
    loss_fn: Callable[..., Any] | None
    classes_for_class_based_metrics: tuple[int, ...]

    @property
    def signature(self) -> tuple:
        return classifier_signature('MultiLabelHead', self.name, self.n_classes,
                                    self.loss_reduction, self.weight_column,
                                    self.label_vocabulary, self.thresholds,
                                    self.classes_for_class_based_metrics, self.loss_fn)

    def class_tag(self, class_id: int) -> str:
        """The per-class metric suffix: `class<id>`, or the vocabulary name."""
        if self.label_vocabulary:
            return str(self.label_vocabulary[class_id])
        return 'class%d' % class_id

    def new_state(self, intervals: bool = False) -> 'MultiLabelState':
        """An empty state: small (holding its rows) until it has more than
        `MultiLabelState.BUFFER_ROWS`; `intervals`: one keeping confidence-interval sums."""
        return (MultiLabelIntervalState if intervals else MultiLabelState).small(self)

    def labels(self, labels: Any, logits: np.ndarray) -> np.ndarray:
        """Checked multi-hot labels `[D0..DN, n_classes]`: dense labels keep their dtype, id lists
        become int64. Raises the TF face's errors."""
        n = self.n_classes
        if labels is None:
            ai.dense_labels(None, logits, n)  # raises the missing-labels text
        if is_id_lists(labels):
            rows, ids, n_rows, names = sparse_ids(labels, self.label_vocabulary)
            bad = (ids < 0) | (ids >= n)
            if bad.any():
                raise ValueError(LABELS_UNKNOWN_NAME if names
                                 else LABELS_NOT_SPARSE_IDS.format(n=n))
            return ai.dense_labels(indicator(rows, ids, n_rows, n), logits, n)
        arr = ai.as_label_array(labels)
        if arr.size and arr.dtype.kind not in 'iufb':
            raise ValueError(LABELS_NOT_INDICATOR)
        with np.errstate(invalid='ignore'):
            if arr.size and not np.all((arr >= 0) & (arr <= 1)):
                raise ValueError(LABELS_NOT_INDICATOR)
        return ai.dense_labels(arr, logits, n)

    def inputs(self, labels: Any, logits: Any, features: Mapping[str, Any] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | float, np.ndarray]:
        """(checked logits, multi-hot labels, example weights, unweighted per-example loss) of a
        batch, in the TF face's order of checks; a rejected batch raises and keeps nothing."""
        lg = ai.check_logits(logits, self.n_classes)
        y = self.labels(labels, lg)
        weights = ai.example_weights(features, self.weight_column, lg)
        if self.loss_fn is not None:
            u = ai.call_loss_fn(self.loss_fn, y, lg, features, 1)
        else:
            u = sigmoid_cross_entropy_mean(y, lg)
        return lg, y, weights, u

    def predictions(self, logits: Any, keys: Sequence[str] | None = None) -> dict:
        """`MultiLabelHead.predictions` in numpy: classes lists every class name."""
        p = PredictionKeys
        keys = ai.check_keys(keys, (p.LOGITS, p.PROBABILITIES, p.CLASSES))
        lg = ai.check_logits(logits, self.n_classes)
        out: dict[str, np.ndarray] = {}
        if p.LOGITS in keys:
            out[p.LOGITS] = lg
        if p.PROBABILITIES in keys:
            out[p.PROBABILITIES] = sigmoid32(lg)
        if p.CLASSES in keys:
            out[p.CLASSES] = ai.all_classes(lg, self.n_classes, self.label_vocabulary)
        return out

    def loss(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
             ) -> np.ndarray:
        """Per-example weighted unreduced loss `[D0..DN, 1]` float64."""
        _, _, weights, u = self.inputs(labels, logits, features)
        return ai.weighted_per_example(u, weights)

    def invalid_rows(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                     ) -> list:
        """Rows `MultiLabelHead` cannot evaluate: bad logits, weights and labels (never raises)."""
        lg, out = logits_and_weight_problems(logits, self.n_classes, self.weight_column, features)
        if lg is None:
            return row_problems(out)
        try:
            out += self._label_problems(labels, lg)
        except (ValueError, TypeError) as e:
            out.append(('labels', str(e), np.ones(lg.shape[0], dtype=bool)))
        return row_problems(out)

    def _label_problems(self, labels: Any, lg: np.ndarray) -> list:
        """The labels' problems as row masks; raises when the labels are unusable as a whole."""
        n_rows = lg.shape[0]
        n = self.n_classes
        if labels is None:
            ai.dense_labels(None, lg, n)
        if is_id_lists(labels):
            rows, ids, got_rows, names = sparse_ids(labels, self.label_vocabulary)
            bad_rows = np.zeros(got_rows, dtype=bool)
            bad_rows[rows[(ids < 0) | (ids >= n)]] = True
            reason = LABELS_UNKNOWN_NAME if names else LABELS_NOT_SPARSE_IDS.format(n=n)
            ai.dense_labels(indicator(rows, ids, got_rows, n), lg, n)
            return [('labels', reason, bad_rows)]
        arr = ai.as_label_array(labels)
        if arr.size and arr.dtype.kind not in 'iufb':
            return [('labels', LABELS_NOT_INDICATOR, np.ones(n_rows, dtype=bool))]
        with np.errstate(invalid='ignore'):
            outside = ~((arr >= 0) & (arr <= 1))
        dense = ai.dense_labels(arr, lg, n)
        return [('labels', LABELS_NOT_INDICATOR, ai.rows_any(outside.reshape(dense.shape), n_rows))]


_POOLED_PAIRS_PER_STEP = 1 << 19


class MultiLabelState(HeadState):
    """`MultiLabelHead` metrics over all data seen (the keys of its update_metrics), plus AUC
    bounds and curves.

    One `KerasAUC` gives both `auc` and `auc_precision_recall` (the same confusion matrices), over
    every (example, class) pair pooled; each class of `classes_for_class_based_metrics` has its
    own. High-resolution histograms (pooled and per class) bound the exact ROC AUC and feed the
    calibration plot.
    """

    _components = ('average_loss', 'auc', 'histogram', 'accuracy_at', 'confusion', 'class_mean',
                   'class_auc', 'class_histogram', 'class_confusion', 'loss_sum')
    MAX_GROUPS = 128  # states per dense update (histogram sums: see BinaryClassState)
    # A small state's rows (x, y float32 per class; w, u float64) against the dense components
    # (a 200-bucket AUC, a histogram and calibration per class and pooled): see BinaryClassState.
    BUFFER_ROWS = 1024

    def __init__(self, face: MultiLabelFace) -> None:
        super().__init__(face.signature)
        self.face = face
        self.average_loss = WeightedMean()
        self.auc = KerasAUC()
        self.histogram = Histogram()
        self.accuracy_at = [WeightedMean() for _ in face.thresholds]
        self.confusion = Confusion(face.thresholds)
        classes = face.classes_for_class_based_metrics
        self.class_mean = [WeightedMean() for _ in classes]
        self.class_auc = [KerasAUC() for _ in classes]
        self.class_histogram = [Histogram() for _ in classes]
        # Per-class confusion at the head's thresholds: only for plots (exact per-class rows).
        self.class_confusion = [Confusion(face.thresholds) for _ in classes]
        self.loss_sum = LossSum()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if state.get('_buffer') is None and 'class_confusion' not in state:  # pickled before the per-class confusion existed
            self.class_confusion = [Confusion(self.face.thresholds)
                                    for _ in self.face.classes_for_class_based_metrics]

    @staticmethod
    def _prepare(face: MultiLabelFace, labels: Any, logits: Any,
                 features: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
        """A validated batch (errors raise before any state changes) as per-example arrays: float32
        logits `x` and labels `y` [examples, n_classes], float64 weights `w` and unweighted loss
        `u`."""
        lg, y, weights, u = face.inputs(labels, logits, features)
        n_classes = lg.shape[-1]
        return {'x': lg.reshape(-1, n_classes),
                # Keras casts y_true to the predictions' dtype.
                'y': np.asarray(y, dtype=np.float32).reshape(-1, n_classes),
                'w': flat_weights(weights, lg.shape[:-1] + (1,)),
                'u': np.asarray(u, dtype=np.float64).reshape(-1)}

    @classmethod
    def _add_rows(cls, states: Sequence['MultiLabelState'], groups: Groups,
                  rows: Mapping[str, np.ndarray]) -> np.ndarray:
        """Adds the rows of group g to the components of `states[g]`; returns Σw per group."""
        face = states[0].face
        probs = sigmoid32(rows['x'])
        y32 = rows['y']
        positive = y32 != 0
        w_row = rows['w']
        w_sum = groups.sum(w_row)
        wu_sum = groups.sum(rows['u'] * w_row)
        LossSum.add_groups([s.loss_sum for s in states], wu_sum, groups.sum())
        WeightedMean.add_groups([s.average_loss for s in states], wu_sum, w_sum)
        # Indicator labels (all 0 or 1) are the positive flags: the histograms need no label values.
        hard = np.count_nonzero(y32 == 1) == np.count_nonzero(positive)
        _add_pooled(states, face.thresholds, groups, probs, y32, positive, w_row, w_sum, hard)
        for i, c in enumerate(face.classes_for_class_based_metrics):
            _add_class(states, i, bool(face.thresholds), groups, probs[..., c].reshape(-1),
                       positive[..., c].reshape(-1),
                       None if hard else y32[..., c].reshape(-1).astype(np.float64), w_row, w_sum)
        if cls.INTERVALS:
            add_interval_sums(states, groups, rows, probs, positive)
        return w_sum

    def _class_keys(self, c: int) -> tuple[str, str, str]:
        name = self.face.name
        tag = self.face.class_tag(c)
        return (summary_key(MetricKeys.PROBABILITY_MEAN_AT_NAME % tag, name),
                summary_key(MetricKeys.AUC_AT_NAME % tag, name),
                summary_key(MetricKeys.AUC_PR_AT_NAME % tag, name))

    def result(self) -> dict[str, float]:
        face = self.face
        name = face.name
        auc, auc_pr = self.auc.roc_pr()
        out = {summary_key(MetricKeys.LOSS_MEAN, name): self.average_loss.result(),
               summary_key(MetricKeys.AUC, name): auc,
               summary_key(MetricKeys.AUC_PR, name): auc_pr}
        if face.thresholds:
            precision = self.confusion.precision()
            recall = self.confusion.recall()
            # Thresholds formatting alike (%g) share a key: the later one wins, as in tf.estimator.
            for i, t in enumerate(face.thresholds):
                out[summary_key(threshold_key(MetricKeys.ACCURACY_AT_THRESHOLD, t), name)] = \
                    self.accuracy_at[i].result()
                out[summary_key(threshold_key(MetricKeys.PRECISION_AT_THRESHOLD, t), name)] = \
                    float(precision[i])
                out[summary_key(threshold_key(MetricKeys.RECALL_AT_THRESHOLD, t), name)] = \
                    float(recall[i])
        for i, c in enumerate(face.classes_for_class_based_metrics):
            mean_key, auc_key, pr_key = self._class_keys(c)
            out[mean_key] = self.class_mean[i].result()
            out[auc_key], out[pr_key] = self.class_auc[i].roc_pr()
        return out

    def loss(self) -> float:
        return self.loss_sum.value(self.face.loss_reduction)

    def bounds(self) -> dict[str, tuple[float, float]]:
        """Bounds of the exact ROC AUC (ties ½) for `auc` and each per-class `auc/<tag>`."""
        out = {summary_key(MetricKeys.AUC, self.face.name): self.histogram.auc_bounds()}
        for i, c in enumerate(self.face.classes_for_class_based_metrics):
            out[self._class_keys(c)[1]] = self.class_histogram[i].auc_bounds()
        return out

    def plots(self) -> dict[str, np.ndarray]:
        """Confusion matrices (the AUC's 200 thresholds and, exactly, the head's thresholds) and
        calibration, pooled (sub_key '') and per class ('classId:<c>')."""
        parts = [confusion_plot('', self.auc, self.confusion),
                 calibration_plot('', self.histogram)]
        for i, c in enumerate(self.face.classes_for_class_based_metrics):
            sub_key = 'classId:%d' % c
            parts += [confusion_plot(sub_key, self.class_auc[i], self.class_confusion[i]),
                      calibration_plot(sub_key, self.class_histogram[i])]
        return concat_plots(parts)


def _add_pooled(states: Sequence[MultiLabelState], thresholds: tuple[float, ...], rows: Groups,
                probs: np.ndarray, y32: np.ndarray, positive: np.ndarray, w_row: np.ndarray,
                w_sum: np.ndarray, hard: bool) -> None:
    """Adds the pooled metrics: every (example, class) pair, each with its example's weight."""
    n_classes = probs.shape[-1]
    pairs = rows.repeat(n_classes)
    flat_pos, flat_p = positive.reshape(-1), probs.reshape(-1)
    flat_w = np.repeat(w_row, n_classes)
    flat_y = None if hard else y32.reshape(-1).astype(np.float64)
    # The pooled pairs in blocks of rows, so that each block's per-pair temporaries stay in
    # cache (a batch of 10^5 rows with 20 classes has millions of pairs).
    step = max(1, _POOLED_PAIRS_PER_STEP // max(n_classes, 1))
    for r0 in range(0, rows.rows, step):
        block = rows.block(r0, r0 + step).repeat(n_classes)
        e = slice(r0 * n_classes, (r0 + step) * n_classes)
        KerasAUC.update_groups([s.auc for s in states], block, flat_pos[e], flat_p[e],
                               flat_w[e])
        Histogram.update_groups([s.histogram for s in states], block, flat_pos[e],
                                flat_p[e], flat_w[e], None if hard else flat_y[e])
    for i, t in enumerate(thresholds):
        # BinaryAccuracy: exact match of the label with (p > t), averaged over the classes.
        match = (y32 == (probs > np.float32(t)).astype(np.float32)).astype(np.float64)
        per_row = mean_last_axis(match) if match.size else match[..., 0]
        WeightedMean.update_groups([s.accuracy_at[i] for s in states], rows,
                                   per_row.reshape(-1), w_row, w_sum)
    if thresholds:
        Confusion.update_groups([s.confusion for s in states], pairs, flat_pos, flat_p, flat_w)


def _add_class(states: Sequence[MultiLabelState], i: int, with_confusion: bool, rows: Groups,
               p_c: np.ndarray, pos_c: np.ndarray, y_c: np.ndarray | None, w_row: np.ndarray,
               w_sum: np.ndarray) -> None:
    """Adds the metrics of the i-th class of `classes_for_class_based_metrics` (`y_c`: its label
    values, None when they are the 0/1 flags `pos_c`)."""
    WeightedMean.update_groups([s.class_mean[i] for s in states], rows, p_c, w_row, w_sum)
    KerasAUC.update_groups([s.class_auc[i] for s in states], rows, pos_c, p_c, w_row)
    Histogram.update_groups([s.class_histogram[i] for s in states], rows, pos_c, p_c, w_row, y_c)
    if with_confusion:
        Confusion.update_groups([s.class_confusion[i] for s in states], rows, pos_c, p_c, w_row)


# The interval state subclasses MultiLabelState (hence imported after it).
from heads.array.multi_label_ci import MultiLabelIntervalState, add_interval_sums  # noqa: E402
