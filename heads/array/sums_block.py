"""`SumsBlock`: the states of many keys of one head as one float64 matrix of sums, for a family
whose state holds only additive scalar sums (`WeightedMean` / `LossSum` components and the
example counts). The base of `RegressionBlock` and `MultiClassBlock`.

Why: a slice spec with 10^5 values makes 10^5 keys, and one state object per key costs about a
millisecond a key across update, pickling, merging and reading (`pipeline.key_blocks`). When every
sum of a state is additive, key k is row k of a [keys, columns] matrix: a batch adds to it with one
`np.bincount` per column over the rows' key codes, a merge adds rows of another block by an index
map, and metrics are read for every key at once by column division.

A subclass says which sums its state has: `STATE` (the per-key state class), `COMPONENTS` (the
state's component attributes, each a (total, count) pair of columns, in column order; the example
count and Σ example weights follow as columns `EX` and `WEX`), `METRICS` ((metric key, component)
in `STATE.result`'s order), and two hooks: `_rows` (the batch validated by the state's own
`_prepare`, as flat arrays; None when only a per-key update can take it) and `_fill` (the columns
of a group of rows, from a `GroupTotals`). Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from heads.keys import Reduction, summary_key

__all__ = ['SumsBlock', 'GroupTotals', 'divide']


def divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den is 0 (`div_no_nan`, the same IEEE division)."""
    out = np.zeros(num.shape, np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _take_rows(value: Any, idx: np.ndarray, n: int) -> Any:
    """Rows `idx` of an array with `n` rows; anything else as it is."""
    arr = value if isinstance(value, np.ndarray) else None
    return arr[idx] if arr is not None and arr.ndim and arr.shape[0] == n else value


class GroupTotals:
    """Per-group sums of a batch's flat arrays: `codes[i]` in [0, n] is the group of example i
    (n: no group, dropped). An array of k values per example (flattened row-major) is summed over
    the codes repeated k times (made once per k)."""

    def __init__(self, codes: np.ndarray, n: int) -> None:
        self.codes, self.n = codes, n
        self._repeated: dict[int, np.ndarray] = {1: codes}

    def __call__(self, values: np.ndarray | None = None) -> np.ndarray:
        """Σ values per group, float64 [n] (no values: the number of examples)."""
        if values is None:
            return np.bincount(self.codes, minlength=self.n + 1)[:self.n].astype(np.float64)
        k = values.size // max(self.codes.size, 1)
        if k not in self._repeated:
            self._repeated[k] = np.repeat(self.codes, k)
        return np.bincount(self._repeated[k], values, minlength=self.n + 1)[:self.n]


class SumsBlock:
    """The states of n_keys keys of one head, columnar: key k is row k of a float64 matrix of
    the sums the state's components hold (subclasses name them).

    The matrix has spare rows (capacity doubles) so that a block growing by a few keys a batch
    does not copy itself each time; only the first `n_keys` rows are pickled.
    """

    STATE: ClassVar[type]
    COMPONENTS: ClassVar[tuple[str, ...]] = ()
    METRICS: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Set from COMPONENTS: the matrix's width and the columns of the example counts.
    N_COLS: ClassVar[int] = 2
    EX: ClassVar[int] = 0
    WEX: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.EX = 2 * len(cls.COMPONENTS)
        cls.WEX = cls.EX + 1
        cls.N_COLS = cls.EX + 2

    @classmethod
    def columns(cls, component: str) -> tuple[int, int]:
        """The (total, count) columns of a component."""
        i = cls.COMPONENTS.index(component)
        return 2 * i, 2 * i + 1

    def __init__(self, face: Any) -> None:
        self.face = face
        self.n_keys = 0
        self._data = np.zeros((0, self.N_COLS), np.float64)

    # -- storage -------------------------------------------------------------------------------
    @property
    def sums(self) -> np.ndarray:
        """The [n_keys, N_COLS] sums (a view)."""
        return self._data[:self.n_keys]

    def _grow(self, n: int) -> None:
        """Makes room for n keys (new keys empty)."""
        if n <= self.n_keys:
            return
        if n > self._data.shape[0]:
            data = np.zeros((max(n, 2 * self._data.shape[0]), self.N_COLS), np.float64)
            data[:self.n_keys] = self._data[:self.n_keys]
            self._data = data
        self.n_keys = n

    def __getstate__(self) -> dict:
        return {'face': self.face, 'sums': np.ascontiguousarray(self.sums)}

    def __setstate__(self, state: dict) -> None:
        self.face = state['face']
        self._data = np.array(state['sums'], np.float64).reshape(-1, self.N_COLS)
        self.n_keys = self._data.shape[0]

    # -- the subclass's hooks ------------------------------------------------------------------
    def _rows(self, labels: Any, logits: Any, features: Mapping[str, Any] | None
              ) -> Mapping[str, Any] | None:
        """The batch validated (raising the state's exceptions) as flat per-example (or
        per-element) arrays; None: a batch only a per-key state update takes."""
        raise NotImplementedError

    def _fill(self, out: np.ndarray, total: GroupTotals, rows: Mapping[str, Any]) -> None:
        """Writes every column of `out` ([groups, N_COLS]): the sums of each group's rows."""
        raise NotImplementedError

    # -- adding --------------------------------------------------------------------------------
    def add(self, codes: np.ndarray, n_keys: int, labels: Any, logits: Any,
            features: Mapping[str, Any] | None = None) -> 'SumsBlock':
        """Adds row j of the batch to key codes[j] (-1: to no key), growing to n_keys keys.

        The batch is validated as the state's `update` validates it (same exception and
        message) and the codes are checked, before anything changes. `codes` index the batch's
        first axis (rank-3 logits: every example of a first-axis row goes to its key)."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1)
        rows = self._rows(labels, logits, features)
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

    def _grouped_sums(self, codes: np.ndarray, n_keys: int, rows: Mapping[str, Any]
                      ) -> tuple[np.ndarray | None, np.ndarray]:
        """(keys, their [len(keys), N_COLS] sums) of the prepared rows, example i in key
        codes[i]; keys None: every key, in order. A batch with far fewer examples than keys sums
        over the keys it holds (one np.unique) rather than over every key."""
        keys = None
        n = n_keys
        if codes.size * 8 < n_keys:
            valid = codes >= 0
            keys, inverse = np.unique(codes[valid], return_inverse=True)
            n = keys.size
            compact = np.full(codes.size, n, np.int64)
            compact[valid] = inverse.reshape(-1)
            codes = compact
        else:
            codes = np.where(codes < 0, n, codes)  # examples of no key: an extra, dropped group
        out = np.empty((n, self.N_COLS), np.float64)
        self._fill(out, GroupTotals(codes, n), rows)
        return keys, out

    def _per_key_sums(self, codes: np.ndarray, labels: Any, logits: Any,
                      features: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
        """(keys, sums) of a batch no columnar path takes (`_rows` gave None): each key of the
        batch as a state on its own rows. The only loop over keys, for batches the state itself
        adds through Keras' general path."""
        labels, logits = np.asarray(labels), np.asarray(logits)
        n = codes.size
        keys = np.unique(codes[codes >= 0])
        out = np.empty((keys.size, self.N_COLS), np.float64)
        for i, k in enumerate(keys.tolist()):
            idx = np.flatnonzero(codes == k)
            sub = ({c: _take_rows(v, idx, n) for c, v in features.items()}
                   if features else None)
            out[i] = self._state_row(self.STATE(self.face).update(labels[idx], logits[idx], sub))
        return keys, out

    def merge(self, other: 'SumsBlock', index: np.ndarray) -> 'SumsBlock':
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

    def take(self, keys: np.ndarray) -> 'SumsBlock':
        """A new block of these keys, in this order (copies)."""
        out = type(self)(self.face)
        out._data = self.sums[np.asarray(keys, dtype=np.int64).reshape(-1)]
        out.n_keys = out._data.shape[0]
        return out

    # -- reading -------------------------------------------------------------------------------
    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(examples, Σ example weights) per key, float64 (examples rounded as `counts()`)."""
        s = self.sums
        return np.rint(s[:, self.EX]), s[:, self.WEX].copy()

    def losses(self) -> np.ndarray:
        """Each key's `state.loss()`: the head's loss_reduction over its `loss_sum` columns."""
        s = self.sums
        t, c = self.columns('loss_sum')
        reduction = self.face.loss_reduction
        if reduction == Reduction.SUM:
            return s[:, t].copy()
        if reduction in (Reduction.SUM_OVER_BATCH_SIZE, Reduction.AUTO):
            return divide(s[:, t], s[:, c])
        raise ValueError('Invalid loss_reduction: {}. See `tf.losses.Reduction` for valid '
                         'options.'.format(reduction))

    def results(self) -> dict[str, np.ndarray]:
        """Each key's `state.result()`: {metric key: (K,)}, the same keys in the same order."""
        s = self.sums
        out = {}
        for key, component in self.METRICS:
            t, c = self.columns(component)
            out[summary_key(key, self.face.name)] = divide(s[:, t], s[:, c])
        return out

    def bounds(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The state's bounds: none (these metrics are exact)."""
        return {}

    def state(self, k: int) -> Any:
        """Key k as a `STATE`, equal in every component to the per-key state."""
        row = self.sums[int(k)]
        state = self.STATE(self.face)
        for i, name in enumerate(self.COMPONENTS):
            component = getattr(state, name)
            component.total, component.count = float(row[2 * i]), float(row[2 * i + 1])
        state.example_count = float(row[self.EX])
        state.weighted_example_count = float(row[self.WEX])
        return state

    @classmethod
    def _state_row(cls, state: Any) -> np.ndarray:
        """A state's sums as one row of the block's matrix."""
        row = np.empty(cls.N_COLS, np.float64)
        for i, name in enumerate(cls.COMPONENTS):
            component = getattr(state, name)
            row[2 * i], row[2 * i + 1] = component.total, component.count
        row[cls.EX], row[cls.WEX] = state.example_count, state.weighted_example_count
        return row
