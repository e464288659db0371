"""The abstract `Head`: tf.estimator's interface (the TF face) and headstream's array face.

A head has two faces, side by side in each head's module:

* TF face — `loss`, `predictions`, `metrics`, `update_metrics`, `create_estimator_spec`: tf.Tensor
  in, tf.Tensor / Keras-style metric objects out, usable inside `tf.function`. TensorFlow is
  imported on first use only (through `heads.tf_face`), never by `import heads`.
* Array face — `new_state`, `array_predictions`, `array_loss`, `invalid_rows`: numpy (or Arrow)
  batches in, numpy out, and mergeable float64 metric state (`heads.state`, `heads.metrics`). It
  never imports TensorFlow, so Beam workers that only evaluate do not pay for it.

Both faces give tf.estimator 2.15's numbers; the array face accumulates in float64 (sigmoid and AUC
bucket assignment stay float32, as tf.estimator computed them).
"""
from __future__ import annotations

import abc

from heads.keys import summary_key
# The spec containers and the constructor checks live in their own modules (the TF face reads
# them without importing this one); they stay importable from here, as before.
from heads.spec import ClassificationOutput, EstimatorSpec, PredictOutput, RegressionOutput
from heads.validation import (fn_args, loss_fn_passes_features, validate_loss_fn_args,
                              validate_loss_reduction, validate_vocabulary_type)

__all__ = ['Head', 'ARRAY_FACE_METHODS', 'array_face_not_implemented', 'missing_array_face',
           'EstimatorSpec', 'ClassificationOutput', 'RegressionOutput', 'PredictOutput',
           'fn_args', 'loss_fn_passes_features', 'validate_loss_fn_args',
           'validate_loss_reduction', 'validate_vocabulary_type']


# ---------------------------------------------------------------------------------------------
# The abstract head.
# ---------------------------------------------------------------------------------------------

class Head(abc.ABC):
    """Interface for the head/top of a model: loss, predictions and metrics from logits.

    headstream's heads implement both faces (see the module docstring). A user's subclass may
    implement tf.estimator's interface only — `name`, `logits_dimension`, `loss_reduction`, `loss`,
    `predictions`, `metrics`, `update_metrics` (and optionally `create_estimator_spec`): it then
    works on the TF face, and its array-face methods raise `NotImplementedError` naming the method
    and the class.
    """

    # -- properties ---------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def name(self) -> str | None:
        """The name of this head, or None; a name suffixes every metric key (`auc/click`)."""

    @property
    @abc.abstractmethod
    def logits_dimension(self) -> int:
        """Size of the last dimension of the logits tensor."""

    @property
    @abc.abstractmethod
    def loss_reduction(self) -> str:
        """One of 'auto', 'sum', 'sum_over_batch_size'."""

    def _summary_key(self, key: str) -> str:
        return summary_key(key, self.name)

    # -- TF face ------------------------------------------------------------------------------
    @abc.abstractmethod
    def loss(self, labels, logits, features=None, mode=None, regularization_losses=None):
        """Returns the scalar (regularized) training loss as a tf.Tensor."""

    @abc.abstractmethod
    def predictions(self, logits, keys=None):
        """Returns a dict of prediction tensors."""

    @abc.abstractmethod
    def metrics(self, regularization_losses=None):
        """Returns a dict of fresh metric objects keyed by metric key."""

    @abc.abstractmethod
    def update_metrics(self, eval_metrics, features, logits, labels, mode=None,
                       regularization_losses=None):
        """Updates `eval_metrics` with one batch and returns it."""

    def create_estimator_spec(self, features, mode, logits, labels=None, optimizer=None,
                              trainable_variables=None, train_op_fn=None, update_ops=None,
                              regularization_losses=None) -> EstimatorSpec:
        """Returns an `EstimatorSpec` for TRAIN, EVAL or PREDICT, as tf.estimator built it."""
        # TF FACE: imported here, so TensorFlow stays out of array-face users.
        from heads.tf_face import spec_builder
        return spec_builder.create_estimator_spec(
            self, features, mode, logits, labels=labels, optimizer=optimizer,
            trainable_variables=trainable_variables, train_op_fn=train_op_fn,
            update_ops=update_ops, regularization_losses=regularization_losses)

    # -- array face ---------------------------------------------------------------------------
    # Not abstract: a head written for tf.estimator's interface only (the TF face) constructs and
    # works; its array face says what is missing when called (see `missing_array_face`).
    def new_state(self):
        """ARRAY FACE. An empty mergeable accumulator of this head's metrics.

        Contract (`heads.state.HeadState`):
          state = state.update(labels, logits, features=None)  # one batch of numpy/Arrow arrays
          state = state.merge(other)                           # `other` left unchanged
          state.result() -> {metric key: float}  # update_metrics' keys (with the /name suffix) and
                                                 # values over all data seen, as one batch
          state.loss() -> float                  # self.loss over all data seen as one batch,
                                                 # without regularization
        """
        raise array_face_not_implemented(self, 'new_state')

    def new_block(self):
        """ARRAY FACE. An empty columnar block of the states of many keys (slice values) of this
        head (`pipeline.key_blocks`; e.g. `heads.array.binary_block.BinaryClassBlock`), or None
        when the head's array face has no block (its keys then keep one state each)."""
        face = getattr(self, '_array_face', None)
        make = getattr(face(), 'new_block', None) if face is not None else None
        return make() if make is not None else None

    def array_predictions(self, logits, keys=None) -> dict:
        """ARRAY FACE. predictions() in numpy: same keys, dtypes and shapes (strings as object arrays
        of str)."""
        raise array_face_not_implemented(self, 'array_predictions')

    def array_loss(self, labels, logits, features=None):
        """ARRAY FACE. Per-example weighted unreduced loss, shape [D0, ..., DN, k] (float64)."""
        raise array_face_not_implemented(self, 'array_loss')

    def invalid_rows(self, labels, logits, features=None) -> list:
        """ARRAY FACE. Rows the head cannot evaluate, without raising.

        Returns a list of (role, reason, mask): role is 'logits', 'labels' or the weight column's
        name; reason is a sentence (the message the TF face would raise); mask is a bool array over
        the first dimension, True for the offending rows. Non-finite logits are reported here too
        (the TF face would give NaN silently; the pipeline refuses them).
        """
        raise array_face_not_implemented(self, 'invalid_rows')


ARRAY_FACE_METHODS = ('new_state', 'array_predictions', 'array_loss', 'invalid_rows')


def array_face_not_implemented(head: Head, method: str) -> NotImplementedError:
    """The error a head without an array face raises from `method`, naming both."""
    return NotImplementedError(
        '{}.{}() is not implemented: {} implements only the TF face (tf.estimator\'s Head '
        'interface). The array face ({}) is what the pipeline evaluates with; implement it to use '
        'this head there.'.format(type(head).__name__, method, type(head).__name__,
                                  ', '.join(ARRAY_FACE_METHODS)))


def missing_array_face(head_type: type) -> list[str]:
    """The array-face methods `head_type` (a Head subclass) leaves to `Head`, which raise."""
    return [m for m in ARRAY_FACE_METHODS if getattr(head_type, m, None) is getattr(Head, m)]
