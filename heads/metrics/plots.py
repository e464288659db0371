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
           'curve_plots']

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


def curve_plots(sub_key: str, thresholds: np.ndarray,
                confusion: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                exact: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
                calibration: np.ndarray) -> list[dict[str, np.ndarray]]:
    """`concat_plots([confusion_plot(sub_key, auc, exact), calibration_plot(sub_key, hist)])` of
    many curves at once, one dict per curve with the same numbers bit for bit: `confusion` the
    (tp, fp, tn, fn) [curves, thresholds] of KerasAUCs at `thresholds` (their `confusion()`);
    `exact` (thresholds, tp, fp, tn, fn [curves, its thresholds]) of each curve's `Confusion` at
    a head's thresholds, or None; `calibration` [curves, buckets, 3] the (Σw, Σw·label, Σw·p)
    of each histogram's calibration buckets. Every column is filled for all curves at once."""
    t = thresholds
    tp, fp, tn, fn = confusion
    if exact is not None and exact[0].size:
        keep, first, order, t = _merged_thresholds(thresholds, exact[0])
        tp, fp, tn, fn = (np.concatenate([a[:, keep], e[:, first]], axis=1)[:, order]
                          for a, e in zip((tp, fp, tn, fn), exact[1:]))
    k, r1, r2 = tp.shape[0], t.size, calibration.shape[1]
    columns = dict(zip(_NUMBER_COLUMNS, np.full((len(_NUMBER_COLUMNS), k, r1 + r2), np.nan)))
    columns['threshold'][:, :r1] = t
    for name, v in (('tp', tp), ('fp', fp), ('tn', tn), ('fn', fn),
                    ('precision', div_no_nan(tp, tp + fp)), ('recall', div_no_nan(tp, tp + fn)),
                    ('false_positive_rate', div_no_nan(fp, fp + tn))):
        columns[name][:, :r1] = v
    lower, upper = _calibration_bounds(r2)
    columns['bucket_lower'][:, r1:], columns['bucket_upper'][:, r1:] = lower, upper
    for j, name in enumerate(('weighted_examples', 'weighted_labels', 'weighted_predictions')):
        columns[name][:, r1:] = calibration[..., j]
    sub_keys = np.full(r1 + r2, sub_key, dtype=object)
    curves = np.array(['confusion'] * r1 + ['calibration'] * r2, dtype=object)
    text = {'sub_key': sub_keys, 'curve': curves}
    return [{c: text[c].copy() if c in text else columns[c][i] for c in PLOT_COLUMNS}
            for i in range(k)]
