"""What the block tests (tests/test_binary_block.py, test_regression_block.py,
test_multi_class_block.py) share: seeded key codes, the comparison of a sums block with its
`ReferenceBlock`, and the machinery of partial blocks that number their keys their own way, are
pickled as between workers and merged in shuffled orders into one block, which must equal one
reference of every row."""
from __future__ import annotations

import pickle
from typing import Any, Callable

import numpy as np
import pytest

from _reference_block import ReferenceBlock

RTOL, ATOL = 1e-9, 1e-12


def codes_for(rng: np.random.Generator, n: int, n_keys: int) -> np.ndarray:
    """Codes for n rows: a few large keys, a long tail of tiny ones, rows in no key (-1); the
    last tenth of the keys gets no row."""
    live = max(1, n_keys - n_keys // 10)
    p = 1.0 / np.arange(1, live + 1) ** 1.3
    codes = rng.choice(live, n, p=p / p.sum())
    perm = rng.permutation(live)  # the large keys anywhere in the table
    codes = perm[codes]
    codes[rng.random(n) < 0.05] = -1
    return codes.astype(np.int64)


def assert_same(block, ref, keys=None) -> None:
    """Results, losses, counts and bounds of `block` equal the reference's (at `keys` of the
    reference when given), keys in the same order."""
    pick = (lambda a: a) if keys is None else (lambda a: a[keys])
    n = ref.n_keys if keys is None else len(keys)
    assert block.n_keys == n
    got, want = block.results(), ref.results()
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], pick(want[k]), rtol=RTOL, atol=ATOL, err_msg=k)
    np.testing.assert_allclose(block.losses(), pick(ref.losses()), rtol=RTOL, atol=ATOL)
    for g, w in zip(block.counts(), ref.counts()):
        np.testing.assert_allclose(g, pick(w), rtol=RTOL, atol=ATOL)
    assert block.bounds() == ref.bounds() == {}


def error_of(call: Callable[[], Any]) -> tuple[type, str]:
    """The type and message of what `call` raises."""
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


def grow(block, n_keys: int):
    """`block` with keys up to `n_keys` (the ones no row reached: empty)."""
    (block.grow if hasattr(block, 'grow') else block._grow)(n_keys)
    return block


# -- a block and its reference, fed alike -------------------------------------------------------

