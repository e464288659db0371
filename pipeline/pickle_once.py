"""`PickleOnce`: an object pickled several times while unchanged is packed once.

Beam's output counters estimate the size of an element by encoding it (`OutputCounter`
samples the first 10 elements of every output, then ~7 per doubling): a step that emits a few
large elements — a shard's `pipeline.key_blocks.KeyBlock`, a shard's
`pipeline.block_results.ResultsPack` — has each of them pickled by the counter of every step it
passes through and once more when it is written for the next stage (4 pickles of a block on the
DirectRunner, 3 of a pack). Packing such an element (its compact `__getstate__`) is most of the
cost; the pickled bytes of the state are kept instead (by the object pickled and by the one
unpickled from them), and every later pickle of the unchanged object writes those bytes. The class
clears them (`_changed`) whenever its contents change.
"""
from __future__ import annotations

import pickle
from typing import Any

__all__ = ['PickleOnce']


def _restore(cls: type, data: bytes) -> Any:
    """The object of class `cls` whose state `data` holds (what `PickleOnce` pickles), keeping
    `data` as its pickle: the next step's counter pickles the object it has just read."""
    obj = cls.__new__(cls)
    obj.__setstate__(pickle.loads(data))
    obj._pickled = data
    return obj


class PickleOnce:
    """A mixin: pickles `__getstate__()` once, until `_changed()`.

    The class defines `__getstate__` / `__setstate__` and a `_pickled` attribute (a slot), None
    in a new object; it calls `_changed()` in every method that changes what `__getstate__`
    returns. Unpickling runs `__setstate__` on a new object (not `__init__`), which must set
    `_pickled` (e.g. through `_changed()`)."""

    __slots__ = ()

    def _changed(self) -> None:
        """Drops the kept pickle (the contents changed or are about to)."""
        self._pickled = None

    def __reduce_ex__(self, protocol: int) -> tuple:
        data = getattr(self, '_pickled', None)
        if data is None:
            data = pickle.dumps(self.__getstate__(), protocol=pickle.HIGHEST_PROTOCOL)
            self._pickled = data
        return (_restore, (type(self), data))
