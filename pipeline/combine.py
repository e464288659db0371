"""One CombineFn for every head: accumulators are the heads' own mergeable states.

Inputs are either partial states (from `ApplyHeads`' pre-combine) or `SubBatch`es (numpy arrays
for one key, without the pre-combine); the accumulator for a key is that key's head state, created
by `head.new_state()` on the first sub-batch, or a copy of the first partial state. Accumulation
delegates to the state's `update` / `merge`, so a head's metrics are whatever its state computes,
and results are independent of bundling and of the order of merges.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

import apache_beam as beam

from pipeline.config import EvalConfig
from pipeline.elements import SubBatch


class HeadStateCombineFn(beam.CombineFn):
    """Combines one key's partial states or sub-batches into one head state.

    Args:
      config: the config whose heads the `SubBatch.head` indices refer to.
    """

    def __init__(self, config: EvalConfig):
        self._config = config
        self._heads: list | None = None

    def setup(self) -> None:
        self._heads = self._config.build_heads()

    def _head(self, index: int) -> Any:
        if self._heads is None:  # runners that skip setup on CombineFns (older fallbacks)
            self._heads = self._config.build_heads()
        return self._heads[index]

    def create_accumulator(self) -> Any:
        # The key (hence the head) is unknown here: the first input decides the state's type.
        return None

    def add_input(self, accumulator: Any, element: Any) -> Any:
        if isinstance(element, SubBatch):
            if accumulator is None:
                accumulator = self._config.new_state(self._head(element.head))
            a = element.arrays
            return accumulator.update(a.labels, a.logits, a.features or None)
        if accumulator is None:
            # Copy: the input element may be shared with other consumers and must stay unchanged.
            return copy.deepcopy(element)
        return accumulator.merge(element)

    def merge_accumulators(self, accumulators: Iterable[Any]) -> Any:
        merged = None
        for acc in accumulators:
            if acc is None:
                continue
            if merged is None:
                merged = acc  # only the first accumulator is mutated
            else:
                merged = merged.merge(acc)
        return merged

    def extract_output(self, accumulator: Any) -> Any:
        return accumulator


class CombineStates(beam.PTransform):
    """(Key, partial state | SubBatch) → (Key, state), one state per key."""

    def __init__(self, config: EvalConfig):
        super().__init__()
        self._config = config

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | 'PerKey' >> beam.CombinePerKey(HeadStateCombineFn(self._config))