class Fed:
    """A block of `face` and its `ReferenceBlock`, given the same batches: `batch(rng, n)` gives
    (labels, logits, features) of n rows."""

    def __init__(self, face, batch: Callable, rng: np.random.Generator) -> None:
        self.face, self.batch, self.rng = face, batch, rng
        self.block, self.ref = face.new_block(), ReferenceBlock(face)

    def add(self, codes: np.ndarray, n_keys: int, *rows) -> 'Fed':
        """The rows (a seeded batch of len(codes) rows when none are given) into both."""
        rows = rows or self.batch(self.rng, len(codes))
        self.block.add(codes, n_keys, *rows)
        self.ref.add(codes, n_keys, *rows)
        return self

    def add_seeded(self, n_rows: int, n_keys: int) -> 'Fed':
        """A seeded batch of n_rows over n_keys keys (`codes_for`)."""
        rows = self.batch(self.rng, n_rows)
        return self.add(codes_for(self.rng, n_rows, n_keys), n_keys, *rows)

    def add_growing(self, sizes, n_keys: int) -> 'Fed':
        """A seeded batch of each size, with more keys as batches come (the block equal to the
        reference after the first)."""
        for i, size in enumerate(sizes):
            self.add_seeded(size, n_keys)
            if i == 0:
                assert_same(self.block, self.ref)
            n_keys += int(self.rng.integers(0, 300))
        assert_same(self.block, self.ref)
        return self

    def add_scattered(self, n_batches: int, n_keys: int) -> 'Fed':
        """Batches of 1 to 39 rows into many keys (the path summing only the keys it holds)."""
        for _ in range(n_batches):
            rows = self.batch(self.rng, int(self.rng.integers(1, 40)))
            self.add(self.rng.integers(-1, n_keys, len(rows[0])), n_keys, *rows)
        return self

    def assert_states(self, components: Callable, state_type: type, losses=False) -> None:
        """`state(k)` of the block equals the reference's at the first, largest and smallest key
        (one without rows: an empty state)."""
        block, ref = self.block, self.ref
        examples = ref.counts()[0]
        assert (examples == 0).any()  # keys without rows read as an empty state
        for k in [0, int(np.argmax(examples)), int(np.argmin(examples))]:
            st, want = block.state(k), ref.state(k)
            assert type(st) is state_type and st.face is self.face
            np.testing.assert_allclose(components(st), components(want), rtol=RTOL, atol=ATOL)
            assert st.result() == pytest.approx(want.result(), rel=RTOL, abs=ATOL)
            if losses:
                assert st.loss() == pytest.approx(want.loss(), rel=RTOL, abs=ATOL)
        empty = self.face.new_state()
        k = int(np.argmin(examples))
        assert block.state(k).result() == empty.result() and block.losses()[k] == empty.loss()

    def assert_take_merge_back_and_pickle(self, keys: np.ndarray, row_bytes: int) -> None:
        """take(keys) answers as the reference there; shards taken and merged back, and a pickle
        round trip, answer as the whole (the pickle about `row_bytes` a key)."""
        block, ref, face = self.block, self.ref, self.face
        taken, sums = block.take(keys), block.sums.copy()
        assert type(taken) is type(block)
        assert_same(taken, ref, keys)
        taken.add(np.zeros(10, np.int64), keys.size, *self.batch(self.rng, 10))  # copies:
        taken.merge(taken.take(np.arange(keys.size)), np.arange(keys.size))  # block unchanged
        assert np.array_equal(block.sums, sums)
        back = face.new_block()
        for part in np.array_split(np.arange(block.n_keys), 4):  # shards merged back into one
            back.merge(block.take(part), part)
        assert_same(back, ref)
        restored = pickle.loads(pickle.dumps(block))
        assert_same(restored, ref)
        assert restored.face.signature == face.signature
        assert len(pickle.dumps(block)) < block.n_keys * row_bytes + 4096  # the used rows only
        rows = self.batch(self.rng, 10)
        restored.add(np.arange(10), block.n_keys + 100, *rows)  # grows after a round trip
        assert restored.n_keys == block.n_keys + 100

    def assert_rejects_as_state(self, broken: Callable) -> None:
        """A seeded batch of 50 rows over 10 keys added; then the batch `broken(labels, logits,
        features)` makes of another, which the state rejects, is rejected alike, changing
        nothing."""
        self.add_seeded(50, 10)
        labels, logits, features = broken(*self.batch(self.rng, 50))
        block = self.block
        expected = error_of(lambda: self.face.new_state().update(labels, logits, features))
        n_keys, sums = block.n_keys, block.sums.copy()
        assert error_of(lambda: block.add(np.zeros(len(logits), np.int64), n_keys + 10, labels,
                                          logits, features)) == expected
        assert block.n_keys == n_keys and np.array_equal(block.sums, sums)

    def assert_bad_codes_and_merges_refused(self, *foreign) -> None:
        """Codes of another length or out of range, blocks of another face (`foreign`) and
        index maps of another length change nothing."""
        block = self.block
        n, sums = block.n_keys, block.sums.copy()
        rows = self.batch(np.random.default_rng(0), 30)
        with pytest.raises(ValueError, match='29 key codes for a batch of 30'):
            block.add(np.zeros(29, np.int64), n, *rows)
        with pytest.raises(ValueError, match=f'key code {n + 2} out of range for {n + 1} keys'):
            block.add(np.full(30, n + 2), n + 1, *rows)
        for other in foreign + (ReferenceBlock(self.face),):
            with pytest.raises(ValueError, match='Cannot merge'):
                block.merge(other, np.zeros(0, np.int64))
        with pytest.raises(ValueError, match=f'index of {n - 1} keys for a block of {n}'):
            self.face.new_block().merge(block, np.arange(n - 1))
        assert block.n_keys == n and np.array_equal(block.sums, sums)


def with_value(a: np.ndarray, row: int, value) -> np.ndarray:
    """A copy of `a` with `value` at `row`."""
    a = a.copy()
    a[row] = value
    return a


# Batches the state of every sums block rejects: name → (labels, logits, features) → the batch.
BROKEN = {
    'labels_shape': lambda labels, logits, features: (labels[:-10], logits, features),
    'logits_dim': lambda labels, logits, features: (
        labels, np.concatenate([logits, logits], axis=1), features),
    'missing_weight': lambda labels, logits, features: (labels, logits, {'s': features['s']}),
    'weight_shape': lambda labels, logits, features: (
        labels, logits, dict(features, w=features['w'][:, None, None])),
}


