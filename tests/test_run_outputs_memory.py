"""WriteRun lets go of the group's decoded pieces once its frame holds them (the runner's list of
them would otherwise live through every writer: ~0.7 GB at 10^6 slices)."""
from __future__ import annotations

import gc
import weakref

from pipeline import run_outputs


class _Piece:
    """Stands for a decoded ResultsPack."""


def test_release_empties_the_runners_list_and_frees_its_pieces():
    piece = _Piece()
    alive = weakref.ref(piece)
    values = [('results', piece), ('marker', None)]
    del piece
    run_outputs._release(values)
    gc.collect()
    assert values == [] and alive() is None


def test_release_leaves_other_iterables_alone():
    values = (('marker', None),)
    run_outputs._release(values)
    assert values == (('marker', None),)


def test_return_freed_memory_runs_anywhere():
    run_outputs.return_freed_memory()  # glibc's malloc_trim, or nothing
    assert run_outputs._LIBC is None or hasattr(run_outputs._LIBC, 'malloc_trim')
