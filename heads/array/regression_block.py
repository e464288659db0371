"""`RegressionBlock`: the `RegressionState`s of many keys of one regression-family head
(`RegressionHead`, `PoissonRegressionHead`, `LogisticRegressionHead`) as one float64 matrix.

Why: a slice spec with 10^5 values makes 10^5 keys, and one state object per key costs about a
millisecond a key across update, pickling, merging and reading (`pipeline.key_blocks`). Every sum a
`RegressionState` holds is additive, so key k is row k of a [keys, 10] matrix (the columns below):
a batch adds to it with one `np.bincount` per column over the rows' key codes, a merge adds rows
of another block by an index map, and metrics are read for every key at once by column division.

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

from heads.array.regression import RegressionFace, RegressionState
from heads.keys import MetricKeys, Reduction, summary_key

__all__ = ['RegressionBlock']

# Columns of the matrix: each component's (total, count), then the state's counts.
LS_T, LS_C, AL_T, AL_C, PM_T, PM_C, LM_T, LM_C, EX, WEX = range(10)
N_COLS = 10
# (component attribute, total column, count column); their `total` / `count` fields.
_COMPONENTS = (('loss_sum', LS_T, LS_C), ('average_loss', AL_T, AL_C),
               ('prediction_mean', PM_T, PM_C), ('label_mean', LM_T, LM_C))
# (metric key, total column, count column) in `RegressionState.result`'s order.
_METRICS = ((MetricKeys.LOSS_MEAN, AL_T, AL_C), (MetricKeys.PREDICTION_MEAN, PM_T, PM_C),
            (MetricKeys.LABEL_MEAN, LM_T, LM_C))


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den is 0 (`div_no_nan`, the same IEEE division)."""
    out = np.zeros(num.shape, np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _take_rows(value: Any, idx: np.ndarray, n: int) -> Any:
    """Rows `idx` of an array with `n` rows; anything else as it is."""
    arr = value if isinstance(value, np.ndarray) else None
    return arr[idx] if arr is not None and arr.ndim and arr.shape[0] == n else value


class RegressionBlock:
    """The states of n_keys keys of one regression-family head, columnar: key k is row k of a
    float64 matrix of the sums the state's components hold (`LS_T` ... `WEX`).

    The matrix has spare rows (capacity doubles) so that a block growing by a few keys a batch
    does not copy itself each time; only the first `n_keys` rows are pickled.
    """

    def __init__(self, face: RegressionFace) -> None:
        self.face = face
        self.n_keys = 0
        self._data = np.zeros((0, N_COLS), np.float64)

    # -- storage -------------------------------------------------------------------------------
    @property
    def sums(self) -> np.ndarray:
        """The [n_keys, 10] sums (a view)."""
        return self._data[:self.n_keys]

    def _grow(self, n: int) -> None:
        """Makes room for n keys (new keys empty)."""
        if n <= self.n_keys:
            return
        if n > self._data.shape[0]:
            data = np.zeros((max(n, 2 * self._data.shape[0]), N_COLS), np.float64)
            data[:self.n_keys] = self._data[:self.n_keys]
            self._data = data
        self.n_keys = n

    def __getstate__(self) -> dict:
        return {'face': self.face, 'sums': np.ascontiguousarray(self.sums)}

    def __setstate__(self, state: dict) -> None:
        self.face = state['face']
        self._data = np.array(state['sums'], np.float64).reshape(-1, N_COLS)
        self.n_keys = self._data.shape[0]

    # -- adding --------------------------------------------------------------------------------
    def add(self, codes: np.ndarray, n_keys: int, labels: Any, logits: Any,
            features: Mapping[str, Any] | None = None) -> 'RegressionBlock':
        """Adds row j of the batch to key codes[j] (-1: to no key), growing to n_keys keys.

        The batch is validated as `RegressionState.update` validates it (same exception and
        message) and the codes are checked, before anything changes. `codes` index the batch's
        first axis (rank-3 logits: every example of a first-axis row goes to its key)."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        rows = RegressionState._prepare(self.face, labels, logits, features)
        if rows is None:
            rows = self._per_logit_rows(labels, logits, features)
        n_keys = max(int(n_keys), self.n_keys)
        per = self._check_codes(codes, n_keys, np.shape(logits))
        if rows is None:
            if codes.size != np.shape(logits)[0]:
                raise ValueError('A batch whose loss or link changes its shape takes one key '
                                 'code per first-axis row.')
            keys, sums = self._per_key_sums(codes, labels, logits, features)
        else:
            keys, sums = self._grouped_sums(np.repeat(codes, per) if per != 1 else codes,
                                            n_keys, rows)
        self._grow(n_keys)
        if keys is None:
            self._data[:n_keys] += sums
        else:
            self._data[keys] += sums  # keys are distinct
        return self

    @staticmethod
    def _check_codes(codes: np.ndarray, n_keys: int, shape: tuple) -> int:
        """Examples per code for logits of this shape: 1 (a code per example) or the examples of
        a first-axis row (a code per first-axis row); raises ValueError for codes that fit
        neither or name no key."""
        batch = tuple(shape[:-1])
        examples = int(np.prod(batch, dtype=np.int64))
        if codes.size == examples:
            per = 1
        elif batch and codes.size == batch[0]:
            per = examples // max(batch[0], 1)
        else:
            raise ValueError('{} key codes for a batch of {} examples.'.format(
                codes.size, examples))
        if codes.size and (codes.max() >= n_keys or codes.min() < -1):
            bad = codes.max() if codes.max() >= n_keys else codes.min()
            raise ValueError('key code {} out of range for {} keys.'.format(bad, n_keys))
        return per

    @staticmethod
    def _grouped_sums(codes: np.ndarray, n_keys: int, rows: Mapping[str, Any]
                      ) -> tuple[np.ndarray | None, np.ndarray]:
        """(keys, their [len(keys), 10] sums) of the prepared rows, row i in key codes[i]; keys
        None: every key, in order. A batch with far fewer rows than keys sums over the keys it
        holds (one np.unique) rather than over every key."""
        keys = None
        if codes.size * 8 < n_keys:
            valid = codes >= 0
            keys, inverse = np.unique(codes[valid], return_inverse=True)
            d = rows['d']
            rows = dict(rows, w_row=rows['w_row'][valid],
                        **{k: rows[k].reshape(codes.size, d)[valid].reshape(-1)
                           for k in ('u', 'p', 'y', 'w')})
            codes = inverse.reshape(-1)
        n = n_keys if keys is None else keys.size
        d = rows['d']
        codes = np.where(codes < 0, n, codes)  # rows of no key: an extra, dropped group
        elements = np.repeat(codes, d) if d != 1 else codes

        def total(c: np.ndarray, v: np.ndarray | None = None) -> np.ndarray:
            return np.bincount(c, v, minlength=n + 1)[:n]

        w = rows['w']
        out = np.empty((n, N_COLS), np.float64)
        out[:, EX] = total(codes)
        out[:, WEX] = total(codes, rows['w_row'])
        out[:, LS_C] = out[:, EX] * d
        out[:, AL_C] = total(elements, w)
        out[:, PM_C] = out[:, LM_C] = out[:, AL_C]
        out[:, LS_T] = out[:, AL_T] = total(elements, rows['u'] * w)
        out[:, PM_T] = total(elements, rows['p'] * w)
        out[:, LM_T] = total(elements, rows['y'] * w)
        return keys, out

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

    def _per_key_sums(self, codes: np.ndarray, labels: Any, logits: Any,
                      features: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
        """(keys, sums) of a batch no columnar path takes (a custom loss_fn or inverse_link_fn
        returning another shape): each key of the batch as a `RegressionState` on its own rows.
        The only loop over keys, for batches the state itself adds through Keras' general path."""
        labels, logits = np.asarray(labels), np.asarray(logits)
        n = codes.size
        keys = np.unique(codes[codes >= 0])
        out = np.empty((keys.size, N_COLS), np.float64)
        for i, k in enumerate(keys.tolist()):
            idx = np.flatnonzero(codes == k)
            sub = ({c: _take_rows(v, idx, n) for c, v in features.items()}
                   if features else None)
            out[i] = _state_row(RegressionState(self.face).update(labels[idx], logits[idx], sub))
        return keys, out

    def merge(self, other: 'RegressionBlock', index: np.ndarray) -> 'RegressionBlock':
        """Adds other's key i into key index[i] (growing as needed); `other` is unchanged."""
        if type(other) is not type(self) or other.face.signature != self.face.signature:
            raise ValueError('Cannot merge a {} of {!r} into a {} of {!r}.'.format(
                type(other).__name__, getattr(getattr(other, 'face', None), 'signature', None),
                type(self).__name__, self.face.signature))
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size != other.n_keys or (index.size and index.min() < 0):
            raise ValueError('An index of {} keys for a block of {} keys.'.format(
                index.size, other.n_keys))
        if not index.size:
            return self
        self._grow(int(index.max()) + 1)
        if np.bincount(index).max() == 1:
            self._data[index] += other.sums
        else:
            np.add.at(self._data, index, other.sums)
        return self

    def take(self, keys: np.ndarray) -> 'RegressionBlock':
        """A new block of these keys, in this order (copies)."""
        out = RegressionBlock(self.face)
        out._data = self.sums[np.asarray(keys, dtype=np.int64).reshape(-1)]
        out.n_keys = out._data.shape[0]
        return out

    # -- reading -------------------------------------------------------------------------------
    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(examples, Σ example weights) per key, float64 (examples rounded as `counts()`)."""
        s = self.sums
        return np.rint(s[:, EX]), s[:, WEX].copy()

    def losses(self) -> np.ndarray:
        """Each key's `state.loss()`: the head's loss_reduction over its loss sums."""
        s = self.sums
        reduction = self.face.loss_reduction
        if reduction == Reduction.SUM:
            return s[:, LS_T].copy()
        if reduction in (Reduction.SUM_OVER_BATCH_SIZE, Reduction.AUTO):
            return _divide(s[:, LS_T], s[:, LS_C])
        raise ValueError('Invalid loss_reduction: {}. See `tf.losses.Reduction` for valid '
                         'options.'.format(reduction))

    def results(self) -> dict[str, np.ndarray]:
        """Each key's `state.result()`: {metric key: (K,)}, the same keys in the same order."""
        s = self.sums
        return {summary_key(k, self.face.name): _divide(s[:, t], s[:, c])
                for k, t, c in _METRICS}

    def bounds(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The state's bounds: none (regression metrics are exact)."""
        return {}

    def state(self, k: int) -> RegressionState:
        """Key k as a `RegressionState`, equal in every component to the per-key state."""
        row = self.sums[int(k)]
        state = RegressionState(self.face)
        for name, t, c in _COMPONENTS:
            component = getattr(state, name)
            component.total, component.count = float(row[t]), float(row[c])
        state.example_count, state.weighted_example_count = float(row[EX]), float(row[WEX])
        return state


def _state_row(state: RegressionState) -> np.ndarray:
    """A state's sums as one row of the block's matrix."""
    row = np.empty(N_COLS, np.float64)
    for name, t, c in _COMPONENTS:
        component = getattr(state, name)
        row[t], row[c] = component.total, component.count
    row[EX], row[WEX] = state.example_count, state.weighted_example_count
    return row
