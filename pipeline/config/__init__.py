"""The evaluation config: parsing, validation and the head objects it describes.

A config is YAML (JSON is accepted as YAML), given as a local or gs:// path or as inline JSON (a
Dataflow Flex Template passes it so). Everything that can be checked before reading data is checked
here, and every error is a `ConfigError` whose message names the offending key or column:

    input:  {pattern: data/part-*.parquet, format: parquet}   # format defaults from the extension
    heads:
      - type: BinaryClassHead
        args: {name: click, weight_column: w, thresholds: [0.5]}
        logits: click_logit            # a column (number or list of numbers), or a list of columns
        labels: click_label
        label_format: multi_hot        # MultiLabelHead only: multi_hot (default) | ids
        baseline_logits: old_logit     # optional: the baseline model's logits (same rules)
    head_weights: [1.0, 2.0]          # optional; with several heads their MultiHead loss is written
    slices: [[], [country], [country, device]]
    window: {column: ts, size: 60, period: 30}
    tensorboard: {dir: tb, step: global_step}
    output: out/run1
    validation: [{head: click, metric: auc, max_decrease: 0.01}]   # optional gates

`check_columns` then checks the columns against the first input file's Arrow schema, and
`check_slice_kinds` another file's (or batch's) slice columns against the first file's kinds
(numbers, text, booleans).

This package's public names are imported from here; its modules:

    spec.py     ConfigError, EvalConfig and its HeadSpec / WindowSpec / TensorBoardSpec /
                ConfidenceSpec, the formats, config_summary
    parse.py    load_config, parse_config (every key's checks), format_from_pattern, the run id
                rule (RUN_ID_PATTERN, check_run_id)
    validation.py  ValidationRule, parse_validation: the `validation:` rules
    columns.py  check_columns, slice_kind(s), check_slice_kinds: the config against the data
"""
from pipeline.config.columns import check_columns, check_slice_kinds, slice_kind, slice_kinds
from pipeline.config.parse import (RUN_ID_PATTERN, check_run_id, format_from_pattern,
                                   load_config, parse_config)
from pipeline.config.spec import (FORMATS, LABEL_FORMATS, ConfidenceSpec, ConfigError, EvalConfig,
                                  HeadSpec, PlotsSpec, TensorBoardSpec, WindowSpec, config_summary)
from pipeline.config.validation import ValidationRule

__all__ = [
    'FORMATS', 'LABEL_FORMATS', 'RUN_ID_PATTERN', 'ConfidenceSpec', 'ConfigError', 'EvalConfig',
    'HeadSpec', 'PlotsSpec', 'TensorBoardSpec', 'WindowSpec', 'check_columns', 'check_run_id',
    'check_slice_kinds', 'config_summary', 'format_from_pattern', 'load_config', 'parse_config', 'slice_kind',
    'slice_kinds', 'ValidationRule',
]
