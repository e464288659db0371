"""A candidate and a baseline model scored on the same rows: `ComparedHead` and `PairedState`.

`ComparedHead(head)` is the head itself (every attribute delegates to it) except that its states
are `PairedState`s and its `invalid_rows` also checks the baseline's logits. The baseline's logits
travel with each batch in the features under `BASELINE_LOGITS` (a key no column can have).

A `PairedState` holds the head's own state for each model (so `result()`, `loss()`, `counts()`,
`bounds()` and `plots()` are the candidate's, exactly as without a baseline) and the paired
states of `heads.metrics.paired` for the difference's uncertainty. `comparison(level)` gives the
baseline's metrics and, for every metric both models have, the difference candidate − baseline
with its paired interval (None: no level, or no paired form for that metric). Paired forms: the
binary head's ROC AUC (DeLong's paired covariance), its means (average_loss, prediction/mean,
label/mean, accuracy at each threshold) and rates (precision, recall) by the delta method on the
per-row vectors; a one-label regression head's (and its GLM variants') average_loss,
prediction/mean and label/mean; any other head's average_loss (per-row loss differences); and
the binary and one-label regression heads' `loss` when it is a mean over rows. Never imports
TensorFlow.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from heads.array.binary import BinaryClassFace, BinaryClassState
from heads.array.regression import RegressionFace, RegressionState
from heads.array.numerics import sigmoid32
from heads.keys import MetricKeys, Reduction, summary_key, threshold_key
from heads.metrics.paired import PairedAUC, PairedRatios, group_spans, interval
from heads.wrapped_state import ReadsAsInner

__all__ = ['BASELINE_LOGITS', 'ComparedHead', 'PairedState', 'Difference']

BASELINE_LOGITS = '\x00baseline_logits'


class Difference(NamedTuple):
    """candidate − baseline of one metric, with its paired interval (None without one)."""
    value: float
    lower: float | None
    upper: float | None
    standard_error: float | None


class ComparedHead:
    """`head` with paired states (see the module docstring)."""

    def __init__(self, head: Any) -> None:
        self.head = head

    def __getattr__(self, name: str) -> Any:
        if name == 'head':  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.head, name)

    def new_state(self, intervals: bool = False,
                  make: Callable[[Any], Any] | None = None) -> 'PairedState':
        """Paired states over two of the head's states, each `make(head)` (default:
        `head.new_state(intervals=intervals)`, which keeps the sums of each model's own
        intervals when asked)."""
        make = make or (lambda head: head.new_state(intervals=intervals))
        return PairedState(self.head._array_face(), make(self.head), make(self.head))

    def invalid_rows(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                     ) -> list:
        """The head's invalid rows for the candidate's logits, then for the baseline's (role
        'baseline_logits')."""
        features = dict(features or {})
        baseline = features.pop(BASELINE_LOGITS, None)
        out = list(self.head.invalid_rows(labels, logits, features))
        if baseline is not None:
            out += [('baseline_logits' if role == 'logits' else role, reason, mask)
                    for role, reason, mask in self.head.invalid_rows(labels, baseline, features)]
        return out


def _split(features: Mapping[str, Any] | None) -> tuple[Any, dict]:
    features = dict(features or {})
    if BASELINE_LOGITS not in features:
        raise ValueError('A compared head needs the baseline logits with every batch (features '
                         '[BASELINE_LOGITS]).')
    return features.pop(BASELINE_LOGITS), features


def _mean_loss(face: Any) -> bool:
    """Whether the head's `loss` is a mean over rows (one loss value per row, reduced
    sum_over_batch_size / auto): then its diff has a per-row interval too."""
    return ((isinstance(face, BinaryClassFace) or _scalar_regression(face))
            and face.loss_reduction in (Reduction.SUM_OVER_BATCH_SIZE, Reduction.AUTO))


def _ratio_names(face: Any) -> list[str]:
    """The metrics with a paired ratio form, in the order of the state's ratio arrays (`loss`,
    when it is a mean over rows, last)."""
    K = MetricKeys
    loss = ['loss'] if _mean_loss(face) else []
    if _scalar_regression(face):
        return [summary_key(k, face.name) for k in (K.LOSS_MEAN, K.PREDICTION_MEAN,
                                                     K.LABEL_MEAN)] + loss
    if not isinstance(face, BinaryClassFace):
        return [summary_key(K.LOSS_MEAN, face.name)]
    names = [K.LOSS_MEAN, K.ACCURACY, K.PRECISION, K.RECALL, K.PREDICTION_MEAN, K.LABEL_MEAN]
    for t in face.thresholds:
        names += [threshold_key(K.ACCURACY_AT_THRESHOLD, t),
                  threshold_key(K.PRECISION_AT_THRESHOLD, t),
                  threshold_key(K.RECALL_AT_THRESHOLD, t)]
    return [summary_key(k, face.name) for k in names] + loss


def _scalar_regression(face: Any) -> bool:
    """A regression head (or GLM variant) with one label per row."""
    return isinstance(face, RegressionFace) and face.label_dimension == 1


def _regression_columns(face: RegressionFace, labels: Any, logits: Any, features: dict
                        ) -> list[np.ndarray] | None:
    """One model's weighted (n, d) columns of average_loss, prediction/mean and label/mean per
    row; None when the rows do not hold one value each (the state's own general path)."""
    rows = RegressionState._prepare(face, labels, logits, features)
    if rows is None:
        return None
    w = rows['w']
    out = [rows['u'] * w, w, rows['p'] * w, w, rows['y'] * w, w]
    if _mean_loss(face):  # loss = Σ u·w / rows
        out += [rows['u'] * w, np.ones_like(w)]
    return out


def _binary_vectors(face: BinaryClassFace, rows: dict, x: np.ndarray, out: np.ndarray) -> None:
    """One model's weighted (n_i, d_i) per ratio metric of a binary head into `out` [k, 2, rows]
    (metric order: `_ratio_names`), each product written in place (no temporaries per metric)."""
    y, w, u = rows['y'], rows['w'], rows['u']
    p = sigmoid32(x)
    wp = np.multiply(w, y != 0)   # the positives' weights (Confusion's positive: label != 0)
    mul = np.multiply

    def rates(j: int, a: np.ndarray) -> None:
        """accuracy, precision, recall of predicted-positive mask `a` at rows j, j+1, j+2."""
        mul(y == a, w, out=out[j, 0])
        out[j, 1] = w
        mul(a, wp, out=out[j + 1, 0])
        mul(a, w, out=out[j + 1, 1])
        out[j + 2, 0] = out[j + 1, 0]
        out[j + 2, 1] = wp

    mul(u, w, out=out[0, 0])      # average_loss
    out[0, 1] = w
    rates(1, x > 0)               # accuracy, precision, recall on the class ids
    mul(p, w, out=out[4, 0])      # prediction/mean
    out[4, 1] = w
    mul(y, w, out=out[5, 0])      # label/mean
    out[5, 1] = w
    j = 6
    for t in face.thresholds:
        rates(j, p > np.float32(t))
        j += 3
    if _mean_loss(face):          # loss = Σ u·w / rows
        mul(u, w, out=out[j, 0])
        out[j, 1] = 1.0


def _generic_columns(face: Any, labels: Any, logits: Any, features: dict
                     ) -> list[np.ndarray] | None:
    """One model's per-row (weighted loss, weight) of a non-binary head; None when a row has
    several loss values (vector labels)."""
    loss = np.asarray(face.loss(labels, logits, features), dtype=np.float64)
    rows = loss.shape[0]
    loss = loss.reshape(rows, -1)
    if loss.shape[1] != 1:
        return None
    wc = face.weight_column
    w = (np.ones(rows) if wc is None else
         np.asarray(features[wc], dtype=np.float64).reshape(rows, -1)[:, 0])
    return [loss[:, 0], w]


def _take(arrays: dict, order: np.ndarray | None) -> dict:
    return arrays if order is None else {k: v[order] for k, v in arrays.items()}


class PairedState(ReadsAsInner):
    """A head state for the candidate and one for the baseline, and their paired states."""
    READS_AS = 'candidate'  # a PairedState reads as the candidate's head state

    def __init__(self, face: Any, candidate: Any, baseline: Any) -> None:
        self.face = face
        self.candidate = candidate
        self.baseline = baseline
        self.names = _ratio_names(face)
        self.ratios = PairedRatios(len(self.names))
        self.auc = PairedAUC() if isinstance(face, BinaryClassFace) else None

    @property
    def signature(self) -> tuple:
        """What identifies the configuration (a compared head's states merge only with their
        own kind)."""
        return ('Paired', self.candidate.signature)

    # -- updates ------------------------------------------------------------------------------
    def update(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
               ) -> 'PairedState':
        baseline, feats = _split(features)
        self.candidate.update(labels, logits, feats)
        self.baseline.update(labels, baseline, feats)
        self._add_paired([self], None, labels, logits, baseline, feats)
        return self

    @classmethod
    def update_groups(cls, states: Sequence['PairedState'], codes: np.ndarray | None,
                      labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                      ) -> bool:
        """Row i into states[codes[i]] for both models and the paired states; False (nothing
        changed) when the head's own state has no grouped update for this batch."""
        if not states:
            return True
        baseline, feats = _split(features)
        grouped = getattr(type(states[0].candidate), 'update_groups', None)
        if grouped is None or not grouped([s.candidate for s in states], codes, labels, logits,
                                          feats):
            return False
        if not grouped([s.baseline for s in states], codes, labels, baseline, feats):
            for code, state in enumerate(states):  # the head's grouped update refused it
                idx = np.flatnonzero(np.asarray(codes) == code) if codes is not None else None
                state.baseline.update(*_rows(labels, baseline, feats, idx))
        cls._add_paired(states, codes, labels, logits, baseline, feats)
        return True

    @staticmethod
    def _add_paired(states: Sequence['PairedState'], codes: np.ndarray | None, labels: Any,
                    logits: Any, baseline: Any, features: dict) -> None:
        """The paired states' part of a batch: per-row vectors built in group order (one gather
        of the 1-D per-row arrays), then summed per group's span."""
        face = states[0].face
        k = len(states[0].names)
        n = len(states)
        if isinstance(face, BinaryClassFace):
            rows_c = BinaryClassState._prepare(face, labels, logits, features)
            rows_b = BinaryClassState._prepare(face, labels, baseline, features)
            order, spans = group_spans(codes, n, rows_c['x'].size)
            rows_c, rows_b = _take(rows_c, order), _take(rows_b, order)
            zt = np.empty((k, 4, rows_c['x'].size))
            _binary_vectors(face, rows_c, rows_c['x'], zt[:, :2])
            _binary_vectors(face, rows_b, rows_b['x'], zt[:, 2:])
            PairedAUC.add_spans([s.auc for s in states], spans, rows_c['y'] != 0, rows_c['x'],
                                rows_b['x'], rows_c['w'])
        else:
            columns = _regression_columns if _scalar_regression(face) else _generic_columns
            cols_c = columns(face, labels, logits, features)
            cols_b = columns(face, labels, baseline, features)
            rows = np.asarray(logits).shape[0]
            order, spans = group_spans(codes, n, rows)
            size = rows if order is None else order.size
            zt = np.full((k, 4, size), np.nan)  # NaN: no per-row loss, no interval
            if cols_c is not None and cols_b is not None:
                half = len(cols_c) // 2  # (n, d) per metric, candidate's then baseline's
                for j in range(half):
                    for i, column in enumerate((cols_c[2 * j], cols_c[2 * j + 1],
                                                cols_b[2 * j], cols_b[2 * j + 1])):
                        zt[j, i] = column if order is None else column[order]
        PairedRatios.add_spans([s.ratios for s in states], spans, zt)

    def merge(self, other: 'PairedState') -> 'PairedState':
        if not isinstance(other, PairedState):
            raise ValueError('Cannot merge a compared head\'s state with a %s.'
                             % type(other).__name__)
        self.candidate.merge(other.candidate)
        self.baseline.merge(other.baseline)
        self.ratios.merge(other.ratios)
        if self.auc is not None:
            self.auc.merge(other.auc)
        return self

    # -- the candidate's intervals ---------------------------------------------------------------
    def interval_estimates(self, level: float = 0.95) -> dict[str, Any]:
        """The candidate's own intervals (the baseline's: `self.baseline`; the diffs':
        `comparison`)."""
        estimates = getattr(self.candidate, 'interval_estimates', None)
        return estimates(level) if estimates is not None else {}

    # -- the comparison -----------------------------------------------------------------------
    def _variances(self) -> dict[str, tuple[float, float, float]]:
        out = {name: self.ratios.variances(j) for j, name in enumerate(self.names)}
        if self.auc is not None:
            out[summary_key(MetricKeys.AUC, self.face.name)] = self.auc.variances()
        return out

    def comparison(self, level: float | None) -> tuple[dict[str, float], dict[str, Difference],
                                                        dict[str, tuple]]:
        """(the baseline's metrics (with 'loss'), the differences (with 'loss'), the candidate's
        own paired-form intervals {metric: (lower, upper, standard error)}); intervals at
        `level` (None: no intervals)."""
        cand = dict(self.candidate.result())
        cand['loss'] = self.candidate.loss()
        base = dict(self.baseline.result())
        base['loss'] = self.baseline.loss()
        variances = self._variances() if level is not None else {}
        diffs: dict[str, Difference] = {}
        own: dict[str, tuple] = {}
        for key, value in cand.items():
            if key not in base:
                continue
            d = float(value) - float(base[key])
            if key in variances:
                v_diff, v_c, _ = variances[key]
                diffs[key] = Difference(d, *interval(d, v_diff, level))
                own[key] = interval(float(value), v_c, level)
            else:
                diffs[key] = Difference(d, None, None, None)
        return base, diffs, own


def _rows(labels: Any, logits: Any, features: dict, idx: np.ndarray | None) -> tuple:
    if idx is None:
        return labels, logits, features
    return (np.take(labels, idx, axis=0), np.take(logits, idx, axis=0),
            {k: np.take(v, idx, axis=0) for k, v in features.items()})
