"""`MultiHead`: several named heads on one model; losses added with optional head weights.

TF face and array face side by side (`heads_spec.md` §9).
"""
from __future__ import annotations

from typing import Sequence

from heads import base


class MultiHead(base.Head):
    """Creates a `Head` for multi-objective learning.

    Logits are a dict keyed by head name, or one tensor `[D0, ..., DN, Σ logits_dimension]` split
    along the last axis in head order. Labels are a dict keyed by head name. The loss is
    `Σ head_weight · head.loss`; predictions are keyed by `(head name, prediction key)`; metrics carry
    each head's `/name`-suffixed keys and `loss/<head name>`.

    Args:
      heads: list of named heads.
      head_weights: optional list of floats, one per head.
    """

    def __init__(self, heads: Sequence[base.Head], head_weights: Sequence[float] | None = None):
        if not heads:
            raise ValueError('Must specify heads. Given: {}'.format(heads))
        if head_weights:
            if len(head_weights) != len(heads):
                raise ValueError(
                    'heads and head_weights must have the same size. '
                    'Given len(heads): {}. Given len(head_weights): {}.'.format(
                        len(heads), len(head_weights)))
        for head in heads:
            if head.name is None:
                raise ValueError('All given heads must have name specified. Given: {}'.format(head))
        self._heads = tuple(heads)
        self._head_weights = tuple(head_weights) if head_weights else tuple()
        self._name = '_'.join(h.name for h in self._heads)
        self._logits_dimension = sum(h.logits_dimension for h in self._heads)

    @property
    def name(self) -> str:
        return self._name

    @property
    def logits_dimension(self) -> int:
        return self._logits_dimension

    @property
    def loss_reduction(self) -> str:
        reductions = [h.loss_reduction for h in self._heads]
        if len(set(reductions)) > 1:
            raise ValueError(
                'The loss_reduction must be the same for different heads. Given: {}'.format(
                    reductions))
        return reductions[0]

    @property
    def heads(self) -> tuple[base.Head, ...]:
        return self._heads

    @property
    def head_weights(self) -> tuple[float, ...]:
        return self._head_weights

    # -- TF face ------------------------------------------------------------------------------
    def loss(self, labels, logits, features=None, mode=None, regularization_losses=None):
        raise NotImplementedError  # TF FACE

    def predictions(self, logits, keys=None):
        raise NotImplementedError  # TF FACE

    def metrics(self, regularization_losses=None):
        raise NotImplementedError  # TF FACE

    def update_metrics(self, eval_metrics, features, logits, labels, regularization_losses=None):
        raise NotImplementedError  # TF FACE

    def create_estimator_spec(self, features, mode, logits, labels=None, optimizer=None,
                              trainable_variables=None, train_op_fn=None, update_ops=None,
                              regularization_losses=None) -> base.EstimatorSpec:
        raise NotImplementedError  # TF FACE

    # -- array face ---------------------------------------------------------------------------
    def new_state(self):
        raise NotImplementedError  # ARRAY FACE

    def array_predictions(self, logits, keys=None) -> dict:
        raise NotImplementedError  # ARRAY FACE

    def array_loss(self, labels, logits, features=None):
        raise NotImplementedError  # ARRAY FACE

    def invalid_rows(self, labels, logits, features=None) -> list:
        raise NotImplementedError  # ARRAY FACE
