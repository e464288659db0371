"""`RegressionBlock`: the `RegressionState`s of many keys of one regression-family head
(`RegressionHead`, `PoissonRegressionHead`, `LogisticRegressionHead`) as one float64 matrix.

Why: a slice spec with 10^5 values makes 10^5 keys, and one state object per key costs about a
millisecond a key (`pipeline.key_blocks`). Every sum a `RegressionState` holds is additive, so key
k is row k of a [keys, 10] matrix (the columns below); the matrix, its adds, merges, takes,
pickling and reads are `heads.array.sums_block.SumsBlock`'s. This class says which sums a
regression state has and how a batch's rows give them.

The per-row math is the state's own: `RegressionState._prepare` validates the batch (same
exceptions and messages, raised before anything changes) and gives flat per-element arrays. Two
kinds of batch that the state adds through Keras' general (broadcasting) path are handled too:
weights per logit (decomposable by element, vectorised here from the face's own `inputs`,
`unweighted_loss` and `link`) and a custom loss_fn / inverse_link_fn returning another shape (then,
and only then, each key of the batch is updated as a state on its own rows). Interval states have
no block (the pipeline uses blocks only without `confidence:`). Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from heads.array.regression import RegressionState
from heads.array.sums_block import GroupTotals, SumsBlock
from heads.keys import MetricKeys

__all__ = ['RegressionBlock']

# Columns of the matrix: each component's (total, count), then the state's counts.
LS_T, LS_C, AL_T, AL_C, PM_T, PM_C, LM_T, LM_C, EX, WEX = range(10)
N_COLS = 10


class RegressionBlock(SumsBlock):
    """The states of n_keys keys of one regression-family head, columnar: key k is row k of a
    float64 matrix of the sums the state's components hold (`LS_T` ... `WEX`)."""

    STATE = RegressionState
    COMPONENTS = ('loss_sum', 'average_loss', 'prediction_mean', 'label_mean')
    METRICS = ((MetricKeys.LOSS_MEAN, 'average_loss'),
               (MetricKeys.PREDICTION_MEAN, 'prediction_mean'),
               (MetricKeys.LABEL_MEAN, 'label_mean'))

    def _rows(self, labels: Any, logits: Any, features: Mapping[str, Any] | None
              ) -> Mapping[str, Any] | None:
        """`RegressionState._prepare`'s arrays, or those of a batch with weights per logit."""
        rows = RegressionState._prepare(self.face, labels, logits, features)
        return rows if rows is not None else self._per_logit_rows(labels, logits, features)

    def _fill(self, out: np.ndarray, total: GroupTotals, rows: Mapping[str, Any]) -> None:
        """The state's sums: one value per element (d a row) but for the counts."""
        w = rows['w']
        out[:, EX] = total()
        out[:, WEX] = total(rows['w_row'])
        out[:, LS_C] = out[:, EX] * rows['d']
        out[:, AL_C] = total(w)
        out[:, PM_C] = out[:, LM_C] = out[:, AL_C]
        out[:, LS_T] = out[:, AL_T] = total(rows['u'] * w)
        out[:, PM_T] = total(rows['p'] * w)
        out[:, LM_T] = total(rows['y'] * w)

    def _per_logit_rows(self, labels: Any, logits: Any, features: Mapping[str, Any] | None
                        ) -> dict[str, Any] | None:
        """`_prepare`'s arrays for a batch with weights per logit (which `RegressionState` adds
        through Keras' broadcasting path: every sum is still one per element, and an example's
        weight for the counts is the mean of its logits' weights); None for any other batch
        `_prepare` refuses (a loss or link of another shape)."""
        face = self.face
        processed, lg, weights = face.inputs(labels, logits, features)
        if np.ndim(weights) == 0 or np.shape(weights) != lg.shape:
            return None
        unweighted = np.asarray(face.unweighted_loss(processed, lg, features), np.float64)
        predictions = np.asarray(face.link(lg))
        if unweighted.shape != lg.shape or predictions.shape != lg.shape:
            return None
        w = np.asarray(weights, np.float64)
        return {'u': unweighted.reshape(-1),
                'p': predictions.reshape(-1).astype(np.float64),
                'y': np.asarray(labels, dtype=np.float32).reshape(-1).astype(np.float64),
                'w': w.reshape(-1), 'w_row': w.mean(axis=-1).reshape(-1), 'd': lg.shape[-1]}


assert (RegressionBlock.N_COLS, RegressionBlock.EX) == (N_COLS, EX)
