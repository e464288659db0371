"""`BootstrapState`: Poisson-bootstrap intervals for every metric of a head, in the same pass.

A `BootstrapState` holds the head's own state and `replicates` more states of the same class.
Each example enters replicate r with its weight times a count c_r ~ Poisson(1) (Oza's online
bootstrap), drawn from a hash of the example's identity and r: the same example always gets the
same counts, so the intervals do not depend on how the rows are split into batches, bundles or
workers, nor on the order of merges. The identity is the feature `ROW_ID` when the batch carries
it (the pipeline gives each row `row_ids(file, row number)`), else the example's content (its
prepared logits, labels, loss and weight bits) — then identical rows share their counts, i.e. a
duplicated row is resampled as one unit (a reason the pipeline passes row identities).

`interval_estimates(level)`: for every finite metric of `result()`, value ± t·sd where sd is the
standard deviation (ddof 1) of the replicates' values of that metric and t Student's quantile
with replicates − 1 degrees of freedom (as TFMA's bootstrap). It costs about
(replicates + 1) times the state update of the head alone (bench/README.md). A batch the head
cannot take through its prepared rows (a regression batch on Keras' broadcasting path) leaves no
replicates: the intervals are then None. Never imports TensorFlow.
"""
from __future__ import annotations

import copy
import hashlib
import math
from typing import Any, Mapping, Sequence

import numpy as np

from heads.metrics.intervals import Estimate, student_t_quantile
from heads.wrapped_state import ReadsAsInner

__all__ = ['BootstrapState', 'poisson_counts', 'row_hashes', 'row_ids', 'REPLICATES', 'ROW_ID']

REPLICATES = 20
ROW_ID = '__headstream_row_id__'  # the feature carrying each example's identity (uint64)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# Metrics that are proportions for every head (AUCs and rates at a threshold): a value ± t·sd
# interval is cut to [0, 1], where it can reach past on a few rows. Means, losses and regression
# metrics have no such range and are left as they are.
_PROPORTIONS = ('auc', 'auc_precision_recall', 'accuracy', 'precision', 'recall')
# P(Poisson(1) <= j), j = 0..19: a uniform u gives the count searchsorted(_CDF, u, 'right').
_CDF = np.cumsum([math.exp(-1.0) / math.factorial(j) for j in range(20)])


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 (wrapping arithmetic)."""
    with np.errstate(over='ignore'):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def row_hashes(rows: Mapping[str, Any], n: int) -> np.ndarray:
    """A 64-bit hash per example of the prepared rows' per-example arrays (those with n rows),
    from their bit patterns, fields in name order."""
    h = np.zeros(n, np.uint64)
    for name in sorted(rows):
        v = rows[name]
        if not isinstance(v, np.ndarray) or v.ndim == 0 or v.shape[0] != n:
            continue
        v = np.ascontiguousarray(v.reshape(n, -1))
        if v.dtype.kind == 'b':
            v = v.astype(np.uint8)
        width = v.dtype.itemsize
        bits = v.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[width])
        for j in range(bits.shape[1]):
            with np.errstate(over='ignore'):
                h = _mix(h ^ bits[:, j].astype(np.uint64) + _GOLDEN)
    return h


def row_ids(path: str, numbers: np.ndarray) -> np.ndarray:
    """Identities of rows `numbers` (0-based) of the file `path`, uint64."""
    seed = int.from_bytes(hashlib.blake2b(path.encode('utf-8'), digest_size=8).digest(), 'little')
    with np.errstate(over='ignore'):
        return _mix(np.asarray(numbers, dtype=np.uint64) * _GOLDEN ^ np.uint64(seed))


def poisson_counts(hashes: np.ndarray, replicate: int) -> np.ndarray:
    """Each example's Poisson(1) count in `replicate` (float64)."""
    with np.errstate(over='ignore'):
        h = _mix(hashes + _GOLDEN * np.uint64(replicate + 1))
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return np.searchsorted(_CDF, u, side='right').astype(np.float64)


