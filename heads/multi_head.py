"""`MultiHead`: several named heads on one model; losses added with optional head weights.

The TF face is implemented here; the array face is delegated to `heads.array.multi` (see
docs/design.md). Keys, numbers and messages follow tf.estimator 2.15's MultiHead.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from heads import base
from heads.array import multi as array_multi
from heads.keys import MetricKeys, ModeKeys, ServingKeys
from heads.spec import EstimatorSpec, PredictOutput


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
    def _check_logits_and_labels(self, logits, labels=None) -> dict:
        """Per-head logits (from a dict, or split from one tensor); checks labels is a full dict.

        Raises:
          ValueError: a head's logits or labels are missing, labels is not a dict, or one logits
            tensor's last dimension is not the heads' total logits dimension.
        """
        names = [head.name for head in self._heads]
        if isinstance(logits, dict):
            missing = [name for name in names if name not in logits]
            if missing:
                raise ValueError('logits has missing values for head(s): {}'.format(missing))
            logits_dict = logits
        else:
            logits_dict = self._split_logits(logits)
        if labels is not None:
            if not isinstance(labels, dict):
                raise ValueError('labels must be a dict. Given: {}'.format(labels))
            missing = [name for name in names if name not in labels]
            if missing:
                raise ValueError('labels has missing values for head(s): {}'.format(missing))
        return logits_dict

    def _split_logits(self, logits) -> dict:
        """Splits one `[D0, ..., DN, Σ dims]` logits tensor along the last axis, in head order."""
        import tensorflow as tf
        logits = tf.convert_to_tensor(logits)
        dims = [head.logits_dimension for head in self._heads]
        total = sum(dims)
        shape = logits.shape.as_list() if logits.shape.rank is not None else None
        last = shape[-1] if shape else None
        if last is not None and last != total:
            # tf.estimator printed the actual size where it meant the expected one and vice versa;
            # the text is kept, as callers match it.
            raise ValueError(
                'Could not split logits of shape %r among the heads with individual logits '
                'dimensions: %r. The last dimension of the logits tensor should equal %d but is %d.'
                % (shape, dims, last, total))
        return dict(zip([head.name for head in self._heads], tf.split(logits, dims, axis=-1)))

    def _loss_keys(self) -> list[str]:
        return ['{}/{}'.format(MetricKeys.LOSS, head.name) for head in self._heads]

    def loss(self, labels, logits, features=None, mode=None, regularization_losses=None):
        """`Σ head_weight · head.loss` (each head reduced its own way), plus regularization.

        Args:
          labels: dict of each head's labels, keyed by head name.
          logits: dict of each head's logits, or one tensor split along its last axis.
          features: features dict (weight columns of the heads).
          mode: passed to each head (which ignores it).
          regularization_losses: optional list of scalars added once, after the weighted sum.

        Returns:
          A float32 scalar tensor.
        """
        import tensorflow as tf
        from heads.tf_face import losses as tf_losses
        logits_dict = self._check_logits_and_labels(logits, labels)
        losses = [head.loss(labels[head.name], logits_dict[head.name], features, mode)
                  for head in self._heads]
        if self._head_weights:
            losses = [tf.math.multiply(loss, weight)
                      for loss, weight in zip(losses, self._head_weights)]
        return tf_losses.regularize(tf.math.add_n(losses), regularization_losses)

    def predictions(self, logits, keys=None):
        """Every head's full predictions, keyed by `(head name, prediction key)`; `keys` ignored."""
        del keys  # tf.estimator ignored it: every head returns all its predictions.
        logits_dict = self._check_logits_and_labels(logits)
        predictions = {}
        for head in self._heads:
            for key, value in head.predictions(logits_dict[head.name]).items():
                predictions[(head.name, key)] = value
        return predictions

    def metrics(self, regularization_losses=None):
        """`regularization_loss/<name>` (if requested) and a `loss/<head>` Mean per head.

        The heads' own metrics are created afresh by every `update_metrics` call.
        """
        from heads.tf_face import keras_metrics
        eval_metrics = {}
        if regularization_losses is not None:
            eval_metrics[self._summary_key(MetricKeys.LOSS_REGULARIZATION)] = keras_metrics.Mean(
                name=MetricKeys.LOSS_REGULARIZATION)
        for loss_key in self._loss_keys():
            eval_metrics[loss_key] = keras_metrics.Mean(name=loss_key)
        return eval_metrics

    def update_metrics(self, eval_metrics, features, logits, labels, regularization_losses=None):
        """Updates `eval_metrics` (from `metrics()`) with one batch and returns it.

        Each `loss/<head>` Mean adds the head's reduced loss (one unweighted value per call). Each
        head's metrics are fresh objects updated with this batch only and merged into the dict, as
        tf.estimator did: called repeatedly, `loss/<head>` accumulates while the per-head metrics
        describe the last batch.

        Because every call creates metric variables, it runs eagerly or in a `tf.Graph` (where
        tf.estimator called it once), not inside `tf.function`.
        """
        from heads.tf_face import losses as tf_losses
        logits_dict = self._check_logits_and_labels(logits, labels)
        if regularization_losses is not None:
            eval_metrics[self._summary_key(MetricKeys.LOSS_REGULARIZATION)].update_state(
                tf_losses.regularization_loss(regularization_losses))
        for head, loss_key in zip(self._heads, self._loss_keys()):
            head_logits, head_labels = logits_dict[head.name], labels[head.name]
            eval_metrics[loss_key].update_state(head.loss(head_labels, head_logits, features))
            eval_metrics.update(
                head.update_metrics(head.metrics(), features, head_logits, head_labels) or {})
        return eval_metrics

    def create_estimator_spec(self, features, mode, logits, labels=None, optimizer=None,
                              trainable_variables=None, train_op_fn=None, update_ops=None,
                              regularization_losses=None) -> EstimatorSpec:
        """Returns the merged `EstimatorSpec` for TRAIN, EVAL or PREDICT.

        Every head builds its own spec first (so each validates its inputs and, in TRAIN, reports
        its `loss/<head>` summary); export outputs are merged under `<head>` / `<head>/<key>`, and
        `predict` merges the heads' prediction outputs under `<head>/<prediction key>`.
        """
        import tensorflow as tf
        from heads.tf_face import spec_builder
        with tf.name_scope(self.name):
            logits_dict = self._check_logits_and_labels(logits, labels)
            specs = [head.create_estimator_spec(
                features, mode, logits_dict[head.name],
                labels=labels[head.name] if labels else None, train_op_fn=_no_op_train_fn)
                for head in self._heads]
            predictions = self.predictions(logits)
            if mode == ModeKeys.PREDICT:
                return spec_builder.estimator_spec(
                    mode=ModeKeys.PREDICT, predictions=predictions, eval_metric_ops={},
                    export_outputs=self._merge_export_outputs(specs))
            loss = self.loss(labels, logits, features, mode, regularization_losses)
            if mode == ModeKeys.EVAL:
                metrics = self.update_metrics(self.metrics(regularization_losses), features,
                                              logits, labels,
                                              regularization_losses=regularization_losses)
                return spec_builder.estimator_spec(
                    mode=ModeKeys.EVAL, predictions=predictions, loss=loss,
                    eval_metric_ops=spec_builder.eval_metric_ops(metrics))
            if mode == ModeKeys.TRAIN:
                train_op = spec_builder.create_train_op(
                    loss, optimizer=optimizer, trainable_variables=trainable_variables,
                    train_op_fn=train_op_fn, update_ops=update_ops,
                    loss_reduction=self.loss_reduction)
                summaries = {}
                for spec in specs:
                    summaries.update(spec.summaries or {})
                # The merged loss is reported unsuffixed, next to each head's `loss/<head>`.
                summaries.update(spec_builder.train_summaries(loss, regularization_losses, None))
                return spec_builder.estimator_spec(
                    mode=ModeKeys.TRAIN, predictions=predictions, loss=loss, train_op=train_op,
                    eval_metric_ops={}, summaries=summaries)
            raise ValueError('mode={} unrecognized'.format(mode))

    def _merge_export_outputs(self, specs: Sequence[EstimatorSpec]) -> dict:
        """PREDICT export outputs: the first head's default, every head's under its name, and one
        merged `predict` output."""
        export_outputs = {
            ServingKeys.DEFAULT_SERVING: _default_export_output(
                specs[0].export_outputs, self._heads[0].name)}
        merged_predict = {}
        for head, spec in zip(self._heads, specs):
            for key, value in spec.export_outputs.items():
                name = head.name if key == ServingKeys.DEFAULT_SERVING else '{}/{}'.format(
                    head.name, key)
                export_outputs[name] = value
                if key == ServingKeys.PREDICT and isinstance(value, PredictOutput):
                    for pred_key, tensor in value.outputs.items():
                        merged_predict['{}/{}'.format(head.name, pred_key)] = tensor
        export_outputs[ServingKeys.PREDICT] = PredictOutput(outputs=merged_predict)
        return export_outputs

    # -- array face: delegated to heads.array.multi ------------------------------------------------
    def _array_face(self) -> array_multi.MultiHeadFace:
        """This head's array face (numpy; never imports TensorFlow)."""
        return array_multi.MultiHeadFace(heads=self._heads, head_weights=self._head_weights)

    def new_state(self, intervals: bool = False) -> array_multi.MultiHeadState:
        """An empty mergeable `MultiHeadState` (metrics over all data it is updated with).
        `intervals`: a state also keeping the sums of confidence intervals."""
        return self._array_face().new_state(intervals)

    def array_predictions(self, logits, keys=None) -> dict:
        return self._array_face().predictions(logits, keys)

    def array_loss(self, labels, logits, features=None) -> np.ndarray:
        return self._array_face().loss(labels, logits, features)

    def invalid_rows(self, labels, logits, features=None) -> list:
        return self._array_face().invalid_rows(labels, logits, features)


def _no_op_train_fn(loss):
    """The per-head train_op_fn of a MultiHead spec: the heads' specs need one, the MultiHead
    trains on the merged loss instead."""
    del loss
    import tensorflow as tf
    return tf.no_op()


def _default_export_output(export_outputs: dict, head_name: str):
    """A head's default export output: its only one, else its `serving_default`."""
    if len(export_outputs) == 1:
        return next(iter(export_outputs.values()))
    try:
        return export_outputs[ServingKeys.DEFAULT_SERVING]
    except KeyError:
        raise ValueError(
            '{} did not specify default export_outputs. Given: {} Suggested fix: Use one of the '
            'heads in tf.estimator, or include key {} in export_outputs.'.format(
                head_name, export_outputs, ServingKeys.DEFAULT_SERVING)) from None
