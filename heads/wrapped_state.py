"""`ReadsAsInner`: the head-state reads (`result`, `loss`, `counts`, `bounds`, `plots`) of a state
that wraps head states — a bootstrap state its main state, a baseline comparison its candidate's.
"""
from __future__ import annotations

import numpy as np

__all__ = ['ReadsAsInner']


class ReadsAsInner:
    """For a state that wraps head states (a bootstrap's replicates, a baseline comparison): the
    head-state reads answered by the wrapped state named by `READS_AS`."""
    READS_AS: str

    def result(self) -> dict[str, float]:
        return getattr(self, self.READS_AS).result()

    def loss(self) -> float:
        return getattr(self, self.READS_AS).loss()

    def counts(self) -> tuple[int, float]:
        return getattr(self, self.READS_AS).counts()

    def bounds(self) -> dict[str, tuple[float, float]]:
        return getattr(self, self.READS_AS).bounds()

    def plots(self) -> dict[str, np.ndarray]:
        return getattr(self, self.READS_AS).plots()
