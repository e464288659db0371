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

Blocks hold the states of many keys of one head as arrays (`face.new_block()`, used by the
pipeline for slice specs with many values): `binary_block` (`BinaryClassBlock`: sums per key and
the bucketed components as sparse (key, bucket) sums); `sums_block` holds `SumsBlock`, one float64
matrix of sums per key (for a family whose state holds only additive scalar sums), with
`regression_block` (`RegressionBlock`) and `multi_class_block` (`MultiClassBlock`) its subclasses.

Each family's interval state (`new_state(intervals=True)`) subclasses its state (`multi_label_ci`
for the multi-label one); `bootstrap` holds `BootstrapState`, any head's state with Poisson-
bootstrap replicates (docs/intervals.md).

Shared by the families: `inputs` (input checks with the TF face's messages), `numerics` (float32
activations, float64 losses, chunked kernels) and `row_problems` (helpers of `invalid_rows`). The
state primitives are in `heads.metrics`, the state protocol in `heads.state`. Nothing here imports
TensorFlow.
"""