def assert_counts_are_copies(block) -> None:
    """The arrays `counts()` gives are the caller's: writing them changes no later read."""
    examples, weighted = block.counts()
    examples[:] = weighted[:] = -1.0
    assert (block.counts()[0] >= 0).all() and (block.counts()[1] >= 0).all()


# -- partial blocks merged in any order ---------------------------------------------------------

def local_codes(codes: np.ndarray, global_of: np.ndarray) -> np.ndarray:
    """`codes` (global keys, -1 for none) in a part's numbering: local key i is global key
    global_of[i]."""
    size = max(int(codes.max(initial=-1)), int(global_of.max(initial=-1))) + 1
    local = np.full(size + 1, -1)
    local[global_of] = np.arange(global_of.size)
    return np.where(codes >= 0, local[codes], -1)


def partial(new_block: Callable, codes: np.ndarray, global_of: np.ndarray, rows: tuple,
            n_adds: int = 1) -> tuple[Any, np.ndarray]:
    """(a part, global_of): a new block given `rows` (labels, logits, features: arrays or None),
    whose global key codes are `codes`, in `n_adds` batches, in its own key numbering, then
    pickled and read back as between workers."""
    local = local_codes(codes, global_of)
    part = new_block()
    for at in np.array_split(np.arange(codes.size), n_adds):
        part.add(local[at], global_of.size, *(None if r is None else _rows_at(r, at)
                                               for r in rows))
    return pickle.loads(pickle.dumps(part)), global_of


def _rows_at(r, at):
    return {c: v[at] for c, v in r.items()} if isinstance(r, dict) else r[at]


def merge_in_orders(new_block: Callable, parts: list, n_keys: int, rng: np.random.Generator,
                    check: Callable, trials: int = 3) -> None:
    """The parts merged into one block in `trials` shuffled orders (and an empty block with
    them), grown to `n_keys`: `check(merged)` for each."""
    for _ in range(trials):
        merged = new_block()
        for i in rng.permutation(len(parts)).tolist():
            merged.merge(*parts[i])
        merged.merge(new_block(), np.zeros(0, np.int64))
        check(grow(merged, n_keys))


def merge_by_way_of_first(new_block: Callable, parts: list, n_keys: int):
    """(a + b) + c == a + (b + c): every part merged into a copy of the first by the first's
    key numbering (extended with the keys it lacks), then that into a new block by global keys,
    grown to `n_keys`."""
    first, global_of = parts[0]
    into = first.take(np.arange(first.n_keys))
    slot = {g: i for i, g in enumerate(global_of.tolist())}
    for part, global_of in parts[1:]:
        for g in global_of.tolist():
            slot.setdefault(g, len(slot))
        into.merge(part, np.array([slot[g] for g in global_of.tolist()], np.int64))
    return grow(new_block().merge(into, np.array(list(slot), np.int64)), n_keys)


def seeded_parts(face, batch: Callable, rng: np.random.Generator, n_keys: int, n_parts: int = 5,
                 extra: int = 0) -> tuple[list, ReferenceBlock]:
    """(parts, reference): `n_parts` seeded batches of up to 900 rows over `n_keys` keys, each a
    part numbering the keys it saw (and `extra` keys it did not) in a shuffled order; the
    reference holds every row."""
    ref, parts = ReferenceBlock(face), []
    for _ in range(n_parts):
        rows = batch(rng, int(rng.integers(0, 900)))
        codes = codes_for(rng, len(rows[0]), n_keys)
        ref.add(codes, n_keys, *rows)
        seen = np.unique(codes[codes >= 0])
        unseen = rng.choice(np.setdiff1d(np.arange(n_keys), seen), extra, replace=False)
        global_of = rng.permutation(np.concatenate([seen, unseen]).astype(np.int64))
        parts.append(partial(face.new_block, codes, global_of, rows))
    return parts, ref


def assert_parts_merge_as_reference(face, batch: Callable, seed: int, extra: int = 0) -> list:
    """Seeded parts (`seeded_parts`) merged in shuffled orders and by way of a merged part equal
    the reference of every row; the parts."""
    rng = np.random.default_rng(seed)
    parts, ref = seeded_parts(face, batch, rng, 300, extra=extra)
    merge_in_orders(face.new_block, parts, 300, rng, lambda merged: assert_same(merged, ref))
    assert_same(merge_by_way_of_first(face.new_block, parts, 300), ref)
    return parts
