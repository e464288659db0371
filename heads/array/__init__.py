"""The array face of each head family: numpy batches in, numpy out, and mergeable float64 states.

One module per family, each holding the family's `<Family>Face` (a frozen dataclass built from the
head's configuration by `head._array_face()`: validation, loss, predictions, invalid rows) and its
`HeadState` subclass:

* `binary` — `BinaryClassHead`: `BinaryClassFace`, `BinaryClassState`;
* `regression` — `RegressionHead`, `LogisticRegressionHead`, `PoissonRegressionHead`:
  `RegressionFace`, `RegressionState`;
* `multi_class` — `MultiClassHead`: `MultiClassFace`, `MultiClassState`;
* `multi_label` — `MultiLabelHead`: `MultiLabelFace`, `MultiLabelState`;
* `multi` — `MultiHead`: `MultiHeadFace`, `MultiHeadState` (through each member head's face).

`sums_block` holds `SumsBlock`, the states of many keys of one head as one float64 matrix (for a
family whose state holds only additive scalar sums); `regression_block` (`RegressionBlock`) and
`multi_class_block` (`MultiClassBlock`) are its subclasses, made by the faces' `new_block()`.

Each family's interval state (`new_state(intervals=True)`) subclasses its state (`multi_label_ci`
for the multi-label one); `bootstrap` holds `BootstrapState`, any head's state with Poisson-
bootstrap replicates (docs/intervals.md).

Shared by the families: `inputs` (input checks with the TF face's messages), `numerics` (float32
activations, float64 losses, chunked kernels) and `row_problems` (helpers of `invalid_rows`). The
state primitives are in `heads.metrics`, the state protocol in `heads.state`. Nothing here imports
TensorFlow.
"""
