"""Mergeable metric states: the primitives behind every head's array face, one module each.

* `common` — `div_no_nan`, Keras' weight broadcasting, `CHUNK`, and `cumulative_from_top`: the one
  reverse cumulative sum every curve is read from;
* `groups` — `Groups` (rows of a batch spread over several states: one bincount per sum),
  `flat_weights`;
* `means` — `WeightedMean` (`tf.keras.metrics.Mean`), `LossSum` (Keras 2 loss reductions);
* `confusion` — `Confusion`: weighted confusion matrices at thresholds (Keras Precision / Recall);
* `keras_auc` — `KerasAUC`: `tf.keras.metrics.AUC(num_thresholds=200)`, ROC and PR;
* `histogram` — `Histogram`: high-resolution score histogram (exact-AUC bounds, calibration,
  curves); `histogram_cuts` — its cuts and float32 lookup tables;
* `plots` — plot rows (`PLOT_COLUMNS`) from the curve states;
* `rows` — `RowBuffer`: the rows a small head state holds until it builds these components
  (`heads.state`).

Each state holds a few fixed-size float64 numpy arrays (or float64 scalars), so states pickle small
and their size does not grow with the data. Every state has

* `update(...) -> self` — adds one batch (mutating self, returned for chaining); the grouped path
  is a static `update_groups(states, groups, ...)` (or `add_groups` of per-group sums) adding each
  row of a batch to its group's state in one pass;
* `merge(other) -> self` — adds another state of the same kind; `other` is left unchanged. Merging
  only adds arrays elementwise, so it is associative and commutative up to float64 rounding;
* a result method computing the metric from the accumulated sums, with Keras 2's conventions
  (every ratio is `div_no_nan`: 0 when the denominator is 0).

The per-head states built from these are in `heads.array` (their base, `HeadState`, in
`heads.state`). Nothing here imports TensorFlow.
"""
from heads.metrics.common import CHUNK, cumulative_from_top, div_no_nan
from heads.metrics.confusion import Confusion
from heads.metrics.groups import Groups, flat_weights, group_order
from heads.metrics.histogram import Histogram
from heads.metrics.keras_auc import KerasAUC
from heads.metrics.means import LossSum, WeightedMean
from heads.metrics.plots import (PLOT_COLUMNS, calibration_plot, concat_plots, confusion_plot,
                                 empty_plots)
from heads.metrics.rows import RowBuffer

__all__ = ['CHUNK', 'cumulative_from_top', 'div_no_nan', 'Confusion', 'Groups', 'flat_weights',
           'group_order', 'Histogram', 'KerasAUC', 'LossSum', 'WeightedMean', 'PLOT_COLUMNS',
           'calibration_plot', 'concat_plots', 'confusion_plot', 'empty_plots', 'RowBuffer']
