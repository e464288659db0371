"""A head state's numbers as named numpy arrays and back: persistence in a data format, without
pickle (the watch state file). `state_arrays(state)` walks a state's attributes as its pickle would
hold them (`__getstate__`, so a small state is written as its dense equivalent) and its components
(lists, tuples and dicts of them too); `load_state_arrays(fresh, arrays)` fills a fresh state of the
same head. Re-exported by `heads.state`.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import numpy as np

_CONFIGURATION = ('head', 'face', 'signature')  # rebuilt from the head, never stored


def _is_state(value: Any) -> bool:
    return callable(getattr(value, 'merge', None))


def _is_number(value: Any) -> bool:
    return isinstance(value, (bool, int, float, np.number, np.bool_))


def _is_numeric_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in 'biuf'


def _fields(state: Any) -> dict[str, Any]:
    """A state's attributes as its pickle would hold them (`__getstate__`), less the head."""
    return {k: v for k, v in state.__getstate__().items() if k not in _CONFIGURATION}


def state_arrays(state: Any) -> dict[str, np.ndarray]:
    """Every number of a state (a per-head state or a component) as named numpy arrays: each
    numeric array or scalar attribute, of the state and of its components (lists, tuples and dicts
    of them too), by attribute path ('histogram/_pos', 'threshold_accuracy/0/total'). The head
    (array face) and signature are not included: `load_state_arrays` fills a fresh state of the
    same head."""
    out: dict[str, np.ndarray] = {}
    _put_arrays(out, '', state)
    return out


def _put_arrays(out: dict[str, np.ndarray], path: str, value: Any) -> None:
    if _is_numeric_array(value) or _is_number(value):
        out[path] = np.asarray(value)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _put_arrays(out, '%s/%d' % (path, i) if path else str(i), v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _put_arrays(out, '%s/%s' % (path, k) if path else str(k), v)
    elif _is_state(value):
        from heads.state import HeadState  # (heads.state imports this module)
        if isinstance(value, HeadState) and value.is_small:
            value = copy.deepcopy(value)  # written as its dense equivalent; `state` unchanged
            value._densify()
        for name, v in _fields(value).items():
            _put_arrays(out, '%s/%s' % (path, name) if path else name, v)
    # Anything else (None, strings, heads) is configuration: the fresh state has it.


def load_state_arrays(state: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """Fills `state` (a fresh `head.new_state()`) with `state_arrays` of a state of the same head;
    returns it. Only the fresh state's own attributes are set, from arrays of matching kind.

    Raises:
      ValueError: naming the entry, when the arrays do not fit the state (missing, unknown, of
        another dtype or shape).
    """
    used: set[str] = set()
    _load_state(state, '', arrays, used)
    unknown = sorted(set(arrays) - used)
    if unknown:
        raise ValueError('unknown state entries: %s' % ', '.join(unknown[:5]))
    return state


def _load_state(state: Any, path: str, arrays: Mapping[str, np.ndarray], used: set[str]) -> None:
    from heads.state import HeadState  # (heads.state imports this module)
    if isinstance(state, HeadState):
        state._densify()  # the arrays are a dense state's
    fields = _fields(state)
    prefix = path + '/' if path else ''
    for name, value in fields.items():
        fields[name] = _load_value(value, prefix + name, arrays, used)
    own_setstate = getattr(type(state), '__setstate__', None) is not None
    extra = [k for k in arrays if k.startswith(prefix) and '/' not in k[len(prefix):]
             and k[len(prefix):] not in fields]
    if extra and own_setstate:  # entries the class's __getstate__ adds (e.g. a storage flag)
        for k in extra:
            fields[k[len(prefix):]] = _load_value(arrays[k][()], k, arrays, used)
    if own_setstate:
        state.__setstate__(fields)
    else:
        state.__dict__.update(fields)


def _load_value(template: Any, path: str, arrays: Mapping[str, np.ndarray], used: set[str]
                ) -> Any:
    if _is_numeric_array(template) or _is_number(template):
        if path not in arrays:
            raise ValueError('state entry %s is missing' % path)
        saved = np.asarray(arrays[path])
        used.add(path)
        if _is_number(template):
            if saved.ndim or saved.dtype.kind not in 'biuf':
                raise ValueError('state entry %s: a number expected, got %s %s'
                                 % (path, saved.dtype, saved.shape))
            return type(template)(saved.item())
        if saved.dtype != template.dtype or saved.ndim != template.ndim:
            raise ValueError('state entry %s: %s[%d dims] expected, got %s%s'
                             % (path, template.dtype, template.ndim, saved.dtype, saved.shape))
        return saved.copy()
    if isinstance(template, (list, tuple)):
        return type(template)(_load_value(v, '%s/%d' % (path, i), arrays, used)
                              for i, v in enumerate(template))
    if isinstance(template, dict):
        return {k: _load_value(v, '%s/%s' % (path, k), arrays, used)
                for k, v in template.items()}
    if _is_state(template):
        _load_state(template, path, arrays, used)
    return template
