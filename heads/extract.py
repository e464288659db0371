"""Reading the metrics of many small states at once: `densify_together`.

A small state (`HeadState.is_small`: it holds its rows) builds its dense components on first use
— one grouped update over its own rows. Reading the metrics of 10^5 small states one by one pays
that update's fixed cost (allocating and scanning histograms of thousands of buckets, Keras'
thresholds, confusion rows) 10^5 times. `densify_together(states)` makes them dense together:
every small state of one head (class and configuration) in one grouped update (`MAX_GROUPS`
states a pass), so the fixed cost is paid once per pass. The components are the same as each
state building its own (the same rows added to the same empty components; per-state sums taken
over that state's rows only).

Containers are looked into: a `MultiHeadState`'s member states, a compared head's candidate and
baseline, a bootstrap state's main state and replicates. Never imports TensorFlow.
"""
from __future__ import annotations

from typing import Any, Iterable

from heads.state import HeadState

__all__ = ['densify_together', 'small_states']

# Attributes of container states whose values are head states (or lists of them).
_MEMBERS = ('states', 'candidate', 'baseline', 'main', 'replicates')


def small_states(state: Any) -> list[HeadState]:
    """The small head states in `state`: itself, or those of its members (a container's)."""
    if isinstance(state, HeadState) and state.__dict__.get('_buffer') is not None:
        return [state]
    out: list[HeadState] = []
    fields = getattr(state, '__dict__', {})
    for name in _MEMBERS:
        value = fields.get(name)
        if value is None:
            continue
        for member in value if isinstance(value, list) else [value]:
            if isinstance(member, HeadState) or hasattr(member, '__dict__'):
                out.extend(small_states(member))
    return out


def densify_together(states: Iterable[Any]) -> None:
    """Makes every small head state in `states` (or among their members) dense, all states of
    one head in one grouped update; dense states are left as they are."""
    by_head: dict[tuple, list[HeadState]] = {}
    seen: set[int] = set()
    for state in states:
        for small in small_states(state):
            if id(small) not in seen:  # a state listed twice is made dense once
                seen.add(id(small))
                by_head.setdefault(_head_of(small), []).append(small)
    for group in by_head.values():
        type(group[0])._densify_states(group)


def _head_of(state: HeadState) -> tuple:
    """What states must share to be updated together: their class and their head's configuration
    (the signature, which states of one head share; the face itself when that is unhashable)."""
    try:
        return (type(state), hash(state.signature), state.signature)
    except TypeError:
        return (type(state), id(state.face))
