"""TFMA 0.52 on the benchmark's binary workload: the rate headstream is compared with.

The EvalConfig is TFMA's equivalent of headstream's BinaryClassHead(thresholds=[0.5], weight column)
evaluated on slices Overall + country: label, prediction (a probability: TFMA applies no link) and
example-weight keys; ExampleCount, WeightedExampleCount, AUC, AUCPrecisionRecall, BinaryAccuracy,
Precision, Recall, MeanLabel, MeanPrediction, Calibration, BinaryCrossEntropy, ConfusionMatrixPlot,
CalibrationPlot. Run as a script: `python bench/tfma_baseline.py PATTERN OUTPUT_DIR`; prints one
JSON line {"rows": ..., "seconds": ...}.
"""
from __future__ import annotations

import json
import sys
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

METRICS = ['ExampleCount', 'WeightedExampleCount', 'AUC', 'AUCPrecisionRecall', 'BinaryAccuracy',
           'Precision', 'Recall', 'MeanLabel', 'MeanPrediction', 'Calibration',
           'BinaryCrossEntropy', 'ConfusionMatrixPlot', 'CalibrationPlot']


def eval_config():
    from tensorflow_model_analysis.proto import config_pb2
    return config_pb2.EvalConfig(
        model_specs=[config_pb2.ModelSpec(label_key='click_label', prediction_key='click_prob',
                                          example_weight_key='w')],
        metrics_specs=[config_pb2.MetricsSpec(
            metrics=[config_pb2.MetricConfig(class_name=m) for m in METRICS])],
        slicing_specs=[config_pb2.SlicingSpec(), config_pb2.SlicingSpec(feature_keys=['country'])])


def to_tfma_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """TFMA's extractors want tf.Example-like columns: every feature a list (one value per row)."""
    columns = []
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        offsets = pa.array(np.arange(len(column) + 1, dtype=np.int32))
        columns.append(pa.ListArray.from_arrays(offsets, column))
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def main(pattern: str, output_dir: str) -> None:
    import tensorflow_model_analysis as tfma
    from tfx_bsl.tfxio import parquet_tfxio
    files = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    source = parquet_tfxio.ParquetTFXIO(files, column_names=['country', 'w', 'click_prob', 'click_label'])
    start = time.time()
    with beam.Pipeline(options=PipelineOptions(['--runner=DirectRunner'])) as p:
        _ = (p | 'Read' >> source.BeamSource()
             | 'AsListColumns' >> beam.Map(to_tfma_batch)
             | 'Evaluate' >> tfma.ExtractEvaluateAndWriteResults(
                 eval_config=eval_config(), output_path=output_dir))
    print(json.dumps({'rows': rows, 'seconds': time.time() - start}))


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
