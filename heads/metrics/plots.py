"""Plot rows: the columns of `pipeline.schema.PLOTS` after the id columns, built from the curve
states (confusion rows from `KerasAUC` and `Confusion`, calibration rows from `Histogram`).

Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from heads.metrics.common import div_no_nan
from heads.metrics.confusion import Confusion
from heads.metrics.histogram import Histogram
from heads.metrics.keras_auc import KerasAUC

__all__ = ['PLOT_COLUMNS', 'empty_plots', 'confusion_plot', 'calibration_plot', 'concat_plots',
           'confusion_plots', 'calibration_plots']

PLOT_COLUMNS = ('sub_key', 'curve', 'threshold', 'tp', 'fp', 'tn', 'fn', 'precision', 'recall',
                'false_positive_rate', 'bucket_lower', 'bucket_upper', 'weighted_examples',
                'weighted_labels', 'weighted_predictions')
_TEXT_COLUMNS = ('sub_key', 'curve')


def empty_plots() -> dict[str, np.ndarray]:
    """Zero rows of every plot column (heads without curves)."""
    return {c: (np.empty(0, dtype=object) if c in _TEXT_COLUMNS else np.empty(0, dtype=np.float64))
            for c in PLOT_COLUMNS}


_NUMBER_COLUMNS = tuple(c for c in PLOT_COLUMNS if c not in _TEXT_COLUMNS)


def _plot_rows(n: int, sub_key: str, curve: str, **columns: np.ndarray) -> dict[str, np.ndarray]:
    nan = np.full((len(_NUMBER_COLUMNS), n), np.nan)  # one allocation: a row per column
    out = dict(zip(_NUMBER_COLUMNS, nan))
    out['sub_key'] = np.full(n, sub_key, dtype=object)
    out['curve'] = np.full(n, curve, dtype=object)
    for k, v in columns.items():
        v = np.asarray(v, dtype=np.float64)
        out[k] = v if v.flags.writeable else v.copy()  # never hand out a shared array
    return {c: out[c] for c in PLOT_COLUMNS}


def confusion_plot(sub_key: str, auc: KerasAUC, exact: Confusion | None = None
                   ) -> dict[str, np.ndarray]:
    """Rows of curve 'confusion': the AUC's confusion matrices at its thresholds, plus the exact
    matrices of `exact` (a head's own thresholds), in increasing threshold order.

    The rows of `exact` count `p > t` example by example, so a report or dashboard showing the
    confusion matrix at a head's threshold reads exact counts rather than the nearest of the 200
    bucketed thresholds. Where a head threshold equals one of the AUC's, only the exact row is
    kept (each threshold appears once per sub_key).
    """
    t, tp, fp, tn, fn = auc.confusion()
    if exact is not None and exact.thresholds.size:
        keep, first, order, t = _merged_thresholds(t, exact.thresholds)
        tp = np.concatenate([tp[keep], exact.tp[first]])[order]
        fp = np.concatenate([fp[keep], exact.fp[first]])[order]
        tn = np.concatenate([tn[keep], exact.tn[first]])[order]
        fn = np.concatenate([fn[keep], exact.fn[first]])[order]
    return _plot_rows(t.size, sub_key, 'confusion', threshold=t, tp=tp, fp=fp, tn=tn, fn=fn,
                      precision=div_no_nan(tp, tp + fp), recall=div_no_nan(tp, tp + fn),
                      false_positive_rate=div_no_nan(fp, fp + tn))


def confusion_plots(sub_key: str, thresholds: np.ndarray,
                    confusion: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                    exact: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
                    ) -> list[dict[str, np.ndarray]]:
    """`confusion_plot` of many curves at once, one dict per curve, the same numbers bit for
    bit: `confusion` the (tp, fp, tn, fn) [curves, thresholds] of KerasAUCs at `thresholds`
    (their `confusion()`), `exact` (thresholds, tp, fp, tn, fn [curves, its thresholds]) of
    each curve's `Confusion` at a head's thresholds, or None."""
    t = thresholds
    tp, fp, tn, fn = confusion
    if exact is not None and exact[0].size:
        keep, first, order, t = _merged_thresholds(thresholds, exact[0])
        tp, fp, tn, fn = (np.concatenate([a[:, keep], e[:, first]], axis=1)[:, order]
                          for a, e in zip((tp, fp, tn, fn), exact[1:]))
    precision, recall = div_no_nan(tp, tp + fp), div_no_nan(tp, tp + fn)
    fpr = div_no_nan(fp, fp + tn)
    return [_plot_rows(t.size, sub_key, 'confusion', threshold=t, tp=tp[i], fp=fp[i], tn=tn[i],
                       fn=fn[i], precision=precision[i], recall=recall[i],
                       false_positive_rate=fpr[i])
            for i in range(tp.shape[0])]


_MERGED: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def _merged_thresholds(auc_t: np.ndarray, head_t: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(keep, first, order, thresholds): the AUC's thresholds not among the head's (`keep`), the
    first of each distinct head threshold (`first`: np.unique, a threshold listed twice is one
    row, its counts identical), and the increasing order of the concatenation (stable), with the
    merged thresholds. They depend on the thresholds only: computed once per pair."""
    key = (auc_t.tobytes(), head_t.tobytes())
    out = _MERGED.get(key)
    if out is None:
        uniq, first = np.unique(head_t, return_index=True)
        keep = ~np.isin(auc_t, uniq)
        t = np.concatenate([auc_t[keep], uniq])
        order = np.argsort(t, kind='stable')
        out = (keep, first, order, t[order])
        for a in out:
            a.flags.writeable = False
        if len(_MERGED) < 1024:
            _MERGED[key] = out
    return out


def calibration_plot(sub_key: str, hist: Histogram) -> dict[str, np.ndarray]:
    """Rows of curve 'calibration': Σw, Σw·label, Σw·p per evenly spaced probability bucket."""
    m = hist.n_calibration
    lower, upper = _calibration_bounds(m)
    return _plot_rows(m, sub_key, 'calibration', bucket_lower=lower, bucket_upper=upper,
                      weighted_examples=hist.cal_examples, weighted_labels=hist.cal_labels,
                      weighted_predictions=hist.cal_predictions)


def calibration_plots(sub_key: str, sums: np.ndarray) -> list[dict[str, np.ndarray]]:
    """`calibration_plot` of many histograms at once: sums [histograms, buckets, 3] of (Σw,
    Σw·label, Σw·p) per calibration bucket; one dict per histogram."""
    lower, upper = _calibration_bounds(sums.shape[1])
    return [_plot_rows(sums.shape[1], sub_key, 'calibration', bucket_lower=lower,
                       bucket_upper=upper, weighted_examples=s[:, 0], weighted_labels=s[:, 1],
                       weighted_predictions=s[:, 2])
            for s in sums]


_BOUNDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _calibration_bounds(m: int) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of m evenly spaced probability buckets (computed once per m)."""
    out = _BOUNDS.get(m)
    if out is None:
        out = _BOUNDS[m] = (np.arange(m) / m, np.arange(1, m + 1) / m)
        for a in out:
            a.flags.writeable = False
    return out


def concat_plots(parts: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Plot row groups concatenated column by column (empty columns when there are none)."""
    parts = [p for p in parts if p and len(p['curve'])]
    if not parts:
        return empty_plots()
    return {c: np.concatenate([np.asarray(p[c]) for p in parts]) for c in PLOT_COLUMNS}
