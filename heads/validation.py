"""Constructor validation shared by the heads, and how a custom `loss_fn` is called.

Pure Python (no TensorFlow, no numpy): both faces and every head's constructor use it.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from heads.keys import Reduction

__all__ = ['validate_loss_reduction', 'fn_args', 'validate_loss_fn_args',
           'loss_fn_passes_features', 'validate_vocabulary_type']

_LOSS_FN_ALLOWED_ARGS = ('labels', 'logits', 'features', 'loss_reduction')


def validate_loss_reduction(loss_reduction: Any) -> None:
    """tf.estimator accepts every `tf.losses.Reduction` string except 'none'."""
    if loss_reduction not in Reduction.all() or loss_reduction == Reduction.NONE:
        raise ValueError(
            'Invalid loss_reduction: {}. See `tf.losses.Reduction` for valid options.'.format(
                loss_reduction))


def fn_args(fn: Callable[..., Any]) -> tuple[str, ...]:
    """Names of the arguments `fn` can be called with by keyword (a partial's bound ones left
    out)."""
    params = inspect.signature(fn).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY,
             inspect.Parameter.POSITIONAL_ONLY)
    return tuple(p.name for p in params if p.kind in kinds)


def validate_loss_fn_args(loss_fn: Callable[..., Any]) -> None:
    """A custom loss_fn must take `labels` and `logits`, and may take `features` and
    `loss_reduction`."""
    args = fn_args(loss_fn)
    for required in ('labels', 'logits'):
        if required not in args:
            raise ValueError(
                'loss_fn must contain argument: {}. Given arguments: {}'.format(required, args))
    invalid = [a for a in args if a not in _LOSS_FN_ALLOWED_ARGS]
    if invalid:
        raise ValueError('loss_fn has unexpected args: {}'.format(invalid))


def loss_fn_passes_features(loss_fn: Callable[..., Any]) -> bool:
    """tf.estimator passes `features` to a loss_fn only when its signature names it."""
    return 'features' in fn_args(loss_fn)


def validate_vocabulary_type(label_vocabulary: Any) -> None:
    if label_vocabulary is not None and not isinstance(label_vocabulary, (list, tuple)):
        raise ValueError('label_vocabulary should be a list or a tuple. Given type: {}'.format(
            type(label_vocabulary)))
