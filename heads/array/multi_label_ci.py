"""`MultiLabelIntervalState`: a `MultiLabelState` that also keeps the sums of its confidence
intervals (`heads.metrics.intervals`). Never imports TensorFlow.

Per state, `ci` holds per example row (weight w): Σw²; Σw²·x and Σw²·x² of the row's loss, of
its match fraction at each threshold and of each tracked class's probability (delta method,
rows as units); Σw² times the number of positive / negative classes of the row (pooled AUC,
pooled recall), of the positive / negative rows of each tracked class (per-class AUC) and times
the number of classes predicted positive at each threshold (pooled precision).

The pooled AUC and the pooled precision / recall count (example, class) pairs as the units, as
the metrics do, although the pairs of one example are not independent: an approximation (see
docs/intervals.md); per-class AUCs and every mean are exact applications of their formulas.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from heads.array.multi_label import MultiLabelFace, MultiLabelState
from heads.array.numerics import mean_last_axis
from heads.keys import MetricKeys, summary_key, threshold_key
from heads.metrics import Groups
from heads.metrics import intervals as ci
from heads.metrics.histogram import Histogram

__all__ = ['MultiLabelIntervalState', 'add_interval_sums']


class MultiLabelIntervalState(MultiLabelState):
    """A `MultiLabelState` with interval sums (`ci`): the delta method for average_loss, the
    accuracies at thresholds and the per-class probability means; DeLong for the pooled and
    per-class AUC; Wilson for the pooled precision and recall at thresholds. None for the
    precision-recall AUCs."""

    _components = MultiLabelState._components + ('ci',)
    INTERVALS = True

    def __init__(self, face: MultiLabelFace) -> None:
        super().__init__(face)
        n_t = len(face.thresholds)
        n_c = len(face.classes_for_class_based_metrics)
        self.ci = ci.CISums([('w2', 1), ('loss', 2), ('accuracy', 2 * n_t),
                             ('class_mean', 2 * n_c), ('pairs', 2), ('class_pairs', 2 * n_c),
                             ('predicted', n_t)])

    def interval_estimates(self, level: float = 0.95) -> dict[str, ci.Estimate | None]:
        K = MetricKeys
        face = self.face
        name = face.name
        z = ci.normal_quantile(level)
        s = self.ci
        w2 = s.scalar('w2')
        pairs = s.get('pairs')
        loss = s.get('loss')
        out = {summary_key(K.LOSS_MEAN, name): ci.mean_interval(
                   self.average_loss.count, self.average_loss.total, w2, loss[0], loss[1], z),
               summary_key(K.AUC, name): _auc(self.histogram, pairs[0], pairs[1], z)}
        acc, predicted = s.get('accuracy'), s.get('predicted')
        conf = self.confusion
        for i, t in enumerate(face.thresholds):
            mean = self.accuracy_at[i]
            out[summary_key(threshold_key(K.ACCURACY_AT_THRESHOLD, t), name)] = \
                ci.mean_interval(mean.count, mean.total, w2, acc[2 * i], acc[2 * i + 1], z)
            out[summary_key(threshold_key(K.PRECISION_AT_THRESHOLD, t), name)] = _rate(
                conf.tp[i], conf.tp[i] + conf.fp[i], predicted[i], z)
            out[summary_key(threshold_key(K.RECALL_AT_THRESHOLD, t), name)] = _rate(
                conf.tp[i], conf.tp[i] + conf.fn[i], pairs[0], z)
        cm, cp = s.get('class_mean'), s.get('class_pairs')
        for i, c in enumerate(face.classes_for_class_based_metrics):
            mean_key, auc_key, _ = self._class_keys(c)
            mean = self.class_mean[i]
            out[mean_key] = ci.mean_interval(mean.count, mean.total, w2, cm[2 * i],
                                             cm[2 * i + 1], z)
            out[auc_key] = _auc(self.class_histogram[i], cp[2 * i], cp[2 * i + 1], z)
        return out


def _auc(h: Histogram, w2_pos: float, w2_neg: float, z: float) -> ci.Estimate | None:
    if h.negative_weights > 0:
        return None
    _, pos, neg = h._sparse()
    return ci.delong_auc(np.concatenate([[h.nan_pos], pos]), np.concatenate([[h.nan_neg], neg]),
                         w2_pos, w2_neg, z)[1]


def _rate(hits: float, total: float, w2: float, z: float) -> ci.Estimate | None:
    if total <= 0:
        return None
    return ci.wilson(hits / total, ci.effective_size(total, w2), z)


def add_interval_sums(states: Sequence[MultiLabelState], groups: Groups,
                      rows: Mapping[str, np.ndarray], probs: np.ndarray, positive: np.ndarray
                      ) -> None:
    """Adds the interval sums (`MultiLabelIntervalState.ci`) of each group's rows."""
    face = states[0].face
    sums = [st.ci for st in states]
    w = rows['w']
    w2 = w * w
    n_classes = probs.shape[-1]
    add = ci.CISums.add_groups
    add(sums, 'w2', groups.sum(w2))
    add(sums, 'loss', _moments(groups, w2, rows['u']))
    n_pos = positive.sum(axis=1).astype(np.float64)
    add(sums, 'pairs', np.stack([groups.sum(w2 * n_pos), groups.sum(w2 * (n_classes - n_pos))],
                                axis=1))
    y32 = rows['y']
    acc, predicted = [], []
    for t in face.thresholds:
        above = probs > np.float32(t)
        match = (y32 == above.astype(np.float32)).astype(np.float64)
        acc.append(_moments(groups, w2, mean_last_axis(match).reshape(-1)))
        predicted.append(groups.sum(w2 * above.sum(axis=1)))
    if acc:
        add(sums, 'accuracy', np.concatenate(acc, axis=1))
        add(sums, 'predicted', np.stack(predicted, axis=1))
    cm, cp = [], []
    for c in face.classes_for_class_based_metrics:
        cm.append(_moments(groups, w2, probs[:, c].astype(np.float64)))
        pos_c = positive[:, c]
        cp.append(np.stack([groups.sum(w2 * pos_c), groups.sum(w2 * ~pos_c)], axis=1))
    if cm:
        add(sums, 'class_mean', np.concatenate(cm, axis=1))
        add(sums, 'class_pairs', np.concatenate(cp, axis=1))


def _moments(groups: Groups, w2: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[groups, 2]: Σw²·x and Σw²·x² per group."""
    w2x = w2 * x
    return np.stack([groups.sum(w2x), groups.sum(w2x * x)], axis=1)
