"""The evaluation config as data: `ConfigError` and the frozen dataclasses a validated config is
(`EvalConfig` with its `HeadSpec`s, `WindowSpec`, `TensorBoardSpec`), and what follows from them
alone: the heads they build, the columns they read, plain data again (`to_dict`), a log line.

Parsing and validating raw config data into these is pipeline/config/parse.py.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

FORMATS = ('parquet', 'tfrecord', 'csv', 'jsonl')
LABEL_FORMATS = ('multi_hot', 'ids')


class ConfigError(ValueError):
    """An invalid config; the message names the key or column at fault."""


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One entry of `heads:`.

    Attributes:
      type: head class name in `heads` (e.g. 'BinaryClassHead').
      args: the head's constructor kwargs.
      logits: the logits column, or several numeric columns concatenated in order.
      labels: the labels column.
      label_format: for MultiLabelHead: 'multi_hot' (a list of n_classes numbers per row) or 'ids'
        (a list of class ids or names per row).
      baseline_logits: the baseline model's logits in the same rows (the same column rules as
        `logits`), or None: no comparison.
    """
    type: str
    args: Mapping[str, Any]
    logits: str | tuple[str, ...]
    labels: str
    label_format: str = 'multi_hot'
    baseline_logits: str | tuple[str, ...] | None = None

    @property
    def logits_columns(self) -> tuple[str, ...]:
        return (self.logits,) if isinstance(self.logits, str) else tuple(self.logits)

    @property
    def baseline_columns(self) -> tuple[str, ...]:
        """The baseline's logits columns (none without a baseline)."""
        if self.baseline_logits is None:
            return ()
        b = self.baseline_logits
        return (b,) if isinstance(b, str) else tuple(b)

    @property
    def weight_column(self) -> str | None:
        return self.args.get('weight_column')

    def build(self) -> Any:
        """Returns the head object (raises the head's own ValueError on bad args)."""
        import heads
        head = getattr(heads, self.type)(**dict(self.args))
        if self.baseline_logits is not None:
            from heads.array.paired import ComparedHead
            return ComparedHead(head)
        return head


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """Event-time windows, in seconds: fixed [start, start + size) aligned to the Unix epoch, or
    sliding every `period`. `allowed_lateness` and `early_firing` matter to streaming runs only."""
    column: str
    size: float
    period: float | None = None
    allowed_lateness: float = 0.0
    early_firing: float | None = None


@dataclasses.dataclass(frozen=True)
class TensorBoardSpec:
    """TensorBoard output: `dir` (default `<output>/tensorboard`) and the step (an int, or a column
    whose distinct values are evaluated separately)."""
    dir: str | None = None
    step: int | str = 0
    # At most this many runs (slices) are written: Overall and the largest slices, the rest
    # counted and logged (`pipeline.slice_sizes.cap_runs`).
    max_runs: int = 1000

    @property
    def step_column(self) -> str | None:
        return self.step if isinstance(self.step, str) else None


@dataclasses.dataclass(frozen=True)
class PlotsSpec:
    """`plots:`: plots (confusion rows, calibration) are written for Overall and, per slice spec,
    at most the `max_slices` largest slices (by example count); the rest are counted and logged.
    None: every slice. Plots of a slice of a few rows say nothing, and 100k slices' plots are 30M
    rows."""
    max_slices: int | None = 1000


@dataclasses.dataclass(frozen=True)
class ConfidenceSpec:
    """`confidence:`: the two-sided level of every metric's interval (in (0, 1)) and the method:
    'analytic' (closed forms from the one-pass states: DeLong, Wilson score, delta method) or
    'bootstrap' (Poisson-bootstrap replicates kept beside the state; docs/intervals.md)."""
    level: float = 0.95
    method: str = 'analytic'


