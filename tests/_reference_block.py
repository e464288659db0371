"""A slow reference for the block interface (`heads.array.binary_block.BinaryClassBlock`): one
per-key head state per key, updated and read one key at a time. For tests only."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np


class ReferenceBlock:
    """The block interface over a list of per-key states of `face`."""

    rows_added = 0  # over every instance in this process: whether a run used blocks at all

    def __init__(self, face: Any) -> None:
        self.face = face
        self.states: list = []

    @property
    def n_keys(self) -> int:
        return len(self.states)

    def _grow(self, n: int) -> None:
        while len(self.states) < n:
            self.states.append(self.face.new_state())

    def add(self, codes: np.ndarray, n_keys: int, labels: Any, logits: Any,
            features: Any = None) -> 'ReferenceBlock':
        self._grow(n_keys)
        n = len(codes)
        ReferenceBlock.rows_added += int(np.count_nonzero(codes >= 0))
        for k in np.unique(codes[codes >= 0]).tolist():
            idx = np.flatnonzero(codes == k)
            sub = ({c: (v[idx] if isinstance(v, np.ndarray) and len(v) == n else v)
                    for c, v in features.items()} if features else None)
            self.states[k].update(labels[idx], logits[idx], sub)
        return self

    def merge(self, other: 'ReferenceBlock', index: np.ndarray) -> 'ReferenceBlock':
        self._grow(int(index.max()) + 1 if index.size else 0)
        for i, j in enumerate(index.tolist()):
            self.states[j].merge(other.states[i])
        return self

    def take(self, keys: np.ndarray) -> 'ReferenceBlock':
        out = ReferenceBlock(self.face)
        out.states = [copy.deepcopy(self.states[k]) for k in keys.tolist()]
        return out

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.array([s.counts() for s in self.states], np.float64).reshape(-1, 2)
        return c[:, 0], c[:, 1]

    def losses(self) -> np.ndarray:
        return np.array([s.loss() for s in self.states], np.float64)

    def results(self) -> dict[str, np.ndarray]:
        rows = [s.result() for s in self.states]
        keys = list(self.face.new_state().result())
        return {k: np.array([r[k] for r in rows], np.float64) for k in keys}

    def bounds(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        rows = [s.bounds() for s in self.states]
        keys = list(self.face.new_state().bounds())
        return {k: (np.array([r[k][0] for r in rows], np.float64),
                    np.array([r[k][1] for r in rows], np.float64)) for k in keys}

    def state(self, k: int) -> Any:
        return self.states[k]
