"""The TF face's machinery, shared by the heads' `loss`, `predictions`, `metrics`,
`update_metrics` and `create_estimator_spec` (tf.estimator 2.15's behaviour on TensorFlow 2.21).

  inputs.py        logits / labels / weights checks with tf.estimator's messages, label ranges,
                   vocabulary lookup
  losses.py        custom loss_fn calls, cross-entropies, loss reductions, regularization
  outputs.py       prediction key checks, class tables, PREDICT export outputs
  spec_builder.py  train op, eval metric ops, TRAIN summaries, `create_estimator_spec`
  keras_metrics.py the metric objects (Keras 2 semantics on float32 `tf.Variable`s)

Every module here imports TensorFlow; the heads import them inside their TF-face methods only, so
`import heads` stays free of TensorFlow. This package imports nothing itself, and nothing here
imports `heads.base` (the spec containers are in `heads.spec`).
"""