CONFIDENCE_METHODS = ('analytic', 'bootstrap')


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """A validated evaluation config (see the module docstring)."""
    pattern: str
    format: str
    heads: tuple[HeadSpec, ...]
    slices: tuple[tuple[str, ...], ...] = ((),)
    head_weights: tuple[float, ...] | None = None
    window: WindowSpec | None = None
    tensorboard: TensorBoardSpec | None = None
    output: str | None = None
    confidence: ConfidenceSpec | None = None
    min_slice_size: int = 0
    validation: tuple = ()  # pipeline.config.validation.ValidationRule, in config order
    plots: PlotsSpec = PlotsSpec()

    def build_heads(self) -> list:
        """The configured heads, in config order."""
        return [spec.build() for spec in self.heads]

    def new_state(self, head: Any) -> Any:
        """An empty state of `head` (one of `build_heads()`): one keeping the sums of confidence
        intervals when `confidence:` is set (for `method: bootstrap`, the head's state with its
        Poisson-bootstrap replicates)."""
        from heads.array.paired import ComparedHead
        if isinstance(head, ComparedHead):  # a baseline: two of the head's states, paired
            return head.new_state(make=lambda own: self.new_state(own))
        if not self.confidence:
            return head.new_state()
        if self.confidence.method == 'bootstrap':
            from heads.array.bootstrap import BootstrapState
            return BootstrapState(head.new_state())
        return head.new_state(intervals=True)

    def new_block(self, head: Any) -> Any:
        """An empty columnar block of many keys' states of `head` (`pipeline.key_blocks`), or None
        when its states must stay one per key: heads without a block (`new_block`), a head with a
        baseline, and runs with `confidence:` (interval and bootstrap states have no block)."""
        from heads.array.paired import ComparedHead
        if self.confidence or isinstance(head, ComparedHead):
            return None
        make = getattr(head, 'new_block', None)
        return make() if make is not None else None

    @property
    def confidence_level(self) -> float | None:
        """The level of the metrics' intervals (None: no `confidence:`)."""
        return self.confidence.level if self.confidence else None

    def build_multi_head(self, built: Sequence[Any] | None = None) -> Any:
        """The heads' MultiHead (several heads only), else None."""
        if len(self.heads) < 2:
            return None
        import heads
        built = [getattr(h, 'head', h)  # a ComparedHead's own head
                 for h in (built if built is not None else self.build_heads())]
        return heads.MultiHead(built,
                               head_weights=list(self.head_weights) if self.head_weights else None)

    @property
    def head_names(self) -> list[str]:
        """The names written in the tables' `head` column ('' for an unnamed single head)."""
        return [spec.args.get('name') or '' for spec in self.heads]

    @property
    def multi_head_name(self) -> str | None:
        return '_'.join(self.head_names) if len(self.heads) > 1 else None

    @property
    def step_column(self) -> str | None:
        return self.tensorboard.step_column if self.tensorboard else None

    @property
    def stepped(self) -> bool:
        return self.tensorboard is not None

    @property
    def windowed(self) -> bool:
        return self.window is not None

    def columns(self) -> list[str]:
        """Every input column the evaluation reads, in a stable order."""
        cols: list[str] = []
        for spec in self.heads:
            cols += list(spec.logits_columns) + [spec.labels] + list(spec.baseline_columns)
            if spec.weight_column:
                cols.append(spec.weight_column)
        for s in self.slices:
            cols += list(s)
        if self.window:
            cols.append(self.window.column)
        if self.step_column:
            cols.append(self.step_column)
        return list(dict.fromkeys(cols))

    def with_output(self, output: str | None) -> 'EvalConfig':
        return dataclasses.replace(self, output=output) if output else self

    def to_dict(self) -> dict:
        """The config as plain data (the input to `parse_config`)."""
        out: dict[str, Any] = {
            'input': {'pattern': self.pattern, 'format': self.format},
            'heads': [{'type': h.type, 'args': dict(h.args),
                       'logits': h.logits if isinstance(h.logits, str) else list(h.logits),
                       'labels': h.labels, 'label_format': h.label_format,
                       **({'baseline_logits': h.baseline_logits if isinstance(
                           h.baseline_logits, str) else list(h.baseline_logits)}
                          if h.baseline_logits is not None else {})} for h in self.heads],
            'slices': [list(s) for s in self.slices],
        }
        if self.head_weights is not None:
            out['head_weights'] = list(self.head_weights)
        if self.window:
            out['window'] = dataclasses.asdict(self.window)
        if self.tensorboard:
            out['tensorboard'] = dataclasses.asdict(self.tensorboard)
        if self.output:
            out['output'] = self.output
        if self.confidence:
            out['confidence'] = dataclasses.asdict(self.confidence)
        if self.min_slice_size:
            out['min_slice_size'] = self.min_slice_size
        if self.validation:
            out['validation'] = [rule.to_dict() for rule in self.validation]
        if self.plots != PlotsSpec():
            out['plots'] = dataclasses.asdict(self.plots)
        return out

    @property
    def compared(self) -> bool:
        """Whether any head has a baseline."""
        return any(spec.baseline_logits is not None for spec in self.heads)


def config_summary(config: EvalConfig) -> str:
    """A one-line description for logs."""
    return json.dumps({'pattern': config.pattern, 'format': config.format,
                       'heads': config.head_names, 'slices': [list(s) for s in config.slices]})