def _reweighted(rows: Mapping[str, Any], counts: np.ndarray) -> dict[str, Any]:
    """The prepared rows with their weights (`w`, `w_row`: per example or per element) times the
    examples' counts."""
    out = dict(rows)
    n = counts.shape[0]
    for name in ('w', 'w_row'):
        w = rows.get(name)
        if isinstance(w, np.ndarray) and w.ndim and n:
            out[name] = w * np.repeat(counts, w.shape[0] // n)
    return out


class BootstrapState(ReadsAsInner):
    """A head's state plus `replicates` Poisson-bootstrap replicates of it (see the module
    docstring); mergeable like the head's state. `head_state` is an empty state of the head."""
    READS_AS = 'main'  # metrics, loss, counts, bounds and plots are the head's state's

    INTERVALS = True

    def __init__(self, head_state: Any, replicates: int = REPLICATES) -> None:
        if replicates < 2:
            raise ValueError('replicates must be >= 2. Given: {}'.format(replicates))
        self.main = head_state
        self.replicates = [copy.deepcopy(head_state) for _ in range(replicates)]
        self.unsupported = 0.0  # batches added without replicates
        self.signature = ('Bootstrap', replicates, head_state.signature)

    @classmethod
    def update_groups(cls, states: Sequence['BootstrapState'], codes: np.ndarray | None,
                      labels: Any, logits: Any, features: Mapping[str, Any] | None = None
                      ) -> bool:
        """Row i of one batch into `states[codes[i]]` and, reweighted, into their replicates."""
        if not states:
            return True
        inner = type(states[0].main)
        prepare = getattr(inner, '_prepare', None)
        face = getattr(states[0].main, 'face', None)
        rows = None if prepare is None or face is None else prepare(face, labels, logits,
                                                                    features)
        if rows is None or not isinstance(rows, dict):
            return False
        inner._update_rows([s.main for s in states], codes, rows)
        n = _examples(rows)
        ids = None if not features else features.get(ROW_ID)
        if ids is None:
            hashes = row_hashes(rows, n)
        else:
            hashes = np.asarray(ids, dtype=np.uint64).reshape(-1)
            if hashes.shape[0] != n:
                raise ValueError('feature {}: {} row identities for {} examples'.format(
                    ROW_ID, hashes.shape[0], n))
        for r in range(len(states[0].replicates)):
            inner._update_rows([s.replicates[r] for s in states], codes,
                               _reweighted(rows, poisson_counts(hashes, r)))
        return True

    def update(self, labels: Any, logits: Any, features: Mapping[str, Any] | None = None
               ) -> 'BootstrapState':
        if not type(self).update_groups([self], None, labels, logits, features):
            self.main.update(labels, logits, features)
            self.unsupported += 1.0
        return self

    def merge(self, other: 'BootstrapState') -> 'BootstrapState':
        if type(other) is not type(self) or other.signature != self.signature:
            raise ValueError('Cannot merge a {} of {!r} into a {} of {!r}.'.format(
                type(other).__name__, getattr(other, 'signature', None), type(self).__name__,
                self.signature))
        self.main.merge(other.main)
        for mine, theirs in zip(self.replicates, other.replicates):
            mine.merge(theirs)
        self.unsupported += other.unsupported
        return self

    def interval_estimates(self, level: float = 0.95) -> dict[str, Estimate | None]:
        """{metric key: value ± t·sd of the replicates' values} (None: a non-finite or undefined
        value, fewer than 2 examples or no weight, or a batch taken without replicates)."""
        z = student_t_quantile(level, len(self.replicates) - 1)
        values = self.main.result()
        examples, weighted = self.main.counts()
        if examples < 2 or not weighted > 0 or self.unsupported:
            return {key: None for key in values}
        reps = [r.result() for r in self.replicates]
        # A metric whose exact value is undefined (an AUC of one class: its bounds are NaN)
        # has no interval, whatever number the head reports for it.
        undefined = {k for k, b in self.main.bounds().items()
                     if not all(math.isfinite(x) for x in b)}
        out: dict[str, Estimate | None] = {}
        for key, v in values.items():
            samples = np.array([r.get(key, np.nan) for r in reps], dtype=np.float64)
            if key in undefined or not math.isfinite(v) or not np.isfinite(samples).all():
                out[key] = None
                continue
            sd = float(np.std(samples, ddof=1))
            lower, upper = v - z * sd, v + z * sd
            if key.split('/')[0] in _PROPORTIONS:
                lower, upper = max(lower, 0.0), min(upper, 1.0)
            out[key] = Estimate(lower, upper, sd)
        return out

    def intervals(self, level: float = 0.95) -> dict[str, tuple[float, float] | None]:
        return {k: None if e is None else (e.lower, e.upper)
                for k, e in self.interval_estimates(level).items()}


def _examples(rows: Mapping[str, Any]) -> int:
    """Examples of a family's prepared rows (per-example weights' length)."""
    w = rows['w_row'] if 'w_row' in rows else rows['w']
    return int(w.shape[0])
