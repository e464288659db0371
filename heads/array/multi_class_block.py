"""`MultiClassBlock`: the `MultiClassState`s of many keys of one `MultiClassHead` as one float64
matrix.

Why: a slice spec with 10^5 values makes 10^5 keys, and one state object per key costs about a
millisecond a key (`pipeline.key_blocks`). A `MultiClassState` holds only additive scalar sums
(average_loss and accuracy as weighted means, the loss sum, the counts), so key k is row k of a
[keys, 8] matrix (the columns below); the matrix, its adds, merges, takes, pickling and reads are
`heads.array.sums_block.SumsBlock`'s. This class says which sums the state has and how a batch's
rows give them.

The per-row math is the state's own: `MultiClassState._prepare` validates the batch (label ids or
vocabulary strings, logits, weights, a custom loss_fn's shape: same exceptions and messages, raised
before anything changes) and gives one weight, loss and label-prediction match per example, so
every batch is added columnar (no loop over keys). Interval states have no block (the pipeline
uses blocks only without `confidence:`). Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from heads.array.multi_class import MultiClassState
from heads.array.sums_block import GroupTotals, SumsBlock
from heads.keys import MetricKeys

__all__ = ['MultiClassBlock']

# Columns of the matrix: each component's (total, count), then the state's counts.
AL_T, AL_C, AC_T, AC_C, LS_T, LS_C, EX, WEX = range(8)


class MultiClassBlock(SumsBlock):
    """The states of n_keys keys of one `MultiClassHead`, columnar: key k is row k of a float64
    matrix of the sums the state's components hold (`AL_T` ... `WEX`)."""

    STATE = MultiClassState
    COMPONENTS = MultiClassState._components  # average_loss, accuracy, loss_sum
    METRICS = ((MetricKeys.LOSS_MEAN, 'average_loss'), (MetricKeys.ACCURACY, 'accuracy'))

    def _rows(self, labels: Any, logits: Any, features: Mapping[str, Any] | None
              ) -> Mapping[str, Any]:
        """`MultiClassState._prepare`'s arrays: per-example weights `w`, loss `u`, matches `m`."""
        return MultiClassState._prepare(self.face, labels, logits, features)

    def _fill(self, out: np.ndarray, total: GroupTotals, rows: Mapping[str, Any]) -> None:
        """The state's sums (`MultiClassState._update_rows`): one loss element per example, the
        weights counting for average_loss, accuracy and the weighted examples alike."""
        w = rows['w']
        out[:, EX] = out[:, LS_C] = total()
        out[:, WEX] = out[:, AL_C] = out[:, AC_C] = total(w)
        out[:, AL_T] = out[:, LS_T] = total(rows['u'] * w)
        out[:, AC_T] = total(rows['m'] * w)


assert MultiClassBlock.COMPONENTS == ('average_loss', 'accuracy', 'loss_sum')
assert (MultiClassBlock.N_COLS, MultiClassBlock.EX) == (8, EX)
